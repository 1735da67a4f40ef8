"""Experiment 01's results document: per query, per index, the three-way comparison, sizes and write cost.

:func:`build_results` turns a run's frozen :class:`~psra_bench.latency.rounds.RunPlan` and its
:class:`~psra_bench.latency.rounds.Measurements` into ``01_query_latency.json``'s content
(:class:`psra_bench.results.QueryLatencyResult`): summaries with bootstrap CIs, the verdicts,
plans, index usage, sizes, the audit and the recommended set measured as a third side.
"""

from __future__ import annotations

from typing import Any

from psra_bench.latency.patterns import QUERY_PATTERNS, TIMING_PATHS, QueryPattern
from psra_bench.latency.rounds import Measurements, RunPlan
from psra_bench.latency.tables import latency_table
from psra_bench.latency.write_cost import summarize_write_cost, throughput
from psra_bench.measure.stats import SLOWER, decide, summarize
from psra_bench.results import (
    IndexSizes,
    QueryLatencyResult,
    QueryResult,
    RecommendedSet,
    TableIndexSizes,
    ThreeWayQuery,
    ThreeWayWrite,
    ThroughputSide,
)

__all__ = ["EXPERIMENT", "build_results"]

#: Name of the results file (``<output_dir>/01_query_latency.json``) and of the plots' prefix.
EXPERIMENT = "01_query_latency"


def _query_result(
    pattern: QueryPattern, run: Measurements, schedule: str, seed: int, factor: float, alpha: float
) -> QueryResult:
    a, b = run.samples[pattern.name]["A"], run.samples[pattern.name]["B"]
    before, after = summarize(a, seed=seed), summarize(b, seed=seed)
    decision = decide(a, b, factor, alpha, seed=seed)
    plans = {"before": run.plans[pattern.name].get("A"), "after": run.plans[pattern.name].get("B")}
    shapes = [(p["node_types"], p["index_names"]) if p else None for p in plans.values()]
    return {
        "name": pattern.name,
        "label": pattern.label,
        "spec_row": pattern.spec_row,
        "dal_query": pattern.name,
        "dal_method": pattern.dal_method,
        "sql": " ".join(pattern.sql.split()),
        "spec": {
            "before_ms": pattern.spec.before_ms,
            "after_ms": pattern.spec.after_ms,
            "improvement_pct": pattern.spec.improvement_pct,
        },
        "before": before.to_dict(),
        "after": after.to_dict(),
        "decision": decision.to_dict(),
        "improvement_pct": decision.improvement_pct,
        "p95_improvement_pct": (before.p95 - after.p95) / before.p95 * 100 if before.p95 else None,
        "speedup": decision.speedup,
        "verdict": decision.verdict,
        "round_medians": {"schedule": schedule, "p50_ms": run.round_medians[pattern.name]},
        "capped_rounds": {"before": run.capped[pattern.name]["A"], "after": run.capped[pattern.name]["B"]},
        "plans": plans,
        # A verdict without a plan change comes from the system around the query (cache, load), not its plan.
        "plan_changed": shapes[0] != shapes[1],
        "index_scans": {"before": dict(run.scans[pattern.name]["A"]), "after": dict(run.scans[pattern.name]["B"])},
        "index_tuples_read": {
            "before": dict(run.tuples[pattern.name]["A"]),
            "after": dict(run.tuples[pattern.name]["B"]),
        },
    }


def _index_usage(run: Measurements, new: frozenset[str]) -> list[dict[str, Any]]:
    sizes = {s["index"]: s for s in run.sizes or []}
    out = []
    for name, info in sizes.items():
        row: dict[str, Any] = {
            "index": name,
            "table": info["table"],
            "size_bytes": info["size_bytes"],
            "new": name in new,
        }
        for key, side in (("before", "A"), ("after", "B"), ("recommended", "C")):
            row[f"scans_{key}"] = sum(run.scans[q][side][name] for q in run.names)
            row[f"tuples_read_{key}"] = sum(run.tuples[q][side][name] for q in run.names)
            row[f"used_by_{key}"] = [q for q in run.names if run.scans[q][side][name]]
        out.append(row)
    return out


def _sizes_summary(run: Measurements, new: frozenset[str]) -> IndexSizes:
    sizes = run.sizes or []
    by_table: dict[str, TableIndexSizes] = {}
    for s in sizes:
        t = by_table.setdefault(
            s["table"], {"indexes": 0, "new_indexes": 0, "index_bytes": 0, "new_index_bytes": 0, "table_bytes": 0}
        )
        t["indexes"] += 1
        t["index_bytes"] += s["size_bytes"]
        if s["index"] in new:
            t["new_indexes"] += 1
            t["new_index_bytes"] += s["size_bytes"]
        t["table_bytes"] = (run.table_sizes or {}).get(s["table"], 0)
    return {
        "index_count_after": len(sizes),
        "index_count_before": len([s for s in sizes if s["index"] not in new]),
        "baseline_index_bytes": sum(s["size_bytes"] for s in sizes if s["index"] not in new),
        "new_index_bytes": sum(s["size_bytes"] for s in sizes if s["index"] in new),
        "by_table": by_table,
        "build_seconds": run.build_seconds,
    }


