"""Notebook 01's figures from :func:`~psra_bench.latency.experiment.run_query_latency` results (or its JSON).

Each function draws one figure on a pyplot-free :class:`matplotlib.figure.Figure`, saves it as
``<output_dir>/01_query_latency_<name>.png`` (the names the report embeds) and returns it, so a
notebook cell that ends with the call displays it. matplotlib is imported only when a figure is
drawn: importing :mod:`psra_bench.latency` stays free of it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from psra_bench.latency.experiment import EXPERIMENT
from psra_bench.latency.patterns import QUERY_PATTERNS
from psra_bench.measure.figures import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


__all__ = ["plot_p50", "plot_cdf", "plot_rounds", "plot_write_cost", "plot_indexes", "plot_three_way"]

#: Bar/line colour of each side of the migration (and of the audit's recommended set).
SIDE_COLORS = {"before": "tab:red", "after": "tab:green", "recommended": "tab:blue"}
#: The schedule's letter of each side.
_SIDE_OF = {"A": "before", "B": "after", "C": "recommended"}


def _figure(figsize: tuple[float, float]) -> Figure:
    return new_figure(figsize)


def _save(fig: Figure, output_dir: str | os.PathLike[str], name: str, dpi: int) -> Figure:
    return save_figure(fig, output_dir, f"{EXPERIMENT}_{name}", dpi)


def _queries(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The measured queries in the spec's order, also after a JSON round trip (save_results sorts keys)."""
    order = list(QUERY_PATTERNS)
    return sorted(results["queries"].values(), key=lambda q: order.index(q["name"]) if q["name"] in order else 99)


