"""Experiment 01 (notebook 01): the spec's query patterns on three index sets, what indexes cost, the index audit.

:func:`catalog_audit` is the read-only part of the audit, for a database psra-bench does not own.
"""

from __future__ import annotations

from psra_bench.latency.audit import (
    FinalRecommendation,
    audit_indexes,
    final_recommendation,
    recommended_set,
    write_recommended_migration,
)
from psra_bench.latency.catalog import CatalogAudit, catalog_audit
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
    "audit_indexes",
    "recommended_set",
    "write_recommended_migration",
    "FinalRecommendation",
    "final_recommendation",
    "CatalogAudit",
    "catalog_audit",
]
