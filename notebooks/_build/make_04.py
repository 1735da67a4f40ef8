"""Generate notebooks/04_load_test.ipynb (run: python notebooks/_build/make_04.py).

Outputs are left empty, except the one deterministic cell marked NBVAL_CHECK_OUTPUT (the
request mix), whose output is computed here from the same code the cell runs.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_output
from nbgen import finish, write

from psra_bench.params import LoadTestParams

OUT = Path(__file__).resolve().parent.parent / "04_load_test.ipynb"

INTRO = """\
# 04 — Load test: API latency, users supported, database CPU and memory

The spec's **Overall System Performance** table, measured under load with Locust — the tool our
users run — for each configuration: **baseline** (no migration indexes, cache off), **indexes**
only, **cache** only and **both**. Each configuration runs on a fresh copy of the seeded dataset
with its own `psra-bench serve` process:

* **closed model** — a Locust *step load* (users × ½, 1, 2, 4, 8; `quick`: × 1, 2) with the
  weighted request mix of `psra_bench.load.request_mix`. Every request's latency goes into an
  HdrHistogram (µs resolution, merged across Locust processes), not Locust's 1 ms / 10 ms buckets.
  The step with `users` users is the headline; the highest step whose p95 meets the SLO with
  < 1 % failures is the number of **concurrent users supported**;
* **open model** — a constant arrival rate with latency measured from each request's *intended*
  start, late and dropped requests counted, so queueing (coordinated omission) stays in the tail;
* **resources** — CPU of all PostgreSQL processes, memory of the API, Redis and PostgreSQL, and
  the load generator's own CPU (a generator above ~90 % of a core is flagged: its latencies are
  marked, not reported as the server's).

