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

All logic lives in `psra_bench.load.experiment` (and `hdr`, `openload`, `procmon`, `load_report`); this
notebook calls it and plots. Results: `<output_dir>/04_load_test.json` and `04_load_test_*.png`."""

PARAMETERS = """\
output_dir: str = "reports/_scratch"  # where the JSON results and PNG plots go
database: str = "psra_bench_report"  # a database NAME on the configured/embedded server (never a DSN)
verdicts: int = 2_000  # dataset scale (rows in psra_verdicts)
seed: int = 42  # dataset seed and request-mix seed
users: int = 2  # headline closed-model users (the step load brackets it)
spawn_rate: float = 4.0  # Locust users started per second
duration: float = 1.5  # seconds measured per step, and per open-model run
arrival_rate: float = 5.0  # open model: requests per second
configurations: str = "baseline,both"  # comma-separated: baseline, indexes, cache, both — or "all"
slo_p95_ms: float = 500.0  # p95 SLO for "concurrent users supported"
quick: bool = True  # two steps (users, 2 × users) instead of five"""

VALIDATE = """\
from psra_bench.load.results import check_notebook_params

config_names = check_notebook_params(
    users=users, spawn_rate=spawn_rate, duration=duration, arrival_rate=arrival_rate, slo_p95_ms=slo_p95_ms,
    configurations=configurations, verdicts=verdicts, seed=seed, quick=quick,
)
print(f"parameters OK: {', '.join(config_names)}; {users} users, {duration:g} s per step, "
      f"{arrival_rate:g} req/s open model, SLO p95 <= {slo_p95_ms:g} ms")"""

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
from psra_bench.load.results import format_table

print(format_table(results["table"]))
for row in results["table"]:
    if row["note"]:
        print(f"* {row['metric']}: {row['note']}")"""

PLOTS_MD = """## Plots (saved as PNG files in `output_dir`)"""

PLOT_LATENCY = """\
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

out = Path(output_dir)
configs = results["configurations"]
names = list(configs)


def overall(name, model):
    \"\"\"Overall latency summary of a configuration: headline closed step or open model.\"\"\"
    if model == "open":
        return configs[name]["open"]["latency"]["overall"]
    return (configs[name]["closed"] or {}).get("overall", {})


fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
titles = {"closed": f"closed model (Locust, {users} users)",
          "open": f"open model ({arrival_rate:g} req/s, from intended start)"}
x = np.arange(len(names))
for ax, model in zip(axes, ("closed", "open")):
    for i, q in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        ax.bar(x + (i - 1) * 0.27, [overall(n, model).get(q) or 0.0 for n in names], width=0.27,
               label=q.replace("_ms", ""))
    ax.set_xticks(x, [f"{n}\\n(n={overall(n, model).get('n', 0)})" for n in names])
    ax.set_yscale("log")
    ax.set_title(titles[model])
    ax.legend()
axes[0].set_ylabel("latency, ms (HdrHistogram, log scale)")
fig.suptitle(f"API latency percentiles per configuration — {dataset.verdicts:,} verdicts")
fig.tight_layout()
fig.savefig(out / "04_load_test_latency.png", dpi=100)
plt.close(fig)"""

PLOT_STEPS = """\
fig, ax = plt.subplots(figsize=(8, 4.5))
for n in names:
    steps = configs[n]["steps"]
    xs = [s["users"] for s in steps]
    p95 = [s["overall"]["p95_ms"] or np.nan for s in steps]
    p50 = [s["overall"]["p50_ms"] or np.nan for s in steps]
    line, = ax.plot(xs, p95, marker="o", label=f"{n} p95 (supported: {configs[n]['users_supported']['users_supported']})")
    ax.plot(xs, p50, marker=".", linestyle=":", color=line.get_color(), label=f"{n} p50")
    for s, y in zip(steps, p95):
        ax.annotate(f"n={s['overall']['n']}", (s["users"], y), fontsize=7, textcoords="offset points", xytext=(3, 3))
        if (s.get("generator") or {}).get("saturated"):
            ax.scatter([s["users"]], [y], marker="x", s=80, color="k")
ax.axhline(slo_p95_ms, color="tab:red", linestyle="--", label=f"SLO p95 {slo_p95_ms:g} ms")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("concurrent users (step load; x = load generator saturated)")
ax.set_ylabel("latency, ms")
ax.set_title("Step load: p95 against users, per configuration")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(out / "04_load_test_steps.png", dpi=100)
plt.close(fig)"""

