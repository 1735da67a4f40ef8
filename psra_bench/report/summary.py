"""The report's opening: findings (one sentence each, with its number, n and CI) and recommendations.

Every sentence is computed from this run's section results (and the comparison with the previous
comparable run); a section that did not run, or a figure that is missing, adds no sentence and
is named under "could not decide" instead. Every figure is written by
:mod:`psra_bench.measure.format` (speedups as "×" with their CI, tiny p-values as "< 0.001").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psra_bench.latency.audit import DROP, REVIEW, FinalRecommendation, final_recommendation, lost_indexes
from psra_bench.load.results import capacity_bracket
from psra_bench.measure.format import (
    interval,
    mb,
    ms,
    number,
    p_text,
    percent,
    percent_ci,
    speedup_text,
    times,
    times_ci,
)
from psra_bench.measure.stats import FASTER, SLOWER, compare_to_previous
from psra_bench.report.sections import advice_result
from psra_bench.results import (
    AuditRow,
    CacheHitRatesResult,
    LoadTestResult,
    QueryLatencyResult,
    QueryResult,
    Sections,
    ThroughputSide,
    TtlTuningResult,
)
from psra_bench.workload.advise import ADD
from psra_bench.workload.advise import DROP as DROP_INDEX
from psra_bench.workload.tables import advice_of

__all__ = ["findings", "recommendations"]


def _rate(share: float | None, ci: Sequence[float] | None) -> str:
    return f"{percent(share)} {percent_ci(ci)}"


def _rows_per_s(side: ThroughputSide) -> str:
    return f"{number(side['median_rows_per_s'], 0)} rows/s {interval(side['median_rows_per_s_ci'], 0)}"


# ----------------------------------------------------------------------------- findings


def _speedup(r: QueryResult) -> str:
    return speedup_text(r["decision"]["ratio"], r["decision"]["ratio_ci"])


def _query_findings(q: QueryLatencyResult) -> list[str]:
    out = []
    rows = list(q["queries"].values())
    if rows:
        faster = sorted((r for r in rows if r["verdict"] == FASTER), key=lambda r: r["decision"]["ratio"])
        ns = sorted({r["before"]["n"] for r in rows} | {r["after"]["n"] for r in rows})
        n = f"n = {ns[0]}–{ns[-1]} calls per side" if len(ns) > 1 else f"n = {ns[0]} calls per side"
        if faster:
            hi, lo = faster[0], faster[-1]
            out.append(
                f"The migration's indexes made {len(faster)} of {len(rows)} measured queries significantly faster at "
                f"p50, from {_speedup(lo)} ({lo['name']}) to {_speedup(hi)} ({hi['name']}); {n}."
            )
        else:
            out.append(
                f"The migration's indexes made none of the {len(rows)} measured queries significantly faster ({n})."
            )
        slower = [r for r in rows if r["verdict"] == SLOWER]
        if slower:
            out.append(
                f"{len(slower)} got slower with them: "
                + "; ".join(f"{r['name']} {_speedup(r)} (p {p_text(r['decision']['p_value'])})" for r in slower)
                + "."
            )
    wc = q["write_cost"]
    if wc is not None:
        out.append(
            f"They cost {mb(q['sizes']['new_index_bytes'])} of index and cut insert throughput from "
            f"{_rows_per_s(wc['before'])} to {_rows_per_s(wc['after'])} "
            f"({times(wc['throughput_ratio'])} of it; n = {wc['batches']['after']} batches of "
            f"{wc['rows_per_batch']} rows per side)."
        )
    rec = q["recommended"]
    if rec is not None:
        qs = rec["queries"]
        fast = [k for k, v in qs.items() if v["as_fast_as_spec"]]
        size = rec["sizes"]["index_bytes"]
        sentence = (
            f"The audit's recommended set (baseline + {len(rec['indexes'])} of the 26) is as fast as the spec's for "
            f"{len(fast)} of {len(qs)} queries, and all its indexes take {mb(size['recommended'])} against the "
            f"spec set's {mb(size['spec'])}"
        )
        w = rec["write"]
        if w is not None:
            sentence += f"; it inserts {_rows_per_s(w['recommended'])} against the spec's {_rows_per_s(w['spec'])}"
        out.append(sentence + ".")
    return out


def _cache_findings(c: CacheHitRatesResult) -> list[str]:
    entities = c["live"]["entities"]
    if not entities:
        return []
    rates = "; ".join(f"{name} {_rate(e['hit_rate'], e['hit_rate_ci'])} (n = {e['n']})" for name, e in entities.items())
    out = [f"Live cache hit rates after warm-up with the current TTLs: {rates}."]
    pays: list[str] = []
    flat: list[str] = []
    for name, e in entities.items():
        hit, miss = e["latency"]["hit"], e["latency"]["miss"]
        if hit is None or miss is None or min(hit["n"], miss["n"]) < 2:
            continue
        d = compare_to_previous(miss, hit)  # A = miss, B = hit: "faster" means the hit pays
        text = (
            f"{name} (hit p50 {ms(hit['p50'])} ms vs {e['miss_source']} {ms(miss['p50'])} ms, "
            f"{speedup_text(d.ratio, d.ratio_ci)}, n = {hit['n']}/{miss['n']})"
        )
        (pays if d.verdict == FASTER else flat).append(text)
    if pays:
        out.append("A cache hit is significantly faster than a miss for " + "; ".join(pays) + ".")
    if flat:
        out.append("A Redis hit is no faster than going to the source for " + "; ".join(flat) + ".")
    return out


def _load_findings(load: LoadTestResult) -> list[str]:
    slo = load["parameters"].get("slo_p95_ms")
    parts = []
    for name, c in load["configurations"].items():
        us = c["users_supported"]
        failing = us["first_failing_users"]
        if us["users_supported"] is None and failing is None:
            continue
        if us["users_supported"] is None:
            text = f"{name} fewer than {failing}"
        elif us["lower_bound"]:
            text = f"{name} {us['users_supported']}+"
        else:
            text = f"{name} {us['users_supported']} (bracket {us['users_supported']}–{failing})"
        step = next((s for s in c["steps"] if s["users"] == failing), None)
        if step is not None:
            o = step["overall"]
            text += f" (p95 {number(o.get('p95_ms'), 0)} ms at {failing} users, n = {number(o.get('n', 0))})"
        parts.append(text)
    if not parts or slo is None:
        return []
    return [
        f"Users supported at p95 ≤ {slo:g} ms (closed-model step load; '+' = every step met it): "
        + "; ".join(parts)
        + "."
    ]


def _replay_clause(sections: Sections) -> str | None:
    """The replayed log (``report --from-log``) in a clause: how faithfully it replayed, its capacity (None: no log).

    It joins the users-supported finding rather than adding one, so a run keeps 5–8 findings.
    """
    doc = sections.get("replay")
    if doc is None:
        return None
    r = doc["replay"]
    diff = max((abs(r["replayed_share"].get(k, 0.0) - v) for k, v in r["recorded_share"].items()), default=0.0)
    text = (
        f"your recorded traffic ({number(r['recorded_requests'])} requests to {len(r['recorded_share'])} endpoints of "
        f"this API, {number(sum(r['unmatched'].values()))} to other routes not sent) replayed against "
        f"'{doc['configuration'] or doc['url']}' with each endpoint's share within {diff * 100:.1f} points of the log's"
    )
    searched = doc.get("capacity")
    if searched:
        cap = searched["capacity"]
        text += f", and users supported at its own mix: {capacity_bracket(cap)} (p95 ≤ {cap['slo_p95_ms']:g} ms)"
    return text


def _advice_findings(sections: Sections) -> tuple[list[str], list[str], list[str]]:
    """(findings, do, open) of notebook 06's index advice for the run's workload (all empty without one)."""
    result = advice_result(sections)
    if result is None:
        return [], [], []
    advice = advice_of(result)
    fp, actions = advice.fingerprint, [ix.action for ix in advice.indexes]
    adds, drops = actions.count(ADD), actions.count(DROP_INDEX)
    head = f"Index advice for workload {fp} ({advice.path} screening): {adds} to add, {drops} to drop"
    measured = advice.predicted_vs_measured
    if measured is None:
        return (
            [head + "; not measured (verify off), so the gains are the planner's only."],
            [],
            [f"Index advice for workload {fp} was not measured: run it with verify on a database psra-bench owns."],
        )
    rows = list(measured.values())
    faster = sorted((r for r in rows if r["verdict"] == FASTER), key=lambda r: -r["measured_speedup"])
    slower = [r for r in rows if r["verdict"] == SLOWER]
    best = (
        f" (best {times_ci(faster[0]['measured_speedup'], faster[0]['ci'])}, planner predicted "
        f"{times(faster[0]['predicted_speedup'])})"
        if faster
        else ""
    )
    ins = advice.insert
    insert = "" if ins is None else f"; inserts take {times_ci(ins['ratio'], ins['ratio_ci'])} as long"
    line = (
        f"{head}; with the recommended set {len(faster)} of {len(rows)} replayed queries were significantly faster"
        f"{best} and {len(slower)} slower{insert}."
    )
    todo = []
    if faster and (adds or drops):
        todo.append(
            f"Index advice for workload {fp}: apply 06_index_advice/recommended_indexes.up.sql with psql "
            f"({adds} CREATE, {drops} DROP INDEX CONCURRENTLY) after reviewing each drop."
        )
    return [line], todo, []


def findings(
    sections: Sections,
    *,
    regressions: Sequence[Mapping[str, Any]],
    previous_run: str | None,
    compared_items: int,
) -> list[str]:
    """5–8 one-sentence findings of this run, each with its number, n and CI where it has one."""
    out: list[str] = []
    if "query_latency" in sections:
        out += _query_findings(sections["query_latency"])
    if "cache" in sections:
        out += _cache_findings(sections["cache"])
    if "load" in sections:
        load = _load_findings(sections["load"])
        replay = _replay_clause(sections)
        if replay is not None and load:
            load[-1] = f"{load[-1][:-1]}; {replay}."
        elif replay is not None:
            load.append(f"{replay[0].upper()}{replay[1:]}.")
        out += load
    out += _advice_findings(sections)[0]
    if previous_run is None:
        same = "machine key, scale and workload" if advice_result(sections) else "machine key and scale"
        out.append(f"There is no earlier comparable run (same {same}) to look for regressions against.")
    elif regressions:
        worst = max(regressions, key=lambda r: r["slowdown"] or 0)
        out.append(
            f"{len(regressions)} of {compared_items} headline figures regressed against run {previous_run}; the worst "
            f"is {worst['item']} ({times(worst['slowdown'])} slower, p {p_text(worst['p_value'])})."
        )
    else:
        out.append(f"No regression against run {previous_run} across {compared_items} headline figures.")
    return out


# ----------------------------------------------------------------------------- recommendations


def _them(items: Sequence[str]) -> str:
    return "it" if len(items) == 1 else "them"


def _keep_advice(final: FinalRecommendation, audit: Sequence[AuditRow]) -> str:
    """The end of the drop sentence: what to drop, what the three-way run keeps, and the SQL that does it."""
    if not final.kept_by_three_way:
        return "; drop them: recommended_indexes.up.sql in this run's folder does it"
    kept = [k.index for k in final.kept_by_three_way]
    names = ", ".join(
        f"{k.index} ({', '.join(k.queries)} need{'s' if len(k.queries) == 1 else ''} it)"
        for k in final.kept_by_three_way
    )
    if not final.left_out:
        return f"; keep them after all, {names}: recommended_indexes.up.sql in this run's folder keeps {_them(kept)}"
    freed = sum(r["size_bytes"] for r in audit if r["new"] and r["index"] in final.left_out)
    return (
        f"; drop them except {names}: recommended_indexes.up.sql in this run's folder keeps {_them(kept)} and drops "
        f"the other {len(final.left_out)} ({mb(freed)})"
    )


def _why_slower(q: QueryLatencyResult, final: FinalRecommendation, query: str) -> str:
    """Why the recommended set measured slower for ``query``: an index it left out, a plan change, or the run."""
    needed, lost = final.needed_by(query), lost_indexes(q, query)
    if needed:
        return (
            f"its spec-set plan uses {', '.join(needed)}, which the measured recommended set left out: "
            f"recommended_indexes.up.sql keeps {_them(needed)}"
        )
    if lost:
        return (
            f"its plan changed ({', '.join(lost)} unused on the recommended set) but no index it "
            "used was left out, so the gap comes from the planner or the run: run again with more rounds"
        )
    return (
        "its plan uses the same indexes on both sets, so the gap comes from the run (drift between "
        "rounds), not from a dropped index: run again with more rounds to settle it"
    )


def _index_recommendations(q: QueryLatencyResult) -> tuple[list[str], list[str]]:
    audit, rec = q["audit"], q["recommended"]
    todo: list[str] = []
    open_: list[str] = []
    # An index whose loss made a query slower in the three-way run is not advised away
    # (final_recommendation decides, for this advice and for recommended_indexes.up.sql alike).
    final = final_recommendation(q)
    drop = [r for r in audit if r["new"] and r["recommendation"] == DROP]
    review = [r for r in audit if r["new"] and r["recommendation"] == REVIEW]
    if drop or review:
        freed = sum(r["size_bytes"] for r in drop + review)
        kinds = [f"{len(drop)} unused, covered or on a tiny table"] if drop else []
        kinds += [f"{len(review)} used without a significant gain"] if review else []
        sentence = (
            f"The recommended set leaves out {len(drop) + len(review)} migration indexes "
            f"({'; '.join(kinds)}): that frees {mb(freed)}"
        )
        w = rec["write"] if rec is not None else None
        if w is not None:
            vs = w["recommended_vs_spec"]
            sentence += (
                f" and inserts ran at {_rows_per_s(w['recommended'])} instead of {_rows_per_s(w['spec'])} "
                f"(batch time {speedup_text(vs['ratio'], vs['ratio_ci'])} faster, p {p_text(vs['p_value'])})"
            )
        todo.append(sentence + _keep_advice(final, audit) + ".")
    if rec is None:
        open_.append("The recommended set was not measured in this run (recommend = False): its speed is untested.")
    else:
        for k, v in rec["queries"].items():
            if v["as_fast_as_spec"]:
                continue
            vs = v["recommended_vs_spec"]
            open_.append(
                f"The recommended set measured slower than the spec's for {k} "
                f"({speedup_text(vs['ratio'], vs['ratio_ci'])}, p {p_text(vs['p_value'])}); {_why_slower(q, final, k)}."
            )
    undecided = []
    for r in q["queries"].values():
        ci = r["decision"]["ratio_ci"]
        if r["verdict"] not in (FASTER, SLOWER) and ci and ci[0] < 1 / 1.1 < 1.1 < ci[1]:
            undecided.append(r["name"])
    if undecided:
        open_.append(
            f"Too few calls to decide whether the indexes change {', '.join(undecided)}: their speedup CI spans "
            "both a gain and a loss beyond the factor; run more iterations."
        )
    return todo, open_


def _ttl_recommendations(ttl: TtlTuningResult) -> tuple[list[str], list[str]]:
    tuning = ttl["tuning"]
    current = tuning["current"]["entities"]
    todo, open_ = [], []
    for name, r in tuning["recommendations"].items():
        now = current.get(name)
        now_text = (
            f"now {number(now['ttl_s'], 0)} s: {_rate(now['hit_rate'], now['hit_rate_ci'])}"
            if now is not None and now["hit_rate"] is not None
            else "now unmeasured"
        )
        point = r["point"]
        if r["ttl_s"] is not None and point is not None:
            stale = point.get(r["metric"])
            todo.append(
                f"TTL for {name}: {number(r['ttl_s'], 0)} s gives hit rate "
                f"{_rate(point['hit_rate'], point['hit_rate_ci'])} with {r['metric']} "
                f"{number(stale, 0)}{'' if stale is None else ' s'} ≤ "
                f"{number(r['max_staleness_s'], 0)} s (n = {point['n']} simulated reads; {now_text})."
            )
        else:
            open_.append(f"TTL for {name}: {r['reason']} ({now_text}).")
    return todo, open_


def recommendations(sections: Sections) -> dict[str, list[str]]:
    """{"do": what to change, with its measured effect; "open": what this run could not decide, and why}."""
    todo: list[str] = []
    open_: list[str] = []
    if "query_latency" in sections:
        do, undecided = _index_recommendations(sections["query_latency"])
        todo += do
        open_ += undecided
    else:
        open_.append("Indexes: notebook 01 did not run, so nothing is said about them.")
    if "ttl" in sections:
        do, undecided = _ttl_recommendations(sections["ttl"])
        todo += do
        open_ += undecided
    else:
        open_.append("TTLs: notebook 03 did not run, so no TTL is recommended.")
    if "load" in sections:
        configs = sections["load"]["configurations"]
        bounded = [n for n, c in configs.items() if c["users_supported"]["lower_bound"]]
        if bounded:
            open_.append(
                f"Users supported is only a lower bound for {', '.join(bounded)}: every step met the SLO; "
                "raise `users` to find the limit."
            )
    _, do, undecided = _advice_findings(sections)
    return {"do": todo + do, "open": open_ + undecided}
