"""What notebooks 02 (cache hit rates) and 03 (TTL tuning) call: parameter checks, result files, tables.

The measurement and the simulation live in :mod:`psra_bench.cachesim.replay` and
:mod:`psra_bench.cachesim.ttl_sim`, the parameters in :mod:`psra_bench.cachesim.params`; this
module checks the notebooks' parameters before any work through those models,
assembles their JSON results (with ``tables`` and ``notes`` in the shape
:mod:`psra_bench.report.sections` renders, and an environment fingerprint) and formats tables.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from psra_bench.cachesim.params import CacheHitRatesParams, ReplayParams, TtlTuningParams, TuningParams
from psra_bench.cachesim.ttl_sim import DEFAULT_GRID_S, compare_sim_to_live, simulate
from psra_bench.cachesim.workload import ALL_ENTITIES, ENTITY_LABELS, Trace, WorkloadSpec, generate_trace
from psra_bench.measure.format import DASH, ms_ci, number, percent, percent_ci, seconds
from psra_bench.results import (
    CacheHitRatesResult,
    LatencySummary,
    LiveReplay,
    TableDict,
    TtlPoint,
    TtlTuning,
    TtlTuningResult,
)
from psra_bench.settings import LiveSettings
from psra_bench.table import Table
from psra_bench.workbench import load_results

__all__ = [
    "HIT_RATES",
    "TTL_TUNING",
    "SPEC_CLAIMS",
    "ReplayParams",
    "TuningParams",
    "check_replay_params",
    "check_tuning_params",
    "format_table",
    "hit_rate_table",
    "comparison_table",
    "recommendation_table",
    "sweep_table",
    "cache_hit_results",
    "live_reference",
    "what_if",
    "ttl_tuning_results",
]

#: Result file stem of notebook 02.
HIT_RATES = "02_cache_hit_rates"
#: Result file stem of notebook 03.
TTL_TUNING = "03_ttl_tuning"
#: The spec's "Cache Hit Rates (after warm-up)" table: hit rate, latency from cache vs DB / compute.
SPEC_CLAIMS: dict[str, tuple[str, str]] = {
    "hs_codes": ("85-90%", "2ms (cache) vs 45ms (DB)"),
    "rules": ("92-95%", "1.5ms (cache) vs 35ms (DB)"),
    "assessments": ("60-70%", "1ms (cache) vs 120ms (compute)"),
}


def check_replay_params(**values: object) -> ReplayParams:
    """Notebook 02's parameters checked by :class:`CacheHitRatesParams` (ParameterError naming the first bad one)."""
    return CacheHitRatesParams.validated(values).replay()


def check_tuning_params(**values: object) -> TuningParams:
    """Notebook 03's parameters checked by :class:`TtlTuningParams` (ParameterError naming the first bad one)."""
    return TtlTuningParams.validated(values).tuning()


# --------------------------------------------------------------------------- tables


def format_table(table: Mapping[str, Any]) -> str:
    """A table dict (title, columns, rows, note) as aligned plain text."""
    return Table.from_dict(table).text()


def _ms(stats: LatencySummary | None, key: str) -> str:
    if stats is None:
        return DASH
    return ms_ci(stats["p50"], stats["p50_ci"]) if key == "p50" else ms_ci(stats["p95"], stats["p95_ci"])


def _rate(value: float | None, ci: Sequence[float] | None = None) -> str:
    if value is None:
        return DASH
    return f"{percent(value)} {percent_ci(ci)}" if ci else percent(value)


def _staleness(point: TtlPoint | None, metric: str) -> float | None:
    """The staleness ``metric`` ("max_stale_s", "p95_stale_s" …) of a simulated point; None without stale reads."""
    value = point.get(metric) if point is not None else None
    return float(value) if isinstance(value, int | float) else None


