"""Notebook 04's figures from :func:`~psra_bench.load.experiment.run_load` results (or ``04_load_test.json``).

Each function draws one figure on a pyplot-free :class:`matplotlib.figure.Figure`, saves it as
``<output_dir>/04_load_test_<name>.png`` (the names the report embeds) and returns it, so a
notebook cell that ends with the call displays it. matplotlib is imported only when a figure is
drawn: importing :mod:`psra_bench.load` stays free of it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from psra_bench.measure.figures import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


__all__ = ["plot_latency", "plot_steps", "plot_endpoints", "plot_resources"]

#: Result file stem of notebook 04, and the prefix of its plots.
PREFIX = "04_load_test"
#: Process groups the resource monitor measures, in the order the bars are drawn.
GROUPS = ("postgres", "api", "redis", "generator")


def _figure(figsize: tuple[float, float]) -> Figure:
    return new_figure(figsize)


def _save(fig: Figure, output_dir: str | os.PathLike[str], name: str, dpi: int) -> Figure:
    return save_figure(fig, output_dir, f"{PREFIX}_{name}", dpi)


def _names(results: Mapping[str, Any]) -> list[str]:
    """The configurations in the order they ran, also after a JSON round trip (save_results sorts keys)."""
    ran = [n for n in results["parameters"].get("configurations", []) if n in results["configurations"]]
    return ran + [n for n in results["configurations"] if n not in ran]


def _headline(results: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The headline closed-model step of configuration ``name`` (empty when it did not run)."""
    return results["configurations"][name]["closed"] or {}


def _overall(results: Mapping[str, Any], name: str, model: str) -> Mapping[str, Any]:
    """Overall latency summary of a configuration: the headline closed step or the open model."""
    if model == "open":
        return results["configurations"][name]["open"]["latency"]["overall"]
    return _headline(results, name).get("overall", {})


