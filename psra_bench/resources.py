"""Files psra-bench ships beside its code: ``sql/``, ``notebooks/`` and ``loadtests/``.

An installed wheel carries them inside the package folder; a checkout has them at its top level,
beside the package. :func:`shipped_file` finds either, so no module works out paths of its own.
"""

from __future__ import annotations

from pathlib import Path

from psra_bench.exceptions import ResourceMissingError

__all__ = ["PACKAGE_DIR", "shipped_file"]

#: The ``psra_bench`` package folder.
PACKAGE_DIR = Path(__file__).resolve().parent


def shipped_file(relative: str) -> Path:
    """Path of a shipped file such as ``sql/schema.sql``: inside the installed package, or in the checkout."""
    for base in (PACKAGE_DIR, PACKAGE_DIR.parent):
        path = base / relative
        if path.exists():
            return path
    raise ResourceMissingError(relative, PACKAGE_DIR)
