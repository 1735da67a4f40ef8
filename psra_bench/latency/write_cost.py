"""What indexes cost: insert throughput into ``psra_verdicts``, index sizes and usage statistics.

**Size and usage.** :func:`index_sizes` reads ``pg_relation_size`` per index; :func:`index_snapshot`
reads ``idx_scan``/``idx_tup_read`` from ``pg_stat_user_indexes`` in a fresh statistics snapshot,
after :func:`flush_stats` made the measuring backend's pending counters visible
(``pg_stat_force_next_flush()`` on PostgreSQL >= 15, which flushes before the backend answers;
older servers publish about every 500 ms, so it waits).

**Write cost.** Every index on a table is updated by every INSERT, so the 13 indexes the migration adds to
``psra_verdicts`` make writing verdicts slower. This module measures by how much:

* **Rows.** New verdicts are copies of real rows of the dataset (rule, tenant, status, route,
  product, citations/reasons JSON), sampled with a seeded generator, with fresh ids, a fresh
  ``input_hash``, a small ``input_payload`` like the application stores, and ``created_at``
  just after the newest row — new verdicts arrive at the right edge of the time indexes.
* **Batches.** One batch is ``executemany`` of the application's single-row INSERT (psycopg
  sends it pipelined, one round trip per batch) inside a transaction that is always rolled
  back, so the dataset is unchanged. The timer covers the inserts only: the commit's WAL flush
  is left out, which is the same for both index sets and would only dilute the ratio.
* **Leftovers.** Rolled-back rows stay as dead tuples until VACUUM; the caller vacuums the
  table after the last batch (:func:`vacuum_verdicts`); their pages remain as free space.

Throughput figures are derived from batch durations summarized by :func:`psra_bench.measure.stats.summarize`
(median, spread, bootstrap CI); the two index sets are compared with
:func:`psra_bench.measure.stats.decide`.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from psra_bench.exceptions import MeasurementError
from psra_bench.measure.stats import decide, summarize
from psra_bench.results import LatencySummary, Throughput, WriteCost

__all__ = [
    "INSERT_VERDICT",
    "server_version_num",
    "flush_stats",
    "index_snapshot",
    "index_stats_delta",
    "index_sizes",
    "table_sizes",
    "load_templates",
    "verdict_rows",
    "time_insert_batch",
    "vacuum_verdicts",
    "summarize_write_cost",
    "throughput",
]

_COLUMNS = (
    "id evaluation_id request_id rule_id tenant_id status confidence citations reasons notes ledger_reference "
    "input_payload input_hash processing_time_ms rules_evaluated agreement_code hs_subheading effective_date "
    "export_country import_country lineage_required decided_at created_at updated_at"
).split()

#: The application's single-row verdict INSERT (named placeholders, one row per execution).
INSERT_VERDICT = (
    f"INSERT INTO psra_verdicts ({', '.join(_COLUMNS)}) VALUES (" + ", ".join(f"%({c})s" for c in _COLUMNS) + ")"
)

_TEMPLATE_SQL = """
    SELECT rule_id, tenant_id, status, confidence, citations, reasons, ledger_reference, processing_time_ms,
           rules_evaluated, agreement_code, hs_subheading, export_country, import_country, lineage_required
    FROM psra_verdicts ORDER BY evaluation_id LIMIT %(limit)s"""


def load_templates(conn: psycopg.Connection[Any], limit: int = 500) -> list[dict[str, Any]]:
    """Up to ``limit`` real verdict rows to copy from (a stable pseudo-random sample: ordered by evaluation_id)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_TEMPLATE_SQL, {"limit": limit}).fetchall()
    if not rows:
        raise MeasurementError("psra_verdicts is empty; seed the dataset before measuring the write cost")
    return rows


def verdict_rows(
    templates: Sequence[dict[str, Any]], count: int, rng: np.random.Generator, start: dt.datetime
) -> list[dict[str, Any]]:
    """``count`` new verdict rows (fresh ids and hashes, created from ``start`` on) copied from ``templates``."""
    picks = rng.integers(0, len(templates), size=count)
    ids = rng.bytes(48 * count)
    hashes = rng.bytes(32 * count).hex()
    steps = np.cumsum(rng.integers(1, 2000, size=count))  # ms between arrivals
    rows = []
    for i in range(count):
        t = templates[int(picks[i])]
        created = start + dt.timedelta(milliseconds=int(steps[i]))
        rows.append(
            {
                **t,
                "id": uuid.UUID(bytes=ids[48 * i : 48 * i + 16], version=4),
                "evaluation_id": uuid.UUID(bytes=ids[48 * i + 16 : 48 * i + 32], version=4),
                "request_id": uuid.UUID(bytes=ids[48 * i + 32 : 48 * i + 48], version=4),
                "citations": Jsonb(t["citations"]),
                "reasons": Jsonb(t["reasons"]),
                "notes": None,
                "input_payload": Jsonb(
                    {
                        "hs_code": t["hs_subheading"],
                        "origin_country": t["export_country"],
                        "destination_country": t["import_country"],
                        "agreement_code": t["agreement_code"],
                        "tenant_id": str(t["tenant_id"]),
                        "assessment_date": created.date().isoformat(),
                    }
                ),
                "input_hash": hashes[64 * i : 64 * i + 64],
                "effective_date": created.date(),
                "decided_at": created,
                "created_at": created,
                "updated_at": created,
            }
        )
    return rows


