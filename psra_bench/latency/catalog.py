"""A read-only index audit, for a database psra-bench does not own: catalog, idx_scan, EXPLAIN plans, findings.

:func:`catalog_audit` reads, inside one READ ONLY transaction (so any write fails loudly), what
can be known about the indexes of schema public without building, dropping or timing anything:
each index's table, definition, method, size and constraint (:func:`psra_bench.latency.audit.index_catalog`);
its ``idx_scan`` from ``pg_stat_user_indexes`` and the window those counts cover; which of the
spec's query patterns (:data:`psra_bench.latency.patterns.QUERY_PATTERNS`) use it according to a
plain ``EXPLAIN (FORMAT JSON)`` (no ANALYZE: nothing runs); the unused indexes (``idx_scan = 0``,
constraint indexes left out) and the duplicates, as PgHero defines them: an index whose key
columns lead another valid index on the same table with the same method and predicate (key
expressions compared as text), never a unique or primary-key one, and of two identical plain
indexes only the one whose name sorts last. Measuring index sets needs a database psra-bench owns
(:func:`psra_bench.latency.experiment.run_query_latency`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from psra_bench.db.reference import hs_rows, rules
from psra_bench.exceptions import MeasurementError
from psra_bench.latency.audit import covering_index, index_catalog, key_columns
from psra_bench.latency.patterns import QUERY_PATTERNS, ParamSource, QueryPattern, generate_params, load_param_source
from psra_bench.measure.explain import explain_analyze
from psra_bench.measure.format import mb
from psra_bench.table import Table

__all__ = [
    "OWNERSHIP_NOTE",
    "StatsWindow",
    "CatalogIndex",
    "PatternPlan",
    "DuplicateIndex",
    "CatalogAudit",
    "read_only_transaction",
    "pattern_tables",
    "catalog_audit",
]

#: The one sentence that says what this audit could not do.
OWNERSHIP_NOTE = (
    "Measuring index sets (timing the spec's queries on the baseline, the spec's 46 and the recommended set) "
    "builds and drops indexes, so it needs a database psra-bench owns; this audit only read the catalog, "
    "the statistics and plain EXPLAIN plans."
)

_FROM = re.compile(r"\b(?:FROM|JOIN)\s+([a-z_][a-z0-9_]*)", re.I)


@dataclass(frozen=True)
class StatsWindow:
    """What period the ``idx_scan`` counters cover."""

    #: pg_stat_database.stats_reset of this database (None: never reset).
    stats_reset: dt.datetime | None
    #: pg_postmaster_start_time().
    server_started: dt.datetime
    #: server_version_num (150000 and up keep statistics across clean restarts).
    server_version_num: int

    def describe(self) -> str:
        """One sentence: since when idx_scan counts."""
        if self.stats_reset is not None:
            return f"idx_scan counts scans since the statistics were reset at {self.stats_reset:%Y-%m-%d %H:%M %Z}."
        started = f"{self.server_started:%Y-%m-%d %H:%M %Z}"
        if self.server_version_num >= 150000:
            return (
                "idx_scan counts scans since the statistics began (never reset; PostgreSQL 15+ keeps them across "
                f"clean restarts, so they may predate the server start at {started})."
            )
        return f"idx_scan counts scans since the server started at {started}."


@dataclass(frozen=True)
class CatalogIndex:
    """One index of schema public as the catalog and the statistics describe it."""

    table: str
    name: str
    definition: str
    method: str
    size_bytes: int
    primary: bool
    unique: bool
    #: The primary key, unique or exclusion constraint it enforces (None: none).
    constraint: str | None
    valid: bool
    keys: tuple[str, ...]
    predicate: str | None
    idx_scan: int
    #: pg_stat_user_indexes.last_idx_scan (PostgreSQL 16+; None before or when never scanned).
    last_idx_scan: dt.datetime | None
    #: The query patterns whose plain EXPLAIN plan uses it.
    used_by: tuple[str, ...]

    @property
    def kind(self) -> str:
        """'primary key', 'unique', 'constraint' or '' (a plain index)."""
        if self.primary:
            return "primary key"
        if self.unique:
            return "unique"
        return "constraint" if self.constraint else ""

    @property
    def unused(self) -> bool:
        """Never scanned in the statistics window, and enforcing no constraint."""
        return self.idx_scan == 0 and not self.kind


@dataclass(frozen=True)
class PatternPlan:
    """One query pattern's plain EXPLAIN: the indexes its plan uses, or why it was skipped."""

    name: str
    label: str
    tables: tuple[str, ...]
    node_types: tuple[str, ...]
    index_names: tuple[str, ...]
    total_cost: float | None
    #: Why no plan was made (a missing or empty table, an EXPLAIN error); None when planned.
    skipped: str | None


