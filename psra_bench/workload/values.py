"""Replay values for a query's placeholders, drawn from the database's own column values (never the application's).

For a placeholder compared with ``table.column``: the column's ``pg_stats.most_common_vals``
(drawn with their frequencies), else its ``histogram_bounds`` (drawn evenly), else a
``TABLESAMPLE SYSTEM`` of the column's non-null values. A LIMIT placeholder gets
:attr:`AdviceParams.limit_value`, an OFFSET placeholder 0. Values are sent as untyped text, so
the server casts them to the column's type as it would a literal.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from psra_bench.workload.params import AdviceParams
from psra_bench.workload.shapes import Shape

__all__ = ["ColumnValues", "ValueSource", "NoValues"]

_STATS = """
SELECT most_common_vals::text::text[], most_common_freqs, histogram_bounds::text::text[]
FROM pg_stats WHERE schemaname = 'public' AND tablename = %s AND attname = %s"""


class NoValues(Exception):
    """A placeholder's values cannot be drawn (the reason is the message); the query is skipped."""


@dataclass(frozen=True)
class ColumnValues:
    """The values one column offers, and where they came from."""

    values: tuple[str, ...]
    weights: tuple[float, ...] | None
    #: "pg_stats most_common_vals", "pg_stats histogram_bounds" or "TABLESAMPLE".
    source: str


@dataclass
class ValueSource:
    """Draws parameter sets for queries from one database, caching each column's values."""

    conn: psycopg.Connection[Any]
    params: AdviceParams
    cache: dict[tuple[str, str], ColumnValues] = field(default_factory=dict)

    def column(self, table: str, column: str) -> ColumnValues:
        """The values of ``table.column`` (pg_stats, else a TABLESAMPLE)."""
        key = (table, column)
        if key not in self.cache:
            self.cache[key] = self._read(table, column)
        return self.cache[key]

    def _read(self, table: str, column: str) -> ColumnValues:
        row = self.conn.execute(_STATS, (table, column)).fetchone()
        if row and row[0]:
            freqs = [float(f) for f in row[1]]
            total = sum(freqs)
            return ColumnValues(tuple(row[0]), tuple(f / total for f in freqs), "pg_stats most_common_vals")
        if row and row[2]:
            return ColumnValues(tuple(row[2]), None, "pg_stats histogram_bounds")
        ident = sql.Identifier(column)
        query = sql.SQL("SELECT {c}::text FROM {t} TABLESAMPLE SYSTEM (%s) WHERE {c} IS NOT NULL LIMIT 500").format(
            c=ident, t=sql.Identifier("public", table)
        )
        reltuples = self.conn.execute(
            "SELECT greatest(reltuples, 1) FROM pg_class WHERE oid = to_regclass(%s)", (f"public.{table}",)
        ).fetchone()
        pct = min(100.0, max(1.0, 200_000.0 / float(reltuples[0] if reltuples else 1)))
        values = [r[0] for r in self.conn.execute(query, (pct,)).fetchall()]
        if not values:
            raise NoValues(f"column {table}.{column} has no statistics and no non-null value to replay with")
        return ColumnValues(tuple(values), None, "TABLESAMPLE")

    def sources(self, shape: Shape) -> dict[int, str]:
        """Placeholder number -> where its values come from (for the advice file)."""
        out = {}
        for n, b in sorted(shape.bindings.items()):
            if b.role == "column" and b.table and b.column:
                out[n] = f"{b.table}.{b.column}: {self.column(b.table, b.column).source}"
            else:
                out[n] = f"{b.role}: {self.params.limit_value if b.role == 'limit' else 0}"
        return out

    def draw(self, query_id: str, shape: Shape, count: int, slot: int = 0) -> list[list[Any]]:
        """``count`` parameter lists for the query (seeded by the advice's seed, the query and ``slot``)."""
        missing = shape.unbound()
        if missing:
            raise NoValues(
                "placeholder " + ", ".join(f"${n}" for n in missing) + " is compared with no column of a table "
                "(replay cannot draw its values)"
            )
        if not shape.placeholders:
            return [[] for _ in range(count)]
        digest = int(hashlib.sha256(query_id.encode()).hexdigest()[:8], 16)
        rng = np.random.default_rng([self.params.seed, digest, slot])
        top = max(shape.placeholders)
        sets: list[list[Any]] = [[None] * top for _ in range(count)]
        for n in range(1, top + 1):
            b = shape.bindings.get(n)
            if b is None:
                continue  # a gap in the numbering ($1 and $3): the server never sees $2
            if b.role == "limit":
                picks: list[Any] = [self.params.limit_value] * count
            elif b.role == "offset":
                picks = [0] * count
            else:
                assert b.table is not None and b.column is not None
                cv = self.column(b.table, b.column)
                idx = rng.choice(len(cv.values), size=count, p=None if cv.weights is None else list(cv.weights))
                picks = [cv.values[int(i)] for i in idx]
            for s, v in zip(sets, picks, strict=True):
                s[n - 1] = v
        return sets
