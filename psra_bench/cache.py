"""The cache service of the spec (section 1): JSON values in Redis, TTLs per entity, never a crash.

:class:`CacheService` (sync) and :class:`AsyncCacheService` (asyncio; ``cache.aio`` gives one per
running loop, sharing counters and circuit breaker) put ``settings.cache_namespace`` before every
key and JSON-encode every value (a value JSON cannot hold raises CacheSerializationError naming
the key). A dead or slow server never reaches callers: reads miss, writes are skipped, the error
counter rises, and a circuit breaker stops asking after repeated failures; only ``ping()``
bypasses it. ``settings.enable_cache=False`` makes reads miss and writes no-ops.

:func:`get_cache` with no argument uses the process settings (:func:`psra_bench.settings.process_settings`),
and the module-level ``cache_hs_code`` ... ``invalidate_rules`` delegate to it, as in the spec.
:func:`cache_result` and :func:`invalidate_cache` decorate sync and async functions; a miss is
computed once however many callers ask at the same time (an in-process flight per key plus a
Redis lock with a token, released by compare-and-delete). The spec's helpers are methods of
both services (``cache_hs_code``, ``get_cached_hs_code``, ``cache_rule``, ``get_cached_rule``,
``cache_assessment``, ``get_cached_assessment``, ``invalidate_hs_codes``, ``invalidate_rules``,
``invalidate_assessments``). Keys come from
:mod:`psra_bench.cache_keys`, counters and the breaker from :mod:`psra_bench.cache_stats`.
"""

from __future__ import annotations

import asyncio
import json
import logging
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
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from . import cache_keys as keys
from .cache_decorators import CacheLike, cache_result, invalidate_cache
from .cache_stats import CacheStats, CircuitBreaker
from .exceptions import CacheError, CacheSerializationError
from .settings import Settings, process_settings, redact

if TYPE_CHECKING:
    from .cache_async import AsyncCacheService

__all__ = [
    "MISSING",
    "STATS_KEY",
    "LOCK_PREFIX",
    "CacheService",
    "AsyncCacheService",
    "get_cache",
    "close_caches",
    "CacheLike",
    "cache_result",
    "invalidate_cache",
    "cache_hs_code",
    "get_cached_hs_code",
    "cache_rule",
    "get_cached_rule",
    "cache_assessment",
    "get_cached_assessment",
    "invalidate_hs_codes",
    "invalidate_rules",
]

_log = logging.getLogger(__name__)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: Default of ``get(key, default=MISSING)`` that tells a miss from a cached ``None``.
MISSING: Any = _Missing()
#: Logical key of the hash where every process adds its counters (under the namespace).
STATS_KEY = "psra:cache:stats"
#: Logical prefix of single-flight locks: ``lock:{key}``.
LOCK_PREFIX = "lock:"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_ERRORS = (redis.RedisError, RedisClusterException, OSError)
_TTL_ENTITIES = {"hs_codes", "rules", "assessments", "verdicts"}


