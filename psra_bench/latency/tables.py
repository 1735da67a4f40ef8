"""Experiment 01's results as tables: latency per query, index usage, write cost, the audit and the three sides."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psra_bench.latency.audit import TINY_TABLE_PAGES
from psra_bench.latency.patterns import QUERY_PATTERNS
from psra_bench.measure.wording import interval, p_text, speedup_text
from psra_bench.results import LatencyRow
from psra_bench.table import Table

__all__ = [
    "latency_table",
    "format_table",
    "format_index_usage",
    "format_write_cost",
    "audit_table",
    "three_way_table",
    "three_way_cost_table",
]


def latency_table(results: Mapping[str, Any]) -> list[LatencyRow]:
    """Rows shaped like the spec's "Query Performance" table, with p50/p95/p99, n, CIs and the verdict."""
    rows: list[LatencyRow] = []
    order = list(QUERY_PATTERNS)  # the spec's order, also after a JSON round trip (save_results sorts keys)
    for q in sorted(results["queries"].values(), key=lambda q: order.index(q["name"]) if q["name"] in order else 99):
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


_LATENCY_COLUMNS = ["operation", "n b/a", "before p50", "p95", "p99", "after p50", "p95", "p99", "improv.",
                    "ratio 95% CI", "verdict", "plan", "spec"]  # fmt: skip


def format_table(results: Mapping[str, Any]) -> str:
    """The latency table as aligned text (the notebook prints it)."""
    rows = [
        [
            r["operation"],
            f"{r['n_before']}/{r['n_after']}",
            *(f"{r[k]:.3f}" for k in ("before_p50_ms", "before_p95_ms", "before_p99_ms")),
            *(f"{r[k]:.3f}" for k in ("after_p50_ms", "after_p95_ms", "after_p99_ms")),
            f"{r['improvement_pct']:.1f}%",
            f"{r['ratio_ci'][0]:.3f}–{r['ratio_ci'][1]:.3f}",
            r["verdict"],
            "changed" if r["plan_changed"] else "same",
            f"{r['spec_improvement_pct']:.0f}%",
        ]
        for r in latency_table(results)
    ]
    note = (
        "times in ms; n = calls before/after; improvement = (before − after) / before of the medians; ratio = "
        "after/before median; plan = EXPLAIN shape before vs after; spec = the spec's claimed improvement"
    )
    return Table(_LATENCY_COLUMNS, rows, note=note).text()


def _mb(n: float) -> str:
    return f"{n / 2**20:.2f} MB"


def format_index_usage(results: Mapping[str, Any], *, new_only: bool = False) -> str:
    """Per index: table, size, idx_scan deltas before/after and the queries that used it."""
    usage = sorted(results["index_usage"], key=lambda u: (not u["new"], -u["scans_after"], u["index"]))
    rows = [
        [u["index"], u["table"], "yes" if u["new"] else "", _mb(u["size_bytes"]), u["scans_before"], u["scans_after"],
         ", ".join(u["used_by_after"]) or "-"]
        for u in usage
        if u["new"] or not new_only
    ]  # fmt: skip
    s = results["sizes"]
    unused = [u["index"] for u in results["index_usage"] if u["new"] and not u["scans_after"]]
    note = (
        f"indexes {s['index_count_before']} -> {s['index_count_after']}; new indexes take "
        f"{_mb(s['new_index_bytes'])} (baseline indexes {_mb(s['baseline_index_bytes'])}); "
        f"{len(unused)} of the new indexes were not used by any measured query"
    )
    columns = ["index", "table", "new", "size", "scans before", "scans after", "used by (after)"]
    return Table(columns, rows, note=note).text()


def format_write_cost(results: Mapping[str, Any]) -> str:
    """One paragraph: insert throughput with the baseline vs all indexes, n, CIs and the ratio."""
    wc = results.get("write_cost")
    if not wc:
        return "write cost not measured (write_batches=0)"
    parts = []
    for key in ("before", "after"):
        side = wc[key]
        lo, hi = side["median_rows_per_s_ci"]
        parts.append(
            f"{wc['index_counts'][key]} indexes: {side['median_rows_per_s']:,.0f} rows/s "
            f"(95% CI {lo:,.0f}–{hi:,.0f}; n={wc['batches'][key]} batches of {wc['rows_per_batch']} rows, "
            f"range {side['min_rows_per_s']:,.0f}–{side['max_rows_per_s']:,.0f})"
        )
    lo, hi = wc["ratio_ci"]
    return (
        "insert throughput into psra_verdicts\n  "
        + "\n  ".join(parts)
        + f"\n  inserts take {wc['ratio']:.2f}× as long with the migration's indexes (95% CI {lo:.2f}–{hi:.2f}; "
        f"throughput ratio {wc['throughput_ratio']:.2f}; verdict: {wc['verdict']})"
    )


