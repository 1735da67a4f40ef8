"""The sync cache service of the spec (section 1): JSON values in Redis, TTLs per entity, never a crash.

:class:`CacheService` puts ``settings.cache_namespace`` before every key and JSON-encodes every value
(a value JSON cannot hold raises CacheSerializationError naming the key). A dead or slow server never
reaches callers: reads miss, writes are skipped, the error counter rises, and a circuit breaker stops
asking after repeated failures; only ``ping()`` bypasses it. ``settings.enable_cache=False`` makes
reads miss and writes no-ops. A miss asked for by many callers at once is computed once
(``get_or_compute``: an in-process flight per key plus a Redis lock with a token, released by
compare-and-delete) and stored only if no invalidation of its entity began meanwhile (the
generation check of :mod:`psra_bench.cache.core`). ``service.aio`` is its asyncio twin
(:mod:`psra_bench.cache.aio`) for the running loop, sharing counters and breaker. The spec's helpers
(``cache_hs_code`` ... ``invalidate_assessments``) are methods, from :class:`psra_bench.cache.core.CacheCore`.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from psra_bench.cache import keys
from psra_bench.cache.core import (
    GENERATION_SCRIPT,
    LOCK_PREFIX,
    MISSING,
    REDIS_ERRORS,
    RELEASE_SCRIPT,
    SET_IF_GENERATION_SCRIPT,
    STATS_KEY,
    CacheCore,
    log,
)
from psra_bench.cache.stats import CacheStats
from psra_bench.exceptions import CacheError
from psra_bench.settings import RedisSettings, Settings

if TYPE_CHECKING:
    from psra_bench.cache.aio import AsyncCacheService

__all__ = ["CacheService"]


def _sync_client(redis_settings: RedisSettings) -> redis.Redis:
    kwargs = redis_settings.client_kwargs()
    if kwargs.pop("ssl", False):  # a pool takes TLS as its connection class
        kwargs["connection_class"] = redis.SSLConnection
    # One immediate retry repairs a connection the server dropped (restart); a timeout is not retried.
    pool = redis.BlockingConnectionPool(
        max_connections=redis_settings.max_connections,
        timeout=max(1.0, redis_settings.socket_timeout),
        **kwargs,
        retry=Retry(NoBackoff(), 1, (redis.ConnectionError,)),
    )
    return redis.Redis.from_pool(pool)


class CacheService(CacheCore):
    """Sync cache: get/set/delete/delete_pattern/exists/get_ttl/ping, single-flight get_or_compute, stats."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: redis.Redis | redis.cluster.RedisCluster | None = None,
        breaker_threshold: int = 5,
        breaker_reset: float = 5.0,
        lock_timeout: float = 10.0,
        stats_flush_interval: float = 1.0,
    ) -> None:
        super().__init__(settings, None, None, breaker_threshold, breaker_reset, lock_timeout, stats_flush_interval)
        self._owns_client = client is None
        self.client: Any = client if client is not None else (_sync_client(settings.redis) if settings.redis else None)
        if self.client is None and self.enabled:
            raise CacheError("settings.redis is None: call psra_bench.infra.ensure_services(settings) or pass client=.")
        self._cluster = isinstance(self.client, redis.cluster.RedisCluster)
        self._flights: dict[str, Future[Any]] = {}
        self._flights_lock = threading.Lock()
        self._aio: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncCacheService] = weakref.WeakKeyDictionary()

    # -- plain operations ---------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """The cached value of ``key``, or ``default`` on a miss (and when Redis is down or disabled)."""
        full = self.physical(key)
        if not self.enabled:
            return default
        entity = keys.entity_of(key)
        if self._skip(entity):
            return default
        started = time.perf_counter()
        try:
            raw = self.client.get(full)
        except REDIS_ERRORS as e:
            self._failed(entity, "GET", e)
            return default
        elapsed = time.perf_counter() - started
        self._answered()
        hit, value = self._decoded(entity, raw, default)
        if hit or raw is None:
            self.counters.record(entity, "hits" if hit else "misses", elapsed)
        if self._flush_due():
            self.flush_stats()
        return value

    def set(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` as JSON for ``ttl`` seconds (None: the entity's TTL); False when skipped.

        Unconditional: a value computed from the database belongs in :meth:`set_if_generation`.
        """
        full = self.physical(key)
        if not self.enabled:
            return False
        data, ms, entity = self.encode(key, value), self.ttl_ms(key, ttl), keys.entity_of(key)
        if self._skip(entity):
            return False
        try:
            self.client.set(full, data, px=ms)
        except REDIS_ERRORS as e:
            self._failed(entity, "SET", e)
            return False
        self._answered()
        self.counters.record(entity, "sets")
        return True

    def generation(self, key: str) -> str | None:
        """The invalidation generation of ``key``'s entity, to read *before* computing a value for it.

        None when Redis cannot be asked (then :meth:`set_if_generation` stores nothing).
        """
        token = uuid.uuid4().hex
        raw = self._simple(
            key,
            "EVAL generation",
            lambda _: self.client.eval(GENERATION_SCRIPT, 1, self.generation_physical(key), token),
            None,
        )
        return self._token(raw)

    def set_if_generation(self, key: str, value: Any, generation: str | None, ttl: float | None = None) -> bool:
        """Store ``value`` like :meth:`set`, unless ``key``'s entity was invalidated since ``generation`` was read.

        False when not stored: invalidated meanwhile (counted as ``stale``), ``generation`` None,
        or Redis down. On a cluster without a shared slot see :mod:`psra_bench.cache.core`.
        """
        full = self.physical(key)
        if not self.enabled:
            return False
        data, ms, entity = self.encode(key, value), self.ttl_ms(key, ttl), keys.entity_of(key)
        if generation is None or self._skip(entity):
            return False
        gen = self.generation_physical(key)
        try:
            if self._atomic_set(self._cluster, gen, full):
                stored = bool(self.client.eval(SET_IF_GENERATION_SCRIPT, 2, gen, full, generation, data, ms))
            else:  # cluster, two slots: set, then check; a changed generation takes our own value back
                self.client.set(full, data, px=ms)
                stored = self._token(self.client.get(gen)) == generation
                if not stored:
                    self.client.eval(RELEASE_SCRIPT, 1, full, data)
        except REDIS_ERRORS as e:
            self._failed(entity, "EVAL set-if-generation", e)
            return False
        self._answered()
        self.counters.record(entity, "sets" if stored else "stale")
        return stored

    def _simple(self, key: str, op: str, call: Callable[[str], Any], default: Any) -> Any:
        full = self.physical(key)
        if not self.enabled:
            return default
        entity = keys.entity_of(key)
        if self._skip(entity):
            return default
        try:
            result = call(full)
        except REDIS_ERRORS as e:
            self._failed(entity, op, e)
            return default
        self._answered()
        return result

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed."""
        deleted = bool(self._simple(key, "UNLINK", lambda k: self.client.unlink(k), 0))
        if deleted:
            self.counters.record(keys.entity_of(key), "deletes")
        return deleted

    def exists(self, key: str) -> bool:
        """Whether ``key`` is cached (False when Redis is down or the cache disabled)."""
        return bool(self._simple(key, "EXISTS", lambda k: self.client.exists(k), 0))

    def get_ttl(self, key: str) -> int | None:
        """Seconds ``key`` has left (-1: no expiry), or None when it is missing or Redis is down."""
        ttl = self._simple(key, "TTL", lambda k: self.client.ttl(k), None)
        return None if ttl is None or ttl == -2 else int(ttl)

    def delete_pattern(self, pattern: str) -> int:
        """Delete every key matching the glob ``pattern`` (SCAN + UNLINK, every cluster primary); return the count.

        First it starts a new generation of every entity the pattern may match, so a value being
        computed now is not stored afterwards (:meth:`set_if_generation`).
        """
        return self._invalidate([pattern])

    def _invalidate(self, patterns: list[str]) -> int:
        """New generations for the entities ``patterns`` may match, then SCAN + UNLINK each pattern; the count."""
        matches = [self._match(p) for p in patterns]
        if not self.enabled:
            return 0
        generations = sorted({g for p in patterns for g in self._generations_of(p)})
        total = 0
        for pattern, match in zip(patterns, matches, strict=True):
            count = self._sweep(pattern, match, generations)
            if count is not None:
                generations, total = [], total + count
        return total

    def _sweep(self, pattern: str, match: str, generations: list[str]) -> int | None:
        entity = keys.entity_of(pattern)
        if self._skip(entity):
            log.warning("cache: invalidation of %r skipped (circuit open)", pattern)
            return None
        try:
            if generations:  # before the sweep: a computation that began earlier stores nothing
                self.client.unlink(*generations)  # a cluster client splits it by slot
            if self._cluster:
                nodes = [self.client.get_redis_connection(n) for n in self.client.get_primaries()]
                count = keys.scan_unlink_nodes(
                    nodes, match, by_slot=True, fallback=lambda group: int(self.client.unlink(*group))
                )
            else:
                count = keys.scan_unlink_nodes([self.client], match)
        except REDIS_ERRORS as e:
            self._failed(entity, "SCAN/UNLINK", e)
            log.warning("cache: invalidation of %r failed; entries live until their TTL", pattern)
            return None
        self._answered()
        self.counters.record(entity, "deletes", amount=count)
        return count

    def ping(self) -> bool:
        """Whether Redis answers PING right now (asks the server even when the breaker is open)."""
        if self.client is None:
            return False
        try:
            ok = bool(self.client.ping())
        except REDIS_ERRORS:
            return False
        self._answered()
        return ok

    # -- single flight ------------------------------------------------------------
    def get_or_compute(
        self, key: str, compute: Callable[[], Any], ttl: float | None = None, lock_timeout: float | None = None
    ) -> Any:
        """The cached value of ``key``, else ``compute()`` run once among all concurrent callers and cached."""
        if not self.enabled:
            self.physical(key)
            return compute()
        self.ttl_ms(key, ttl)  # bad TTLs fail before any work
        value = self.get(key, MISSING)
        if value is not MISSING:
            return value
        with self._flights_lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = Future()
        if not leader:
            return flight.result()
        try:
            value = self._lead(key, compute, ttl, lock_timeout or self.lock_timeout)
        except BaseException as e:
            flight.set_exception(e)
            raise
        finally:
            with self._flights_lock:
                self._flights.pop(key, None)
        flight.set_result(value)
        return value

    def _peek(self, key: str, lock: str | None = None) -> tuple[bool, Any, bool | None]:
        """(found, value, lock held) without counting; lock held is None when Redis cannot be asked."""
        if not self.breaker.allow():
            return False, None, None
        try:
            if lock is None:
                raw, held = self.client.get(self.physical(key)), False
            else:
                pipe = self.client.pipeline(transaction=False)
                raw, held = pipe.get(self.physical(key)).exists(lock).execute()
        except REDIS_ERRORS as e:
            self._failed(keys.entity_of(key), "GET", e)
            return False, None, None
        self._answered()
        found, value = self._decoded(keys.entity_of(key), raw, None)
        return found, value, bool(held)

    def _try_lock(self, lock: str, token: str, timeout: float) -> str:
        if not self.breaker.allow():
            return "down"
        try:
            got = self.client.set(lock, token, nx=True, px=max(1, round(timeout * 1000)))
        except REDIS_ERRORS as e:
            self._failed("other", "SET NX", e)
            return "down"
        self._answered()
        return "acquired" if got else "busy"

    def _lead(self, key: str, compute: Callable[[], Any], ttl: float | None, timeout: float) -> Any:
        found, value, _ = self._peek(key)  # a flight that just ended may have filled it
        if found:
            return value
        lock, token = self.physical(LOCK_PREFIX + key), uuid.uuid4().hex
        state, deadline, delay = self._try_lock(lock, token, timeout), time.monotonic() + timeout, 0.002
        while state == "busy":  # another process computes: wait for its value or its lock to go
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
            found, value, held = self._peek(key, lock)
            if found:
                return value
            if held is None or time.monotonic() >= deadline:
                state = "down"
            elif not held:
                state = self._try_lock(lock, token, timeout)
        try:
            generation = self.generation(key)  # before computing: an invalidation from now on voids the set
            value = compute()
            self.set_if_generation(key, value, generation, ttl)
            return value
        finally:
            if state == "acquired":
                try:
                    self.client.eval(RELEASE_SCRIPT, 1, lock, token)
                except REDIS_ERRORS as e:
                    self._failed("other", "EVAL release", e)

    # -- stats --------------------------------------------------------------------
    def flush_stats(self) -> bool:
        """Add this process's pending counters to the shared Redis hash; False when Redis was not reached."""
        pending, send = self._flush_begin()
        if not pending or not send:
            return send
        try:
            pipe = self.client.pipeline(transaction=False)
            for name, amount in pending.items():
                pipe.hincrby(self.physical(STATS_KEY), name, amount)
            pipe.execute()
        except REDIS_ERRORS as e:
            self.counters.restore_pending(pending)
            self._failed("other", "HINCRBY", e)
            return False
        self._answered()
        return True

    def cluster_stats(self) -> dict[str, dict[str, Any]] | None:
        """Counters of every process sharing this namespace (the Redis hash), or None when unreachable."""
        if self.client is None:
            return None
        self.flush_stats()
        raw = self._simple(STATS_KEY, "HGETALL", lambda k: self.client.hgetall(k), None)
        return None if raw is None else CacheStats.from_hash(raw)

    def redis_keyspace_stats(self) -> dict[str, Any] | None:
        """Server-wide keyspace_hits/misses and hit rate from INFO stats, or None when unreachable."""
        if self.client is None:
            return None
        try:
            info = self.client.info("stats")
        except REDIS_ERRORS as e:
            self._failed("other", "INFO", e)
            return None
        return _keyspace(info)

    def reset_stats(self, shared: bool = True) -> None:
        """Zero this process's counters and (``shared``) delete the namespace's shared stats hash."""
        self.counters.reset()
        if shared and self.client is not None:
            self._simple(STATS_KEY, "UNLINK", lambda k: self.client.unlink(k), 0)

    def invalidate(self, entity: str) -> int:
        """New generation of ``entity`` (hs_codes, rules, assessments, verdicts), then delete its keys; the count."""
        return self._invalidate(keys.entity_patterns(entity))

    # -- lifecycle ----------------------------------------------------------------
    @property
    def aio(self) -> AsyncCacheService:
        """The asyncio twin for the running event loop (same namespace, counters and breaker)."""
        from psra_bench.cache.aio import AsyncCacheService

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise CacheError("CacheService.aio is only available inside a running event loop.") from None
        with self._flights_lock:
            service = self._aio.get(loop)
            if service is None or service.closed:
                if not self._owns_client:
                    raise CacheError(
                        "this CacheService was given its own client; build "
                        "AsyncCacheService(settings, client=...) for asyncio callers."
                    )
                service = AsyncCacheService(
                    self.settings,
                    stats=self.counters,
                    breaker=self.breaker,
                    lock_timeout=self.lock_timeout,
                    stats_flush_interval=self.stats_flush_interval,
                )
                self._aio[loop] = service
            return service

    def close(self) -> None:
        """Flush counters and close the connection pool (when this service created it)."""
        if self.client is not None and self.enabled:
            self.flush_stats()
        if self._owns_client and self.client is not None:
            self.client.close()


def _keyspace(info: dict[str, Any]) -> dict[str, Any]:
    hits, misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
    return {
        "keyspace_hits": hits,
        "keyspace_misses": misses,
        "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
    }
