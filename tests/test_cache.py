"""The cache service against real servers: keys, TTLs, invalidation, decorators, resilience, single flight.

Everything runs on the shared test server under a per-test namespace, except what needs a server
to die or freeze: that uses a throwaway Valkey under tmp_path (never the shared one), and the
cluster tests form a throwaway three-node Valkey cluster from the same binary (tests/cluster_fixtures.py).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio.cluster
import redis.cluster
from cluster_fixtures import cluster, poll_until

from psra_bench.cache import (
    LOCK_PREFIX,
    MISSING,
    AsyncCacheService,
    CacheService,
    cache_result,
    close_caches,
    get_cache,
    invalidate_cache,
    keys,
)
from psra_bench.cache.stats import CacheStats, CircuitBreaker
from psra_bench.exceptions import CacheError, CacheSerializationError
from psra_bench.infra.embedded import start_valkey, stop_valkey
from psra_bench.settings import RedisSettings, Settings, TTLSettings

__all__ = ["cluster"]  # a fixture, imported so pytest finds it here


@pytest.fixture
def cache(namespaced_settings: Settings) -> Iterator[CacheService]:
    """A private CacheService on the shared server, in this test's namespace."""
    service = CacheService(namespaced_settings)
    yield service
    service.close()


@pytest.fixture
async def acache(cache: CacheService) -> AsyncIterator[AsyncCacheService]:
    """The asyncio twin of ``cache`` for this test's event loop."""
    service = cache.aio
    yield service
    await service.aclose()


@pytest.fixture
def throwaway(tmp_path: Path) -> Iterator[Path]:
    """Home of a Valkey of this test's own, which the test may stop, freeze and restart."""
    start_valkey(tmp_path)
    yield tmp_path
    pid = _valkey_pid(tmp_path)
    if pid:
        os.kill(pid, signal.SIGCONT)  # in case a test froze it
    stop_valkey(tmp_path)


