"""Imported traces (``psra-bench trace import``): load one, tune TTLs on it, replay it live through the real cache.

:func:`load_trace` reads the normalized trace file :mod:`psra_bench.trace.tracefile` writes (an
``.npz``: arrays ``t``, ``entity``, ``op``, ``key``, ``size`` and a JSON ``meta``) into a
:class:`~psra_bench.cachesim.workload.Trace` over the entities it carries. Its writes are the
invalidations the capture saw (a key deleted, or ``key = -1``: the whole entity swept), so the
trace invalidates only what it recorded and the mode that reproduces the deployed cache is
``invalidate_on_update=True, invalidation_scope="key"`` (:data:`CAPTURED_MODE`).

:func:`tune_trace` runs :func:`psra_bench.cachesim.ttl_sim.simulate` at the TTLs in force and
:func:`~psra_bench.cachesim.ttl_sim.sweep` over a grid, and recommends per entity with
:func:`~psra_bench.cachesim.ttl_sim.recommend_ttl` on a curve whose hit rate is the captured
mode's and whose staleness is the one the same changes would cause if they were *not*
invalidated (what a TTL risks for changes the cache is not told about).

:func:`replay_trace_live` replays the trace's keys through the real
:class:`~psra_bench.cache.service.CacheService` on the compressed clock of
:mod:`psra_bench.cachesim.replay`: a read is ``get``, and on a miss ``get_or_compute`` with a value
of the recorded size; a write is ``delete`` of the key or ``invalidate`` of the whole entity.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from psra_bench.cache.core import MISSING
from psra_bench.cachesim import clock
from psra_bench.cachesim.ttl_sim import DEFAULT_GRID_S, recommend_ttl, simulate, sweep
from psra_bench.cachesim.workload import ENTITY_LABELS, Event, Trace, check_ttls, load_trace
from psra_bench.exceptions import InputError, MeasurementError, ParameterError
from psra_bench.settings import LiveSettings, Settings

__all__ = [
    "CAPTURED_MODE",
    "load_trace",
    "trace_meta",
    "tune_trace",
    "tune_file",
    "replay_trace_live",
    "write_result",
]

#: Simulation options that reproduce what the captured cache did.
CAPTURED_MODE: dict[str, Any] = {"invalidate_on_update": True, "invalidation_scope": "key"}
_CALIBRATION_OPS = 20


def trace_meta(path: str | Path) -> dict[str, Any]:
    """The import's account stored with a trace file (fingerprint, counts, unmapped prefixes …), keys left out."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:  # reads the meta member only
            meta = json.loads(bytes(data["meta"]).decode())
    except (OSError, ValueError, KeyError) as e:
        raise InputError("trace", str(path), f"a trace file written by `psra-bench trace import` ({e})") from None
    return {k: v for k, v in meta.items() if k != "keys"}


