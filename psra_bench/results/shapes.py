"""The shapes of experiments 01–03's results (query latency, cache hit rates, TTL tuning) and of a run's sections."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from psra_bench.results.load import LoadTestResult, ReplayResult

__all__ = [
    "TableDict",
    "LatencySummary",
    "DecisionDict",
    "SpecClaimDict",
    "QueryResult",
    "Throughput",
    "ThroughputSide",
    "WriteCost",
    "TableIndexSizes",
    "IndexSizes",
    "AuditRow",
    "ThreeWayQuery",
    "ThreeWayWrite",
    "ThreeWaySizes",
    "RecommendedSet",
    "QueryMethod",
    "LatencyRow",
    "QueryLatencyResult",
    "HitMissLatency",
    "LiveEntity",
    "LiveReplay",
    "CacheHitRatesResult",
    "TtlPoint",
    "SimulationResult",
    "TtlRecommendation",
    "TtlTuning",
    "TtlTuningResult",
    "Sections",
]


class _TableRequired(TypedDict):
    title: str
    columns: list[str]
    rows: list[list[Any]]


class TableDict(_TableRequired, total=False):
    """A table as the notebooks save it (see :meth:`psra_bench.table.Table.from_dict`)."""

    note: str
    section: str


# ----------------------------------------------------------------------------- measure


class LatencySummary(TypedDict):
    """One latency sample summarized, in ms (``LatencyStats.to_dict``): percentiles, n, bootstrap CIs."""

    unit: str
    percentile_method: str
    n: int
    mean: float
    stdev: float
    min: float
    max: float
    p50: float
    p95: float
    p99: float
    p50_ci: list[float]
    p95_ci: list[float]
    confidence: float
    resamples: int
    seed: int
    #: The raw samples (left out with ``include_samples=False``).
    samples_ms: NotRequired[list[float]]


class DecisionDict(TypedDict):
    """Whether B differs from A (``Decision.to_dict``): ratio of medians B/A, its CI, p-value, verdict."""

    verdict: str
    median_a: float
    median_b: float
    ratio: float
    ratio_ci: list[float] | None
    p_value: float | None
    factor: float
    alpha: float
    n_a: int
    n_b: int
    method: str
    speedup: float
    improvement_pct: float


# ----------------------------------------------------------------------------- 01 query latency


class SpecClaimDict(TypedDict):
    """What the spec claims for one query row (``latency.patterns.SpecClaim``)."""

    before_ms: float
    after_ms: float
    improvement_pct: float


class QueryResult(TypedDict):
    """One query measured before and after the migration (``latency.experiment._query_result``)."""

    name: str
    label: str
    spec_row: bool
    dal_query: str
    dal_method: str
    sql: str
    spec: SpecClaimDict
    before: LatencySummary
    after: LatencySummary
    decision: DecisionDict
    improvement_pct: float
    p95_improvement_pct: float | None
    speedup: float
    verdict: str
    round_medians: dict[str, Any]
    capped_rounds: dict[str, int]
    #: EXPLAIN of each side ("before", "after"; None when not taken): ``index_names``, ``execution_ms`` …
    plans: dict[str, dict[str, Any] | None]
    plan_changed: bool
    index_scans: dict[str, dict[str, int]]
    index_tuples_read: dict[str, dict[str, int]]


class Throughput(TypedDict):
    """Insert throughput of a series of batches (``latency.write_cost.throughput``)."""

    median_rows_per_s: float
    median_rows_per_s_ci: list[float]
    min_rows_per_s: float
    max_rows_per_s: float
    per_batch_rows_per_s: list[float]


class ThroughputSide(Throughput):
    """One side's insert batches: their batch-time summary and the throughput it implies."""

    batch_ms: LatencySummary


class WriteCost(TypedDict):
    """Insert throughput with the baseline vs all indexes (``latency.write_cost.summarize_write_cost``)."""

    rows_per_batch: int
    batches: dict[str, int]
    index_counts: dict[str, int]
    before: ThroughputSide
    after: ThroughputSide
    decision: DecisionDict
    ratio: float
    ratio_ci: list[float] | None
    throughput_ratio: float
    verdict: str
    method: str


class TableIndexSizes(TypedDict):
    """Index count and bytes of one table with the migration applied."""

    indexes: int
    new_indexes: int
    index_bytes: int
    new_index_bytes: int
    table_bytes: int


