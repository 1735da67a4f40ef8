"""The index migration runner: up, down, status and verify, safe on a live database.

Each index is created or dropped ``CONCURRENTLY`` on its own autocommit statement, so writers
are never locked out. An interrupted build (Ctrl-C, a killed backend) leaves an INVALID index;
``status`` reports it and the next ``up`` drops and rebuilds it. What is applied is recorded in
``psra_bench.schema_migrations`` (outside schema public, so the spec's index counts hold).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from psra_bench import constants
from psra_bench.exceptions import MigrationError
from psra_bench.infra import postgres as db
from psra_bench.table import Table

__all__ = [
    "MIGRATIONS",
    "IndexSpec",
    "MigrationStatus",
    "migration_indexes",
    "migration_status",
    "migrate_up",
    "migrate_down",
    "verify",
    "resolve_migrations",
]

#: Known migrations, in order.
MIGRATIONS: tuple[str, ...] = (constants.PERFORMANCE_MIGRATION,)

_CREATE = re.compile(r"CREATE\s+INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+(\w+)\s+ON\s+(\w+)", re.I)


@dataclass(frozen=True)
class IndexSpec:
    """One index the migration creates: its name, table and CREATE statement."""

    name: str
    table: str
    create: str

    @property
    def drop(self) -> str:
        """The statement that removes it without blocking writers."""
        return f"DROP INDEX CONCURRENTLY IF EXISTS {self.name}"


@dataclass
class MigrationStatus:
    """Where one migration stands in one database."""

    name: str
    state: str  # "not applied" | "applied" | "partial" | "needs repair"
    recorded: str | None
    present: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    index_count: int = 0


def resolve_migrations(name: str | None) -> list[str]:
    """The migrations a command acts on: all of them, or the one named (an unknown name is an error)."""
    if name is None or name == "all":
        return list(MIGRATIONS)
    if name not in MIGRATIONS:
        raise MigrationError(name, f"is not a known migration; known: {', '.join(MIGRATIONS)}")
    return [name]


def _statements(path_name: str) -> list[str]:
    text = db.sql_path(path_name).read_text()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _checksum(name: str) -> str:
    raw = (
        db.sql_path(f"migrations/{name}.up.sql").read_bytes() + db.sql_path(f"migrations/{name}.down.sql").read_bytes()
    )
    return hashlib.sha256(raw).hexdigest()[:16]


def migration_indexes(name: str = constants.PERFORMANCE_MIGRATION) -> list[IndexSpec]:
    """The indexes a migration creates, read from its up SQL."""
    specs = []
    for statement in _statements(f"migrations/{name}.up.sql"):
        m = _CREATE.search(statement)
        if not m:
            raise MigrationError(name, f"unexpected statement in the up migration: {statement[:60]}")
        specs.append(IndexSpec(m.group(1), m.group(2), statement))
    return specs


def _existing(conn: psycopg.Connection[Any], names: list[str]) -> dict[str, bool]:
    rows = conn.execute(
        """SELECT c.relname, i.indisvalid AND i.indisready
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relname = ANY(%s)""",
        (names,),
    ).fetchall()
    return {r[0]: bool(r[1]) for r in rows}


def _recorded(conn: psycopg.Connection[Any], name: str) -> str | None:
    row = conn.execute("SELECT state FROM psra_bench.schema_migrations WHERE name = %s", (name,)).fetchone()
    return None if row is None else str(row[0])


def _record(conn: psycopg.Connection[Any], name: str, state: str | None) -> None:
    if state is None:
        conn.execute("DELETE FROM psra_bench.schema_migrations WHERE name = %s", (name,))
    else:
        conn.execute(
            """INSERT INTO psra_bench.schema_migrations (name, state, checksum) VALUES (%s, %s, %s)
               ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state, checksum = EXCLUDED.checksum,
               changed_at = now()""",
            (name, state, _checksum(name)),
        )


def migration_status(conn: psycopg.Connection[Any], name: str = constants.PERFORMANCE_MIGRATION) -> MigrationStatus:
    """Compare the migration's indexes with the database: applied, not applied, partial or needing repair."""
    specs = migration_indexes(name)
    names = [s.name for s in specs]
    existing = _existing(conn, names)
    present = [n for n in names if existing.get(n)]
    invalid = [n for n in names if n in existing and not existing[n]]
    missing = [n for n in names if n not in existing]
    if invalid:
        state = "needs repair"
    elif not missing:
        state = "applied"
    elif not present:
        state = "not applied"
    else:
        state = "partial"
    return MigrationStatus(name, state, _recorded(conn, name), present, missing, invalid, db.index_count(conn))


