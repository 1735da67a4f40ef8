"""What one cache read costs on the wire: a hit is one round trip, a read-through miss three, counters included;
an assessment hit is one cache read, with no rules lookup and no evaluation.

Round trips are counted where they happen, on the client's connections
(:func:`psra_bench.measure.roundtrips.counting_client`): a pipeline is one. Every test here sets
``stats_flush_interval=0``, so a flush of the counters is due at every operation and has to travel
with it; the counters' arrival in the shared hash is checked too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from psra_bench.cache import LOCK_PREFIX, AsyncCacheService, CachedDAL, CacheService
from psra_bench.db.dal import PostgresDAL
from psra_bench.infra import postgres as db
from psra_bench.infra.embedded import start_valkey, stop_valkey
from psra_bench.measure.roundtrips import RoundTrips, counting_async_client, counting_client
from psra_bench.psra import service as psra_service
from psra_bench.psra.assessment import assess
from psra_bench.psra.service import assess_with_cache
from psra_bench.settings import Settings

ROW = {"code": "847130", "description": "Portable automatic data-processing machines"}


@pytest.fixture
def counted(namespaced_settings: Settings) -> Iterator[tuple[CacheService, RoundTrips]]:
    """A cache on the test server whose client counts its round trips; every operation is due to flush."""
    assert namespaced_settings.redis is not None
    client, trips = counting_client(namespaced_settings.redis.client_kwargs())
    service = CacheService(namespaced_settings, client=client, stats_flush_interval=0)
    yield service, trips
    service.close()
    client.close()


def _cost(trips: RoundTrips, op: Callable[[], object]) -> int:
    mark = trips.sent
    op()
    return trips.since(mark)


def test_a_hit_is_one_round_trip_with_the_counters_in_it(counted: tuple[CacheService, RoundTrips]) -> None:
    cache, trips = counted
    cache.get_or_compute("hs:code:847130", lambda: ROW)  # the miss that fills it (and opens the connection)
    costs = [
        _cost(trips, lambda: cache.get_or_compute("hs:code:847130", lambda: pytest.fail("recomputed")))
        for _ in range(5)
    ]
    assert costs == [1] * 5
    shared = cache.cluster_stats()
    assert shared is not None and shared["hs_codes"]["hits"] >= 4  # the counters did reach the shared hash


def test_a_miss_is_three_round_trips_and_leaves_no_lock(counted: tuple[CacheService, RoundTrips]) -> None:
    cache, trips = counted
    cache.ping()
    keys = [f"hs:code:{uuid.uuid4().hex[:6]}" for _ in range(5)]
    costs = [_cost(trips, lambda k=k: cache.get_or_compute(k, lambda: ROW)) for k in keys]  # type: ignore[misc]
    assert costs == [3] * 5  # GET (+ counters), LEAD (look again, lock, generation), FINISH (set, release)
    assert all(cache.get(k) == ROW for k in keys)
    assert not any(cache.exists(LOCK_PREFIX + k) for k in keys)
    assert cache.stats()["entities"]["hs_codes"]["sets"] == 5


def test_an_invalidation_during_the_computation_keeps_its_value_out(counted: tuple[CacheService, RoundTrips]) -> None:
    """The generation read by LEAD before computing voids FINISH's set when the entity is invalidated meanwhile."""
    cache, _ = counted

    def compute_while_invalidated() -> dict[str, str]:
        cache.invalidate_hs_codes()
        return ROW

    assert cache.get_or_compute("hs:code:010121", compute_while_invalidated) == ROW
    assert cache.exists("hs:code:010121") is False
    assert cache.stats()["entities"]["hs_codes"]["stale"] == 1
    assert cache.get_or_compute("hs:code:010121", lambda: ROW) == ROW  # the next one stores
    assert cache.exists("hs:code:010121") is True


async def test_the_asyncio_face_costs_the_same(namespaced_settings: Settings) -> None:
    """The API's face: one round trip per hit, three per miss, counters included."""
    assert namespaced_settings.redis is not None
    client, trips = counting_async_client(namespaced_settings.redis.client_kwargs())
    cache = AsyncCacheService(namespaced_settings, client=client, stats_flush_interval=0)

    async def compute() -> dict[str, str]:
        return ROW

    try:
        await cache.ping()
        for key in ("hs:code:847130", "hs:code:847141"):
            mark = trips.sent
            assert await cache.get_or_compute(key, compute) == ROW
            miss = trips.since(mark)
            mark = trips.sent
            assert await cache.get_or_compute(key, compute) == ROW
            assert (miss, trips.since(mark)) == (3, 1)
    finally:
        await cache.aclose()
        await client.aclose()


@pytest.fixture
def own_valkey(tmp_path: Path, namespaced_settings: Settings) -> Iterator[Settings]:
    """Settings on a Valkey of this test's own: it flushes the server's script cache."""
    yield namespaced_settings.replace(redis=start_valkey(tmp_path))
    stop_valkey(tmp_path)


