"""The notebooks' figures: each plot function saves the PNG the report embeds and draws what it says.

Results are built the cheap way: latency and load results are synthetic dicts of the shape the
experiments return (latency statistics from the real ``summarize``); notebook 03's tuning is a real
TTL simulation of a small trace, and notebook 02's live replay is that simulation dressed with
latencies and a timeline. Every plot is also drawn from the JSON round trip (``save_results``
sorts keys) and must come out in the same order.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from psra_bench.cachesim import plots as cache_plots
from psra_bench.cachesim.ttl_sim import compare_sim_to_live, simulate, tune
from psra_bench.cachesim.workload import ENTITIES, ENTITY_LABELS, WorkloadSpec, generate_trace
from psra_bench.latency import plots as latency_plots
from psra_bench.latency.patterns import QUERY_PATTERNS
from psra_bench.load import plots as load_plots
from psra_bench.measure.stats import summarize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _stats(median_ms: float, n: int = 40, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return summarize(rng.lognormal(np.log(median_ms), 0.2, n), resamples=200).to_dict()


def _round_trip(results: dict[str, Any]) -> dict[str, Any]:
    """What a notebook (or the report) reads back from the saved JSON: keys sorted."""
    return json.loads(json.dumps(results, sort_keys=True))


def _png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path.name} is not a PNG"


def _bars(ax: Axes) -> list[BarContainer]:
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def _legend(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def _ticks(labels: list[Any]) -> list[str]:
    return [t.get_text() for t in labels]


def test_importing_the_plot_modules_does_not_import_matplotlib(tmp_path: Path) -> None:
    import subprocess

    code = (
        "import sys, psra_bench.latency, psra_bench.cachesim, psra_bench.load, psra_bench.latency.plots, "
        "psra_bench.cachesim.plots, psra_bench.load.plots; print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- notebook 01

QUERIES = list(QUERY_PATTERNS)[:3]


@pytest.fixture(scope="module")
def latency_results() -> dict[str, Any]:
    queries = {}
    for i, name in enumerate(reversed(QUERIES)):  # not the spec's order: the plots put it back
        queries[name] = {
            "name": name,
            "label": QUERY_PATTERNS[name].label,
            "verdict": "faster" if i else "no difference",
            "before": _stats(10.0 * (i + 1), seed=i),
            "after": _stats(2.0 * (i + 1), seed=10 + i),
            "round_medians": {"p50_ms": [10.0 * (i + 1), 2.0, 2.1, 2.2, 2.0, 9.5 * (i + 1)]},
        }
    index_usage = [
        {"index": "idx_big", "new": True, "size_bytes": 3 * 2**20, "scans_after": 12},
        {"index": "idx_unused", "new": True, "size_bytes": 2**20, "scans_after": 0},
        {"index": "idx_mid", "new": True, "size_bytes": 2 * 2**20, "scans_after": 4},
        {"index": "pk_baseline", "new": False, "size_bytes": 9 * 2**20, "scans_after": 99},
    ]
    side = {
        key: {
            "median_rows_per_s": med,
            "median_rows_per_s_ci": [med * 0.9, med * 1.1],
            "per_batch_rows_per_s": [med * 0.95, med, med * 1.05],
        }
        for key, med in (("before", 9000.0), ("after", 6000.0))
    }
    write_cost = side | {
        "index_counts": {"before": 20, "after": 46},
        "batches": {"before": 3, "after": 3},
        "rows_per_batch": 200,
        "ratio": 1.5,
        "ratio_ci": [1.3, 1.7],
        "verdict": "slower",
    }
    recommended = {
        "indexes": ["idx_big", "idx_mid"],
        "sizes": {"index_count": {"baseline": 20, "spec": 46, "recommended": 22}},
        "queries": {
            name: {
                "baseline": q["before"],
                "spec": q["after"],
                "recommended": _stats(2.1 * (i + 1), seed=20 + i),
                "as_fast_as_spec": i != 1,
            }
            for i, (name, q) in enumerate(queries.items())
        },
    }
    return {
        "queries": queries,
        "method": {"schedule": "ABCCBA", "iterations_per_round": 20, "max_n_per_side": 40},
        "fingerprint": {"dataset": {"scale": 20_000}},
        "write_cost": write_cost,
        "index_usage": index_usage,
        "recommended": recommended,
    }


def test_latency_plots_write_the_pngs_the_report_embeds(latency_results: dict[str, Any], tmp_path: Path) -> None:
    for name in latency_plots.__all__:
        fig = getattr(latency_plots, name)(latency_results, tmp_path)
        assert isinstance(fig, Figure)
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == [
        f"01_query_latency_{n}.png" for n in ("cdf", "indexes", "p50", "rounds", "three_way", "write_cost")
    ]
    for name in names:
        _png(tmp_path / name)


def test_three_way_bars_per_query_and_set(latency_results: dict[str, Any], tmp_path: Path) -> None:
    (ax,) = latency_plots.plot_three_way(latency_results, tmp_path).axes
    bars = _bars(ax)  # baseline, spec, recommended: one bar per query each
    assert len(bars) == 3 and all(len(b) == len(latency_results["queries"]) for b in bars)
    assert sum("slower than spec" in t for t in _ticks(ax.get_yticklabels())) == 1
    assert latency_plots.plot_three_way({**latency_results, "recommended": None}, tmp_path / "none") is None


@pytest.mark.parametrize("round_trip", [False, True], ids=["results", "json"])
def test_p50_bars_per_query_and_side_in_the_specs_order(
    latency_results: dict[str, Any], tmp_path: Path, round_trip: bool
) -> None:
    results = _round_trip(latency_results) if round_trip else latency_results
    (ax,) = latency_plots.plot_p50(results, tmp_path).axes
    before, after = _bars(ax)
    medians = [latency_results["queries"][q] for q in QUERIES]
    assert [b.get_width() for b in before] == pytest.approx([q["before"]["p50"] for q in medians])
    assert [b.get_width() for b in after] == pytest.approx([q["after"]["p50"] for q in medians])
    labels = _ticks(ax.get_yticklabels())
    assert [label.split("\n")[0] for label in labels] == [QUERY_PATTERNS[q].label for q in QUERIES]
    assert "(n=40/40, faster)" in labels[0] or "(n=40/40, no difference)" in labels[0]
    assert ax.get_xscale() == "log"
    assert "20,000 verdicts" in ax.get_title()
    assert [t.get_text() for t in ax.figure.legends[0].get_texts()] == ["before (20 indexes)", "after (46 indexes)"]


def test_cdf_has_one_panel_per_query_with_both_sides(latency_results: dict[str, Any], tmp_path: Path) -> None:
    fig = latency_plots.plot_cdf(latency_results, tmp_path)
    assert len(fig.axes) == 4  # one row of four panels, the fourth hidden
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split(" ")[0] for ax in visible] == QUERIES
    for ax in visible:
        assert [line.get_color() for line in ax.get_lines()] == ["tab:red", "tab:green"]
        ys = ax.get_lines()[0].get_ydata()
        assert ys[0] == pytest.approx(1 / 40) and ys[-1] == pytest.approx(1.0)


def test_rounds_shows_each_querys_round_medians_in_order(latency_results: dict[str, Any], tmp_path: Path) -> None:
    (ax,) = latency_plots.plot_rounds(latency_results, tmp_path).axes
    assert [line.get_label() for line in ax.get_lines()] == QUERIES
    assert list(ax.get_lines()[0].get_ydata()) == latency_results["queries"][QUERIES[0]]["round_medians"]["p50_ms"]
    assert _ticks(ax.get_xticklabels()) == [
        "1\nbefore", "2\nafter", "3\nrecommended", "4\nrecommended", "5\nafter", "6\nbefore"
    ]  # fmt: skip
    assert "n=20 per round" in ax.get_ylabel()


def test_write_cost_bars_and_none_when_not_measured(latency_results: dict[str, Any], tmp_path: Path) -> None:
    fig = latency_plots.plot_write_cost(latency_results, tmp_path)
    assert fig is not None
    (ax,) = fig.axes
    bars = [c[0] for c in _bars(ax)]  # one bar per side
    assert [b.get_height() for b in bars] == [9000.0, 6000.0]
    assert _ticks(ax.get_xticklabels()) == ["20 indexes\n(n=3 batches)", "46 indexes\n(n=3 batches)"]
    assert "1.50× as long" in ax.get_title() and "slower" in ax.get_title()
    empty = tmp_path / "none"
    assert latency_plots.plot_write_cost(latency_results | {"write_cost": {}}, empty) is None
    assert not empty.exists()  # nothing drawn, nothing saved


def test_indexes_shows_only_the_new_ones_largest_first(latency_results: dict[str, Any], tmp_path: Path) -> None:
    (ax,) = latency_plots.plot_indexes(latency_results, tmp_path).axes
    assert _ticks(ax.get_yticklabels()) == ["idx_big", "idx_mid", "idx_unused"]
    (bars,) = _bars(ax)
    assert [b.get_width() for b in bars] == [3.0, 2.0, 1.0]
    gray = bars[2].get_facecolor()
    assert bars[0].get_facecolor() != gray  # the unused index is the gray one
    assert [t.get_text().strip() for t in ax.texts] == ["12 scans", "4 scans", "0 scans"]


# --------------------------------------------------------------------------- notebooks 02 and 03

CURRENT_TTLS = {"hs_codes": 3600.0, "rules": 1800.0, "assessments": 300.0}
GRID = [60.0, 300.0, 1800.0, 3600.0]


@pytest.fixture(scope="module")
def trace() -> Any:
    return generate_trace(WorkloadSpec(requests=1500, assessment_inputs=60, seed=7))


@pytest.fixture(scope="module")
def hit_rate_results(trace: Any) -> dict[str, Any]:
    """Notebook 02's result shape: a 'live' replay (the simulation plus latencies and a timeline)."""
    live = simulate(trace, CURRENT_TTLS)
    edges = [0.0, 1800.0, 3600.0, 5400.0, 7200.0]
    live["trace"] = trace.summary()
    live["timeline"] = {"edges_s": edges} | {e: {"reads": [10, 20, 0, 40], "hits": [1, 10, 0, 30]} for e in ENTITIES}
    for i, e in enumerate(live["entities"]):
        live["entities"][e]["miss_source"] = "compute" if e == "assessments" else "database"
        live["entities"][e]["latency"] = {"hit": _stats(1.0, seed=i), "miss": _stats(20.0, seed=i + 5)}
    live["entities"]["rules"]["latency"]["miss"] = None  # an entity that never missed
    return {"live": live, "sim_vs_live": {"comparison": compare_sim_to_live(simulate(trace, CURRENT_TTLS), live)}}


