"""What the sync and asyncio cache services share: key namespacing, JSON values, TTLs, counters, breaker.

:class:`CacheCore` holds everything that does not talk to Redis, so :mod:`psra_bench.cache.service`
(sync) and :mod:`psra_bench.cache.aio` (asyncio) differ only in how they send commands.

**Invalidation generations.** A reader that misses, computes from the database and then sets
could put back a value a writer has just invalidated, for a whole TTL. So every entity has a
generation: a random token under ``{namespace}gen:{entity}``. Every invalidation (``invalidate``,
``delete_pattern``, ``@invalidate_cache``) deletes the tokens of the entities it may touch
*before* it sweeps; a computing reader reads (or creates) the token *before* it computes, and its
``set_if_generation`` stores only while the token is unchanged (:data:`SET_IF_GENERATION_SCRIPT`,
one atomic compare-then-SET). Tokens are never reused, so a token deleted by a sweep or evicted
only drops a few writes, never lets a stale one through. A hit reads only the value: no extra
round trip. On a cluster the token and the value usually live in different slots, and one script
may not touch both: there the value is SET first and the token read after; a changed token makes
the writer delete its own value again (compare-and-delete), and a token changed later is followed
by a sweep that deletes it. So on a cluster a stale value may be visible for one round trip, not
for a TTL (a namespace with a hash tag, e.g. ``{psra}:``, puts both in one slot: atomic again).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from psra_bench.cache import keys
from psra_bench.cache.stats import CacheStats, CircuitBreaker
from psra_bench.exceptions import CacheError, CacheSerializationError
from psra_bench.settings import Settings, redact

__all__ = [
    "MISSING",
    "STATS_KEY",
    "LOCK_PREFIX",
    "RELEASE_SCRIPT",
    "GENERATION_SCRIPT",
    "SET_IF_GENERATION_SCRIPT",
    "REDIS_ERRORS",
    "CacheCore",
    "log",
]

log = logging.getLogger("psra_bench.cache")


class _Missing:  # the type of MISSING, one instance
    def __repr__(self) -> str:
        return "MISSING"


#: Default of ``get(key, default=MISSING)`` that tells a miss from a cached ``None``.
MISSING: Any = _Missing()
#: Logical key of the hash where every process adds its counters (under the namespace).
STATS_KEY = "psra:cache:stats"
#: Logical prefix of single-flight locks: ``lock:{key}``.
LOCK_PREFIX = "lock:"
#: Compare-and-delete of a single-flight lock: only the holder of the token releases it.
RELEASE_SCRIPT = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
#: Get-or-create of an entity's generation: the token under KEYS[1], or ARGV[1] (a fresh random one) stored there.
GENERATION_SCRIPT = (
    "local g = redis.call('get', KEYS[1]) if g then return g end redis.call('set', KEYS[1], ARGV[1]) return ARGV[1]"
)
#: Compare-then-set: SET KEYS[2] to ARGV[2] for ARGV[3] ms only while the generation KEYS[1] still holds ARGV[1].
SET_IF_GENERATION_SCRIPT = (
    "if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end "
    "redis.call('set', KEYS[2], ARGV[2], 'PX', ARGV[3]) return 1"
)
#: What a dead, slow or confused server raises: the services turn these into misses and skipped writes.
REDIS_ERRORS = (redis.RedisError, RedisClusterException, OSError)
_TTL_ENTITIES = {"hs_codes", "rules", "assessments", "verdicts", "reports"}


def _short(value: object, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


class CacheCore:
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

    def generation_physical(self, key: str) -> str:
        """The stored key of the generation of ``key``'s entity: namespace + ``gen:{entity}``."""
        return self.namespace + keys.generation_key(keys.entity_of(key))

    def _generations_of(self, pattern: str) -> list[str]:
        """The stored generation keys of every entity the glob ``pattern`` may match."""
        return [self.namespace + keys.generation_key(e) for e in keys.pattern_entities(pattern)]

    @staticmethod
    def _atomic_set(cluster: bool, generation_key: str, full: str) -> bool:
        """Whether one script may compare the generation and SET the value (always, except across cluster slots)."""
        return not cluster or key_slot(generation_key.encode()) == key_slot(full.encode())

    @staticmethod
    def _token(raw: bytes | str | None) -> str | None:
        return raw.decode() if isinstance(raw, bytes) else raw

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
            log.warning("cache: Redis at %s answers again; circuit breaker closed", self._where)

    def _failed(self, entity: str, op: str, error: BaseException) -> None:
        self.counters.record(entity, "errors")
        if isinstance(error, redis.ResponseError):
            self._answered()  # the server is alive; the command was wrong for this key
            log.warning("cache: %s failed: %s", op, redact(str(error)))
            return
        if self.breaker.failure():
            log.warning(
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
