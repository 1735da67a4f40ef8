"""The live replay's clock and counting, shared by both replays (generated traces and imported ones).

A replay issues event ``i`` at ``t_i / compression`` real seconds after its start through
:class:`CompressedClockCache` (the real :class:`~psra_bench.cache.service.CacheService` with every
TTL divided by the compression), records each read's outcome in a :class:`Tally` per entity and
reports the scheduling lag. :mod:`psra_bench.cachesim.replay` drives generated traces through
CachedDAL and the assessment engine; :mod:`psra_bench.cachesim.imported` drives an imported
trace's keys through the cache itself.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from psra_bench.cache import keys
from psra_bench.cache.core import MISSING
from psra_bench.cache.service import CacheService
from psra_bench.cachesim.ttl_sim import staleness_summary, wilson_interval
from psra_bench.cachesim.workload import ENTITY_LABELS, Event, Trace
from psra_bench.exceptions import ParameterError
from psra_bench.measure.progress import note
from psra_bench.measure.stats import percentile, summarize
from psra_bench.results import LatencySummary, LiveEntity
from psra_bench.settings import Settings

__all__ = [
    "CALIBRATION_HEADROOM",
    "MIN_REAL_SECONDS",
    "MIN_SCALED_TTL_S",
    "MISS_SOURCES",
    "TIMELINE_BINS",
    "CompressedClockCache",
    "Tally",
    "Recorder",
    "auto_compression",
    "check_compression",
    "entity_result",
    "run_events",
    "open_cache",
    "drop_cache",
    "schedule_summary",
]

#: Real time budgeted for the replay, as a multiple of the calibrated estimate.
CALIBRATION_HEADROOM = 1.5
#: The shortest replay (real seconds) the automatic compression aims for.
MIN_REAL_SECONDS = 8.0
#: Scaled TTLs below this (real seconds) would drown in scheduling jitter: refused.
MIN_SCALED_TTL_S = 0.05
#: What answers a miss, per entity (the spec's "vs DB" / "vs compute" column).
MISS_SOURCES: dict[str, str] = {"hs_codes": "database", "rules": "database", "assessments": "computation"}
#: Bins of the hit-rate timeline over the trace's period.
TIMELINE_BINS = 24


class CompressedClockCache(CacheService):
    """The real CacheService on a compressed clock: TTLs divided by ``compression``, GET outcomes recorded.

    ``ttls`` (entity -> simulated seconds) replaces the TTL of that entity's keys whatever the
    caller passed, so the TTLs under test apply even where a caller sets its own.
    """

    def __init__(self, settings: Settings, ttls: Mapping[str, float], compression: float, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.sim_ttls = dict(ttls)
        self.compression = float(compression)
        #: (logical key, hit) of every ``get`` since the last :meth:`clear_outcomes`.
        self.outcomes: list[tuple[str, bool]] = []

    def ttl_ms(self, key: str, ttl: float | None) -> int:
        """Milliseconds to keep ``key`` on the compressed clock."""
        seconds = self.sim_ttls.get(keys.entity_of(key))
        if seconds is None:
            seconds = super().ttl_ms(key, ttl) / 1000
        return max(1, round(seconds * 1000 / self.compression))

    def get(self, key: str, default: Any = None) -> Any:
        """The cached value of ``key`` (or ``default``), recording whether it was found."""
        value = super().get(key, MISSING)
        self.outcomes.append((key, value is not MISSING))
        return default if value is MISSING else value

    def clear_outcomes(self) -> None:
        """Forget the recorded GET outcomes."""
        self.outcomes.clear()

    def first_outcome(self, key: str) -> bool | None:
        """Whether the first recorded GET of ``key`` was a hit (None: not asked)."""
        return next((hit for k, hit in self.outcomes if k == key), None)


def auto_compression(trace: Trace, expected_seconds: float) -> float:
    """Simulated seconds per real second that give the replay ``expected_seconds`` × the headroom (≥ the minimum)."""
    return trace.duration_s / max(MIN_REAL_SECONDS, expected_seconds * CALIBRATION_HEADROOM)


def check_compression(compression: float | None, trace: Trace, ttls: Mapping[str, float]) -> float | None:
    if compression is None:
        return None
    if (
        isinstance(compression, bool)
        or not isinstance(compression, int | float)
        or not math.isfinite(compression)
        or compression <= 0
    ):
        raise ParameterError("compression", compression, "simulated seconds per real second > 0, or None for auto")
    _check_scaled(compression, ttls)
    return float(compression)


def _check_scaled(compression: float, ttls: Mapping[str, float]) -> None:
    shortest = min(ttls.values())
    if shortest / compression < MIN_SCALED_TTL_S:
        raise ParameterError(
            "compression",
            compression,
            f"at most {shortest / MIN_SCALED_TTL_S:g} so the shortest TTL ({shortest:g} s) lasts "
            f"≥ {MIN_SCALED_TTL_S} real seconds",
        )


@dataclass
class Tally:
    """What the replay counts for one entity."""

    reads: int = 0
    n: int = 0
    hits: int = 0
    fills: int = 0
    hit_ms: list[float] = field(default_factory=list)
    miss_ms: list[float] = field(default_factory=list)
    stale_s: list[float] = field(default_factory=list)
    bins_reads: list[int] = field(default_factory=lambda: [0] * TIMELINE_BINS)
    bins_hits: list[int] = field(default_factory=lambda: [0] * TIMELINE_BINS)


class Recorder:
    """Counts reads into ``self.tally`` (entity -> :class:`Tally`) on ``self.trace``'s timeline."""

    trace: Trace
    tally: dict[str, Tally]

    def record(self, ev: Event, hit: bool, ms: float, stale: float | None) -> None:
        """Count one read (after warm-up) and put it on the timeline."""
        tally = self.tally[ev.entity]
        tally.reads += 1
        if not hit:
            tally.fills += 1
        b = min(TIMELINE_BINS - 1, int(ev.t / self.trace.duration_s * TIMELINE_BINS))
        tally.bins_reads[b] += 1
        tally.bins_hits[b] += int(hit)
        if ev.t < self.trace.warmup_s:
            return
        tally.n += 1
        tally.hits += int(hit)
        (tally.hit_ms if hit else tally.miss_ms).append(ms)
        if stale is not None:
            tally.stale_s.append(stale)


