"""Cache keys to entities, and MONITOR commands to trace events (reads, data changes, value sizes).

A key is kept only when it starts with the namespace (``settings.cache_namespace``); after that
prefix the spec's patterns name its entity: ``hs:code:`` and ``hs:search:`` → hs_codes,
``rule:id:`` and ``rules:agreement:`` → rules, ``assessment:`` → assessments, ``verdict:`` →
verdicts, ``report:`` → reports. The cache's internal keys — single-flight locks (``lock:``),
generation tokens (``gen:``), the statistics hash and the job queue (``{<namespace>jobs}:``) —
are dropped and counted; any other key is counted by its first ``:``-segment (*unmapped*).

Commands (:class:`CommandMapper`):

* a **read** is a ``GET``/``GETEX``/``MGET`` of an entity key (each key of an MGET is one read);
* a **data change** (a write of the trace) is a ``DEL``/``UNLINK`` of an entity key; a dropped
  generation token (``DEL``/``UNLINK`` of ``gen:<entity>``) or a pattern sweep (``SCAN 0 MATCH
  <pattern>``) is a write of the whole entity (key ``*``). The cache drops the tokens and then
  sweeps, so one invalidation is one whole-entity write: while a client sweeps an entity, its
  further SCANs and the UNLINKs of that entity's keys belong to that write and are not counted again;
* a ``SET`` of an entity key records the value's length as the key's size (the value itself is
  never kept).

**Scripts.** Commands a script runs appear as ``[<db> lua]`` lines right after the script's own
``EVAL``/``EVALSHA``/``FCALL`` line. We count the inner calls and skip the outer line: an ``EVALSHA``
names a script by its hash, only the inner calls say which keys it read or deleted. A script that
looks a key up again right after its caller's ``GET`` of that key missed (the cache's single-flight
leader does) is a re-look of the same read, not a second read: it is counted under
``script_relooks``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from psra_bench import constants
from psra_bench.cache import keys as cache_keys
from psra_bench.trace.monitor import MonitorLine

__all__ = [
    "ENTITY_NAMES",
    "WHOLE_ENTITY",
    "READ_COMMANDS",
    "DELETE_COMMANDS",
    "SCRIPT_COMMANDS",
    "TraceEvent",
    "KeyMap",
    "CommandMapper",
]

#: Entities a trace may carry, in the order of constants.ENTITY_PREFIXES (the settings' TTL entities).
ENTITY_NAMES: tuple[str, ...] = tuple(constants.ENTITY_PREFIXES)
#: The key of a write that invalidates every key of its entity.
WHOLE_ENTITY = "*"
#: Commands that read cached values.
READ_COMMANDS = frozenset({"get", "getex", "mget"})
#: Commands that delete keys.
DELETE_COMMANDS = frozenset({"del", "unlink"})
#: Commands that run a script (their inner calls are counted instead).
SCRIPT_COMMANDS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})

_PATTERNS: tuple[tuple[str, str], ...] = (
    ("hs:code:", "hs_codes"),
    ("hs:search:", "hs_codes"),
    ("rule:id:", "rules"),
    ("rules:agreement:", "rules"),
    ("assessment:", "assessments"),
    ("verdict:", "verdicts"),
    ("report:", "reports"),
)
_STATS_KEY = "psra:cache:stats"


class TraceEvent(NamedTuple):
    """One event of a trace: a read or a write of an entity's key (``*``: the whole entity)."""

    time: float
    entity: str
    op: str
    key: str
    #: Value bytes when known (0: unknown).
    size: int = 0


@dataclass
class KeyMap:
    """Which entity a stored key belongs to, with counts of what was dropped."""

    namespace: str = ""
    #: Internal keys dropped, by kind (locks, generations, stats, jobs).
    internal: Counter[str] = field(default_factory=Counter)
    #: Keys of no entity, by their first ``:``-segment.
    unmapped: Counter[str] = field(default_factory=Counter)
    #: Keys outside the namespace.
    foreign: int = 0

    def logical(self, key: str) -> str | None:
        """``key`` without the namespace, or None when it is not this namespace's (counted)."""
        if key.startswith("{" + self.namespace + "jobs}:"):
            self.internal["jobs"] += 1
            return None
        if not key.startswith(self.namespace):
            self.foreign += 1
            return None
        return key[len(self.namespace) :]

    def entity(self, key: str) -> tuple[str, str] | None:
        """(entity, logical key) of a stored key, or None (internal, unmapped or foreign: counted)."""
        logical = self.logical(key)
        if logical is None:
            return None
        for prefix, entity in _PATTERNS:
            if logical.startswith(prefix):
                return entity, logical
        if logical.startswith("gen:"):
            self.internal["generations"] += 1
        elif logical.startswith("lock:"):
            self.internal["locks"] += 1
        elif logical == _STATS_KEY:
            self.internal["stats"] += 1
        else:
            head, sep, _ = logical.partition(":")
            self.unmapped[head + sep] += 1
        return None

    def pattern_entity(self, logical: str) -> str | None:
        """The entity whose pattern the logical key ``logical`` follows, else None (nothing counted)."""
        return next((entity for prefix, entity in _PATTERNS if logical.startswith(prefix)), None)

    def generation_entity(self, key: str) -> str | None:
        """The entity whose generation token ``key`` is (``gen:<entity>`` under the namespace), else None."""
        if not key.startswith(self.namespace):
            return None
        logical = key[len(self.namespace) :]
        if logical.startswith("gen:") and logical[4:] in ENTITY_NAMES:
            return logical[4:]
        return None

    def pattern_entities(self, pattern: str) -> list[str]:
        """The entities a sweep's MATCH pattern may touch (empty: none of this namespace's entities)."""
        if not pattern.startswith(cache_keys.escape_glob(self.namespace)):
            return []
        rest = pattern[len(cache_keys.escape_glob(self.namespace)) :]
        return [e for e in cache_keys.pattern_entities(rest) if e in ENTITY_NAMES]