def test_a_server_that_forgot_the_scripts_gets_their_text_once(own_valkey: Settings) -> None:
    assert own_valkey.redis is not None
    client, trips = counting_client(own_valkey.redis.client_kwargs())
    cache = CacheService(own_valkey, client=client, stats_flush_interval=0)
    try:
        cache.ping()
        first = _cost(trips, lambda: cache.get_or_compute("rule:id:R1", lambda: {"rule": 1}))
        assert first == 5  # GET, then LEAD and FINISH each: EVALSHA refused (NOSCRIPT), then EVAL
        assert _cost(trips, lambda: cache.get_or_compute("rule:id:R2", lambda: {"rule": 2})) == 3
        redis.Redis(**own_valkey.redis.client_kwargs()).script_flush()  # as after a restart
        assert _cost(trips, lambda: cache.get_or_compute("rule:id:R3", lambda: {"rule": 3})) == 5
        assert [cache.get(f"rule:id:R{i}") for i in (1, 2, 3)] == [{"rule": 1}, {"rule": 2}, {"rule": 3}]
    finally:
        cache.close()
        client.close()


#: The CETA polyethylene example by agreement only (no rule named), without a tenant: cached, never stored.
CETA_BY_AGREEMENT = {
    "agreement_code": "CETA",
    "hs_code": "3901.10",
    "origin_country": "DE",
    "destination_country": "CA",
    "assessment_date": "2024-06-01",
}


@pytest.fixture
def make_counted(namespaced_settings: Settings) -> Iterator[Callable[[], tuple[CacheService, RoundTrips]]]:
    """Factory: a new cache (as another process would have: no rule choices remembered) counting its trips."""
    made: list[tuple[CacheService, redis.Redis]] = []

    def make() -> tuple[CacheService, RoundTrips]:
        assert namespaced_settings.redis is not None
        client, trips = counting_client(namespaced_settings.redis.client_kwargs())
        made.append((CacheService(namespaced_settings, client=client, stats_flush_interval=0), client))
        return made[-1][0], trips

    yield make
    for service, client in made:
        service.close()
        client.close()


def test_an_assessment_hit_is_one_cache_read_without_rules_or_evaluation(
    namespaced_settings: Settings,
    make_counted: Callable[[], tuple[CacheService, RoundTrips]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    evaluations: list[int] = []

    def counted_assess(*args: Any, **kwargs: Any) -> Any:
        evaluations.append(1)
        return assess(*args, **kwargs)

    monkeypatch.setattr(psra_service, "assess", counted_assess)
    pool = db.create_pool(namespaced_settings, min_size=1, max_size=2)

    def assess_once(cache: CacheService, body: dict[str, object]) -> dict[str, Any]:
        return assess_with_cache(pool, CachedDAL(PostgresDAL(pool), cache), body, full=False)

    try:
        first, _ = make_counted()
        cold = assess_once(first, CETA_BY_AGREEMENT)
        assert (cold["cached"], cold["rule_id"], len(evaluations)) == (False, "CETA-HS39-001", 1)
        # Another process has not seen this product's rule: it evaluates once more, then finds the spec's key.
        other, _ = make_counted()
        assert assess_once(other, CETA_BY_AGREEMENT)["cached"] is True and len(evaluations) == 2
        # From then on, in that process, a hit is one cache read: no rules lookup, no evaluation.
        warm, trips = make_counted()
        assess_once(warm, CETA_BY_AGREEMENT)
        mark, runs = trips.sent, len(evaluations)
        hit = assess_once(warm, CETA_BY_AGREEMENT)
        assert (hit["cached"], hit["evaluation_id"]) == (True, cold["evaluation_id"])
        assert (trips.since(mark), len(evaluations)) == (1, runs)
        # The same product and route with another input is not that hit.
        changed = assess_once(warm, {**CETA_BY_AGREEMENT, "ex_works_price": 100})
        assert changed["cached"] is False and len(evaluations) == runs + 1
    finally:
        pool.close()


def test_bench_cache_counts_round_trips_beside_another_checkout() -> None:
    """benchmarks/bench_cache.py's third measurement runs each side in its own process and prints its counts."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "bench_cache.py"), "--only", "round-trips", "--rounds", "2",
         "--per-round", "20", "--variant", f"again={root}"],
        capture_output=True, text=True, timeout=300, cwd=root, env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("round trips per hit: mean 1.000, min 1, max 1 (n=40)") == 2
    assert done.stdout.count("round trips per miss: mean 3.000, min 3, max 3 (n=40)") == 2
    assert "hit p50, again / this:" in done.stdout
    bad = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_cache.py"), "--variant", "x=/nowhere"],
                         capture_output=True, text=True, timeout=60, cwd=root)  # fmt: skip
    assert bad.returncode != 0 and "--variant 'x=/nowhere' is not valid" in bad.stderr