Progress = Callable[[str, str, float], None]


def migrate_up(
    dsn: str, name: str = constants.PERFORMANCE_MIGRATION, *, progress: Progress | None = None
) -> dict[str, Any]:
    """Create the migration's indexes concurrently (repairing INVALID ones); idempotent.

    Returns {"migration", "created", "repaired", "already", "seconds": {index: s}, "index_count"}.
    """
    specs = migration_indexes(name)
    created, repaired, already = [], [], []
    seconds: dict[str, float] = {}
    with db.connect(dsn, autocommit=True) as conn:
        _require_schema(conn, name)
        existing = _existing(conn, [s.name for s in specs])
        _record(conn, name, "applying")
        for spec in specs:
            state = existing.get(spec.name)
            if state is True:
                already.append(spec.name)
                continue
            started = time.perf_counter()
            if state is False:  # INVALID: left by an interrupted CREATE INDEX CONCURRENTLY
                conn.execute(spec.drop.encode())
                repaired.append(spec.name)
            try:
                conn.execute(spec.create.encode())
            except psycopg.errors.QueryCanceled as e:
                raise MigrationError(
                    name,
                    f"building {spec.name} was cancelled; run `migrate up` again to "
                    "rebuild it (an INVALID index is left until then)",
                    spec.name,
                ) from e
            except psycopg.Error as e:
                raise MigrationError(
                    name, f"building {spec.name} failed: {e.diag.message_primary or e}", spec.name
                ) from e
            seconds[spec.name] = time.perf_counter() - started
            if state is None:
                created.append(spec.name)
            if progress:
                progress("create", spec.name, seconds[spec.name])
        final = migration_status(conn, name)
        if final.state != "applied":
            raise MigrationError(name, f"ended as {final.state!r} (missing {final.missing}, invalid {final.invalid})")
        _record(conn, name, "applied")
        return {
            "migration": name,
            "created": created,
            "repaired": repaired,
            "already": already,
            "seconds": seconds,
            "index_count": final.index_count,
        }


def migrate_down(
    dsn: str, name: str = constants.PERFORMANCE_MIGRATION, *, progress: Progress | None = None
) -> dict[str, Any]:
    """Drop the migration's indexes concurrently; a no-op (``dropped == []``) when nothing is applied."""
    specs = migration_indexes(name)
    dropped = []
    with db.connect(dsn, autocommit=True) as conn:
        _require_schema(conn, name)
        existing = _existing(conn, [s.name for s in specs])
        if not existing and _recorded(conn, name) is None:
            return {"migration": name, "dropped": [], "index_count": db.index_count(conn)}
        _record(conn, name, "reverting")
        for spec in reversed(specs):
            if spec.name not in existing:
                continue
            started = time.perf_counter()
            conn.execute(spec.drop.encode())
            dropped.append(spec.name)
            if progress:
                progress("drop", spec.name, time.perf_counter() - started)
        _record(conn, name, None)
        return {"migration": name, "dropped": dropped, "index_count": db.index_count(conn)}


def _require_schema(conn: psycopg.Connection[Any], name: str) -> None:
    row = conn.execute(
        "SELECT to_regclass('public.psra_verdicts'), to_regclass('psra_bench.schema_migrations')"
    ).fetchone()
    if row is None or row[0] is None or row[1] is None:
        raise MigrationError(name, "the PSRA schema is missing in this database; run `psra-bench seed` first")


def verify(conn: psycopg.Connection[Any]) -> list[Table]:
    """Run the spec's verification queries (count, sizes, usage, unused, per-table size) from sql/verify.sql."""
    text = db.sql_path("verify.sql").read_text()
    tables = []
    for block in re.split(r"^-- title: ", text, flags=re.M)[1:]:
        title, _, query = block.partition("\n")
        with conn.cursor() as cur:
            cur.execute(query.strip().rstrip(";").encode())
            columns = [d.name for d in cur.description or []]
            tables.append(Table(columns, [tuple(r) for r in cur.fetchall()], title=title.strip()))
    return tables