@dataclass
class CommandMapper:
    """Turns MONITOR commands into :class:`TraceEvent` s (see the module doc), counting what it skips."""

    keymap: KeyMap
    #: Only commands on this database (None: every database).
    db: int | None = None
    #: Key -> last value length seen in a SET.
    sizes: dict[tuple[str, str], int] = field(default_factory=dict)
    commands: int = 0
    scripts: int = 0
    script_relooks: int = 0
    #: Per client: the key of its last command when that was a GET (for re-looks).
    _last_get: dict[str, str] = field(default_factory=dict)
    #: The client whose script the following ``lua`` lines belong to, and the key it had just read.
    _script: tuple[str, str | None] = ("", None)
    #: Per client: the entities it is sweeping now.
    _sweeping: dict[str, set[str]] = field(default_factory=dict)

    def feed(self, line: MonitorLine) -> list[TraceEvent]:
        """The events of one command (often none)."""
        if self.db is not None and line.db != self.db:
            return []
        self.commands += 1
        cmd, args, t = line.command, line.args, line.time
        if line.client == "lua":
            client, relook = self._script
        else:
            client, relook = line.client, None
            if cmd in SCRIPT_COMMANDS:
                self.scripts += 1
                self._script = (client, self._last_get.pop(client, None))
                return []
            if not (cmd in ("scan",) or cmd in DELETE_COMMANDS):
                self._sweeping.pop(client, None)
            self._last_get.pop(client, None)
        if cmd in READ_COMMANDS:
            return self._reads(client, args if cmd == "mget" else args[:1], t, relook, line.client == "lua")
        if cmd in DELETE_COMMANDS:
            return self._deletes(client, args, t)
        if cmd == "scan" and args:
            return self._scan(client, args, t)
        if cmd in ("set", "setex", "psetex") and len(args) >= 2:
            mapped = self.keymap.entity(args[0])
            if mapped is not None:
                value = args[2] if cmd in ("setex", "psetex") and len(args) >= 3 else args[1]
                self.sizes[mapped] = len(value.encode("utf-8", "surrogateescape"))
            return []
        for key in self._key_args(cmd, args):
            self.keymap.entity(key)  # counted as internal / unmapped
        return []

    def _key_args(self, cmd: str, args: tuple[str, ...]) -> tuple[str, ...]:
        if cmd in ("hincrby", "hincrbyfloat", "hset", "hgetall", "expire", "pexpire", "incr", "exists", "type"):
            return args[:1]
        return ()

    def _reads(
        self, client: str, key_args: tuple[str, ...], t: float, relook: str | None, in_script: bool
    ) -> list[TraceEvent]:
        out = []
        for key in key_args:
            if in_script and relook is not None and key == relook:
                self.script_relooks += 1
                continue
            mapped = self.keymap.entity(key)
            if mapped is not None:
                out.append(TraceEvent(t, mapped[0], "read", mapped[1], self.sizes.get(mapped, 0)))
        if not in_script and len(key_args) == 1:
            self._last_get[client] = key_args[0]
        return out

    def _deletes(self, client: str, key_args: tuple[str, ...], t: float) -> list[TraceEvent]:
        out = []
        sweeping = self._sweeping.setdefault(client, set())
        for key in key_args:
            entity = self.keymap.generation_entity(key)
            if entity is not None:
                self.keymap.internal["generations"] += 1
                if entity not in sweeping:
                    sweeping.add(entity)
                    out.append(TraceEvent(t, entity, "write", WHOLE_ENTITY))
                continue
            mapped = self.keymap.entity(key)
            if mapped is not None and mapped[0] not in sweeping:
                out.append(TraceEvent(t, mapped[0], "write", mapped[1]))
        return out

    def _scan(self, client: str, args: tuple[str, ...], t: float) -> list[TraceEvent]:
        upper = [a.upper() for a in args]
        if "MATCH" not in upper or upper.index("MATCH") + 1 >= len(args):
            return []
        pattern = args[upper.index("MATCH") + 1]
        sweeping = self._sweeping.setdefault(client, set())
        out = []
        for entity in self.keymap.pattern_entities(pattern):
            if entity not in sweeping:
                sweeping.add(entity)
                out.append(TraceEvent(t, entity, "write", WHOLE_ENTITY))
        return out
