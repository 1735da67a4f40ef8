"""Experiment 01 (notebook 01): the spec's query patterns before vs after the migration, and what indexes cost."""

from __future__ import annotations

from psra_bench.latency.experiment import run_query_latency
from psra_bench.latency.patterns import QUERY_PATTERNS, QueryPattern, resolve_queries
from psra_bench.latency.tables import latency_table
from psra_bench.latency.write_cost import summarize_write_cost

__all__ = [
    "QUERY_PATTERNS",
    "QueryPattern",
    "resolve_queries",
    "run_query_latency",
    "latency_table",
    "summarize_write_cost",
]
