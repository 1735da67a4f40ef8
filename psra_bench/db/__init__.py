"""The PSRA data: reference tables, seeded synthetic verdicts, the 26-index migration, the data access layer."""

from __future__ import annotations

from psra_bench.db.dal import QUERIES, PostgresDAL
from psra_bench.db.migrate import MIGRATIONS, MigrationStatus, migrate_down, migrate_up, migration_status, verify
from psra_bench.db.reference import hs_rows, load_reference_data, prepare_database, rules
from psra_bench.db.seed import SeedResult, seed_database, verdict_count

__all__ = [
    "load_reference_data",
    "prepare_database",
    "hs_rows",
    "rules",
    "SeedResult",
    "seed_database",
    "verdict_count",
    "MIGRATIONS",
    "MigrationStatus",
    "migrate_up",
    "migrate_down",
    "migration_status",
    "verify",
    "QUERIES",
    "PostgresDAL",
]