def hit_rate_table(live: LiveReplay) -> TableDict:
    """The spec's "Cache Hit Rates (after warm-up)" table from a live replay: spec claim beside ours, n, CIs."""
    rows = []
    for e in [e for e in ALL_ENTITIES if e in live["entities"]]:
        r = live["entities"][e]
        hit, miss = r["latency"]["hit"], r["latency"]["miss"]
        rows.append(
            [
                r["label"],
                SPEC_CLAIMS.get(e, (DASH, DASH))[0],
                _rate(r["hit_rate"], r["hit_rate_ci"]),
                r["n"],
                SPEC_CLAIMS.get(e, (DASH, DASH))[1],
                "DB" if r["miss_source"] == "database" else "compute",
                _ms(hit, "p50"),
                _ms(miss, "p50"),
                _ms(hit, "p95"),
                _ms(miss, "p95"),
                f"{hit['n'] if hit else 0} / {miss['n'] if miss else 0}",
            ]
        )
    ttls = ", ".join(f"{e} {v:g} s" for e, v in live["ttls_s"].items())
    trace = live["trace"]
    return {
        "title": "Cache Hit Rates (after warm-up)",
        "columns": [
            "Cache Type",
            "spec hit rate",
            "hit rate [95% CI]",
            "n",
            "spec latency",
            "miss answered by",
            "p50 ms cache",
            "p50 ms miss",
            "p95 ms cache",
            "p95 ms miss",
            "n cache / miss",
        ],
        "rows": rows,
        "note": (
            f"Live replay of {trace['events']:,} events ({trace['requests_per_s']:g} requests/s, "
            f"{trace['updates_per_hour']:g} data updates/h) over {trace['duration_s']:g} simulated s, the "
            f"first {live['warmup_s']:g} s not counted, clock compressed {live['compression']:.0f}×; TTLs "
            f"{ttls}; invalidate_on_update={live['invalidate_on_update']}. Hit rate with Wilson 95 % CI; "
            "latency of the whole call, p50/p95 [bootstrap 95 % CI]; a miss includes the cache's GET and SET."
        ),
    }


def comparison_table(check: Mapping[str, Any]) -> TableDict:
    """Simulated vs live hit rate per entity (same trace, same TTLs), from :func:`live_reference`."""
    cmp = check["comparison"]
    realized: Mapping[str, float | None] = check.get("realized_clock_sim") or {}
    rows = [
        [
            r["label"],
            f"{r['ttl_s']:g}",
            _rate(r["live_hit_rate"], r["live_hit_rate_ci"]),
            r["n_live"],
            _rate(r["sim_hit_rate"]),
            number(r["abs_diff"], 4),
            "yes" if r["sim_within_live_ci"] else "no",
            _rate(r["live_stale_share"]),
            _rate(r["sim_stale_share"]),
            _rate(realized.get(e)),
        ]
        for e, r in sorted(cmp["entities"].items(), key=lambda kv: ALL_ENTITIES.index(kv[0]))
    ]
    return {
        "title": "TTL simulation vs live replay (same trace, same TTLs)",
        "columns": [
            "Cache Type",
            "TTL s",
            "live hit rate [95% CI]",
            "n",
            "sim hit rate",
            "|sim − live|",
            "sim in live CI",
            "live stale share",
            "sim stale share",
            "sim on realized clock",
        ],
        "rows": rows,
        "note": (
            f"Live run: {check['source']}. Largest absolute hit-rate difference "
            f"{cmp['max_abs_diff']:.4f}. 'sim on realized clock' simulates the event times as the replay "
            "actually issued them (scheduling lag included)."
        ),
    }


