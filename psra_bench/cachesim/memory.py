"""Cache memory: miss-ratio curves over ``maxmemory`` under allkeys-lru and allkeys-lfu, checked on a live Valkey.

The curves model a cache that only evicts (no TTL, no invalidation): what ``maxmemory`` buys
once keys compete for space. An object's size is its bytes in the trace (value plus key), or,
for the live check, what the server says it costs (``MEMORY USAGE`` plus its share of the
key table).

* **LRU: exact byte stack distances, spatially sampled (SHARDS).** A key is in the sample when a
  64-bit hash of it falls below ``rate × 2^64``; for every sampled read of an object the bytes of
  the other distinct sampled objects read since its previous read are summed with a Fenwick tree
  over read positions; divided by ``rate``, plus its own size, that is the smallest LRU cache, in
  bytes, that hits. A read is a hit in a cache of ``C`` bytes iff its distance is ≤ ``C``; first reads
  always miss. ``rate`` 1 is exact; the default samples about :data:`SAMPLE_TARGET` reads. As in
  SHARDS-adj, the difference between the reads expected in the sample (``reads × rate``) and those
  found (a hot key in or out of the sample moves it a lot) is credited to the smallest distances.
* **LFU: simulated per size on the same sample**, capacity ``C × rate``: on a miss the object
  enters with count 1 and, while the cache is over capacity, the entry with the smallest count
  is evicted (the least recently used among equals). Valkey's LFU keeps a logarithmic, decaying
  counter that starts new keys at 5 and evicts from a sampled pool, so it deviates from this
  ideal more than its LRU does (:func:`check_live`: 0.03-0.045 on a Zipf trace, up to 0.09 on a
  60-second capture, Valkey missing less).
"""

from __future__ import annotations

import heapq
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from psra_bench.cachesim.workload import READ, Trace
from psra_bench.exceptions import MeasurementError, ParameterError

__all__ = [
    "POLICIES",
    "SAMPLE_TARGET",
    "MIN_LIVE_BYTES",
    "MissRatioCurve",
    "object_ids",
    "miss_ratio_curve",
    "check_live",
]

#: Eviction policies a curve can be drawn for.
POLICIES: tuple[str, ...] = ("allkeys-lru", "allkeys-lfu")
#: Sampled reads the automatic SHARDS rate aims for (keeps a curve within seconds on 10M reads).
SAMPLE_TARGET = 200_000
#: Sampled objects a cache size must hold for a sampled curve to be trusted there.
MIN_SAMPLED_OBJECTS = 50
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
_GRID_POINTS = 12
#: Smallest value the live check stores: a client's query and reply buffers count towards
#: ``used_memory`` too, so values must dwarf a pipelined call (about 100 bytes each).
MIN_LIVE_BYTES = 1024
#: Reads per round trip of the live check: one. A pipelined batch waits in the server's query buffer, which
#: counts towards ``used_memory`` and so shrinks the cache by an amount that grows with how busy the
#: machine is (seen: 0.085 off the curve in a full test run, 0.006 alone).
_LIVE_BATCH = 1
_LUA_READ = (
    "#!lua flags=allow-oom\n"  # evictions still run before each call; a cold miss is never refused
    "if redis.call('get', KEYS[1]) then return 1 end "
    "redis.call('set', KEYS[1], string.rep('x', tonumber(ARGV[1]))) return 0"
)


@dataclass(frozen=True)
class MissRatioCurve:
    """Miss ratio at each cache size (bytes) under one policy."""

    policy: str
    sizes_bytes: list[float]
    miss_ratio: list[float]
    #: Reads the curve was computed from (after sampling) and the sampling rate.
    reads: int
    rate: float
    #: Bytes every sampled object together takes (a cache this large only misses first reads).
    footprint_bytes: float
    #: Below this size a sampled curve is unreliable: the cache would hold fewer than
    #: :data:`MIN_SAMPLED_OBJECTS` sampled objects (0 for an exact curve).
    reliable_from_bytes: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dict(self.__dict__)


