"""Notebooks 02 and 03's figures from their results (:func:`~psra_bench.cachesim.experiment.cache_hit_results`,
:func:`~psra_bench.cachesim.experiment.ttl_tuning_results`, or the JSON the notebooks save).

Each function draws one figure on a pyplot-free :class:`matplotlib.figure.Figure`, saves it as
``<output_dir>/02_cache_hit_rates_<name>.png`` or ``03_ttl_tuning_<name>.png`` (the names the
report embeds) and returns it, so a notebook cell that ends with the call displays it. Notebook
03's interactive chart is :func:`psra_bench.cachesim.explorer.what_if_figure`. matplotlib is
imported only when a figure is drawn: importing :mod:`psra_bench.cachesim` stays free of it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from psra_bench.cachesim.experiment import HIT_RATES, SPEC_CLAIMS, TTL_TUNING
from psra_bench.cachesim.workload import ALL_ENTITIES
from psra_bench.measure.figures import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


__all__ = [
    "plot_hit_rates",
    "plot_cache_latency",
    "plot_hit_rate_timeline",
    "plot_ttl_hit_rate",
    "plot_ttl_staleness",
    "plot_sim_vs_live",
]

#: Line style and colour of each sweep of notebook 03 (key in the tuning result, legend label).
SWEEP_STYLES = (
    ("sweep", "no invalidation", "-", "tab:blue"),
    ("sweep_invalidate", "CachedDAL invalidation", "--", "tab:red"),
    ("sweep_invalidate_key", "per-key invalidation", ":", "tab:green"),
)


def _error_bars(value: np.ndarray, ci: np.ndarray) -> list[np.ndarray]:
    """Distances from ``value`` down to the CI's lower and up to its upper bound, never negative.

    A Wilson interval contains its rate, but at a rate of exactly 0 or 1 its bound can miss it by a
    rounding error, which matplotlib refuses as a negative error bar.
    """
    return [np.maximum(value - ci[:, 0], 0.0), np.maximum(ci[:, 1] - value, 0.0)]


def _figure(figsize: tuple[float, float]) -> Figure:
    return new_figure(figsize)


def _save(fig: Figure, output_dir: str | os.PathLike[str], name: str, dpi: int) -> Figure:
    return save_figure(fig, output_dir, name, dpi)


def _entities(by_entity: Mapping[str, Any]) -> list[str]:
    """The entities of ``by_entity`` in ENTITIES order, also after a JSON round trip (save_results sorts keys)."""
    return sorted(by_entity, key=lambda e: ALL_ENTITIES.index(e) if e in ALL_ENTITIES else len(ALL_ENTITIES))


# --------------------------------------------------------------------------- notebook 02


def plot_hit_rates(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> Figure:
    """Live hit rate per entity with Wilson CI, the simulation and the spec's claim (``…_hit_rates.png``)."""
    live = results["live"]
    sim = results["sim_vs_live"]["comparison"]["entities"]
    names = [e for e in _entities(live["entities"]) if live["entities"][e]["n"]]
    rows = [live["entities"][e] for e in names]
    x = np.arange(len(rows))
    rate = np.array([r["hit_rate"] for r in rows])
    ci = np.array([r["hit_rate_ci"] for r in rows])
    fig = _figure((8, 4.5))
    ax = fig.subplots()
    ax.bar(
        x,
        rate * 100,
        yerr=_error_bars(rate * 100, ci * 100),
        capsize=6,
        alpha=0.8,
        color="tab:blue",
        label="measured (95 % Wilson CI)",
    )
    ax.scatter(
        x,
        [sim[e]["sim_hit_rate"] * 100 for e in names],
        marker="D",
        color="k",
        zorder=3,
        label="TTL simulation, same trace",
    )
    for i, e in enumerate(names):
        if e not in SPEC_CLAIMS:  # the spec claims nothing for verdicts and reports
            continue
        lo, hi = (float(v) for v in SPEC_CLAIMS[e][0].rstrip("%").split("-"))
        ax.fill_between(
            [i - 0.4, i + 0.4], lo, hi, color="tab:orange", alpha=0.3, label="spec's claim" if i == 0 else None
        )
    ax.set_xticks(x, [f"{r['label']}\n(n={r['n']}, TTL {r['ttl_s']:g} s)" for r in rows])
    ax.set_ylabel("hit rate after warm-up, %")
    ax.set_ylim(0, 100)
    ax.set_title(f"Cache hit rates, live replay ({live['trace']['requests_per_s']:g} requests/s simulated)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    fig.tight_layout()
    return _save(fig, output_dir, f"{HIT_RATES}_hit_rates", dpi=110)


def plot_cache_latency(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> Figure:
    """Per entity, latency CDFs of calls served from cache vs from the database or engine (``…_latency.png``)."""
    entities = results["live"]["entities"]
    rows = [entities[e] for e in _entities(entities)]
    fig = _figure((4.5 * len(rows), 3.8))
    axes = fig.subplots(1, len(rows), squeeze=False)
    for ax, r in zip(axes[0], rows, strict=True):
        for outcome, color in (("hit", "tab:green"), ("miss", "tab:red")):
            stats = r["latency"][outcome]
            if not stats:
                continue
            xs = np.sort(stats["samples_ms"])
            label = "cache" if outcome == "hit" else ("DB" if r["miss_source"] == "database" else "compute")
            ax.step(
                xs,
                np.arange(1, len(xs) + 1) / len(xs),
                where="post",
                color=color,
                label=f"{label}: p50 {stats['p50']:.2f}, p95 {stats['p95']:.2f} ms (n={stats['n']})",
            )
        ax.set_xscale("log")
        ax.set_xlabel("latency of the whole call, ms")
        ax.set_title(r["label"], fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("share of calls ≤ x")
    fig.suptitle("Latency CDFs: served from cache vs from the database / the assessment engine")
    fig.tight_layout()
    return _save(fig, output_dir, f"{HIT_RATES}_latency", dpi=100)


def plot_hit_rate_timeline(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> Figure:
    """Hit rate per time bin over the simulated period, warm-up shaded (``…_timeline.png``)."""
    live = results["live"]
    edges = np.array(live["timeline"]["edges_s"]) / 60
    mid = (edges[:-1] + edges[1:]) / 2
    fig = _figure((9, 4))
    ax = fig.subplots()
    for e in _entities(live["entities"]):
        reads = np.array(live["timeline"][e]["reads"])
        hits = np.array(live["timeline"][e]["hits"])
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(reads > 0, hits / reads * 100, np.nan)
        ax.plot(mid, rate, marker="o", ms=3, label=f"{live['entities'][e]['label']} ({int(reads.sum())} reads)")
    ax.axvspan(0, live["warmup_s"] / 60, color="gray", alpha=0.15, label="warm-up (not counted)")
    ax.set_xlabel("simulated minutes")
    ax.set_ylabel("hit rate per bin, %")
    ax.set_ylim(0, 100)
    ax.set_title("Hit rate over the simulated period")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    fig.tight_layout()
    return _save(fig, output_dir, f"{HIT_RATES}_timeline", dpi=100)


# --------------------------------------------------------------------------- notebook 03


def _goal(tuning: Mapping[str, Any]) -> Mapping[str, Any]:
    """The target, staleness bound and metric the recommendations were made with (the same for every entity)."""
    return next(iter(tuning["recommendations"].values()))


def plot_ttl_hit_rate(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> Figure:
    """Per entity, hit rate against TTL for the three invalidation modes, current and recommended TTL marked."""
    tuning = results["tuning"]
    target = _goal(tuning)["target_hit_rate"]
    current_ttls = tuning["current"]["ttls_s"]
    entities = _entities(tuning["sweep"]["curves"])
    fig = _figure((5 * len(entities), 4.2))
    axes = fig.subplots(1, len(entities), squeeze=False, sharey=True)
    for ax, e in zip(axes[0], entities, strict=True):
        for key, label, ls, color in SWEEP_STYLES:
            pts = tuning[key]["curves"][e]
            ttl = np.array([p["ttl_s"] for p in pts])
            rate = np.array([p["hit_rate"] for p in pts]) * 100
            ci = np.array([p["hit_rate_ci"] for p in pts]) * 100
            ax.plot(ttl, rate, ls, color=color, marker="o", ms=3, label=label)
            ax.fill_between(ttl, ci[:, 0], ci[:, 1], color=color, alpha=0.12)
        ax.axhline(target * 100, color="gray", lw=0.8)
        ax.axvline(current_ttls[e], color="k", lw=0.8, ls="--")
        ax.text(current_ttls[e], 96, " current", fontsize=7, va="top")
        rec = tuning["recommendations"][e]
        if rec["ttl_s"]:
            ax.scatter(
                [rec["ttl_s"]],
                [rec["point"]["hit_rate"] * 100],
                s=90,
                facecolor="none",
                edgecolor="k",
                zorder=3,
                label=f"recommended: {rec['ttl_s']:g} s",
            )
        ax.set_xscale("log")
        ax.set_xlabel("TTL, s")
        n = tuning["sweep"]["curves"][e][0]["n"]
        ax.set_title(f"{tuning['current']['entities'][e]['label']} (n={n} reads)", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("hit rate after warm-up, % (band: 95 % CI)")
    axes[0][0].set_ylim(0, 100)
    fig.suptitle(f"Hit rate vs TTL (simulation; target {target:.0%} in gray)")
    fig.tight_layout()
    return _save(fig, output_dir, f"{TTL_TUNING}_hit_rate", dpi=100)


def plot_ttl_staleness(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> Figure:
    """Stale share and the staleness metric against TTL, no invalidation (``03_ttl_tuning_staleness.png``)."""
    tuning = results["tuning"]
    goal = _goal(tuning)
    metric = goal["metric"]
    fig = _figure((11, 4))
    axes = fig.subplots(1, 2)
    for e, color in zip(_entities(tuning["sweep"]["curves"]), ("tab:blue", "tab:orange", "tab:green"), strict=False):
        pts = tuning["sweep"]["curves"][e]
        ttl = np.array([p["ttl_s"] for p in pts])
        label = tuning["current"]["entities"][e]["label"]
        axes[0].plot(ttl, [p["stale_share"] * 100 for p in pts], marker="o", ms=3, color=color, label=label)
        axes[1].plot(ttl, [p[metric] or 0.0 for p in pts], marker="o", ms=3, color=color, label=label)
    axes[0].set_ylabel("stale reads, % of reads")
    axes[1].set_ylabel(f"{metric}, s (0: no stale read)")
    axes[1].axhline(goal["max_staleness_s"], color="gray", lw=0.8)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("TTL, s (no invalidation)")
        ax.legend(fontsize=8)
    updates = results["trace"]["entities"]
    fig.suptitle(
        f"Staleness vs TTL ({updates['hs_codes']['updates_per_hour']:g} HS and "
        f"{updates['rules']['updates_per_hour']:g} rule updates per simulated hour)"
    )
    fig.tight_layout()
    return _save(fig, output_dir, f"{TTL_TUNING}_staleness", dpi=100)


def plot_sim_vs_live(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> Figure:
    """Live hit rate (with CI) next to the simulated one per entity (``03_ttl_tuning_sim_vs_live.png``)."""
    compared = results["sim_vs_live"]["comparison"]["entities"]
    rows = [compared[e] for e in _entities(compared)]
    x = np.arange(len(rows))
    live_rate = np.array([r["live_hit_rate"] for r in rows]) * 100
    ci = np.array([r["live_hit_rate_ci"] for r in rows]) * 100
    fig = _figure((7, 4))
    ax = fig.subplots()
    ax.bar(
        x - 0.2,
        live_rate,
        width=0.4,
        yerr=_error_bars(live_rate, ci),
        capsize=5,
        color="tab:blue",
        alpha=0.8,
        label="live replay (95 % CI)",
    )
    ax.bar(x + 0.2, [r["sim_hit_rate"] * 100 for r in rows], width=0.4, color="tab:gray", label="simulation")
    ax.set_xticks(x, [f"{r['label']}\n|diff| {r['abs_diff']:.3f} (n={r['n_live']})" for r in rows], fontsize=8)
    ax.set_ylabel("hit rate after warm-up, %")
    ax.set_ylim(0, 100)
    ax.set_title("Simulation vs live replay, same trace and TTLs")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.tight_layout()
    return _save(fig, output_dir, f"{TTL_TUNING}_sim_vs_live", dpi=100)