All logic lives in `psra_bench.load.experiment` (and `generators`, `open_model`, `results`, and
`psra_bench.measure`'s `hdr` and `procmon`), the plots in `psra_bench.load.plots`; this notebook
calls them. Results: `<output_dir>/04_load_test.json` and `04_load_test_*.png`."""

PARAMETERS = LoadTestParams.cell()  # the one definition: psra_bench/params.py

VALIDATE = """\
from psra_bench.params import LoadTestParams

params = LoadTestParams.from_namespace(globals())
config_names, replay_plan = params.prepare()  # from_log read and templated before any measurement (None without)
print(f"parameters OK: {', '.join(config_names)}; {users} users, {duration:g} s per step, "
      f"{arrival_rate:g} req/s open model, SLO p95 <= {slo_p95_ms:g} ms")
if replay_plan is not None:
    print(f"from_log: {len(replay_plan.arrivals)} requests to this API's routes to replay at speed {log_speed:g}, "
          f"{sum(replay_plan.log.unmatched.values())} for other routes (not sent)")"""

MIX = """\
# NBVAL_CHECK_OUTPUT
from psra_bench.load.request_mix import ENDPOINT_NAMES, KIND_WEIGHTS

total = sum(KIND_WEIGHTS.values())
for kind, weight in KIND_WEIGHTS.items():
    print(f"{ENDPOINT_NAMES[kind]:<44} {weight / total:6.1%}")
print(f"{ENDPOINT_NAMES['job_status']:<44} polled after each submit until the job ends")"""

SETUP = """\
from psra_bench.workbench import ensure_dataset, notebook_settings

settings = notebook_settings(database)
dataset = ensure_dataset(settings, verdicts, seed)
print(dataset)"""

RUN = """\
from psra_bench.load.experiment import run_load

results = run_load(
    settings, users=users, spawn_rate=spawn_rate, duration=duration, arrival_rate=arrival_rate,
    configurations=config_names, slo_p95_ms=slo_p95_ms, output_dir=output_dir, quick=quick, dataset=dataset,
    seed=seed,
)
print(f"saved {output_dir}/04_load_test.json after {results['seconds']:.0f} s")
for name, c in results["configurations"].items():
    h, o, u = c["closed"] or {}, c["open"], c["users_supported"]
    ov = h.get("overall", {})
    gen = "generator SATURATED" if (h.get("generator") or {}).get("saturated") else "generator ok"
    print(f"{name:<9} closed {h.get('users')} users: n={ov.get('n')} p50={ov.get('p50_ms')} p95={ov.get('p95_ms')} "
          f"p99={ov.get('p99_ms')} ms, {ov.get('rps', 0):.1f} req/s, failures {ov.get('failures')} ({gen}); "
          f"users supported {u['users_supported']} ({u['reason']})")
    ol = o["latency"]["overall"]
    print(f"{'':<9} open {o['target_rps']:g}/s: n={ol['n']} p50={ol['p50_ms']} p99={ol['p99_ms']} ms from intended "
          f"start, late {o['late']}, dropped {o['dropped']}, achieved {o['achieved_rps']:.1f}/s; "
          f"timings {c['timings_s']}")"""

TABLE_MD = """\
## Overall system performance (the spec's table)

Before = baseline, after = both (or the first and last configuration run). Latencies in ms from
the headline step (n = measured requests); users supported from the step load; database CPU
in % of the machine's CPUs during the headline step; memory = largest RSS (PSS for PostgreSQL)."""

TABLE = """\
from psra_bench.load.results import load_result_tables

for table in load_result_tables(results):  # the tables the report shows
    print(table.text())
    print()"""

PLOTS_MD = """\
## Plots (saved as PNG files in `output_dir`)

Drawn by `psra_bench.load.plots` from the results: each call saves `04_load_test_<name>.png` (the
files the report embeds) and returns the figure shown under it."""

PLOT_LATENCY = """\
%matplotlib inline
# (inline: the figures the plot functions return are shown as images)
from psra_bench.load.plots import plot_endpoints, plot_latency, plot_resources, plot_steps

plot_latency(results, output_dir)"""

PLOT_STEPS = """plot_steps(results, output_dir)"""

PLOT_ENDPOINTS = """plot_endpoints(results, output_dir)"""

PLOT_RESOURCES = """plot_resources(results, output_dir)"""

REPLAY_MD = """\
## Your recorded traffic (`from_log`)

Given an access log (`from_log`: nginx/Apache combined, JSON lines or HAR, see `log_format`), the
log is replayed against the **both** configuration on its own copy of the dataset: every recorded
request at its recorded time divided by `log_speed` (the open model, latency from the intended
start), paths templated against this API's routes, requests for other routes listed and never
sent. Then a capacity search at the **log's own mix**: Locust users drawing each request from the
recorded ones, with this notebook's `users`, `spawn_rate`, `duration` and `slo_p95_ms`. All of it
is `psra_bench.load.replay` (and `replay_tables`); results: `<output_dir>/04_load_replay.json`."""

REPLAY = """\
if replay_plan is None:
    print("from_log is None: no recorded traffic to replay (set it to an access log to compare your mix with this one)")
else:
    from psra_bench.load.experiment import run_log_replay
    from psra_bench.load.replay_tables import replay_tables

    replay = run_log_replay(settings, replay_plan, output_dir, load=params)
    print(f"saved {output_dir}/04_load_replay.json after {replay['seconds']:.0f} s")
    for table in replay_tables(replay):  # the tables the report shows
        print(table.text())
        print()"""

REPLAY_PLOT = """\
if replay_plan is not None:
    from IPython.display import display

    from psra_bench.load.replay import plot_replay_rates

    display(plot_replay_rates(replay["replay"], output_dir))  # recorded vs replayed rate per 10 s"""

NOTES = """\
## Reading the results

* **Closed vs open model.** Locust's users wait for each response, so a slow server slows the
  load down with it and the requests that *would* have arrived are never timed (coordinated
  omission). The open-model run keeps arriving on schedule and times from the intended start,
  so its tail includes the queueing; its late and dropped counts say how far behind it fell.
* **The generator shares the machine.** On 2 cores the load generator competes with the API,
  PostgreSQL and Redis. A generator process above ~90 % of a core is flagged: latency measured
  then includes the generator's own delay. `whole machine busy` shows other work on the machine.
* **Database CPU** is every process of the PostgreSQL server (other databases included), so on a
  shared server it is an upper bound for this test's share.
* **Users supported** is a step, not an interpolation: the true limit lies between the last
  passing step and the first failing one; "every step met the SLO" means it is higher still.
* Compare configurations measured in the same run; absolute numbers depend on this machine."""


def _mix_output() -> str:
    """The exact text the request-mix cell prints (executed here from the same source)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(MIX, {})  # noqa: S102 - our own cell source
    return buf.getvalue()


def build() -> nbformat.NotebookNode:
    """The notebook, outputs empty except the checked request-mix cell."""
    params = new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]})
    mix = new_code_cell(MIX, execution_count=1)  # nbval refuses outputs of "unrun" cells
    mix.outputs = [new_output("stream", name="stdout", text=_mix_output())]
    cells = [
        new_markdown_cell(INTRO),
        params,
        new_code_cell(VALIDATE),
        new_markdown_cell("The request mix every simulated user draws from (share of tasks):"),
        mix,
        new_code_cell(SETUP),
        new_code_cell(RUN),
        new_markdown_cell(TABLE_MD),
        new_code_cell(TABLE),
        new_markdown_cell(PLOTS_MD),
        new_code_cell(PLOT_LATENCY),
        new_code_cell(PLOT_STEPS),
        new_code_cell(PLOT_ENDPOINTS),
        new_code_cell(PLOT_RESOURCES),
        new_markdown_cell(REPLAY_MD),
        new_code_cell(REPLAY),
        new_code_cell(REPLAY_PLOT),
        new_markdown_cell(NOTES),
    ]
    return finish(cells, "nb04")


if __name__ == "__main__":
    write(build(), OUT)
