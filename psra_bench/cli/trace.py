"""``psra-bench trace``: capture, import and tune on a team's own cache traffic (issue 23)."""

from __future__ import annotations