def object_ids(trace: Trace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per read: a global object id (entity, key), its bytes (1 when the trace has no sizes) and the read mask."""
    reads = (trace.op == READ) & (trace.key >= 0)
    offsets = np.cumsum([0, *(len(trace.keys.get(e, ())) for e in trace.entity_names)])
    ids = offsets[trace.entity[reads].astype(np.int64)] + trace.key[reads].astype(np.int64)
    sizes = trace.size[reads] if trace.size is not None else np.ones(ids.size, dtype=np.int64)
    return ids.astype(np.int64), np.maximum(sizes.astype(np.int64), 1), reads


def _hash(ids: np.ndarray) -> np.ndarray:
    """splitmix64 of each id (uniform 64-bit values: the SHARDS sampling hash)."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
        return z ^ (z >> np.uint64(31))


def _sample(ids: np.ndarray, sizes: np.ndarray, rate: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    if rate is None:
        rate = min(1.0, SAMPLE_TARGET / max(1, ids.size))
    if not 0 < rate <= 1:
        raise ParameterError("rate", rate, "a sampling rate > 0 and ≤ 1, or None for automatic")
    if rate < 1:
        keep = _hash(ids) < np.uint64(int(rate * 2**64 - 1))
        ids, sizes = ids[keep], sizes[keep]
    return ids, sizes, rate


def _stack_distances(ids: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Bytes of the other distinct objects read since each read's previous one (inf: first read); Fenwick tree."""
    n = ids.size
    tree = [0] * (n + 1)
    last: dict[int, int] = {}
    out = np.full(n, np.inf)
    total = 0
    for i, (x, s) in enumerate(zip(ids.tolist(), sizes.tolist(), strict=True)):
        p = last.get(x)
        if p is not None:
            j, before = p, 0  # bytes at positions ≤ p: prefix sum
            while j > 0:
                before += tree[j]
                j -= j & -j
            out[i] = total - before  # the others: x itself sits at p, inside the prefix
            j = p  # remove x at its old position
            while j <= n:
                tree[j] -= s
                j += j & -j
            total -= s
        j = i + 1
        while j <= n:
            tree[j] += s
            j += j & -j
        total += s
        last[x] = i + 1
    return out


def _lfu_misses(ids: list[int], size_of: dict[int, int], capacity: float) -> int:
    """Misses of an ideal LFU cache of ``capacity`` bytes (count from 1 on entry, LRU among equal counts)."""
    count: dict[int, int] = {}
    stamp: dict[int, int] = {}
    heap: list[tuple[int, int, int]] = []
    used = misses = 0
    for now, x in enumerate(ids):
        if x in count:
            count[x] += 1
            stamp[x] = now
            heapq.heappush(heap, (count[x], now, x))
            continue
        misses += 1
        s = size_of[x]
        if s > capacity:
            continue
        count[x], stamp[x] = 1, now
        heapq.heappush(heap, (1, now, x))
        used += s
        while used > capacity and heap:
            c, t, y = heapq.heappop(heap)
            if count.get(y) == c and stamp.get(y) == t:  # else a stale heap entry
                del count[y], stamp[y]
                used -= size_of[y]
    return misses


def _lfu_misses_at(ids: np.ndarray, sizes: np.ndarray, capacities: Sequence[float]) -> list[int]:
    id_list = ids.tolist()
    size_of = dict(zip(id_list, sizes.tolist(), strict=True))
    return [_lfu_misses(id_list, size_of, c) for c in capacities]


def miss_ratio_curve(
    trace: Trace,
    policy: str,
    sizes_bytes: Sequence[float] | None = None,
    *,
    rate: float | None = None,
    object_bytes: np.ndarray | None = None,
) -> MissRatioCurve:
    """The miss ratio of ``trace``'s reads at each cache size (default: a log grid up to the footprint).

    ``object_bytes`` replaces the per-read sizes (e.g. the server's own measure, for the live check).
    """
    if policy not in POLICIES:
        raise ParameterError("policy", policy, "one of " + ", ".join(POLICIES))
    ids, sizes, _ = object_ids(trace)
    if object_bytes is not None:
        sizes = np.asarray(object_bytes, dtype=np.int64)
    if ids.size == 0:
        raise MeasurementError("the trace has no reads of entity keys to draw a miss-ratio curve from")
    total = ids.size
    ids, sizes, rate = _sample(ids, sizes, rate)
    if ids.size == 0:
        raise MeasurementError(f"no read fell in the sample at rate {rate:g}; raise the rate")
    uniq, first = np.unique(ids, return_index=True)
    footprint = float(sizes[first].sum()) / rate
    if sizes_bytes is None:
        sizes_bytes = np.geomspace(max(1.0, footprint / 1000), footprint, _GRID_POINTS).tolist()
    grid = [float(c) for c in sizes_bytes]
    if policy == "allkeys-lru":
        dist = np.sort(_stack_distances(ids, sizes) / rate + sizes)  # others scaled up, the object itself not
        hits = [int(np.searchsorted(dist, c, side="right")) for c in grid]
    else:
        hits = [ids.size - m for m in _lfu_misses_at(ids, sizes, [c * rate for c in grid])]
    # SHARDS-adj: a hot key in (or out of) the sample makes the sampled reads more (fewer) than
    # total x rate; the difference is credited to the hits of the smallest distances.
    expected = total * rate
    ratios = [min(1.0, max(0.0, 1.0 - (h + (expected - ids.size if h else 0.0)) / expected)) for h in hits]
    reliable = 0.0 if rate >= 1 else MIN_SAMPLED_OBJECTS * float(sizes[first].mean()) / rate
    return MissRatioCurve(policy, grid, [float(r) for r in ratios], int(ids.size), rate, footprint, reliable)


def random_eviction_misses(ids: np.ndarray, object_bytes: np.ndarray, capacity: float, seed: int = 0) -> int:
    """Misses of a byte-bounded cache that evicts a uniformly random resident object (seeded).

    Valkey's LRU clock ticks once a second: keys touched within the same second look equally old to it,
    so a replay that is fast against its reuse distances evicts close to at random. Exact LRU (the
    curve) and this bound the live result from both sides.
    """
    rng = np.random.default_rng(seed)
    slot_of: dict[int, int] = {}  # resident object -> its index in `resident`
    resident: list[int] = []
    size_of: dict[int, float] = {}
    used, misses = 0.0, 0
    for x, size in zip(ids.tolist(), object_bytes.tolist(), strict=True):
        if x in slot_of:
            continue
        misses += 1
        while resident and used + size > capacity:
            slot = int(rng.integers(len(resident)))
            victim, last = resident[slot], resident[-1]
            resident[slot], slot_of[last] = last, slot
            resident.pop()
            del slot_of[victim]
            used -= size_of.pop(victim)
        if size <= capacity:
            slot_of[x], size_of[x] = len(resident), float(size)
            resident.append(x)
            used += size
    return misses


def _server_sizes(client: Any, ids: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, float]:
    """Per read, what its object costs the server (MEMORY USAGE + key-table share), and the empty server's memory."""
    client.flushall()
    base = int(client.info("memory")["used_memory"])
    uniq, first = np.unique(ids, return_index=True)
    pipe = client.pipeline(transaction=False)
    for x, s in zip(uniq.tolist(), sizes[first].tolist(), strict=True):
        pipe.set(f"o:{x}", b"x" * int(s))
    pipe.execute()
    for x in uniq.tolist():
        pipe.memory_usage(f"o:{x}", samples=0)
    usage = np.asarray(pipe.execute(), dtype=np.int64)
    full = int(client.info("memory")["used_memory"])
    share = max(0.0, (full - base - float(usage.sum())) / max(1, uniq.size))
    per_object = dict(zip(uniq.tolist(), (usage + share).tolist(), strict=True))
    client.flushall()
    return np.asarray([per_object[x] for x in ids.tolist()]), float(base)


def check_live(trace: Trace, policy: str, fractions: Sequence[float], *, samples: int = 10) -> dict[str, Any]:
    """``trace``'s reads into a throwaway Valkey at ``maxmemory`` = fractions of the footprint: predicted vs live.

    The server runs on a free port in a temp folder and is stopped afterwards. Each read is one
    script call (GET, and SET of a value of the read's size on a miss), pipelined in order;
    ``maxmemory-samples`` is ``samples``. Object sizes are the server's own (MEMORY USAGE plus
    each key's share of the key table), so both sides count the same bytes. Each point also holds the
    miss ratio of random eviction (:func:`random_eviction_misses`): Valkey's LRU lies between it and the
    exact LRU of the curve, nearer to random the faster the replay runs against its one-second clock.
    """
    import redis

    from psra_bench.infra.embedded import start_valkey, stop_valkey

    if policy not in POLICIES:
        raise ParameterError("policy", policy, "one of " + ", ".join(POLICIES))
    ids, sizes, _ = object_ids(trace)
    sizes = np.maximum(sizes, MIN_LIVE_BYTES)
    with tempfile.TemporaryDirectory(prefix="psra-mrc-") as home:
        server = start_valkey(Path(home), name="mrc-check", maxmemory="0", policy=policy)
        client = redis.Redis(**server.client_kwargs())
        try:
            client.config_set("maxmemory-samples", samples)
            server_bytes, _ = _server_sizes(client, ids, sizes)
            footprint = float(server_bytes[np.unique(ids, return_index=True)[1]].sum())
            capacities = [footprint * f for f in fractions]
            predicted = miss_ratio_curve(trace, policy, capacities, rate=1.0, object_bytes=server_bytes)
            read = client.register_script(_LUA_READ)
            rows = []
            for f, cap, pred in zip(fractions, capacities, predicted.miss_ratio, strict=True):
                client.flushall()
                base = float(client.info("memory")["used_memory"])
                client.config_resetstat()
                client.config_set("maxmemory", int(base + cap))
                started, hits = time.perf_counter(), 0
                pipe = client.pipeline(transaction=False)
                for n, (x, s) in enumerate(zip(ids.tolist(), sizes.tolist(), strict=True), 1):
                    read(keys=[f"o:{x}"], args=[int(s)], client=pipe)
                    if n % _LIVE_BATCH == 0:
                        hits += sum(int(v) for v in pipe.execute())
                hits += sum(int(v) for v in pipe.execute())
                live = 1 - hits / max(1, ids.size)
                evicted = int(client.info("stats")["evicted_keys"])
                client.config_set("maxmemory", 0)
                rows.append(
                    {
                        "fraction": f,
                        "maxmemory_bytes": int(base + cap),
                        "cache_bytes": cap,
                        "predicted_miss_ratio": pred,
                        # the other bound of an LRU whose clock cannot tell keys of the same second apart
                        "random_eviction_miss_ratio": random_eviction_misses(ids, server_bytes, cap) / max(1, ids.size),
                        "live_miss_ratio": live,
                        "abs_diff": abs(pred - live),
                        "evicted_keys": evicted,
                        "seconds": time.perf_counter() - started,
                    }
                )
        finally:
            client.close()
            stop_valkey(Path(home), name="mrc-check")
    return {"policy": policy, "reads": int(ids.size), "footprint_bytes": footprint, "samples": samples, "points": rows}