@pytest.fixture(scope="module")
def tuning_results(trace: Any) -> dict[str, Any]:
    """Notebook 03's result shape: a real tuning of the trace and a sim-vs-live comparison."""
    tuning = tune(trace, CURRENT_TTLS, GRID, target_hit_rate=0.5, max_staleness_s=900.0, metric="p95_stale_s")
    sim = simulate(trace, CURRENT_TTLS)
    return {
        "tuning": tuning,
        "trace": trace.summary(),
        "sim_vs_live": {"comparison": compare_sim_to_live(sim, simulate(trace, CURRENT_TTLS))},
    }


def test_cache_plots_write_the_pngs_the_report_embeds(
    hit_rate_results: dict[str, Any], tuning_results: dict[str, Any], tmp_path: Path
) -> None:
    cache_plots.plot_hit_rates(hit_rate_results, tmp_path)
    cache_plots.plot_cache_latency(hit_rate_results, tmp_path)
    cache_plots.plot_hit_rate_timeline(hit_rate_results, tmp_path)
    cache_plots.plot_ttl_hit_rate(tuning_results, tmp_path)
    cache_plots.plot_ttl_staleness(tuning_results, tmp_path)
    cache_plots.plot_sim_vs_live(tuning_results, tmp_path)
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == [
        "02_cache_hit_rates_hit_rates.png",
        "02_cache_hit_rates_latency.png",
        "02_cache_hit_rates_timeline.png",
        "03_ttl_tuning_hit_rate.png",
        "03_ttl_tuning_sim_vs_live.png",
        "03_ttl_tuning_staleness.png",
    ]
    for name in names:
        _png(tmp_path / name)


