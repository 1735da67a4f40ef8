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

from psra_bench.params import QueryLatencyParams

OUT = Path(__file__).resolve().parent.parent / "01_query_latency.ipynb"

INTRO = """\
# 01 — Query latency before and after the index migration

Every query of the spec's **Query Performance** table (section 4), plus the tenant dashboard and
the trade-route report query, timed on the seeded dataset **before** (baseline schema, 20 indexes)
and **after** the migration (46 indexes), in interleaved rounds (ABBA), with real
`migrate_up` / `migrate_down` between the sides — no planner toggles. Per query: p50/p95/p99 with
bootstrap CIs, n, the improvement and a verdict (ratio of medians ≥ factor **and** Mann–Whitney
p < alpha). Also: which indexes each query really used (`idx_scan` deltas), index sizes, and the
write cost of the indexes (insert throughput into `psra_verdicts`, 20 vs 46 indexes), an audit of
every index (keep / drop / review, with its reason) and, as a third side, the audit's recommended
set measured against both.

The method is documented in `psra_bench/latency/experiment.py`, the plots are drawn by
`psra_bench/latency/plots.py`; this notebook only calls them.
Results go to `<output_dir>/01_query_latency.json` and `01_query_latency_*.png`."""

PARAMETERS = QueryLatencyParams.cell()  # the one definition: psra_bench/params.py

VALIDATE = """\
from psra_bench.params import QueryLatencyParams

query_names = QueryLatencyParams.from_namespace(globals()).check()
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
    recommend=recommend, dataset=dataset,
    progress=lambda msg: print(f"{time.perf_counter() - t0:7.1f} s  {msg}", flush=True),
)
path = save_results(output_dir, EXPERIMENT, results)
print(f"saved {path} after {results['elapsed_seconds']:.1f} s; migration switches:")
for s in results["migration"]["switches"]:
    print(f"  round {s['round'] or 'restore'}: {s['action']:<4} {s['seconds']:6.1f} s -> {s['index_count']} indexes")"""

TABLE_MD = """\
## Query performance (shaped like the spec's table)

The same table the report shows (`psra_bench.latency.tables.query_table`): `n` calls per side;
p50 with its bootstrap CI in ms; the speedup is median(before) / median(after) with its CI; the
spec's claim beside it."""

TABLE = """\
from psra_bench.latency.tables import query_table

print(query_table(results).text())"""

USAGE_MD = """\
## Which indexes were used, and what they cost

`idx_scan` deltas of `pg_stat_user_indexes` around the timed calls (stats flushed first), sizes
with `pg_relation_size`, and the plan each query got in each state (EXPLAIN ANALYZE, BUFFERS)."""

USAGE = """\
from psra_bench.latency.tables import index_size_table, index_usage_table, write_cost_table
from psra_bench.measure.format import ms

print(index_usage_table(results).text())
print()
for name, q in results["queries"].items():
    before, after = q["plans"]["before"], q["plans"]["after"]
    print(f"{name:<28} before: {', '.join(before['index_names']) or 'no index'} ({ms(before['execution_ms'])} ms)"
          f"  |  after: {', '.join(after['index_names']) or 'no index'} ({ms(after['execution_ms'])} ms)")
for table in (write_cost_table(results), index_size_table(results)):
    if table is not None:  # None: not measured (write_batches = 0)
        print()
        print(table.text())"""

AUDIT_MD = """\
## Index audit: keep, drop or review each of the 46 indexes

Per index: its size and build time, the measured patterns whose plans used it and its `idx_scan`
during their timed calls, whether an index that stays covers its columns, whether its table is
tiny — and a recommendation with its reason (the rules are in `psra_bench/latency/audit.py`).
With `recommend = True` the audit is made after the first baseline and spec rounds, and the
recommended set (baseline + the `keep` indexes) is then measured as a third side."""

AUDIT = """\
from psra_bench.latency.tables import audit_table

print(audit_table(results).text())"""

THREE_WAY_MD = """\
## The recommended set, measured: baseline / spec / recommended

Is the recommended set as fast as the spec's 46 indexes for every query, and what does it save
in size and insert throughput? The migration pair that applies it is written next to the results
(`recommended_indexes.up.sql` / `.down.sql`, runnable with `psql -f`)."""

THREE_WAY = """\
from pathlib import Path

from psra_bench.latency.audit import write_recommended_migration
from psra_bench.latency.tables import three_way_cost_table, three_way_table

if results["recommended"]:
    print(three_way_table(results).text())
    print()
    print(three_way_cost_table(results).text())
else:
    print("the recommended set was not measured (recommend = False)")
for written in write_recommended_migration(output_dir, results, run_id=Path(output_dir).name):
    print("wrote", written)"""

PLOTS_MD = """\
## Plots (saved as PNG files in `output_dir`)

Drawn by `psra_bench.latency.plots`: each call saves `01_query_latency_<name>.png` (the files the
report embeds) and returns the figure shown under it."""

PLOT_P50 = """\
%matplotlib inline
# (inline: the figures the plot functions return are shown as images)
from psra_bench.latency.plots import plot_cdf, plot_indexes, plot_p50, plot_rounds, plot_write_cost

plot_p50(results, output_dir)"""

PLOT_CDF = """plot_cdf(results, output_dir)"""

PLOT_ROUNDS = """plot_rounds(results, output_dir)"""

PLOT_WRITE = """plot_write_cost(results, output_dir)  # None (no figure) when write_batches = 0"""

PLOT_INDEXES = """plot_indexes(results, output_dir)"""

PLOT_THREE_WAY = """\
from psra_bench.latency.plots import plot_three_way

plot_three_way(results, output_dir)  # None (no figure) when recommend = False"""

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
        new_markdown_cell(AUDIT_MD),
        new_code_cell(AUDIT),
        new_markdown_cell(THREE_WAY_MD),
        new_code_cell(THREE_WAY),
        new_markdown_cell(PLOTS_MD),
        new_code_cell(PLOT_P50),
        new_code_cell(PLOT_CDF),
        new_code_cell(PLOT_ROUNDS),
        new_code_cell(PLOT_WRITE),
        new_code_cell(PLOT_INDEXES),
        new_code_cell(PLOT_THREE_WAY),
        new_markdown_cell(NOTES),
    ]
    return finish(cells, "nb01")


if __name__ == "__main__":
    write(build(), OUT)
