"""Live cache replay through the real CacheService, CachedDAL, PostgreSQL and assessment engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from psra_bench.cachesim.experiment import (
    HIT_RATES,
    cache_hit_results,
    check_replay_params,
    format_table,
    hit_rate_table,
    live_reference,
)
from psra_bench.cachesim.replay import calibrate, repair_database, replay_live
from psra_bench.cachesim.ttl_sim import compare_sim_to_live, simulate
from psra_bench.cachesim.workload import Trace, WorkloadSpec, generate_trace
from psra_bench.db.reference import hs_rows
from psra_bench.exceptions import ParameterError
from psra_bench.infra.postgres import create_pool
from psra_bench.settings import Settings
from psra_bench.workbench import save_results

HS, RULE = "010121", "CETA-HS39-001"
TTLS = {"hs_codes": 10.0, "rules": 10.0, "assessments": 10.0}
# With a 10 s TTL (2.5 real seconds at compression 4), by hand:
#   HS: 0 miss, 5 hit, (6: row updated), 7 hit (stale 1 s), 12 miss (expired at 10), 13 hit
#   rule: 1 miss, 2 hit
EVENTS = [
    (0, "hs_codes", "read", HS),
    (1, "rules", "read", RULE),
    (2, "rules", "read", RULE),
    (5, "hs_codes", "read", HS),
    (6, "hs_codes", "write", HS),
    (7, "hs_codes", "read", HS),
    (12, "hs_codes", "read", HS),
    (13, "hs_codes", "read", HS),
]


def hand_trace() -> Trace:
    return Trace.from_events(EVENTS, {"hs_codes": [HS], "rules": [RULE]}, duration_s=15)


def replay_keys(client: redis.Redis, settings: Settings) -> list[bytes]:
    return list(client.scan_iter(match=settings.cache_namespace + "cache-replay-*", count=1000))


def verdict_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM psra_verdicts").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(autouse=True)
def verdicts_before(conn: psycopg.Connection[Any]) -> int:
    """Other tests may have written verdicts into the shared session database; a replay must add none."""
    return verdict_count(conn)


def assert_clean(conn: psycopg.Connection[Any], verdicts_before: int) -> None:
    reference = {r.code: r.description for r in hs_rows()}
    row = conn.execute("SELECT description FROM hs_codes WHERE code = %s", (HS,)).fetchone()
    assert row is not None and row[0] == reference[HS]
    marked = conn.execute("SELECT count(*) FROM psra_rules WHERE title LIKE '%%psra-bench replay%%'").fetchone()
    assert marked is not None and marked[0] == 0
    assert verdict_count(conn) == verdicts_before


def test_hand_made_trace_gives_the_hand_computed_answer(
    verdicts_before: int, settings: Settings, conn: psycopg.Connection[Any], redis_client: redis.Redis
) -> None:
    live = replay_live(settings, hand_trace(), ttls=TTLS, compression=4)
    hs, rule = live["entities"]["hs_codes"], live["entities"]["rules"]
    assert (hs["n"], hs["hits"], hs["misses"]) == (5, 3, 2)
    assert hs["stale_reads"] == 1 and hs["max_stale_s"] == pytest.approx(1.0)
    assert (rule["hits"], rule["misses"], rule["stale_reads"]) == (1, 1, 0)
    assert live["consistency_errors"] == 0 and live["cache_errors"] == 0
    assert hs["latency"]["hit"]["n"] == 3 and hs["latency"]["miss"]["n"] == 2
    cmp = compare_sim_to_live(simulate(hand_trace(), TTLS), live)
    assert cmp["max_abs_diff"] == 0
    assert replay_keys(redis_client, settings) == []
    assert_clean(conn, verdicts_before)


def test_invalidation_on_update_trades_staleness_for_a_miss(
    verdicts_before: int, settings: Settings, conn: psycopg.Connection[Any]
) -> None:
    live = replay_live(settings, hand_trace(), ttls=TTLS, compression=4, invalidate_on_update=True)
    hs = live["entities"]["hs_codes"]
    # CachedDAL.update_hs_codes drops hs:* at 6: 7 miss (fill, expires 17), 12 hit, 13 hit.
    assert (hs["hits"], hs["misses"], hs["stale_reads"]) == (3, 2, 0)
    assert live["invalidation_scope"] == "entity"
    sim = simulate(hand_trace(), TTLS, invalidate_on_update=True)
    assert compare_sim_to_live(sim, live)["max_abs_diff"] == 0
    assert_clean(conn, verdicts_before)


def test_generated_trace_through_the_real_assessment_path(
    verdicts_before: int, settings: Settings, conn: psycopg.Connection[Any], redis_client: redis.Redis, tmp_path: Path
) -> None:
    spec = WorkloadSpec(
        requests=220,
        duration_s=300,
        warmup_s=60,
        assessment_inputs=25,
        zipf_s=1.3,
        updates_per_hour={"hs_codes": 120, "rules": 120},
        seed=3,
    )
    trace = generate_trace(spec)
    ttls = {"hs_codes": 60.0, "rules": 60.0, "assessments": 20.0}
    live = replay_live(settings, trace, ttls=ttls, compression=50)
    summary = trace.summary()["entities"]
    for e, r in live["entities"].items():
        assert r["n"] == summary[e]["reads_after_warmup"] == r["hits"] + r["misses"]
        assert r["reads"] == summary[e]["reads"]
    assessments = live["entities"]["assessments"]
    assert live["verdicts_written"] >= assessments["misses"] > 0
    assert live["cleaned_after"]["verdicts_deleted"] == live["verdicts_written"]
    assert live["consistency_errors"] == 0 and live["cache_errors"] == 0
    # Only scheduling jitter separates the live run from the simulation of the same trace.
    cmp = compare_sim_to_live(simulate(trace, ttls), live)
    assert cmp["max_abs_diff"] <= 0.1
    table = hit_rate_table(live)
    assert [row[0] for row in table["rows"]] == ["HS Code Lookups", "Rule Lookups", "Assessment Results"]
    assert "Cache Hit Rates" in format_table(table)
    # Notebook 03 finds this replay in the results folder and simulates the same trace again.
    check = {"source": "test", "comparison": cmp, "realized_clock_sim": live["realized_clock_sim"]}
    results = cache_hit_results(live, check, settings=settings, dataset={"database": "test"}, params={})
    save_results(tmp_path, HIT_RATES, results)
    again = live_reference(settings, str(tmp_path), spec)
    assert again["source"].startswith(HIT_RATES) and again["comparison"] == cmp
    assert [t["title"] for t in results["tables"]][0] == "Cache Hit Rates (after warm-up)"
    assert replay_keys(redis_client, settings) == []
    assert_clean(conn, verdicts_before)


def test_calibration_times_real_reads_and_leaves_nothing_behind(
    verdicts_before: int, settings: Settings, conn: psycopg.Connection[Any], redis_client: redis.Redis
) -> None:
    trace = generate_trace(WorkloadSpec(requests=100, assessment_inputs=10, seed=5))
    with create_pool(settings) as pool:
        result = calibrate(settings, trace, pool, per_entity=3)
    assert set(result["miss_s"]) == set(result["hit_s"]) == {"hs_codes", "rules", "assessments"}
    assert all(v > 0 for v in result["miss_s"].values()) and result["expected_seconds"] > 0
    assert replay_keys(redis_client, settings) == []
    assert_clean(conn, verdicts_before)


def test_repair_restores_rows_a_crashed_replay_left_marked(verdicts_before: int, conn: psycopg.Connection[Any]) -> None:
    conn.execute("UPDATE hs_codes SET description = description || ' [psra-bench replay rev 3]' WHERE code = %s", (HS,))
    conn.execute("UPDATE psra_rules SET title = title || ' [psra-bench replay rev 1]' WHERE rule_id = %s", (RULE,))
    done = repair_database(conn)
    assert done["hs_codes_restored"] == 1 and done["rules_restored"] == 1
    assert_clean(conn, verdicts_before)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"ttls": {"hs_codes": 10, "rules": 10, "assessment": 10}}, "ttls entity"),
        ({"ttls": {"hs_codes": 0, "rules": 10, "assessments": 10}}, "ttls['hs_codes']"),
        ({"ttls": {"hs_codes": 10, "rules": 10}}, "ttls"),
        ({"ttls": TTLS, "compression": 0}, "compression"),
        ({"ttls": TTLS, "compression": 1000}, "compression"),
    ],
)
def test_bad_arguments_fail_before_any_work(
    settings: Settings, redis_client: redis.Redis, kwargs: dict[str, Any], name: str
) -> None:
    with pytest.raises(ParameterError) as info:
        replay_live(settings, hand_trace(), **kwargs)
    assert info.value.name == name
    assert replay_keys(redis_client, settings) == []


def test_a_hand_made_trace_with_assessments_is_refused(settings: Settings) -> None:
    trace = Trace.from_events([(0, "assessments", "read", "A")], {"assessments": ["A"]}, duration_s=10)
    with pytest.raises(ParameterError, match="generate_trace"):
        replay_live(settings, trace, ttls=TTLS, compression=1)


REPLAY_PARAMS: dict[str, Any] = {
    "output_dir": "reports/_scratch",
    "verdicts": 20_000,
    "seed": 42,
    "requests": 1500,
    "duration_s": 7200.0,
    "warmup_s": 1800.0,
    "zipf_s": 1.1,
    "hs_updates_per_hour": 12.0,
    "rule_updates_per_hour": 2.0,
    "ttls": None,
    "compression": None,
    "invalidate_on_update": False,
}


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"ttls": {"hs_code": 60}}, "ttls entity"),
        ({"ttls": {"rules": 0}}, "ttls['rules']"),
        ({"ttls": {"assessments": -300}}, "ttls['assessments']"),
        ({"invalidate_on_update": "no"}, "invalidate_on_update"),
        ({"compression": -1}, "compression"),
        ({"rule_updates_per_hour": "often"}, "rule_updates_per_hour"),
        ({"zipf_s": -1}, "zipf_s"),
        ({"output_dir": ""}, "output_dir"),
        ({"seed": -3}, "seed"),
    ],
)
def test_notebook_02_parameters_fail_with_one_clear_error(change: dict[str, Any], name: str) -> None:
    with pytest.raises(ParameterError) as info:
        check_replay_params(**(REPLAY_PARAMS | change))
    assert info.value.name == name
    assert str(info.value).startswith(f"{name}=")


def test_notebook_ttls_override_the_configured_ones(settings: Settings) -> None:
    params = check_replay_params(**(REPLAY_PARAMS | {"ttls": {"assessments": 600}}))
    ttls = params.ttls_for(settings)
    assert ttls == {"hs_codes": float(settings.ttl.hs_codes), "rules": float(settings.ttl.rules), "assessments": 600.0}