def _three_way(run: Measurements, plan: RunPlan) -> RecommendedSet | None:
    """Baseline / spec / recommended per query, for writes and for size; the recommended-vs-spec verdicts."""
    if not any(run.samples[q]["C"] for q in run.names):
        return None
    p, new, rows_per_batch = plan.params, plan.new, plan.params.write_batch_rows
    seed, factor, alpha = p.seed, p.factor, p.alpha
    keep = set(run.recommended)
    queries: dict[str, ThreeWayQuery] = {}
    for q in run.names:
        a, b, c = (run.samples[q][k] for k in "ABC")
        vs_spec = decide(b, c, factor, alpha, seed=seed)
        queries[q] = {
            "baseline": summarize(a, seed=seed).to_dict(),
            "spec": summarize(b, seed=seed).to_dict(),
            "recommended": summarize(c, seed=seed).to_dict(),
            "recommended_vs_spec": vs_spec.to_dict(),
            "recommended_vs_baseline": decide(a, c, factor, alpha, seed=seed).to_dict(),
            # As fast: not significantly and materially slower than the spec set (the factor gate).
            "as_fast_as_spec": vs_spec.verdict != SLOWER,
            "plan_recommended": (run.plans[q].get("C") or {}).get("index_names"),
        }
    sizes = run.sizes or []
    write: ThreeWayWrite | None = None
    if all(run.write_ms[k] for k in "ABC"):
        per_side: dict[str, ThroughputSide] = {}
        for key, side in (("baseline", "A"), ("spec", "B"), ("recommended", "C")):
            stats = summarize(run.write_ms[side], seed=seed).to_dict()
            per_side[key] = {"batch_ms": stats, **throughput(rows_per_batch, run.write_ms[side], stats)}
        write_vs_spec = decide(run.write_ms["B"], run.write_ms["C"], factor, alpha, seed=seed).to_dict()
        write = {
            "baseline": per_side["baseline"],
            "spec": per_side["spec"],
            "recommended": per_side["recommended"],
            "rows_per_batch": rows_per_batch,
            "batches": {k: len(run.write_ms[s]) for k, s in (("baseline", "A"), ("spec", "B"), ("recommended", "C"))},
            # batch time recommended / spec: below 1 means the recommended set inserts faster
            "recommended_vs_spec": write_vs_spec,
        }
    baseline_bytes = sum(x["size_bytes"] for x in sizes if x["index"] not in new)
    return {
        "indexes": sorted(keep),
        "decided_from": {
            "rounds": "the first baseline and the first spec round",
            "n_per_side": run.audit_n,
        },
        "queries": queries,
        "all_as_fast": all(v["as_fast_as_spec"] for v in queries.values()),
        "write": write,
        "sizes": {
            "index_count": {
                "baseline": len([x for x in sizes if x["index"] not in new]),
                "spec": len(sizes),
                "recommended": len([x for x in sizes if x["index"] not in new or x["index"] in keep]),
            },
            "index_bytes": {
                "baseline": baseline_bytes,
                "spec": sum(x["size_bytes"] for x in sizes),
                "recommended": baseline_bytes + sum(x["size_bytes"] for x in sizes if x["index"] in keep),
            },
        },
    }


def build_results(
    plan: RunPlan,
    run: Measurements,
    *,
    final_state: str,
    index_count_end: int,
    vacuum_seconds: float | None,
    fingerprint: dict[str, Any],
    elapsed_seconds: float,
) -> QueryLatencyResult:
    """The results document of a finished run (JSON-ready)."""
    p = plan.params
    names, new, initial, count_before = plan.names, plan.new, plan.initial_state, plan.index_count_start
    iterations, rounds, seed, factor, alpha = p.iterations, p.rounds, p.seed, p.factor, p.alpha
    sched = "".join(plan.schedule)
    baseline_count = count_before - len(new) if initial == "applied" else count_before
    results: QueryLatencyResult = {
        "experiment": EXPERIMENT,
        "method": {
            "sides": {
                "before": "A: baseline schema (20 indexes)",
                "after": "B: migration applied (46 indexes)",
                **({"recommended": "C: baseline + the audit's keep indexes"} if p.recommend else {}),
            },
            "schedule": sched,
            "iterations_per_round": iterations,
            "rounds_per_side": rounds,
            "max_n_per_side": iterations * rounds,  # fewer for a query whose rounds hit budget_s
            "warmup_per_round": p.warmup,
            "factor": factor,
            "alpha": alpha,
            "path": p.path,
            "budget_s": p.budget_s,
            "timing": TIMING_PATHS[p.path] + "; one call at a time, perf_counter_ns; params vary per call, "
            "paired across sides",
            "statistics": "p50/p95/p99 numpy 'linear'; 95 % percentile-bootstrap CIs; verdict = ratio of "
            "medians ≥ factor AND two-sided Mann-Whitney p < alpha",
            "index_usage": "idx_scan deltas of pg_stat_user_indexes around the timed calls "
            "(pg_stat_force_next_flush on PostgreSQL ≥ 15)",
        },
        "queries": {q: _query_result(QUERY_PATTERNS[q], run, sched, seed, factor, alpha) for q in names},
        "index_usage": _index_usage(run, new),
        "catalog": run.catalog or [],
        "audit": run.audit or [],
        "recommended": _three_way(run, plan),
        "sizes": _sizes_summary(run, new),
        "migration": {
            "initial_state": initial,
            "final_state": final_state,
            "restored": final_state == initial,
            "index_count_start": count_before,
            "index_count_end": index_count_end,
            "switches": run.switches,
        },
        "write_cost": summarize_write_cost(
            run.write_ms["A"],
            run.write_ms["B"],
            p.write_batch_rows,
            index_counts=(baseline_count, baseline_count + len(new)),
            seed=seed,
            factor=factor,
            alpha=alpha,
        )
        if p.write_batches
        else None,
        "vacuum_seconds": vacuum_seconds,
        "round_vacuum_seconds": run.vacuum_seconds,
        "fingerprint": fingerprint,
        "elapsed_seconds": elapsed_seconds,
        "table": [],
    }
    results["table"] = latency_table(results)
    return results
