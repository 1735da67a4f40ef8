"""The TTL simulation's engine, vectorized: every read of one entity classified at once with numpy.

:func:`psra_bench.cachesim.ttl_sim.simulate_entity` states the model; this module computes it
without a per-event Python loop, so a 10-million-read trace simulates in seconds and in a few
hundred MB:

1. The entity's reads are grouped by key (stable sort by key, then position). The data changes
   that matter are split into *key writes* (position, key) and *whole-entity writes* (position):
   with ``invalidate_on_update`` and the ``"entity"`` scope every relevant write clears the whole
   entity; otherwise a row update touches its key (and, in a generated trace, a rule update the
   assessments that applied the rule) and a recorded sweep (key ``-1``) the whole entity.
2. If read ``i`` fills its key, the key's next miss is the first later read of the same key at
   ``t ≥ t_i + ttl`` or, when invalidating, after the first invalidation following ``i``: two
   ``searchsorted`` over (key, time-rank) and (key, position) composite integers.
3. The misses are the reads reachable from each key's first read by following step 2's pointer
   (one numpy step per miss of the busiest key); every other read hits.
4. A hit is stale (without invalidation) when a write touched its key after its fill; its
   staleness is ``t - t_write`` of the first such write. A fill's resident bytes are its size
   times the time until it expired, was invalidated or the trace ended.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from psra_bench.cachesim.workload import READ, WRITE, Trace

__all__ = ["EntityRun", "run_entity"]

_NONE = np.iinfo(np.int64).max


@dataclass(frozen=True)
class EntityRun:
    """What one entity did at one TTL (counts over the reads at ``t ≥ warm``; fills over all)."""

    hits: int
    misses: int
    fills: int
    invalidations: int
    #: Staleness (seconds) of every stale counted hit.
    stale_s: np.ndarray
    #: Mean resident bytes over the trace, or None when the trace carries no sizes.
    memory_bytes: float | None


@dataclass(frozen=True)
class _Reads:
    """One entity's reads sorted by (key, position), with what steps 2-4 need."""

    pos: np.ndarray
    t: np.ndarray
    key: np.ndarray
    rank: np.ndarray
    times: np.ndarray
    #: Index of each key's first read.
    starts: np.ndarray
    #: Per read: the index after its key's last read.
    group_end: np.ndarray
    by_time: np.ndarray
    by_pos: np.ndarray
    size: np.ndarray | None


