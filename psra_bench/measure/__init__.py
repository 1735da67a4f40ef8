"""The measurement core: latency statistics and decisions, HdrHistograms, EXPLAIN, fingerprints, process monitoring."""

from __future__ import annotations

from psra_bench.measure.explain import ExplainResult, explain_analyze
from psra_bench.measure.fingerprint import environment_fingerprint, machine_key
from psra_bench.measure.hdr import HistogramSet, LatencyHistogram
from psra_bench.measure.procmon import ProcessMonitor
from psra_bench.measure.stats import (
    Decision,
    LatencyStats,
    ab_schedule,
    compare_to_previous,
    decide,
    percentile,
    summarize,
)

__all__ = [
    "LatencyStats",
    "Decision",
    "percentile",
    "summarize",
    "ab_schedule",
    "decide",
    "compare_to_previous",
    "LatencyHistogram",
    "HistogramSet",
    "ExplainResult",
    "explain_analyze",
    "environment_fingerprint",
    "machine_key",
    "ProcessMonitor",
]