@pytest.mark.parametrize("round_trip", [False, True], ids=["results", "json"])
def test_hit_rates_bars_simulation_and_spec_claims(
    hit_rate_results: dict[str, Any], tmp_path: Path, round_trip: bool
) -> None:
    results = _round_trip(hit_rate_results) if round_trip else hit_rate_results
    (ax,) = cache_plots.plot_hit_rates(results, tmp_path).axes
    entities = hit_rate_results["live"]["entities"]
    (bars,) = _bars(ax)
    assert [b.get_height() for b in bars] == pytest.approx([entities[e]["hit_rate"] * 100 for e in ENTITIES])
    assert [t.split("\n")[0] for t in _ticks(ax.get_xticklabels())] == [ENTITY_LABELS[e] for e in ENTITIES]
    (diamonds,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    simulated = hit_rate_results["sim_vs_live"]["comparison"]["entities"]
    assert list(diamonds.get_offsets()[:, 1]) == pytest.approx([simulated[e]["sim_hit_rate"] * 100 for e in ENTITIES])
    assert set(_legend(ax)) == {"measured (95 % Wilson CI)", "TTL simulation, same trace", "spec's claim"}
    assert ax.get_ylim() == (0, 100)


def test_cache_latency_cdfs_per_entity(hit_rate_results: dict[str, Any], tmp_path: Path) -> None:
    fig = cache_plots.plot_cache_latency(hit_rate_results, tmp_path)
    assert [ax.get_title() for ax in fig.axes] == [ENTITY_LABELS[e] for e in ENTITIES]
    hs, rules, assessments = fig.axes
    assert [t.split(":")[0] for t in _legend(hs)] == ["cache", "DB"]
    assert [t.split(":")[0] for t in _legend(rules)] == ["cache"]  # no miss, no miss curve
    assert [t.split(":")[0] for t in _legend(assessments)] == ["cache", "compute"]
    assert all(ax.get_xscale() == "log" for ax in fig.axes)


def test_timeline_hit_rate_per_bin(hit_rate_results: dict[str, Any], tmp_path: Path) -> None:
    (ax,) = cache_plots.plot_hit_rate_timeline(hit_rate_results, tmp_path).axes
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == [f"{ENTITY_LABELS[e]} (70 reads)" for e in ENTITIES]
    assert list(lines[0].get_xdata()) == [15.0, 45.0, 75.0, 105.0]
    y = lines[0].get_ydata()
    assert list(y[[0, 1, 3]]) == pytest.approx([10.0, 50.0, 75.0]) and np.isnan(y[2])  # no reads: no point
    assert "warm-up (not counted)" in _legend(ax)


def test_ttl_hit_rate_curves_per_entity_and_mode(tuning_results: dict[str, Any], tmp_path: Path) -> None:
    fig = cache_plots.plot_ttl_hit_rate(_round_trip(tuning_results), tmp_path)
    assert [ax.get_title().split(" (")[0] for ax in fig.axes] == [ENTITY_LABELS[e] for e in ENTITIES]
    tuning = tuning_results["tuning"]
    for ax, e in zip(fig.axes, ENTITIES, strict=True):
        modes = [line for line in ax.get_lines() if line.get_label() in {s[1] for s in cache_plots.SWEEP_STYLES}]
        assert [line.get_label() for line in modes] == [s[1] for s in cache_plots.SWEEP_STYLES]
        assert list(modes[0].get_xdata()) == GRID
        expected = [p["hit_rate"] * 100 for p in tuning["sweep"]["curves"][e]]
        assert list(modes[0].get_ydata()) == pytest.approx(expected)
        assert any(line.get_xdata()[0] == CURRENT_TTLS[e] for line in ax.get_lines() if line not in modes)
        rec = tuning["recommendations"][e]["ttl_s"]
        recommended = [t for t in _legend(ax) if t.startswith("recommended")]
        assert recommended == ([f"recommended: {rec:g} s"] if rec else [])
    assert any(tuning["recommendations"][e]["ttl_s"] for e in ENTITIES), "the fixture recommends some TTL"
    assert "target 50%" in fig.texts[0].get_text()


def test_ttl_staleness_uses_the_tuning_metric(tuning_results: dict[str, Any], tmp_path: Path) -> None:
    shares, metric = cache_plots.plot_ttl_staleness(tuning_results, tmp_path).axes
    assert metric.get_ylabel().startswith("p95_stale_s")
    assert [line.get_label() for line in shares.get_lines()] == [ENTITY_LABELS[e] for e in ENTITIES]
    curve = tuning_results["tuning"]["sweep"]["curves"]["hs_codes"]
    assert list(metric.get_lines()[0].get_ydata()) == pytest.approx([p["p95_stale_s"] or 0.0 for p in curve])
    assert metric.get_lines()[-1].get_ydata()[0] == 900.0  # the staleness bound


def test_sim_vs_live_bars(tuning_results: dict[str, Any], tmp_path: Path) -> None:
    (ax,) = cache_plots.plot_sim_vs_live(_round_trip(tuning_results), tmp_path).axes
    live, sim = _bars(ax)
    rows = tuning_results["sim_vs_live"]["comparison"]["entities"]
    assert [b.get_height() for b in live] == pytest.approx([rows[e]["live_hit_rate"] * 100 for e in ENTITIES])
    assert [b.get_height() for b in sim] == pytest.approx([rows[e]["sim_hit_rate"] * 100 for e in ENTITIES])
    assert _ticks(ax.get_xticklabels())[0].startswith(f"{ENTITY_LABELS['hs_codes']}\n|diff| 0.000")


# --------------------------------------------------------------------------- notebook 04

CONFIGS = ["baseline", "indexes", "cache", "both"]  # the order they ran; the JSON sorts them


def _summary(p50: float, n: int) -> dict[str, Any]:
    return {"n": n, "p50_ms": p50, "p95_ms": p50 * 3, "p99_ms": p50 * 5, "failures": 0}


@pytest.fixture(scope="module")
def load_results() -> dict[str, Any]:
    configs = {}
    for i, name in enumerate(CONFIGS):
        scale = 40.0 / (i + 1)
        groups = {
            g: {
                "cpu_cores": 0.1 * (j + 1),
                "rss_mb_max": 100.0 * (j + 1),
                "pss_mb_max": 50.0 if g == "postgres" else None,
            }
            for j, g in enumerate(load_plots.GROUPS)
        }
        steps = [
            {"users": u, "overall": _summary(scale * u, 100 * u), "generator": {"saturated": u == 4 and i == 0}}
            for u in (1, 2, 4)
        ]
        configs[name] = {
            "closed": {
                "users": 2,
                "overall": _summary(scale, 200),
                "endpoints": {
                    "GET /api/hs-codes/[code]": _summary(scale / 2, 120),
                    "POST /api/assessments": _summary(scale * 2, 80),
                },
                "resources": {"cpus": 2, "samples": 6, "machine_busy_cores": 0.9, "groups": groups},
            },
            "open": {"latency": {"overall": _summary(scale * 1.5, 50)}},
            "steps": steps,
            "users_supported": {"users_supported": 2 * (i + 1)},
        }
    return {
        "parameters": {"users": 2, "arrival_rate": 5.0, "slo_p95_ms": 500.0, "configurations": CONFIGS},
        "configurations": configs,
        "fingerprint": {"dataset": {"verdicts": 2000}},
    }


def test_load_plots_write_the_pngs_the_report_embeds(load_results: dict[str, Any], tmp_path: Path) -> None:
    for name in load_plots.__all__:
        assert isinstance(getattr(load_plots, name)(load_results, tmp_path), Figure)
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == [f"04_load_test_{n}.png" for n in ("endpoints", "latency", "resources", "steps")]
    for name in names:
        _png(tmp_path / name)


@pytest.mark.parametrize("round_trip", [False, True], ids=["results", "json"])
def test_latency_percentiles_per_configuration_in_run_order(
    load_results: dict[str, Any], tmp_path: Path, round_trip: bool
) -> None:
    results = _round_trip(load_results) if round_trip else load_results
    fig = load_plots.plot_latency(results, tmp_path)
    closed, open_ = fig.axes
    assert [t.split("\n")[0] for t in _ticks(closed.get_xticklabels())] == CONFIGS
    p50, p95, p99 = _bars(closed)
    assert [b.get_height() for b in p50] == pytest.approx([40.0 / (i + 1) for i in range(4)])
    assert [b.get_height() for b in p99] == pytest.approx([200.0 / (i + 1) for i in range(4)])
    assert [b.get_height() for b in _bars(open_)[0]] == pytest.approx([60.0 / (i + 1) for i in range(4)])
    assert _legend(closed) == ["p50", "p95", "p99"]
    assert "2 users" in closed.get_title() and "5 req/s" in open_.get_title()
    assert "2,000 verdicts" in fig.texts[0].get_text()


def test_steps_p95_against_users_with_the_slo(load_results: dict[str, Any], tmp_path: Path) -> None:
    (ax,) = load_plots.plot_steps(_round_trip(load_results), tmp_path).axes
    labels = _legend(ax)
    assert labels[:2] == ["baseline p95 (supported: 2)", "baseline p50"]
    assert labels[-1] == "SLO p95 500 ms"
    baseline = ax.get_lines()[0]
    assert list(baseline.get_xdata()) == [1, 2, 4]
    assert list(baseline.get_ydata()) == pytest.approx([120.0, 240.0, 480.0])
    assert len(ax.collections) == 1  # one saturated step, one cross
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_endpoints_compare_the_first_and_last_configuration(load_results: dict[str, Any], tmp_path: Path) -> None:
    (ax,) = load_plots.plot_endpoints(_round_trip(load_results), tmp_path).axes
    assert ax.get_title() == "Per endpoint, headline step: baseline vs both"
    first, last = _bars(ax)
    assert [b.get_width() for b in first] == pytest.approx([60.0, 240.0])  # p95 of each endpoint
    assert [b.get_width() for b in last] == pytest.approx([15.0, 60.0])
    assert _ticks(ax.get_yticklabels()) == ["GET /api/hs-codes/[code]\n(n=120/120)", "POST /api/assessments\n(n=80/80)"]


def test_resources_cpu_and_memory_per_group(load_results: dict[str, Any], tmp_path: Path) -> None:
    cpu, memory = load_plots.plot_resources(load_results, tmp_path).axes
    groups = _bars(cpu)
    assert [c.get_label() for c in groups] == list(load_plots.GROUPS)
    assert [b.get_height() for b in groups[0]] == pytest.approx([0.1] * 4)
    postgres = _bars(memory)[0]
    assert postgres.get_label() == "postgres (PSS)" and [b.get_height() for b in postgres] == [50.0] * 4
    assert _bars(memory)[1].get_label() == "api (RSS)" and _bars(memory)[1][0].get_height() == 200.0
    assert "whole machine busy" in _legend(cpu)
    assert "machine: 2" in cpu.get_ylabel() and "6 samples" in cpu.get_title()
