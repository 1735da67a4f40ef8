"""The shapes of what the notebooks write and the report reads, as TypedDicts, down to each row.

Each section notebook saves one JSON file (``01_query_latency.json`` … ``04_load_test.json``);
the report's section builders read them back. These types name the keys both sides rely on — per
query, per index, per cache entity, per load configuration and step — so mypy checks the producer
(``run_query_latency``, ``cache_hit_results``, ``ttl_tuning_results``, ``run_load``) and the
consumer (:mod:`psra_bench.report`) against one definition. A field that may legitimately be
absent is ``NotRequired``; one that is always there but may be empty is ``… | None``. Parts whose
shape belongs to one module only stay ``dict[str, Any]``. The load test's types live in
:mod:`psra_bench.results.load`, the others in :mod:`psra_bench.results.shapes`.
"""

from __future__ import annotations

from psra_bench.results.load import (
    Capacity,
    CapacityStep,
    ConfigurationResult,
    EndpointLatency,
    GeneratorFlags,
    LoadOverall,
    LoadParameters,
    LoadStep,
    LoadTestResult,
    LogCapacity,
    OpenModel,
    OverallRow,
    ReplayComparison,
    ReplayResult,
    UsersSupported,
)
from psra_bench.results.shapes import (
    AuditRow,
    CacheHitRatesResult,
    DecisionDict,
    HitMissLatency,
    IndexSizes,
    LatencyRow,
    LatencySummary,
    LiveEntity,
    LiveReplay,
    QueryLatencyResult,
    QueryMethod,
    QueryResult,
    RecommendedSet,
    Sections,
    SimulationResult,
    SpecClaimDict,
    TableDict,
    TableIndexSizes,
    ThreeWayQuery,
    ThreeWaySizes,
    ThreeWayWrite,
    Throughput,
    ThroughputSide,
    TtlPoint,
    TtlRecommendation,
    TtlTuning,
    TtlTuningResult,
    WriteCost,
)

__all__ = [
    "TableDict", "LatencySummary", "DecisionDict", "SpecClaimDict", "QueryResult", "Throughput", "ThroughputSide",
    "WriteCost", "TableIndexSizes", "IndexSizes", "AuditRow", "ThreeWayQuery", "ThreeWayWrite", "ThreeWaySizes",
    "RecommendedSet", "QueryMethod", "LatencyRow", "QueryLatencyResult", "HitMissLatency", "LiveEntity", "LiveReplay",
    "CacheHitRatesResult", "TtlPoint", "SimulationResult", "TtlRecommendation", "TtlTuning", "TtlTuningResult",
    "OverallRow", "LoadOverall", "GeneratorFlags", "LoadStep", "UsersSupported", "OpenModel", "ConfigurationResult",
    "LoadParameters", "LoadTestResult", "Sections", "Capacity", "CapacityStep", "EndpointLatency", "ReplayComparison",
    "LogCapacity", "ReplayResult",
]  # fmt: skip