PLOT_ENDPOINTS = """\
first, last = names[0], names[-1]


def endpoints(name):
    \"\"\"Per-endpoint summaries of a configuration's headline step.\"\"\"
    return (configs[name]["closed"] or {}).get("endpoints", {})


eps = sorted(set(endpoints(first)) | set(endpoints(last)))
fig, ax = plt.subplots(figsize=(10, 0.45 * len(eps) + 1.5))
y = np.arange(len(eps))
for off, n, color in ((-0.2, first, "tab:red"), (0.2, last, "tab:green")):
    e = endpoints(n)
    p50 = np.array([e.get(k, {}).get("p50_ms") or np.nan for k in eps], dtype=float)
    p95 = np.array([e.get(k, {}).get("p95_ms") or np.nan for k in eps], dtype=float)
    ax.barh(y + off, p95, height=0.4, color=color, alpha=0.5, label=f"{n} p95")
    ax.scatter(p50, y + off, color=color, marker="|", s=120, label=f"{n} p50")
labels = [f"{k}\\n(n={endpoints(first).get(k, {}).get('n', 0)}/{endpoints(last).get(k, {}).get('n', 0)})" for k in eps]
ax.set_yticks(y, labels, fontsize=7)
ax.invert_yaxis()
ax.set_xscale("log")
ax.set_xlabel("latency, ms (bar: p95, tick: p50)")
ax.set_title(f"Per endpoint, headline step: {first} vs {last}")
ax.legend(fontsize=7, loc="lower right")
fig.tight_layout()
fig.savefig(out / "04_load_test_endpoints.png", dpi=100)
plt.close(fig)"""

PLOT_RESOURCES = """\
def resources(name):
    \"\"\"CPU/memory summary of a configuration's headline step.\"\"\"
    return (configs[name]["closed"] or {}).get("resources", {})


fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for i, g in enumerate(("postgres", "api", "redis", "generator")):
    res = [resources(n).get("groups", {}).get(g) or {} for n in names]
    axes[0].bar(x + (i - 1.5) * 0.2, [r.get("cpu_cores") or 0 for r in res], width=0.2, label=g)
    mem = [(r.get("pss_mb_max") if g == "postgres" else None) or r.get("rss_mb_max") or 0 for r in res]
    axes[1].bar(x + (i - 1.5) * 0.2, mem, width=0.2, label=g + (" (PSS)" if g == "postgres" else " (RSS)"))
axes[0].scatter(x, [resources(n).get("machine_busy_cores") or 0 for n in names], color="k", marker="_", s=400,
                label="whole machine busy")
for ax in axes:
    ax.set_xticks(x, names)
    ax.legend(fontsize=7)
axes[0].set_ylabel(f"CPU, cores (machine: {resources(names[0]).get('cpus', '?')})")
axes[0].set_title(f"CPU during the headline step ({resources(names[0]).get('samples', 0)} samples)")
axes[1].set_ylabel("memory, MB (max over the step)")
axes[1].set_title("Memory during the headline step")
fig.tight_layout()
fig.savefig(out / "04_load_test_resources.png", dpi=100)
plt.close(fig)
print(sorted(p.name for p in out.glob("04_load_test_*.png")))"""

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
        new_markdown_cell(NOTES),
    ]
    return finish(cells, "nb04")


if __name__ == "__main__":
    write(build(), OUT)
