"""The asyncio twin of :class:`psra_bench.cache.service.CacheService` (same keys, values, resilience, single flight).

``CacheService.aio`` gives one per running event loop, sharing the sync service's counters and
circuit breaker; build one yourself with ``AsyncCacheService(settings)`` (or ``client=`` an
asyncio ``Redis``/``RedisCluster``) and ``await service.aclose()`` when done. A computed value is
stored only if its entity was not invalidated while it was computed (see :mod:`psra_bench.cache.core`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
from redis.backoff import NoBackoff

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
from psra_bench.cache.stats import CacheStats, CircuitBreaker
from psra_bench.exceptions import CacheError
from psra_bench.settings import RedisSettings, Settings

__all__ = ["AsyncCacheService"]


class WaitingConnectionPool(redis.asyncio.ConnectionPool):
    """A pool of at most ``max_connections`` that waits up to ``wait_seconds`` for a free one (then ConnectionError).

    What redis-py's BlockingConnectionPool does, with an asyncio.Semaphore in front of the plain
    pool instead of a Condition around it: benchmarks/bench_api.py found the blocking pool's
    bookkeeping to cost about 13 µs of a 65 µs cached GET. A slot is held from ``get_connection``
    until ``release`` of that connection (``_slotted`` remembers which connections hold one, so a
    connection the plain pool hands back itself, on a failed connect, never frees a slot twice).
    """

    def __init__(self, *, wait_seconds: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wait_seconds = wait_seconds
        self._slots = asyncio.Semaphore(self.max_connections)
        self._slotted: set[Any] = set()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._slots.locked():  # all in use: wait for one, but not forever
            try:
                async with asyncio.timeout(self.wait_seconds):
                    await self._slots.acquire()
            except TimeoutError:
                raise redis.ConnectionError(
                    f"no Redis connection became free within {self.wait_seconds:g} s ({self.max_connections} in use)"
                ) from None
        else:
            await self._slots.acquire()
        try:
            connection = await super().get_connection(*args, **kwargs)
        except BaseException:
            self._slots.release()
            raise
        self._slotted.add(connection)
        return connection

    async def release(self, connection: Any) -> None:
        try:
            await super().release(connection)
        finally:
            if connection in self._slotted:
                self._slotted.discard(connection)
                self._slots.release()


def _async_client(redis_settings: RedisSettings) -> redis.asyncio.Redis:
    kwargs = redis_settings.client_kwargs()
    if kwargs.pop("ssl", False):  # a pool takes TLS as its connection class
        kwargs["connection_class"] = redis.asyncio.SSLConnection
    pool = WaitingConnectionPool(
        max_connections=redis_settings.max_connections,
        wait_seconds=max(1.0, redis_settings.socket_timeout),
        retry=redis.asyncio.retry.Retry(NoBackoff(), 1, (redis.ConnectionError,)),
        **kwargs,
    )
    return redis.asyncio.Redis.from_pool(pool)


class AsyncCacheService(CacheCore):
    """Asyncio twin of :class:`CacheService` (same keys, values, resilience and single flight), one per loop."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster | None = None,
        stats: CacheStats | None = None,
        breaker: CircuitBreaker | None = None,
        breaker_threshold: int = 5,
        breaker_reset: float = 5.0,
        lock_timeout: float = 10.0,
        stats_flush_interval: float = 1.0,
    ) -> None:
        super().__init__(settings, stats, breaker, breaker_threshold, breaker_reset, lock_timeout, stats_flush_interval)
        self._owns_client = client is None
        self.client: Any = client if client is not None else (_async_client(settings.redis) if settings.redis else None)
        if self.client is None and self.enabled:
            raise CacheError("settings.redis is None: call psra_bench.infra.ensure_services(settings) or pass client=.")
        self._cluster = isinstance(self.client, redis.asyncio.cluster.RedisCluster)
        self._flights: dict[str, asyncio.Future[Any]] = {}
        self.closed = False

    async def get(self, key: str, default: Any = None) -> Any:
        """The cached value of ``key``, or ``default`` on a miss (and when Redis is down or disabled)."""
        full = self.physical(key)
        if not self.enabled:
            return default
        entity = keys.entity_of(key)
        if self._skip(entity):
            return default
        started = time.perf_counter()
        try:
            raw = await self.client.get(full)
        except REDIS_ERRORS as e:
            self._failed(entity, "GET", e)
            return default
        elapsed = time.perf_counter() - started
        self._answered()
        hit, value = self._decoded(entity, raw, default)
        if hit or raw is None:
            self.counters.record(entity, "hits" if hit else "misses", elapsed)
        if self._flush_due():
            await self.flush_stats()
        return value

    async def set(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` as JSON for ``ttl`` seconds (None: the entity's TTL); False when skipped (unconditional)."""
        full = self.physical(key)
        if not self.enabled:
            return False
        data, ms, entity = self.encode(key, value), self.ttl_ms(key, ttl), keys.entity_of(key)
        if await self._simple(key, "SET", lambda k: self.client.set(full, data, px=ms), None) is None:
            return False
        self.counters.record(entity, "sets")
        return True

    async def generation(self, key: str) -> str | None:
        """The invalidation generation of ``key``'s entity, to read *before* computing a value; None: Redis down."""
        token = uuid.uuid4().hex
        raw = await self._simple(
            key,
            "EVAL generation",
            lambda _: self.client.eval(GENERATION_SCRIPT, 1, self.generation_physical(key), token),
            None,
        )
        return self._token(raw)

    async def set_if_generation(self, key: str, value: Any, generation: str | None, ttl: float | None = None) -> bool:
        """Store ``value`` like :meth:`set`, unless ``key``'s entity was invalidated since ``generation`` was read."""
        full = self.physical(key)
        if not self.enabled:
            return False
        data, ms, entity = self.encode(key, value), self.ttl_ms(key, ttl), keys.entity_of(key)
        if generation is None or self._skip(entity):
            return False
        gen = self.generation_physical(key)
        try:
            if self._atomic_set(self._cluster, gen, full):
                stored = bool(await self.client.eval(SET_IF_GENERATION_SCRIPT, 2, gen, full, generation, data, ms))
            else:  # cluster, two slots: set, then check; a changed generation takes our own value back
                await self.client.set(full, data, px=ms)
                stored = self._token(await self.client.get(gen)) == generation
                if not stored:
                    await self.client.eval(RELEASE_SCRIPT, 1, full, data)
        except REDIS_ERRORS as e:
            self._failed(entity, "EVAL set-if-generation", e)
            return False
        self._answered()
        self.counters.record(entity, "sets" if stored else "stale")
        return stored

    async def _simple(self, key: str, op: str, call: Callable[[str], Awaitable[Any]], default: Any) -> Any:
        full = self.physical(key)
        if not self.enabled:
            return default
        entity = keys.entity_of(key)
        if self._skip(entity):
            return default
        try:
            result = await call(full)
        except REDIS_ERRORS as e:
            self._failed(entity, op, e)
            return default
        self._answered()
        return result

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed."""
        deleted = bool(await self._simple(key, "UNLINK", lambda k: self.client.unlink(k), 0))
        if deleted:
            self.counters.record(keys.entity_of(key), "deletes")
        return deleted

    async def exists(self, key: str) -> bool:
        """Whether ``key`` is cached (False when Redis is down or the cache disabled)."""
        return bool(await self._simple(key, "EXISTS", lambda k: self.client.exists(k), 0))

    async def get_ttl(self, key: str) -> int | None:
        """Seconds ``key`` has left (-1: no expiry), or None when it is missing or Redis is down."""
        ttl = await self._simple(key, "TTL", lambda k: self.client.ttl(k), None)
        return None if ttl is None or ttl == -2 else int(ttl)

    async def delete_pattern(self, pattern: str) -> int:
        """Delete every key matching the glob ``pattern`` (SCAN + UNLINK, every cluster primary); return the count.

        First it starts a new generation of every entity the pattern may match (as the sync service).
        """
        return await self._invalidate([pattern])

    async def _invalidate(self, patterns: list[str]) -> int:
        """New generations for the entities ``patterns`` may match, then SCAN + UNLINK each pattern; the count."""
        matches = [self._match(p) for p in patterns]
        if not self.enabled:
            return 0
        generations = sorted({g for p in patterns for g in self._generations_of(p)})
        total = 0
        for pattern, match in zip(patterns, matches, strict=True):
            count = await self._sweep(pattern, match, generations)
            if count is not None:
                generations, total = [], total + count
        return total

    async def _sweep(self, pattern: str, match: str, generations: list[str]) -> int | None:
        entity = keys.entity_of(pattern)
        if self._skip(entity):
            log.warning("cache: invalidation of %r skipped (circuit open)", pattern)
            return None
        try:
            if generations:  # before the sweep: a computation that began earlier stores nothing
                await self.client.unlink(*generations)  # a cluster client splits it by slot
            if self._cluster:
                count = await keys.ascan_unlink_cluster(self.client, match)
            else:
                count = await keys.ascan_unlink_nodes([self.client], match)
        except REDIS_ERRORS as e:
            self._failed(entity, "SCAN/UNLINK", e)
            log.warning("cache: invalidation of %r failed; entries live until their TTL", pattern)
            return None
        self._answered()
        self.counters.record(entity, "deletes", amount=count)
        return count

    async def invalidate(self, entity: str) -> int:
        """New generation of ``entity`` (hs_codes, rules, assessments, verdicts), then delete its keys; the count."""
        return await self._invalidate(keys.entity_patterns(entity))

    async def ping(self) -> bool:
        """Whether Redis answers PING right now (asks the server even when the breaker is open)."""
        if self.client is None:
            return False
        try:
            ok = bool(await self.client.ping())
        except REDIS_ERRORS:
            return False
        self._answered()
        return ok

    async def get_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[Any]],
        ttl: float | None = None,
        lock_timeout: float | None = None,
    ) -> Any:
        """The cached value of ``key``, else ``await compute()`` run once among all concurrent callers."""
        if not self.enabled:
            self.physical(key)
            return await compute()
        self.ttl_ms(key, ttl)
        value = await self.get(key, MISSING)
        if value is not MISSING:
            return value
        flight = self._flights.get(key)
        if flight is not None:
            try:
                return await asyncio.shield(flight)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if flight.cancelled() and task is not None and not task.cancelling():
                    return await self.get_or_compute(key, compute, ttl, lock_timeout)  # the leader was cancelled
                raise
        flight = self._flights[key] = asyncio.get_running_loop().create_future()
        try:
            value = await self._lead(key, compute, ttl, lock_timeout or self.lock_timeout)
        except asyncio.CancelledError:
            flight.cancel()
            raise
        except BaseException as e:
            flight.set_exception(e)
            flight.exception()  # retrieved: no "never retrieved" log when nobody waited
            raise
        finally:
            self._flights.pop(key, None)
        flight.set_result(value)
        return value

    async def _peek(self, key: str, lock: str | None = None) -> tuple[bool, Any, bool | None]:
        if not self.breaker.allow():
            return False, None, None
        try:
            if lock is None:
                raw, held = await self.client.get(self.physical(key)), False
            else:
                pipe = self.client.pipeline(transaction=False)
                pipe.get(self.physical(key))
                pipe.exists(lock)
                raw, held = await pipe.execute()
        except REDIS_ERRORS as e:
            self._failed(keys.entity_of(key), "GET", e)
            return False, None, None
        self._answered()
        found, value = self._decoded(keys.entity_of(key), raw, None)
        return found, value, bool(held)

    async def _try_lock(self, lock: str, token: str, timeout: float) -> str:
        got = await self._simple(
            LOCK_PREFIX,
            "SET NX",
            lambda _: self.client.set(lock, token, nx=True, px=max(1, round(timeout * 1000))),
            "down",
        )
        return "down" if got == "down" else ("acquired" if got else "busy")

    async def _lead(self, key: str, compute: Callable[[], Awaitable[Any]], ttl: float | None, timeout: float) -> Any:
        found, value, _ = await self._peek(key)
        if found:
            return value
        lock, token = self.physical(LOCK_PREFIX + key), uuid.uuid4().hex
        state, deadline, delay = await self._try_lock(lock, token, timeout), time.monotonic() + timeout, 0.002
        while state == "busy":
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            found, value, held = await self._peek(key, lock)
            if found:
                return value
            if held is None or time.monotonic() >= deadline:
                state = "down"
            elif not held:
                state = await self._try_lock(lock, token, timeout)
        try:
            generation = await self.generation(key)  # before computing: an invalidation from now on voids the set
            value = await compute()
            await self.set_if_generation(key, value, generation, ttl)
            return value
        finally:
            if state == "acquired":
                await self._simple(
                    LOCK_PREFIX, "EVAL release", lambda _: self.client.eval(RELEASE_SCRIPT, 1, lock, token), 0
                )

    async def flush_stats(self) -> bool:
        """Add the pending counters to the shared Redis hash; False when Redis was not reached."""
        pending, send = self._flush_begin()
        if not pending or not send:
            return send
        try:
            pipe = self.client.pipeline(transaction=False)
            for name, amount in pending.items():
                pipe.hincrby(self.physical(STATS_KEY), name, amount)
            await pipe.execute()
        except REDIS_ERRORS as e:
            self.counters.restore_pending(pending)
            self._failed("other", "HINCRBY", e)
            return False
        self._answered()
        return True

    async def aclose(self) -> None:
        """Flush counters and close the connection pool (when this service created it)."""
        if self.closed:
            return
        self.closed = True
        if self.client is not None and self.enabled:
            await self.flush_stats()
        if self._owns_client and self.client is not None:
            await self.client.aclose()
