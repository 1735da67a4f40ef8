"""The index migration runner: up, down, status and verify, safe on a live database and against itself.

Each index is created or dropped ``CONCURRENTLY`` on its own autocommit statement, so writers
are never locked out. ``up`` and ``down`` hold a session-level advisory lock whose key is derived
from the migration's name (:func:`migration_lock_key`): a second run waits for the first one, then
finds its work done. An interrupted build (Ctrl-C, a killed backend) leaves an INVALID index;
``status`` reports it and the next ``up`` drops and rebuilds it, unless another connection is still
building it (``pg_stat_progress_create_index``). Bookkeeping lives in schema psra_bench (outside
schema public, so the spec's index counts hold): the state in ``schema_migrations`` and, per index,
whether the migration created it or found it already there in ``migration_indexes``; ``down``
drops only what the migration created. An index with the spec's name but another definition is a
conflict: neither used nor dropped.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
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
    "migration_lock_key",
    "migration_status",
    "schema_ready",
    "migrate_up",
    "migrate_down",
    "migrate_subset",
    "verify",
    "resolve_migrations",
]

#: Known migrations, in order.
MIGRATIONS: tuple[str, ...] = (constants.PERFORMANCE_MIGRATION,)

_CREATE = re.compile(r"CREATE\s+INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+(\w+)\s+ON\s+(\w+)", re.I)
#: Channel on which a run that releases the migration lock wakes the runs waiting for it.
_CHANNEL = "psra_bench_migrate"
#: Longest sleep between two tries of the lock (a holder killed with -9 sends no notification).
_LOCK_POLL_S = 1.0


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

    @property
    def definition(self) -> str:
        """The index as ``pg_get_indexdef`` would show it, give or take case, spaces and parentheses."""
        return re.sub(r"\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+", " ", self.create, count=1, flags=re.I)


@dataclass
class MigrationStatus:
    """Where one migration stands in one database."""

    name: str
    state: str  # "not applied" | "applied" | "partial" | "needs repair" | "building" | "conflict"
    recorded: str | None
    present: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    index_count: int = 0
    #: Indexes with the spec's name but another definition (neither used nor dropped by the migration).
    conflicts: list[str] = field(default_factory=list)
    #: INVALID indexes that another connection is building right now (not abandoned).
    building: list[str] = field(default_factory=list)
    #: Present indexes the migration did not create: `migrate down` leaves them.
    preexisting: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Found:
    """One index of the spec's name found in schema public."""

    valid: bool
    indexdef: str
    builder: int | None  # pid of another backend building it, if any


def resolve_migrations(name: str | None) -> list[str]:
    """The migrations a command acts on: all of them, or the one named (an unknown name is an error)."""
    if name is None or name == "all":
        return list(MIGRATIONS)
    if name not in MIGRATIONS:
        raise MigrationError(name, f"is not a known migration; known: {', '.join(MIGRATIONS)}")
    return [name]


