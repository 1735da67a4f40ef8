"""Experiment 01's results as tables: latency per query, write cost, index sizes and usage, the audit, three sides.

The report (:mod:`psra_bench.report.sections`) and notebook 01 print these same :class:`Table`
objects; every figure is written by :mod:`psra_bench.measure.format`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psra_bench.latency.audit import TINY_TABLE_PAGES
from psra_bench.latency.patterns import QUERY_PATTERNS
from psra_bench.measure.format import (
    DASH,
    interval,
    mb,
    mb_number,
    ms,
    ms_ci,
    number,
    p_text,
    speedup_text,
    times,
    times_ci,
)
from psra_bench.results import AuditRow, LatencyRow, QueryLatencyResult, ThroughputSide
from psra_bench.table import Table

__all__ = [
    "latency_table",
    "query_table",
    "format_table",
    "write_cost_table",
    "index_size_table",
    "index_usage_table",
    "audit_table",
    "three_way_table",
    "three_way_cost_table",
]


def _spec_order(name: str) -> int:
    order = list(QUERY_PATTERNS)  # the spec's order, also after a JSON round trip (save_results sorts keys)
    return order.index(name) if name in order else 99


def latency_table(results: QueryLatencyResult) -> list[LatencyRow]:
    """Rows shaped like the spec's "Query Performance" table, with p50/p95/p99, n, CIs and the verdict."""
    rows: list[LatencyRow] = []
    for q in sorted(results["queries"].values(), key=lambda q: _spec_order(q["name"])):
        before, after, decision = q["before"], q["after"], q["decision"]
        rows.append(
            {
                "operation": q["label"],
                "query": q["name"],
                "spec_row": q["spec_row"],
                "n_before": before["n"],
                "n_after": after["n"],
                "before_p50_ms": before["p50"],
                "before_p95_ms": before["p95"],
                "before_p99_ms": before["p99"],
                "before_p50_ci": before["p50_ci"],
                "after_p50_ms": after["p50"],
                "after_p95_ms": after["p95"],
                "after_p99_ms": after["p99"],
                "after_p50_ci": after["p50_ci"],
                "improvement_pct": q["improvement_pct"],
                "ratio": decision["ratio"],
                "ratio_ci": decision["ratio_ci"],
                "p_value": decision["p_value"],
                "verdict": q["verdict"],
                "plan_changed": q["plan_changed"],
                "spec_before_ms": q["spec"]["before_ms"],
                "spec_after_ms": q["spec"]["after_ms"],
                "spec_improvement_pct": q["spec"]["improvement_pct"],
            }
        )
    return rows


_QUERY_COLUMNS = ["operation", "spec claim (before → after)", "before p50 [95% CI]", "after p50 [95% CI]",
                  "p95 before → after", "p99 before → after", "speedup of p50 [95% CI]", "n before/after", "p (MWU)",
                  "verdict", "plan"]  # fmt: skip


def _spec_claim(r: LatencyRow) -> str:
    if not (r["spec_before_ms"] and r["spec_after_ms"]):
        return DASH
    return (
        f"{number(r['spec_before_ms'], 0)} → {number(r['spec_after_ms'], 0)} ms "
        f"({times(r['spec_before_ms'] / r['spec_after_ms'])})"
    )


def query_table(results: QueryLatencyResult) -> Table:
    """The spec's Query Performance table, measured: p50 [CI] per side, p95/p99, the speedup [CI], n, p, verdict."""
    rows = [
        [
            r["operation"],
            _spec_claim(r),
            ms_ci(r["before_p50_ms"], r["before_p50_ci"]),
            ms_ci(r["after_p50_ms"], r["after_p50_ci"]),
            f"{ms(r['before_p95_ms'])} → {ms(r['after_p95_ms'])}",
            f"{ms(r['before_p99_ms'])} → {ms(r['after_p99_ms'])}",
            speedup_text(r["ratio"], r["ratio_ci"]),
            f"{r['n_before']}/{r['n_after']}",
            p_text(r["p_value"]),
            r["verdict"],
            "changed" if r["plan_changed"] else "same",
        ]
        for r in latency_table(results)
    ]
    method = results["method"]
    note = (
        f"Times in ms. n = timed calls per side ({method['iterations_per_round']} × {method['rounds_per_side']} "
        f"interleaved rounds, schedule {method['schedule']}); 'faster' needs ratio ≥ {method['factor']} and p < "
        f"{method['alpha']}. Speedup = before/after median (above 1×: faster), CI by bootstrap; plan = EXPLAIN "
        "shape before vs after."
    )
    return Table(_QUERY_COLUMNS, rows, title="Query latency, ms (spec claim vs measured)", note=note)


