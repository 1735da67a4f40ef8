"""Experiment 01 (query latency before/after the migration) on a small seeded database.

One module-scoped database with ~5,000 verdicts; each run uses tiny iterations, so the file
stays fast. Nothing here asserts a time: only structure, plan facts, index-scan counts and the
migration state the run leaves behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from psra_bench.db.dal import QUERIES
from psra_bench.db.migrate import migrate_down, migrate_up, migration_indexes, migration_status
from psra_bench.exceptions import MeasurementError, ParameterError
from psra_bench.infra import postgres as db
from psra_bench.latency.experiment import run_query_latency, three_way_schedule
from psra_bench.latency.params import QueryLatencyParams
from psra_bench.latency.patterns import (
    QUERY_PATTERNS,
    SPEC_LABELS,
    generate_params,
    load_param_source,
    resolve_queries,
)
from psra_bench.latency.tables import format_table, latency_table
from psra_bench.measure.stats import FASTER, NO_CHANGE, SLOWER
from psra_bench.settings import Settings

VERDICTS = 5000
NEW_INDEXES = {s.name for s in migration_indexes()}


@pytest.fixture(scope="module")
def seeded(settings: Settings, make_seeded_database: Callable[..., str]) -> Iterator[Settings]:
    """Settings pointing at a fresh database seeded with ~5k verdicts (baseline indexes)."""
    dsn = make_seeded_database(VERDICTS, seed=7, tenants=40)
    yield settings.replace(db_dsn=dsn)


def _state(s: Settings) -> tuple[str, int]:
    assert s.db_dsn is not None
    with db.connect(s.db_dsn, autocommit=True) as conn:
        return migration_status(conn).state, db.index_count(conn)


def _run(s: Settings, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "iterations": 3,
        "rounds": 1,
        "warmup": 1,
        "seed": 3,
        "write_batches": 2,
        "write_batch_rows": 20,
    }
    return run_query_latency(s, **(args | kw))


def test_spec_rows_map_to_dal_queries() -> None:
    assert len(SPEC_LABELS) == 6
    assert {"tenant_dashboard", "trade_route_report"} <= set(QUERY_PATTERNS)
    for name, pattern in QUERY_PATTERNS.items():
        assert name in QUERIES and pattern.sql == QUERIES[name]
        assert pattern.dal_method == f"PostgresDAL.{name}"


def _heap_pages(s: Settings) -> tuple[int, int]:
    assert s.db_dsn is not None
    with db.connect(s.db_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*), pg_relation_size('psra_verdicts') FROM psra_verdicts").fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


def test_full_run_from_baseline(seeded: Settings) -> None:
    assert _state(seeded) == ("not applied", 20)
    heap_before = _heap_pages(seeded)
    messages: list[str] = []
    res = _run(seeded, progress=messages.append)
    json.dumps(res)  # JSON-ready
    assert _state(seeded) == ("not applied", 20)
    assert res["migration"] | {"switches": None} == {
        "initial_state": "not applied",
        "final_state": "not applied",
        "restored": True,
        "index_count_start": 20,
        "index_count_end": 20,
        "switches": None,
    }
    # baseline, spec, then the recommended set chosen from those two rounds; restored to the baseline
    assert [s["action"] for s in res["migration"]["switches"]] == ["up", "subset", "down"]
    assert res["method"]["schedule"] == "ABC"
    assert {r["operation"] for r in res["table"] if r["spec_row"]} == set(SPEC_LABELS)
    assert [r["query"] for r in res["table"]] == list(QUERY_PATTERNS)
    for name, q in res["queries"].items():
        assert q["before"]["n"] == q["after"]["n"] == 3
        assert len(q["before"]["samples_ms"]) == 3
        assert q["before"]["p50_ci"][0] <= q["before"]["p50"] <= q["before"]["p50_ci"][1]
        assert q["verdict"] in (FASTER, SLOWER, NO_CHANGE)
        assert q["decision"]["method"] == "mann-whitney"
        # "before" really ran without the migration's indexes, "after" with them
        assert not set(q["plans"]["before"]["index_names"]) & NEW_INDEXES, name
        assert not set(q["index_scans"]["before"]) & NEW_INDEXES, name
        assert len(q["round_medians"]["p50_ms"]) == 3  # one per round: A, B, C
        assert q["capped_rounds"] == {"before": 0, "after": 0}
    dup = res["queries"]["duplicate_assessment"]
    assert "idx_psra_verdicts_input_hash" in dup["plans"]["after"]["index_names"]
    # every timed call scanned the index once: the stats flush made the deltas visible
    assert dup["index_scans"]["after"]["idx_psra_verdicts_input_hash"] >= 3
    usage = {u["index"]: u for u in res["index_usage"]}
    assert len(usage) == 46 and sum(u["new"] for u in usage.values()) == 26
    assert "duplicate_assessment" in usage["idx_psra_verdicts_input_hash"]["used_by_after"]
    assert usage["idx_psra_verdicts_input_hash"]["scans_before"] == 0
    sizes = res["sizes"]
    assert sizes["index_count_before"] == 20 and sizes["index_count_after"] == 46
    assert sizes["new_index_bytes"] > 0 and set(sizes["build_seconds"]) == NEW_INDEXES
    wc = res["write_cost"]
    assert wc["batches"] == {"before": 2, "after": 2} and wc["index_counts"] == {"before": 20, "after": 46}
    assert wc["before"]["median_rows_per_s"] > 0 and wc["ratio"] > 0
    assert res["fingerprint"]["dataset"]["scale"] == VERDICTS
    assert "password" not in json.dumps(res["fingerprint"]).lower() or "***" in json.dumps(res["fingerprint"])
    assert any("round 3/3" in m for m in messages)
    _check_audit_and_three_way(res)
    text = format_table(res)
    assert all(label[:46] in text for label in SPEC_LABELS)
    # rolled-back inserts were vacuumed away: the same rows, the heap grown at most by the batches' pages
    rows, heap = _heap_pages(seeded)
    assert rows == heap_before[0] == VERDICTS and heap_before[1] <= heap < 2 * heap_before[1]
    assert res["vacuum_seconds"] is not None
    assert len(res["round_vacuum_seconds"]) == 3  # after every round's batches: each round starts clean
    assert dup["plan_changed"] and res["table"][5]["plan_changed"]
    # the table keeps the spec's order after a JSON round trip (save_results sorts keys)
    reloaded = json.loads(json.dumps(res, sort_keys=True))
    assert [r["query"] for r in latency_table(reloaded)] == list(QUERY_PATTERNS)


def test_run_from_migrated_state_restores_it(seeded: Settings) -> None:
    assert seeded.db_dsn is not None
    migrate_up(seeded.db_dsn)
    try:
        res = _run(
            seeded,
            queries="duplicate_assessment,recent_verdicts",
            rounds=1,
            iterations=5,
            write_batches=0,
            path="dal",
            budget_s=1e-6,  # every round is capped after its 2 minimum calls
        )
        assert _state(seeded) == ("applied", 46)
        assert res["method"]["schedule"] == "BAC"  # starts in the state it found
        assert [s["action"] for s in res["migration"]["switches"]] == ["down", "subset", "up"]
        # built all 26 only when restoring: the audit still carries the build times
        assert all(r["build_seconds"] is not None for r in res["audit"] if r["new"])
        assert list(res["queries"]) == ["duplicate_assessment", "recent_verdicts"]
        assert res["queries"]["recent_verdicts"]["after"]["n"] == 2
        assert res["queries"]["recent_verdicts"]["capped_rounds"] == {"before": 1, "after": 1}
        assert res["write_cost"] is None
        assert res["method"]["path"] == "dal"
    finally:
        migrate_down(seeded.db_dsn)


@pytest.mark.parametrize("at", ["spec (migration applied),", "recommended set,"])
def test_interrupted_run_restores_state(seeded: Settings, at: str) -> None:
    def interrupt(message: str) -> None:
        if at in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(seeded, queries=["hs_search"], progress=interrupt)
    assert _state(seeded) == ("not applied", 20)
    with db.connect(seeded.db_dsn or "", autocommit=True) as conn:  # the bookkeeping is clean as well
        assert conn.execute("SELECT count(*) FROM psra_bench.schema_migrations").fetchone() == (0,)


def test_two_sides_only_when_asked(seeded: Settings) -> None:
    res = _run(seeded, queries=["duplicate_assessment"], recommend=False, write_batches=0)
    assert res["method"]["schedule"] == "AB" and res["recommended"] is None
    assert [s["action"] for s in res["migration"]["switches"]] == ["up", "down"]
    assert len(res["audit"]) == 46  # audited from every round


def test_three_way_schedule() -> None:
    assert three_way_schedule(1) == tuple("ABC")
    assert three_way_schedule(2) == tuple("ABCCBA")
    assert three_way_schedule(3, "B") == tuple("BACCABBAC")
    for r in (2, 4):  # every side has the same mean position: a linear drift cancels out
        order = three_way_schedule(r)
        means = {side: sum(i for i, s in enumerate(order) if s == side) / r for side in "ABC"}
        assert len(set(means.values())) == 1, order
    with pytest.raises(ParameterError, match="first"):
        three_way_schedule(2, "C")


def _check_audit_and_three_way(res: dict[str, Any]) -> None:
    audit = {r["index"]: r for r in res["audit"]}
    assert len(audit) == 46 and sum(r["new"] for r in audit.values()) == 26
    assert {r["recommendation"] for r in audit.values()} <= {"keep", "drop", "review"}
    assert all(r["reason"] for r in audit.values())
    for r in audit.values():  # constraints are never dropped, and every migration index has its build time
        if r["constraint"]:
            assert r["recommendation"] == "keep", r
        if r["new"]:
            assert r["build_seconds"] is not None and r["size_bytes"] > 0
        else:
            assert r["recommendation"] != "drop", r  # the baseline is in all three sets: dropping it is untested
    # psra_rules has 13 rows: every migration index on it goes, for that reason
    for r in audit.values():
        if r["new"] and r["table"] == "psra_rules":
            assert r["recommendation"] == "drop" and "tiny" in r["reason"], r
    # the GIN indexes on citations/reasons serve no measured pattern
    assert audit["idx_psra_verdicts_citations"]["recommendation"] == "drop"
    assert "not used" in audit["idx_psra_verdicts_citations"]["reason"]
    # a baseline index whose columns lead a kept migration index is flagged as covered
    if audit["idx_psra_verdicts_tenant_created"]["recommendation"] == "keep":
        assert audit["idx_psra_verdicts_tenant_id"]["duplicate_of"] in {
            "idx_psra_verdicts_tenant_created", "idx_psra_verdicts_tenant_status", "idx_psra_verdicts_tenant_effective"
        }  # fmt: skip
    rec = res["recommended"]
    keep = [n for n, r in audit.items() if r["new"] and r["recommendation"] == "keep"]
    assert rec["indexes"] == sorted(keep)
    assert rec["sizes"]["index_count"] == {"baseline": 20, "spec": 46, "recommended": 20 + len(keep)}
    b = rec["sizes"]["index_bytes"]
    assert b["baseline"] <= b["recommended"] < b["spec"]
    for q in rec["queries"].values():
        assert q["baseline"]["n"] == q["spec"]["n"] == q["recommended"]["n"] == 3
        assert q["as_fast_as_spec"] == (q["recommended_vs_spec"]["verdict"] != SLOWER)
        # side C really ran on the recommended set: its plans name no dropped migration index
        assert not set(q["plan_recommended"]) & (NEW_INDEXES - set(keep))
    w = rec["write"]
    assert w["batches"] == {"baseline": 2, "spec": 2, "recommended": 2}
    assert w["recommended"]["median_rows_per_s"] > 0


def test_params_are_deterministic_varied_and_real(seeded: Settings) -> None:
    assert seeded.db_dsn is not None
    with db.connect(seeded.db_dsn, autocommit=True) as conn:
        source = load_param_source(conn)
        for name in QUERY_PATTERNS:
            first = generate_params(name, source, 12, seed=1)
            assert first == generate_params(name, source, 12, seed=1)
            if name != "recent_verdicts":  # a fixed 100-row query
                assert len({json.dumps(p, sort_keys=True, default=str) for p in first}) > 1, name
                assert first != generate_params(name, source, 12, seed=1, slot=1)
            for p in first[:3]:
                conn.execute(QUERIES[name], p).fetchall()
        hits = 0
        for p in generate_params("duplicate_assessment", source, 10, seed=2):  # inputs that exist
            hits += conn.execute(QUERIES["duplicate_assessment"], p).fetchone() is not None
        assert hits == 10


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"queries": "hs_search,no_such_query"}, "queries"),
        ({"queries": []}, "queries"),
        ({"queries": 5}, "queries"),
        ({"iterations": 0}, "iterations"),
        ({"rounds": 0}, "rounds"),
        ({"warmup": -1}, "warmup"),
        ({"write_batches": 1, "rounds": 1}, "write_batches"),
        ({"alpha": 1.5}, "alpha"),
        ({"factor": 0.5}, "factor"),
        ({"dataset": 42}, "dataset"),
        ({"path": "orm"}, "path"),
        ({"budget_s": 0}, "budget_s"),
        ({"recommend": "yes"}, "recommend"),
        ({"rounds": True}, "rounds"),  # a bool is never a number
        ({"no_such_parameter": 1}, "parameter"),
    ],
)
def test_bad_parameters_fail_before_any_work(settings: Settings, kwargs: dict[str, Any], name: str) -> None:
    # A database that does not exist: validation must raise before anything connects.
    assert settings.db_dsn is not None
    nowhere = settings.replace(db_dsn=db.with_database(settings.db_dsn, "psra_no_such_db"))
    with pytest.raises(ParameterError) as info:
        run_query_latency(nowhere, **({"iterations": 2} | kwargs))
    assert info.value.name == name
    assert str(info.value).count(".") >= 1 and "not valid" in str(info.value)


def test_resolve_queries() -> None:
    assert resolve_queries(None) == resolve_queries("all") == list(QUERY_PATTERNS)
    assert resolve_queries(" hs_search , recent_verdicts,hs_search") == ["hs_search", "recent_verdicts"]
    with pytest.raises(ParameterError, match="'nope' is not valid"):
        resolve_queries(["nope"])


def test_partial_migration_is_refused(seeded: Settings) -> None:
    assert seeded.db_dsn is not None
    spec = migration_indexes()[0]
    with db.connect(seeded.db_dsn, autocommit=True) as conn:
        conn.execute(spec.create.encode())
        try:
            with pytest.raises(MeasurementError, match="'partial'"):
                run_query_latency(seeded, iterations=2)
            assert migration_status(conn).state == "partial"  # untouched
        finally:
            conn.execute(spec.drop.encode())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"verdicts": 0}, "verdicts"),
        ({"verdicts": -5}, "verdicts"),
        ({"database": "postgresql://u:secret@h/db"}, "database"),
        ({"output_dir": ""}, "output_dir"),
        ({"queries": "nope"}, "queries"),
        ({"iterations": 0}, "iterations"),
    ],
)
def test_notebook_parameters(kwargs: dict[str, Any], name: str) -> None:
    good: dict[str, Any] = {"verdicts": 100, "database": "psra_bench_report", "output_dir": "reports/_scratch"}
    assert QueryLatencyParams.validated(good | {"iterations": 2}).query_names == list(QUERY_PATTERNS)
    with pytest.raises(ParameterError) as info:
        QueryLatencyParams.validated(good | kwargs)
    assert info.value.name == name
    assert "secret" not in str(info.value)
