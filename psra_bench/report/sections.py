"""Per-section tables of the report: each builder turns one notebook's results into tables + notes.

Tables are shaped like the spec's (Query Performance, Cache Hit Rates, Overall System
Performance) with the spec's claimed figure beside the one measured in this run, and every
measured figure carries n and its 95 % CI. The tables themselves are built where their results
are made (:mod:`psra_bench.latency.tables`, :mod:`psra_bench.cachesim.experiment`,
:mod:`psra_bench.load.results`, :mod:`psra_bench.workload.tables`), so a notebook prints the same
:class:`Table` the report shows;
this module only files them under the report's sections. ``SECTION_HEADLINES`` picks the stats
(with samples) that later runs compare against for regressions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, cast

from psra_bench.latency.tables import (
    audit_table,
    index_size_table,
    query_table,
    three_way_cost_table,
    three_way_table,
    write_cost_table,
)
from psra_bench.load.replay_tables import replay_tables
from psra_bench.load.results import load_result_tables
from psra_bench.measure.format import DASH, mb, number, percent
from psra_bench.results import (
    CacheHitRatesResult,
    LatencySummary,
    LoadTestResult,
    QueryLatencyResult,
    ReplayResult,
    TtlRecommendation,
    TtlTuningResult,
)
from psra_bench.table import Table
from psra_bench.workload.tables import IndexAdviceResult, advice_notes, advice_of, advice_tables

__all__ = [
    "query_tables",
    "cache_tables",
    "ttl_tables",
    "load_tables",
    "replay_section_tables",
    "advice_section_tables",
    "advice_result",
    "workload_fingerprint",
    "SECTION_BUILDERS",
    "trace_ttl_tables",
    "synthetic_vs_trace_table",
    "SECTION_HEADLINES",
    "summary_lines",
]

#: The report's section titles, by section name.
QUERY_SECTION = "Query performance (before vs after the index migration)"
AUDIT_SECTION = "Index audit and the recommended set"
CACHE_SECTION = "Cache hit rates"
TTL_SECTION = "TTL tuning"
TRACE_SECTION = "TTL tuning on your cache traffic"
LOAD_SECTION = "Overall system performance under load"
REPLAY_SECTION = "Load from your recorded traffic"
ADVICE_SECTION = "Index advice for your workload"


def _filed(section: str, tables: list[Table | None]) -> list[Table]:
    """The tables that exist, filed under ``section``."""
    return [dataclasses.replace(t, section=section) for t in tables if t is not None]


# ----------------------------------------------------------------------------- 01 query latency


def query_tables(section: QueryLatencyResult) -> tuple[list[Table], list[str]]:
    """The spec's Query Performance table, measured; write cost and index sizes; the audit and the three sides."""
    tables = _filed(QUERY_SECTION, [query_table(section), write_cost_table(section), index_size_table(section)])
    audit = audit_table(section) if section["audit"] else None
    tables += _filed(AUDIT_SECTION, [audit, three_way_table(section), three_way_cost_table(section)])
    method = section["method"]
    return tables, [f"Query latency: {method['timing']}. {method['statistics']}."]


def _query_headline(section: QueryLatencyResult) -> dict[str, LatencySummary]:
    return {f"{q}.after": r["after"] for q, r in section["queries"].items()}


# ----------------------------------------------------------------------------- 02 cache, 03 TTLs


def cache_tables(section: CacheHitRatesResult) -> tuple[list[Table], list[str]]:
    """The tables notebook 02 saved (hit rates, simulation vs live) and its notes."""
    return [Table.from_dict({**t, "section": CACHE_SECTION}) for t in section["tables"]], list(section["notes"])


def ttl_tables(section: TtlTuningResult) -> tuple[list[Table], list[str]]:
    """The tables notebook 03 saved (recommended TTLs, simulation vs live, sweeps) and its notes."""
    return [Table.from_dict({**t, "section": TTL_SECTION}) for t in section["tables"]], list(section["notes"])


def trace_ttl_tables(section: TtlTuningResult) -> tuple[list[Table], list[str]]:
    """Notebook 03's tables for the team's own trace (``--trace``), under a section of their own."""
    return [Table.from_dict({**t, "section": TRACE_SECTION}) for t in section["tables"]], list(section["notes"])


def _recommended(rec: TtlRecommendation | None) -> list[str]:
    """TTL, hit rate [CI], staleness and memory of one recommendation (dashes when none met the target)."""
    point = rec["point"] if rec else None
    if rec is None or point is None or rec["ttl_s"] is None:
        return [DASH, DASH, DASH, DASH]
    ci = point["hit_rate_ci"]
    hit = f"{percent(point['hit_rate'])} [{percent(ci[0])}–{percent(ci[1])}]" if ci else percent(point["hit_rate"])
    staleness = cast(Mapping[str, Any], point).get(rec["metric"])
    memory = point.get("memory_bytes")
    return [f"{rec['ttl_s']:g} s", hit, f"{staleness:g} s" if staleness is not None else DASH,
            mb(memory) if memory is not None else DASH]  # fmt: skip