def _short(value: object, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


class _Core:
    """What the sync and asyncio services share: keys, values, TTLs, counters, breaker."""

    def __init__(
        self,
        settings: Settings,
        stats: CacheStats | None,
        breaker: CircuitBreaker | None,
        breaker_threshold: int,
        breaker_reset: float,
        lock_timeout: float,
        stats_flush_interval: float,
    ) -> None:
        if not isinstance(lock_timeout, int | float) or lock_timeout <= 0:
            raise CacheError(f"lock_timeout={lock_timeout!r} is not valid: use seconds > 0.")
        self.settings = settings
        self.enabled = settings.enable_cache
        self.namespace = settings.cache_namespace
        self.counters = stats or CacheStats()
        self.breaker = breaker or CircuitBreaker(breaker_threshold, breaker_reset)
        self.lock_timeout = float(lock_timeout)
        self.stats_flush_interval = stats_flush_interval
        self._last_flush = time.monotonic()
        self._where = settings.redis.url(with_password=False) if settings.redis else "an injected client"

    def physical(self, key: str) -> str:
        """The key as stored: namespace + logical key (CacheError for an empty or non-string key)."""
        if not isinstance(key, str) or not key:
            raise CacheError(f"key={key!r} is not valid: use a non-empty string.", key=None)
        return self.namespace + key

    def _match(self, pattern: str) -> str:
        if not isinstance(pattern, str) or not pattern:
            raise CacheError(f"pattern={pattern!r} is not valid: use a non-empty glob string such as 'hs:*'.")
        return keys.escape_glob(self.namespace) + pattern

    @staticmethod
    def encode(key: str, value: Any) -> bytes:
        """JSON bytes of ``value``; CacheSerializationError naming ``key`` when JSON cannot hold it."""
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise CacheSerializationError(
                f"cannot cache key {key!r}: the value {_short(value)} is not JSON-serializable ({e}); "
                "store str, int, float, bool, None, lists or dicts with string keys",
                key=key,
            ) from e

    def ttl_ms(self, key: str, ttl: float | None) -> int:
        """Milliseconds to keep ``key``: ``ttl`` seconds, or the TTL of the key's entity (else the default)."""
        if ttl is None:
            entity = keys.entity_of(key)
            ttl = self.settings.ttl.for_entity(entity if entity in _TTL_ENTITIES else "default")
        elif isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
            raise CacheError(
                f"ttl={ttl!r} is not valid for key {key!r}: use seconds > 0, or None for the entity's TTL.", key=key
            )
        return max(1, round(ttl * 1000))

    def _skip(self, entity: str) -> bool:
        if self.breaker.allow():
            return False
        self.counters.record(entity, "skipped")
        return True

    def _answered(self) -> None:
        if self.breaker.success():
            _log.warning("cache: Redis at %s answers again; circuit breaker closed", self._where)

    def _failed(self, entity: str, op: str, error: BaseException) -> None:
        self.counters.record(entity, "errors")
        if isinstance(error, redis.ResponseError):
            self._answered()  # the server is alive; the command was wrong for this key
            _log.warning("cache: %s failed: %s", op, redact(str(error)))
            return
        if self.breaker.failure():
            _log.warning(
                "cache: Redis at %s failed %d times (%s: %s); circuit open, retry in %.1f s",
                self._where,
                self.breaker.failures,
                type(error).__name__,
                redact(str(error)),
                self.breaker.reset_after,
            )

    def _decoded(self, entity: str, raw: bytes | None, default: Any) -> tuple[bool, Any]:
        if raw is None:
            return False, default
        try:
            return True, json.loads(raw)
        except ValueError:  # written by someone else; treat as a miss
            self.counters.record(entity, "errors")
            return False, default

    def _flush_due(self) -> bool:
        return time.monotonic() - self._last_flush >= self.stats_flush_interval

    def _flush_begin(self) -> tuple[dict[str, int], bool]:
        """(pending increments, whether to send them now); unsent ones are put back."""
        self._last_flush = time.monotonic()
        pending = self.counters.take_pending()
        if pending and not self.breaker.allow():
            self.counters.restore_pending(pending)
            return pending, False
        return pending, True

    # -- entities -----------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:  # overridden by both services
        """The cached value of ``key`` or ``default``."""
        raise NotImplementedError

    def set(self, key: str, value: Any, ttl: float | None = None) -> Any:  # overridden by both services
        """Store ``value`` under ``key``."""
        raise NotImplementedError

    def cache_hs_code(self, code: str, data: Any, ttl: float | None = None) -> Any:
        """Cache one HS code under ``hs:code:{code}`` (TTL: settings.ttl.hs_codes); awaitable on the async service."""
        return self.set(keys.hs_code_key(code), data, ttl)

    def get_cached_hs_code(self, code: str) -> Any:
        """The cached HS code, or None."""
        return self.get(keys.hs_code_key(code))

    def cache_rule(self, rule_id: str, data: Any, ttl: float | None = None) -> Any:
        """Cache one rule under ``rule:id:{rule_id}`` (TTL: settings.ttl.rules)."""
        return self.set(keys.rule_key(rule_id), data, ttl)

    def get_cached_rule(self, rule_id: str) -> Any:
        """The cached rule, or None."""
        return self.get(keys.rule_key(rule_id))

    def cache_assessment(
        self, rule_id: str, hs_code: str, origin_country: str, dest_country: str, result: Any, ttl: float | None = None
    ) -> Any:
        """Cache one assessment result (TTL: settings.ttl.assessments)."""
        return self.set(keys.assessment_key(rule_id, hs_code, origin_country, dest_country), result, ttl)

    def get_cached_assessment(self, rule_id: str, hs_code: str, origin_country: str, dest_country: str) -> Any:
        """The cached assessment result, or None."""
        return self.get(keys.assessment_key(rule_id, hs_code, origin_country, dest_country))

    def invalidate(self, entity: str) -> Any:  # overridden by both services
        """Delete every key of ``entity``; return the count."""
        raise NotImplementedError

    def invalidate_hs_codes(self) -> Any:
        """Delete ``hs:*`` (codes and searches); return the count (awaitable on the async service)."""
        return self.invalidate("hs_codes")

    def invalidate_rules(self) -> Any:
        """Delete ``rule:*`` and ``rules:*``; return the count."""
        return self.invalidate("rules")

    def invalidate_assessments(self) -> Any:
        """Delete ``assessment:*``; return the count."""
        return self.invalidate("assessments")

    def stats(self) -> dict[str, Any]:
        """This process's counters per entity (hits, misses, errors, skipped, sets, deletes, latencies)."""
        return {
            "enabled": self.enabled,
            "namespace": self.namespace,
            "breaker": self.breaker.as_dict(),
            "entities": self.counters.snapshot(),
        }


def _sync_client(settings: Settings) -> redis.Redis:
    assert settings.redis is not None
    kwargs = settings.redis.client_kwargs()
    if kwargs.pop("ssl", False):  # a pool takes TLS as its connection class
        kwargs["connection_class"] = redis.SSLConnection
    # One immediate retry repairs a connection the server dropped (restart); a timeout is not retried.
    pool = redis.BlockingConnectionPool(
        max_connections=settings.redis.max_connections,
        timeout=max(1.0, settings.redis.socket_timeout),
        **kwargs,
        retry=Retry(NoBackoff(), 1, (redis.ConnectionError,)),
    )
    return redis.Redis.from_pool(pool)


class CacheService(_Core):
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
        self.client: Any = client if client is not None else (_sync_client(settings) if settings.redis else None)
        if self.client is None and self.enabled:
            raise CacheError("settings.redis is None: call services.ensure_services(settings) first, or pass client=.")
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
        except _ERRORS as e:
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
        """Store ``value`` as JSON for ``ttl`` seconds (None: the entity's TTL); False when skipped."""
        full = self.physical(key)
        if not self.enabled:
            return False
        data, ms, entity = self.encode(key, value), self.ttl_ms(key, ttl), keys.entity_of(key)
        if self._skip(entity):
            return False
        try:
            self.client.set(full, data, px=ms)
        except _ERRORS as e:
            self._failed(entity, "SET", e)
            return False
        self._answered()
        self.counters.record(entity, "sets")
        return True

    def _simple(self, key: str, op: str, call: Callable[[str], Any], default: Any) -> Any:
        full = self.physical(key)
        if not self.enabled:
            return default
        entity = keys.entity_of(key)
        if self._skip(entity):
            return default
        try:
            result = call(full)
        except _ERRORS as e:
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
        """Delete every key matching the glob ``pattern`` (SCAN + UNLINK, every cluster primary); return the count."""
        match = self._match(pattern)
        if not self.enabled:
            return 0
        entity = keys.entity_of(pattern)
        if self._skip(entity):
            _log.warning("cache: invalidation of %r skipped (circuit open)", pattern)
            return 0
        try:
            if isinstance(self.client, redis.cluster.RedisCluster):
                nodes = [self.client.get_redis_connection(n) for n in self.client.get_primaries()]
                count = keys.scan_unlink_nodes(
                    nodes, match, by_slot=True, fallback=lambda group: int(self.client.unlink(*group))
                )
            else:
                count = keys.scan_unlink_nodes([self.client], match)
        except _ERRORS as e:
            self._failed(entity, "SCAN/UNLINK", e)
            _log.warning("cache: invalidation of %r failed; entries live until their TTL", pattern)
            return 0
        self._answered()
        self.counters.record(entity, "deletes", amount=count)
        return count

    def ping(self) -> bool:
        """Whether Redis answers PING right now (asks the server even when the breaker is open)."""
        if self.client is None:
            return False
        try:
            ok = bool(self.client.ping())
        except _ERRORS:
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
        except _ERRORS as e:
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
        except _ERRORS as e:
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
            value = compute()
            self.set(key, value, ttl)
            return value
        finally:
            if state == "acquired":
                try:
                    self.client.eval(_RELEASE, 1, lock, token)
                except _ERRORS as e:
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
        except _ERRORS as e:
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
        except _ERRORS as e:
            self._failed("other", "INFO", e)
            return None
        return _keyspace(info)

    def reset_stats(self, shared: bool = True) -> None:
        """Zero this process's counters and (``shared``) delete the namespace's shared stats hash."""
        self.counters.reset()
        if shared and self.client is not None:
            self._simple(STATS_KEY, "UNLINK", lambda k: self.client.unlink(k), 0)

    def invalidate(self, entity: str) -> int:
        """Delete every key of ``entity`` (hs_codes, rules, assessments, verdicts); return the count."""
        return sum(self.delete_pattern(p) for p in keys.entity_patterns(entity))

    # -- lifecycle ----------------------------------------------------------------
    @property
    def aio(self) -> AsyncCacheService:
        """The asyncio twin for the running event loop (same namespace, counters and breaker)."""
        from .cache_async import AsyncCacheService

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


def __getattr__(name: str) -> Any:
    """``AsyncCacheService`` is defined in cache_async (it builds on _Core above) and re-exported here lazily."""
    if name == "AsyncCacheService":
        from .cache_async import AsyncCacheService

        return AsyncCacheService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- shared services and helpers

_SERVICES: dict[Settings, CacheService] = {}
_SERVICES_LOCK = threading.Lock()


def get_cache(settings: Settings | None = None) -> CacheService:
    """The one shared CacheService of ``settings`` (default: settings.process_settings()), created on first use."""
    settings = process_settings() if settings is None else settings
    with _SERVICES_LOCK:
        service = _SERVICES.get(settings)
        if service is None:
            service = _SERVICES[settings] = CacheService(settings)
        return service


def close_caches() -> None:
    """Close and forget every service made by :func:`get_cache`."""
    with _SERVICES_LOCK:
        services = list(_SERVICES.values())
        _SERVICES.clear()
    for service in services:
        service.close()


# --------------------------------------------------------------------------- the spec's module-level helpers
# Thin functions over get_cache() (the process settings), so the spec's examples run as written.


def cache_hs_code(code: str, data: Any, ttl: float | None = None) -> bool:
    """Cache one HS code under ``hs:code:{code}`` in the process cache (TTL: settings.ttl.hs_codes)."""
    return bool(get_cache().cache_hs_code(code, data, ttl))


def get_cached_hs_code(code: str) -> Any:
    """The HS code cached in the process cache, or None."""
    return get_cache().get_cached_hs_code(code)


def cache_rule(rule_id: str, data: Any, ttl: float | None = None) -> bool:
    """Cache one rule under ``rule:id:{rule_id}`` in the process cache (TTL: settings.ttl.rules)."""
    return bool(get_cache().cache_rule(rule_id, data, ttl))


def get_cached_rule(rule_id: str) -> Any:
    """The rule cached in the process cache, or None."""
    return get_cache().get_cached_rule(rule_id)


def cache_assessment(
    rule_id: str, hs_code: str, origin_country: str, dest_country: str, result: Any, ttl: float | None = None
) -> bool:
    """Cache one assessment result in the process cache (TTL: settings.ttl.assessments)."""
    return bool(get_cache().cache_assessment(rule_id, hs_code, origin_country, dest_country, result, ttl))


def get_cached_assessment(rule_id: str, hs_code: str, origin_country: str, dest_country: str) -> Any:
    """The assessment result cached in the process cache, or None."""
    return get_cache().get_cached_assessment(rule_id, hs_code, origin_country, dest_country)


def invalidate_hs_codes() -> int:
    """Delete ``hs:*`` from the process cache; return the count."""
    return int(get_cache().invalidate_hs_codes())


def invalidate_rules() -> int:
    """Delete ``rule:*`` and ``rules:*`` from the process cache; return the count."""
    return int(get_cache().invalidate_rules())
