"""Plain helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from psra_bench.settings import Settings

__all__ = ["chromium_path", "cli_env", "quick_report_argv"]

#: Variables of the caller's environment a child must not inherit: the test names its servers itself.
_OURS = ("PSRA_", "REDIS_", "CACHE_", "JOBS_", "ENABLE_", "MAX_CONCURRENT_JOBS")


def chromium_path() -> str | None:
    """Debian's chromium (/usr/bin/chromium), else a chromium or chromium-browser on PATH, else None."""
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def cli_env(settings: Settings, dsn: str | None = None, home: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a ``psra-bench`` command or a notebook kernel: this database and the session's Redis.

    Every psra-bench, Redis and cache variable of the caller is dropped first, so nothing configured
    outside the test leaks in; ``extra`` adds variables (e.g. ``PSRA_CACHE_NAMESPACE``).
    """
    assert settings.redis is not None and (dsn or settings.db_dsn)
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    env |= {
        "PSRA_DB_DSN": dsn or settings.db_dsn or "",
        "REDIS_URL": settings.redis.url(),
        "JOBS_REDIS_URL": (settings.jobs_redis or settings.redis).url(),
    }
    if home is not None:
        env["PSRA_BENCH_HOME"] = str(home)
    return env | extra


def quick_report_argv(params: Path, reports: Path) -> list[str]:
    """The command line of ``psra-bench report --quick --params PARAMS --reports-dir REPORTS`` in a child Python."""
    return [
        sys.executable,
        "-m",
        "psra_bench",
        "report",
        "--quick",
        "--params",
        str(params),
        "--reports-dir",
        str(reports),
    ]
