"""Generate notebooks/01_query_latency.ipynb (run: python notebooks/_build/make_01.py).

Outputs are left empty, except the one deterministic cell marked NBVAL_CHECK_OUTPUT (the
query mapping), whose output is computed here from the same code the cell runs.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_output
from nbgen import finish, write

OUT = Path(__file__).resolve().parent.parent / "01_query_latency.ipynb"

INTRO = """\
# 01 — Query latency before and after the index migration

Every query of the spec's **Query Performance** table (section 4), plus the tenant dashboard and
the trade-route report query, timed on the seeded dataset **before** (baseline schema, 20 indexes)
and **after** the migration (46 indexes), in interleaved rounds (ABBA), with real
`migrate_up` / `migrate_down` between the sides — no planner toggles. Per query: p50/p95/p99 with
bootstrap CIs, n, the improvement and a verdict (ratio of medians ≥ factor **and** Mann–Whitney
p < alpha). Also: which indexes each query really used (`idx_scan` deltas), index sizes, and the
write cost of the indexes (insert throughput into `psra_verdicts`, 20 vs 46 indexes).

The method is documented in `psra_bench/latency/experiment.py`; this notebook only calls it and plots.
Results go to `<output_dir>/01_query_latency.json` and `01_query_latency_*.png`."""

PARAMETERS = """\
output_dir: str = "reports/_scratch"  # where the JSON results and PNG plots go
database: str = "psra_bench_report"  # a database NAME on the configured/embedded server (never a DSN)
verdicts: int = 20_000  # dataset scale (rows in psra_verdicts)
seed: int = 42  # dataset seed and parameter-generator seed
iterations: int = 8  # timed calls per query per round
rounds: int = 2  # rounds per side (ABBA: each side switch builds or drops 26 indexes)
warmup: int = 2  # untimed calls per query per round
queries: str = "all"  # "all" or comma-separated query names
write_batches: int = 10  # insert batches per round (0 skips the write cost)
write_batch_rows: int = 200  # rows per insert batch
path: str = "query"  # "query": pooled execute + fetch; "dal": PostgresDAL.fetch_all (adds JSON conversion)
budget_s: float = 10.0  # cap on one query's timed calls per round, in seconds (slow "before" scans at 1M)"""

VALIDATE = """\
from psra_bench.latency.patterns import check_notebook_params

query_names = check_notebook_params(
    verdicts=verdicts, database=database, output_dir=output_dir, queries=queries, iterations=iterations,
    rounds=rounds, warmup=warmup, seed=seed, write_batches=write_batches, write_batch_rows=write_batch_rows,
    path=path, budget_s=budget_s,
)
print(f"parameters OK: {verdicts:,} verdicts, {len(query_names)} queries, {iterations} × {rounds} calls per side")"""

MAPPING = """\
# NBVAL_CHECK_OUTPUT
from psra_bench.latency.patterns import QUERY_PATTERNS

for name, pattern in QUERY_PATTERNS.items():
    print(f"{pattern.label:<46} -> {pattern.dal_method}")"""

SETUP = """\
from psra_bench.workbench import ensure_dataset, notebook_settings

settings = notebook_settings(database)
dataset = ensure_dataset(settings, verdicts, seed)
print(dataset)"""

RUN = """\
import time

from psra_bench.latency.experiment import EXPERIMENT, run_query_latency
from psra_bench.workbench import save_results

t0 = time.perf_counter()
results = run_query_latency(
    settings, queries=query_names, iterations=iterations, rounds=rounds, warmup=warmup, seed=seed,
    write_batches=write_batches, write_batch_rows=write_batch_rows, path=path, budget_s=budget_s,
    dataset=dataset,
    progress=lambda msg: print(f"{time.perf_counter() - t0:7.1f} s  {msg}", flush=True),
)
path = save_results(output_dir, EXPERIMENT, results)
print(f"saved {path} after {results['elapsed_seconds']:.1f} s; migration switches:")
for s in results["migration"]["switches"]:
    print(f"  round {s['round'] or 'restore'}: {s['action']:<4} {s['seconds']:6.1f} s -> {s['index_count']} indexes")"""

TABLE_MD = """\
## Query performance (shaped like the spec's table)

`n` calls per side; before/after in ms; improvement = (before − after) / before of the medians;
the ratio CI is a bootstrap CI of median(after) / median(before); `spec` is the spec's claim."""

