"""Generate notebooks/02_cache_hit_rates.ipynb (run: python notebooks/_build/make_02.py).

All outputs are left empty (no cell is checked by nbval: every output depends on the machine).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell
from nbgen import finish, write

from psra_bench.params import CacheHitRatesParams

OUT = Path(__file__).resolve().parent.parent / "02_cache_hit_rates.ipynb"

INTRO = """\
# 02 — Cache hit rates, live

The spec's **Cache Hit Rates (after warm-up)** table (section 4), measured: a seeded workload —
Zipf-skewed HS code lookups, rule lookups and assessments, plus data updates — replayed through
the real `CacheService` / `CachedDAL` / `assess_with_cache` against the real Redis and PostgreSQL.

**Method** (details in `psra_bench/cachesim/replay.py`): the trace spans a simulated period (two
hours by default) with the production TTLs (300–3600 s). The replay runs it on a compressed clock
— event *i* is issued `t_i / compression` real seconds after the start and every TTL the cache
sets is divided by the same factor — so keys really expire in Redis during the run. The
compression is calibrated against the machine's current speed so events start on time (the lag
is reported). Reads in the first `warmup_s` simulated seconds fill the cache but are not counted.
Hit rates carry a Wilson 95 % interval; latencies (whole call, as a caller sees it) p50/p95 with
bootstrap CIs. Data updates change HS descriptions and rule titles in PostgreSQL; without
invalidation the replay measures how stale the served values were. The same trace with the
unscaled TTLs goes through the TTL simulation of notebook 03, and the two are compared.

Results: `<output_dir>/02_cache_hit_rates.json` and `02_cache_hit_rates_*.png`."""

PARAMETERS = CacheHitRatesParams.cell()  # the one definition: psra_bench/params.py

VALIDATE = """\
from psra_bench.params import CacheHitRatesParams

notebook = CacheHitRatesParams.from_namespace(globals())
notebook_params, params = notebook.papermill(), notebook.check()
source = f"trace {trace}" if trace else f"{requests:,} reads over {duration_s:g} simulated s"
print(f"parameters OK: {source}, invalidate: {invalidate_on_update}")"""

SETUP = """\
from psra_bench.workbench import ensure_dataset, notebook_settings

settings = notebook_settings(database)
dataset = ensure_dataset(settings, verdicts, seed)
print(dataset)"""

RUN = """\
import time

from psra_bench.cachesim.replay import replay_live
from psra_bench.cachesim.workload import generate_trace

trace = generate_trace(params.spec)
summary = trace.summary()
print(f"trace {summary['fingerprint'][:12]}: {summary['events']:,} events, {summary['requests_per_s']:g} requests/s, "
      f"{summary['updates_per_hour']:g} updates/h")
t0 = time.perf_counter()
live = replay_live(settings, trace, ttls=params.ttls_for(settings), compression=params.compression,
                   invalidate_on_update=params.invalidate_on_update, seed=seed)
print(f"replayed in {time.perf_counter() - t0:.1f} s (clock compressed {live['compression']:.0f}x); lag "
      f"p95 {live['schedule']['lag_p95_s']:.2f} simulated s; cache errors {live['cache_errors']}")"""

TABLE_MD = """\
## Cache hit rates (shaped like the spec's table)

`spec` columns are the spec's claims; ours are measured in this run. A *miss* is the whole
read-through call (cache GET, the database query or the assessment's evaluation + INSERT, then the
SET), which is what a caller waits for."""

TABLE = """\
from psra_bench.cachesim.experiment import format_table, hit_rate_table

print(format_table(hit_rate_table(live)))
print()
for e, r in live["entities"].items():
    if r["stale_reads"]:
        print(f"{r['label']}: {r['stale_reads']} stale reads ({r['stale_share']:.1%} of n={r['n']}), "
              f"mean {r['mean_stale_s']:.0f} s, max {r['max_stale_s']:.0f} s stale")
    else:
        print(f"{r['label']}: no stale reads (n={r['n']})")"""

CHECK_MD = """\
## The TTL simulation on the same trace

`psra_bench.cachesim.ttl_sim` replays the trace through a TTL-cache model with the *unscaled* TTLs; if
the model is right, only scheduling lag separates it from the live run."""

CHECK = """\
from psra_bench.cachesim.experiment import cache_hit_results, comparison_table
from psra_bench.cachesim.ttl_sim import compare_sim_to_live, simulate
from psra_bench.workbench import save_results

sim = simulate(trace, live["ttls_s"], invalidate_on_update=live["invalidate_on_update"])
check = {"source": "this notebook's live replay", "sim": sim, "comparison": compare_sim_to_live(sim, live),
         "realized_clock_sim": live["realized_clock_sim"]}
print(format_table(comparison_table(check)))
results = cache_hit_results(live, {k: v for k, v in check.items() if k != "sim"}, settings=settings,
                            dataset=dataset, params=notebook_params)
print("saved", save_results(output_dir, "02_cache_hit_rates", results))"""

PLOTS_MD = """\
## Plots (saved as PNG files in `output_dir`)

Drawn by `psra_bench.cachesim.plots` from the saved results: each call saves
`02_cache_hit_rates_<name>.png` (the files the report embeds) and returns the figure shown under it."""

PLOT_RATES = """\
%matplotlib inline
# (inline: the figures the plot functions return are shown as images)
from psra_bench.cachesim.plots import plot_cache_latency, plot_hit_rate_timeline, plot_hit_rates

plot_hit_rates(results, output_dir)"""

PLOT_LATENCY = """plot_cache_latency(results, output_dir)"""

PLOT_TIMELINE = """plot_hit_rate_timeline(results, output_dir)"""

NOTES = """\
## Reading the results

* Hit rates depend on the request rate relative to the TTLs and the key skew: the quick default
  (1,000 reads over two simulated hours) is a light load; the report's full run replays 20,000.
* An assessment hit is not free here: `assess_with_cache` evaluates the rule *before* it asks the
  cache (the key does not name the bill of materials, so it compares the cached input hash), so a
  hit only saves the INSERT of the verdict and the SET.
* Staleness is measured, not assumed: the replay changes rows without invalidation and checks the
  revision each cached read returns. Run with `invalidate_on_update = True` to see the other side
  of the trade: CachedDAL then drops every HS code and assessment on each update (its
  invalidation is per entity, not per key), which costs hits. Notebook 03 explores TTLs.
* Absolute milliseconds come from one process on a shared 2-core machine; compare cache vs miss
  ratios, not the spec's numbers."""


def build() -> nbformat.NotebookNode:
    """The notebook, all outputs empty."""
    cells = [
        new_markdown_cell(INTRO),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell(VALIDATE),
        new_code_cell(SETUP),
        new_code_cell(RUN),
        new_markdown_cell(TABLE_MD),
        new_code_cell(TABLE),
        new_markdown_cell(CHECK_MD),
        new_code_cell(CHECK),
        new_markdown_cell(PLOTS_MD),
        new_code_cell(PLOT_RATES),
        new_code_cell(PLOT_LATENCY),
        new_code_cell(PLOT_TIMELINE),
        new_markdown_cell(NOTES),
    ]
    return finish(cells, "nb02")


if __name__ == "__main__":
    write(build(), OUT)