# ----------------------------------------------------------------------------- the audit and the third side


_AUDIT_COLUMNS = ["index", "table", "new", "size MB", "build s", "used by (spec state)", "idx_scan", "covered by",
                  "tiny table", "recommendation", "reason"]  # fmt: skip
_ORDER = {"drop": 0, "review": 1, "keep": 2}


def _audit_order(row: Mapping[str, Any]) -> tuple[int, bool, str]:
    return _ORDER[row["recommendation"]], not row["new"], row["index"]


def audit_table(results: Mapping[str, Any]) -> Table:
    """The index audit: one row per index (drop first, then review, then keep), evidence and reason."""
    rows = [
        [
            r["index"], r["table"], "yes" if r["new"] else "", f"{r['size_bytes'] / 2**20:.2f}",
            "–" if r["build_seconds"] is None else f"{r['build_seconds']:.2f}", ", ".join(r["used_by"]) or "–",
            r["scans_spec"], r["duplicate_of"] or "–", "yes" if r["tiny_table"] else "", r["recommendation"],
            r["reason"],
        ]
        for r in sorted(results.get("audit") or [], key=_audit_order)
    ]  # fmt: skip
    counts = {k: sum(1 for r in results.get("audit") or [] if r["new"] and r["recommendation"] == k) for k in _ORDER}
    n = (results.get("recommended") or {}).get("decided_from", {}).get("n_per_side") or {}
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


def three_way_table(results: Mapping[str, Any]) -> Table | None:
    """Per query: p50 [CI] and p95/p99 on baseline / spec / recommended, and the recommended-vs-spec verdict."""
    rec = results.get("recommended")
    if not rec:
        return None
    order = list(QUERY_PATTERNS)
    rows = []
    for name in sorted(rec["queries"], key=lambda q: order.index(q) if q in order else 99):
        q = rec["queries"][name]
        b, s, c, vs = q["baseline"], q["spec"], q["recommended"], q["recommended_vs_spec"]
        rows.append([
            name,
            *(f"{st['p50']:.3f} {interval(st['p50_ci'], 3)}" for st in (b, s, c)),
            " / ".join(f"{st['p95']:.2f}" for st in (b, s, c)),
            " / ".join(f"{st['p99']:.2f}" for st in (b, s, c)),
            f"{b['n']}/{s['n']}/{c['n']}",
            speedup_text(vs["ratio"], vs["ratio_ci"]),
            p_text(vs["p_value"]),
            "as fast as spec" if q["as_fast_as_spec"] else "slower than spec",
        ])  # fmt: skip
    counts = rec["sizes"]["index_count"]
    note = (
        f"Sides: baseline ({counts['baseline']} indexes), spec ({counts['spec']}), recommended ({counts['recommended']}"
        f" = baseline + {len(rec['indexes'])} kept). 'recommended vs spec' is the speedup of the recommended set "
        "over the spec's (above 1×: faster); 'as fast' = not significantly and materially slower (ratio of medians "
        f"under the factor gate {results['method'].get('factor')} or Mann-Whitney p ≥ "
        f"{results['method'].get('alpha')})."
    )
    columns = ["query", "baseline p50 ms [95% CI]", "spec p50", "recommended p50", "p95 b/s/r", "p99 b/s/r",
               "n b/s/r", "recommended vs spec", "p (MWU)", "verdict"]  # fmt: skip
    return Table(columns, rows, title="Three index sets: baseline / spec / recommended", note=note)


def three_way_cost_table(results: Mapping[str, Any]) -> Table | None:
    """Index count, index size and insert throughput [CI] of the three index sets."""
    rec = results.get("recommended")
    if not rec:
        return None
    w, sizes = rec.get("write"), rec["sizes"]
    rows = []
    for key in ("baseline", "spec", "recommended"):
        side = (w or {}).get(key) or {}
        rows.append([
            key, sizes["index_count"][key], f"{sizes['index_bytes'][key] / 2**20:.1f}",
            f"{side['median_rows_per_s']:,.0f}" if side else "–",
            interval(side.get("median_rows_per_s_ci"), 0) if side else "–",
            (w or {}).get("batches", {}).get(key, "–"),
        ])  # fmt: skip
    note = "insert throughput: rolled-back batches of the application's INSERT, interleaved with the query rounds"
    if w:
        vs = w["recommended_vs_spec"]
        note += (
            f"; the recommended set inserts {speedup_text(vs['ratio'], vs['ratio_ci'])} as fast as the spec's "
            f"(median batch time, p {p_text(vs['p_value'])}; {w['rows_per_batch']} rows per batch)"
        )
    columns = ["index set", "indexes", "index MB", "insert rows/s", "95% CI", "batches"]
    return Table(columns, rows, title="What each index set costs: size and insert throughput", note=note)