@dataclass(frozen=True)
class DuplicateIndex:
    """An index whose key columns lead another index's (PgHero's duplicate): the other serves its scans."""

    index: str
    table: str
    covered_by: str
    size_bytes: int


@dataclass(frozen=True)
class CatalogAudit:
    """The read-only audit of one database's indexes."""

    database: str
    #: transaction_read_only as the audit's transaction saw it (always True: the audit refuses otherwise).
    read_only: bool
    window: StatsWindow
    indexes: tuple[CatalogIndex, ...]
    patterns: tuple[PatternPlan, ...]
    duplicates: tuple[DuplicateIndex, ...]

    @property
    def unused(self) -> tuple[CatalogIndex, ...]:
        """Indexes never scanned in the statistics window (constraint indexes left out)."""
        return tuple(ix for ix in self.indexes if ix.unused)

    @property
    def note(self) -> str:
        """The sentence on what this audit could not do."""
        return OWNERSHIP_NOTE

    def tables(self) -> list[Table]:
        """The catalog, the pattern plans and the findings as tables (CLI, notebook, report)."""
        dup = {d.index: d.covered_by for d in self.duplicates}

        def finding(ix: CatalogIndex) -> str:
            parts = ["invalid"] if not ix.valid else []
            parts += ["unused"] if ix.unused else []
            parts += [f"duplicate of {dup[ix.name]}"] if ix.name in dup else []
            return ", ".join(parts) or "–"

        catalog = Table.of(
            ["table", "index", "method", "size", "kind", "idx_scan", "used by (EXPLAIN)", "finding"],
            [
                [
                    ix.table,
                    ix.name,
                    ix.method,
                    mb(ix.size_bytes),
                    ix.kind or "–",
                    ix.idx_scan,
                    ", ".join(ix.used_by) or "–",
                    finding(ix),
                ]
                for ix in self.indexes
            ],
            title=f"Indexes of {self.database} (read-only audit, {len(self.indexes)} indexes)",
            note=self.window.describe() + " 'used by' = spec query patterns whose plain EXPLAIN plan uses the index.",
        )
        plans = Table.of(
            ["pattern", "tables", "plan nodes", "indexes used", "cost"],
            [
                [
                    p.name,
                    ", ".join(p.tables),
                    p.skipped or ", ".join(p.node_types),
                    ", ".join(p.index_names) or "–",
                    "–" if p.total_cost is None else f"{p.total_cost:,.1f}",
                ]
                for p in self.patterns
            ],
            title="Query patterns: plain EXPLAIN (FORMAT JSON), no ANALYZE",
            note="Parameters are drawn from the database's rows as in the latency experiment; nothing is executed.",
        )
        sizes = {ix.name: ix.size_bytes for ix in self.indexes}
        rows = [
            ["unused", ix.table, ix.name, mb(ix.size_bytes),
             "idx_scan = 0" + (f"; yet the plan of {', '.join(ix.used_by)} uses it" if ix.used_by else "")]
            for ix in self.unused
        ]  # fmt: skip
        rows += [["duplicate", d.table, d.index, mb(sizes[d.index]), f"its key columns lead {d.covered_by}"]
                 for d in self.duplicates]  # fmt: skip
        findings = Table.of(
            ["finding", "table", "index", "size", "detail"],
            rows,
            title=f"Unused and duplicate indexes ({len(self.unused)} unused, {len(self.duplicates)} duplicate)",
            note=self.note,
        )
        return [catalog, plans, findings]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (datetimes as ISO 8601 strings)."""

        def iso(value: dt.datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "database": self.database,
            "read_only": self.read_only,
            "window": {
                "stats_reset": iso(self.window.stats_reset),
                "server_started": iso(self.window.server_started),
                "server_version_num": self.window.server_version_num,
                "description": self.window.describe(),
            },
            "indexes": [
                {
                    "table": ix.table,
                    "name": ix.name,
                    "definition": ix.definition,
                    "method": ix.method,
                    "size_bytes": ix.size_bytes,
                    "primary": ix.primary,
                    "unique": ix.unique,
                    "constraint": ix.constraint,
                    "kind": ix.kind,
                    "valid": ix.valid,
                    "keys": list(ix.keys),
                    "predicate": ix.predicate,
                    "idx_scan": ix.idx_scan,
                    "last_idx_scan": iso(ix.last_idx_scan),
                    "used_by": list(ix.used_by),
                    "unused": ix.unused,
                }
                for ix in self.indexes
            ],
            "patterns": [
                {
                    "name": p.name,
                    "label": p.label,
                    "tables": list(p.tables),
                    "node_types": list(p.node_types),
                    "index_names": list(p.index_names),
                    "total_cost": p.total_cost,
                    "skipped": p.skipped,
                }
                for p in self.patterns
            ],
            "unused": [ix.name for ix in self.unused],
            "duplicates": [
                {"index": d.index, "table": d.table, "covered_by": d.covered_by, "size_bytes": d.size_bytes}
                for d in self.duplicates
            ],
            "note": self.note,
        }


@contextmanager
def read_only_transaction(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A READ ONLY transaction on ``conn`` (rolled back at the end): any write inside it raises.

    The connection must not be inside a transaction already (its characteristics could no longer be set).
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise MeasurementError(
            "the read-only index audit needs a connection outside any transaction; commit or roll back first"
        )
    with conn.transaction(force_rollback=True):
        with conn.cursor(row_factory=tuple_row) as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            row = cur.execute("SHOW transaction_read_only").fetchone()
        if not row or row[0] != "on":
            raise MeasurementError("the server did not make the audit's transaction read-only")
        yield


def _rows(
    conn: psycopg.Connection[Any], query: str | sql.SQL | sql.Composed, params: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchall()


def _window(conn: psycopg.Connection[Any]) -> StatsWindow:
    (row,) = _rows(
        conn,
        """SELECT (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()),
                  pg_postmaster_start_time(), current_setting('server_version_num')::int""",
    )
    return StatsWindow(stats_reset=row[0], server_started=row[1], server_version_num=int(row[2]))


def _scans(conn: psycopg.Connection[Any], version: int) -> dict[str, tuple[int, dt.datetime | None]]:
    """idx_scan (and last_idx_scan on PostgreSQL 16+) per index of schema public."""
    last = "s.last_idx_scan" if version >= 160000 else "NULL::timestamptz"
    rows = _rows(
        conn,
        f"""SELECT s.indexrelname, s.idx_scan, {last}
            FROM pg_stat_user_indexes s WHERE s.schemaname = 'public'""",
    )
    return {str(r[0]): (int(r[1] or 0), r[2]) for r in rows}


def pattern_tables(pattern: QueryPattern) -> tuple[str, ...]:
    """The tables a pattern's SQL reads (FROM and JOIN), each once."""
    return tuple(dict.fromkeys(m.lower() for m in _FROM.findall(pattern.sql)))


