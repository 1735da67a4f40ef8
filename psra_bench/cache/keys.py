"""Cache keys: the spec's key patterns with user text escaped, and sweeping keys by pattern.

Every component that comes from a caller (an HS code, a search query, a rule id...) is
percent-encoded (UTF-8, only ``A-Z a-z 0-9 _ . - ~`` kept), so it can contain neither the ``:``
separator nor a glob character (``* ? [ ] \\``): two different inputs never give the same key,
and a pattern built from one input never matches a key of another. Keys built here are
*logical*; :class:`psra_bench.cache.service.CacheService` puts ``settings.cache_namespace`` before them.

Pattern deletion is SCAN (``COUNT 1000``) + UNLINK in batches, never KEYS. On a cluster every
primary is scanned on its own and keys are unlinked grouped by hash slot, so no command mixes
slots (no CROSSSLOT); :func:`scan_unlink_nodes` takes the node clients, so the same code runs
on one standalone server and on each primary of a cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import string
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import redis
import redis.asyncio
import redis.asyncio.cluster
from redis.crc import key_slot

from psra_bench import constants
from psra_bench.exceptions import CacheError, CacheSerializationError

__all__ = [
    "SCAN_COUNT",
    "UNLINK_BATCH",
    "escape_component",
    "escape_glob",
    "normalize_query",
    "hs_code_key",
    "hs_search_key",
    "hs_search_pattern",
    "rule_key",
    "rules_agreement_key",
    "assessment_key",
    "verdict_key",
    "dashboard_key",
    "route_report_key",
    "trade_route_key",
    "job_key",
    "entity_of",
    "entity_patterns",
    "pattern_entities",
    "generation_key",
    "canonical_json",
    "function_key",
    "ArgumentKeys",
    "slot_groups",
    "scan_unlink_nodes",
    "ascan_unlink_nodes",
    "ascan_unlink_cluster",
]

#: SCAN ``COUNT`` hint: keys the server looks at per call.
SCAN_COUNT = 1000
#: Keys per UNLINK call (and per pipeline round trip).
UNLINK_BATCH = 500

_ID_TYPES = (str, int, uuid.UUID)
_PREFIXES: tuple[tuple[str, str], ...] = tuple(
    (prefix, entity) for entity, prefixes in constants.ENTITY_PREFIXES.items() for prefix in prefixes
)
_GLOB_SPECIAL = {"*", "?", "[", "]", "\\"}
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def escape_component(text: str) -> str:
    """Percent-encode ``text`` (UTF-8) keeping only ``A-Za-z0-9_.-~``: injective and glob-safe."""
    if all(c in _SAFE for c in text):
        return text  # the common case (codes, ids) costs one scan
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in text)


def escape_glob(text: str) -> str:
    """Backslash-escape the glob characters of ``text`` so a MATCH pattern takes it literally."""
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in text)


def _component(name: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, _ID_TYPES):
        raise CacheError(f"{name}={value!r} is not valid: use a non-empty string (or a whole number / UUID).")
    text = str(value).strip()
    if not text:
        raise CacheError(f"{name}={value!r} is not valid: use a non-empty string (or a whole number / UUID).")
    return escape_component(text)


def normalize_query(query: str) -> str:
    """Search text as it is keyed: stripped, ASCII letters lower-cased; nothing that could change a result.

    The DAL strips the text and matches it with ILIKE, so only these two folds are safe: inner
    whitespace and non-ASCII case are kept (two spaces never match one; PostgreSQL's case folding
    of non-ASCII letters depends on the server's locale).
    """
    if not isinstance(query, str):
        raise CacheError(f"query={query!r} is not valid: use a string of search text.")
    text = query.strip().translate(_ASCII_LOWER)
    if not text:
        raise CacheError(f"query={query!r} is not valid: use a non-blank string of search text.")
    return text


def _limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise CacheError(f"limit={limit!r} is not valid: use a whole number ≥ 1.")
    return limit


def hs_code_key(code: str) -> str:
    """``hs:code:{code}``: one HS code lookup."""
    return constants.HS_CODE_KEY.format(code=_component("code", code))


def hs_search_key(query: str, limit: int) -> str:
    """``hs:search:{query}:{limit}``: one description search, the query normalized and escaped."""
    return constants.HS_SEARCH_KEY.format(query=escape_component(normalize_query(query)), limit=_limit(limit))


def hs_search_pattern(query: str) -> str:
    """Glob pattern matching the cached searches of ``query`` for every limit (and nothing else)."""
    return constants.HS_SEARCH_KEY.format(query=escape_component(normalize_query(query)), limit="*")


def rule_key(rule_id: str) -> str:
    """``rule:id:{rule_id}``: one rule by id."""
    return constants.RULE_ID_KEY.format(rule_id=_component("rule_id", rule_id))


def rules_agreement_key(code: str) -> str:
    """``rules:agreement:{code}``: the rule list of one agreement."""
    return constants.RULES_AGREEMENT_KEY.format(code=_component("agreement_code", code))


def assessment_key(rule_id: str, hs_code: str, origin: str, dest: str) -> str:
    """``assessment:{rule_id}:{hs_code}:{origin}:{dest}``: one assessment result (countries upper-cased)."""
    return constants.ASSESSMENT_KEY.format(
        rule_id=_component("rule_id", rule_id),
        hs_code=_component("hs_code", hs_code),
        origin=_component("origin_country", origin.upper() if isinstance(origin, str) else origin),
        dest=_component("dest_country", dest.upper() if isinstance(dest, str) else dest),
    )


def verdict_key(evaluation_id: str | uuid.UUID) -> str:
    """``verdict:{evaluation_id}``: one verdict."""
    return constants.VERDICT_KEY.format(evaluation_id=_component("evaluation_id", evaluation_id))


def dashboard_key(tenant_id: str | uuid.UUID, days: int, until: str) -> str:
    """``report:dashboard:{tenant_id}:{days}:{until}``: one tenant's dashboard (``until``: ``now`` or an ISO moment)."""
    return constants.DASHBOARD_KEY.format(
        tenant_id=_component("tenant_id", tenant_id), days=_limit(days), until=_component("until", until)
    )


def route_report_key(tenant_id: str | uuid.UUID, date_from: str, date_to: str, limit: int) -> str:
    """``report:routes:{tenant_id}:{date_from}:{date_to}:{limit}``: one tenant's trade-route report."""
    return constants.ROUTE_REPORT_KEY.format(
        tenant_id=_component("tenant_id", tenant_id),
        date_from=_component("date_from", date_from),
        date_to=_component("date_to", date_to),
        limit=_limit(limit),
    )


def trade_route_key(export_country: str, import_country: str) -> str:
    """``report:trade-route:{export_country}:{import_country}``: one route's analysis (countries upper-cased)."""
    return constants.TRADE_ROUTE_KEY.format(
        export_country=_component("export_country", export_country).upper(),
        import_country=_component("import_country", import_country).upper(),
    )


def job_key(job_id: str | uuid.UUID) -> str:
    """``job:{job_id}``: one async job's state."""
    return constants.JOB_KEY.format(job_id=_component("job_id", job_id))


def entity_of(key: str) -> str:
    """The entity of a logical key by its prefix (constants.ENTITY_PREFIXES), else ``other``."""
    for prefix, entity in _PREFIXES:
        if key.startswith(prefix):
            return entity
    return "other"


def entity_patterns(entity: str) -> list[str]:
    """Glob patterns covering every key of ``entity`` (e.g. rules -> ``rule:*``, ``rules:*``)."""
    if entity not in constants.ENTITY_PREFIXES:
        allowed = ", ".join(constants.ENTITY_PREFIXES)
        raise CacheError(f"entity={entity!r} is not valid: use one of {allowed}.")
    return [escape_glob(p) + "*" for p in constants.ENTITY_PREFIXES[entity]]


def pattern_entities(pattern: str) -> list[str]:
    """Entities whose keys the glob ``pattern`` may match (``other``: keys of no entity), sorted.

    Used to start a new generation of every entity a sweep may touch: ``hs:code:*`` gives
    ``hs_codes``, ``fn:*`` gives ``other``, ``rule*`` gives ``other`` and ``rules``, ``*`` all of them.
    """
    literal: list[str] = []
    chars = iter(pattern)
    glob = False
    for c in chars:
        if c == "\\":
            literal.append(next(chars, ""))
        elif c in "*?[":
            glob = True
            break
        else:
            literal.append(c)
    text = "".join(literal)
    if not glob:
        return [entity_of(text)]
    for prefix, entity in _PREFIXES:
        if text.startswith(prefix):
            return [entity]
    return sorted({entity for prefix, entity in _PREFIXES if prefix.startswith(text)} | {"other"})


def generation_key(entity: str) -> str:
    """``gen:{entity}``: the logical key of one entity's invalidation generation (``other`` included)."""
    if entity != "other" and entity not in constants.ENTITY_PREFIXES:
        allowed = ", ".join([*constants.ENTITY_PREFIXES, "other"])
        raise CacheError(f"entity={entity!r} is not valid: use one of {allowed}.")
    return constants.GENERATION_KEY.format(entity=entity)


def canonical_json(value: Any) -> str:
    """Compact, key-sorted JSON of ``value`` (TypeError/ValueError when not JSON-serializable)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def function_key(qualified_name: str, arguments: dict[str, Any]) -> str:
    """``fn:{module.qualname}:{digest}`` from bound arguments; raises CacheSerializationError naming a bad one."""
    try:
        text = canonical_json(arguments)
    except (TypeError, ValueError):
        for name, value in arguments.items():
            try:
                canonical_json(value)
            except (TypeError, ValueError):
                raise CacheSerializationError(
                    f"cannot build a cache key for {qualified_name}(): argument {name}={_short(value)} "
                    f"({type(value).__name__}) is not JSON-serializable; pass str, int, float, bool, None, "
                    "lists or dicts, or give the decorator a key= function",
                ) from None
        raise  # pragma: no cover - the whole failed, so one part must fail
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()
    return f"fn:{escape_component(qualified_name)}:{digest}"


def _short(value: object, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


# --------------------------------------------------------------------------- sweeping


def slot_groups(keys: Iterable[bytes], by_slot: bool = True) -> dict[int, list[bytes]]:
    """Keys grouped by cluster hash slot (one group ``0`` when ``by_slot`` is false)."""
    groups: dict[int, list[bytes]] = defaultdict(list)
    for key in keys:
        groups[key_slot(key) if by_slot else 0].append(key)
    return dict(groups)


def _unlink_groups(
    node: redis.Redis, keys: list[bytes], by_slot: bool, fallback: Callable[[list[bytes]], int] | None
) -> int:
    groups = list(slot_groups(keys, by_slot).values())
    if len(groups) == 1:
        try:
            return int(node.unlink(*groups[0]))
        except redis.ResponseError:
            if fallback is None:
                raise
            return fallback(groups[0])
    pipe = node.pipeline(transaction=False)
    for group in groups:
        pipe.unlink(*group)
    total = 0
    for group, result in zip(groups, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(result, Exception):  # e.g. MOVED during a resharding
            if fallback is None or not isinstance(result, redis.ResponseError):
                raise result
            total += fallback(group)
        else:
            total += int(result)
    return total


def scan_unlink_nodes(
    nodes: Sequence[redis.Redis],
    match: str,
    *,
    count: int = SCAN_COUNT,
    batch: int = UNLINK_BATCH,
    by_slot: bool = False,
    fallback: Callable[[list[bytes]], int] | None = None,
) -> int:
    """SCAN each node for ``match`` and UNLINK what it holds, ``batch`` keys per round trip; return keys deleted.

    With ``by_slot`` each UNLINK carries keys of one hash slot only (cluster nodes); a group the
    node refuses (MOVED/ASK while slots move) goes to ``fallback`` (the cluster client's unlink).
    """
    total = 0
    for node in nodes:
        pending: list[bytes] = []
        for key in node.scan_iter(match=match, count=count):
            pending.append(key)
            if len(pending) >= batch:
                total += _unlink_groups(node, pending, by_slot, fallback)
                pending = []
        if pending:
            total += _unlink_groups(node, pending, by_slot, fallback)
    return total


async def _aunlink_groups(node: redis.asyncio.Redis, keys: list[bytes], by_slot: bool) -> int:
    groups = list(slot_groups(keys, by_slot).values())
    if len(groups) == 1:
        return int(await node.unlink(*groups[0]))
    pipe = node.pipeline(transaction=False)
    for group in groups:
        pipe.unlink(*group)
    return sum(int(n) for n in await pipe.execute())


async def ascan_unlink_nodes(
    nodes: Sequence[redis.asyncio.Redis],
    match: str,
    *,
    count: int = SCAN_COUNT,
    batch: int = UNLINK_BATCH,
    by_slot: bool = False,
    deadline: float | None = None,
) -> int:
    """Asyncio twin of :func:`scan_unlink_nodes` for standalone node clients; ``deadline``: seconds per command."""
    total = 0
    for node in nodes:
        pending: list[bytes] = []
        cursor: int | None = None
        while cursor != 0:
            async with asyncio.timeout(deadline):
                cursor, found = await node.scan(cursor or 0, match=match, count=count)
            pending.extend(cast(list[bytes], found))  # a client without decode_responses
            if len(pending) >= batch or (cursor == 0 and pending):
                async with asyncio.timeout(deadline):
                    total += await _aunlink_groups(node, pending, by_slot)
                pending = []
    return total


async def ascan_unlink_cluster(
    cluster: redis.asyncio.cluster.RedisCluster, match: str, *, count: int = SCAN_COUNT, batch: int = UNLINK_BATCH
) -> int:
    """SCAN every primary of an asyncio cluster client and UNLINK per hash slot through its pipeline."""
    client: Any = cluster  # redis-py types scan() as the standalone (cursor, keys) shape
    total = 0
    for node in cluster.get_primaries():
        cursor = 0
        pending: list[bytes] = []
        while True:
            cursors, keys = await client.scan(cursor, match=match, count=count, target_nodes=node)
            cursor = int(cursors[node.name])
            pending.extend(keys)
            if len(pending) >= batch or (cursor == 0 and pending):
                pipe: Any = cluster.pipeline()
                for group in slot_groups(pending).values():
                    pipe.execute_command("UNLINK", *group)  # queued; pipe.unlink() would split and await
                total += sum(int(n) for n in await pipe.execute())
                pending = []
            if cursor == 0:
                break
    return total


# --------------------------------------------------------------------------- keys from arguments


def _argument_text(owner: str, name: str, value: Any) -> str:
    try:
        return escape_component(value if isinstance(value, str) else canonical_json(value))
    except (TypeError, ValueError):
        raise CacheSerializationError(
            f"cannot build a cache key for {owner}(): argument {name}={_short(value)} ({type(value).__name__}) "
            "is not JSON-serializable; pass str, int, float, bool, None, lists or dicts"
        ) from None


class ArgumentKeys:
    """Stable cache keys from a function's arguments: bound by signature with defaults applied.

    ``f(1)``, ``f(a=1)`` and ``f()`` (default ``a=1``) give one key. ``key`` may be None
    (``fn:{module.qualname}:{digest}``), a template such as ``"hs:code:{code}"`` whose fields are
    parameters (each value escaped), or a callable taking the function's arguments and returning
    the key. A first parameter named ``self`` or ``cls`` is left out, as are ``exclude``'s.
    """

    def __init__(
        self, func: Callable[..., Any], key: str | Callable[..., str] | None = None, exclude: Iterable[str] = ()
    ) -> None:
        self.signature = inspect.signature(func)
        self.name = f"{func.__module__}.{func.__qualname__}"
        params = list(self.signature.parameters)
        self.exclude = set(exclude)
        unknown = self.exclude - set(params)
        if unknown:
            raise CacheError(
                f"exclude={sorted(unknown)!r} is not valid for {self.name}(): use parameter names of {params}."
            )
        if params and params[0] in ("self", "cls"):
            self.exclude.add(params[0])
        if key is not None and not isinstance(key, str) and not callable(key):
            raise CacheError(f"key={key!r} is not valid for {self.name}(): use a template string, a callable or None.")
        self.key = key
        if isinstance(key, str):
            fields = {f for _, f, _, _ in string.Formatter().parse(key) if f is not None}
            bad = fields - (set(params) - self.exclude)
            if bad or "" in fields:
                raise CacheError(
                    f"key={key!r} is not valid for {self.name}(): its {{fields}} must be parameter "
                    f"names of {[p for p in params if p not in self.exclude]}."
                )

    def arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by name, defaults applied, excluded ones dropped."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return {k: v for k, v in bound.arguments.items() if k not in self.exclude}

    def fill(self, template: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """``template`` with each ``{parameter}`` replaced by the escaped argument."""
        arguments = self.arguments(args, kwargs)
        return template.format_map({k: _argument_text(self.name, k, v) for k, v in arguments.items()})

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        """The logical cache key of calling the function with these arguments."""
        if isinstance(self.key, str):
            return self.fill(self.key, args, kwargs)
        if self.key is not None:
            built = self.key(*args, **kwargs)
            if not isinstance(built, str) or not built:
                raise CacheError(
                    f"the key= function of {self.name}() returned {built!r}: it must return a non-empty string."
                )
            return built
        return function_key(self.name, self.arguments(args, kwargs))
