"""EXPLAIN capture: run ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` and read what matters from the plan.

The statement runs inside a transaction that is always rolled back (a savepoint when the
connection is already in one), so explaining an UPDATE or INSERT measures it without keeping
its effects (sequences still advance: nextval is never rolled back). Parameters use psycopg 3's
server-side binding: the server plans the statement with the bound values (a custom plan),
exactly as it would for the application's query.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from psra_bench.exceptions import MeasurementError, ParameterError
from psra_bench.settings import redact

__all__ = ["ExplainResult", "explain_analyze", "plan_nodes"]

Query = str | sql.Composable
Params = Sequence[Any] | Mapping[str, Any] | None


@dataclass(frozen=True)
class ExplainResult:
    """One EXPLAIN of one statement: the plan JSON and the facts read from it."""

    query: str
    #: The whole EXPLAIN JSON object ("Plan", "Planning Time", "Execution Time", ...).
    plan: dict[str, Any]
    analyzed: bool
    #: Server-side execution time in ms (None without ANALYZE).
    execution_ms: float | None
    planning_ms: float | None
    #: Node types in plan order, each once ("Index Scan", "Seq Scan", ...).
    node_types: tuple[str, ...]
    #: Indexes the plan uses, each once, in plan order.
    index_names: tuple[str, ...]
    #: Tables read by a (possibly parallel) sequential scan.
    seq_scan_relations: tuple[str, ...]
    #: Shared buffers found in cache / read from disk by the execution (None without ANALYZE).
    shared_hit: int | None
    shared_read: int | None
    total_cost: float
    #: Rows the top node returned (a float: PostgreSQL 18 reports fractional averages per loop).
    actual_rows: float | None

    @property
    def seq_scan(self) -> bool:
        """True when any node of the plan is a sequential scan."""
        return "Seq Scan" in self.node_types

    def uses_index(self, name: str) -> bool:
        """True when the plan reads index ``name``."""
        return name in self.index_names

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (the plan JSON included)."""
        return {
            "query": self.query,
            "analyzed": self.analyzed,
            "execution_ms": self.execution_ms,
            "planning_ms": self.planning_ms,
            "node_types": list(self.node_types),
            "index_names": list(self.index_names),
            "seq_scan": self.seq_scan,
            "seq_scan_relations": list(self.seq_scan_relations),
            "shared_hit": self.shared_hit,
            "shared_read": self.shared_read,
            "total_cost": self.total_cost,
            "actual_rows": self.actual_rows,
            "plan": self.plan,
        }


def plan_nodes(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every node of a plan tree (depth first, parent before children; subplans included)."""
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)


def _unique(values: Iterator[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _query_text(conn: psycopg.Connection[Any], query: Query) -> str:
    if isinstance(query, sql.Composable):
        return query.as_string(conn)
    if isinstance(query, str):
        return query
    raise ParameterError("query", type(query).__name__, "use a SQL string or a psycopg.sql.Composable")


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def explain_analyze(
    conn: psycopg.Connection[Any],
    query: Query,
    params: Params = None,
    *,
    analyze: bool = True,
) -> ExplainResult:
    """EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ``query`` with ``params`` in a rolled-back transaction.

    ``analyze=False`` only plans the statement (FORMAT JSON, no execution, no timings).
    """
    text = _query_text(conn, query)
    if not text.strip():
        raise ParameterError("query", text, "use a non-empty SQL statement")
    if text.lstrip().split(None, 1)[0].upper() == "EXPLAIN":
        raise ParameterError("query", text, "pass the statement itself; EXPLAIN is added here")
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    body = query if isinstance(query, sql.Composable) else sql.SQL(text)
    statement = sql.Composed([sql.SQL(f"EXPLAIN ({options}) "), body])
    try:
        with conn.transaction(force_rollback=True), conn.cursor() as cur:
            cur.execute(statement, params, prepare=False)
            row = cur.fetchone()
    except psycopg.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MeasurementError(f"EXPLAIN of {text!r} failed: {redact(first)}") from e
    if row is None:
        raise MeasurementError(f"EXPLAIN of {text!r} returned no plan")
    document = row[0]
    if isinstance(document, str | bytes):  # a connection whose json loader was replaced
        document = json.loads(document)
    plan: dict[str, Any] = document[0]
    root: Mapping[str, Any] = plan["Plan"]
    nodes = list(plan_nodes(root))
    return ExplainResult(
        query=text,
        plan=plan,
        analyzed=analyze,
        execution_ms=plan.get("Execution Time"),
        planning_ms=plan.get("Planning Time"),
        node_types=_unique(n["Node Type"] for n in nodes),
        index_names=_unique(n["Index Name"] for n in nodes if "Index Name" in n),
        seq_scan_relations=_unique(n.get("Relation Name", "?") for n in nodes if n["Node Type"] == "Seq Scan"),
        shared_hit=_int_or_none(root.get("Shared Hit Blocks")) if analyze else None,
        shared_read=_int_or_none(root.get("Shared Read Blocks")) if analyze else None,
        total_cost=float(root["Total Cost"]),
        actual_rows=float(root["Actual Rows"]) if analyze and "Actual Rows" in root else None,
    )