def format_table(results: QueryLatencyResult) -> str:
    """The query latency table as aligned text (:func:`query_table`)."""
    return query_table(results).text()


def _rows_per_s(side: ThroughputSide) -> list[str]:
    return [number(side["median_rows_per_s"], 0), interval(side["median_rows_per_s_ci"], 0)]


def write_cost_table(results: QueryLatencyResult) -> Table | None:
    """Insert throughput into psra_verdicts with the baseline vs all indexes (None when not measured)."""
    wc = results["write_cost"]
    if wc is None:
        return None
    rows = [
        [wc["index_counts"][key], *_rows_per_s(side), wc["batches"][key], wc["rows_per_batch"]]
        for key, side in (("before", wc["before"]), ("after", wc["after"]))
    ]
    note = (
        f"Inserts take {times_ci(wc['ratio'], wc['ratio_ci'])} as long with the migration's indexes (median batch "
        f"time after/before; throughput ratio {times(wc['throughput_ratio'])}); verdict: {wc['verdict']}."
    )
    columns = ["indexes", "median rows/s", "95% CI", "batches", "rows per batch"]
    return Table(columns, rows, title="Write cost of the indexes (insert throughput into psra_verdicts)", note=note)


def index_size_table(results: QueryLatencyResult) -> Table | None:
    """Index count and size per table with the migration applied (None when nothing was sized)."""
    sizes = results["sizes"]
    if not sizes["by_table"]:
        return None
    rows = [
        [t, v["indexes"], v["new_indexes"], mb_number(v["index_bytes"]), mb_number(v["new_index_bytes"])]
        for t, v in sizes["by_table"].items()
    ]
    note = (
        f"{sizes['index_count_before']} → {sizes['index_count_after']} indexes; the new ones take "
        f"{mb(sizes['new_index_bytes'])} (baseline indexes {mb(sizes['baseline_index_bytes'])}); the spec estimated "
        "150–200 MB of overhead. MB = 2^20 bytes."
    )
    columns = ["table", "indexes", "new", "index MB", "of which new MB"]
    return Table(columns, rows, title="Index count and size per table (after the migration)", note=note)


def index_usage_table(results: QueryLatencyResult, *, new_only: bool = False) -> Table:
    """Per index: table, size, idx_scan deltas before/after and the queries that used it."""
    usage: list[Mapping[str, Any]] = sorted(
        results["index_usage"], key=lambda u: (not u["new"], -u["scans_after"], u["index"])
    )
    rows = [
        [u["index"], u["table"], "yes" if u["new"] else "", mb_number(u["size_bytes"]), u["scans_before"],
         u["scans_after"], ", ".join(u["used_by_after"]) or DASH]
        for u in usage
        if u["new"] or not new_only
    ]  # fmt: skip
    unused = [u["index"] for u in usage if u["new"] and not u["scans_after"]]
    note = f"{len(unused)} of the new indexes were not used by any measured query."
    columns = ["index", "table", "new", "size MB", "scans before", "scans after", "used by (after)"]
    return Table(columns, rows, title="Which indexes the measured queries used", note=note)


# ----------------------------------------------------------------------------- the audit and the third side


_AUDIT_COLUMNS = ["index", "table", "new", "size MB", "build s", "used by (spec state)", "idx_scan", "covered by",
                  "tiny table", "recommendation", "reason"]  # fmt: skip
_ORDER = {"drop": 0, "review": 1, "keep": 2}


def _audit_order(row: AuditRow) -> tuple[int, bool, str]:
    return _ORDER[row["recommendation"]], not row["new"], row["index"]