def recommendation_table(tuning: TtlTuning) -> TableDict:
    """Per entity: the current TTL's simulated figures and the recommended TTLs, without and with invalidation."""
    rows = []
    entities = [e for e in ALL_ENTITIES if e in tuning["recommendations"]]
    for e in entities:
        now = tuning["current"]["entities"][e]
        plain, inv = tuning["recommendations"][e], tuning["recommendations_invalidate"][e]
        p, q = plain["point"], inv["point"]
        metric = plain["metric"]
        rows.append(
            [
                ENTITY_LABELS.get(e, e),
                f"{now['ttl_s']:g}",
                _rate(now["hit_rate"], now["hit_rate_ci"]),
                now["n"],
                _rate(now["stale_share"]),
                seconds(_staleness(now, metric)),
                f"{plain['ttl_s']:g}" if plain["ttl_s"] else "none",
                _rate(p["hit_rate"] if p else None),
                seconds(_staleness(p, metric)),
                f"{inv['ttl_s']:g}" if inv["ttl_s"] else "none",
                _rate(q["hit_rate"] if q else None),
            ]
        )
    first = tuning["recommendations"][entities[0]]
    return {
        "title": "Recommended TTL per entity (simulation)",
        "columns": [
            "Cache Type",
            "current TTL s",
            "hit rate now [95% CI]",
            "n",
            "stale share now",
            f"{first['metric']} now",
            "recommended TTL s",
            "its hit rate",
            f"its {first['metric']}",
            "TTL s with invalidation",
            "its hit rate",
        ],
        "rows": rows,
        "note": (
            f"Target hit rate {percent(first['target_hit_rate'], 0)}, {first['metric']} ≤ "
            f"{first['max_staleness_s']:g} s: "
            "the shortest TTL of the grid meeting both. 'With invalidation' uses CachedDAL's invalidation on "
            "update (no stale reads, some hit rate lost). "
            + " ".join(f"{ENTITY_LABELS.get(e, e)}: {tuning['recommendations'][e]['reason']}." for e in entities)
        ),
    }


def sweep_table(sweep_result: Mapping[str, Any], title: str) -> TableDict:
    """Hit rate (and stale share) of every entity at every TTL of a sweep."""
    curves = sweep_result["curves"]
    ttls = sorted({p["ttl_s"] for c in curves.values() for p in c})
    rows = []
    for ttl in ttls:
        row: list[Any] = [f"{ttl:g}"]
        for e in curves:
            point = next((p for p in curves[e] if p["ttl_s"] == ttl), None)
            row += [_rate(point["hit_rate"]), _rate(point["stale_share"])] if point else [DASH, DASH]
        rows.append(row)
    columns = ["TTL s"] + [f"{ENTITY_LABELS.get(e, e)} {what}" for e in curves for what in ("hit rate", "stale")]
    n = {e: c[0]["n"] for e, c in curves.items() if c}
    return {
        "title": title,
        "columns": columns,
        "rows": rows,
        "note": "Reads counted per entity: "
        + ", ".join(f"{ENTITY_LABELS.get(e, e)} n={v}" for e, v in n.items())
        + ".",
    }


# --------------------------------------------------------------------------- results


