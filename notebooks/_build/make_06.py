"""Generate notebooks/06_index_advice.ipynb (run: python notebooks/_build/make_06.py).

Outputs are left empty, except the one deterministic cell marked NBVAL_CHECK_OUTPUT (the example
workload's statements), whose output is computed here from the same code the cell runs.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_output
from nbgen import finish, write

from psra_bench.workload.params import IndexAdviceParams

OUT = Path(__file__).resolve().parent.parent / "06_index_advice.ipynb"

INTRO = """\
# 06 — Index advice for your own queries

The index audit of notebook 01 judges the spec's indexes against the spec's query patterns. This
notebook advises indexes for **a workload**: the statements a team's application sends, captured
from `pg_stat_statements` (`psra-bench workload capture --out FILE`) or written as a plain `.sql`
file with `$n` placeholders. Without one it advises the small example workload shipped with
psra-bench (`psra_bench/data/example_workload.sql`), which needs an index neither the baseline nor
the spec's set has.

* **candidates** from each query's WHERE, JOIN and ORDER BY columns (PostgreSQL's own parser,
  through pglast), plus the spec's indexes and the existing ones;
* **screening** by planner cost weighted by calls, greedy under a size budget with a write penalty:
  HypoPG's hypothetical indexes where HypoPG is installed (nothing is built), else each candidate
  built for real, one at a time, on this database (psra-bench owns it);
* **verification** (`verify = True`): the current set against the recommended one in interleaved
  ABBA rounds, every SELECT replayed with values drawn from the columns' own statistics — p50 with
  CIs per side, the speedup with its CI and p, the insert cost — and the **planner-predicted vs
  measured** gain per query. The database ends with its indexes as found.

All logic lives in `psra_bench.workload` (`advise`, `write_advice`, the tables in
`psra_bench.workload.tables`); this notebook calls it. Results: `<output_dir>/06_index_advice.json`,
and `<output_dir>/06_index_advice/` holds `advice.json` and the migration pair
`recommended_indexes.up.sql` / `.down.sql` (`CREATE / DROP INDEX CONCURRENTLY`, for `psql -f`)."""

PARAMETERS = IndexAdviceParams.cell()  # the one definition: psra_bench/workload/params.py

VALIDATE = """\
from psra_bench.workload.params import IndexAdviceParams

params = IndexAdviceParams.from_namespace(globals())
workload_queries = params.check()  # the workload is read and parsed before any work
print(f"parameters OK: {len(workload_queries.queries)} queries from {params.workload_path().name} "
      f"({workload_queries.source}, fingerprint {workload_queries.fingerprint}); verify {verify}, "
      f"{rounds} rounds × {iterations} calls per side")"""

EXAMPLE = """\
# NBVAL_CHECK_OUTPUT
from psra_bench.resources import shipped_file
from psra_bench.workload import read_workload
from psra_bench.workload.params import EXAMPLE_WORKLOAD

example = read_workload(shipped_file(EXAMPLE_WORKLOAD))
for q in example.queries:
    print(f"{q.query_id}  {q.calls} × {' '.join(q.query.split())}")"""

SETUP = """\
from psra_bench.workbench import ensure_dataset, notebook_settings

settings = notebook_settings(database)
dataset = ensure_dataset(settings, verdicts, seed, action="notebook 06 (index advice)")
print(dataset)"""

RUN = """\
import time

from psra_bench.workload.tables import EXPERIMENT, advice_of, run_index_advice

t0 = time.perf_counter()
results = run_index_advice(
    settings, params, workload_queries, dataset,
    progress=lambda msg: print(f"{time.perf_counter() - t0:7.1f} s  {msg}", flush=True),
)
advice = advice_of(results)
print(f"saved {output_dir}/{EXPERIMENT}.json after {results['elapsed_seconds']:.1f} s")
for path in results["files"]:
    print("wrote", path)"""

TABLES_MD = """\
## Add, drop, keep — and what was measured

The tables the report files under "Index advice for your workload"
(`psra_bench.workload.tables`): per index its action and reason, the planner's predicted gain and
the measured speedup [CI] of the queries whose plans used it; per query the planner's predicted
speedup beside the measured one; the insert cost of the recommended set; the statements left
out, each with its reason."""

TABLES = """\
from psra_bench.workload.tables import advice_notes, advice_tables

for table in advice_tables(advice):
    print(table.text())
    print()
for note in advice_notes(advice):
    print("-", note)"""

MIGRATION_MD = """\
## The migration pair

Apply it with `psql "$PSRA_DB_DSN" -v ON_ERROR_STOP=1 -f recommended_indexes.up.sql` (and undo it
with the `.down.sql`): `CONCURRENTLY` builds and drops without blocking writes, one statement at a time."""

MIGRATION = """\
from pathlib import Path

print(Path(output_dir, EXPERIMENT, "recommended_indexes.up.sql").read_text())"""

NOTES = """\
## Reading the results

* **Predicted vs measured.** The planner's cost is a model: a predicted 8× may measure 2×, and an
  index the planner prices at nothing may still change a plan. Only a measured speedup whose CI
  excludes 1 (and whose p is below alpha) is evidence.
* **Sub-millisecond queries are noisy** on a shared 2-core machine: a query that an index does not
  touch can come out "slower" or "faster" by chance; its plan (unchanged) says whether the index
  could have mattered.
* **Drops** are proposed only for indexes no workload plan uses and that were not scanned in the
  statistics window; on a freshly seeded database that window is short, so review each drop
  against the statements your application sends outside this workload.
* The notebook's defaults are a small, fast run; `psra-bench report --workload FILE` runs this
  notebook with its `quick` or `full` preset (full: more rounds and calls) on the report's dataset."""


def _example_output() -> str:
    """The exact text the example-workload cell prints (executed here from the same source)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(EXAMPLE, {})  # noqa: S102 - our own cell source
    return buf.getvalue()


def build() -> nbformat.NotebookNode:
    """The notebook, outputs empty except the checked example-workload cell."""
    params = new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]})
    example = new_code_cell(EXAMPLE, execution_count=1)  # nbval refuses outputs of "unrun" cells
    example.outputs = [new_output("stream", name="stdout", text=_example_output())]
    cells = [
        new_markdown_cell(INTRO),
        params,
        new_code_cell(VALIDATE),
        new_markdown_cell("The example workload (used when `workload` is None), one line per query shape:"),
        example,
        new_code_cell(SETUP),
        new_code_cell(RUN),
        new_markdown_cell(TABLES_MD),
        new_code_cell(TABLES),
        new_markdown_cell(MIGRATION_MD),
        new_code_cell(MIGRATION),
        new_markdown_cell(NOTES),
    ]
    return finish(cells, "nb06")


if __name__ == "__main__":
    write(build(), OUT)
