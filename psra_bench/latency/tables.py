"""Experiment 01's results as tables: latency per query, index usage, write cost."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psra_bench.latency.patterns import (
    QUERY_PATTERNS,
)

__all__ = ["latency_table", "format_table", "format_index_usage", "format_write_cost"]


def latency_table(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows shaped like the spec's "Query Performance" table, with p50/p95/p99, n, CIs and the verdict."""
    rows = []
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


def format_table(results: Mapping[str, Any]) -> str:
    """The latency table as fixed-width text (the notebook prints it)."""
    head = (
        f"{'operation':<46} {'n b/a':>7} {'before p50':>10} {'p95':>8} {'p99':>8} {'after p50':>10} {'p95':>8} "
        f"{'p99':>8} {'improv.':>8} {'ratio 95% CI':>15} {'verdict':<22} {'plan':<7} {'spec':>5}"
    )
    lines = [head, "-" * len(head)]
    for r in latency_table(results):
        ci, n = r["ratio_ci"], f"{r['n_before']}/{r['n_after']}"
        lines.append(
            f"{r['operation'][:46]:<46} {n:>7} {r['before_p50_ms']:>10.3f} "
            f"{r['before_p95_ms']:>8.3f} "
            f"{r['before_p99_ms']:>8.3f} {r['after_p50_ms']:>10.3f} {r['after_p95_ms']:>8.3f} "
            f"{r['after_p99_ms']:>8.3f} {r['improvement_pct']:>7.1f}% {f'{ci[0]:.3f}–{ci[1]:.3f}':>15} "
            f"{r['verdict']:<22} {'changed' if r['plan_changed'] else 'same':<7} {r['spec_improvement_pct']:>4.0f}%"
        )
    lines.append(
        "times in ms; n = calls before/after; improvement = (before − after) / before of the medians; ratio = "
        "after/before median; plan = EXPLAIN shape before vs after; spec = the spec's claimed improvement"
    )
    return "\n".join(lines)


def _mb(n: float) -> str:
    return f"{n / 2**20:.2f} MB"


def format_index_usage(results: Mapping[str, Any], *, new_only: bool = False) -> str:
    """Per index: table, size, idx_scan deltas before/after and the queries that used it."""
    head = (
        f"{'index':<40} {'table':<21} {'new':<4} {'size':>10} {'scans before':>12} {'scans after':>11}  used by (after)"
    )
    lines = [head, "-" * len(head)]
    for u in sorted(results["index_usage"], key=lambda u: (not u["new"], -u["scans_after"], u["index"])):
        if new_only and not u["new"]:
            continue
        lines.append(
            f"{u['index']:<40} {u['table']:<21} {'yes' if u['new'] else '':<4} {_mb(u['size_bytes']):>10} "
            f"{u['scans_before']:>12} {u['scans_after']:>11}  {', '.join(u['used_by_after']) or '-'}"
        )
    s = results["sizes"]
    unused = [u["index"] for u in results["index_usage"] if u["new"] and not u["scans_after"]]
    lines.append(
        f"indexes {s['index_count_before']} -> {s['index_count_after']}; new indexes take "
        f"{_mb(s['new_index_bytes'])} (baseline indexes {_mb(s['baseline_index_bytes'])}); "
        f"{len(unused)} of the new indexes were not used by any measured query"
    )
    return "\n".join(lines)


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