def audit_table(results: QueryLatencyResult) -> Table:
    """The index audit: one row per index (drop first, then review, then keep), evidence and reason."""
    audit = results["audit"]
    rows = [
        [
            r["index"], r["table"], "yes" if r["new"] else "", mb_number(r["size_bytes"]),
            number(r["build_seconds"]), ", ".join(r["used_by"]) or DASH, r["scans_spec"], r["duplicate_of"] or DASH,
            "yes" if r["tiny_table"] else "", r["recommendation"], r["reason"],
        ]
        for r in sorted(audit, key=_audit_order)
    ]  # fmt: skip
    counts = {k: sum(1 for r in audit if r["new"] and r["recommendation"] == k) for k in _ORDER}
    rec = results["recommended"]
    n: dict[str, int] = (rec["decided_from"].get("n_per_side") if rec else None) or {}
    basis = f"the first baseline and spec round (n = {min(n.values())}–{max(n.values())} calls per side)" if n else (
        "every round")  # fmt: skip
    note = (
        f"Of the migration's 26: keep {counts['keep']}, review {counts['review']}, drop {counts['drop']}; decided from "
        f"{basis}. 'used by' = measured patterns whose idx_scan delta or EXPLAIN plan used the index with the "
        f"migration applied; idx_scan = scans during their timed calls; 'covered by' = an index that stays whose "
        f"key columns start with this one's; tiny = heap ≤ {TINY_TABLE_PAGES} pages. Primary keys and unique "
        "indexes are never dropped; baseline indexes are in all three sets, so their advice is 'review' at most."
    )
    return Table(_AUDIT_COLUMNS, rows, title=f"Index audit ({len(rows)} indexes)", note=note)


def three_way_table(results: QueryLatencyResult) -> Table | None:
    """Per query: p50 [CI] and p95/p99 on baseline / spec / recommended, and the recommended-vs-spec verdict."""
    rec = results["recommended"]
    if rec is None:
        return None
    rows = []
    for name in sorted(rec["queries"], key=_spec_order):
        q = rec["queries"][name]
        b, s, c, vs = q["baseline"], q["spec"], q["recommended"], q["recommended_vs_spec"]
        rows.append([
            name,
            *(ms_ci(st["p50"], st["p50_ci"]) for st in (b, s, c)),
            " / ".join(ms(st["p95"]) for st in (b, s, c)),
            " / ".join(ms(st["p99"]) for st in (b, s, c)),
            f"{b['n']}/{s['n']}/{c['n']}",
            speedup_text(vs["ratio"], vs["ratio_ci"]),
            p_text(vs["p_value"]),
            "as fast as spec" if q["as_fast_as_spec"] else "slower than spec",
        ])  # fmt: skip
    counts = rec["sizes"]["index_count"]
    method = results["method"]
    note = (
        f"Sides: baseline ({counts['baseline']} indexes), spec ({counts['spec']}), recommended ({counts['recommended']}"
        f" = baseline + {len(rec['indexes'])} kept). 'recommended vs spec' is the speedup of the recommended set "
        "over the spec's (above 1×: faster); 'as fast' = not significantly and materially slower (ratio of medians "
        f"under the factor gate {method['factor']} or Mann-Whitney p ≥ {method['alpha']})."
    )
    columns = ["query", "baseline p50 ms [95% CI]", "spec p50", "recommended p50", "p95 b/s/r", "p99 b/s/r",
               "n b/s/r", "recommended vs spec", "p (MWU)", "verdict"]  # fmt: skip
    return Table(columns, rows, title="Three index sets: baseline / spec / recommended", note=note)


def three_way_cost_table(results: QueryLatencyResult) -> Table | None:
    """Index count, index size and insert throughput [CI] of the three index sets."""
    rec = results["recommended"]
    if rec is None:
        return None
    w, sizes = rec["write"], rec["sizes"]
    rows = []
    sides = {"baseline": w["baseline"], "spec": w["spec"], "recommended": w["recommended"]} if w else {}
    for key in ("baseline", "spec", "recommended"):
        cost = [*_rows_per_s(sides[key]), w["batches"][key]] if w else [DASH, DASH, DASH]
        rows.append([key, sizes["index_count"][key], mb_number(sizes["index_bytes"][key]), *cost])
    note = "insert throughput: rolled-back batches of the application's INSERT, interleaved with the query rounds"
    if w:
        vs = w["recommended_vs_spec"]
        note += (
            f"; the recommended set inserts {speedup_text(vs['ratio'], vs['ratio_ci'])} as fast as the spec's "
            f"(median batch time, p {p_text(vs['p_value'])}; {w['rows_per_batch']} rows per batch)"
        )
    columns = ["index set", "indexes", "index MB", "insert rows/s", "95% CI", "batches"]
    return Table(columns, rows, title="What each index set costs: size and insert throughput", note=note)
