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

Everything above is decided once in :class:`~psra_bench.cache.core.CacheCore`; this module holds only
the blocking I/O: the connection pool, carrying out the steps a core operation yields, the sweep
over a cluster's primaries, and the flight that threads of this process share.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from psra_bench.cache import keys
from psra_bench.cache.core import CacheCore, CacheOptions
from psra_bench.cache.steps import Call, Command, Compute, Flight, Op, Pipeline, Sleep, Step, Sweep
from psra_bench.exceptions import CacheError
from psra_bench.settings import RedisSettings, Settings

if TYPE_CHECKING:
    from psra_bench.cache.aio import AsyncCacheService

__all__ = ["CacheService"]

T = TypeVar("T")


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
    """Sync cache: get/set/delete/delete_pattern/exists/get_ttl/ping, single-flight get_or_compute, stats.

    Every decision is :class:`~psra_bench.cache.core.CacheCore`'s; this face only carries its steps
    out, blocking (:meth:`_run`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client: redis.Redis | redis.cluster.RedisCluster | None = None,
        **options: Unpack[CacheOptions],
    ) -> None:
        super().__init__(settings, client, _sync_client, redis.cluster.RedisCluster, **options)
        self._flights: dict[str, Future[Any]] = {}
        self._flights_lock = threading.Lock()
        self._aio: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncCacheService] = weakref.WeakKeyDictionary()

    # -- the I/O: one operation's steps, blocking -----------------------------------
    def _run(self, op: Op[T]) -> T:
        """Carry out the steps ``op`` yields, one after the other, and return its result."""
        try:
            step = next(op)
            while True:
                try:
                    reply = step.call(self.client) if type(step) is Command else self._do(step)
                except BaseException as e:  # raised in the operation, at its yield (its finally may still send)
                    step = op.throw(e)
                else:
                    step = op.send(reply)
        except StopIteration as stop:
            return stop.value

    def _do(self, step: Step) -> Any:
        if isinstance(step, Command | Pipeline):
            return step.call(self.client)
        if isinstance(step, Sweep):
            return self._sweep_keys(step.match)
        if isinstance(step, Call):  # the public method, as a subclass may have overridden it
            return getattr(self, step.name)(*step.args)
        if isinstance(step, Sleep):
            return time.sleep(step.seconds)
        if isinstance(step, Compute):
            return step.fn()
        return self._fly(step)

    def _sweep_keys(self, match: str) -> int:
        if self._cluster:  # every primary on its own, UNLINK per slot; a refused group goes through the cluster client
            nodes = [self.client.get_redis_connection(n) for n in self.client.get_primaries()]
            return keys.scan_unlink_nodes(
                nodes, match, by_slot=True, fallback=lambda group: int(self.client.unlink(*group))
            )
        return keys.scan_unlink_nodes([self.client], match)

    def _fly(self, step: Flight) -> Any:
        """Lead this process's flight for ``step.key`` (run ``step.lead``), or wait for the thread that leads it."""
        with self._flights_lock:
            flight = self._flights.get(step.key)
            leader = flight is None
            if flight is None:
                flight = self._flights[step.key] = Future()
        if not leader:
            return flight.result()
        try:
            value = self._run(step.lead)
        except BaseException as e:
            flight.set_exception(e)
            raise
        finally:
            with self._flights_lock:
                self._flights.pop(step.key, None)
        flight.set_result(value)
        return value

    # -- plain operations ---------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """The cached value of ``key``, or ``default`` on a miss (and when Redis is down or disabled)."""
        return self._run(self._get(key, default))

    FACE_GET = get  # a subclass that overrides get is called through it by get_or_compute (core._read_through)

    def set(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` as JSON for ``ttl`` seconds (None: the entity's TTL); False when skipped.

        Unconditional: a value computed from the database belongs in :meth:`set_if_generation`.
        """
        return self._run(self._set(key, value, ttl))

    def generation(self, key: str) -> str | None:
        """The invalidation generation of ``key``'s entity, to read *before* computing a value for it.

        None when Redis cannot be asked (then :meth:`set_if_generation` stores nothing).
        """
        return self._run(self._generation(key))

    def set_if_generation(self, key: str, value: Any, generation: str | None, ttl: float | None = None) -> bool:
        """Store ``value`` like :meth:`set`, unless ``key``'s entity was invalidated since ``generation`` was read.

        False when not stored: invalidated meanwhile (counted as ``stale``), ``generation`` None,
        or Redis down. On a cluster without a shared slot see :mod:`psra_bench.cache.core`.
        """
        return self._run(self._set_if_generation(key, value, generation, ttl))

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed."""
        return self._run(self._delete(key))

    def exists(self, key: str) -> bool:
        """Whether ``key`` is cached (False when Redis is down or the cache disabled)."""
        return self._run(self._exists(key))

    def get_ttl(self, key: str) -> int | None:
        """Seconds ``key`` has left (-1: no expiry), or None when it is missing or Redis is down."""
        return self._run(self._get_ttl(key))

    def delete_pattern(self, pattern: str) -> int:
        """Delete every key matching the glob ``pattern`` (SCAN + UNLINK, every cluster primary); return the count.

        First it starts a new generation of every entity the pattern may match, so a value being
        computed now is not stored afterwards (:meth:`set_if_generation`).
        """
        return self._run(self._invalidate([pattern]))

    def invalidate(self, entity: str) -> int:
        """New generation of ``entity`` (hs_codes, rules, assessments, verdicts), then delete its keys; the count."""
        return self._run(self._invalidate(keys.entity_patterns(entity)))

    def ping(self) -> bool:
        """Whether Redis answers PING right now (asks the server even when the breaker is open)."""
        return self._run(self._ping())

    def get_or_compute(
        self, key: str, compute: Callable[[], Any], ttl: float | None = None, lock_timeout: float | None = None
    ) -> Any:
        """The cached value of ``key``, else ``compute()`` run once among all concurrent callers and cached."""
        return self._run(self._read_through(key, Compute(compute), ttl, lock_timeout))

    # -- stats --------------------------------------------------------------------
    def flush_stats(self) -> bool:
        """Add this process's pending counters to the shared Redis hash; False when Redis was not reached."""
        return self._run(self._flush_stats())

    def cluster_stats(self) -> dict[str, dict[str, Any]] | None:
        """Counters of every process sharing this namespace (the Redis hash), or None when unreachable."""
        return self._run(self._cluster_stats())

    def redis_keyspace_stats(self) -> dict[str, Any] | None:
        """Server-wide keyspace_hits/misses and hit rate from INFO stats, or None when unreachable."""
        return self._run(self._keyspace_stats())

    def reset_stats(self, shared: bool = True) -> None:
        """Zero this process's counters and (``shared``) delete the namespace's shared stats hash."""
        self._run(self._reset_stats(shared))

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
        self._run(self._closing())
        if self._owns_client and self.client is not None:
            self.client.close()
