"""Hooks for the notebooks that ``make test`` runs under nbval (tests/conftest.py holds the fixtures).

They live at the root because pytest applies a conftest's run hooks only to the items below it, and
the notebooks are not below tests/.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent


def _notebook(item: pytest.Item | None) -> str | None:
    """The notebook an nbval cell belongs to (None for a test)."""
    path = item.nodeid.split("::")[0] if item is not None else ""
    return path if path.startswith("notebooks/") else None


_NOTEBOOK_LOCK: dict[str, Any] = {}


def pytest_runtest_setup(item: pytest.Item) -> None:
    """One notebook at a time across pytest workers: they all seed, migrate and copy the report's database."""
    if _notebook(item) and "fh" not in _NOTEBOOK_LOCK:
        lock = ROOT / ".psra-bench" / "notebooks.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        _NOTEBOOK_LOCK["fh"] = fh = open(lock, "w")  # noqa: SIM115 - held across items, closed in teardown
        fcntl.flock(fh, fcntl.LOCK_EX)


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Release the notebooks' lock after a notebook's last cell."""
    if _notebook(item) and _notebook(nextitem) != _notebook(item) and "fh" in _NOTEBOOK_LOCK:
        fh = _NOTEBOOK_LOCK.pop("fh")
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()
