"""The cache's Lua scripts, each sent by its SHA1 (``EVALSHA``) and by its text only after ``NOSCRIPT``.

A script runs atomically on the server, so one round trip can read and write several keys of
one slot: a read-through miss is then three round trips — the ``GET`` that missed, :data:`LEAD`
(look again, take the single-flight lock, read the generation) and :data:`FINISH` (store if the
generation is unchanged, release the lock) — instead of seven. :mod:`psra_bench.cache.core`
decides when each is used; on a cluster whose keys fall in different slots it keeps the
one-key-per-command steps.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

__all__ = ["LuaScript", "RELEASE", "GENERATION", "SET_IF_GENERATION", "LEAD", "FINISH"]


@dataclass(frozen=True)
class LuaScript:
    """A script's text and its SHA1, the name ``EVALSHA`` calls it by once the server has seen it."""

    text: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.text.encode()).hexdigest())


#: Compare-and-delete of a single-flight lock: only the holder of the token (ARGV[1]) deletes KEYS[1].
RELEASE = LuaScript("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0")

#: Get-or-create of an entity's generation: the token under KEYS[1], or ARGV[1] (a fresh random one) stored there.
GENERATION = LuaScript(
    "local g = redis.call('get', KEYS[1]) if g then return g end redis.call('set', KEYS[1], ARGV[1]) return ARGV[1]"
)

#: Compare-then-set: SET KEYS[2] to ARGV[2] for ARGV[3] ms only while the generation KEYS[1] still holds ARGV[1].
SET_IF_GENERATION = LuaScript(
    "if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end "
    "redis.call('set', KEYS[2], ARGV[2], 'PX', ARGV[3]) return 1"
)

#: The leader's first look: ``{1, value}`` when KEYS[1] (the value) is there now; else ``{0, generation, locked}``
#: after trying the lock KEYS[2] (token ARGV[1], ARGV[2] ms) and reading or creating the generation KEYS[3]
#: (ARGV[3]: a fresh token in case there is none).
LEAD = LuaScript(
    "local v = redis.call('get', KEYS[1]) if v then return {1, v} end "
    "local locked = 0 "
    "if redis.call('set', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then locked = 1 end "
    "local g = redis.call('get', KEYS[3]) "
    "if not g then redis.call('set', KEYS[3], ARGV[3]) g = ARGV[3] end "
    "return {0, g, locked}"
)

#: The leader's last step: SET KEYS[2] to ARGV[2] for ARGV[3] ms only while the generation KEYS[1] holds
#: ARGV[1] (1 when stored, else 0), then release the lock KEYS[3] if it holds the token ARGV[4] ('' : none held).
FINISH = LuaScript(
    "local stored = 0 "
    "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('set', KEYS[2], ARGV[2], 'PX', ARGV[3]) stored = 1 end "
    "if ARGV[4] ~= '' and redis.call('get', KEYS[3]) == ARGV[4] then redis.call('del', KEYS[3]) end "
    "return stored"
)
