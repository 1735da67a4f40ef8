"""``psra-bench workload capture`` and ``psra-bench indexes advise``: index advice from a team's own queries."""

from __future__ import annotations
