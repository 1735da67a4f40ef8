"""Fast TTL simulation over a workload trace: hit rate and staleness per entity, TTL sweeps, advice.

The model is the cache the live replay exercises, reduced to its clock:

* A read of key ``k`` at simulated time ``t`` is a **hit** when ``k`` was filled at ``c`` with
  ``t < c + ttl`` (Redis expires a key ``ttl`` after its SET) and not invalidated since; otherwise
  it is a **miss** and fills ``k`` at ``t`` (read-through: the database or the engine answers and
  the result is cached).
* A write (data update) of row ``r`` at ``u`` changes the truth of the keys that depend on it: the
  HS code or rule itself, and for a rule also every assessment that selected that rule. Without
  invalidation those keys stay cached and turn **stale**. With ``invalidate_on_update`` keys are
  deleted at ``u``: by default with the scope :class:`psra_bench.cache.cached_dal.CachedDAL` uses
  (``"entity"``: an HS update drops every HS code and assessment, a rule update every rule and
  assessment), or per key (``"key"``: only the changed row and the assessments of a changed rule),
  to show what finer invalidation would keep.
* The **staleness** of a hit is ``t - u`` where ``u`` is the first update of its row after the fill
  (0 for a fresh hit; misses are always fresh). Per entity we report the share of counted reads
  that were stale and the mean, p95 (numpy "linear") and maximum staleness of the stale reads.
* Only reads at ``t >= warmup_s`` are counted; the hit rate carries a 95 % Wilson score interval.

* An imported trace (:mod:`psra_bench.cachesim.imported`) may also carry writes of a whole entity
  (key ``-1``: a recorded sweep), which make stale or delete every cached key of the entity, and
  value sizes, from which ``memory_bytes`` is the mean number of bytes the TTL keeps resident.

Entities are independent here (an entity's hits depend only on its own TTL), so a sweep
simulates each entity alone. One pass is vectorized (:mod:`psra_bench.cachesim.ttl_engine`):
10 million reads in seconds, fast enough for sliders in a notebook.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, cast

from psra_bench.cachesim.ttl_engine import run_entity
from psra_bench.cachesim.workload import ENTITY_LABELS, Trace, check_entity, check_ttls
from psra_bench.exceptions import MeasurementError, ParameterError
from psra_bench.measure.stats import percentile
from psra_bench.results import SimulationResult, TtlPoint, TtlRecommendation, TtlTuning

__all__ = [
    "DEFAULT_GRID_S",
    "STALENESS_METRICS",
    "INVALIDATION_SCOPES",
    "EntityResult",
    "wilson_interval",
    "staleness_summary",
    "simulate_entity",
    "simulate",
    "sweep",
    "recommend_ttl",
    "recommend_all",
    "tune",
    "compare_sim_to_live",
]

#: TTLs (seconds) a sweep tries unless told otherwise.
DEFAULT_GRID_S: tuple[float, ...] = (15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200)
#: How much an update invalidates: everything of the affected entities (as CachedDAL does) or one key.
INVALIDATION_SCOPES: tuple[str, ...] = ("entity", "key")
#: Staleness figures :func:`recommend_ttl` can bound.
STALENESS_METRICS: tuple[str, ...] = ("p95_stale_s", "mean_stale_s", "max_stale_s")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion ``successes / n`` (None when ``n == 0``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0 or not 0 <= successes <= n:
        raise ParameterError("successes/n", f"{successes}/{n}", "whole numbers with 0 ≤ successes ≤ n")
    if not 0 < confidence < 1:
        raise ParameterError("confidence", confidence, "a number strictly between 0 and 1")
    if n == 0:
        return None
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def staleness_summary(stale_s: Sequence[float], n_reads: int) -> dict[str, Any]:
    """Stale reads, their share of ``n_reads`` (with Wilson CI), and mean / p95 / max staleness in seconds."""
    k = len(stale_s)
    return {
        "stale_reads": k,
        "stale_share": k / n_reads if n_reads else None,
        "stale_share_ci": wilson_interval(k, n_reads),
        "mean_stale_s": sum(stale_s) / k if k else None,
        "p95_stale_s": percentile(stale_s, 95) if k else None,
        "max_stale_s": max(stale_s) if k else None,
    }


@dataclass(frozen=True)
class EntityResult:
    """One entity simulated at one TTL."""

    entity: str
    ttl_s: float
    invalidate_on_update: bool
    #: Reads counted (after warm-up).
    n: int
    hits: int
    misses: int
    hit_rate: float | None
    hit_rate_ci: tuple[float, float] | None
    stale_reads: int
    stale_share: float | None
    stale_share_ci: tuple[float, float] | None
    mean_stale_s: float | None
    p95_stale_s: float | None
    max_stale_s: float | None
    #: Cache fills over the whole trace (each is a database query or an assessment computed).
    fills: int
    #: Cached keys deleted by an update (with ``invalidate_on_update``).
    invalidations: int
    #: Mean bytes this entity keeps resident over the trace (value sizes from the trace; None: unknown).
    memory_bytes: float | None = None

    def to_dict(self) -> TtlPoint:
        """JSON-ready fields plus the table label."""
        d = asdict(self)
        for k in ("hit_rate_ci", "stale_share_ci"):
            d[k] = list(d[k]) if d[k] is not None else None
        d["label"] = ENTITY_LABELS[self.entity]
        return cast("TtlPoint", d)  # every field of the dataclass, tuples as lists


def _scope(trace: Trace, scope: str | None) -> str:
    """The invalidation scope: as given, or the trace's own (``"key"`` for an imported trace, else ``"entity"``)."""
    if scope is None:
        return "entity" if trace.derived_invalidation else "key"
    return _check_scope(scope)