TABLE = """\
from psra_bench.latency.tables import format_table

print(format_table(results))"""

USAGE_MD = """\
## Which indexes were used, and what they cost

`idx_scan` deltas of `pg_stat_user_indexes` around the timed calls (stats flushed first), sizes
with `pg_relation_size`, and the plan each query got in each state (EXPLAIN ANALYZE, BUFFERS)."""

USAGE = """\
from psra_bench.latency.tables import format_index_usage, format_write_cost

print(format_index_usage(results))
print()
for name, q in results["queries"].items():
    before, after = q["plans"]["before"], q["plans"]["after"]
    print(f"{name:<28} before: {', '.join(before['index_names']) or 'no index'} ({before['execution_ms']:.2f} ms)"
          f"  |  after: {', '.join(after['index_names']) or 'no index'} ({after['execution_ms']:.2f} ms)")
print()
print(format_write_cost(results))"""

PLOTS_MD = """## Plots (saved as PNG files in `output_dir`)"""

PLOT_P50 = """\
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

out = Path(output_dir)
qs = list(results["queries"].values())
y = np.arange(len(qs))
fig, ax = plt.subplots(figsize=(10, 0.7 * len(qs) + 1.5))
for offset, side, color in ((-0.2, "before", "tab:red"), (0.2, "after", "tab:green")):
    p50 = np.array([q[side]["p50"] for q in qs])
    ci = np.array([q[side]["p50_ci"] for q in qs])
    err = np.vstack([p50 - ci[:, 0], ci[:, 1] - p50])
    ax.barh(y + offset, p50, height=0.4, xerr=err, color=color, alpha=0.8, capsize=3,
            label=f"{side} ({'20' if side == 'before' else '46'} indexes)")
ax.set_yticks(y, [f"{q['label']}\\n(n={q['before']['n']}/{q['after']['n']}, {q['verdict']})" for q in qs],
              fontsize=8)
ax.invert_yaxis()
ax.set_xscale("log")
ax.set_xlabel("p50 latency, ms (log scale; whiskers: 95 % bootstrap CI)")
ax.set_title(f"Query p50 before vs after the migration — {results['fingerprint']['dataset']['scale']:,} verdicts")
fig.legend(loc="lower center", ncol=2, frameon=False)
fig.tight_layout(rect=(0, 0.04, 1, 1))
fig.savefig(out / f"{EXPERIMENT}_p50.png", dpi=110)
plt.close(fig)"""

PLOT_CDF = """\
cols = 4
rows_ = (len(qs) + cols - 1) // cols
fig, axes = plt.subplots(rows_, cols, figsize=(4 * cols, 3 * rows_), squeeze=False)
from matplotlib.ticker import NullFormatter

for ax, q in zip(axes.flat, qs):
    for side, color in (("before", "tab:red"), ("after", "tab:green")):
        x = np.sort(q[side]["samples_ms"])
        ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", color=color,
                label=f"{side}: p50 {q[side]['p50']:.2f}, p99 {q[side]['p99']:.2f} ms")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title(f"{q['name']} (n={q['before']['n']}/{q['after']['n']})", fontsize=9)
    ax.set_xlabel("latency, ms", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
for ax in list(axes.flat)[len(qs):]:
    ax.set_visible(False)
fig.suptitle("Latency CDFs, before (red) vs after (green) the migration")
fig.tight_layout()
fig.savefig(out / f"{EXPERIMENT}_cdf.png", dpi=100)
plt.close(fig)"""

PLOT_ROUNDS = """\
schedule = results["method"]["schedule"]
fig, ax = plt.subplots(figsize=(11, 4))
for q in qs:
    med = q["round_medians"]["p50_ms"]
    ax.plot(range(1, len(med) + 1), med, marker="o", label=q["name"])
for i, side in enumerate(schedule, 1):
    ax.axvspan(i - 0.5, i + 0.5, color="tab:red" if side == "A" else "tab:green", alpha=0.08)
ax.set_yscale("log")
ax.set_xticks(range(1, len(schedule) + 1), [f"{i}\\n{'before' if s == 'A' else 'after'}"
                                             for i, s in enumerate(schedule, 1)])
ax.set_ylabel(f"round p50, ms (n={results['method']['iterations_per_round']} per round)")
ax.set_title(f"Round medians in execution order ({schedule}): drift shows up here")
ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
fig.tight_layout()
fig.savefig(out / f"{EXPERIMENT}_rounds.png", dpi=100)
plt.close(fig)"""

