"""`report --trace`: TTL tuning on the team's own trace beside the synthetic one, in the same report.

Notebook 03 runs twice for real (papermill, the report's kernels): on the synthetic trace into the run
folder and on an imported trace into ``<run>/trace/``; the assembled report then carries the side-by-side
table. 03 is a simulation only (no servers), so this stays a few seconds.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import papermill
import pytest

from psra_bench.exceptions import ParameterError
from psra_bench.report.assemble import assemble_report
from psra_bench.report.runner import TRACE_RUN, ReportParams, notebook_params, notebook_path, notebooks_to_run
from psra_bench.trace import import_file, write_trace


def _trace_file(tmp_path: Path) -> Path:
    """A small imported trace: skewed reads of HS codes and rules over an hour, a few rule changes."""
    rng = random.Random(7)
    rows = []
    for i in range(3000):
        t = i * 1.2
        if rng.random() < 0.6:
            rows.append(
                {"time": t, "entity": "hs_codes", "op": "read", "key": f"hs:code:{int(rng.paretovariate(1.2))}"}
            )
        else:
            rows.append({"time": t, "entity": "rules", "op": "read", "key": f"rule:id:R{int(rng.paretovariate(1.5))}"})
        if i % 700 == 699:
            rows.append({"time": t + 0.5, "entity": "rules", "op": "write", "key": "*"})
    (tmp_path / "capture.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cols, account = import_file(tmp_path / "capture.jsonl", "jsonl")
    write_trace(tmp_path / "trace.npz", cols, account)
    return tmp_path / "trace.npz"


def test_the_report_runs_03_again_on_the_trace_and_shows_both_side_by_side(tmp_path: Path) -> None:
    trace = _trace_file(tmp_path)
    reports = tmp_path / "reports"
    reports.mkdir()
    params = ReportParams.QUICK.replace(sections=("03_ttl_tuning",), trace=str(trace), reports_dir=str(reports),
                                        cache_requests=1500)  # fmt: skip
    assert notebooks_to_run(params) == ["03_ttl_tuning", TRACE_RUN, "05_report"]
    assert notebooks_to_run(params.replace(trace=None)) == ["03_ttl_tuning", "05_report"]
    run_dir = reports / "run-1"
    run_dir.mkdir()
    for name in ("03_ttl_tuning", TRACE_RUN):
        nb = notebook_params(name, params, run_dir, "run-1")
        out = Path(nb.output_dir)
        out.mkdir(exist_ok=True)
        papermill.execute_notebook(str(notebook_path("03_ttl_tuning")), str(out / "03_ttl_tuning.ipynb"),
                                   parameters=nb.papermill(), kernel_name="python3", progress_bar=False)  # fmt: skip
    assert (run_dir / "trace" / "03_ttl_tuning.json").exists() and (run_dir / "03_ttl_tuning.json").exists()
    results = assemble_report(run_dir, "run-1", reports_dir=reports, quick=True)
    tables = [t for t in results["tables"] if t["title"].startswith("Synthetic vs your trace")]
    assert len(tables) == 1 and {r[0] for r in tables[0]["rows"]} >= {"hs_codes", "rules"}
    assert any(t["section"] == "TTL tuning on your cache traffic" and t is not tables[0] for t in results["tables"])
    assert "Synthetic vs your trace" in (run_dir / "report.md").read_text()


def test_a_missing_trace_is_refused_before_any_work(tmp_path: Path) -> None:
    params = ReportParams.QUICK.replace(trace=str(tmp_path / "nope.npz"), reports_dir=str(tmp_path))
    with pytest.raises(ParameterError, match="nope.npz"):
        notebook_params(TRACE_RUN, params, tmp_path, "run").check()
