"""What every notebook and the report runner share: settings, the dataset, result files.

Notebooks are an edge of the system: they call :func:`notebook_settings` (which reads the
environment once and starts the embedded servers if needed), :func:`ensure_dataset` (a
dedicated database, seeded once per scale and seed, reused afterwards — and only one psra-bench
owns, :mod:`psra_bench.db.ownership`) and write their results
with :func:`save_results` — JSON written atomically, so an interrupted run never leaves a
half-written file that a later step would trust.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psra_bench.constants import MAX_TENANTS, MAX_VERDICTS
from psra_bench.exceptions import ParameterError
from psra_bench.paramspec import DATABASE_PATTERN, DEFAULT_DATABASE, ParamModel, check_writable_dir, param
from psra_bench.settings import LiveSettings, Settings

__all__ = [
    "DEFAULT_DATABASE",
    "SeedParams",
    "Dataset",
    "notebook_settings",
    "ensure_dataset",
    "save_results",
    "load_results",
    "check_positive_int",
    "check_writable_dir",
]


class SeedParams(ParamModel):
    """``psra-bench seed``'s dataset: how many verdicts, which seed, how many tenants."""

    verdicts: int = param(
        100_000,
        "how many synthetic verdicts to write",
        allowed=f"a whole number from 0 to {MAX_VERDICTS:,}",
        ge=0,
        le=MAX_VERDICTS,
    )
    seed: int = param(42, "random seed (same seed, same data)", allowed="a whole number ≥ 0", ge=0)
    tenants: int = param(
        200, "how many tenants", allowed=f"a whole number from 1 to {MAX_TENANTS:,}", ge=1, le=MAX_TENANTS
    )


@dataclass(frozen=True)
class Dataset:
    """The seeded dataset a measurement ran on."""

    database: str
    verdicts: int
    seed: int
    tenants: int
    checksum: str
    seeded_now: bool
    seed_rows_per_second: float | None


def check_positive_int(name: str, value: object, maximum: int | None = None) -> int:
    """``value`` as an int ≥ 1 (and ≤ maximum), else ParameterError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (maximum and value > maximum):
        allowed = f"a whole number from 1 to {maximum:,}" if maximum else "a whole number ≥ 1"
        raise ParameterError(name, value, allowed)
    return value


def notebook_settings(database: str | None = DEFAULT_DATABASE, **overrides: Any) -> LiveSettings:
    """Settings from the environment with live endpoints, pointed at ``database`` on the same server.

    A database that does not exist yet is created, and so owned by psra-bench; an existing one is
    only read here (:func:`ensure_dataset` decides whether psra-bench may write into it).
    """
    if database is not None and not re.match(DATABASE_PATTERN, database):
        raise ParameterError("database", database, "a lower-case PostgreSQL name (letters, digits, _), not a DSN")
    # The servers' modules load here, not at import: the CLI imports SeedParams from this module.
    from psra_bench.db.ownership import claim
    from psra_bench.infra import postgres as db
    from psra_bench.infra.embedded import ensure_services

    settings = ensure_services(Settings.from_env())
    if database is not None:
        created = False
        with db.connect(settings.db_dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{database}"'.encode())
                created = True
        settings = settings.replace(db_dsn=db.with_database(settings.db_dsn, database))
        if created:
            with db.connect(settings.db_dsn, autocommit=True) as conn:
                claim(conn, "created")
    return settings.replace(**overrides) if overrides else settings


def ensure_dataset(
    settings: LiveSettings, verdicts: int, seed: int = 42, tenants: int = 200, *, action: str = "seed its dataset"
) -> Dataset:
    """Make sure ``settings``' database holds exactly this seeded dataset; seed it (forcefully) if not.

    Only a database psra-bench owns is (re)seeded: any other is refused in one sentence before a
    row is written (:func:`psra_bench.db.ownership.require_owned`; ``action`` names the caller there).
    """
    check_positive_int("verdicts", verdicts, MAX_VERDICTS)
    check_positive_int("tenants", tenants, MAX_TENANTS)
    from psra_bench.db.ownership import require_owned
    from psra_bench.db.reference import prepare_database
    from psra_bench.db.seed import seed_database
    from psra_bench.infra import postgres as db

    require_owned(settings, action)
    name = settings.db_dsn.rsplit("/", 1)[-1].split("?")[0]
    with db.connect(settings.db_dsn, autocommit=True) as conn:
        prepare_database(conn, owned=True)
        last = conn.execute(
            "SELECT seed, verdicts, checksum FROM psra_bench.seed_runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
        count = conn.execute("SELECT count(*) FROM psra_verdicts").fetchone()
        tenant_count = conn.execute("SELECT count(*) FROM tenants").fetchone()
        if (
            last
            and last[0] == seed
            and last[1] == verdicts
            and count
            and count[0] == verdicts
            and tenant_count
            and tenant_count[0] == tenants
        ):
            return Dataset(name, verdicts, seed, tenants, str(last[2]), False, None)
        result = seed_database(conn, verdicts, seed=seed, tenants=tenants, mode="force")
    return Dataset(name, verdicts, seed, tenants, result.checksum, True, result.rows_per_second)


def save_results(output_dir: str | Path, name: str, data: Mapping[str, Any]) -> Path:
    """Write ``<output_dir>/<name>.json`` atomically (temp file + rename); return its path."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_results(output_dir: str | Path, name: str) -> dict[str, Any] | None:
    """Read ``<output_dir>/<name>.json`` if it exists."""
    path = Path(output_dir) / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data