def plot_p50(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> Figure:
    """Bars of each query's p50 before vs after with bootstrap-CI whiskers (``01_query_latency_p50.png``)."""
    qs = _queries(results)
    y = np.arange(len(qs))
    fig = _figure((10, 0.7 * len(qs) + 1.5))
    ax = fig.subplots()
    for offset, side in ((-0.2, "before"), (0.2, "after")):
        p50 = np.array([q[side]["p50"] for q in qs])
        ci = np.array([q[side]["p50_ci"] for q in qs])
        err = np.vstack([p50 - ci[:, 0], ci[:, 1] - p50])
        ax.barh(
            y + offset,
            p50,
            height=0.4,
            xerr=err,
            color=SIDE_COLORS[side],
            alpha=0.8,
            capsize=3,
            label=f"{side} ({'20' if side == 'before' else '46'} indexes)",
        )
    labels = [f"{q['label']}\n(n={q['before']['n']}/{q['after']['n']}, {q['verdict']})" for q in qs]
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency, ms (log scale; whiskers: 95 % bootstrap CI)")
    scale = results["fingerprint"]["dataset"]["scale"]
    ax.set_title(f"Query p50 before vs after the migration — {scale:,} verdicts")
    fig.legend(loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(fig, output_dir, "p50", dpi=110)


def plot_cdf(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> Figure:
    """One latency CDF panel per query, before vs after (``01_query_latency_cdf.png``)."""
    from matplotlib.ticker import NullFormatter

    qs = _queries(results)
    cols = 4
    rows = (len(qs) + cols - 1) // cols
    fig = _figure((4 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, q in zip(axes.flat, qs, strict=False):
        for side in ("before", "after"):
            x = np.sort(q[side]["samples_ms"])
            ax.step(
                x,
                np.arange(1, len(x) + 1) / len(x),
                where="post",
                color=SIDE_COLORS[side],
                label=f"{side}: p50 {q[side]['p50']:.2f}, p99 {q[side]['p99']:.2f} ms",
            )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{q['name']} (n={q['before']['n']}/{q['after']['n']})", fontsize=9)
        ax.set_xlabel("latency, ms", fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(qs) :]:
        ax.set_visible(False)
    fig.suptitle("Latency CDFs, before (red) vs after (green) the migration")
    fig.tight_layout()
    return _save(fig, output_dir, "cdf", dpi=100)


def plot_rounds(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> Figure:
    """Each query's round medians in execution order, rounds shaded by side (``01_query_latency_rounds.png``)."""
    schedule = results["method"]["schedule"]
    fig = _figure((11, 4))
    ax = fig.subplots()
    for q in _queries(results):
        med = q["round_medians"]["p50_ms"]
        ax.plot(range(1, len(med) + 1), med, marker="o", label=q["name"])
    for i, side in enumerate(schedule, 1):
        ax.axvspan(i - 0.5, i + 0.5, color=SIDE_COLORS[_SIDE_OF[side]], alpha=0.08)
    ax.set_yscale("log")
    ticks = [f"{i}\n{_SIDE_OF[s]}" for i, s in enumerate(schedule, 1)]
    ax.set_xticks(range(1, len(schedule) + 1), ticks)
    ax.set_ylabel(f"round p50, ms (n={results['method']['iterations_per_round']} per round)")
    ax.set_title(f"Round medians in execution order ({schedule}): drift shows up here")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return _save(fig, output_dir, "rounds", dpi=100)


def plot_write_cost(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> Figure | None:
    """Insert throughput with 20 vs 46 indexes (``01_query_latency_write_cost.png``); None when not measured."""
    wc = results["write_cost"]
    if not wc:
        return None
    fig = _figure((6, 4))
    ax = fig.subplots()
    for i, key in enumerate(("before", "after")):
        side = wc[key]
        lo, hi = side["median_rows_per_s_ci"]
        med = side["median_rows_per_s"]
        ax.bar(i, med, yerr=[[med - lo], [hi - med]], capsize=5, alpha=0.7, color=SIDE_COLORS[key])
        batches = side["per_batch_rows_per_s"]
        ax.scatter(np.full(len(batches), i), batches, color="k", s=10)
    ticks = [f"{wc['index_counts'][k]} indexes\n(n={wc['batches'][k]} batches)" for k in ("before", "after")]
    ax.set_xticks([0, 1], ticks)
    ax.set_ylabel(f"rows/s (batches of {wc['rows_per_batch']}; median, 95 % CI, each batch)")
    lo, hi = wc["ratio_ci"]
    ax.set_title(
        f"Insert throughput into psra_verdicts\ninserts take {wc['ratio']:.2f}× as long "
        f"(95 % CI {lo:.2f}–{hi:.2f}; {wc['verdict']})",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, output_dir, "write_cost", dpi=100)


def plot_indexes(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> Figure:
    """Size of each new index and its scans in the 'after' rounds (``01_query_latency_indexes.png``)."""
    new = sorted((u for u in results["index_usage"] if u["new"]), key=lambda u: -u["size_bytes"])
    fig = _figure((10, 0.3 * len(new) + 1.5))
    ax = fig.subplots()
    ax.barh(
        [u["index"] for u in new],
        [u["size_bytes"] / 2**20 for u in new],
        color=["tab:blue" if u["scans_after"] else "tab:gray" for u in new],
    )
    for i, u in enumerate(new):
        ax.text(u["size_bytes"] / 2**20, i, f"  {u['scans_after']} scans", va="center", fontsize=7)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("size, MB (pg_relation_size)")
    n_calls = results["method"]["max_n_per_side"]
    ax.set_title(
        f"The 26 new indexes: size, and idx_scan in the 'after' rounds (gray: unused; ≤ {n_calls} calls/query)"
    )
    fig.tight_layout()
    return _save(fig, output_dir, "indexes", dpi=100)


def plot_three_way(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> Figure | None:
    """p50 per query on the baseline, the spec's set and the recommended set, CI whiskers
    (``01_query_latency_three_way.png``); None when the third side was not measured."""
    rec = results.get("recommended")
    if not rec:
        return None
    order = [q["name"] for q in _queries(results)]
    y = np.arange(len(order))
    fig = _figure((10, 0.75 * len(order) + 1.6))
    ax = fig.subplots()
    counts = rec["sizes"]["index_count"]
    for offset, key, color in (
        (-0.27, "baseline", "before"),
        (0.0, "spec", "after"),
        (0.27, "recommended", "recommended"),
    ):
        stats = [rec["queries"][q][key] for q in order]
        p50 = np.array([st["p50"] for st in stats])
        ci = np.array([st["p50_ci"] for st in stats])
        err = np.vstack([p50 - ci[:, 0], ci[:, 1] - p50])
        ax.barh(y + offset, p50, height=0.26, xerr=err, color=SIDE_COLORS[color], alpha=0.85, capsize=2,
                label=f"{key} ({counts[key]} indexes)")  # fmt: skip
    labels = [
        f"{q}\n(n={rec['queries'][q]['spec']['n']}; "
        f"{'as fast as spec' if rec['queries'][q]['as_fast_as_spec'] else 'slower than spec'})"
        for q in order
    ]
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency, ms (log scale; whiskers: 95 % bootstrap CI)")
    ax.set_title("Baseline vs the spec's indexes vs the audit's recommended set")
    fig.legend(loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, output_dir, "three_way", dpi=110)
