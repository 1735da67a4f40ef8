"""The report's opening: findings (one sentence each, with its number, n and CI) and recommendations.

Every sentence is computed from this run's section results (and the comparison with the previous
comparable run); a section that did not run, or a figure that is missing, adds no sentence and
is named under "could not decide" instead. Speedups are written as "×" with their CI and tiny
p-values as "< 0.001" (:mod:`psra_bench.measure.wording`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psra_bench.latency.audit import DROP, REVIEW, FinalRecommendation, final_recommendation, lost_indexes
from psra_bench.measure.stats import FASTER, SLOWER, compare_to_previous
from psra_bench.measure.wording import interval, mb, p_text, speedup_text, times

__all__ = ["findings", "recommendations"]


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _pct_ci(pair: Sequence[float] | None) -> str:
    return "–" if not pair else f"[{100 * pair[0]:.1f}–{100 * pair[1]:.1f} %]"


def _rows_per_s(side: Mapping[str, Any]) -> str:
    return f"{side['median_rows_per_s']:,.0f} rows/s {interval(side['median_rows_per_s_ci'], 0)}"


# ----------------------------------------------------------------------------- findings


def _query_findings(q: Mapping[str, Any]) -> list[str]:
    out = []
    rows = [r for r in q.get("queries", {}).values() if r.get("decision")]
    if rows:
        faster = sorted((r for r in rows if r["verdict"] == FASTER), key=lambda r: r["decision"]["ratio"])
        ns = sorted({r["before"]["n"] for r in rows} | {r["after"]["n"] for r in rows})
        n = f"n = {ns[0]}–{ns[-1]} calls per side" if len(ns) > 1 else f"n = {ns[0]} calls per side"
        if faster:
            hi, lo = faster[0], faster[-1]
            out.append(
                f"The migration's indexes made {len(faster)} of {len(rows)} measured queries significantly faster at "
                f"p50, from {speedup_text(lo['decision']['ratio'], lo['decision']['ratio_ci'])} ({lo['name']}) to "
                f"{speedup_text(hi['decision']['ratio'], hi['decision']['ratio_ci'])} ({hi['name']}); {n}."
            )
        else:
            out.append(
                f"The migration's indexes made none of the {len(rows)} measured queries significantly faster ({n})."
            )
        slower = [r for r in rows if r["verdict"] == SLOWER]
        if slower:
            out.append(
                f"{len(slower)} got slower with them: "
                + "; ".join(
                    f"{r['name']} {speedup_text(r['decision']['ratio'], r['decision']['ratio_ci'])} "
                    f"(p {p_text(r['decision']['p_value'])})"
                    for r in slower
                )
                + "."
            )
    wc, sizes = q.get("write_cost"), q.get("sizes") or {}
    if wc and sizes.get("new_index_bytes") is not None:
        out.append(
            f"They cost {mb(sizes['new_index_bytes'])} of index and cut insert throughput from "
            f"{_rows_per_s(wc['before'])} to {_rows_per_s(wc['after'])} "
            f"({times(wc['throughput_ratio'])} of it; n = {wc['batches']['after']} batches of "
            f"{wc['rows_per_batch']} rows per side)."
        )
    rec = q.get("recommended")
    if rec:
        qs = rec["queries"]
        fast = [k for k, v in qs.items() if v["as_fast_as_spec"]]
        size = rec["sizes"]["index_bytes"]
        sentence = (
            f"The audit's recommended set (baseline + {len(rec['indexes'])} of the 26) is as fast as the spec's for "
            f"{len(fast)} of {len(qs)} queries, and all its indexes take {mb(size['recommended'])} against the "
            f"spec set's {mb(size['spec'])}"
        )
        w = rec.get("write")
        if w:
            sentence += f"; it inserts {_rows_per_s(w['recommended'])} against the spec's {_rows_per_s(w['spec'])}"
        out.append(sentence + ".")
    return out


def _cache_findings(c: Mapping[str, Any]) -> list[str]:
    entities = (c.get("live") or {}).get("entities") or {}
    if not entities:
        return []
    rates = "; ".join(
        f"{name} {_pct(e['hit_rate'])} {_pct_ci(e.get('hit_rate_ci'))} (n = {e['n']})" for name, e in entities.items()
    )
    out = [f"Live cache hit rates after warm-up with the current TTLs: {rates}."]
    pays: list[str] = []
    flat: list[str] = []
    for name, e in entities.items():
        hit, miss = (e.get("latency") or {}).get("hit"), (e.get("latency") or {}).get("miss")
        if not (isinstance(hit, Mapping) and isinstance(miss, Mapping)) or min(hit.get("n", 0), miss.get("n", 0)) < 2:
            continue
        d = compare_to_previous(miss, hit)  # A = miss, B = hit: "faster" means the hit pays
        text = (
            f"{name} (hit p50 {hit['p50']:.2f} ms vs {e.get('miss_source', 'miss')} {miss['p50']:.2f} ms, "
            f"{speedup_text(d.ratio, d.ratio_ci)}, n = {hit['n']}/{miss['n']})"
        )
        (pays if d.verdict == FASTER else flat).append(text)
    if pays:
        out.append("A cache hit is significantly faster than a miss for " + "; ".join(pays) + ".")
    if flat:
        out.append("A Redis hit is no faster than going to the source for " + "; ".join(flat) + ".")
    return out


def _load_findings(load: Mapping[str, Any]) -> list[str]:
    configs = load.get("configurations") or {}
    slo = (load.get("parameters") or {}).get("slo_p95_ms")
    parts = []
    for name, c in configs.items():
        us = c.get("users_supported") or {}
        failing = us.get("first_failing_users")
        if us.get("users_supported") is None and failing is None:
            continue
        if us.get("users_supported") is None:
            text = f"{name} fewer than {failing}"
        else:
            text = f"{name} {us['users_supported']}{'+' if us.get('lower_bound') else ''}"
        step = next((s for s in c.get("steps") or [] if s.get("users") == failing), None)
        if step:
            o = step.get("overall") or {}
            text += f" (p95 {o.get('p95_ms', 0):.0f} ms at {failing} users, n = {o.get('n', 0):,})"
        parts.append(text)
    if not parts:
        return []
    return [
        f"Users supported at p95 ≤ {slo:g} ms (closed-model step load; '+' = every step met it): "
        + "; ".join(parts)
        + "."
    ]


def findings(
    sections: Mapping[str, Any],
    *,
    regressions: Sequence[Mapping[str, Any]],
    previous_run: str | None,
    compared_items: int,
) -> list[str]:
    """5–8 one-sentence findings of this run, each with its number, n and CI where it has one."""
    out: list[str] = []
    if sections.get("query_latency"):
        out += _query_findings(sections["query_latency"])
    if sections.get("cache"):
        out += _cache_findings(sections["cache"])
    if sections.get("load"):
        out += _load_findings(sections["load"])
    if previous_run is None:
        out.append("There is no earlier comparable run (same machine key and scale) to look for regressions against.")
    elif regressions:
        worst = max(regressions, key=lambda r: r.get("slowdown") or 0)
        out.append(
            f"{len(regressions)} of {compared_items} headline figures regressed against run {previous_run}; the worst "
            f"is {worst['item']} ({times(worst.get('slowdown'))} slower, p {p_text(worst.get('p_value'))})."
        )
    else:
        out.append(f"No regression against run {previous_run} across {compared_items} headline figures.")
    return out


# ----------------------------------------------------------------------------- recommendations


def _them(items: Sequence[str]) -> str:
    return "it" if len(items) == 1 else "them"


def _keep_advice(final: FinalRecommendation, audit: Sequence[Mapping[str, Any]]) -> str:
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


def _index_recommendations(q: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    audit, rec = q.get("audit") or [], q.get("recommended")
    todo: list[str] = []
    open_: list[str] = []
    slower = [k for k, v in (rec or {}).get("queries", {}).items() if not v["as_fast_as_spec"]]
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
        w = (rec or {}).get("write")
        if w:
            vs = w["recommended_vs_spec"]
            sentence += (
                f" and inserts ran at {_rows_per_s(w['recommended'])} instead of {_rows_per_s(w['spec'])} "
                f"(batch time {speedup_text(vs['ratio'], vs['ratio_ci'])} faster, p {p_text(vs['p_value'])})"
            )
        todo.append(sentence + _keep_advice(final, audit) + ".")
    for k in slower:
        vs = (rec or {})["queries"][k]["recommended_vs_spec"]
        needed, lost = final.needed_by(k), lost_indexes(q, k)
        if needed:
            why = (
                f"its spec-set plan uses {', '.join(needed)}, which the measured recommended set left out: "
                f"recommended_indexes.up.sql keeps {_them(needed)}"
            )
        elif lost:
            why = (
                f"its plan changed ({', '.join(lost)} unused on the recommended set) but no index it "
                "used was left out, so the gap comes from the planner or the run: run again with more rounds"
            )
        else:
            why = (
                "its plan uses the same indexes on both sets, so the gap comes from the run (drift between "
                "rounds), not from a dropped index: run again with more rounds to settle it"
            )
        open_.append(
            f"The recommended set measured slower than the spec's for {k} "
            f"({speedup_text(vs['ratio'], vs['ratio_ci'])}, p {p_text(vs['p_value'])}); {why}."
        )
    if not rec:
        open_.append("The recommended set was not measured in this run (recommend = False): its speed is untested.")
    undecided = [
        r["name"]
        for r in (q.get("queries") or {}).values()
        if r.get("verdict") not in (FASTER, SLOWER)
        and r.get("decision", {}).get("ratio_ci")
        and r["decision"]["ratio_ci"][0] < 1 / 1.1 < 1.1 < r["decision"]["ratio_ci"][1]
    ]
    if undecided:
        open_.append(
            f"Too few calls to decide whether the indexes change {', '.join(undecided)}: their speedup CI spans "
            "both a gain and a loss beyond the factor; run more iterations."
        )
    return todo, open_


def _ttl_recommendations(ttl: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    tuning = ttl.get("tuning") or {}
    current = (tuning.get("current") or {}).get("entities") or {}
    todo, open_ = [], []
    for name, r in (tuning.get("recommendations") or {}).items():
        now = current.get(name) or {}
        now_text = (
            f"now {now.get('ttl_s', 0):.0f} s: {_pct(now['hit_rate'])} {_pct_ci(now.get('hit_rate_ci'))}"
            if now.get("hit_rate") is not None
            else "now unmeasured"
        )
        point = r.get("point")
        if r.get("ttl_s") is not None and point:
            stale = point.get(r.get("metric", "max_stale_s"))
            todo.append(
                f"TTL for {name}: {r['ttl_s']:.0f} s gives hit rate {_pct(point['hit_rate'])} "
                f"{_pct_ci(point.get('hit_rate_ci'))} with {r.get('metric')} "
                f"{'–' if stale is None else f'{stale:.0f} s'} ≤ {r.get('max_staleness_s', 0):.0f} s "
                f"(n = {point['n']} simulated reads; {now_text})."
            )
        else:
            open_.append(f"TTL for {name}: {r.get('reason', 'no recommendation')} ({now_text}).")
    return todo, open_


def recommendations(sections: Mapping[str, Any]) -> dict[str, list[str]]:
    """{"do": what to change, with its measured effect; "open": what this run could not decide, and why}."""
    todo: list[str] = []
    open_: list[str] = []
    for key, advise, missing in (
        ("query_latency", _index_recommendations, "Indexes: notebook 01 did not run, so nothing is said about them."),
        ("ttl", _ttl_recommendations, "TTLs: notebook 03 did not run, so no TTL is recommended."),
    ):
        if sections.get(key):
            do, undecided = advise(sections[key])
            todo += do
            open_ += undecided
        else:
            open_.append(missing)
    load = sections.get("load")
    if load:
        bounded = [n for n, c in (load.get("configurations") or {}).items() if (c.get("users_supported") or {}).get(
            "lower_bound")]  # fmt: skip
        if bounded:
            open_.append(
                f"Users supported is only a lower bound for {', '.join(bounded)}: every step met the SLO; "
                "raise `users` to find the limit."
            )
    return {"do": todo, "open": open_}