class IndexSizes(TypedDict):
    """Index counts and sizes before/after the migration, per table (``latency.experiment._sizes_summary``)."""

    index_count_after: int
    index_count_before: int
    baseline_index_bytes: int
    new_index_bytes: int
    by_table: dict[str, TableIndexSizes]
    build_seconds: dict[str, float] | None


class AuditRow(TypedDict):
    """One index audited: its evidence and keep / drop / review (``latency.audit.audit_indexes``)."""

    index: str
    table: str
    new: bool
    definition: str
    method: str
    size_bytes: int
    build_seconds: float | None
    used_by: list[str]
    gains: dict[str, Any]
    scans_spec: int
    scans_baseline: int
    constraint: str | None
    table_pages: int
    table_rows: int
    tiny_table: bool
    duplicate_of: str | None
    recommendation: str
    reason: str


class ThreeWayQuery(TypedDict):
    """One query on the baseline, the spec's and the recommended index set."""

    baseline: LatencySummary
    spec: LatencySummary
    recommended: LatencySummary
    recommended_vs_spec: DecisionDict
    recommended_vs_baseline: DecisionDict
    as_fast_as_spec: bool
    plan_recommended: list[str] | None


class ThreeWayWrite(TypedDict):
    """Insert throughput on the three index sets and the recommended-vs-spec decision on batch time."""

    baseline: ThroughputSide
    spec: ThroughputSide
    recommended: ThroughputSide
    rows_per_batch: int
    batches: dict[str, int]
    recommended_vs_spec: DecisionDict


class ThreeWaySizes(TypedDict):
    """Index count and bytes of each index set ("baseline", "spec", "recommended")."""

    index_count: dict[str, int]
    index_bytes: dict[str, int]


class RecommendedSet(TypedDict):
    """The third side: the audit's recommended set measured against both (``latency.experiment._three_way``)."""

    indexes: list[str]
    decided_from: dict[str, Any]
    queries: dict[str, ThreeWayQuery]
    all_as_fast: bool
    write: ThreeWayWrite | None
    sizes: ThreeWaySizes


class QueryMethod(TypedDict):
    """How experiment 01 was run: the schedule, n per side and the decision rule."""

    sides: dict[str, str]
    schedule: str
    iterations_per_round: int
    rounds_per_side: int
    max_n_per_side: int
    warmup_per_round: int
    factor: float
    alpha: float
    path: str
    budget_s: float | None
    timing: str
    statistics: str
    index_usage: str


class LatencyRow(TypedDict):
    """One row of the spec's "Query Performance" table, measured (``latency_table``)."""

    operation: str
    query: str
    spec_row: bool
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
    ratio_ci: list[float] | None
    p_value: float | None
    verdict: str
    plan_changed: bool
    spec_before_ms: float
    spec_after_ms: float
    spec_improvement_pct: float


class QueryLatencyResult(TypedDict):
    """``01_query_latency.json``: the before/after experiment (``run_query_latency``)."""

    experiment: str
    method: QueryMethod
    queries: dict[str, QueryResult]
    index_usage: list[dict[str, Any]]
    #: Every index in schema public with the migration applied (``latency.audit.index_catalog``).
    catalog: list[dict[str, Any]]
    #: One row per index: evidence and keep / drop / review (``latency.audit.audit_indexes``).
    audit: list[AuditRow]
    #: The third side: baseline / spec / recommended per query, writes and sizes (None when not run).
    recommended: RecommendedSet | None
    sizes: IndexSizes
    migration: dict[str, Any]
    write_cost: WriteCost | None
    vacuum_seconds: float | None
    #: The VACUUM after each round's insert batches, in seconds.
    round_vacuum_seconds: list[float]
    fingerprint: dict[str, Any]
    elapsed_seconds: float
    table: list[LatencyRow]


# ----------------------------------------------------------------------------- 02 cache hit rates, 03 TTLs


class HitMissLatency(TypedDict):
    """Latency of the reads the cache answered and of those it missed (None: no such read)."""

    hit: LatencySummary | None
    miss: LatencySummary | None


