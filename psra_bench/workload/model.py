"""The workload file: captured queries (normalized text, calls, times, rows), never the application's values.

A workload is JSON written by :func:`psra_bench.workload.capture.capture` or read from a plain SQL
file (:func:`read_workload` accepts both). Every query is known by its ``query_id``, the
fingerprint PostgreSQL's own parser gives its normalized text (pglast), so the same statement
keeps its id across captures; the workload's ``fingerprint`` hashes the sorted query ids, so
runs on the same set of query shapes share it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from psra_bench.exceptions import InputError

__all__ = [
    "FORMAT",
    "VALUES_NOTE",
    "WorkloadQuery",
    "Skipped",
    "Workload",
    "query_id",
    "workload_fingerprint",
    "read_workload",
    "write_workload",
    "sql_file_workload",
]

#: The ``format`` field of a workload file.
FORMAT = "psra-bench workload 1"
#: What the file says about parameter values (it never holds the application's).
VALUES_NOTE = (
    "no parameter values are stored; replay draws each placeholder's values from the compared column's "
    "pg_stats (most_common_vals, else histogram_bounds), else a TABLESAMPLE of the column, in the replayed database"
)


@dataclass(frozen=True)
class WorkloadQuery:
    """One captured statement: normalized text with $n placeholders, how often and how long it ran."""

    query_id: str
    query: str
    calls: int
    #: Total and mean execution time in ms (None: unknown, e.g. a plain SQL file).
    total_ms: float | None
    mean_ms: float | None
    rows: int | None
    #: pg_stat_statements' queryid (None when the query did not come from it).
    queryid: str | None = None


@dataclass(frozen=True)
class Skipped:
    """A statement left out of the workload (or of a step), with the reason in one phrase."""

    query: str
    reason: str
    query_id: str | None = None


@dataclass(frozen=True)
class Workload:
    """A set of queries to advise indexes for, and where they came from."""

    #: "pg_stat_statements", "log" or "sql-file".
    source: str
    database: str | None
    captured_at: str
    queries: tuple[WorkloadQuery, ...]
    skipped: tuple[Skipped, ...] = ()
    values: str = VALUES_NOTE
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """The content hash of the workload's query shapes (:func:`workload_fingerprint`)."""
        return workload_fingerprint(self.queries)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to a workload file."""
        return {
            "format": FORMAT,
            "source": self.source,
            "database": self.database,
            "captured_at": self.captured_at,
            "fingerprint": self.fingerprint,
            "values": self.values,
            "details": self.details,
            "queries": [asdict(q) for q in self.queries],
            "skipped": [asdict(s) for s in self.skipped],
        }


def query_id(text: str) -> str:
    """The pglast fingerprint of a statement (16 hex digits): the same for the same shape, whatever its constants."""
    from pglast.parser import ParseError, fingerprint

    try:
        return str(fingerprint(text))
    except ParseError as e:
        raise InputError("query", text[:80], f"a statement PostgreSQL's parser accepts ({e})") from None


def workload_fingerprint(queries: Sequence[WorkloadQuery]) -> str:
    """sha256 of the sorted query ids, 16 hex digits: history keys advice runs by it."""
    text = "\n".join(sorted({q.query_id for q in queries}))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _query(row: Any, where: str) -> WorkloadQuery:
    if not isinstance(row, dict) or not isinstance(row.get("query"), str):
        raise InputError("workload", where, "a list of queries, each an object with a 'query' string")
    calls = row.get("calls", 1)
    if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1:
        raise InputError(f"{where}.calls", calls, "a whole number ≥ 1")

    def num(key: str) -> float | None:
        value = row.get(key)
        return None if value is None else float(value)

    rows = row.get("rows")
    return WorkloadQuery(
        query_id=str(row.get("query_id") or query_id(row["query"])),
        query=row["query"],
        calls=calls,
        total_ms=num("total_ms"),
        mean_ms=num("mean_ms"),
        rows=None if rows is None else int(rows),
        queryid=None if row.get("queryid") is None else str(row["queryid"]),
    )


def sql_file_workload(path: Path) -> Workload:
    """A plain SQL file as a workload: one query per statement, each called once, no times."""
    from pglast import split
    from pglast.parser import ParseError

    text = path.read_text()
    try:
        statements = [s.strip() for s in split(text) if s.strip()]
    except ParseError as e:
        raise InputError("--workload", str(path), f"SQL PostgreSQL's parser accepts ({e})") from None
    if not statements:
        raise InputError("--workload", str(path), "a SQL file with at least one statement")
    queries: dict[str, WorkloadQuery] = {}
    for s in statements:
        qid = query_id(s)
        if qid in queries:  # the same shape twice: one query called twice
            old = queries[qid]
            queries[qid] = WorkloadQuery(qid, old.query, old.calls + 1, None, None, None)
        else:
            queries[qid] = WorkloadQuery(qid, s, 1, None, None, None)
    stamp = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat()
    return Workload("sql-file", None, stamp, tuple(queries.values()), details={"file": path.name})


def read_workload(path: str | Path) -> Workload:
    """A workload file (JSON from ``workload capture``) or a plain SQL file (``.sql``, or anything not JSON)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("--workload", str(path), "an existing workload file (JSON from `workload capture`) or .sql")
    if p.suffix.lower() == ".sql":
        return sql_file_workload(p)
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError:
        return sql_file_workload(p)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError("--workload", str(path), f"a workload file whose format is {FORMAT!r}, or a .sql file")
    raw = doc.get("queries")
    if not isinstance(raw, list) or not raw:
        raise InputError("--workload", str(path), "a workload with at least one query")
    queries = tuple(_query(r, f"queries[{i}]") for i, r in enumerate(raw))
    skipped = tuple(
        Skipped(str(s.get("query", "")), str(s.get("reason", "")), s.get("query_id"))
        for s in doc.get("skipped") or []
        if isinstance(s, dict)
    )
    return Workload(
        source=str(doc.get("source", "unknown")),
        database=doc.get("database"),
        captured_at=str(doc.get("captured_at", "")),
        queries=queries,
        skipped=skipped,
        values=str(doc.get("values", VALUES_NOTE)),
        details=dict(doc.get("details") or {}),
    )


def write_workload(path: str | Path, workload: Workload) -> Path:
    """Write ``workload`` as JSON to ``path`` atomically (temp file + rename)."""
    from psra_bench.workbench import save_results

    p = Path(path)
    name = p.name.removesuffix(".json")
    written = save_results(p.parent if str(p.parent) else ".", name, workload.to_dict())
    if written != p:
        written.replace(p)
    return p