def _fingerprint(settings: LiveSettings, dataset: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    import redis

    from psra_bench.infra.postgres import connect
    from psra_bench.measure.fingerprint import environment_fingerprint

    data = (
        dataclasses.asdict(dataset) if dataclasses.is_dataclass(dataset) and not isinstance(dataset, type) else dataset
    )
    client = redis.Redis(**settings.redis.client_kwargs())
    try:
        with connect(settings.db_dsn, autocommit=True) as conn:
            return environment_fingerprint(
                settings=settings, conn=conn, redis_client=client, params=params, dataset=data
            )
    finally:
        client.close()


def cache_hit_results(
    live: LiveReplay,
    check: Mapping[str, Any],
    *,
    settings: LiveSettings,
    dataset: Any,
    params: Mapping[str, Any],
) -> CacheHitRatesResult:
    """Notebook 02's result file: the live replay, the simulation check, report tables and notes."""
    sched = live.get("schedule") or {}
    notes = [
        "Method: psra_bench.cachesim.replay — a seeded Zipf trace on a simulated clock, replayed through the real "
        "CacheService/CachedDAL/assess_with_cache with TTLs divided by the clock compression.",
        f"Scheduling lag: p50 {sched.get('lag_p50_s', 0):.2f}, p95 {sched.get('lag_p95_s', 0):.2f}, max "
        f"{sched.get('lag_max_s', 0):.2f} simulated s; cache errors {live['cache_errors']}, consistency errors "
        f"{live['consistency_errors']}; {live['verdicts_written']} verdicts written and deleted again.",
        "assess_with_cache finds the key and the request's input_hash before any work, so an assessment hit is "
        "one cache read: no rules lookup, no evaluation, no INSERT (cache vs computation, as the spec means it).",
    ]
    return {
        "experiment": HIT_RATES,
        "params": dict(params),
        "live": live,
        "sim_vs_live": dict(check),
        "tables": [hit_rate_table(live), comparison_table(check)],
        "notes": notes,
        "fingerprint": _fingerprint(settings, dataset, params),
    }


def live_reference(
    settings: LiveSettings, output_dir: str, fallback: WorkloadSpec, *, compression: float | None = None, seed: int = 0
) -> dict[str, Any]:
    """Notebook 02's live replay from ``output_dir`` (or a small one run now) and the simulation of its trace."""
    from psra_bench.cachesim.replay import replay_live

    prior = load_results(output_dir, HIT_RATES)
    live: dict[str, Any] | None = None
    source = f"a new live replay of {fallback.requests:,} reads (no {HIT_RATES}.json in {output_dir})"
    trace: Trace | None = None
    if prior and isinstance(prior.get("live"), Mapping):
        candidate = prior["live"]
        trace = generate_trace(WorkloadSpec.from_dict(candidate["trace"]["spec"]))
        if trace.fingerprint() == candidate["trace_fingerprint"]:
            live, source = dict(candidate), f"{HIT_RATES}.json in {output_dir}"
        else:
            source = f"a new live replay ({HIT_RATES}.json holds a trace this version draws differently)"
    if live is None:
        trace = generate_trace(fallback)
        live = dict(replay_live(settings, trace, compression=compression, seed=seed))
    assert trace is not None
    sim = simulate(trace, live["ttls_s"], invalidate_on_update=bool(live["invalidate_on_update"]))
    return {
        "source": source,
        "live": live,
        "sim": sim,
        "comparison": compare_sim_to_live(sim, live),
        "realized_clock_sim": live.get("realized_clock_sim"),
    }


def what_if(
    spec: WorkloadSpec,
    ttls: Mapping[str, float],
    *,
    zipf_s: float | None = None,
    hs_updates_per_hour: float | None = None,
    rule_updates_per_hour: float | None = None,
    invalidate_on_update: bool = False,
    invalidation_scope: str | None = None,
) -> dict[str, Any]:
    """Simulate ``spec`` with a different key skew / update rate and these TTLs (what the sliders drive)."""
    rates = dict(spec.updates_per_hour)
    if hs_updates_per_hour is not None:
        rates["hs_codes"] = hs_updates_per_hour
    if rule_updates_per_hour is not None:
        rates["rules"] = rule_updates_per_hour
    trace = generate_trace(spec, zipf_s=spec.zipf_s if zipf_s is None else zipf_s, updates_per_hour=rates)
    result = simulate(trace, ttls, invalidate_on_update=invalidate_on_update, invalidation_scope=invalidation_scope)
    return result | {"trace": trace.summary()}


def ttl_tuning_results(
    trace: Trace,
    tuning: TtlTuning,
    check: Mapping[str, Any],
    *,
    settings: LiveSettings,
    dataset: Any,
    params: Mapping[str, Any],
) -> TtlTuningResult:
    """Notebook 03's result file: curves, recommendations, the sim-vs-live check, report tables and notes."""
    tables = [
        recommendation_table(tuning),
        comparison_table(check),
        sweep_table(tuning["sweep"], "Hit rate and stale share by TTL (simulation, no invalidation)"),
        sweep_table(tuning["sweep_invalidate"], "Hit rate by TTL with CachedDAL's invalidation on update"),
    ]
    notes = [
        "Method: cachesim.ttl_sim — the trace of notebook 02's generator (same seed, same shape) through a TTL "
        "cache model; staleness = time a cached value is served after its row changed.",
        f"Trace: {trace.summary()['events']:,} events, fingerprint {trace.fingerprint()[:12]}.",
    ]
    return {
        "experiment": TTL_TUNING,
        "params": dict(params),
        "trace": trace.summary(),
        "tuning": tuning,
        "sim_vs_live": {k: v for k, v in check.items() if k != "live"},
        "tables": tables,
        "notes": notes,
        "fingerprint": _fingerprint(settings, dataset, params),
        "default_grid_s": list(DEFAULT_GRID_S),
    }
