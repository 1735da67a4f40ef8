"""The TTL simulation: hand-computed hit rates and staleness, sweeps, recommendations, sim-vs-live checks."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from psra_bench.cachesim.ttl_sim import (
    compare_sim_to_live,
    recommend_all,
    recommend_ttl,
    simulate,
    simulate_entity,
    sweep,
    wilson_interval,
)
from psra_bench.cachesim.workload import READ, Trace, WorkloadSpec, generate_trace
from psra_bench.exceptions import MeasurementError, ParameterError

KEYS = {"hs_codes": ["010121", "010129"], "rules": ["R1", "R2"], "assessments": ["A1", "A2"]}

# HS code 010121 with a 10 s TTL, by hand:
#   t=0 miss (fill, expires 10)   t=5 hit   t=10 miss (expired at 10; fill, expires 20)   t=12 hit
#   t=13 the row changes          t=15 hit, stale for 2 s   t=21 miss (fill, expires 31)   t=22 hit, fresh
HS_EVENTS = [
    (0, "hs_codes", "read", "010121"),
    (5, "hs_codes", "read", "010121"),
    (10, "hs_codes", "read", "010121"),
    (12, "hs_codes", "read", "010121"),
    (13, "hs_codes", "write", "010121"),
    (15, "hs_codes", "read", "010121"),
    (21, "hs_codes", "read", "010121"),
    (22, "hs_codes", "read", "010121"),
]


def hand_trace(warmup_s: float = 0.0) -> Trace:
    return Trace.from_events(HS_EVENTS, KEYS, duration_s=30, warmup_s=warmup_s)


def test_hit_rate_and_staleness_by_hand() -> None:
    r = simulate_entity(hand_trace(), "hs_codes", 10)
    assert (r.n, r.hits, r.misses, r.fills) == (7, 4, 3, 3)
    assert r.hit_rate == pytest.approx(4 / 7)
    assert r.stale_reads == 1 and r.stale_share == pytest.approx(1 / 7)
    assert r.mean_stale_s == r.p95_stale_s == r.max_stale_s == pytest.approx(2.0)
    assert r.hit_rate_ci == pytest.approx(wilson_interval(4, 7))


def test_invalidation_turns_the_stale_hit_into_a_miss() -> None:
    # The update at 13 deletes the key: 15 miss (fill, expires 25), 21 hit, 22 hit.
    r = simulate_entity(hand_trace(), "hs_codes", 10, invalidate_on_update=True)
    assert (r.hits, r.misses, r.stale_reads, r.invalidations) == (4, 3, 0, 1)
    assert r.mean_stale_s is None and r.stale_share == 0


def test_warmup_reads_fill_but_do_not_count() -> None:
    r = simulate_entity(hand_trace(warmup_s=11), "hs_codes", 10)
    assert (r.n, r.hits, r.misses) == (4, 3, 1)  # counted: 12 hit, 15 hit (stale), 21 miss, 22 hit
    assert r.stale_reads == 1


def test_a_long_ttl_keeps_everything_and_a_short_one_nothing() -> None:
    long = simulate_entity(hand_trace(), "hs_codes", 1000)
    assert (long.hits, long.misses) == (6, 1)
    assert long.stale_reads == 3  # 15, 21, 22 all served the value cached at 0, changed at 13
    assert long.max_stale_s == pytest.approx(9.0) and long.mean_stale_s == pytest.approx((2 + 8 + 9) / 3)
    short = simulate_entity(hand_trace(), "hs_codes", 0.5)
    assert (short.hits, short.misses) == (0, 7)


def test_assessments_go_stale_when_their_rule_changes() -> None:
    events = [
        (0, "assessments", "read", "A1"),
        (0, "assessments", "read", "A2"),
        (3, "rules", "write", "R1"),
        (5, "assessments", "read", "A1"),  # hit, stale 2 s (depends on R1)
        (5, "assessments", "read", "A2"),  # hit, fresh (depends on R2)
        (6, "hs_codes", "write", "010121"),
        (7, "assessments", "read", "A2"),
    ]
    trace = Trace.from_events(events, KEYS, duration_s=10, depends_on={"A1": "R1", "A2": "R2"})
    r = simulate_entity(trace, "assessments", 100)
    assert (r.hits, r.misses, r.stale_reads, r.max_stale_s) == (3, 2, 1, pytest.approx(2.0))
    # CachedDAL's invalidation drops every assessment on an HS or rule update; per-key only A1.
    whole = simulate_entity(trace, "assessments", 100, invalidate_on_update=True)
    assert (whole.hits, whole.misses, whole.stale_reads) == (0, 5, 0)
    per_key = simulate_entity(trace, "assessments", 100, invalidate_on_update=True, invalidation_scope="key")
    assert (per_key.hits, per_key.misses, per_key.stale_reads) == (2, 3, 0)


def test_no_updates_and_endless_ttl_miss_once_per_key() -> None:
    trace = generate_trace(
        WorkloadSpec(requests=2000, warmup_s=0, assessment_inputs=50, updates_per_hour={"hs_codes": 0, "rules": 0})
    )
    result = simulate(trace, {"hs_codes": 1e9, "rules": 1e9, "assessments": 1e9})
    for i, e in enumerate(("hs_codes", "rules", "assessments")):
        reads = (trace.entity == i) & (trace.op == READ)
        r = result["entities"][e]
        assert r["misses"] == np.unique(trace.key[reads]).size
        assert r["n"] == int(reads.sum()) and r["stale_reads"] == 0


def test_simulation_is_deterministic_and_names_its_inputs() -> None:
    trace = generate_trace(WorkloadSpec(requests=1500, assessment_inputs=50))
    ttls = {"hs_codes": 3600, "rules": 1800, "assessments": 300}
    a, b = simulate(trace, ttls), simulate(trace, ttls)
    assert a == b
    assert a["trace_fingerprint"] == trace.fingerprint() and a["ttls_s"] == ttls


def test_wilson_interval_known_values() -> None:
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    assert wilson_interval(0, 0) is None
    with pytest.raises(ParameterError):
        wilson_interval(11, 10)


def test_sweep_curves_cover_the_grid() -> None:
    trace = generate_trace(WorkloadSpec(requests=1500, assessment_inputs=50))
    result = sweep(trace, [600, 60, 3600], entities=["hs_codes", "rules"])
    assert set(result["curves"]) == {"hs_codes", "rules"}
    assert [p["ttl_s"] for p in result["curves"]["hs_codes"]] == [60, 600, 3600]
    hs = result["curves"]["hs_codes"]
    assert hs[0]["hit_rate"] < hs[-1]["hit_rate"]
    per_entity = sweep(trace, {"rules": [30, 60]}, entities=["rules"])
    assert [p["ttl_s"] for p in per_entity["curves"]["rules"]] == [30, 60]


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda t: simulate(t, {"hs_code": 60}), "ttls entity"),
        (lambda t: simulate(t, {"hs_codes": 0}), "ttls['hs_codes']"),
        (lambda t: simulate(t, {"rules": -30}), "ttls['rules']"),
        (lambda t: simulate_entity(t, "verdicts", 60), "entity"),
        (
            lambda t: simulate(t, {"rules": 60}, invalidate_on_update=True, invalidation_scope="row"),
            "invalidation_scope",
        ),
        (lambda t: sweep(t, [60, 0]), "grid_s"),
        (lambda t: sweep(t, [60], entities=["hs_codes", "verdict"]), "entities"),
        (lambda t: sweep(t, {"rules": [60]}, entities=["hs_codes"]), "grid_s"),
    ],
)
def test_bad_input_is_one_clear_error_before_work(call: Any, name: str) -> None:
    trace = Trace.from_events(HS_EVENTS, KEYS, duration_s=30)
    with pytest.raises(ParameterError) as info:
        call(trace)
    assert info.value.name == name


CURVE = [
    {"ttl_s": 60, "hit_rate": 0.50, "max_stale_s": 40.0, "p95_stale_s": 30.0},
    {"ttl_s": 300, "hit_rate": 0.80, "max_stale_s": 250.0, "p95_stale_s": 200.0},
    {"ttl_s": 900, "hit_rate": 0.90, "max_stale_s": 800.0, "p95_stale_s": None},
    {"ttl_s": 3600, "hit_rate": 0.95, "max_stale_s": 3000.0, "p95_stale_s": 2000.0},
]


def test_recommend_ttl_picks_the_shortest_ttl_meeting_both_bounds() -> None:
    rec = recommend_ttl(CURVE, 0.85, 1000)
    assert rec["ttl_s"] == 900 and rec["point"]["hit_rate"] == 0.90
    assert recommend_ttl(CURVE, 0.8, 300)["ttl_s"] == 300
    assert recommend_ttl(list(reversed(CURVE)), 0.5, 1e9)["ttl_s"] == 60
    # None counts as 0 s of staleness (no stale read at that TTL).
    assert recommend_ttl(CURVE, 0.9, 100, metric="p95_stale_s")["ttl_s"] == 900


def test_recommend_ttl_explains_an_impossible_request() -> None:
    too_high = recommend_ttl(CURVE, 0.99, 1e9)
    assert too_high["ttl_s"] is None and "reaches hit rate 99%" in too_high["reason"]
    assert too_high["best_within_staleness"]["ttl_s"] == 3600
    too_stale = recommend_ttl(CURVE, 0.9, 500)
    assert too_stale["ttl_s"] is None and "max_stale_s > 500" in too_stale["reason"]
    assert too_stale["best_within_staleness"]["ttl_s"] == 300


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"target_hit_rate": 0}, "target_hit_rate"),
        ({"target_hit_rate": 1.2}, "target_hit_rate"),
        ({"max_staleness_s": -1}, "max_staleness_s"),
        ({"metric": "median"}, "metric"),
    ],
)
def test_recommend_ttl_rejects_bad_bounds(kwargs: dict[str, Any], name: str) -> None:
    args: dict[str, Any] = {"target_hit_rate": 0.8, "max_staleness_s": 60} | kwargs
    with pytest.raises(ParameterError) as info:
        recommend_ttl(CURVE, **args)
    assert info.value.name == name


def test_recommend_all_uses_per_entity_bounds() -> None:
    result = {"curves": {"hs_codes": CURVE, "rules": CURVE}}
    recs = recommend_all(result, {"hs_codes": 0.85, "rules": 0.5}, 1e9)
    assert recs["hs_codes"]["ttl_s"] == 900 and recs["rules"]["ttl_s"] == 60


def test_compare_sim_to_live_gives_absolute_differences_and_refuses_mismatches() -> None:
    trace = Trace.from_events(HS_EVENTS, KEYS, duration_s=30)
    sim = simulate(trace, {"hs_codes": 10})
    live: dict[str, Any] = {
        "trace": {"fingerprint": trace.fingerprint()},
        "ttls_s": {"hs_codes": 10.0},
        "invalidate_on_update": False,
        "entities": {
            "hs_codes": {
                "n": 7,
                "hit_rate": 3 / 7,
                "hit_rate_ci": list(wilson_interval(3, 7) or ()),
                "stale_share": 0.0,
            }
        },
    }
    cmp = compare_sim_to_live(sim, live)
    row = cmp["entities"]["hs_codes"]
    assert row["abs_diff"] == pytest.approx(1 / 7) and cmp["max_abs_diff"] == pytest.approx(1 / 7)
    assert row["sim_within_live_ci"] is True and row["stale_share_abs_diff"] == pytest.approx(1 / 7)
    for change in (
        {"trace": {"fingerprint": "0" * 64}},
        {"ttls_s": {"hs_codes": 11.0}},
        {"invalidate_on_update": True},
    ):
        other = copy.deepcopy(live) | change
        with pytest.raises(MeasurementError):
            compare_sim_to_live(sim, other)


TUNING_PARAMS: dict[str, Any] = {
    "output_dir": "reports/_scratch",
    "verdicts": 20_000,
    "seed": 42,
    "requests": 800,
    "duration_s": 7200.0,
    "warmup_s": 1800.0,
    "zipf_s": 1.1,
    "hs_updates_per_hour": 12.0,
    "rule_updates_per_hour": 2.0,
    "ttl_grid": [60, 300, 3600],
    "target_hit_rate": 0.8,
    "max_staleness_s": 900.0,
    "staleness_metric": "max_stale_s",
    "live_check_requests": 500,
    "compression": None,
    "interactive": False,
}


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"ttl_grid": [60, 0]}, "ttl_grid"),
        ({"ttl_grid": []}, "ttl_grid"),
        ({"target_hit_rate": 0}, "target_hit_rate"),
        ({"max_staleness_s": -1}, "max_staleness_s"),
        ({"staleness_metric": "p99"}, "staleness_metric"),
        ({"requests": 0}, "requests"),
        ({"hs_updates_per_hour": -2}, "hs_updates_per_hour"),
        ({"warmup_s": 9000}, "warmup_s"),
        ({"compression": 0}, "compression"),
        ({"interactive": "yes"}, "interactive"),
        ({"verdicts": 0}, "verdicts"),
    ],
)
def test_notebook_03_parameters_fail_with_one_clear_error(change: dict[str, Any], name: str) -> None:
    from psra_bench.cachesim.experiment import check_tuning_params

    with pytest.raises(ParameterError) as info:
        check_tuning_params(**(TUNING_PARAMS | change))
    assert info.value.name == name
    assert str(info.value).startswith(f"{name}=")


def test_tuning_recommends_and_tabulates() -> None:
    from psra_bench.cachesim.experiment import check_tuning_params, format_table, recommendation_table, sweep_table
    from psra_bench.cachesim.ttl_sim import tune

    params = check_tuning_params(**TUNING_PARAMS)
    assert params.grid_s == (60.0, 300.0, 3600.0)
    trace = generate_trace(params.spec.replace(assessment_inputs=50))
    tuning = tune(
        trace,
        {"hs_codes": 3600, "rules": 1800, "assessments": 300},
        params.grid_s,
        target_hit_rate=0.5,
        max_staleness_s=1e9,
    )
    rules = tuning["recommendations"]["rules"]
    curve = tuning["sweep"]["curves"]["rules"]
    assert rules["ttl_s"] == min(p["ttl_s"] for p in curve if p["hit_rate"] >= 0.5)
    # With invalidation nothing is ever stale; CachedDAL's scope never keeps more hits than no invalidation.
    for e in ("hs_codes", "rules", "assessments"):
        for plain, inv in zip(tuning["sweep"]["curves"][e], tuning["sweep_invalidate"]["curves"][e], strict=True):
            assert inv["stale_reads"] == 0 and inv["hits"] <= plain["hits"]
    text = format_table(recommendation_table(tuning))
    assert "Rule Lookups" in text and "Recommended TTL" in text
    assert len(sweep_table(tuning["sweep"], "t")["rows"]) == 3


def test_what_if_changes_skew_and_update_rates() -> None:
    from psra_bench.cachesim.experiment import what_if

    spec = WorkloadSpec(requests=1500, assessment_inputs=50)
    ttls = {"hs_codes": 3600.0, "rules": 1800.0, "assessments": 300.0}
    base = what_if(spec, ttls)
    flat = what_if(spec, ttls, zipf_s=0.0)
    busy = what_if(spec, ttls, rule_updates_per_hour=60.0)
    assert flat["entities"]["hs_codes"]["hit_rate"] < base["entities"]["hs_codes"]["hit_rate"]
    assert busy["trace"]["entities"]["rules"]["writes"] == 120
    assert busy["entities"]["rules"]["stale_reads"] > base["entities"]["rules"]["stale_reads"]