def _table_states(conn: psycopg.Connection[Any], tables: Sequence[str]) -> dict[str, str | None]:
    """Per table: None when it exists with rows, else why a plan on it says nothing ('missing', 'empty')."""
    states: dict[str, str | None] = {}
    for t in tables:
        ((exists,),) = _rows(conn, "SELECT to_regclass(%s) IS NOT NULL", (f"public.{t}",))
        if not exists:
            states[t] = f"table {t} does not exist"
            continue
        ((has_rows,),) = _rows(conn, sql.SQL("SELECT EXISTS (SELECT 1 FROM public.{})").format(sql.Identifier(t)))
        states[t] = None if has_rows else f"table {t} is empty, so its plan would say nothing about its indexes"
    return states


def _param_source(conn: psycopg.Connection[Any], verdicts_ok: bool) -> ParamSource:
    """The latency experiment's parameter source; without verdicts, one for the reference-data patterns only."""
    if verdicts_ok:
        return load_param_source(conn)
    codes = hs_rows()
    return ParamSource(
        tenants=(),
        inputs=(),
        routes=(),
        words=tuple(sorted({w for r in codes for w in re.findall(r"[a-z]{4,}", r.description.lower())})),
        rule_pairs=tuple(sorted({(r["agreement_code"], r["hs_chapter"]) for r in rules()})),
        chapters=tuple(sorted({r.code for r in codes if r.level == 2 and r.code.isdigit()})),
        data_end=dt.datetime.now(dt.UTC),
    )