def synthetic_vs_trace_table(synthetic: TtlTuningResult, trace: TtlTuningResult) -> Table:
    """Per entity, the recommended TTL on the synthetic trace beside the one on the team's own trace."""
    ours, theirs = synthetic["tuning"]["recommendations"], trace["tuning"]["recommendations"]

    def reads(rec: TtlRecommendation | None) -> str:
        return number(rec["point"]["n"]) if rec and rec["point"] else DASH

    rows = [[e, *_recommended(ours.get(e)), *_recommended(theirs.get(e)), reads(theirs.get(e))]
            for e in sorted(set(ours) | set(theirs))]  # fmt: skip
    columns = ["entity", "synthetic: TTL", "hit rate [95% CI]", "staleness", "memory",
               "your trace: TTL", "hit rate [95% CI]", "staleness", "memory", "reads (n)"]  # fmt: skip
    fingerprint = str(trace.get("trace", {}).get("fingerprint", ""))[:12]
    note = (
        "The shortest TTL meeting the hit-rate target within the staleness bound, simulated on the synthetic "
        f"Zipf trace and on your trace ({fingerprint or 'imported'}); memory: bytes the TTL keeps resident. "
        "A dash: no TTL of the grid met the target."
    )
    return Table(columns, rows, title="Synthetic vs your trace: recommended TTL per entity", note=note,
                 section=TRACE_SECTION)  # fmt: skip


def _cache_headline(section: CacheHitRatesResult) -> dict[str, LatencySummary]:
    out = {}
    for name, e in section["live"]["entities"].items():
        hit = e["latency"]["hit"]
        if hit is not None and hit["n"] >= 2:
            out[f"{name}.hit"] = hit
    return out


# ----------------------------------------------------------------------------- 04 load


def load_tables(section: LoadTestResult) -> tuple[list[Table], list[str]]:
    """The spec's Overall System Performance table, measured, one row per configuration and one per step."""
    method = section["method"]
    if isinstance(method, str):
        note = f"Load test: {method}"
    else:
        note = "Load test: " + "; ".join(f"{k}: {v}" for k, v in method.items() if isinstance(v, str))
    return _filed(LOAD_SECTION, list(load_result_tables(section))), [note]


def replay_section_tables(section: ReplayResult) -> tuple[list[Table], list[str]]:
    """A replayed log (``report --from-log``): shares and latency per endpoint, rate, capacity at its mix, unmatched."""
    return _filed(REPLAY_SECTION, list(replay_tables(section))), []


# ----------------------------------------------------------------------------- 06 index advice


def advice_section_tables(section: IndexAdviceResult) -> tuple[list[Table], list[str]]:
    """Notebook 06's tables: per index add / drop / keep, predicted vs measured per query, insert cost, skipped."""
    advice = advice_of(section)
    return _filed(ADVICE_SECTION, list(advice_tables(advice))), advice_notes(advice)


def advice_result(sections: Mapping[str, Any]) -> IndexAdviceResult | None:
    """Notebook 06's result among a run's sections (None when the run was given no workload)."""
    found: IndexAdviceResult | None = sections.get("advice")
    return found


def workload_fingerprint(sections: Mapping[str, Any]) -> str | None:
    """The fingerprint of the workload the run advised indexes for (None: no workload): history keys runs by it."""
    found = advice_result(sections)
    return None if found is None else found["workload_fingerprint"]


#: Section name -> its table builder; each takes the typed result of its notebook (read back from JSON).
SECTION_BUILDERS: dict[str, Callable[[Any], tuple[list[Table], list[str]]]] = {
    "query_latency": query_tables,
    "cache": cache_tables,
    "ttl": ttl_tables,
    "ttl_trace": trace_ttl_tables,
    "load": load_tables,
    "replay": replay_section_tables,
    "advice": advice_section_tables,
}

#: Section name -> the stats (with samples) of its headline items, compared with the previous comparable run.
SECTION_HEADLINES: dict[str, Callable[[Any], dict[str, LatencySummary]]] = {
    "query_latency": _query_headline,
    "cache": _cache_headline,
}


def summary_lines(results: Mapping[str, Any]) -> list[str]:
    """A short plain-text summary for the terminal: the first table of each section."""
    lines = []
    seen = set()
    for t in results["tables"]:
        table = Table.from_dict(t)
        if table.section in seen:
            continue
        seen.add(table.section)
        table.title = f"{table.section} — {table.title}"
        lines += ["", table.text()]
    if results["regressions"]:
        lines.append(f"\nREGRESSIONS: {len(results['regressions'])} (see the report)")
    return lines