def _valkey_pid(home: Path) -> int | None:
    try:
        return int((home / "valkey" / "valkey.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _namespace_keys(client: redis.Redis, namespace: str) -> list[bytes]:
    # A set: SCAN may return a key twice while the server rehashes (a shared server grows under other tests).
    return sorted(set(client.scan_iter(match=keys.escape_glob(namespace) + "*", count=1000)))


def _commandstat(client: redis.Redis, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


class ManualClock:
    """A monotonic clock that moves only when the test says so: breaker timing without racing the machine."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --------------------------------------------------------------------------- basic operations


def test_set_get_round_trip_in_namespace(cache: CacheService, redis_client: redis.Redis) -> None:
    value = {"code": "847130", "description": "Portable computers ≤ 10 kg", "level": 6, "tags": [1, 2.5, None]}
    assert cache.set("hs:code:847130", value) is True
    assert cache.get("hs:code:847130") == value
    assert cache.exists("hs:code:847130") and not cache.exists("hs:code:nope")
    assert cache.get("hs:code:nope") is None and cache.get("hs:code:nope", "dflt") == "dflt"
    # The physical key carries the namespace, the payload is plain JSON.
    assert redis_client.exists(cache.namespace + "hs:code:847130") == 1
    assert redis_client.exists("hs:code:847130") == 0
    assert _namespace_keys(redis_client, cache.namespace) == [(cache.namespace + "hs:code:847130").encode()]
    assert redis_client.get(cache.namespace + "hs:code:847130").decode() == (
        '{"code":"847130","description":"Portable computers ≤ 10 kg","level":6,"tags":[1,2.5,null]}'
    )
    assert cache.delete("hs:code:847130") is True and cache.delete("hs:code:847130") is False
    assert cache.get("hs:code:847130") is None
    assert cache.ping() is True


def test_entity_ttls_come_from_settings(namespaced_settings: Settings) -> None:
    ttl = TTLSettings(hs_codes=1111, rules=2222, assessments=333, verdicts=4444, default=555)
    service = CacheService(namespaced_settings.replace(ttl=ttl))
    try:
        cases = {
            keys.hs_code_key("847130"): 1111,
            keys.hs_search_key("pumps", 5): 1111,
            keys.rule_key("CETA-HS39-001"): 2222,
            keys.rules_agreement_key("CETA"): 2222,
            keys.assessment_key("CETA-HS39-001", "390110", "DE", "CA"): 333,
            keys.verdict_key(uuid.uuid4()): 4444,
            keys.job_key("j1"): 555,
            "something:else": 555,
        }
        for key, expected in cases.items():
            assert service.set(key, {"k": key})
            left = service.get_ttl(key)
            assert left is not None and expected - 5 <= left <= expected, (key, left)
        assert service.set("hs:code:x", 1, ttl=42) and 37 <= (service.get_ttl("hs:code:x") or 0) <= 42
        assert service.get_ttl("hs:code:absent") is None
        # The defaults are the spec's table.
        spec = CacheService(namespaced_settings)
        try:
            assert [spec.ttl_ms(k, None) // 1000 for k in ("hs:code:1", "rule:id:1", "assessment:1", "verdict:1")] == [
                3600,
                1800,
                300,
                3600,
            ]
        finally:
            spec.close()
    finally:
        service.close()


def test_ttl_expiry(cache: CacheService) -> None:
    assert cache.set("assessment:r:1:MX:US", {"verdict": "qualified"}, ttl=1)
    assert cache.set("hs:code:subsecond", [1], ttl=0.3)
    assert cache.get("assessment:r:1:MX:US") == {"verdict": "qualified"}
    assert poll_until(lambda: not cache.exists("hs:code:subsecond"))
    assert poll_until(lambda: cache.get("assessment:r:1:MX:US", MISSING) is MISSING)
    assert cache.get_ttl("assessment:r:1:MX:US") is None


# --------------------------------------------------------------------------- keys


def test_key_patterns_are_the_specs() -> None:
    ev = uuid.UUID("550e8400-e29b-41d4-a716-446655440000")
    assert keys.hs_code_key("8471.30") == "hs:code:8471.30"
    assert keys.hs_search_key("  Portable   COMPUTERS ", 20) == "hs:search:portable%20%20%20computers:20"
    assert keys.rule_key("USMCA-2024-01") == "rule:id:USMCA-2024-01"
    assert keys.rules_agreement_key("CETA") == "rules:agreement:CETA"
    assert keys.assessment_key("USMCA-2024-01", "8471.30", "mx", "US") == "assessment:USMCA-2024-01:8471.30:MX:US"
    assert keys.verdict_key(ev) == f"verdict:{ev}"
    assert keys.job_key(ev) == f"job:{ev}"
    assert [
        keys.entity_of(k)
        for k in (
            "hs:code:1",
            "hs:search:a:1",
            "rule:id:x",
            "rules:agreement:x",
            "assessment:a:b:c:d",
            "verdict:v",
            "job:j",
            "fn:x:y",
            "hsx",
        )
    ] == ["hs_codes", "hs_codes", "rules", "rules", "assessments", "verdicts", "other", "other", "other"]
    assert keys.entity_patterns("rules") == ["rule:*", "rules:*"]


TRICKY = ["a", "a*", "a?", "[ab]", "a:b", "x:y", "a\\", "a b", "a%2A", "%", "ü", "Ü", "日本", "a:5", "*", "a[*]"]


def test_user_text_is_escaped_injectively_and_glob_safe() -> None:
    built = {q: keys.hs_search_key(q, 5) for q in TRICKY}
    assert len(set(built.values())) == len(built)  # no two queries share a key
    for key in built.values():
        body = key[len("hs:search:") :]
        assert not set(body) & set("*?[]\\ "), key
        assert body.count(":") == 1, key  # only the separator before the limit
    # hs:search:{query}:{limit} cannot collide across the separator.
    assert keys.hs_search_key("x:y", 5) != keys.hs_search_key("x", 5)
    assert keys.hs_search_key("x", 5) != keys.hs_search_key("x:5", 5)
    assert keys.assessment_key("a:b", "c", "DE", "FR") != keys.assessment_key("a", "b:c", "DE", "FR")
    # Normalization folds only what cannot change an ILIKE result: outer blanks and ASCII case.
    assert keys.hs_search_key(" Pumps ", 5) == keys.hs_search_key("pumps", 5)
    assert keys.hs_search_key("a  b", 5) != keys.hs_search_key("a b", 5)
    assert keys.hs_search_key("Ü", 5) != keys.hs_search_key("ü", 5)
    assert keys.rule_key("ab") != keys.rule_key("AB")
    assert keys.escape_component("a*b") == "a%2Ab" and keys.escape_component("%") == "%25"


def test_a_pattern_of_one_query_never_sweeps_another(cache: CacheService, redis_client: redis.Redis) -> None:
    for q in TRICKY:
        for limit in (5, 10):
            cache.set(keys.hs_search_key(q, limit), {"q": q, "limit": limit})
    before = len(_namespace_keys(redis_client, cache.namespace))
    assert before == len(TRICKY) * 2
    assert cache.delete_pattern(keys.hs_search_pattern("a")) == 2
    assert cache.get(keys.hs_search_key("a*", 5)) == {"q": "a*", "limit": 5}
    assert cache.get(keys.hs_search_key("a:b", 10)) == {"q": "a:b", "limit": 10}
    assert cache.delete_pattern(keys.hs_search_pattern("*")) == 2  # the literal query "*" only
    assert cache.delete_pattern(keys.hs_search_pattern("a[*]")) == 2
    assert cache.get(keys.hs_search_key("a", 5), MISSING) is MISSING
    assert len(_namespace_keys(redis_client, cache.namespace)) == before - 6


def test_bad_keys_values_and_ttls(cache: CacheService, redis_client: redis.Redis) -> None:
    with pytest.raises(CacheSerializationError, match="hs:code:bad") as info:
        cache.set("hs:code:bad", {"when": object()})
    assert info.value.key == "hs:code:bad"
    for bad in ({1, 2}, float("nan"), {(1, 2): "tuple key"}, b"bytes"):
        with pytest.raises(CacheSerializationError, match="rule:id:r"):
            cache.set("rule:id:r", bad)
    assert not cache.exists("hs:code:bad") and not cache.exists("rule:id:r")
    for key in ("", 5, None):
        with pytest.raises(CacheError, match="key="):
            cache.get(key)  # type: ignore[arg-type]
    for ttl in (0, -1, "10", True, math.nan):
        with pytest.raises(CacheError, match="ttl="):
            cache.set("hs:code:x", 1, ttl=ttl)  # type: ignore[arg-type]
    for call in (
        lambda: keys.hs_search_key("   ", 5),
        lambda: keys.hs_search_key("ok", 0),
        lambda: keys.hs_search_key("ok", True),
        lambda: keys.rule_key(None),  # type: ignore[arg-type]
        lambda: keys.hs_code_key(""),
        lambda: keys.entity_patterns("planets"),
    ):
        with pytest.raises(CacheError, match="is not valid"):
            call()
    with pytest.raises(CacheError, match="pattern="):
        cache.delete_pattern("")
    # A value someone else wrote that is not JSON reads as a miss and counts as an error.
    redis_client.set(cache.namespace + "verdict:garbled", b"\xff{not json")
    assert cache.get("verdict:garbled", MISSING) is MISSING
    assert cache.stats()["entities"]["verdicts"]["errors"] == 1


# --------------------------------------------------------------------------- invalidation


def test_pattern_invalidation_counts_and_never_keys(cache: CacheService, redis_client: redis.Redis) -> None:
    keys_before, unlink_before = _commandstat(redis_client, "keys"), _commandstat(redis_client, "unlink")
    scan_before = _commandstat(redis_client, "scan")
    pipe = redis_client.pipeline(transaction=False)
    for i in range(1234):
        pipe.set(f"{cache.namespace}rule:id:R{i}", "{}", ex=600)
    for i in range(100):
        pipe.set(f"{cache.namespace}rules:agreement:A{i}", "[]", ex=600)
    for i in range(50):
        pipe.set(f"{cache.namespace}hs:code:{i:06d}", "{}", ex=600)
        pipe.set(f"{cache.namespace}hs:search:q{i}:10", "[]", ex=600)
        pipe.set(f"{cache.namespace}assessment:R:{i}:DE:FR", "{}", ex=600)
    pipe.execute()
    assert cache.invalidate_rules() == 1334
    assert cache.invalidate_rules() == 0
    assert cache.invalidate_hs_codes() == 100  # codes and searches
    assert cache.invalidate_assessments() == 50
    assert _namespace_keys(redis_client, cache.namespace) == []
    assert _commandstat(redis_client, "keys") == keys_before
    assert _commandstat(redis_client, "scan") > scan_before
    assert _commandstat(redis_client, "unlink") >= unlink_before + 3  # 1334 keys in batches of 500
    assert cache.stats()["entities"]["rules"]["deletes"] == 1334


def test_slot_groups_never_mix_slots() -> None:
    names = [f"k{i}".encode() for i in range(2000)] + [b"{tag}a", b"{tag}b", b"{tag}c"]
    groups = keys.slot_groups(names)
    assert sorted(k for g in groups.values() for k in g) == sorted(names)
    for slot, group in groups.items():
        assert {redis.crc.key_slot(k) for k in group} == {slot}
    assert len(groups[redis.crc.key_slot(b"{tag}")]) >= 3
    assert list(keys.slot_groups(names, by_slot=False)) == [0]


def test_scan_unlink_over_two_nodes(cache: CacheService, redis_client: redis.Redis, throwaway: Path) -> None:
    """Two standalone servers stand in for two cluster primaries: each sweeps only what it holds."""
    other = redis.Redis(**RedisSettings(port=int((throwaway / "valkey" / "port").read_text())).client_kwargs())
    try:
        for i in range(700):
            redis_client.set(f"{cache.namespace}hs:code:{i}", "1", ex=600)
        for i in range(300):
            other.set(f"{cache.namespace}hs:code:{i}", "1", ex=600)
        other.set(f"{cache.namespace}rule:id:keep", "1", ex=600)
        match = keys.escape_glob(cache.namespace) + "hs:*"
        assert keys.scan_unlink_nodes([redis_client, other], match, by_slot=True, batch=64) == 1000
        assert _namespace_keys(redis_client, cache.namespace) == []
        assert _namespace_keys(other, cache.namespace) == [f"{cache.namespace}rule:id:keep".encode()]
    finally:
        other.close()


# --------------------------------------------------------------------------- decorators


def test_decorator_keys_are_stable_across_call_styles(cache: CacheService) -> None:
    calls: list[tuple[Any, ...]] = []

    @cache_result(cache=cache)
    def lookup(a: int, b: str = "x", *, opts: dict[str, Any] | None = None) -> dict[str, Any]:
        calls.append((a, b, opts))
        return {"a": a, "b": b, "opts": opts}

    assert lookup(1) == lookup(a=1) == lookup(1, "x") == lookup(1, b="x", opts=None) == {"a": 1, "b": "x", "opts": None}
    assert len(calls) == 1
    assert lookup.cache_key(1) == lookup.cache_key(a=1, b="x")  # type: ignore[attr-defined]
    assert lookup.cache_key(1).startswith("fn:")  # type: ignore[attr-defined]
    lookup(2)
    lookup(1, "y")
    assert len(calls) == 3
    lookup(1, opts={"x": [1, 2], "y": {"z": None}})
    lookup(1, opts={"y": {"z": None}, "x": [1, 2]})  # same dict, other order: same key
    assert len(calls) == 4
    with pytest.raises(CacheSerializationError, match=r"lookup\(\): argument opts=") as info:
        lookup(1, opts={"when": object()})
    assert "test_decorator_keys_are_stable" in str(info.value)
    with pytest.raises(TypeError):
        lookup()  # type: ignore[call-arg]
    assert cache.get_ttl(lookup.cache_key(1)) == pytest.approx(3600, abs=5)  # type: ignore[attr-defined]


def test_decorator_templates_callables_and_ttl(cache: CacheService) -> None:
    calls = []

    @cache_result(ttl=1800, key="hs:code:{code}", cache=lambda: cache)
    def hs(code: str) -> dict[str, str]:
        calls.append(code)
        return {"code": code}

    @cache_result(key=lambda query, limit=10: keys.hs_search_key(query, limit), cache=cache)
    def search(query: str, limit: int = 10) -> list[str]:
        calls.append(query)
        return [query]

    assert hs("84*") == {"code": "84*"} and hs(code="84*") == {"code": "84*"}
    assert cache.exists("hs:code:84%2A") and 1790 <= (cache.get_ttl("hs:code:84%2A") or 0) <= 1800
    assert search("Pumps") == ["Pumps"] and search(" pumps ") == ["Pumps"]  # normalized: one key
    assert calls == ["84*", "Pumps"]
    with pytest.raises(CacheError, match="parameter names"):
        cache_result(key="hs:code:{nope}", cache=cache)(lambda code: code)
    with pytest.raises(CacheError, match="ttl="):
        cache_result(ttl=0, cache=cache)
    with pytest.raises(CacheError, match="cache="):
        cache_result(cache=42)(lambda: 1)()  # type: ignore[arg-type]


def test_cached_none_is_a_hit(cache: CacheService) -> None:
    calls = []

    @cache_result(cache=cache)
    def find(code: str) -> None:
        calls.append(code)
        return None

    assert find("000000") is None and find("000000") is None
    assert calls == ["000000"]
    key = find.cache_key("000000")  # type: ignore[attr-defined]
    assert cache.get(key, MISSING) is None
    assert cache.get(key + "x", MISSING) is MISSING


def test_methods_leave_self_out_of_the_key(cache: CacheService) -> None:
    class Repo:
        def __init__(self) -> None:
            self.calls = 0

        @cache_result(cache=cache)
        def rule(self, rule_id: str) -> str:
            self.calls += 1
            return rule_id.lower()

    one, two = Repo(), Repo()
    assert one.rule("ABC") == two.rule("ABC") == "abc"
    assert one.calls + two.calls == 1


def test_invalidate_cache_decorator(cache: CacheService) -> None:
    for i in range(5):
        cache.set(f"hs:code:{i}", i)
        cache.set(f"assessment:R:{i}:DE:FR", i)
    cache.set(keys.hs_code_key("a*b"), "star")
    cache.set("hs:code:aXb", "what an unescaped a*b would match")
    cache.set("rule:id:keep", 1)

    @invalidate_cache(patterns=["hs:*", "assessment:*"], cache=cache)
    def update_hs_codes(codes: list[str]) -> int:
        return len(codes)

    @invalidate_cache(patterns=["hs:code:{code}"], cache=cache)
    def touch(code: str) -> None:
        raise RuntimeError("update failed")

    cache.set("hs:code:0", 0)
    with pytest.raises(RuntimeError):
        touch("a*b")  # escaped: deletes the literal key only, even though the function raised
    assert not cache.exists(keys.hs_code_key("a*b")) and cache.exists("hs:code:aXb") and cache.exists("hs:code:0")
    assert update_hs_codes(["1", "2"]) == 2
    assert [cache.exists(k) for k in ("hs:code:0", "assessment:R:0:DE:FR", "rule:id:keep")] == [False, False, True]
    with pytest.raises(CacheError, match="patterns="):
        invalidate_cache(patterns=[], cache=cache)


def test_settings_without_redis(namespaced_settings: Settings, redis_client: redis.Redis) -> None:
    with pytest.raises(CacheError, match="ensure_services"):
        CacheService(namespaced_settings.replace(redis=None))
    off = CacheService(namespaced_settings.replace(redis=None, enable_cache=False))
    assert off.get("hs:code:1", MISSING) is MISSING and off.ping() is False
    injected = CacheService(namespaced_settings.replace(redis=None), client=redis_client)
    assert injected.set("hs:code:1", 1) and injected.get("hs:code:1") == 1
    injected.close()  # not ours: the client stays open
    assert redis_client.ping()


def test_disabled_cache_is_transparent(namespaced_settings: Settings, redis_client: redis.Redis) -> None:
    service = CacheService(namespaced_settings.replace(enable_cache=False))
    calls = []

    @cache_result(cache=service)
    def f(x: int) -> int:
        calls.append(x)
        return x * 2

    try:
        assert service.set("hs:code:1", {"a": 1}) is False
        assert service.get("hs:code:1") is None and service.get("hs:code:1", MISSING) is MISSING
        assert not service.exists("hs:code:1") and service.get_ttl("hs:code:1") is None
        assert service.delete_pattern("hs:*") == 0 and service.invalidate_rules() == 0
        assert service.cache_hs_code("1", {}) is False and service.get_cached_hs_code("1") is None
        assert f(2) == f(2) == 4 and calls == [2, 2]
        assert service.ping() is True  # the truth about the server, even with the cache off
        assert _namespace_keys(redis_client, service.namespace) == []
    finally:
        service.close()


def test_entity_helpers(cache: CacheService, namespaced_settings: Settings) -> None:
    hs = {"code": "8471.30", "description": "Portable computers"}
    assert cache.cache_hs_code("8471.30", hs) and cache.get_cached_hs_code("8471.30") == hs
    assert cache.cache_rule("USMCA-2024-01", {"rule_id": "USMCA-2024-01"})
    assert cache.get_cached_rule("USMCA-2024-01") == {"rule_id": "USMCA-2024-01"}
    result = {"verdict": "qualified", "confidence": 0.95}
    assert cache.cache_assessment("USMCA-2024-01", "8471.30", "MX", "US", result)
    assert cache.get_cached_assessment("USMCA-2024-01", "8471.30", "mx", "us") == result
    assert 295 <= (cache.get_ttl("assessment:USMCA-2024-01:8471.30:MX:US") or 0) <= 300
    assert cache.get_cached_hs_code("0000") is None
    cache.set(keys.rules_agreement_key("USMCA"), [1])
    assert cache.invalidate_rules() == 2 and cache.invalidate_hs_codes() == 1
    assert cache.invalidate_assessments() == 1 and cache.invalidate_assessments() == 0
    try:  # one shared service per settings object
        shared = get_cache(namespaced_settings)
        assert shared is get_cache(namespaced_settings) and shared is not cache
        assert shared.cache_hs_code("01", {"code": "01"}) and cache.get_cached_hs_code("01") == {"code": "01"}
        other = namespaced_settings.replace(cache_namespace=namespaced_settings.cache_namespace + "o:")
        assert get_cache(other) is not shared and get_cache(other).get_cached_hs_code("01") is None
    finally:
        close_caches()
    assert get_cache(namespaced_settings) is not shared  # closed and forgotten: a new one
    close_caches()


# --------------------------------------------------------------------------- asyncio


async def test_async_twin(acache: AsyncCacheService, cache: CacheService) -> None:
    assert await acache.set("hs:code:1", {"a": 1}) and await acache.get("hs:code:1") == {"a": 1}
    assert cache.get("hs:code:1") == {"a": 1}  # same namespace, same encoding
    assert await acache.exists("hs:code:1") and 3590 <= (await acache.get_ttl("hs:code:1") or 0) <= 3600
    assert await acache.cache_rule("R1", {"r": 1}) and await acache.get_cached_rule("R1") == {"r": 1}
    assert await acache.invalidate_rules() == 1 and await acache.delete_pattern("hs:*") == 1
    assert await acache.delete("hs:code:1") is False and await acache.ping() is True
    with pytest.raises(CacheSerializationError, match="hs:code:2"):
        await acache.set("hs:code:2", {1, 2})
    calls: list[int] = []

    @cache_result(cache=cache)
    async def compute(a: int, b: int = 2) -> int | None:
        calls.append(a)
        return None if a == 0 else a + b

    assert await compute(1) == await compute(a=1, b=2) == 3
    assert await compute(0) is None and await compute(0) is None
    assert calls == [1, 0]

    @invalidate_cache(patterns=["fn:*"], cache=acache)
    async def wipe() -> str:
        return "done"

    assert await wipe() == "done" and await compute(1) == 3 and calls == [1, 0, 1]
    assert cache.stats()["entities"]["other"]["hits"] >= 2  # counters shared with the sync service


# --------------------------------------------------------------------------- single flight


def test_stampede_threads_compute_once(cache: CacheService, namespaced_settings: Settings) -> None:
    calls = []
    barrier = threading.Barrier(20)

    def slow(x: int) -> dict[str, int]:
        calls.append(x)
        time.sleep(0.2)
        return {"x": x}

    local = cache_result(cache=cache)(slow)
    results: list[Any] = []
    arg = 7

    def call(fn: Callable[[int], Any]) -> None:
        barrier.wait()
        results.append(fn(arg))

    threads = [threading.Thread(target=call, args=(local,)) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results == [{"x": 7}] * 20
    # Four services stand for four processes: only the Redis lock keeps them from computing four times.
    services = [CacheService(namespaced_settings) for _ in range(4)]
    try:
        fns = [cache_result(cache=s)(slow) for s in services]
        calls.clear()
        results.clear()
        arg = 8  # a cold key again
        threads = [threading.Thread(target=call, args=(fns[i % 4],)) for i in range(20)]
        barrier.reset()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for s in services:
            s.close()
    assert len(calls) == 1 and results == [{"x": 8}] * 20


async def test_stampede_tasks_compute_once(
    cache: CacheService, acache: AsyncCacheService, namespaced_settings: Settings
) -> None:
    calls = []

    async def slow(x: int) -> list[int]:
        calls.append(x)
        await asyncio.sleep(0.2)
        return [x]

    assert await asyncio.gather(*(cache_result(cache=cache)(slow)(3) for _ in range(20))) == [[3]] * 20
    assert len(calls) == 1
    others = [AsyncCacheService(namespaced_settings) for _ in range(4)]
    try:
        calls.clear()
        fns = [cache_result(cache=s)(slow) for s in others]
        assert await asyncio.gather(*(fns[i % 4](4) for i in range(20))) == [[4]] * 20
        assert len(calls) == 1
    finally:
        for s in others:
            await s.aclose()


def test_crashed_lock_holder_cannot_wedge_waiters(cache: CacheService, redis_client: redis.Redis) -> None:
    calls = []

    def compute() -> str:
        calls.append(1)
        return "value"

    # A holder that died: its lock expires by itself, then a waiter takes over and computes.
    lock = cache.physical(LOCK_PREFIX + "hs:code:crashed")
    redis_client.set(lock, "someone-else", px=300)
    assert cache.get_or_compute("hs:code:crashed", compute, lock_timeout=5) == "value"
    assert calls == [1] and cache.get("hs:code:crashed") == "value"
    assert redis_client.exists(lock) == 0  # our own lock was released by compare-and-delete
    # A holder alive but too slow: after lock_timeout the waiter computes anyway, and never deletes
    # a lock that is not its own.
    lock = cache.physical(LOCK_PREFIX + "hs:code:slow")
    redis_client.set(lock, "someone-else", px=30_000)
    assert cache.get_or_compute("hs:code:slow", compute, lock_timeout=0.3) == "value"
    assert calls == [1, 1] and redis_client.get(lock) == b"someone-else"


# --------------------------------------------------------------------------- no stale set after invalidation


class HeldCompute:
    """A compute function held at a known point: it says it has begun, waits for the test, returns ``value``."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.begun = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        self.begun.set()
        assert self.release.wait(10), "the test never released the computation"
        return self.value


def _race(cache: CacheService, key: str, invalidate: Callable[[], object] | None) -> Any:
    """get_or_compute(key) computing "old"; while it computes, ``invalidate()`` runs (a writer committed)."""
    held, out = HeldCompute("old"), []
    reader = threading.Thread(target=lambda: out.append(cache.get_or_compute(key, held)))
    reader.start()
    try:
        assert held.begun.wait(10)
        if invalidate is not None:
            invalidate()
    finally:
        held.release.set()
        reader.join(10)
    assert out == ["old"] and held.calls == 1  # the reader itself gets what it computed
    return cache.get(key, MISSING)


def test_pattern_entities_cover_what_a_sweep_may_touch() -> None:
    assert keys.pattern_entities("hs:*") == ["hs_codes"] and keys.pattern_entities("hs:code:1") == ["hs_codes"]
    assert keys.pattern_entities("rules:agreement:*") == ["rules"] and keys.pattern_entities("fn:*") == ["other"]
    assert keys.pattern_entities("rule*") == ["other", "rules"]
    assert keys.pattern_entities("*") == ["assessments", "hs_codes", "other", "reports", "rules", "verdicts"]
    assert keys.pattern_entities("h[s]:*") == ["hs_codes", "other"]
    assert keys.pattern_entities(keys.escape_glob("weird*") + "x") == ["other"]
    assert keys.generation_key("rules") == "gen:rules" and keys.generation_key("other") == "gen:other"
    with pytest.raises(CacheError, match="entity="):
        keys.generation_key("nope")


@pytest.mark.parametrize(
    "how",
    ["invalidate", "invalidate_hs_codes", "delete_pattern", "delete_pattern_star", "invalidate_cache"],
)
def test_invalidation_during_compute_drops_the_stale_set(cache: CacheService, how: str) -> None:
    @invalidate_cache(patterns=["hs:code:{code}"], cache=cache)
    def update(code: str) -> None:
        pass  # the database write; the decorator invalidates after it

    invalidations: dict[str, Callable[[], object]] = {
        "invalidate": lambda: cache.invalidate("hs_codes"),
        "invalidate_hs_codes": cache.invalidate_hs_codes,
        "delete_pattern": lambda: cache.delete_pattern("hs:code:*"),
        "delete_pattern_star": lambda: cache.delete_pattern("*"),
        "invalidate_cache": lambda: update("847130"),
    }
    key = keys.hs_code_key("847130")
    assert _race(cache, key, invalidations[how]) is MISSING  # the old value was not put back
    assert cache.stats()["entities"]["hs_codes"]["stale"] == 1
    assert cache.get_or_compute(key, lambda: "new") == "new" and cache.get(key) == "new"


def test_set_is_kept_when_nothing_was_invalidated(cache: CacheService) -> None:
    key = keys.hs_code_key("847130")
    assert _race(cache, key, None) == "old"  # negative control: same race, no writer
    # Invalidating another entity meanwhile does not drop it either.
    assert _race(cache, keys.rule_key("R1"), cache.invalidate_hs_codes) == "old"
    assert cache.stats()["entities"]["hs_codes"]["stale"] == 0 and cache.stats()["entities"]["rules"]["stale"] == 0


def test_generation_api_and_plain_set(cache: CacheService, redis_client: redis.Redis) -> None:
    key = keys.rule_key("R1")
    before = cache.generation(key)
    assert before is not None and cache.generation(key) == before  # stable until an invalidation
    assert redis_client.get(cache.namespace + "gen:rules") == before.encode()
    assert cache.set_if_generation(key, 1, before) and cache.get(key) == 1
    cache.invalidate_rules()
    assert redis_client.exists(cache.namespace + "gen:rules") == 0  # invalidating ends the generation
    assert cache.set_if_generation(key, 2, before) is False and cache.get(key, MISSING) is MISSING
    after = cache.generation(key)
    assert after not in (None, before)  # a fresh random token, never an old one again
    assert cache.set_if_generation(key, 3, after) and cache.get(key) == 3
    assert cache.set_if_generation(key, 4, None) is False and cache.get(key) == 3  # unknown generation: no write
    # A generation key lost to eviction or a sweep only drops writes, never lets a stale one through.
    redis_client.unlink(cache.namespace + "gen:rules")
    assert cache.set_if_generation(key, 5, after) is False and cache.get(key) == 3
    # Plain set() keeps its semantics: unconditional, whatever was invalidated.
    cache.invalidate_rules()
    assert cache.set(key, "plain") is True and cache.get(key) == "plain"
    assert cache.stats()["entities"]["rules"]["stale"] == 2


def test_cache_result_decorator_drops_the_stale_set(cache: CacheService) -> None:
    held = HeldCompute({"rate": "old"})

    @cache_result(key="rules:agreement:{code}", cache=cache)
    def agreement(code: str) -> Any:
        return held()

    @invalidate_cache(patterns=["rules:*"], cache=cache)
    def reload(code: str) -> None:
        pass

    out: list[Any] = []
    reader = threading.Thread(target=lambda: out.append(agreement("CETA")))
    reader.start()
    try:
        assert held.begun.wait(10)
        reload("CETA")
    finally:
        held.release.set()
        reader.join(10)
    assert out == [{"rate": "old"}] and not cache.exists("rules:agreement:CETA")
    held.value = {"rate": "new"}
    assert agreement("CETA") == {"rate": "new"} and held.calls == 2
    assert cache.get("rules:agreement:CETA") == {"rate": "new"} and agreement("CETA") == {"rate": "new"}
    assert held.calls == 2  # now a hit
    # Negative control: the same decorated read with no invalidation is cached.
    held.value = "kept"
    assert agreement("EUJP") == "kept" and cache.get("rules:agreement:EUJP") == "kept"


class AsyncHeldCompute:
    """The asyncio twin of :class:`HeldCompute` (asyncio.Event)."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.begun = asyncio.Event()
        self.release = asyncio.Event()
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        self.begun.set()
        await asyncio.wait_for(self.release.wait(), 10)
        return self.value


async def _arace(acache: AsyncCacheService, key: str, invalidate: Callable[[], Any] | None) -> Any:
    held = AsyncHeldCompute("old")
    reader = asyncio.create_task(acache.get_or_compute(key, held))
    try:
        await asyncio.wait_for(held.begun.wait(), 10)
        if invalidate is not None:
            await invalidate()
    finally:
        held.release.set()
    assert await reader == "old" and held.calls == 1
    return await acache.get(key, MISSING)


async def test_async_invalidation_during_compute_drops_the_stale_set(acache: AsyncCacheService) -> None:
    key = keys.hs_code_key("847130")
    assert await _arace(acache, key, acache.invalidate_hs_codes) is MISSING
    assert await _arace(acache, key, lambda: acache.delete_pattern("hs:*")) is MISSING
    assert acache.stats()["entities"]["hs_codes"]["stale"] == 2

    async def new() -> str:
        return "new"

    assert await acache.get_or_compute(key, new) == "new" and await acache.get(key) == "new"
    await acache.delete(key)
    assert await _arace(acache, key, None) == "old"  # negative control: no writer, the set is kept
    assert acache.stats()["entities"]["hs_codes"]["stale"] == 2


async def test_async_decorator_drops_the_stale_set(acache: AsyncCacheService) -> None:
    held = AsyncHeldCompute(["old"])

    @cache_result(cache=acache)
    async def lookup(code: str) -> Any:
        return await held()

    @invalidate_cache(patterns=["fn:*"], cache=acache)
    async def update(code: str) -> None:
        pass

    reader = asyncio.create_task(lookup("847130"))
    try:
        await asyncio.wait_for(held.begun.wait(), 10)
        await update("847130")
    finally:
        held.release.set()
    assert await reader == ["old"]
    key = lookup.cache_key("847130")  # type: ignore[attr-defined]
    assert await acache.get(key, MISSING) is MISSING
    held.value = ["new"]
    assert await lookup("847130") == ["new"] and await acache.get(key) == ["new"] and held.calls == 2
    assert await lookup("847130") == ["new"] and held.calls == 2  # a hit
    # Negative control: another argument, no writer: cached.
    held.value = ["kept"]
    assert await lookup("010121") == ["kept"] and await acache.get(lookup.cache_key("010121")) == ["kept"]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- resilience


def test_dead_and_frozen_server_fall_through_then_recover(namespaced_settings: Settings, throwaway: Path) -> None:
    port = int((throwaway / "valkey" / "port").read_text())
    rs = RedisSettings(port=port, socket_timeout=0.2, socket_connect_timeout=0.2)
    service = CacheService(namespaced_settings.replace(redis=rs))
    clock = ManualClock()
    service.breaker = CircuitBreaker(threshold=3, reset_after=0.3, clock=clock)
    calls = []

    @cache_result(cache=service)
    def compute(x: int) -> int:
        calls.append(x)
        return x + 1

    try:
        assert service.set("hs:code:1", {"a": 1}) and service.get("hs:code:1") == {"a": 1}
        assert compute(1) == 2 and compute(1) == 2 and calls == [1]
        # Frozen: the server accepts nothing; every call times out instead of hanging.
        pid = _valkey_pid(throwaway)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            assert service.get("hs:code:1", MISSING) is MISSING
        finally:
            os.kill(pid, signal.SIGCONT)
        assert service.stats()["entities"]["hs_codes"]["errors"] == 1
        assert service.get("hs:code:1") == {"a": 1}  # back
        stop_valkey(throwaway)
        assert service.ping() is False
        assert service.get("hs:code:1") is None and service.set("hs:code:2", 2) is False
        assert compute(1) == 2 and compute(1) == 2 and calls == [1, 1, 1]  # falls through, no exception
        assert service.delete_pattern("hs:*") == 0 and service.exists("hs:code:1") is False
        assert service.breaker.state == CircuitBreaker.OPEN
        skipped = service.stats()["entities"]["hs_codes"]["skipped"]
        assert service.get("hs:code:1") is None
        assert service.stats()["entities"]["hs_codes"]["skipped"] == skipped + 1  # not asked: breaker open
        errors = sum(e["errors"] for e in service.stats()["entities"].values())
        clock.advance(0.35)  # the pause: one probe goes through, fails, the breaker opens again
        assert service.get("hs:code:1") is None and service.breaker.state == CircuitBreaker.OPEN
        assert sum(e["errors"] for e in service.stats()["entities"].values()) == errors + 1
        assert service.breaker.times_opened >= 2
        start_valkey(throwaway)  # same port, empty (nothing kept on disk)
        assert poll_until(service.ping)  # ping asks the server whatever the breaker says
        assert service.breaker.state == CircuitBreaker.CLOSED
        assert service.set("hs:code:1", {"b": 2}) and service.get("hs:code:1") == {"b": 2}
        assert compute(5) == 6 and compute(5) == 6 and calls == [1, 1, 1, 5]
    finally:
        service.close()


async def test_async_dead_server_falls_through(namespaced_settings: Settings, throwaway: Path) -> None:
    port = int((throwaway / "valkey" / "port").read_text())
    rs = RedisSettings(port=port, socket_timeout=0.2, socket_connect_timeout=0.2)
    service = AsyncCacheService(namespaced_settings.replace(redis=rs), breaker_threshold=2, breaker_reset=30)
    calls = []

    @cache_result(cache=service)
    async def compute(x: int) -> int:
        calls.append(x)
        return x

    try:
        assert await compute(1) == 1 and await compute(1) == 1 and calls == [1]
        stop_valkey(throwaway)
        assert await service.get("hs:code:1") is None and await service.set("hs:code:1", 1) is False
        assert await compute(1) == 1 and calls == [1, 1]
        assert service.breaker.state == CircuitBreaker.OPEN and await service.ping() is False
    finally:
        await service.aclose()


async def test_async_frozen_server_times_out_each_step_and_an_outside_cancel_stays_a_cancel(
    namespaced_settings: Settings, throwaway: Path
) -> None:
    """A server that accepts nothing (SIGSTOP): each step ends at its deadline as a miss, never hangs."""
    port = int((throwaway / "valkey" / "port").read_text())
    rs = RedisSettings(port=port, socket_timeout=0.2, socket_connect_timeout=0.2)
    service = AsyncCacheService(namespaced_settings.replace(redis=rs), breaker_threshold=100)
    pid = _valkey_pid(throwaway)
    assert pid is not None
    try:
        assert await service.set("hs:code:1", {"a": 1}) and await service.get("hs:code:1") == {"a": 1}
        os.kill(pid, signal.SIGSTOP)
        try:
            async with asyncio.timeout(30):  # the test's own bound: the 0.2 s deadline must end it long before
                assert await service.get("hs:code:1", MISSING) is MISSING
                assert await service.get("hs:code:1", MISSING) is MISSING
            assert service.stats()["entities"]["hs_codes"]["errors"] == 2
            # cancelled from outside while its step waits: a cancel, not a timeout (and nothing counted)
            started = asyncio.Event()

            async def waiting() -> Any:
                started.set()
                return await service.get("hs:code:1", MISSING)

            task = asyncio.create_task(waiting())
            await started.wait()
            await asyncio.sleep(0)  # the step is on the wire now
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            os.kill(pid, signal.SIGCONT)
        assert await service.get("hs:code:1") == {"a": 1}  # back
    finally:
        await service.aclose()


def test_circuit_breaker_states() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(threshold=3, reset_after=0.2, clock=clock)
    assert breaker.allow() and not breaker.failure() and not breaker.failure()
    assert breaker.success() is False and breaker.failures == 0  # success resets the streak
    assert not breaker.failure() and not breaker.failure() and breaker.failure()  # the third opens it
    assert breaker.state == "open" and not breaker.allow()
    clock.advance(0.19)
    assert not breaker.allow() and breaker.state == "open"  # not yet: reset_after has not passed
    clock.advance(0.01)
    assert breaker.allow() and breaker.state == "half-open"
    assert not breaker.allow()  # only one probe
    clock.advance(0.2)
    assert breaker.allow() and breaker.state == "half-open"  # a probe that never reported back is replaced
    assert breaker.failure() and breaker.state == "open" and not breaker.allow()
    clock.advance(0.25)
    assert breaker.allow() and breaker.success() is True and breaker.state == "closed"
    with pytest.raises(CacheError, match="threshold="):
        CircuitBreaker(threshold=0)
    with pytest.raises(CacheError, match="reset_after="):
        CircuitBreaker(reset_after=0)


async def test_both_faces_leave_the_lock_alone_while_the_breaker_is_open(
    namespaced_settings: Settings, redis_client: redis.Redis
) -> None:
    """An open breaker stops both faces from taking or releasing a single-flight lock (counted as skipped)."""

    async def read_through(face: str, key: str, breaker: CircuitBreaker, open_while_computing: bool) -> Any:
        def compute() -> str:
            if open_while_computing:  # Redis failed elsewhere while this value was computed
                breaker.failure()
            return "v"

        async def acompute() -> str:
            return compute()

        if face == "sync":
            service = CacheService(namespaced_settings, breaker=breaker, stats_flush_interval=3600)
            value = service.get_or_compute(key, compute)
            stats = service.stats()["entities"]
            service.close()
        else:
            aservice = AsyncCacheService(namespaced_settings, breaker=breaker, stats_flush_interval=3600)
            value = await aservice.get_or_compute(key, acompute)
            stats = aservice.stats()["entities"]
            await aservice.aclose()
        assert value == "v"
        return stats

    for face in ("sync", "async"):
        # Open from the start: the read and the leader's first look (lock + generation, one script) are
        # skipped; the value is computed, not stored, and there is no lock to release.
        breaker = CircuitBreaker(threshold=1, reset_after=3600, clock=ManualClock())
        breaker.failure()
        stats = await read_through(face, f"hs:code:{face}-open", breaker, False)
        assert "other" not in stats and stats["hs_codes"]["skipped"] == 2, (face, stats)
        assert redis_client.exists(namespaced_settings.cache_namespace + LOCK_PREFIX + f"hs:code:{face}-open") == 0
        # Opened while computing: neither the value nor the release is sent; the lock lives out its PX.
        breaker = CircuitBreaker(threshold=1, reset_after=3600, clock=ManualClock())
        stats = await read_through(face, f"hs:code:{face}-opened", breaker, True)
        assert stats["other"]["skipped"] == 1 and stats["hs_codes"]["skipped"] == 1, (face, stats)
        lock = namespaced_settings.cache_namespace + LOCK_PREFIX + f"hs:code:{face}-opened"
        assert redis_client.exists(lock) == 1 and redis_client.pttl(lock) > 0


async def test_a_cancelled_leader_hands_the_flight_to_a_waiting_task(namespaced_settings: Settings) -> None:
    """The task waiting on a flight whose leader is cancelled asks again, leads, and computes its own value."""
    service = AsyncCacheService(namespaced_settings, stats_flush_interval=3600)
    begun, never = asyncio.Event(), asyncio.Event()

    async def stuck() -> str:
        begun.set()
        await never.wait()
        return "leader"

    async def follower_value() -> str:
        return "follower"

    try:
        leader = asyncio.create_task(service.get_or_compute("rule:id:flight", stuck))
        await begun.wait()
        follower = asyncio.create_task(service.get_or_compute("rule:id:flight", follower_value))
        async with asyncio.timeout(10):  # the follower has missed, so it waits on the leader's flight
            while service.stats()["entities"]["rules"]["misses"] < 2:
                await asyncio.sleep(0.001)
        leader.cancel()
        assert await follower == "follower"
        with pytest.raises(asyncio.CancelledError):
            await leader
        assert await service.get("rule:id:flight") == "follower"
    finally:
        await service.aclose()


# --------------------------------------------------------------------------- stats


def test_stats_local_shared_and_server(cache: CacheService, namespaced_settings: Settings) -> None:
    cache.reset_stats()
    server_before = cache.redis_keyspace_stats()
    assert server_before is not None and server_before["keyspace_hits"] >= 0
    cache.set("hs:code:1", 1)
    cache.set("rule:id:1", 1)
    for _ in range(3):
        cache.get("hs:code:1")
    cache.get("hs:code:2")
    cache.get("rule:id:1")
    cache.get("weird:1")
    local = cache.stats()["entities"]
    assert local["hs_codes"]["hits"] == 3 and local["hs_codes"]["misses"] == 1
    assert local["hs_codes"]["hit_rate"] == 0.75 and local["hs_codes"]["sets"] == 1
    assert local["hs_codes"]["hit_latency"]["count"] == 3 and local["hs_codes"]["hit_latency"]["n"] == 3
    assert local["hs_codes"]["hit_latency"]["p99_ms"] >= local["hs_codes"]["hit_latency"]["p50_ms"] > 0
    assert local["rules"]["hits"] == 1 and local["other"]["misses"] == 1
    second = CacheService(namespaced_settings)  # another "process" on the same namespace
    try:
        second.get("hs:code:1")
        second.get("hs:code:3")
        second.flush_stats()
        shared = cache.cluster_stats()
        assert shared is not None
        assert shared["hs_codes"]["hits"] == 4 and shared["hs_codes"]["misses"] == 2
        assert shared["hs_codes"]["hit_latency"]["count"] == 4 and shared["hs_codes"]["hit_latency"]["mean_ms"] > 0
        assert shared["rules"]["sets"] == 1
    finally:
        second.close()
    server_after = cache.redis_keyspace_stats()
    assert server_after is not None and server_after["keyspace_hits"] >= server_before["keyspace_hits"] + 4
    cache.reset_stats()
    assert cache.stats()["entities"] == {} and cache.cluster_stats() == {}


def test_reservoir_keeps_a_bounded_sample() -> None:
    stats = CacheStats(reservoir_size=16)
    for i in range(1000):
        stats.record("hs_codes", "hits", i / 1000)
    summary = stats.snapshot()["hs_codes"]["hit_latency"]
    assert summary["count"] == 1000 and summary["n"] == 16
    assert summary["mean_ms"] == pytest.approx(499.5)
    assert stats.take_pending()["hs_codes:hits"] == 1000 and stats.take_pending() == {}


# --------------------------------------------------------------------------- a real cluster


def test_cluster_invalidation_scans_every_primary(cluster: list[int], namespaced_settings: Settings) -> None:
    rc = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster[0])
    service = CacheService(namespaced_settings, client=rc)
    try:
        for i in range(600):
            assert service.set(keys.hs_code_key(f"{i:06d}"), {"i": i})
        service.set("rule:id:keep", 1)
        per_node = [sum(1 for _ in rc.get_redis_connection(n).scan_iter(count=1000)) for n in rc.get_primaries()]
        assert len(per_node) == 3 and all(c > 0 for c in per_node) and sum(per_node) == 601
        # What slot grouping prevents: one UNLINK with keys of two slots fails on a cluster node.
        node = rc.get_redis_connection(rc.get_node_from_key(service.physical("hs:code:000000")))
        same_node = [k for k in node.scan_iter(count=1000) if b"hs:code:" in k][:2]
        with pytest.raises(redis.ResponseError, match="CROSSSLOT|same slot"):
            node.unlink(*same_node)
        assert service.invalidate_hs_codes() == 600
        assert service.get("rule:id:keep") == 1 and service.get(keys.hs_code_key("000001")) is None
    finally:
        service.close()
        rc.close()


async def test_async_cluster_invalidation(cluster: list[int], namespaced_settings: Settings) -> None:
    rc = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=cluster[0])
    service = AsyncCacheService(namespaced_settings, client=rc)
    try:
        for i in range(300):
            await service.set(keys.rule_key(f"R{i}"), i)
        await service.set(keys.rules_agreement_key("CETA"), [1])
        assert await service.invalidate_rules() == 301
        assert await service.delete_pattern("rule*") == 0
    finally:
        await service.aclose()
        await rc.aclose()


def test_cluster_drops_the_stale_set(cluster: list[int], namespaced_settings: Settings) -> None:
    """Across slots the value is set, then the generation checked; a hash-tagged namespace is atomic."""
    rc = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster[0])
    tagged = namespaced_settings.replace(cache_namespace="{" + namespaced_settings.cache_namespace + "}")
    services = [CacheService(namespaced_settings, client=rc), CacheService(tagged, client=rc)]
    try:
        split, atomic = services
        key = keys.hs_code_key("847130")
        assert redis.crc.key_slot(split.generation_physical(key).encode()) != redis.crc.key_slot(
            split.physical(key).encode()
        )
        assert redis.crc.key_slot(atomic.generation_physical(key).encode()) == redis.crc.key_slot(
            atomic.physical(key).encode()
        )
        for service in services:
            assert _race(service, key, service.invalidate_hs_codes) is MISSING
            assert _race(service, key, lambda s=service: s.delete_pattern("*")) is MISSING
            assert service.stats()["entities"]["hs_codes"]["stale"] == 2
            assert _race(service, key, None) == "old"  # negative control
            assert service.get_or_compute(keys.rule_key("R1"), lambda: "r") == "r" and service.get(keys.rule_key("R1"))
    finally:
        for service in services:
            service.delete_pattern("*")
            service.close()
        rc.close()


async def test_async_cluster_drops_the_stale_set(cluster: list[int], namespaced_settings: Settings) -> None:
    rc = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=cluster[0])
    service = AsyncCacheService(namespaced_settings, client=rc)
    try:
        key = keys.rule_key("CETA-HS39-001")
        assert await _arace(service, key, service.invalidate_rules) is MISSING
        assert await _arace(service, key, lambda: service.delete_pattern("rule:*")) is MISSING
        assert service.stats()["entities"]["rules"]["stale"] == 2
        assert await _arace(service, key, None) == "old"  # negative control
    finally:
        await service.delete_pattern("*")
        await service.aclose()
        await rc.aclose()
