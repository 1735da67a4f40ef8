"""The cache's decisions, once: keys, values, TTLs, counters, breaker, generations, single flight.

**One implementation, two I/O faces.** Every cache operation is written here once, as a generator
(an :data:`~psra_bench.cache.steps.Op`) that *yields* what it needs done — which Redis command with
which key, script and arguments, a pipeline, a sweep of a pattern, a pause, the caller's
computation, joining an in-process flight (:mod:`psra_bench.cache.steps`) — and is sent the reply
(or has the error raised at that ``yield``): what key, which TTL, whether to skip, what a hit, a
miss or a changed generation means, and what the breaker and the counters learn are decided here.
:mod:`psra_bench.cache.service` carries the steps out blocking and :mod:`psra_bench.cache.aio`
awaits them (as redis-py defines each command once in ``redis/commands`` and lets its sync and
asyncio clients execute it).

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
import uuid
from collections.abc import Callable
from typing import Any, TypedDict

import orjson
import redis
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisClusterException

from psra_bench.cache import keys, scripts
from psra_bench.cache.entities import SpecHelpers
from psra_bench.cache.scripts import LuaScript
from psra_bench.cache.stats import CacheStats, CircuitBreaker, keyspace_summary
from psra_bench.cache.steps import RETRY, Call, Command, Compute, Flight, Marker, Op, Pipeline, Sleep, Sweep
from psra_bench.exceptions import CacheError, CacheSerializationError
from psra_bench.settings import RedisSettings, Settings, redact

__all__ = [
    "MISSING",
    "STATS_KEY",
    "LOCK_PREFIX",
    "RELEASE_SCRIPT",
    "GENERATION_SCRIPT",
    "SET_IF_GENERATION_SCRIPT",
    "REDIS_ERRORS",
    "CacheOptions",
    "CacheCore",
    "log",
]

log = logging.getLogger("psra_bench.cache")


#: Default of ``get(key, default=MISSING)`` that tells a miss from a cached ``None``.
MISSING: Any = Marker("MISSING")
#: Logical key of the hash where every process adds its counters (under the namespace).
STATS_KEY = "psra:cache:stats"
#: Logical prefix of single-flight locks: ``lock:{key}``.
LOCK_PREFIX = "lock:"
#: The texts of the scripts of :mod:`psra_bench.cache.scripts` (sent by SHA1; see there).
RELEASE_SCRIPT = scripts.RELEASE.text
GENERATION_SCRIPT = scripts.GENERATION.text
SET_IF_GENERATION_SCRIPT = scripts.SET_IF_GENERATION.text
#: What a dead, slow or confused server raises: the services turn these into misses and skipped writes.
REDIS_ERRORS = (redis.RedisError, RedisClusterException, OSError)
_TTL_ENTITIES = {"hs_codes", "rules", "assessments", "verdicts", "reports"}
#: First wait (s) of a single-flight follower polling another process's lock, doubled up to the cap.
_POLL_FIRST, _POLL_CAP = 0.002, 0.05


def _short(value: object, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


# --------------------------------------------------------------------------- the decisions


class CacheOptions(TypedDict, total=False):
    """What both faces take besides settings and client (defaults in :class:`CacheCore`).

    ``stats`` / ``breaker``: counters and breaker to share (a twin's); ``breaker_threshold`` failures
    in a row open the breaker for ``breaker_reset`` s; ``lock_timeout``: s a single-flight lock lives;
    ``stats_flush_interval``: s between two flushes of the counters to the shared hash.
    """

    stats: CacheStats | None
    breaker: CircuitBreaker | None
    breaker_threshold: int
    breaker_reset: float
    lock_timeout: float
    stats_flush_interval: float


class CacheCore(SpecHelpers):
    """The cache without its I/O: keys, values, TTLs, counters, breaker, and every operation as an :data:`Op`.

    A face passes its ``client`` (None: ``make_client(settings.redis)`` builds one, which the face
    then owns and closes) and its cluster client class; everything else is :class:`CacheOptions`.
    """

    def __init__(
        self,
        settings: Settings,
        client: Any,
        make_client: Callable[[RedisSettings], Any],
        cluster_class: type,
        *,
        stats: CacheStats | None = None,
        breaker: CircuitBreaker | None = None,
        breaker_threshold: int = 5,
        breaker_reset: float = 5.0,
        lock_timeout: float = 10.0,
        stats_flush_interval: float = 1.0,
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
        self._owns_client = client is None
        self.client: Any = client if client is not None else (make_client(settings.redis) if settings.redis else None)
        if self.client is None and self.enabled:
            raise CacheError("settings.redis is None: call psra_bench.infra.ensure_services(settings) or pass client=.")
        self._cluster = isinstance(self.client, cluster_class)
        #: Whether ``get`` is the face's own (each face names it ``FACE_GET``), so a read-through may inline it.
        self._own_get = getattr(type(self), "get", None) is getattr(type(self), "FACE_GET", object())

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

    def _one_slot(self, *stored_keys: str) -> bool:
        """Whether one script may touch all these stored keys (always, except across cluster slots)."""
        return not self._cluster or len({key_slot(k.encode()) for k in stored_keys}) == 1

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
            return True, orjson.loads(raw)
        except ValueError:
            pass  # orjson refuses what json accepts beyond what encode writes (NaN, integers over 64 bits)
        try:
            return True, json.loads(raw)
        except ValueError:  # written by someone else; treat as a miss
            self.counters.record(entity, "errors")
            return False, default

    # -- operations: each yields its steps to a face's _run ------------------------
    def _simple(self, key: str, op: str, step: Callable[[str], Op[Any]], default: Any) -> Op[Any]:
        """One step built from ``key``'s stored name: its reply, or ``default`` when off, skipped or failed.

        ``step`` is a command through :meth:`_send` or a script through :meth:`_script`.
        """
        full = self.physical(key)
        if not self.enabled:
            return default
        entity = keys.entity_of(key)
        if self._skip(entity):
            return default
        try:
            result = yield from step(full)
        except REDIS_ERRORS as e:
            self._failed(entity, op, e)
            return default
        self._answered()
        return result

    def _send(self, command: Command) -> Op[Any]:
        """``command``'s reply; when a flush of the counters is due they travel with it, in the same round trip."""
        if time.monotonic() - self._last_flush < self.stats_flush_interval:
            return (yield command)
        self._last_flush = time.monotonic()
        pending = self.counters.take_pending()
        if not pending:
            return (yield command)
        try:
            replies = yield Pipeline((command, *self._stats_commands(pending)), raise_on_error=False)
        except BaseException:
            self.counters.restore_pending(pending)
            raise
        refused = next((r for r in replies[1:] if isinstance(r, Exception)), None)
        if refused is not None:  # the stats hash is not a hash (someone else's key): these counts are lost
            self._failed("other", "HINCRBY", refused)
        if isinstance(replies[0], Exception):
            raise replies[0]
        return replies[0]

    def _script(self, script: LuaScript, stored_keys: tuple[str, ...], args: tuple[Any, ...]) -> Op[Any]:
        """Run ``script`` by its SHA1 (its text once, when the server answers NOSCRIPT: new, restarted or flushed)."""
        try:
            return (yield from self._send(Command("evalsha", (script.sha, len(stored_keys), *stored_keys, *args))))
        except NoScriptError:
            return (yield Command("eval", (script.text, len(stored_keys), *stored_keys, *args)))

    def _stats_commands(self, pending: dict[str, int]) -> tuple[Command, ...]:
        stats_key = self.physical(STATS_KEY)
        return tuple(Command("hincrby", (stats_key, name, n)) for name, n in pending.items())

    def _get(self, key: str, default: Any) -> Op[Any]:
        started = time.perf_counter()
        raw = yield from self._simple(key, "GET", lambda k: self._send(Command("get", (k,))), MISSING)
        if raw is MISSING:  # off, skipped or failed
            return default
        elapsed = time.perf_counter() - started
        entity = keys.entity_of(key)
        hit, value = self._decoded(entity, raw, default)
        if hit or raw is None:
            self.counters.record(entity, "hits" if hit else "misses", elapsed)
        return value

    def _set(self, key: str, value: Any, ttl: float | None) -> Op[bool]:
        full = self.physical(key)
        if not self.enabled:
            return False
        data, ms, entity = self.encode(key, value), self.ttl_ms(key, ttl), keys.entity_of(key)
        reply = yield from self._simple(
            key, "SET", lambda _: self._send(Command("set", (full, data), {"px": ms})), MISSING
        )
        if reply is MISSING:
            return False
        self.counters.record(entity, "sets")
        return True

    def _generation(self, key: str) -> Op[str | None]:
        gen, token = self.generation_physical(key), uuid.uuid4().hex
        raw = yield from self._simple(
            key, "EVALSHA generation", lambda _: self._script(scripts.GENERATION, (gen,), (token,)), None
        )
        return self._token(raw)

    def _set_if_generation(self, key: str, value: Any, generation: str | None, ttl: float | None) -> Op[bool]:
        full = self.physical(key)
        if not self.enabled:
            return False
        data, ms, entity = self.encode(key, value), self.ttl_ms(key, ttl), keys.entity_of(key)
        if generation is None or self._skip(entity):
            return False
        gen = self.generation_physical(key)
        try:
            if self._one_slot(gen, full):
                stored = bool((yield from self._script(scripts.SET_IF_GENERATION, (gen, full), (generation, data, ms))))
            else:  # cluster, two slots: set, then check; a changed generation takes our own value back
                yield Command("set", (full, data), {"px": ms})
                stored = self._token((yield Command("get", (gen,)))) == generation
                if not stored:
                    yield from self._script(scripts.RELEASE, (full,), (data,))
        except REDIS_ERRORS as e:
            self._failed(entity, "EVAL set-if-generation", e)
            return False
        self._answered()
        self.counters.record(entity, "sets" if stored else "stale")
        return stored

    def _delete(self, key: str) -> Op[bool]:
        deleted = bool((yield from self._simple(key, "UNLINK", lambda k: self._send(Command("unlink", (k,))), 0)))
        if deleted:
            self.counters.record(keys.entity_of(key), "deletes")
        return deleted

    def _exists(self, key: str) -> Op[bool]:
        return bool((yield from self._simple(key, "EXISTS", lambda k: self._send(Command("exists", (k,))), 0)))

    def _get_ttl(self, key: str) -> Op[int | None]:
        ttl = yield from self._simple(key, "TTL", lambda k: self._send(Command("ttl", (k,))), None)
        return None if ttl is None or ttl == -2 else int(ttl)

    def _invalidate(self, patterns: list[str]) -> Op[int]:
        """New generations for the entities ``patterns`` may match, then SCAN + UNLINK each pattern; the count."""
        matches = [self._match(p) for p in patterns]
        if not self.enabled:
            return 0
        generations = sorted({g for p in patterns for g in self._generations_of(p)})
        total = 0
        for pattern, match in zip(patterns, matches, strict=True):
            count = yield from self._sweep(pattern, match, generations)
            if count is not None:
                generations, total = [], total + count
        return total

    def _sweep(self, pattern: str, match: str, generations: list[str]) -> Op[int | None]:
        entity = keys.entity_of(pattern)
        if self._skip(entity):
            log.warning("cache: invalidation of %r skipped (circuit open)", pattern)
            return None
        try:
            if generations:  # before the sweep: a computation that began earlier stores nothing
                yield Command("unlink", tuple(generations))  # a cluster client splits it by slot
            count = yield Sweep(match)
        except REDIS_ERRORS as e:
            self._failed(entity, "SCAN/UNLINK", e)
            log.warning("cache: invalidation of %r failed; entries live until their TTL", pattern)
            return None
        self._answered()
        self.counters.record(entity, "deletes", amount=count)
        return count

    def _ping(self) -> Op[bool]:
        if self.client is None:
            return False
        try:
            ok = bool((yield Command("ping")))
        except REDIS_ERRORS:
            return False
        self._answered()
        return ok

    # -- single flight ------------------------------------------------------------
    def _read_through(self, key: str, compute: Compute, ttl: float | None, lock_timeout: float | None) -> Op[Any]:
        """The cached value of ``key``, else the value of the one flight computing it (led here when none is)."""
        if not self.enabled:
            self.physical(key)
            return (yield compute)
        if ttl is not None:
            self.ttl_ms(key, ttl)  # a bad TTL fails before any work (None is the entity's, checked at start-up)
        while True:
            # The face's own get runs inline; a subclass's override (CompressedClockCache records outcomes) is called.
            if self._own_get:
                value = yield from self._get(key, MISSING)
            else:
                value = yield Call("get", (key, MISSING))
            if value is not MISSING:
                return value
            value = yield Flight(key, self._lead(key, compute, ttl, lock_timeout or self.lock_timeout))
            if value is not RETRY:
                return value

    def _peek(self, key: str, lock: str | None = None) -> Op[tuple[bool, Any, bool | None]]:
        """(found, value, lock held) without counting; lock held is None when Redis cannot be asked."""
        if not self.breaker.allow():
            return False, None, None
        try:
            if lock is None:
                raw, held = (yield Command("get", (self.physical(key),))), False
            else:
                raw, held = yield Pipeline((Command("get", (self.physical(key),)), Command("exists", (lock,))))
        except REDIS_ERRORS as e:
            self._failed(keys.entity_of(key), "GET", e)
            return False, None, None
        self._answered()
        found, value = self._decoded(keys.entity_of(key), raw, None)
        return found, value, bool(held)

    def _try_lock(self, lock: str, token: str, timeout: float) -> Op[str]:
        px = max(1, round(timeout * 1000))
        got = yield from self._simple(
            LOCK_PREFIX, "SET NX", lambda _: self._send(Command("set", (lock, token), {"nx": True, "px": px})), MISSING
        )
        return "down" if got is MISSING else ("acquired" if got else "busy")

    def _lead(self, key: str, compute: Compute, ttl: float | None, timeout: float) -> Op[Any]:
        """Compute ``key`` once among processes: look again, take the lock (or wait for its holder), compute, store.

        Where one script may touch the value, the lock and the generation (a single server, or one
        cluster slot) the whole miss after its GET is two round trips: :data:`scripts.LEAD` and
        :data:`scripts.FINISH`. Elsewhere each step is its own command.
        """
        lock, token = self.physical(LOCK_PREFIX + key), uuid.uuid4().hex
        scripted = self._one_slot(self.physical(key), lock, self.generation_physical(key))
        if scripted:
            found, value, state, generation = yield from self._first_look(key, lock, token, timeout)
        else:
            found, value, _ = yield from self._peek(key)  # a flight that just ended may have filled it
            state, generation = ("", None) if found else ((yield from self._try_lock(lock, token, timeout)), MISSING)
        if found:
            return value
        deadline, delay = time.monotonic() + timeout, _POLL_FIRST
        while state == "busy":  # another process computes: wait for its value or its lock to go
            yield Sleep(delay)
            delay = min(delay * 2, _POLL_CAP)
            found, value, held = yield from self._peek(key, lock)
            if found:
                return value
            if held is None or time.monotonic() >= deadline:
                state = "down"
            elif not held:
                state = yield from self._try_lock(lock, token, timeout)
        held_token = token if state == "acquired" else ""
        try:
            if generation is MISSING:  # before computing: an invalidation from now on voids the set
                generation = yield Call("generation", (key,))
            value = yield compute
            if scripted:
                yield from self._finish(key, value, generation, ttl, lock, held_token)
                held_token = ""  # FINISH released it (or Redis failed: the lock's own timeout ends it)
            else:
                yield Call("set_if_generation", (key, value, generation, ttl))
            return value
        finally:
            if held_token:
                yield from self._release(lock, held_token)

    def _first_look(self, key: str, lock: str, token: str, timeout: float) -> Op[tuple[bool, Any, str, Any]]:
        """One round trip (:data:`scripts.LEAD`): (found, value, lock state, generation)."""
        px = max(1, round(timeout * 1000))
        stored, args = (self.physical(key), lock, self.generation_physical(key)), (token, px, uuid.uuid4().hex)
        reply = yield from self._simple(key, "EVALSHA lead", lambda _: self._script(scripts.LEAD, stored, args), None)
        if reply is None:  # skipped or failed
            return False, None, "down", None
        if reply[0] == 0:
            return False, None, "acquired" if reply[2] else "busy", self._token(reply[1])
        found, value = self._decoded(keys.entity_of(key), reply[1], None)
        if found:
            return True, value, "", None
        # a value we cannot read (someone else's): compute and replace it, the step-by-step way
        return False, None, (yield from self._try_lock(lock, token, timeout)), MISSING

    def _finish(
        self, key: str, value: Any, generation: str | None, ttl: float | None, lock: str, token: str
    ) -> Op[bool]:
        """One round trip (:data:`scripts.FINISH`): store ``value`` unless invalidated since ``generation``, release."""
        data, ms, entity = self.encode(key, value), self.ttl_ms(key, ttl), keys.entity_of(key)
        if generation is None or self._skip(entity):
            if token:
                yield from self._release(lock, token)
            return False
        stored_keys = (self.generation_physical(key), self.physical(key), lock)
        try:
            stored = bool((yield from self._script(scripts.FINISH, stored_keys, (generation, data, ms, token))))
        except REDIS_ERRORS as e:
            self._failed(entity, "EVALSHA finish", e)
            return False
        self._answered()
        self.counters.record(entity, "sets" if stored else "stale")
        return stored

    def _release(self, lock: str, token: str) -> Op[None]:
        """Delete the single-flight lock if it still holds ``token`` (compare-and-delete)."""
        yield from self._simple(
            LOCK_PREFIX, "EVALSHA release", lambda _: self._script(scripts.RELEASE, (lock,), (token,)), 0
        )

    # -- stats --------------------------------------------------------------------
    def _flush_stats(self) -> Op[bool]:
        """Send the pending counters (HINCRBY each, one pipeline); put them back when Redis is skipped or fails."""
        self._last_flush = time.monotonic()
        pending = self.counters.take_pending()
        if not pending:
            return True
        if not self.breaker.allow():
            self.counters.restore_pending(pending)
            return False
        try:
            yield Pipeline(self._stats_commands(pending))
        except REDIS_ERRORS as e:
            self.counters.restore_pending(pending)
            self._failed("other", "HINCRBY", e)
            return False
        self._answered()
        return True

    def _cluster_stats(self) -> Op[dict[str, dict[str, Any]] | None]:
        if self.client is None:
            return None
        yield Call("flush_stats")
        raw = yield from self._simple(STATS_KEY, "HGETALL", lambda k: self._send(Command("hgetall", (k,))), None)
        return None if raw is None else CacheStats.from_hash(raw)

    def _keyspace_stats(self) -> Op[dict[str, Any] | None]:
        if self.client is None:
            return None
        try:
            info = yield Command("info", ("stats",))
        except REDIS_ERRORS as e:
            self._failed("other", "INFO", e)
            return None
        return keyspace_summary(info)

    def _reset_stats(self, shared: bool) -> Op[None]:
        self.counters.reset()
        if shared and self.client is not None:
            yield from self._simple(STATS_KEY, "UNLINK", lambda k: self._send(Command("unlink", (k,))), 0)

    def _closing(self) -> Op[None]:
        """The last flush of the counters before the client closes."""
        if self.client is not None and self.enabled:
            yield Call("flush_stats")

    def stats(self) -> dict[str, Any]:
        """This process's counters per entity (hits, misses, errors, skipped, sets, deletes, latencies)."""
        return {
            "enabled": self.enabled,
            "namespace": self.namespace,
            "breaker": self.breaker.as_dict(),
            "entities": self.counters.snapshot(),
        }
