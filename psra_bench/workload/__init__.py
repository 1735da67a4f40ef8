"""Index advice from a team's own queries: capture, candidates, what-if screening, measured verification.

The flow (:func:`advise`) reads a workload file written by :func:`capture` (``pg_stat_statements``)
or :func:`capture_log` (a PostgreSQL log), or a plain SQL file (:func:`read_workload`); proposes
index candidates from the queries' WHERE, JOIN and ORDER BY columns (:mod:`.candidates`); screens
them by planner cost (:mod:`.screening`: HypoPG's hypothetical indexes, or real builds on a
database psra-bench owns); and measures the picked set against the current one (:mod:`.verify`).
:func:`write_advice` writes advice.json and the migration pair. Notebook 06 (parameters
:class:`IndexAdviceParams`) runs it through :func:`run_index_advice`; :mod:`.tables` builds the tables
it prints and the report files under "Index advice for your workload".
"""

from __future__ import annotations

from psra_bench.workload.advise import Advice, IndexAdvice, advise, migration_sql, write_advice
from psra_bench.workload.capture import capture, capture_log
from psra_bench.workload.model import Workload, WorkloadQuery, read_workload, write_workload
from psra_bench.workload.params import EXAMPLE_WORKLOAD, AdviceParams, CaptureParams, IndexAdviceParams
from psra_bench.workload.tables import IndexAdviceResult, advice_of, advice_tables, run_index_advice

__all__ = [
    "Advice",
    "IndexAdvice",
    "advise",
    "migration_sql",
    "write_advice",
    "capture",
    "capture_log",
    "Workload",
    "WorkloadQuery",
    "read_workload",
    "write_workload",
    "AdviceParams",
    "CaptureParams",
    "IndexAdviceParams",
    "EXAMPLE_WORKLOAD",
    "IndexAdviceResult",
    "advice_of",
    "advice_tables",
    "run_index_advice",
]
