"""The asyncio twin of :class:`psra_bench.cache.service.CacheService` (same keys, values, resilience, single flight).

``CacheService.aio`` gives one per running event loop, sharing the sync service's counters and
circuit breaker; build one yourself with ``AsyncCacheService(settings)`` (or ``client=`` an
asyncio ``Redis``/``RedisCluster``) and ``await service.aclose()`` when done. A computed value is
stored only if its entity was not invalidated while it was computed (see :mod:`psra_bench.cache.core`).
Every decision is :class:`~psra_bench.cache.core.CacheCore`'s, as for the sync service; this module
holds only the awaiting: the connection pool, awaiting the steps a core operation yields, and the
flight that tasks of one loop share.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, Unpack

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
from redis.backoff import NoBackoff

from psra_bench.cache import keys
from psra_bench.cache.core import CacheCore, CacheOptions
from psra_bench.cache.steps import RETRY, Call, Command, Compute, Flight, Op, Pipeline, Sleep, Step, Sweep
from psra_bench.settings import RedisSettings, Settings

__all__ = ["AsyncCacheService", "StepDeadlines"]

T = TypeVar("T")


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
    # The service bounds each step with one asyncio.timeout (AsyncCacheService._run) instead: redis-py's
    # socket_timeout guards every write with asyncio.wait_for, a new task per command on Python 3.11, and
    # every read with a timeout of its own (about 7 % of a cached lookup's CPU, benchmarks/bench_api.py).
    # A step cut short disconnects its connection (redis-py does so on any exception mid-command).
    kwargs["socket_timeout"] = None
    if kwargs.pop("ssl", False):  # a pool takes TLS as its connection class
        kwargs["connection_class"] = redis.asyncio.SSLConnection
    pool = WaitingConnectionPool(
        max_connections=redis_settings.max_connections,
        wait_seconds=max(1.0, redis_settings.socket_timeout),
        retry=redis.asyncio.retry.Retry(NoBackoff(), 1, (redis.ConnectionError,)),
        **kwargs,
    )
    return redis.asyncio.Redis.from_pool(pool)


class StepDeadlines:
    """The Redis steps in flight on one event loop and when each must be done; one timer checks them all.

    ``asyncio.timeout`` costs a context manager, a Timeout object and a timer-heap entry per step
    (about 4 µs here, a few % of a cached lookup). This keeps one dict entry per step in flight and
    one timer, armed only while steps are in flight, that looks every ``tick`` seconds: a step past
    its deadline is cancelled there (within ``tick`` of it) and raises TimeoutError, as under
    ``asyncio.timeout`` — including a task cancelled from outside at the same time, which stays
    cancelled.
    """

    def __init__(self, seconds: float, tick: float = 0.05) -> None:
        self.seconds, self.tick = seconds, tick
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, step: Command | Pipeline, client: Any) -> Any:
        """``await step.call(client)``, cancelled with TimeoutError once it has taken ``seconds``."""
        task = asyncio.current_task()
        assert task is not None, "a cache step runs in a task"
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new loop (tests, a second asyncio.run): the old timer died with its loop
            self._loop, self._timer = loop, None
            self._due.clear()
            self._expired.clear()
        cancelling = task.cancelling()
        self._due[task] = time.monotonic() + self.seconds
        if self._timer is None:
            self._timer = loop.call_later(self.tick, self._check)
        try:
            return await step.call(client)
        except asyncio.CancelledError:
            if task in self._expired:
                self._expired.discard(task)
                if task.uncancel() <= cancelling:
                    raise TimeoutError(f"the Redis step took more than {self.seconds:g} s") from None
            raise
        finally:
            self._due.pop(task, None)

    def _check(self) -> None:
        self._timer = None
        now = time.monotonic()
        for task, due in list(self._due.items()):
            if due <= now:
                del self._due[task]
                self._expired.add(task)
                task.cancel()
        if self._due and self._loop is not None:
            self._timer = self._loop.call_later(self.tick, self._check)


class AsyncCacheService(CacheCore):
    """Asyncio twin of :class:`CacheService` (same keys, values, resilience and single flight), one per loop.

    Every decision is :class:`~psra_bench.cache.core.CacheCore`'s; this face only awaits its steps (:meth:`_run`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster | None = None,
        **options: Unpack[CacheOptions],
    ) -> None:
        super().__init__(settings, client, _async_client, redis.asyncio.cluster.RedisCluster, **options)
        self._flights: dict[str, asyncio.Future[Any]] = {}
        self.closed = False
        #: Seconds one Redis step may take (a client given to us keeps its own timeouts).
        self._deadline = settings.redis.socket_timeout if self._owns_client and settings.redis else None
        self._deadlines = StepDeadlines(self._deadline) if self._deadline is not None else None

    # -- the I/O: one operation's steps, awaited ------------------------------------
    async def _run(self, op: Op[T]) -> T:
        """Await the steps ``op`` yields, one after the other, and return its result."""
        try:
            step = next(op)
            while True:
                try:
                    if type(step) is Command:
                        if self._deadlines is None:
                            reply = await step.call(self.client)
                        else:
                            reply = await self._deadlines.run(step, self.client)
                    else:
                        reply = await self._do(step)
                except BaseException as e:  # raised in the operation, at its yield (its finally may still send)
                    step = op.throw(e)
                else:
                    step = op.send(reply)
        except StopIteration as stop:
            return stop.value

    async def _do(self, step: Step) -> Any:
        if isinstance(step, Command | Pipeline):
            if self._deadlines is None:
                return await step.call(self.client)
            return await self._deadlines.run(step, self.client)
        if isinstance(step, Sweep):
            if self._cluster:
                return await keys.ascan_unlink_cluster(self.client, step.match)
            return await keys.ascan_unlink_nodes([self.client], step.match, deadline=self._deadline)
        if isinstance(step, Call):  # the public method, as a subclass may have overridden it
            return await getattr(self, step.name)(*step.args)
        if isinstance(step, Sleep):
            return await asyncio.sleep(step.seconds)
        if isinstance(step, Compute):
            return await step.fn()
        return await self._fly(step)

    async def _fly(self, step: Flight) -> Any:
        """Lead this loop's flight for ``step.key`` (run ``step.lead``), or wait for the task that leads it.

        RETRY when the leader was cancelled but this task was not: the core then asks again.
        """
        flight = self._flights.get(step.key)
        if flight is not None:
            try:
                return await asyncio.shield(flight)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if flight.cancelled() and task is not None and not task.cancelling():
                    return RETRY
                raise
        flight = self._flights[step.key] = asyncio.get_running_loop().create_future()
        try:
            value = await self._run(step.lead)
        except asyncio.CancelledError:
            flight.cancel()
            raise
        except BaseException as e:
            flight.set_exception(e)
            flight.exception()  # retrieved: no "never retrieved" log when nobody waited
            raise
        finally:
            self._flights.pop(step.key, None)
        flight.set_result(value)
        return value

    # -- plain operations ---------------------------------------------------------
    async def get(self, key: str, default: Any = None) -> Any:
        """The cached value of ``key``, or ``default`` on a miss (and when Redis is down or disabled)."""
        return await self._run(self._get(key, default))

    FACE_GET = get  # a subclass that overrides get is called through it by get_or_compute (core._read_through)

    async def set(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` as JSON for ``ttl`` seconds (None: the entity's TTL); False when skipped (unconditional)."""
        return await self._run(self._set(key, value, ttl))

    async def generation(self, key: str) -> str | None:
        """The invalidation generation of ``key``'s entity, to read *before* computing a value; None: Redis down."""
        return await self._run(self._generation(key))

    async def set_if_generation(self, key: str, value: Any, generation: str | None, ttl: float | None = None) -> bool:
        """Store ``value`` like :meth:`set`, unless ``key``'s entity was invalidated since ``generation`` was read."""
        return await self._run(self._set_if_generation(key, value, generation, ttl))

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed."""
        return await self._run(self._delete(key))

    async def exists(self, key: str) -> bool:
        """Whether ``key`` is cached (False when Redis is down or the cache disabled)."""
        return await self._run(self._exists(key))

    async def get_ttl(self, key: str) -> int | None:
        """Seconds ``key`` has left (-1: no expiry), or None when it is missing or Redis is down."""
        return await self._run(self._get_ttl(key))

    async def delete_pattern(self, pattern: str) -> int:
        """Delete every key matching the glob ``pattern`` (SCAN + UNLINK, every cluster primary); return the count.

        First it starts a new generation of every entity the pattern may match (as the sync service).
        """
        return await self._run(self._invalidate([pattern]))

    async def invalidate(self, entity: str) -> int:
        """New generation of ``entity`` (hs_codes, rules, assessments, verdicts), then delete its keys; the count."""
        return await self._run(self._invalidate(keys.entity_patterns(entity)))

    async def ping(self) -> bool:
        """Whether Redis answers PING right now (asks the server even when the breaker is open)."""
        return await self._run(self._ping())

    async def get_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[Any]],
        ttl: float | None = None,
        lock_timeout: float | None = None,
    ) -> Any:
        """The cached value of ``key``, else ``await compute()`` run once among all concurrent callers."""
        return await self._run(self._read_through(key, Compute(compute), ttl, lock_timeout))

    # -- stats --------------------------------------------------------------------
    async def flush_stats(self) -> bool:
        """Add the pending counters to the shared Redis hash; False when Redis was not reached."""
        return await self._run(self._flush_stats())

    async def cluster_stats(self) -> dict[str, dict[str, Any]] | None:
        """Counters of every process sharing this namespace (the Redis hash), or None when unreachable."""
        return await self._run(self._cluster_stats())

    async def redis_keyspace_stats(self) -> dict[str, Any] | None:
        """Server-wide keyspace_hits/misses and hit rate from INFO stats, or None when unreachable."""
        return await self._run(self._keyspace_stats())

    async def reset_stats(self, shared: bool = True) -> None:
        """Zero this process's counters and (``shared``) delete the namespace's shared stats hash."""
        await self._run(self._reset_stats(shared))

    # -- lifecycle ----------------------------------------------------------------
    async def aclose(self) -> None:
        """Flush counters and close the connection pool (when this service created it)."""
        if self.closed:
            return
        self.closed = True
        await self._run(self._closing())
        if self._owns_client and self.client is not None:
            await self.client.aclose()