def migration_lock_key(name: str = constants.PERFORMANCE_MIGRATION) -> int:
    """The ``pg_advisory_lock`` key that ``migrate up``/``down`` of ``name`` hold (a signed 64-bit int)."""
    digest = hashlib.sha256(f"psra_bench.migrate:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


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


def _normalised(indexdef: str) -> str:
    """An index definition in a canonical form, so the migration's CREATE compares with ``pg_get_indexdef``."""
    s = re.sub(r"\bconcurrently\s+|\bif\s+not\s+exists\s+", "", indexdef.lower())
    s = re.sub(r"\bpublic\.", "", s)
    s = re.sub(r"^(create\s+(?:unique\s+)?index\s+\S+\s+on\s+(?:only\s+)?\S+\s+)(?!using\b)", r"\1using btree ", s)
    s = s.replace("(", " ").replace(")", " ")
    return " ".join(s.split()).replace(" ,", ",")


def _found(conn: psycopg.Connection[Any], names: list[str]) -> dict[str, _Found]:
    """The indexes of these names in schema public: valid or not, their definition, who is building them."""
    rows = conn.execute(
        """SELECT c.relname, i.indisvalid AND i.indisready, pg_get_indexdef(c.oid),
                  (SELECT min(p.pid) FROM pg_stat_progress_create_index p
                    WHERE p.index_relid = c.oid AND p.pid <> pg_backend_pid())
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relname = ANY(%s)""",
        (names,),
    ).fetchall()
    return {r[0]: _Found(bool(r[1]), str(r[2]), None if r[3] is None else int(r[3])) for r in rows}


def _has_ownership_table(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('psra_bench.migration_indexes') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _owners(conn: psycopg.Connection[Any], name: str) -> dict[str, str]:
    """index -> 'created' | 'preexisting', as recorded for this migration."""
    if not _has_ownership_table(conn):
        return {}
    rows = conn.execute(
        "SELECT index_name, origin FROM psra_bench.migration_indexes WHERE migration = %s", (name,)
    ).fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def _effective_owners(
    conn: psycopg.Connection[Any], name: str, recorded: str | None, found: dict[str, _Found]
) -> dict[str, str]:
    """The recorded owners; a migration recorded before ownership was tracked owns every index it finds."""
    owners = _owners(conn, name)
    if recorded is not None and not owners:
        return {n: "created" for n in found}
    return owners


def _recorded(conn: psycopg.Connection[Any], name: str) -> str | None:
    row = conn.execute("SELECT state FROM psra_bench.schema_migrations WHERE name = %s", (name,)).fetchone()
    return None if row is None else str(row[0])


def _record(conn: psycopg.Connection[Any], name: str, state: str) -> None:
    conn.execute(
        """INSERT INTO psra_bench.schema_migrations (name, state, checksum) VALUES (%s, %s, %s)
           ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state, checksum = EXCLUDED.checksum,
           changed_at = now()""",
        (name, state, _checksum(name)),
    )


def _forget(conn: psycopg.Connection[Any], name: str) -> None:
    """Remove every trace of the migration from the bookkeeping (one transaction)."""
    with conn.transaction():
        conn.execute("DELETE FROM psra_bench.migration_indexes WHERE migration = %s", (name,))
        conn.execute("DELETE FROM psra_bench.schema_migrations WHERE name = %s", (name,))


def _conflicts(specs: list[IndexSpec], found: dict[str, _Found]) -> list[IndexSpec]:
    return [s for s in specs if s.name in found and _normalised(found[s.name].indexdef) != _normalised(s.definition)]


def migration_status(conn: psycopg.Connection[Any], name: str = constants.PERFORMANCE_MIGRATION) -> MigrationStatus:
    """Compare the migration's indexes with the database: applied, not applied, partial, needing repair, conflict."""
    specs = migration_indexes(name)
    names = [s.name for s in specs]
    found = _found(conn, names)
    conflicts = [s.name for s in _conflicts(specs, found)]
    ok = {n: f for n, f in found.items() if n not in conflicts}
    present = [n for n in names if n in ok and ok[n].valid]
    building = [n for n in names if n in ok and not ok[n].valid and ok[n].builder is not None]
    invalid = [n for n in names if n in ok and not ok[n].valid and ok[n].builder is None]
    missing = [n for n in names if n not in found]
    if conflicts:
        state = "conflict"
    elif invalid:
        state = "needs repair"
    elif building:
        state = "building"
    elif not missing:
        state = "applied"
    elif not present:
        state = "not applied"
    else:
        state = "partial"
    recorded = _recorded(conn, name)
    owners = _effective_owners(conn, name, recorded, found)
    preexisting = [n for n in present if owners.get(n) != "created"]
    return MigrationStatus(
        name,
        state,
        recorded,
        present,
        missing,
        invalid,
        db.index_count(conn),
        conflicts=conflicts,
        building=building,
        preexisting=preexisting,
    )


Progress = Callable[[str, str, float], None]


@contextmanager
def _migration_lock(conn: psycopg.Connection[Any], name: str, progress: Progress | None) -> Iterator[float]:
    """Hold the migration's advisory lock for the block; yields the seconds spent waiting for it.

    A waiting run sleeps between tries (woken by the holder's NOTIFY) instead of blocking inside
    ``pg_advisory_lock``: a statement blocked there holds a snapshot, and the holder's
    ``CREATE INDEX CONCURRENTLY`` waits for every older snapshot, which would deadlock the two.
    """
    key = migration_lock_key(name)
    started = time.perf_counter()
    conn.execute(f"LISTEN {_CHANNEL}".encode())
    told = False
    while not _try_lock(conn, key):
        if not told and progress:
            progress("wait", name, 0.0)
            told = True
        for _ in conn.notifies(timeout=_LOCK_POLL_S, stop_after=1):
            pass
    conn.execute(f"UNLISTEN {_CHANNEL}".encode())
    waited = time.perf_counter() - started if told else 0.0
    try:
        yield waited
    finally:
        # Closing the connection would release the lock as well; unlocking here wakes the waiters now.
        try:
            conn.execute("SELECT pg_advisory_unlock(%s), pg_notify(%s, %s)", (key, _CHANNEL, name))
        except psycopg.Error:
            pass


def _try_lock(conn: psycopg.Connection[Any], key: int) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    return bool(row and row[0])


@contextmanager
def _database_errors(name: str, action: str) -> Iterator[None]:
    """A psycopg error escaping a migration becomes one MigrationError sentence (no raw driver text)."""
    try:
        yield
    except psycopg.Error as e:
        detail = (e.diag.message_primary or type(e).__name__).rstrip(".")
        raise MigrationError(name, f"`migrate {action}` failed in the database: {detail}") from e


def _refuse_conflicts(name: str, specs: list[IndexSpec], found: dict[str, _Found]) -> None:
    conflicts = _conflicts(specs, found)
    if not conflicts:
        return
    first = conflicts[0]
    others = f" (other conflicting indexes: {', '.join(s.name for s in conflicts[1:])})" if conflicts[1:] else ""
    raise MigrationError(
        name,
        f"index {first.name} exists with another definition: {found[first.name].indexdef!r}, "
        f"expected {first.definition!r}{others}; it is neither used nor dropped: rename or drop it, then run again",
        first.name,
    )


def _refuse_foreign_builds(name: str, names: list[str], found: dict[str, _Found]) -> None:
    for n in names:
        f = found.get(n)
        if f is not None and not f.valid and f.builder is not None:
            raise MigrationError(
                name,
                f"index {n} is being built by another connection (pid {f.builder}); "
                "run again once that build has finished or been cancelled",
                n,
            )


def _inspect(
    conn: psycopg.Connection[Any], name: str, specs: list[IndexSpec]
) -> tuple[dict[str, _Found], dict[str, str]]:
    """The migration's indexes found in the database and their recorded owners; refuses conflicts and foreign builds."""
    names = [s.name for s in specs]
    found = _found(conn, names)
    _refuse_conflicts(name, specs, found)
    _refuse_foreign_builds(name, names, found)
    return found, _effective_owners(conn, name, _recorded(conn, name), found)


def _claim(
    conn: psycopg.Connection[Any], name: str, specs: list[IndexSpec], found: dict[str, _Found], owners: dict[str, str]
) -> None:
    """Record the state "applying" and who owns each of ``specs``, in one transaction, before any build starts.

    An index already recorded keeps its origin; a valid one found unrecorded is "preexisting"
    (``migrate down`` leaves it), any other is "created". ``owners`` is updated in place.
    """
    with conn.transaction():
        _record(conn, name, "applying")
        for spec in specs:
            f = found.get(spec.name)
            origin = owners.get(spec.name) or ("preexisting" if f is not None and f.valid else "created")
            conn.execute(
                """INSERT INTO psra_bench.migration_indexes (migration, index_name, origin) VALUES (%s, %s, %s)
                   ON CONFLICT (migration, index_name) DO UPDATE SET origin = EXCLUDED.origin""",
                (name, spec.name, origin),
            )
            owners[spec.name] = origin


def migrate_up(
    dsn: str,
    name: str = constants.PERFORMANCE_MIGRATION,
    *,
    progress: Progress | None = None,
    prepare: Callable[[psycopg.Connection[Any]], object] | None = None,
) -> dict[str, Any]:
    """Create the migration's indexes concurrently (repairing abandoned INVALID ones); idempotent.

    Runs under the migration's advisory lock; ``prepare(conn)`` (e.g. applying the schema) runs
    under it too, when the schema is not ready. Returns {"migration", "created", "repaired",
    "already", "preexisting", "seconds": {index: s}, "waited_seconds", "index_count"};
    ``preexisting`` are indexes that were there before the migration created anything, which
    ``migrate_down`` keeps.
    """
    specs = migration_indexes(name)
    names = [s.name for s in specs]
    created: list[str] = []
    repaired: list[str] = []
    already: list[str] = []
    seconds: dict[str, float] = {}
    with db.connect(dsn, autocommit=True) as conn, _database_errors(name, "up"):
        with _migration_lock(conn, name, progress) as waited:
            _prepare(conn, name, prepare)
            found, owners = _inspect(conn, name, specs)
            _claim(conn, name, specs, found, owners)
            for spec in specs:
                f = found.get(spec.name)
                if f is not None and f.valid:
                    already.append(spec.name)
                    continue
                started = time.perf_counter()
                if f is not None:  # INVALID, and nobody is building it: left by an interrupted build
                    conn.execute(spec.drop.encode())
                    repaired.append(spec.name)
                _build(conn, name, spec)
                seconds[spec.name] = time.perf_counter() - started
                if f is None:
                    created.append(spec.name)
                if progress:
                    progress("create", spec.name, seconds[spec.name])
            final = migration_status(conn, name)
            if final.state != "applied":
                raise MigrationError(
                    name, f"ended as {final.state!r} (missing {final.missing}, invalid {final.invalid})"
                )
            _record(conn, name, "applied")
            return {
                "migration": name,
                "created": created,
                "repaired": repaired,
                "already": already,
                "preexisting": [n for n in names if owners.get(n) == "preexisting"],
                "seconds": seconds,
                "waited_seconds": waited,
                "index_count": final.index_count,
            }


def _build(conn: psycopg.Connection[Any], name: str, spec: IndexSpec) -> None:
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
        raise MigrationError(name, f"building {spec.name} failed: {e.diag.message_primary or e}", spec.name) from e


def migrate_down(
    dsn: str,
    name: str = constants.PERFORMANCE_MIGRATION,
    *,
    progress: Progress | None = None,
    prepare: Callable[[psycopg.Connection[Any]], object] | None = None,
) -> dict[str, Any]:
    """Drop, concurrently, the indexes the migration created; the ones that were there before it stay.

    Runs under the migration's advisory lock (``prepare(conn)`` too, when the schema is not ready).
    Returns {"migration", "dropped", "kept", "waited_seconds", "index_count"}: ``dropped == []``
    when nothing is applied, ``kept`` the indexes of the spec's names left in place because the
    migration did not create them.
    """
    specs = migration_indexes(name)
    names = [s.name for s in specs]
    dropped: list[str] = []
    with db.connect(dsn, autocommit=True) as conn, _database_errors(name, "down"):
        with _migration_lock(conn, name, progress) as waited:
            _prepare(conn, name, prepare)
            found = _found(conn, names)
            recorded = _recorded(conn, name)
            owners = _effective_owners(conn, name, recorded, found)
            ours = [s for s in specs if owners.get(s.name) == "created"]
            kept = [n for n in names if n in found and owners.get(n) != "created"]
            _refuse_conflicts(name, ours, found)
            _refuse_foreign_builds(name, [s.name for s in ours], found)
            if recorded is not None:
                _record(conn, name, "reverting")
            for spec in reversed(ours):
                if spec.name not in found:
                    continue
                started = time.perf_counter()
                conn.execute(spec.drop.encode())
                dropped.append(spec.name)
                if progress:
                    progress("drop", spec.name, time.perf_counter() - started)
            _forget(conn, name)
            return {
                "migration": name,
                "dropped": dropped,
                "kept": kept,
                "waited_seconds": waited,
                "index_count": db.index_count(conn),
            }


def migrate_subset(
    dsn: str,
    keep: Collection[str],
    name: str = constants.PERFORMANCE_MIGRATION,
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Bring the migration's indexes to exactly ``keep``: build the missing ones, drop the others it created.

    This is the third index state of the query-latency experiment (the baseline plus a
    recommended subset of the migration). It runs under the migration's lock and records
    ownership as ``migrate_up`` does, so a later ``migrate up`` or ``migrate down`` from here is
    exact; the recorded state is "applying" (part-way) and ``migration_status`` reports "partial" (or
    "applied"/"not applied" when ``keep`` is all or none). Indexes outside ``keep`` that the
    migration did not create stay ("kept"). Returns {"migration", "created", "dropped", "kept",
    "seconds", "waited_seconds", "index_count"}.
    """
    specs = migration_indexes(name)
    names = [s.name for s in specs]
    unknown = sorted(set(keep) - set(names))
    if unknown:
        raise MigrationError(name, f"{unknown[0]!r} is not one of the migration's {len(names)} indexes", unknown[0])
    wanted = [s for s in specs if s.name in set(keep)]
    created: list[str] = []
    dropped: list[str] = []
    seconds: dict[str, float] = {}
    with db.connect(dsn, autocommit=True) as conn, _database_errors(name, "subset"):
        with _migration_lock(conn, name, progress) as waited:
            _prepare(conn, name, None)
            found, owners = _inspect(conn, name, specs)
            _claim(conn, name, wanted, found, owners)  # a subset is the migration part-way
            for spec in reversed(specs):  # drops first: they are quick and free space for the builds
                if spec in wanted or spec.name not in found or owners.get(spec.name) != "created":
                    continue
                started = time.perf_counter()
                conn.execute(spec.drop.encode())
                dropped.append(spec.name)
                if progress:
                    progress("drop", spec.name, time.perf_counter() - started)
            for spec in wanted:
                f = found.get(spec.name)
                if f is not None and f.valid:
                    continue
                started = time.perf_counter()
                if f is not None:
                    conn.execute(spec.drop.encode())
                _build(conn, name, spec)
                seconds[spec.name] = time.perf_counter() - started
                created.append(spec.name)
                if progress:
                    progress("create", spec.name, seconds[spec.name])
            return {
                "migration": name,
                "created": created,
                "dropped": dropped,
                # outside ``keep`` but left in place: the migration did not create them
                "kept": [n for n in names if n in found and n not in dropped and n not in set(keep)],
                "seconds": seconds,
                "waited_seconds": waited,
                "index_count": db.index_count(conn),
            }


def schema_ready(conn: psycopg.Connection[Any]) -> bool:
    """True when the PSRA tables and the migration bookkeeping exist (nothing to prepare; takes no table lock)."""
    row = conn.execute(
        """SELECT to_regclass('public.psra_verdicts') IS NOT NULL AND to_regclass('psra_bench.schema_migrations')
                  IS NOT NULL AND to_regclass('psra_bench.migration_indexes') IS NOT NULL"""
    ).fetchone()
    return bool(row and row[0])


def _prepare(
    conn: psycopg.Connection[Any], name: str, prepare: Callable[[psycopg.Connection[Any]], object] | None
) -> None:
    """Run ``prepare`` only when the schema is missing, then require it.

    Applying the schema takes a SHARE lock on the PSRA tables (``CREATE INDEX IF NOT EXISTS``), which
    would wait for writers and for a running ``CREATE INDEX CONCURRENTLY``; a ready database skips it.
    """
    if prepare is not None and not schema_ready(conn):
        prepare(conn)
    row = conn.execute(
        "SELECT to_regclass('public.psra_verdicts'), to_regclass('psra_bench.schema_migrations')"
    ).fetchone()
    if row is None or row[0] is None or row[1] is None:
        raise MigrationError(name, "the PSRA schema is missing in this database; run `psra-bench seed` first")
    if not _has_ownership_table(conn):  # a database set up before ownership was recorded
        db.apply_schema(conn)


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
