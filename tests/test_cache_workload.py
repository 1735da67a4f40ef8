"""Cache workload traces: determinism, shape, real keys and valid assessment inputs, parameter errors."""

from __future__ import annotations

import numpy as np
import pytest

from psra_bench.cachesim.workload import (
    ENTITIES,
    READ,
    WRITE,
    WorkloadSpec,
    assessment_inputs,
    check_ttls,
    generate_trace,
    replay_tenant_ids,
    zipf_probabilities,
)
from psra_bench.db.reference import hs_rows, rules
from psra_bench.exceptions import ParameterError
from psra_bench.psra.assessment import assess, default_rules

SMALL = WorkloadSpec(requests=3000, assessment_inputs=60, seed=7)


def test_same_spec_gives_the_same_trace_and_another_seed_another() -> None:
    a, b = generate_trace(SMALL), generate_trace(SMALL.replace())
    assert a.fingerprint() == b.fingerprint()
    for name in ("t", "entity", "op", "key", "depends_on"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    c = generate_trace(SMALL, seed=8)
    assert c.fingerprint() != a.fingerprint()
    assert not np.array_equal(a.key, c.key)


def test_spec_round_trips_through_its_dict() -> None:
    spec = SMALL.replace(zipf_s=0.7, updates_per_hour={"hs_codes": 5.0, "rules": 1.0})
    again = WorkloadSpec.from_dict(spec.to_dict())
    assert generate_trace(again).fingerprint() == generate_trace(spec).fingerprint()


def test_trace_shape_counts_and_rates() -> None:
    spec = SMALL.replace(updates_per_hour={"hs_codes": 30.0, "rules": 6.0})
    trace = generate_trace(spec)
    hours = spec.duration_s / 3600
    reads, writes = trace.op == READ, trace.op == WRITE
    assert int(reads.sum()) == spec.requests
    assert int((writes & (trace.entity == ENTITIES.index("hs_codes"))).sum()) == round(30 * hours)
    assert int((writes & (trace.entity == ENTITIES.index("rules"))).sum()) == round(6 * hours)
    assert not (writes & (trace.entity == ENTITIES.index("assessments"))).any()
    assert np.all(np.diff(trace.t) >= 0) and trace.t[0] >= 0 and trace.t[-1] < spec.duration_s
    for i, e in enumerate(ENTITIES):
        mine = trace.entity == i
        assert trace.key[mine].min() >= 0 and trace.key[mine].max() < len(trace.keys[e])
    summary = trace.summary()
    assert summary["reads"] == spec.requests and summary["writes"] == round(36 * hours)
    assert summary["write_share"] == pytest.approx(summary["writes"] / summary["events"], abs=1e-6)
    assert summary["entities"]["hs_codes"]["updates_per_hour"] == pytest.approx(round(30 * hours) / hours)
    assert summary["fingerprint"] == trace.fingerprint()


def test_keys_are_the_reference_data() -> None:
    trace = generate_trace(SMALL)
    assert set(trace.keys["hs_codes"]) == {r.code for r in hs_rows() if r.level == 6}
    assert trace.keys["rules"] == tuple(r["rule_id"] for r in rules())
    assert len(set(trace.keys["assessments"])) == SMALL.assessment_inputs


def test_read_skew_follows_zipf() -> None:
    skewed = generate_trace(SMALL, zipf_s=1.5, requests=6000)
    flat = generate_trace(SMALL, zipf_s=0.0, requests=6000)

    def top_share(trace: object) -> float:
        mask = (trace.entity == 0) & (trace.op == READ)  # type: ignore[attr-defined]
        counts = np.bincount(trace.key[mask])  # type: ignore[attr-defined]
        return float(counts.max() / counts.sum())

    expected = zipf_probabilities(len(skewed.keys["hs_codes"]), 1.5)[0]
    assert top_share(skewed) == pytest.approx(expected, rel=0.15)
    assert top_share(flat) < 0.01


def test_zipf_probabilities_known_values() -> None:
    assert zipf_probabilities(3, 1.0) == pytest.approx([6 / 11, 3 / 11, 2 / 11])
    assert zipf_probabilities(4, 0.0) == pytest.approx([0.25] * 4)


def test_assessment_inputs_are_valid_distinct_and_land_on_their_keys() -> None:
    inputs = assessment_inputs(40, 11)
    assert assessment_inputs(40, 11) == inputs
    assert len({i.key for i in inputs}) == 40
    tenants = set(replay_tenant_ids())
    for item in inputs[:15]:
        verdict = assess(item.request, default_rules())
        key = "|".join(
            (verdict.rule_id or "none", verdict.hs_code, verdict.origin_country, verdict.destination_country)
        )
        assert key == item.key and verdict.rule_id == item.rule_id
        assert item.request["tenant_id"] in tenants


def test_assessments_depend_on_the_rule_they_select() -> None:
    trace = generate_trace(SMALL)
    for a, r in zip(trace.assessments, trace.depends_on.tolist(), strict=True):
        assert trace.keys["rules"][r] == a.rule_id


@pytest.mark.parametrize(
    ("changes", "name", "value"),
    [
        ({"requests": 0}, "requests", 0),
        ({"read_mix": {"hs_codes": 1.0, "verdict": 1.0}}, "read_mix entity", "verdict"),
        ({"read_mix": {"hs_codes": -1.0}}, "read_mix['hs_codes']", -1.0),
        ({"updates_per_hour": {"assessments": 3.0}}, "updates_per_hour entity", "assessments"),
        ({"updates_per_hour": {"rules": float("nan")}}, "updates_per_hour['rules']", None),
        ({"warmup_s": 7200.0}, "warmup_s", 7200.0),
        ({"duration_s": 0}, "duration_s", 0),
        ({"zipf_s": -0.5}, "zipf_s", -0.5),
        ({"seed": -1}, "seed", -1),
    ],
)
def test_bad_spec_is_one_clear_error(changes: dict[str, object], name: str, value: object) -> None:
    with pytest.raises(ParameterError) as info:
        generate_trace(SMALL, **changes)
    assert info.value.name == name
    if value is not None:
        assert info.value.value == value
    assert str(info.value).startswith(f"{name}=")


def test_unknown_spec_key_is_refused() -> None:
    with pytest.raises(ParameterError, match="ttl_hs"):
        WorkloadSpec.from_dict({"ttl_hs": 3})


def test_check_ttls_names_unknown_entities_and_bad_ttls() -> None:
    assert check_ttls({"hs_codes": 60, "rules": 1.5}) == {"hs_codes": 60.0, "rules": 1.5}
    with pytest.raises(ParameterError, match="'verdictz' is not valid: one of hs_codes, rules, assessments"):
        check_ttls({"verdictz": 60})
    for bad in (0, -5, float("inf"), True, "60"):
        with pytest.raises(ParameterError, match=r"ttls\['rules'\]"):
            check_ttls({"hs_codes": 60, "rules": bad})  # type: ignore[dict-item]
    with pytest.raises(ParameterError):
        check_ttls({})


def test_hand_made_traces_are_checked() -> None:
    from psra_bench.cachesim.workload import Trace

    keys = {"hs_codes": ["010121"], "rules": ["R1"], "assessments": ["A1"]}
    trace = Trace.from_events(
        [(0, "hs_codes", "read", "010121"), (1, "rules", "write", "R1")], keys, duration_s=10, depends_on={"A1": "R1"}
    )
    assert len(trace) == 2 and trace.depends_on.tolist() == [0]
    bad_events = [
        ([(0, "assessments", "write", "A1")], "events[0] entity"),
        ([(0, "hs_codes", "read", "999999")], "events[0] key"),
        ([(0, "hs_codes", "delete", "010121")], "events[0] op"),
        ([(5, "hs_codes", "read", "010121"), (4, "hs_codes", "read", "010121")], "events[1] t"),
        ([(11, "hs_codes", "read", "010121")], "events[0] t"),
    ]
    for events, name in bad_events:
        with pytest.raises(ParameterError) as info:
            Trace.from_events(events, keys, duration_s=10)
        assert info.value.name == name
