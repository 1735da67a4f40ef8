"""Per-section tables of the report: each builder turns one notebook's results into tables + notes.

Tables are shaped like the spec's (Query Performance, Cache Hit Rates, Overall System
Performance) with the spec's claimed figure beside the one measured in this run, and every
measured figure carries n and its 95 % CI. ``SECTION_HEADLINES`` picks the stats (with
samples) that later runs compare against for regressions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from psra_bench.latency.tables import audit_table, three_way_cost_table, three_way_table
from psra_bench.measure.wording import p_text, speedup_text, times
from psra_bench.results import CacheHitRatesResult, LoadTestResult, QueryLatencyResult, TtlTuningResult
from psra_bench.table import Table

__all__ = ["fmt", "ci", "SECTION_BUILDERS", "SECTION_HEADLINES", "summary_lines"]


def _table(section: str, title: str, columns: list[str], rows: list[list[Any]], note: str = "") -> Table:
    """A report table of ``section`` (the builders below list section and title first)."""
    return Table(columns, list(rows), title=title, note=note, section=section)


def fmt(value: Any, digits: int = 2) -> str:
    """A number for a table cell ('–' for missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def ci(pair: Sequence[float] | None, digits: int = 2) -> str:
    """'[lo, hi]' for a confidence interval."""
    if not pair or len(pair) != 2 or pair[0] is None:
        return "–"
    return f"[{fmt(float(pair[0]), digits)}, {fmt(float(pair[1]), digits)}]"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{float(value):+.0f} %"


# ----------------------------------------------------------------------------- 01 query latency


def query_tables(section: QueryLatencyResult) -> tuple[list[Table], list[str]]:
    """The spec's Query Performance table, measured; plus write cost and index sizes."""
    name = "Query performance (before vs after the index migration)"
    rows = []
    for r in section.get("table", []):
        spec = (
            f"{fmt(r['spec_before_ms'], 0)} → {fmt(r['spec_after_ms'], 0)} ms "
            f"({times(r['spec_before_ms'] / r['spec_after_ms'])})"
            if r.get("spec_before_ms") and r.get("spec_after_ms")
            else "–"
        )
        rows.append(
            [
                r["operation"],
                spec,
                fmt(r["before_p50_ms"], 3),
                ci(r["before_p50_ci"], 3),
                fmt(r["after_p50_ms"], 3),
                ci(r["after_p50_ci"], 3),
                f"{fmt(r['before_p95_ms'], 2)} → {fmt(r['after_p95_ms'], 2)}",
                f"{fmt(r['before_p99_ms'], 2)} → {fmt(r['after_p99_ms'], 2)}",
                speedup_text(r.get("ratio"), r.get("ratio_ci")),
                f"{r['n_before']}/{r['n_after']}",
                p_text(r.get("p_value")),
                r["verdict"],
            ]
        )
    method = section.get("method", {})
    tables = [
        _table(
            name,
            "Query latency, ms (spec claim vs measured)",
            [
                "operation",
                "spec claim (before → after)",
                "before p50",
                "95% CI",
                "after p50",
                "95% CI",
                "p95 before → after",
                "p99 before → after",
                "speedup of p50 [95% CI]",
                "n before/after",
                "p (MWU)",
                "verdict",
            ],
            rows,
            note=f"n = timed calls per side ({method.get('iterations_per_round')} × "
            f"{method.get('rounds_per_side')} interleaved rounds, schedule "
            f"{method.get('schedule')}); 'faster' needs ratio ≥ {method.get('factor')} and p < "
            f"{method.get('alpha')}. Speedup = before/after median (above 1×: faster), CI by bootstrap.",
        )
    ]
    wc = section.get("write_cost")
    if wc:
        tables.append(
            _table(
                name,
                "Write cost of the indexes (insert throughput into psra_verdicts)",
                ["indexes", "median rows/s", "95% CI", "batches", "rows per batch"],
                [
                    [
                        wc["index_counts"]["before"],
                        fmt(wc["before"]["median_rows_per_s"], 0),
                        ci(wc["before"]["median_rows_per_s_ci"], 0),
                        wc["batches"]["before"],
                        wc["rows_per_batch"],
                    ],
                    [
                        wc["index_counts"]["after"],
                        fmt(wc["after"]["median_rows_per_s"], 0),
                        ci(wc["after"]["median_rows_per_s_ci"], 0),
                        wc["batches"]["after"],
                        wc["rows_per_batch"],
                    ],
                ],
                note=f"insert batch time after/before = {fmt(wc['ratio'], 2)} "
                f"(CI {ci(wc.get('ratio_ci'))}); verdict: {wc['verdict']}.",
            )
        )
    sizes = section.get("sizes") or {}
    if sizes.get("by_table"):
        tables.append(
            _table(
                name,
                "Index count and size per table (after the migration)",
                ["table", "indexes", "new", "index MiB", "of which new MiB"],
                [
                    [
                        t,
                        v["indexes"],
                        v["new_indexes"],
                        fmt(v["index_bytes"] / 2**20, 1),
                        fmt(v["new_index_bytes"] / 2**20, 1),
                    ]
                    for t, v in sizes["by_table"].items()
                ],
                note=f"{sizes.get('index_count_before')} → {sizes.get('index_count_after')} indexes; "
                "the spec estimated 150–200 MB of overhead.",
            )
        )
    audit_name = "Index audit and the recommended set"
    if section.get("audit"):
        tables.append(dataclasses.replace(audit_table(section), section=audit_name))
    for extra in (three_way_table(section), three_way_cost_table(section)):
        if extra is not None:
            tables.append(dataclasses.replace(extra, section=audit_name))
    notes = [f"Query latency: {method.get('timing', '')}. {method.get('statistics', '')}."]
    return tables, notes


def _query_headline(section: QueryLatencyResult) -> dict[str, Any]:
    return {f"{q}.after": r["after"] for q, r in section.get("queries", {}).items() if r.get("after")}


# ----------------------------------------------------------------------------- generic sections


def _generic(title: str) -> Callable[[CacheHitRatesResult | TtlTuningResult], tuple[list[Table], list[str]]]:
    def build(section: CacheHitRatesResult | TtlTuningResult) -> tuple[list[Table], list[str]]:
        tables = []
        for t in section.get("tables", []):
            tables.append(Table.from_dict({**t, "section": title}))
        return tables, list(section.get("notes", []))

    return build


def load_tables(section: LoadTestResult) -> tuple[list[Table], list[str]]:
    """The spec's Overall System Performance table, measured, plus one row per configuration."""
    name = "Overall system performance under load"
    claims = {
        "API Response Time (p50)": "280 → 145 ms",
        "API Response Time (p95)": "850 → 380 ms",
        "API Response Time (p99)": "1,450 → 620 ms",
        "Dashboard Load Time (p50)": "2.8 → 1.1 s (page)",
        "Report Generation (p50)": "8.5 → 3.8 s (report)",
        "Concurrent Users Supported": "50 → 120",
        "Database CPU Usage": "65 % → 38 %",
        "Memory Usage": "stable → stable",
    }
    rows = [
        [
            r["metric"],
            claims.get(r["metric"], "–"),
            f"{fmt(r.get('before'))} {r.get('unit', '')}".strip(),
            f"{fmt(r.get('after'))} {r.get('unit', '')}".strip(),
            fmt(r.get("improvement")),
            f"{fmt(r.get('n_before'))}/{fmt(r.get('n_after'))}",
            f"{r.get('before_config')} → {r.get('after_config')}",
            r.get("note", ""),
        ]
        for r in section.get("table", [])
    ]
    tables = [
        _table(
            name,
            "Overall system performance (spec claim vs measured)",
            [
                "metric",
                "spec claim",
                "measured before",
                "measured after",
                "change",
                "n before/after",
                "configurations",
                "note",
            ],
            rows,
            note="Latencies from µs-resolution HdrHistograms of every request; n = requests in the measured window.",
        )
    ]
    cfg_rows = []
    for cname, c in (section.get("configurations") or {}).items():
        o = (c.get("closed") or {}).get("overall") or {}
        us = c.get("users_supported") or {}
        op = c.get("open") or {}
        cfg_rows.append(
            [
                cname,
                fmt(o.get("n")),
                fmt(o.get("p50_ms")),
                fmt(o.get("p95_ms")),
                fmt(o.get("p99_ms")),
                fmt(o.get("stdev_ms")),
                fmt(o.get("rps"), 1),
                fmt(o.get("failure_rate"), 3),
                f"{fmt(us.get('users_supported'))}{'+' if us.get('lower_bound') else ''}",
                fmt(((op.get("latency") or {}).get("overall") or {}).get("p99_ms")),
                f"{op.get('late', '–')}/{op.get('dropped', '–')}",
            ]
        )
    if cfg_rows:
        tables.append(
            _table(
                name,
                "Per configuration (closed model at the headline user count)",
                [
                    "configuration",
                    "n",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "stdev ms",
                    "RPS",
                    "failure rate",
                    "users supported",
                    "open-model p99 ms",
                    "late/dropped",
                ],
                cfg_rows,
                note="'+' = every step met the SLO, so the true limit is higher. Open-model latency "
                "is measured from each request's intended start (coordinated omission shows).",
            )
        )
    steps = _step_rows(section)
    if steps:
        tables.append(
            _table(
                name,
                "Step load: who limits (CPU of the API, PostgreSQL and the load generator per step)",
                [
                    "configuration",
                    "users",
                    "n",
                    "p95 ms",
                    "RPS",
                    "failure rate",
                    "API cores",
                    "PostgreSQL cores",
                    "generator cores",
                    "limited by",
                ],  # fmt: skip
                steps,
                note="CPU in cores (CPU seconds / window seconds) over each step's measured window. 'generator "
                "cores' is the busiest Locust process: above 0.9 of a core it is saturated, and then the step's "
                "latency includes the generator's own delay.",
            )
        )
    method = section.get("method")
    notes = [
        f"Load test: {method}"
        if isinstance(method, str)
        else "Load test: " + "; ".join(f"{k}: {v}" for k, v in (method or {}).items() if isinstance(v, str))
    ]
    return tables, notes


def _step_rows(section: LoadTestResult) -> list[list[Any]]:
    """One row per configuration and step: latency, throughput, CPU of the API, PostgreSQL, the generator; the limit."""
    rows = []
    slo = (section.get("parameters") or {}).get("slo_p95_ms")
    for cname, c in (section.get("configurations") or {}).items():
        for st in c.get("steps") or []:
            o = st.get("overall") or {}
            gen = st.get("generator") or {}
            groups = (st.get("resources") or {}).get("groups") or {}
            cores = {g: (groups.get(g) or {}).get("cpu_cores") for g in ("api", "postgres", "redis")}
            if gen.get("saturated"):
                limit = "generator (saturated)"
            elif slo is not None and o.get("p95_ms") is not None and o["p95_ms"] > slo:
                known = {g: c for g, c in cores.items() if c is not None}
                busiest = max(known, key=lambda g: known[g]) if known else ""
                name = {"api": "the API", "postgres": "PostgreSQL", "redis": "Redis"}.get(busiest, "")
                limit = f"system under test (p95 > {slo:g} ms)" + (f"; busiest: {name}" if name else "")
            else:
                limit = "–"
            rows.append([
                cname, st.get("users"), fmt(o.get("n")), fmt(o.get("p95_ms")), fmt(o.get("rps"), 1),
                fmt(o.get("failure_rate"), 3), fmt(cores["api"]), fmt(cores["postgres"]),
                fmt(gen.get("busiest_process_cores")), limit,
            ])  # fmt: skip
    return rows


#: Section name -> its table builder; each takes the typed result of its notebook (read back from JSON).
SECTION_BUILDERS: dict[str, Callable[[Any], tuple[list[Table], list[str]]]] = {
    "query_latency": query_tables,
    "cache": _generic("Cache hit rates"),
    "ttl": _generic("TTL tuning"),
    "load": load_tables,
}


def _cache_headline(section: CacheHitRatesResult) -> dict[str, Any]:
    entities = (section.get("live") or {}).get("entities") or {}
    return {
        f"{name}.hit": e["latency"]["hit"]
        for name, e in entities.items()
        if isinstance(e.get("latency", {}).get("hit"), Mapping) and e["latency"]["hit"].get("n", 0) >= 2
    }


SECTION_HEADLINES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "query_latency": _query_headline,
    "cache": _cache_headline,
}


def summary_lines(results: Mapping[str, Any]) -> list[str]:
    """A short plain-text summary for the terminal: the first table of each section."""
    lines = []
    seen = set()
    for t in results.get("tables", []):
        if t["section"] in seen:
            continue
        seen.add(t["section"])
        table = Table.from_dict(t)
        table.title = f"{t['section']} — {t['title']}"
        lines += ["", table.text()]
    if results.get("regressions"):
        lines.append(f"\nREGRESSIONS: {len(results['regressions'])} (see the report)")
    return lines