class LiveEntity(TypedDict):
    """One cache entity in the live replay (``cachesim.replay._entity_result``)."""

    label: str
    entity: str
    ttl_s: float
    reads: int
    n: int
    hits: int
    misses: int
    hit_rate: float | None
    hit_rate_ci: list[float] | None
    fills: int
    stale_reads: int
    stale_share: float | None
    stale_share_ci: list[float] | None
    mean_stale_s: float | None
    p95_stale_s: float | None
    max_stale_s: float | None
    #: "database" or "compute": what answers a miss.
    miss_source: str
    latency: HitMissLatency


class LiveReplay(TypedDict):
    """The live replay of a trace through the real cache (``cachesim.replay.replay_live``)."""

    source: str
    method: str
    trace: dict[str, Any]
    trace_fingerprint: str
    ttls_s: dict[str, float]
    compression: float
    calibration: dict[str, Any] | None
    scaled_ttls_s: dict[str, float]
    invalidate_on_update: bool
    invalidation_scope: str
    warmup_s: float
    real_seconds: float
    schedule: dict[str, Any] | None
    realized_clock_sim: dict[str, Any] | None
    cache_errors: int
    consistency_errors: int
    verdicts_written: int
    repaired_before: dict[str, Any]
    cleaned_after: dict[str, Any]
    entities: dict[str, LiveEntity]
    timeline: dict[str, Any]


class CacheHitRatesResult(TypedDict):
    """``02_cache_hit_rates.json``: the live replay and its simulation check (``cache_hit_results``)."""

    experiment: str
    params: dict[str, Any]
    live: LiveReplay
    sim_vs_live: dict[str, Any]
    tables: list[TableDict]
    notes: list[str]
    fingerprint: dict[str, Any]


class TtlPoint(TypedDict):
    """One entity simulated at one TTL (``cachesim.ttl_sim.EntityResult.to_dict``)."""

    entity: str
    label: str
    ttl_s: float
    invalidate_on_update: bool
    n: int
    hits: int
    misses: int
    hit_rate: float | None
    hit_rate_ci: list[float] | None
    stale_reads: int
    stale_share: float | None
    stale_share_ci: list[float] | None
    mean_stale_s: float | None
    p95_stale_s: float | None
    max_stale_s: float | None
    fills: int
    invalidations: int
    #: Bytes the TTL keeps resident (value sizes from the trace; absent in older results).
    memory_bytes: NotRequired[int | None]


class SimulationResult(TypedDict):
    """Every entity of a trace simulated at its TTL (``cachesim.ttl_sim.simulate``)."""

    source: str
    trace_fingerprint: str
    ttls_s: dict[str, float]
    invalidate_on_update: bool
    invalidation_scope: str
    warmup_s: float
    entities: dict[str, TtlPoint]


class TtlRecommendation(TypedDict):
    """The shortest TTL meeting a hit-rate target and a staleness bound (``cachesim.ttl_sim.recommend_ttl``)."""

    target_hit_rate: float
    max_staleness_s: float
    #: The staleness measure bounded: a key of :class:`TtlPoint` ("max_stale_s", "p95_stale_s" …).
    metric: str
    ttl_s: float | None
    point: TtlPoint | None
    reason: str
    best_within_staleness: TtlPoint | None


class TtlTuning(TypedDict):
    """Everything notebook 03 shows (``cachesim.ttl_sim.tune``): the current TTLs, sweeps, advice."""

    current: SimulationResult
    sweep: dict[str, Any]
    sweep_invalidate: dict[str, Any]
    sweep_invalidate_key: dict[str, Any]
    recommendations: dict[str, TtlRecommendation]
    recommendations_invalidate: dict[str, TtlRecommendation]


class TtlTuningResult(TypedDict):
    """``03_ttl_tuning.json``: the TTL sweep and recommendations (``ttl_tuning_results``)."""

    experiment: str
    params: dict[str, Any]
    trace: dict[str, Any]
    tuning: TtlTuning
    sim_vs_live: dict[str, Any]
    tables: list[TableDict]
    notes: list[str]
    fingerprint: dict[str, Any]
    default_grid_s: list[float]


class Sections(TypedDict, total=False):
    """The section results of one report run, by section name (a section that did not run is absent)."""

    query_latency: QueryLatencyResult
    cache: CacheHitRatesResult
    ttl: TtlTuningResult
    #: Notebook 03 on the team's own trace (``report --trace``), beside the synthetic ``ttl``.
    ttl_trace: TtlTuningResult
    load: LoadTestResult
    #: A recorded log replayed in the load section (``report --from-log``).
    replay: ReplayResult