PLOT_WRITE = """\
wc = results["write_cost"]
if wc:
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, key in enumerate(("before", "after")):
        side = wc[key]
        lo, hi = side["median_rows_per_s_ci"]
        med = side["median_rows_per_s"]
        ax.bar(i, med, yerr=[[med - lo], [hi - med]], capsize=5, alpha=0.7,
               color="tab:red" if key == "before" else "tab:green")
        ax.scatter(np.full(len(side["per_batch_rows_per_s"]), i), side["per_batch_rows_per_s"], color="k", s=10)
    ax.set_xticks([0, 1], [f"{wc['index_counts'][k]} indexes\\n(n={wc['batches'][k]} batches)"
                           for k in ("before", "after")])
    ax.set_ylabel(f"rows/s (batches of {wc['rows_per_batch']}; median, 95 % CI, each batch)")
    lo, hi = wc["ratio_ci"]
    ax.set_title(f"Insert throughput into psra_verdicts\\ninserts take {wc['ratio']:.2f}× as long "
                 f"(95 % CI {lo:.2f}–{hi:.2f}; {wc['verdict']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / f"{EXPERIMENT}_write_cost.png", dpi=100)
    plt.close(fig)"""

PLOT_INDEXES = """\
new = sorted((u for u in results["index_usage"] if u["new"]), key=lambda u: -u["size_bytes"])
fig, ax = plt.subplots(figsize=(10, 0.3 * len(new) + 1.5))
ax.barh([u["index"] for u in new], [u["size_bytes"] / 2**20 for u in new],
        color=["tab:blue" if u["scans_after"] else "tab:gray" for u in new])
for i, u in enumerate(new):
    ax.text(u["size_bytes"] / 2**20, i, f"  {u['scans_after']} scans", va="center", fontsize=7)
ax.invert_yaxis()
ax.tick_params(axis="y", labelsize=7)
ax.set_xlabel("size, MB (pg_relation_size)")
n_calls = results["method"]["max_n_per_side"]
ax.set_title(f"The 26 new indexes: size, and idx_scan in the 'after' rounds (gray: unused; ≤ {n_calls} calls/query)")
fig.tight_layout()
fig.savefig(out / f"{EXPERIMENT}_indexes.png", dpi=100)
plt.close(fig)
print(sorted(p.name for p in out.glob(f"{EXPERIMENT}_*.png")))"""

NOTES = """\
## Reading the results

* A query counts as faster only when the medians differ by the factor **and** the Mann–Whitney
  test agrees; eight queries are eight tests, so at alpha = 0.05 an occasional false positive is
  expected — the CIs and the round medians show whether a verdict is solid.
* The before/after plans and the `idx_scan` deltas tell *why*: a query whose plan did not change
  cannot have gained from the migration, and a new index with zero scans only costs space and
  write throughput.
* Latencies are one call at a time on one pooled connection of a shared 2-core machine (`path`
  says whether the DAL's JSON conversion is included), not the spec's unknown setup; compare
  ratios, not absolute milliseconds."""


def _mapping_output() -> str:
    """The exact text the mapping cell prints (executed here from the same source)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(MAPPING, {})  # noqa: S102 - our own cell source
    return buf.getvalue()


def build() -> nbformat.NotebookNode:
    """The notebook, outputs empty except the checked mapping cell."""
    params = new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]})
    mapping = new_code_cell(MAPPING, execution_count=1)  # nbval refuses outputs of "unrun" cells
    mapping.outputs = [new_output("stream", name="stdout", text=_mapping_output())]
    cells = [
        new_markdown_cell(INTRO),
        params,
        new_code_cell(VALIDATE),
        new_markdown_cell("Each measured query, the spec row it stands for, and the DAL method it runs:"),
        mapping,
        new_code_cell(SETUP),
        new_code_cell(RUN),
        new_markdown_cell(TABLE_MD),
        new_code_cell(TABLE),
        new_markdown_cell(USAGE_MD),
        new_code_cell(USAGE),
        new_markdown_cell(PLOTS_MD),
        new_code_cell(PLOT_P50),
        new_code_cell(PLOT_CDF),
        new_code_cell(PLOT_ROUNDS),
        new_code_cell(PLOT_WRITE),
        new_code_cell(PLOT_INDEXES),
        new_markdown_cell(NOTES),
    ]
    return finish(cells, "nb01")


if __name__ == "__main__":
    write(build(), OUT)