_CACHE: weakref.WeakKeyDictionary[Trace, dict[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()


def _cached(trace: Trace, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
    """``compute()`` once per trace and ``key``; the cache goes when the trace does (a sweep reuses it)."""
    mine = _CACHE.setdefault(trace, {})
    if key not in mine:
        mine[key] = compute()
    return mine[key]


def _reads(trace: Trace, entity: str) -> _Reads:
    return cast(_Reads, _cached(trace, ("reads", entity), lambda: _sorted_reads(trace, entity)))


def _sorted_reads(trace: Trace, entity: str) -> _Reads:
    e = trace.entity_names.index(entity)
    pos = np.flatnonzero((trace.entity == e) & (trace.op == READ))
    key = trace.key[pos]
    order = np.lexsort((pos, key))
    pos, key = pos[order], key[order].astype(np.int64)
    t = trace.t[pos]
    times = np.unique(t)
    rank = np.searchsorted(times, t)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.zeros(0, dtype=np.int64)
    lengths = np.diff(np.r_[starts, key.size])
    span_t, span_p = np.int64(times.size + 1), np.int64(trace.t.size + 1)
    by_time, by_pos = key * span_t + rank, key * span_p + pos
    size = _sizes(trace, e, key)
    return _Reads(
        pos.astype(np.int32), t, key.astype(np.int32), rank.astype(np.int32), times,
        starts, np.repeat(np.r_[starts[1:], key.size][: starts.size], lengths).astype(np.int32), by_time, by_pos, size,
    )  # fmt: skip


def _sizes(trace: Trace, e: int, key: np.ndarray) -> np.ndarray | None:
    """Bytes of each read's key: the largest size the trace gives the key (None: the trace has no sizes)."""
    if trace.size is None:
        return None
    mask = (trace.entity == e) & (trace.key >= 0)
    n_keys = int(max(trace.key[mask].max(initial=-1), key.max(initial=-1))) + 1
    per_key = np.zeros(n_keys, dtype=np.int64)
    np.maximum.at(per_key, trace.key[mask].astype(np.int64), trace.size[mask])
    return per_key[key] if per_key.any() else None


def _writes(trace: Trace, entity: str, whole: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key-write keys, key-write positions sorted by (key, position), whole-entity write positions sorted)."""
    return cast(
        tuple[np.ndarray, np.ndarray, np.ndarray],
        _cached(trace, ("writes", entity, whole), lambda: _relevant_writes(trace, entity, whole)),
    )


def _relevant_writes(trace: Trace, entity: str, whole: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    e = trace.entity_names.index(entity)
    own = np.flatnonzero((trace.entity == e) & (trace.op == WRITE))
    derived = np.zeros(0, dtype=np.int64)
    if entity == "assessments" and trace.derived_invalidation:
        derived = np.flatnonzero((trace.entity != e) & (trace.op == WRITE))
    if whole:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.sort(np.r_[own, derived]).astype(np.int64)
    own_keys = trace.key[own].astype(np.int64)
    kw_pos, kw_key = [own[own_keys >= 0]], [own_keys[own_keys >= 0]]
    if derived.size and "rules" in trace.entity_names:
        rule_writes = derived[trace.entity[derived] == trace.entity_names.index("rules")]
        deps = trace.depends_on.astype(np.int64)
        for a in np.flatnonzero(deps >= 0):  # assessments are few (≤ 5000): one mask per assessment
            hit = rule_writes[trace.key[rule_writes] == deps[a]]
            kw_pos.append(hit)
            kw_key.append(np.full(hit.size, a, dtype=np.int64))
    pos, keys = np.concatenate(kw_pos).astype(np.int64), np.concatenate(kw_key)
    order = np.lexsort((pos, keys))
    return keys[order], pos[order], np.sort(own[own_keys < 0]).astype(np.int64)


def _first_write_after(
    r: _Reads, idx: np.ndarray, span_p: np.int64, kw: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> np.ndarray:
    """Position of the first write touching read ``idx``'s key after that read (``_NONE``: none)."""
    kw_key, kw_pos, whole = kw
    out = np.full(idx.size, _NONE, dtype=np.int64)
    if kw_key.size:
        comb = kw_key * span_p + kw_pos
        j = np.searchsorted(comb, r.key[idx].astype(np.int64) * span_p + r.pos[idx], side="right")
        ok = j < comb.size
        ok[ok] = kw_key[j[ok]] == r.key[idx][ok]
        out[ok] = kw_pos[j[ok]]
    if whole.size:
        j = np.searchsorted(whole, r.pos[idx], side="right")
        ok = j < whole.size
        out[ok] = np.minimum(out[ok], whole[j[ok]])
    return out


def run_entity(trace: Trace, entity: str, ttl: float, *, invalidate: bool, whole_scope: bool, warm: float) -> EntityRun:
    """Simulate ``entity`` at ``ttl`` (see the module doc)."""
    r = _reads(trace, entity)
    n = r.key.size
    span_t, span_p = np.int64(r.times.size + 1), np.int64(trace.t.size + 1)
    kw = _writes(trace, entity, invalidate and whole_scope)
    every = np.arange(n, dtype=np.int64)
    threshold = np.searchsorted(r.times, r.t + ttl, side="left").astype(np.int64)
    nxt = np.searchsorted(r.by_time, r.key.astype(np.int64) * span_t + threshold, side="left")
    inval = _first_write_after(r, every, span_p, kw) if invalidate else np.full(n, _NONE, dtype=np.int64)
    if invalidate:
        has = inval != _NONE
        after = np.searchsorted(r.by_pos, r.key[has].astype(np.int64) * span_p + inval[has], side="right")
        nxt[has] = np.minimum(nxt[has], after)
    nxt = np.where(nxt < r.group_end, nxt, -1)
    miss = np.zeros(n, dtype=bool)
    cur = r.starts
    while cur.size:
        miss[cur] = True
        cur = nxt[cur]
        cur = cur[cur >= 0]
    counted = r.t >= warm
    fill_of = np.maximum.accumulate(np.where(miss, every, 0)) if n else every
    fills = np.flatnonzero(miss)
    end = np.minimum(r.t[fills] + ttl, trace.duration_s)
    invalidations = 0
    if invalidate:
        inv_t = np.where(inval[fills] != _NONE, trace.t[np.minimum(inval[fills], trace.t.size - 1)], np.inf)
        dropped = inv_t < r.t[fills] + ttl
        invalidations = int(dropped.sum())
        end = np.where(dropped, np.minimum(inv_t, end), end)
    stale = np.zeros(0)
    hit = ~miss & counted
    if not invalidate and (kw[0].size or kw[2].size) and hit.any():
        idx = np.flatnonzero(hit)
        first = _first_write_after(r, fill_of[idx], span_p, kw)
        ok = first < r.pos[idx]
        stale = r.t[idx[ok]] - trace.t[first[ok]]
    memory = None if r.size is None else 0.0
    if r.size is not None and fills.size:
        memory = float((r.size[fills] * np.maximum(0.0, end - r.t[fills])).sum()) / trace.duration_s
    return EntityRun(int(hit.sum()), int((miss & counted).sum()), int(fills.size), invalidations, stale, memory)