def _check_scope(scope: str) -> str:
    if scope not in INVALIDATION_SCOPES:
        raise ParameterError("invalidation_scope", scope, "one of " + ", ".join(INVALIDATION_SCOPES))
    return scope


def simulate_entity(
    trace: Trace,
    entity: str,
    ttl_s: float,
    *,
    invalidate_on_update: bool = False,
    invalidation_scope: str | None = None,
    warmup_s: float | None = None,
) -> EntityResult:
    """Replay ``trace``'s events of ``entity`` through a TTL cache of ``ttl_s`` seconds (see the module doc)."""
    check_entity("entity", entity, trace.entity_names)
    ttl = check_ttls({entity: ttl_s}, allowed=trace.entity_names)[entity]
    whole = _scope(trace, invalidation_scope) == "entity"
    warm = trace.warmup_s if warmup_s is None else float(warmup_s)
    run = run_entity(trace, entity, ttl, invalidate=bool(invalidate_on_update), whole_scope=whole, warm=warm)
    hits, misses = run.hits, run.misses
    n = hits + misses
    return EntityResult(
        entity=entity,
        ttl_s=ttl,
        invalidate_on_update=bool(invalidate_on_update),
        n=n,
        hits=hits,
        misses=misses,
        hit_rate=hits / n if n else None,
        hit_rate_ci=wilson_interval(hits, n),
        fills=run.fills,
        memory_bytes=run.memory_bytes,
        invalidations=run.invalidations,
        **staleness_summary(run.stale_s.tolist(), n),
    )


def simulate(
    trace: Trace,
    ttls: Mapping[str, float],
    *,
    invalidate_on_update: bool = False,
    invalidation_scope: str | None = None,
    warmup_s: float | None = None,
) -> SimulationResult:
    """Simulate each entity of ``ttls`` (entity -> seconds) on ``trace``; a JSON-ready dict."""
    ttls = check_ttls(ttls, allowed=trace.entity_names)
    invalidation_scope = _scope(trace, invalidation_scope)
    return {
        "source": "simulation",
        "trace_fingerprint": trace.fingerprint(),
        "ttls_s": ttls,
        "invalidate_on_update": bool(invalidate_on_update),
        "invalidation_scope": invalidation_scope,
        "warmup_s": trace.warmup_s if warmup_s is None else float(warmup_s),
        "entities": {
            e: simulate_entity(
                trace,
                e,
                ttl,
                invalidate_on_update=invalidate_on_update,
                invalidation_scope=invalidation_scope,
                warmup_s=warmup_s,
            ).to_dict()
            for e, ttl in ttls.items()
        },
    }


def _grid(name: str, values: Sequence[float]) -> list[float]:
    allowed = "a non-empty list of TTLs in seconds > 0"
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
        raise ParameterError(name, values, allowed)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise ParameterError(name, v, allowed)
    return sorted({float(v) for v in values})


