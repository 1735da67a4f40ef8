"""The shapes of what the notebooks write and the report reads, as TypedDicts.

Each section notebook saves one JSON file (``01_query_latency.json`` … ``04_load_test.json``);
the report's section builders read them back. These types name the keys both sides rely on, so
mypy checks the producer (``run_query_latency``, ``cache_hit_results``, ``ttl_tuning_results``,
``run_load``) and the consumer (:mod:`psra_bench.report.sections`) against one definition. Deeper
parts whose shape belongs to one module only stay ``dict[str, Any]``.
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = [
    "TableDict",
    "LatencyRow",
    "QueryLatencyResult",
    "CacheHitRatesResult",
    "TtlTuningResult",
    "OverallRow",
    "LoadTestResult",
]


class _TableRequired(TypedDict):
    title: str
    columns: list[str]
    rows: list[list[Any]]


class TableDict(_TableRequired, total=False):
    """A table as the notebooks save it (see :meth:`psra_bench.table.Table.from_dict`)."""

    note: str
    section: str


class LatencyRow(TypedDict):
    """One row of the spec's "Query Performance" table, measured (``latency_table``)."""

    operation: str
    query: str
    spec_row: str
    n_before: int
    n_after: int
    before_p50_ms: float
    before_p95_ms: float
    before_p99_ms: float
    before_p50_ci: list[float]
    after_p50_ms: float
    after_p95_ms: float
    after_p99_ms: float
    after_p50_ci: list[float]
    improvement_pct: float
    ratio: float
    ratio_ci: list[float]
    p_value: float
    verdict: str
    plan_changed: bool
    spec_before_ms: float
    spec_after_ms: float
    spec_improvement_pct: float


class QueryLatencyResult(TypedDict):
    """``01_query_latency.json``: the before/after experiment (``run_query_latency``)."""

    experiment: str
    method: dict[str, Any]
    queries: dict[str, dict[str, Any]]
    index_usage: list[dict[str, Any]]
    #: Every index in schema public with the migration applied (``latency.audit.index_catalog``).
    catalog: list[dict[str, Any]]
    #: One row per index: evidence and keep / drop / review (``latency.audit.audit_indexes``).
    audit: list[dict[str, Any]]
    #: The third side: baseline / spec / recommended per query, writes and sizes (None when not run).
    recommended: dict[str, Any] | None
    sizes: dict[str, Any]
    migration: dict[str, Any]
    write_cost: dict[str, Any] | None
    vacuum_seconds: float | None
    #: The VACUUM after each round's insert batches, in seconds.
    round_vacuum_seconds: list[float]
    fingerprint: dict[str, Any]
    elapsed_seconds: float
    table: list[LatencyRow]


class CacheHitRatesResult(TypedDict):
    """``02_cache_hit_rates.json``: the live replay and its simulation check (``cache_hit_results``)."""

    experiment: str
    params: dict[str, Any]
    live: dict[str, Any]
    sim_vs_live: dict[str, Any]
    tables: list[TableDict]
    notes: list[str]
    fingerprint: dict[str, Any]


class TtlTuningResult(TypedDict):
    """``03_ttl_tuning.json``: the TTL sweep and recommendations (``ttl_tuning_results``)."""

    experiment: str
    params: dict[str, Any]
    trace: dict[str, Any]
    tuning: dict[str, Any]
    sim_vs_live: dict[str, Any]
    tables: list[TableDict]
    notes: list[str]
    fingerprint: dict[str, Any]
    default_grid_s: list[float]


class OverallRow(TypedDict):
    """One row of the spec's "Overall System Performance" table, measured (``overall_table``)."""

    metric: str
    unit: str
    before: float | None
    after: float | None
    change_pct: float | None
    improvement: str | None
    better: str
    before_config: str
    after_config: str
    n_before: int | None
    n_after: int | None
    note: str


class LoadTestResult(TypedDict):
    """``04_load_test.json``: every configuration's load test and the summary table (``run_load``)."""

    parameters: dict[str, Any]
    configurations: dict[str, dict[str, Any]]
    table: list[OverallRow]
    started_at: float
    seconds: float
    fingerprint: dict[str, Any] | None
    method: Any