def _merged_curve(captured: list[dict[str, Any]], plain: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Captured-mode points with the staleness of the same TTL without invalidation."""
    by_ttl = {p["ttl_s"]: p for p in plain}
    out = []
    for p in captured:
        q = dict(p)
        for k in ("stale_reads", "stale_share", "mean_stale_s", "p95_stale_s", "max_stale_s"):
            q[k] = by_ttl[p["ttl_s"]].get(k)
        q["staleness_metric"] = metric
        out.append(q)
    return out


def tune_trace(
    trace: Trace,
    current_ttls: Mapping[str, float],
    grid_s: Sequence[float] = DEFAULT_GRID_S,
    *,
    target_hit_rate: float,
    max_staleness_s: float,
    metric: str = "max_stale_s",
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Per entity: the TTL in force simulated, and the recommended TTL with hit rate, CI, staleness and memory.

    ``current_ttls`` are the settings' (every entity; those the trace lacks are left out).
    """
    current = {e: float(v) for e, v in current_ttls.items() if e in trace.entity_names}
    missing = [e for e in trace.entity_names if e not in current]
    if missing:
        raise ParameterError("current_ttls", missing[0], "a TTL for every entity of the trace")
    now = simulate(trace, current, **CAPTURED_MODE)
    grid = sorted({*(float(g) for g in grid_s), *current.values()})
    captured = sweep(trace, grid, **CAPTURED_MODE)
    plain = sweep(trace, grid)
    entities: dict[str, Any] = {}
    for e in trace.entity_names:
        cur = now["entities"][e]
        curve = _merged_curve(captured["curves"][e], plain["curves"][e], metric)
        advice = recommend_ttl(curve, target_hit_rate, max_staleness_s, metric=metric)
        point: Mapping[str, Any] = advice["point"] or {}
        entities[e] = {
            "label": ENTITY_LABELS.get(e, e),
            "current": {
                "ttl_s": current[e],
                "hit_rate": cur["hit_rate"],
                "hit_rate_ci": cur["hit_rate_ci"],
                "n": cur["n"],
                "memory_bytes": cur.get("memory_bytes"),
            },
            "recommended": {
                "ttl_s": advice["ttl_s"],
                "hit_rate": point.get("hit_rate"),
                "hit_rate_ci": point.get("hit_rate_ci"),
                "staleness_s": float(point.get(metric) or 0.0) if point else None,
                "staleness_metric": metric,
                "memory_bytes": point.get("memory_bytes"),
                "reason": advice["reason"],
                "best_within_staleness": advice["best_within_staleness"],
            },
            "curve": curve,
        }
    summary = trace.summary()
    info = dict(meta or {})
    return {
        "method": "psra_bench.cachesim.imported (module doc): hit rate as captured (recorded invalidations), "
        "staleness if those changes were not invalidated",
        "target_hit_rate": target_hit_rate,
        "max_staleness_s": max_staleness_s,
        "grid_s": grid,
        "entities": entities,
        "trace": {
            "fingerprint": info.get("fingerprint"),
            "simulation_fingerprint": trace.fingerprint(),
            "reads": summary["reads"],
            "writes": summary["writes"],
            "duration_s": trace.duration_s,
            "warmup_s": trace.warmup_s,
            "unmapped": info.get("unmapped", {}),
            "internal": info.get("internal", {}),
            "unreadable": info.get("unreadable"),
            "reordered": info.get("reordered"),
            "source": info.get("source"),
            "per_entity": summary["entities"],
        },
    }


class _KeyReplay(clock.Recorder):
    """A trace's keys through the real cache: reads are get / get_or_compute, writes delete or invalidate."""

    def __init__(self, trace: Trace, cache: clock.CompressedClockCache, invalidate: bool) -> None:
        self.trace, self.cache, self.invalidate = trace, cache, invalidate
        self.tally = {e: clock.Tally() for e in trace.entity_names}
        self.updates: dict[tuple[str, str], list[float]] = {}
        self.whole: dict[str, list[float]] = {}
        self.filled: dict[tuple[str, str], float] = {}
        self.size = trace.size.tolist() if trace.size is not None else None

    def write(self, ev: Event) -> None:
        """Delete the key (or invalidate the entity) when invalidating; remember the change either way."""
        if ev.key_index < 0:
            self.whole.setdefault(ev.entity, []).append(ev.t)
            if self.invalidate:
                self.cache.invalidate(ev.entity)
            return
        self.updates.setdefault((ev.entity, ev.key), []).append(ev.t)
        if self.invalidate:
            self.cache.delete(ev.key)

    def read(self, ev: Event) -> tuple[bool, float, float | None]:
        """One read: (hit, latency ms, staleness s or None)."""
        self.cache.clear_outcomes()
        started = time.perf_counter_ns()
        value = self.cache.get(ev.key, MISSING)
        hit = value is not MISSING
        if not hit:
            size = self.size[ev.position] if self.size is not None else 0
            self.cache.get_or_compute(ev.key, lambda: "x" * max(0, size - len(ev.key)))
            self.filled[(ev.entity, ev.key)] = ev.t
        elapsed = (time.perf_counter_ns() - started) / 1e6
        return hit, elapsed, self._staleness(ev) if hit else None

    def _staleness(self, ev: Event) -> float | None:
        filled = self.filled.get((ev.entity, ev.key))
        if filled is None:
            return None
        changes = [*self.updates.get((ev.entity, ev.key), []), *self.whole.get(ev.entity, [])]
        after = sorted(u for u in changes if filled < u <= ev.t)
        return ev.t - after[0] if after else None


def _calibrate(settings: Settings, trace: Trace) -> float:
    """Seconds one read costs on the real cache now (a get that misses plus a get_or_compute)."""
    cache = clock.open_cache(settings, dict.fromkeys(trace.entity_names, 60.0), 1.0)
    try:
        samples = []
        for i in range(_CALIBRATION_OPS):
            started = time.perf_counter()
            key = f"hs:code:calibration-{i}"
            cache.get(key, MISSING)
            cache.get_or_compute(key, lambda: "x")
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)
    finally:
        clock.drop_cache(cache)