def sweep(
    trace: Trace,
    grid_s: Sequence[float] | Mapping[str, Sequence[float]] = DEFAULT_GRID_S,
    *,
    entities: Sequence[str] | None = None,
    invalidate_on_update: bool = False,
    invalidation_scope: str | None = None,
) -> dict[str, Any]:
    """Hit rate and staleness of each entity at every TTL of the grid (one grid, or one per entity).

    ``entities`` defaults to the trace's (:data:`ENTITIES` for a generated one).
    """
    entities = trace.entity_names if entities is None else entities
    for e in entities:
        check_entity("entities", e, trace.entity_names)
    if isinstance(grid_s, Mapping):
        for e in grid_s:
            check_entity("grid entity", e, trace.entity_names)
        grids = {e: _grid(f"grid_s[{e!r}]", grid_s[e]) for e in entities if e in grid_s}
        missing = [e for e in entities if e not in grids]
        if missing:
            raise ParameterError("grid_s", missing[0], "an entity with a TTL grid (add it or drop it from entities)")
    else:
        shared = _grid("grid_s", grid_s)
        grids = {e: shared for e in entities}
    invalidation_scope = _scope(trace, invalidation_scope)
    curves = {
        e: [
            simulate_entity(
                trace, e, ttl, invalidate_on_update=invalidate_on_update, invalidation_scope=invalidation_scope
            ).to_dict()
            for ttl in grids[e]
        ]
        for e in entities
    }
    return {
        "source": "simulation",
        "trace_fingerprint": trace.fingerprint(),
        "grid_s": grids,
        "invalidate_on_update": bool(invalidate_on_update),
        "invalidation_scope": invalidation_scope,
        "curves": curves,
    }