def time_insert_batch(conn: psycopg.Connection[Any], rows: Sequence[dict[str, Any]]) -> float:
    """Milliseconds to INSERT ``rows`` (executemany) in a transaction that is then rolled back."""
    if not rows:
        raise MeasurementError("an insert batch needs at least one row")
    with conn.transaction(force_rollback=True), conn.cursor() as cur:
        started = time.perf_counter_ns()
        cur.executemany(INSERT_VERDICT, rows)
        elapsed = time.perf_counter_ns() - started
    return elapsed / 1e6


def vacuum_verdicts(conn: psycopg.Connection[Any]) -> float:
    """VACUUM psra_verdicts with index cleanup (removes the rolled-back rows and their index entries); seconds."""
    if not conn.autocommit:
        raise MeasurementError("VACUUM needs an autocommit connection")
    started = time.perf_counter()
    # INDEX_CLEANUP ON: a few dead rows would otherwise skip index vacuuming (PostgreSQL >= 14) and leave
    # dead line pointers and index entries behind. The freed tail pages are truncated only when they are
    # many (1,000 pages or 1/16 of the table); otherwise they stay as free space the next run reuses.
    conn.execute("VACUUM (INDEX_CLEANUP ON) psra_verdicts")
    return time.perf_counter() - started


def throughput(rows_per_batch: int, ms: Sequence[float], stats: LatencySummary) -> Throughput:
    """Rows/s of each batch, their median with a CI (from the batch-time median's CI ``stats``), min and max."""
    per_batch = [rows_per_batch * 1000.0 / m for m in ms]
    lo, hi = stats["p50_ci"]
    return {
        "median_rows_per_s": float(np.median(per_batch)),
        # The median's CI in ms maps monotonically (and reversed) onto rows/s.
        "median_rows_per_s_ci": [rows_per_batch * 1000.0 / hi, rows_per_batch * 1000.0 / lo],
        "min_rows_per_s": min(per_batch),
        "max_rows_per_s": max(per_batch),
        "per_batch_rows_per_s": per_batch,
    }


def summarize_write_cost(
    before_ms: Sequence[float],
    after_ms: Sequence[float],
    rows_per_batch: int,
    *,
    index_counts: tuple[int, int],
    seed: int = 0,
    factor: float = 1.1,
    alpha: float = 0.05,
) -> WriteCost:
    """Batch durations before/after the migration -> stats, rows/s with CIs, the decision and the cost ratio.

    ``ratio`` (median batch time after / before) is how many times longer an insert takes with
    the migration's indexes; ``throughput_ratio`` is its inverse (rows/s after ÷ before).
    """
    before = summarize(before_ms, seed=seed).to_dict()
    after = summarize(after_ms, seed=seed).to_dict()
    decision = decide(before_ms, after_ms, factor, alpha, seed=seed).to_dict()
    return {
        "rows_per_batch": rows_per_batch,
        "batches": {"before": len(before_ms), "after": len(after_ms)},
        "index_counts": {"before": index_counts[0], "after": index_counts[1]},
        "before": {"batch_ms": before, **throughput(rows_per_batch, before_ms, before)},
        "after": {"batch_ms": after, **throughput(rows_per_batch, after_ms, after)},
        "decision": decision,
        "ratio": decision["ratio"],
        "ratio_ci": decision["ratio_ci"],
        "throughput_ratio": 1.0 / decision["ratio"],
        "verdict": decision["verdict"],
        "method": (
            "executemany of the single-row INSERT in a rolled-back transaction (commit excluded); "
            "batches interleaved with the query rounds; ratio = median batch time after / before"
        ),
    }


# ----------------------------------------------------------------------------- index size and usage


def server_version_num(conn: psycopg.Connection[Any]) -> int:
    """The server's version as a number (150004 for 15.4)."""
    row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    assert row is not None
    return int(row[0])


def flush_stats(measured: psycopg.Connection[Any], version_num: int) -> None:
    """Make the measuring backend's pending statistics visible to other sessions."""
    if version_num >= 150000:
        # The flush happens when the backend goes idle, before it answers: done when this returns.
        measured.execute("SELECT pg_stat_force_next_flush()")
    else:
        time.sleep(0.6)  # the stats collector publishes about every 500 ms


def index_snapshot(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, int]]:
    """Index name -> (idx_scan, idx_tup_read) for schema public, read in a fresh statistics snapshot."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise MeasurementError("index_snapshot needs a connection outside a transaction (a fresh stats snapshot)")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = conn.execute(
        "SELECT indexrelname, idx_scan, idx_tup_read FROM pg_stat_user_indexes WHERE schemaname = 'public'"
    ).fetchall()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def index_sizes(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every index in schema public with its table and size in bytes (pg_relation_size)."""
    rows = conn.execute(
        """SELECT indexrelname, relname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes
           WHERE schemaname = 'public' ORDER BY relname, indexrelname"""
    ).fetchall()
    return [{"index": r[0], "table": r[1], "size_bytes": int(r[2])} for r in rows]


def table_sizes(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Table name -> pg_table_size (heap + TOAST + maps, without indexes) for schema public."""
    rows = conn.execute(
        "SELECT relname, pg_table_size(relid) FROM pg_stat_user_tables WHERE schemaname = 'public'"
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def index_stats_delta(
    after: Mapping[str, tuple[int, int]], before: Mapping[str, tuple[int, int]]
) -> dict[str, list[int]]:
    """Index name -> [scans, tuples read] between two :func:`index_snapshot` results (indexes with scans only)."""
    out = {}
    for name, (scans, tuples) in after.items():
        s0, t0 = before.get(name, (0, 0))
        if scans - s0 > 0:
            out[name] = [scans - s0, tuples - t0]
    return out
