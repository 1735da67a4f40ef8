"""Index candidates from the workload's columns (Dexter's method), the spec's 26, and the indexes that exist.

Per query and table: each column the query compares in WHERE or a JOIN condition (equality or
range) or sorts by, alone and in every two-column order. The spec migration's indexes on a table
the workload reads join them. A candidate whose key columns an existing valid btree index already
leads (same table, no predicate) is left out: that index serves the same scans. The existing
indexes are described by the read-only catalog audit (:func:`psra_bench.latency.catalog.catalog_audit`):
``idx_scan`` in the statistics window, and PgHero's duplicates.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from psra_bench.latency.audit import key_columns
from psra_bench.latency.catalog import CatalogIndex
from psra_bench.workload.shapes import EQ, RANGE, Shape

__all__ = ["Candidate", "workload_candidates", "spec_candidates", "index_name", "plain_definition", "concurrent"]

_IDENT = re.compile(r"^[a-z_][a-z0-9_$]*$")


@dataclass(frozen=True)
class Candidate:
    """One index that could be added: its table, key columns, name and plain CREATE INDEX statement."""

    table: str
    #: Key columns as written in the definition (btree; the spec's may carry DESC or another method).
    keys: tuple[str, ...]
    name: str
    #: ``CREATE INDEX name ON public.table USING method (keys) [WHERE ...]``: no CONCURRENTLY, no IF NOT EXISTS.
    definition: str
    #: "workload" (from the queries' columns) or "spec" (one of the migration's 26).
    origin: str
    #: The queries whose columns proposed it (empty for the spec's).
    queries: tuple[str, ...] = ()
    method: str = "btree"
    predicate: str | None = None

    @property
    def compare_keys(self) -> tuple[str, ...]:
        """Key columns without ASC/DESC (a btree scans both ways)."""
        return tuple(" ".join(k.split()).removesuffix(" DESC").removesuffix(" ASC") for k in self.keys)


def _quote(name: str) -> str:
    return name if _IDENT.match(name) else '"' + name.replace('"', '""') + '"'


def index_name(table: str, columns: Sequence[str], taken: Iterable[str] = ()) -> str:
    """``idx_<table>_<columns>``, shortened with a hash past 63 bytes, suffixed when the name is taken."""
    base = "idx_" + "_".join([table, *columns])
    base = re.sub(r"[^a-z0-9_]", "_", base.lower())
    if len(base) > 63:
        base = base[:54] + "_" + hashlib.sha256(base.encode()).hexdigest()[:8]
    taken = set(taken)
    name, n = base, 2
    while name in taken:
        name = f"{base[:60]}_{n}"
        n += 1
    return name


def _btree(table: str, columns: Sequence[str], name: str) -> str:
    cols = ", ".join(_quote(c) for c in columns)
    return f"CREATE INDEX {name} ON public.{_quote(table)} USING btree ({cols})"


def plain_definition(statement: str) -> str:
    """A CREATE INDEX statement without CONCURRENTLY and IF NOT EXISTS (what HypoPG and a plain build take)."""
    s = re.sub(r"\s+CONCURRENTLY\b", "", statement.strip().rstrip(";"), flags=re.I)
    return re.sub(r"\s+IF\s+NOT\s+EXISTS\b", "", s, flags=re.I)


def concurrent(definition: str) -> str:
    """A plain CREATE INDEX as ``CREATE INDEX CONCURRENTLY IF NOT EXISTS ...`` (for the up migration)."""
    return re.sub(
        r"^CREATE\s+(UNIQUE\s+)?INDEX\s+", r"CREATE \1INDEX CONCURRENTLY IF NOT EXISTS ", definition, flags=re.I
    )


def _served(table: str, keys: tuple[str, ...], existing: Sequence[CatalogIndex]) -> str | None:
    """The existing valid btree index (no predicate) whose key columns start with ``keys``, or None."""
    for ix in existing:
        if ix.table != table or ix.method != "btree" or ix.predicate or not ix.valid:
            continue
        theirs = key_columns({"keys": ix.keys, "method": ix.method})
        if len(theirs) >= len(keys) and tuple(theirs[: len(keys)]) == keys:
            return ix.name
    return None


def workload_candidates(shapes: Mapping[str, Shape], existing: Sequence[CatalogIndex]) -> list[Candidate]:
    """Single columns and two-column orders per query and table, less those an existing index already serves."""
    found: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for qid, shape in shapes.items():
        per_table: dict[str, list[str]] = {}
        for use in shape.uses:
            if use.clause in ("where", "join") and use.how not in (EQ, RANGE):
                continue
            cols = per_table.setdefault(use.table, [])
            if use.column not in cols:
                cols.append(use.column)
        for table, cols in per_table.items():
            combos: list[tuple[str, ...]] = [(c,) for c in cols] + list(itertools.permutations(cols, 2))
            for keys in combos:
                found.setdefault((table, tuple(keys)), [])
                if qid not in found[(table, tuple(keys))]:
                    found[(table, tuple(keys))].append(qid)
    taken = {ix.name for ix in existing}
    out = []
    for (table, keys), qids in sorted(found.items()):
        if _served(table, keys, existing):
            continue
        name = index_name(table, keys, taken)
        taken.add(name)
        out.append(Candidate(table, keys, name, _btree(table, keys, name), "workload", tuple(qids)))
    return out


def spec_candidates(tables: Iterable[str], existing: Sequence[CatalogIndex]) -> list[Candidate]:
    """The spec migration's indexes on ``tables`` that do not exist yet (by name), as candidates."""
    from pglast import ast, parse_sql

    from psra_bench.db.migrate import migration_indexes

    names = {ix.name for ix in existing}
    wanted = set(tables)
    out = []
    for spec in migration_indexes():
        if spec.table not in wanted or spec.name in names:
            continue
        definition = plain_definition(spec.create)
        stmt = parse_sql(definition)[0].stmt
        assert isinstance(stmt, ast.IndexStmt)
        keys = []
        for elem in stmt.indexParams or ():
            text = elem.name if elem.name else "expr"
            keys.append(text + (" DESC" if elem.ordering and int(elem.ordering) == 2 else ""))
        predicate = "where" if stmt.whereClause is not None else None
        method = stmt.accessMethod or "btree"
        out.append(Candidate(spec.table, tuple(keys), spec.name, definition, "spec", (), method, predicate))
    return out