def replay_trace_live(
    settings: LiveSettings,
    trace: Trace,
    ttls: Mapping[str, float],
    *,
    compression: float | None = None,
    invalidate_on_update: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Replay an imported ``trace`` through the real cache on a compressed clock, shaped like ``replay_live``'s result.

    ``compression`` (simulated seconds per real second) defaults to one that gives the replay the
    calibrated per-read cost with :data:`psra_bench.cachesim.clock.CALIBRATION_HEADROOM`.
    """
    ttls = check_ttls({e: v for e, v in ttls.items() if e in trace.entity_names}, allowed=trace.entity_names)
    missing = [e for e in trace.entity_names if e not in ttls]
    if missing:
        raise ParameterError("ttls", missing[0], "a TTL for every entity of the trace")
    chosen = clock.check_compression(compression, trace, ttls)
    if not isinstance(settings, LiveSettings):
        raise MeasurementError("replay_trace_live needs LiveSettings with concrete endpoints (from ensure_services)")
    per_read = None
    if chosen is None:
        per_read = _calibrate(settings, trace)
        chosen = min(clock.auto_compression(trace, len(trace) * per_read), min(ttls.values()) / clock.MIN_SCALED_TTL_S)
    cache = clock.open_cache(settings, ttls, chosen)
    try:
        replay = _KeyReplay(trace, cache, invalidate_on_update)
        lags, realized, wall = clock.run_events(replay, trace, chosen)
        stats = cache.stats()["entities"]
    finally:
        clock.drop_cache(cache)
    scope = CAPTURED_MODE["invalidation_scope"]
    realized_sim = None
    if realized:
        times = np.minimum(np.maximum.accumulate(np.asarray(realized, dtype=float)), trace.duration_s)
        shifted = simulate(
            dataclasses.replace(trace, t=times),
            ttls,
            invalidate_on_update=invalidate_on_update,
            invalidation_scope=scope,
        )
        realized_sim = {e: r["hit_rate"] for e, r in shifted["entities"].items()}
    bins = clock.TIMELINE_BINS
    return {
        "source": "live",
        "method": "psra_bench.cachesim.imported (module doc): the trace's keys through the real CacheService",
        "trace": trace.summary(),
        "trace_fingerprint": trace.fingerprint(),
        "ttls_s": dict(ttls),
        "compression": chosen,
        "calibration": None if per_read is None else {"per_read_s": per_read, "headroom": clock.CALIBRATION_HEADROOM},
        "scaled_ttls_s": {e: v / chosen for e, v in ttls.items()},
        "invalidate_on_update": bool(invalidate_on_update),
        "invalidation_scope": scope,
        "warmup_s": trace.warmup_s,
        "real_seconds": wall,
        "schedule": clock.schedule_summary(lags),
        "realized_clock_sim": realized_sim,
        "cache_errors": sum(int(v.get("errors", 0)) + int(v.get("skipped", 0)) for v in stats.values()),
        "consistency_errors": 0,
        "verdicts_written": 0,
        "entities": {e: _live_entity(e, replay.tally[e], ttls[e], seed) for e in trace.entity_names},
        "timeline": {
            "edges_s": [trace.duration_s * i / bins for i in range(bins + 1)],
            **{e: {"reads": t.bins_reads, "hits": t.bins_hits} for e, t in replay.tally.items()},
        },
    }


def _live_entity(entity: str, tally: clock.Tally, ttl: float, seed: int) -> dict[str, Any]:
    row = dict(clock.entity_result(entity, tally, ttl, seed))
    row.update(miss_source="computation (replay)")
    return row


def tune_file(path: str | Path, settings: Settings, params: Any, *, mrc: bool = True) -> dict[str, Any]:
    """``trace tune``: :func:`tune_trace` of a trace file at the settings' TTLs, with totals and miss-ratio curves.

    ``params`` is a :class:`psra_bench.cachesim.params.TraceTuneParams`.
    """
    from psra_bench.cachesim.memory import POLICIES, miss_ratio_curve

    meta = trace_meta(path)
    trace = load_trace(path, warmup_s=params.warmup_s)
    current = {e: float(settings.ttl.for_entity(e)) for e in trace.entity_names}
    result = tune_trace(
        trace,
        current,
        params.ttl_grid,
        target_hit_rate=params.target_hit_rate,
        max_staleness_s=params.max_staleness_s,
        metric=params.staleness_metric,
        meta=meta,
    )
    rows = result["entities"].values()
    result["memory"] = {
        "unit": "bytes of value + key the TTLs keep resident, time-averaged (no allocator overhead)",
        "current_total_bytes": _total(r["current"]["memory_bytes"] for r in rows),
        "recommended_total_bytes": _total(r["recommended"]["memory_bytes"] for r in rows),
        "miss_ratio_curves": {p: miss_ratio_curve(trace, p).to_dict() for p in POLICIES} if mrc else None,
    }
    return result


def _total(values: Any) -> float | None:
    known = [v for v in values if v is not None]
    return float(sum(known)) if known else None


def write_result(path: str | Path, result: Mapping[str, Any]) -> Path:
    """Write ``result`` as JSON to exactly ``path``, atomically (temp file + rename)."""
    import os
    import tempfile

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(result, fh, indent=1, default=str)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