def plot_latency(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> Figure:
    """p50/p95/p99 per configuration, closed and open model side by side (``04_load_test_latency.png``)."""
    params = results["parameters"]
    names = _names(results)
    fig = _figure((12, 4.5))
    axes = fig.subplots(1, 2, sharey=True)
    titles = {
        "closed": f"closed model (Locust, {params['users']} users)",
        "open": f"open model ({params['arrival_rate']:g} req/s, from intended start)",
    }
    x = np.arange(len(names))
    for ax, model in zip(axes, ("closed", "open"), strict=True):
        for i, q in enumerate(("p50_ms", "p95_ms", "p99_ms")):
            values = [_overall(results, n, model).get(q) or 0.0 for n in names]
            ax.bar(x + (i - 1) * 0.27, values, width=0.27, label=q.replace("_ms", ""))
        ax.set_xticks(x, [f"{n}\n(n={_overall(results, n, model).get('n', 0)})" for n in names])
        ax.set_yscale("log")
        ax.set_title(titles[model])
        ax.legend()
    axes[0].set_ylabel("latency, ms (HdrHistogram, log scale)")
    fingerprint: Mapping[str, Any] = results["fingerprint"] or {}
    dataset: Mapping[str, Any] = fingerprint.get("dataset") or {}
    verdicts = dataset.get("verdicts")
    scale = f" — {verdicts:,} verdicts" if verdicts is not None else ""
    fig.suptitle(f"API latency percentiles per configuration{scale}")
    fig.tight_layout()
    return _save(fig, output_dir, "latency", dpi=100)


def plot_steps(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> Figure:
    """Step load: p95 and p50 against users per configuration, with the SLO (``04_load_test_steps.png``)."""
    configs = results["configurations"]
    slo = results["parameters"]["slo_p95_ms"]
    fig = _figure((8, 4.5))
    ax = fig.subplots()
    for n in _names(results):
        c = configs[n]
        steps = c["steps"]
        xs = [s["users"] for s in steps]
        p95 = [s["overall"]["p95_ms"] or np.nan for s in steps]
        p50 = [s["overall"]["p50_ms"] or np.nan for s in steps]
        supported = c["users_supported"]["users_supported"]
        (line,) = ax.plot(xs, p95, marker="o", label=f"{n} p95 (supported: {supported})")
        ax.plot(xs, p50, marker=".", linestyle=":", color=line.get_color(), label=f"{n} p50")
        for s, y in zip(steps, p95, strict=True):
            ax.annotate(
                f"n={s['overall']['n']}", (s["users"], y), fontsize=7, textcoords="offset points", xytext=(3, 3)
            )
            if "generator" in s and s["generator"]["saturated"]:
                ax.scatter([s["users"]], [y], marker="x", s=80, color="k")
    ax.axhline(slo, color="tab:red", linestyle="--", label=f"SLO p95 {slo:g} ms")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent users (step load; x = load generator saturated)")
    ax.set_ylabel("latency, ms")
    ax.set_title("Step load: p95 against users, per configuration")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, output_dir, "steps", dpi=100)


def plot_endpoints(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> Figure:
    """Per endpoint p95 bars and p50 ticks, first vs last configuration (``04_load_test_endpoints.png``)."""
    names = _names(results)
    first, last = names[0], names[-1]
    ends = {n: _headline(results, n).get("endpoints", {}) for n in (first, last)}
    eps = sorted(set(ends[first]) | set(ends[last]))
    fig = _figure((10, 0.45 * len(eps) + 1.5))
    ax = fig.subplots()
    y = np.arange(len(eps))
    for off, n, color in ((-0.2, first, "tab:red"), (0.2, last, "tab:green")):
        e = ends[n]
        p50 = np.array([e.get(k, {}).get("p50_ms") or np.nan for k in eps], dtype=float)
        p95 = np.array([e.get(k, {}).get("p95_ms") or np.nan for k in eps], dtype=float)
        ax.barh(y + off, p95, height=0.4, color=color, alpha=0.5, label=f"{n} p95")
        ax.scatter(p50, y + off, color=color, marker="|", s=120, label=f"{n} p50")
    labels = [f"{k}\n(n={ends[first].get(k, {}).get('n', 0)}/{ends[last].get(k, {}).get('n', 0)})" for k in eps]
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms (bar: p95, tick: p50)")
    ax.set_title(f"Per endpoint, headline step: {first} vs {last}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, output_dir, "endpoints", dpi=100)


def plot_resources(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> Figure:
    """CPU cores and peak memory per process group in the headline step (``04_load_test_resources.png``)."""
    names = _names(results)
    res = {n: _headline(results, n).get("resources", {}) for n in names}
    x = np.arange(len(names))
    fig = _figure((12, 4))
    axes = fig.subplots(1, 2)
    for i, g in enumerate(GROUPS):
        groups = [res[n].get("groups", {}).get(g) or {} for n in names]
        axes[0].bar(x + (i - 1.5) * 0.2, [r.get("cpu_cores") or 0 for r in groups], width=0.2, label=g)
        mem = [(r.get("pss_mb_max") if g == "postgres" else None) or r.get("rss_mb_max") or 0 for r in groups]
        axes[1].bar(x + (i - 1.5) * 0.2, mem, width=0.2, label=g + (" (PSS)" if g == "postgres" else " (RSS)"))
    axes[0].scatter(
        x,
        [res[n].get("machine_busy_cores") or 0 for n in names],
        color="k",
        marker="_",
        s=400,
        label="whole machine busy",
    )
    for ax in axes:
        ax.set_xticks(x, names)
        ax.legend(fontsize=7)
    first = res[names[0]]
    axes[0].set_ylabel(f"CPU, cores (machine: {first.get('cpus', '?')})")
    axes[0].set_title(f"CPU during the headline step ({first.get('samples', 0)} samples)")
    axes[1].set_ylabel("memory, MB (max over the step)")
    axes[1].set_title("Memory during the headline step")
    fig.tight_layout()
    return _save(fig, output_dir, "resources", dpi=100)