def _plans(conn: psycopg.Connection[Any], seed: int) -> list[PatternPlan]:
    tables = {name: pattern_tables(p) for name, p in QUERY_PATTERNS.items()}
    states = _table_states(conn, sorted({t for ts in tables.values() for t in ts} | {"psra_verdicts"}))
    source = _param_source(conn, states["psra_verdicts"] is None)
    out = []
    for name, pattern in QUERY_PATTERNS.items():
        reasons = [r for t in tables[name] if (r := states[t]) is not None]
        if reasons:
            out.append(PatternPlan(name, pattern.label, tables[name], (), (), None, "skipped: " + "; ".join(reasons)))
            continue
        params = generate_params(name, source, 1, seed)[0]
        try:
            plan = explain_analyze(conn, pattern.sql, params, analyze=False)
        except MeasurementError as e:
            out.append(PatternPlan(name, pattern.label, tables[name], (), (), None, f"skipped: {e}"))
            continue
        out.append(
            PatternPlan(name, pattern.label, tables[name], plan.node_types, plan.index_names, plan.total_cost, None)
        )
    return out


def _enforces(index: Mapping[str, Any]) -> bool:
    """True for a primary key, unique or constraint index (never a duplicate, never unused)."""
    return bool(index["primary"] or index["unique"] or index["constraint_name"])


def _duplicates(catalog: Sequence[Mapping[str, Any]]) -> list[DuplicateIndex]:
    """PgHero's duplicates: a plain valid index whose keys lead another valid index (same table, method, predicate)."""
    valid = [ix for ix in catalog if ix["valid"]]
    out = []
    for ix in valid:
        if _enforces(ix):
            continue
        # Of two identical plain indexes, only the one whose name sorts last is the duplicate.
        mine = key_columns(ix)
        others = [
            o for o in valid
            if not (key_columns(o) == mine and o["index"] > ix["index"] and not _enforces(o))
        ]  # fmt: skip
        cover = covering_index(ix, others)
        if cover is not None:
            out.append(DuplicateIndex(str(ix["index"]), str(ix["table"]), cover, int(ix["size_bytes"])))
    return out


def catalog_audit(conn: psycopg.Connection[Any], *, seed: int = 0) -> CatalogAudit:
    """Audit the indexes of schema public read-only: catalog, idx_scan, EXPLAIN usage, unused and duplicates.

    Everything runs in one READ ONLY transaction that is rolled back (:func:`read_only_transaction`):
    no index is built or dropped, no row written, no statement executed beyond catalog reads and
    plain EXPLAIN. ``seed`` picks the parameters each pattern is planned with.
    """
    with read_only_transaction(conn):
        ((read_only,),) = _rows(conn, "SHOW transaction_read_only")
        window = _window(conn)
        scans = _scans(conn, window.server_version_num)  # before any query below could add a scan
        catalog = index_catalog(conn)
        plans = _plans(conn, seed)
    users: dict[str, list[str]] = {}
    for p in plans:
        for name in p.index_names:
            users.setdefault(name, []).append(p.name)
    indexes = tuple(
        CatalogIndex(
            table=str(ix["table"]),
            name=str(ix["index"]),
            definition=str(ix["definition"]),
            method=str(ix["method"]),
            size_bytes=int(ix["size_bytes"]),
            primary=bool(ix["primary"]),
            unique=bool(ix["unique"]),
            constraint=ix["constraint_name"],
            valid=bool(ix["valid"]),
            keys=tuple(ix["keys"]),
            predicate=ix["predicate"],
            idx_scan=scans.get(str(ix["index"]), (0, None))[0],
            last_idx_scan=scans.get(str(ix["index"]), (0, None))[1],
            used_by=tuple(users.get(str(ix["index"]), ())),
        )
        for ix in catalog
    )
    return CatalogAudit(
        database=conn.info.dbname,
        read_only=read_only == "on",
        window=window,
        indexes=indexes,
        patterns=tuple(plans),
        duplicates=tuple(_duplicates(catalog)),
    )