def _check_rate(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ParameterError(name, value, "a hit rate between 0 (exclusive) and 1")
    return float(value)


def recommend_ttl(
    curve: Sequence[Mapping[str, Any]], target_hit_rate: float, max_staleness_s: float, *, metric: str = "max_stale_s"
) -> TtlRecommendation:
    """The shortest TTL of ``curve`` whose hit rate ≥ target and whose staleness ``metric`` ≤ the bound.

    The shortest such TTL keeps the least stale data and memory for the hit rate asked for. When
    none qualifies, ``ttl_s`` is None, ``reason`` says which bound fails, and ``best_within_staleness``
    is the highest-hit-rate TTL that still respects the staleness bound (if any does).
    A curve point without stale reads has staleness 0.
    """
    target = _check_rate("target_hit_rate", target_hit_rate)
    if (
        isinstance(max_staleness_s, bool)
        or not isinstance(max_staleness_s, int | float)
        or not math.isfinite(max_staleness_s)
        or max_staleness_s < 0
    ):
        raise ParameterError("max_staleness_s", max_staleness_s, "seconds ≥ 0")
    if metric not in STALENESS_METRICS:
        raise ParameterError("metric", metric, "one of " + ", ".join(STALENESS_METRICS))
    if not curve:
        raise ParameterError("curve", list(curve), "a non-empty list of sweep points")
    points = sorted(curve, key=lambda p: p["ttl_s"])

    def stale(p: Mapping[str, Any]) -> float:
        return float(p.get(metric) or 0.0)

    def rate(p: Mapping[str, Any]) -> float:
        return float(p["hit_rate"]) if p.get("hit_rate") is not None else -1.0

    within = [p for p in points if stale(p) <= max_staleness_s]
    best = max(within, key=rate) if within else None
    chosen = next((p for p in within if rate(p) >= target), None)
    out: dict[str, Any] = {
        "target_hit_rate": target,
        "max_staleness_s": float(max_staleness_s),
        "metric": metric,
        "ttl_s": None,
        "point": None,
        "reason": None,
        "best_within_staleness": dict(best) if best else None,
    }
    if chosen is not None:
        out.update(
            ttl_s=chosen["ttl_s"],
            point=dict(chosen),
            reason=f"shortest TTL with hit rate ≥ {target:.0%} and {metric} ≤ {max_staleness_s:g} s",
        )
        return cast("TtlRecommendation", out)  # the points are sweep points (TtlPoint)
    top = max(points, key=rate)
    if rate(top) < target:
        out["reason"] = (
            f"no TTL up to {points[-1]['ttl_s']:g} s reaches hit rate {target:.0%} "
            f"(best {rate(top):.1%} at {top['ttl_s']:g} s)"
        )
    else:
        out["reason"] = (
            f"every TTL reaching hit rate {target:.0%} has {metric} > {max_staleness_s:g} s; "
            "lower the target, allow more staleness, or invalidate on update"
        )
    return cast("TtlRecommendation", out)


def recommend_all(
    sweep_result: Mapping[str, Any],
    target_hit_rate: float | Mapping[str, float],
    max_staleness_s: float | Mapping[str, float],
    *,
    metric: str = "max_stale_s",
) -> dict[str, TtlRecommendation]:
    """:func:`recommend_ttl` for every curve of a :func:`sweep` (targets and bounds per entity or shared)."""
    out = {}
    for e, curve in sweep_result["curves"].items():
        target = target_hit_rate[e] if isinstance(target_hit_rate, Mapping) else target_hit_rate
        bound = max_staleness_s[e] if isinstance(max_staleness_s, Mapping) else max_staleness_s
        out[e] = recommend_ttl(curve, target, bound, metric=metric)
    return out


def tune(
    trace: Trace,
    current_ttls: Mapping[str, float],
    grid_s: Sequence[float] = DEFAULT_GRID_S,
    *,
    target_hit_rate: float,
    max_staleness_s: float,
    metric: str = "max_stale_s",
) -> TtlTuning:
    """Everything notebook 03 shows: the current TTLs simulated, sweeps without / with invalidation, advice.

    ``current_ttls`` may name entities the trace lacks (a TTL per settings entity): they are left out.
    """
    current_ttls = {e: v for e, v in current_ttls.items() if e in trace.entity_names}
    plain = sweep(trace, grid_s)
    invalidating = sweep(trace, grid_s, invalidate_on_update=True)
    return {
        "current": simulate(trace, current_ttls),
        "sweep": plain,
        "sweep_invalidate": invalidating,
        "sweep_invalidate_key": sweep(trace, grid_s, invalidate_on_update=True, invalidation_scope="key"),
        "recommendations": recommend_all(plain, target_hit_rate, max_staleness_s, metric=metric),
        "recommendations_invalidate": recommend_all(invalidating, target_hit_rate, max_staleness_s, metric=metric),
    }


def compare_sim_to_live(sim: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """Per entity: simulated and live hit rate, their absolute difference, and whether sim is in live's CI.

    Both must come from the same trace (fingerprint) with the same TTLs and invalidation mode,
    else MeasurementError: a comparison across different inputs would mean nothing.
    """
    live_fp = live.get("trace", {}).get("fingerprint") if isinstance(live.get("trace"), Mapping) else None
    live_fp = live_fp or live.get("trace_fingerprint")
    if sim.get("trace_fingerprint") != live_fp:
        raise MeasurementError(
            "the simulation and the live replay ran different traces "
            f"({str(sim.get('trace_fingerprint'))[:12]} vs {str(live_fp)[:12]}); "
            "simulate the trace the live replay used"
        )
    modes = [(bool(x.get("invalidate_on_update")), x.get("invalidation_scope", "entity")) for x in (sim, live)]
    if modes[0][0] != modes[1][0] or (modes[0][0] and modes[0][1] != modes[1][1]):
        raise MeasurementError(
            f"the simulation (invalidate_on_update, scope = {modes[0]}) and the live replay "
            f"({modes[1]}) invalidated differently; simulate with the live replay's mode"
        )
    rows: dict[str, Any] = {}
    for e, s in sim["entities"].items():
        lv = live["entities"].get(e)
        if lv is None:
            continue
        if float(sim["ttls_s"][e]) != float(live["ttls_s"][e]):
            raise MeasurementError(
                f"{e}: the simulation used TTL {sim['ttls_s'][e]} s, the live replay "
                f"{live['ttls_s'][e]} s; simulate with the live TTLs"
            )
        sr, lr = s["hit_rate"], lv["hit_rate"]
        ci = lv.get("hit_rate_ci")
        rows[e] = {
            "label": ENTITY_LABELS.get(e, e),
            "ttl_s": float(sim["ttls_s"][e]),
            "n_sim": s["n"],
            "n_live": lv["n"],
            "sim_hit_rate": sr,
            "live_hit_rate": lr,
            "live_hit_rate_ci": ci,
            "abs_diff": abs(sr - lr) if sr is not None and lr is not None else None,
            "sim_within_live_ci": bool(ci[0] <= sr <= ci[1]) if ci and sr is not None else None,
            "sim_stale_share": s.get("stale_share"),
            "live_stale_share": lv.get("stale_share"),
            "stale_share_abs_diff": (
                abs(s["stale_share"] - lv["stale_share"])
                if s.get("stale_share") is not None and lv.get("stale_share") is not None
                else None
            ),
        }
    diffs = [r["abs_diff"] for r in rows.values() if r["abs_diff"] is not None]
    return {"trace_fingerprint": live_fp, "entities": rows, "max_abs_diff": max(diffs) if diffs else None}
