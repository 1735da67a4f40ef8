"""Generate notebooks/03_ttl_tuning.ipynb (run: python notebooks/_build/make_03.py).

All outputs are left empty (no cell is checked by nbval). The widget cell builds sliders in a
live kernel (``interactive = None``, auto; see psra_bench.cachesim.explorer); under papermill and
nbval it prints one line.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell
from nbgen import finish, write

from psra_bench.params import TtlTuningParams

OUT = Path(__file__).resolve().parent.parent / "03_ttl_tuning.ipynb"

INTRO = """\
# 03 — TTL tuning: hit rate against staleness

How long should each entity stay cached? Longer TTLs raise the hit rate and serve data longer
after it changed. This notebook answers with a **fast simulation** (`psra_bench/cachesim/ttl_sim.py`) of
the same kind of seeded trace notebook 02 replays live: per entity and TTL it gives the hit rate
after warm-up (Wilson 95 % CI) and the **staleness** — the share of reads that served a value
after its row had changed, and how long after (mean, p95, max seconds) — without invalidation,
with CachedDAL's invalidation on update (no staleness; every HS or rule update drops the whole
entity and all assessments), and with per-key invalidation (what a finer invalidation would
keep).

* **Sweep** (always, also under papermill): the curves over `ttl_grid` and, per entity, the
  shortest TTL that reaches `target_hit_rate` while its `staleness_metric` stays ≤
  `max_staleness_s`.
* **Check against the live measurement**: notebook 02's `02_cache_hit_rates.json` in
  `output_dir` holds a live replay; its trace is drawn again here and simulated with its TTLs. If
  the file is missing, a small live replay (`live_check_requests` reads) runs here instead.
* **Interactive** (JupyterLab or any live kernel; `interactive = None` means auto, skipped under
  papermill and nbval): sliders for each entity's TTL, the key skew and the update rates re-run
  the simulation as you move them.

Results: `<output_dir>/03_ttl_tuning.json` and `03_ttl_tuning_*.png`."""

PARAMETERS = TtlTuningParams.cell()  # the one definition: psra_bench/params.py

VALIDATE = """\
from psra_bench.params import TtlTuningParams

notebook = TtlTuningParams.from_namespace(globals())
notebook_params, params = notebook.papermill(), notebook.check()
print(f"parameters OK: {requests:,} reads, {len(params.grid_s)} TTLs per entity, target {target_hit_rate:.0%}, "
      f"{staleness_metric} ≤ {max_staleness_s:g} s")"""

SETUP = """\
from psra_bench.workbench import ensure_dataset, notebook_settings

settings = notebook_settings(database)
dataset = ensure_dataset(settings, verdicts, seed)
print(dataset)"""

SWEEP_MD = """\
## Sweep and recommendations

The current TTLs are the configured ones (`CACHE_TTL_*`, defaults from the spec)."""

SWEEP = """\
from psra_bench.cachesim.experiment import format_table, recommendation_table, sweep_table
from psra_bench.cachesim.replay import settings_ttls
from psra_bench.cachesim.workload import generate_trace
from psra_bench.cachesim.ttl_sim import tune

trace = generate_trace(params.spec)
current_ttls = settings_ttls(settings)
tuning = tune(trace, current_ttls, params.grid_s, target_hit_rate=params.target_hit_rate,
              max_staleness_s=params.max_staleness_s, metric=params.staleness_metric)
print(f"trace {trace.fingerprint()[:12]}: {len(trace):,} events, {trace.summary()['requests_per_s']:g} requests/s")
print()
print(format_table(recommendation_table(tuning)))
print()
print(format_table(sweep_table(tuning["sweep"], "Hit rate and stale share by TTL (no invalidation)")))"""

CHECK_MD = """\
## The simulation against the live measurement

Same trace, same TTLs, same invalidation mode as the live replay; the difference is the model's
error plus the replay's scheduling lag ('sim on realized clock' removes the lag)."""

CHECK = """\
from psra_bench.cachesim.experiment import comparison_table, live_reference, ttl_tuning_results
from psra_bench.workbench import save_results

check = live_reference(settings, output_dir, params.spec.replace(requests=params.live_check_requests),
                       compression=params.compression, seed=seed)
print(format_table(comparison_table(check)))
results = ttl_tuning_results(trace, tuning, check, settings=settings, dataset=dataset, params=notebook_params)
print("saved", save_results(output_dir, "03_ttl_tuning", results))"""

PLOTS_MD = """\
## Plots (saved as PNG files in `output_dir`)

Drawn by `psra_bench.cachesim.plots` from the saved results: each call saves
`03_ttl_tuning_<name>.png` (the files the report embeds) and returns the figure shown under it."""

PLOT_CURVES = """\
%matplotlib inline
# (inline: the figures the plot functions return are shown as images)
from psra_bench.cachesim.plots import plot_sim_vs_live, plot_ttl_hit_rate, plot_ttl_staleness

plot_ttl_hit_rate(results, output_dir)"""

PLOT_STALENESS = """plot_ttl_staleness(results, output_dir)"""

PLOT_CHECK = """plot_sim_vs_live(results, output_dir)"""

INTERACTIVE_MD = """\
## Try TTLs (JupyterLab)

Run the notebook in JupyterLab (or any live kernel): each slider re-runs the simulation (a few
milliseconds for a few thousand events); skew and update-rate changes draw a new trace with the
same seed. With `interactive = None` (auto) the sliders are skipped under papermill and nbval;
`True` or `False` forces them on or off. The explorer is `psra_bench.cachesim.explorer`."""

INTERACTIVE = """\
import os

from psra_bench.cachesim.explorer import resolve_interactive, show_ttl_explorer

show_ttl_explorer(params.spec, current_ttls, params.grid_s, resolve_interactive(params.interactive, os.environ, In))"""

NOTES = """\
## Reading the results

* TTL buys hit rate with staleness: without invalidation a value can be served up to one TTL
  after its row changed, so a bound on the *maximum* staleness is a bound on the TTL; bounding
  the p95 or the mean instead lets rarely-changing data (HS codes) keep long TTLs.
* CachedDAL invalidates per entity (an HS update drops every cached HS code and assessment), so
  its hit-rate cost grows with the update rate; the per-key curve shows what finer invalidation
  would keep.
* The recommendation comes from one seeded trace: the CIs show how much the hit rates would move
  with another sample of the same workload. Re-run with your own request and update rates."""


def build() -> nbformat.NotebookNode:
    """The notebook, all outputs empty."""
    cells = [
        new_markdown_cell(INTRO),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell(VALIDATE),
        new_code_cell(SETUP),
        new_markdown_cell(SWEEP_MD),
        new_code_cell(SWEEP),
        new_markdown_cell(CHECK_MD),
        new_code_cell(CHECK),
        new_markdown_cell(PLOTS_MD),
        new_code_cell(PLOT_CURVES),
        new_code_cell(PLOT_STALENESS),
        new_code_cell(PLOT_CHECK),
        new_markdown_cell(INTERACTIVE_MD),
        new_code_cell(INTERACTIVE),
        new_markdown_cell(NOTES),
    ]
    return finish(cells, "nb03")


if __name__ == "__main__":
    write(build(), OUT)
