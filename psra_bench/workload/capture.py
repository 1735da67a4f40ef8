"""``workload capture``: the database's statements from ``pg_stat_statements`` (or a PostgreSQL log) as a workload.

Only what the statistics hold is kept: the normalized text (constants already replaced by $n),
calls, total and mean execution time, rows. Statements are filtered to this database (``dbid``),
to top-level ones, to at least ``min_calls`` calls, and to those that read or write a table of
schema public; the ``top`` with the most total time are kept. Statements PostgreSQL's parser
rejects, and those on no table of schema public (catalog reads, psra-bench's own bookkeeping),
are listed as skipped with the reason. The log reader (:func:`capture_log`) takes statements
written with ``log_min_duration_statement = 0``, replaces their constants by placeholders and
drops the logged parameter values: a workload never holds the application's values.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psycopg

from psra_bench.exceptions import InputError, MeasurementError
from psra_bench.workload.dbinfo import extension_state, preloaded, public_columns, server_version
from psra_bench.workload.model import Skipped, Workload, WorkloadQuery, query_id
from psra_bench.workload.params import CaptureParams
from psra_bench.workload.shapes import analyze

__all__ = ["ENABLE_HINT", "require_pg_stat_statements", "capture", "capture_log", "normalize"]

#: How to enable pg_stat_statements on a server, in one clause.
ENABLE_HINT = (
    "add pg_stat_statements to shared_preload_libraries in postgresql.conf (or ALTER SYSTEM SET "
    "shared_preload_libraries = 'pg_stat_statements'), restart the server and run CREATE EXTENSION pg_stat_statements "
    "in the database"
)

_STATEMENTS = """
SELECT s.queryid::text, s.query, s.calls, s.total_exec_time, s.mean_exec_time, s.rows
FROM pg_stat_statements s
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND s.calls >= %(min_calls)s {toplevel}
ORDER BY s.total_exec_time DESC
LIMIT %(limit)s"""


def require_pg_stat_statements(
    conn: psycopg.Connection[Any], *, may_create: Callable[[], bool], embedded: bool = False
) -> None:
    """Make sure ``pg_stat_statements`` can be read here; else one MeasurementError sentence saying how to enable it.

    ``may_create()``: whether the extension may be created in this database (psra-bench owns it; asked only then).
    ``embedded``: the server is psra-bench's own, started before it preloaded the library.
    """
    db = conn.info.dbname
    if not preloaded(conn, "pg_stat_statements"):
        if embedded:
            raise MeasurementError(
                "pg_stat_statements is not loaded by the embedded PostgreSQL, which was started before psra-bench "
                "preloaded it; run `psra-bench services down` once (the next command restarts it with the library, "
                "when the embedded build ships it)"
            )
        raise MeasurementError(f"pg_stat_statements is not loaded on the server of database {db!r}: {ENABLE_HINT}")
    state = extension_state(conn, "pg_stat_statements")
    if state == "installed":
        return
    if state == "available" and may_create():
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return
    raise MeasurementError(
        f"the pg_stat_statements extension is not created in database {db!r}: run CREATE EXTENSION "
        "pg_stat_statements there (psra-bench creates it only in a database it owns)"
    )


def _withheld(text: str) -> str:
    """A skipped statement as the workload lists it: constants replaced (utility statements keep theirs in
    pg_stat_statements, e.g. a password), at most 200 characters; only its first word when it cannot be scanned."""
    from pglast.parser import ParseError

    try:
        return " ".join(normalize(text).split())[:200]
    except ParseError:
        words = text.split()
        return (words[0] if words else "") + " … (not scanned: text withheld)"


def _keep(
    rows: Iterable[tuple[str, Any, int, float | None, int | None]],
    columns: dict[str, list[str]],
    top: int,
) -> tuple[list[WorkloadQuery], list[Skipped]]:
    """(text, queryid, calls, total ms, rows) -> the queries on tables of schema public (``top`` first), the skipped.

    Statements of one shape (one pglast fingerprint) are merged into one query.
    """
    merged: dict[str, WorkloadQuery] = {}
    skipped: list[Skipped] = []
    for text, queryid, calls, total, nrows in rows:
        try:
            qid = query_id(text)
            shape = analyze(text, columns)
        except InputError as e:
            skipped.append(Skipped(_withheld(text), f"PostgreSQL's parser rejects it: {e}"))
            continue
        if shape.kind == "other" or not shape.tables:
            skipped.append(Skipped(_withheld(text), "reads or writes no table of schema public", qid))
            continue
        old = merged.get(qid)
        if old is None:
            merged[qid] = WorkloadQuery(qid, text, calls, total, None, nrows, None if queryid is None else str(queryid))
        else:  # one shape seen under several queryids (other users, search paths): one query
            tot = None if old.total_ms is None or total is None else old.total_ms + total
            rows_sum = None if old.rows is None or nrows is None else old.rows + nrows
            merged[qid] = WorkloadQuery(qid, old.query, old.calls + calls, tot, None, rows_sum, old.queryid)
    ranked = sorted(merged.values(), key=lambda q: -(q.total_ms or 0.0))[:top]
    out = [
        WorkloadQuery(q.query_id, q.query, q.calls, q.total_ms, None if q.total_ms is None else q.total_ms / q.calls,
                      q.rows, q.queryid)
        for q in ranked
    ]  # fmt: skip
    return out, skipped


def capture(
    conn: psycopg.Connection[Any],
    params: CaptureParams,
    *,
    may_create: Callable[[], bool] = lambda: False,
    embedded: bool = False,
) -> Workload:
    """The workload of the database of ``conn`` from ``pg_stat_statements`` (autocommit connection)."""
    require_pg_stat_statements(conn, may_create=may_create, embedded=embedded)
    row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    version = int(row[0]) if row else 0
    toplevel = "AND s.toplevel" if version >= 140000 else ""
    rows = conn.execute(
        _STATEMENTS.format(toplevel=toplevel), {"min_calls": params.min_calls, "limit": params.top * 4 + 100}
    ).fetchall()
    db = str(conn.info.dbname)
    columns = public_columns(conn)
    queries, skipped = _keep(((str(r[1]), r[0], int(r[2]), float(r[3]), int(r[5])) for r in rows), columns, params.top)
    if not queries:
        raise MeasurementError(
            f"pg_stat_statements holds no statement on a table of schema public of database {db!r} with at least "
            f"{params.min_calls} call(s); run the application's workload first (or lower --min-calls)"
        )
    return Workload(
        source="pg_stat_statements",
        database=db,
        captured_at=dt.datetime.now(dt.UTC).isoformat(),
        queries=tuple(queries),
        skipped=tuple(skipped),
        details={"server_version": server_version(conn), "top": params.top, "min_calls": params.min_calls},
    )


# ----------------------------------------------------------------------------- PostgreSQL log
_CONSTANTS = {"SCONST", "ICONST", "FCONST", "BCONST", "XCONST", "USCONST"}
_LOGGED = re.compile(r"duration: ([0-9.]+) ms\s+(?:statement|execute [^:]*): (.*)$")


def normalize(text: str) -> str:
    """``text`` with every constant replaced by $1, $2, ... (after any placeholder it already has)."""
    from pglast.parser import scan

    tokens = list(scan(text))
    used = [int(text[t.start + 1 : t.end + 1]) for t in tokens if t.name == "PARAM"]
    n = max(used, default=0)
    out, last = [], 0
    for t in tokens:
        if t.name in _CONSTANTS:
            n += 1
            out += [text[last : t.start], f"${n}"]
            last = t.end + 1
    return "".join(out) + text[last:]


def _log_statements(path: Path) -> Iterable[tuple[float, str]]:
    """(ms, statement) of every ``duration: ... statement:`` entry; continuation lines start with a tab."""
    current: list[str] | None = None
    ms = 0.0
    for line in path.read_text(errors="replace").splitlines():
        if current is not None and line.startswith("\t"):
            current.append(line[1:])
            continue
        if current is not None:
            yield ms, "\n".join(current)
            current = None
        m = _LOGGED.search(line)
        if m:
            ms, current = float(m.group(1)), [m.group(2)]
    if current is not None:
        yield ms, "\n".join(current)


def capture_log(conn: psycopg.Connection[Any], log: str | Path, params: CaptureParams) -> Workload:
    """The workload of a PostgreSQL log written with ``log_min_duration_statement = 0``: shapes, calls, times."""
    from pglast.parser import ParseError

    path = Path(log)
    if not path.is_file():
        raise InputError("--log", str(log), "a readable PostgreSQL log file")
    found: dict[str, list[Any]] = {}
    skipped: list[Skipped] = []
    for ms, text in _log_statements(path):
        try:
            shape_text = normalize(text)
        except ParseError as e:
            skipped.append(Skipped(_withheld(text), f"PostgreSQL's scanner rejects it: {e}"))
            continue
        entry = found.setdefault(shape_text, [0, 0.0])
        entry[0] += 1
        entry[1] += ms
    rows = [(t, None, c, tot, None) for t, (c, tot) in found.items() if c >= params.min_calls]
    queries, more = _keep(rows, public_columns(conn), params.top)
    if not queries:
        raise MeasurementError(
            f"the log {path.name} holds no statement on a table of schema public with at least {params.min_calls} "
            "call(s) and a duration; write it with log_min_duration_statement = 0"
        )
    return Workload(
        source="log",
        database=str(conn.info.dbname),
        captured_at=dt.datetime.now(dt.UTC).isoformat(),
        queries=tuple(queries),
        skipped=tuple(skipped + more),
        details={"log": path.name, "server_version": server_version(conn), "top": params.top},
    )