class _Replaying(Protocol):
    def write(self, ev: Event) -> None: ...
    def read(self, ev: Event) -> tuple[bool, float, float | None]: ...
    def record(self, ev: Event, hit: bool, ms: float, stale: float | None) -> None: ...


def _latency(samples: list[float], seed: int) -> LatencySummary | None:
    return summarize(samples, seed=seed).to_dict() if len(samples) >= 2 else None


def entity_result(entity: str, tally: Tally, ttl: float, seed: int) -> LiveEntity:
    """One entity's live figures: hit rate with its Wilson CI, staleness, latencies of hits and misses."""
    n = tally.n
    stale = staleness_summary(tally.stale_s, n)
    return {
        "label": ENTITY_LABELS.get(entity, entity),
        "entity": entity,
        "ttl_s": ttl,
        "reads": tally.reads,
        "n": n,
        "hits": tally.hits,
        "misses": n - tally.hits,
        "hit_rate": tally.hits / n if n else None,
        "hit_rate_ci": list(ci) if (ci := wilson_interval(tally.hits, n)) else None,
        "fills": tally.fills,
        "stale_reads": stale["stale_reads"],
        "stale_share": stale["stale_share"],
        "stale_share_ci": list(share_ci) if (share_ci := stale["stale_share_ci"]) else None,
        "mean_stale_s": stale["mean_stale_s"],
        "p95_stale_s": stale["p95_stale_s"],
        "max_stale_s": stale["max_stale_s"],
        "miss_source": MISS_SOURCES.get(entity, "computation"),
        "latency": {"hit": _latency(tally.hit_ms, seed), "miss": _latency(tally.miss_ms, seed)},
    }


def run_events(replay: _Replaying, trace: Trace, compression: float) -> tuple[list[float], list[float], float]:
    """Issue every event of ``trace`` on the compressed clock; (lags, realized times, wall seconds)."""
    lags: list[float] = []
    realized: list[float] = []
    start, total = time.perf_counter(), len(trace.t)
    for i, ev in enumerate(trace.events()):
        if i % 256 == 0:  # where the replay is, for a report run following it (at most once a second)
            note("cache replay", f"{i:,} of {total:,} events ({ev.t:,.0f} simulated s)", done=i, total=total)
        due = start + ev.t / compression
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        began = time.perf_counter()
        lags.append(max(0.0, began - due) * compression)
        realized.append(max(ev.t, (began - start) * compression))
        if ev.op == "write":
            replay.write(ev)
        else:
            replay.record(ev, *replay.read(ev))
    note("cache replay", f"{total:,} events replayed", done=total, total=total)
    return lags, realized, time.perf_counter() - start


def open_cache(settings: Settings, ttls: Mapping[str, float], compression: float) -> CompressedClockCache:
    """A CompressedClockCache in a fresh scratch namespace under the settings' namespace."""
    namespace = f"{settings.cache_namespace}cache-replay-{uuid.uuid4().hex[:8]}:"
    return CompressedClockCache(settings.replace(cache_namespace=namespace, enable_cache=True), ttls, compression)


def drop_cache(cache: CompressedClockCache) -> None:
    """Delete the replay's namespace (keys and the shared stats hash, which close() would write again)."""
    cache.delete_pattern("*")
    cache.reset_stats(shared=True)
    cache.close()


def schedule_summary(lags: list[float]) -> dict[str, Any] | None:
    """p50 / p95 / max of the scheduling lag, in simulated seconds (None without events)."""
    if not lags:
        return None
    return {
        "lag_p50_s": percentile(lags, 50),
        "lag_p95_s": percentile(lags, 95),
        "lag_max_s": max(lags),
        "unit": "simulated seconds an event started after its due time",
    }
