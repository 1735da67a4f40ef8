"""Notebook 06 and the report's "Index advice for your workload": tables, the section, history keyed by workload.

One seeded database psra-bench owns; notebook 06's own call (:func:`run_index_advice`) advises the
example workload shipped with psra-bench (plus a statement the parser rejects) with verification,
and a one-query workload without it. The report is assembled from run folders holding those real
results; history compares a run only with runs of the same workload fingerprint.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import papermill
import pytest
from click.testing import CliRunner

from psra_bench.cli import cli
from psra_bench.exceptions import InputError
from psra_bench.infra import postgres as db
from psra_bench.report.assemble import assemble_report, previous_comparable, read_history
from psra_bench.report.runner import (
    ADVICE_NOTEBOOK,
    NOTEBOOKS,
    ReportParams,
    notebook_params,
    notebooks_to_run,
    run_report,
)
from psra_bench.settings import Settings
from psra_bench.workbench import ensure_dataset
from psra_bench.workload.model import Workload, WorkloadQuery, read_workload
from psra_bench.workload.params import IndexAdviceParams
from psra_bench.workload.tables import (
    EXPERIMENT,
    IndexAdviceResult,
    advice_notes,
    advice_of,
    advice_tables,
    index_table,
    insert_cost_table,
    predicted_vs_measured_table,
    run_index_advice,
    skipped_table,
)
from tests.helpers import cli_env

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / f"{ADVICE_NOTEBOOK}.ipynb"
#: The index the example workload needs: neither the baseline nor the spec's 26 has it.
NEEDED = "idx_psra_verdicts_status_created_at"
BROKEN = "SELEC count(*) FRO psra_verdicts"
VERDICTS, SEED, TENANTS = 20_000, 5, 20


@pytest.fixture(scope="module")
def live(make_seeded_database: Callable[..., str], settings: Settings) -> Any:
    """Settings pointed at a seeded database psra-bench owns (analyzed, so pg_stats has values to draw)."""
    dsn = make_seeded_database(VERDICTS, seed=SEED, tenants=TENANTS)
    with db.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")
    return settings.replace(db_dsn=dsn)


def _advise(live: Any, out: Path, queries: Workload, **changes: Any) -> IndexAdviceResult:
    """Notebook 06's call, on the module's database, into ``out``."""
    params = IndexAdviceParams.NOTEBOOK.replace(output_dir=str(out), verdicts=VERDICTS, seed=SEED, **changes)
    dataset = ensure_dataset(live, VERDICTS, SEED, TENANTS, action="test")
    return run_index_advice(live, params, queries, dataset)


@pytest.fixture(scope="module")
def verified(live: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, IndexAdviceResult]:
    """The example workload plus a statement the parser rejects, advised and measured: (run folder, result)."""
    example = read_workload(IndexAdviceParams.NOTEBOOK.workload_path())
    broken = WorkloadQuery("f00dfeed", BROKEN, 2, None, None, None)
    workload = dataclasses.replace(example, queries=(*example.queries, broken))
    out = tmp_path_factory.mktemp("run-verified")
    return out, _advise(live, out, workload)


@pytest.fixture(scope="module")
def unverified(live: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, IndexAdviceResult]:
    """A one-query .sql workload advised by the planner only (verify False): (run folder, result)."""
    out = tmp_path_factory.mktemp("run-unverified")
    sql = out / "one.sql"
    sql.write_text("SELECT count(*) FROM psra_verdicts WHERE status = $1 AND created_at >= $2;\n")
    return out, _advise(live, out, read_workload(sql), workload=str(sql), verify=False)


def test_tables_of_a_measured_advice(verified: tuple[Path, IndexAdviceResult]) -> None:
    """Add / drop / keep with reasons, predicted vs measured per query, the insert cost, the skipped statement."""
    out, result = verified
    advice = advice_of(result)
    assert result["workload_fingerprint"] == advice.fingerprint and result["fingerprint"]["machine_key"]
    saved = json.loads((out / f"{EXPERIMENT}.json").read_text())
    printed = [t.to_dict() for t in advice_tables(advice)]
    assert [t.to_dict() for t in advice_tables(advice_of(saved))] == printed  # what the report reads back
    assert json.loads((out / EXPERIMENT / "advice.json").read_text()) == saved["advice"]
    assert "CONCURRENTLY" in (out / EXPERIMENT / "recommended_indexes.up.sql").read_text()

    rows = {r[1]: r for r in index_table(advice).rows}
    needed = rows[NEEDED]
    assert needed[0] == "add" and needed[4].endswith("%") and "screening pick" in needed[8]
    measured_adds = [r[6] for r in rows.values() if r[0] == "add" and r[6] != "–"]
    assert measured_adds and all("×" in m and "[" in m for m in measured_adds), rows  # speedups with their CI
    assert {r[0] for r in rows.values()} <= {"add", "drop", "keep"}
    assert all(r[8] for r in rows.values()), "every index has its reason"
    keep_pkey = rows["psra_verdicts_pkey"]
    assert keep_pkey[0] == "keep" and "constraint" in keep_pkey[8]

    pvm = predicted_vs_measured_table(advice)
    assert pvm is not None
    qid = next(q["query_id"] for q in advice.queries if "status = $1 AND created_at >= $2" in q["query"])
    status_query = next(r for r in pvm.rows if r[0] == qid)
    predicted, measured, verdict = status_query[5], status_query[8], status_query[10]
    assert predicted.endswith("×") and float(predicted.rstrip("×")) > 1, status_query
    assert "[" in measured and verdict == "faster", status_query  # the needed index, measured faster
    assert len(pvm.rows) == sum(q["status"] == "planned" for q in advice.queries)

    insert = insert_cost_table(advice)
    assert insert is not None and [r[0] for r in insert.rows] == ["current", "recommended"]
    assert "as long with the recommended set" in insert.note

    skipped = skipped_table(advice)
    assert skipped is not None
    (broken,) = [r for r in skipped.rows if r[0] == "f00dfeed"]
    assert "parser rejects" in broken[2]
    assert [t.title for t in advice_tables(advice)] == [t.title for t in (index_table(advice), pvm, insert, skipped)]
    assert any("HypoPG" in n for n in advice_notes(advice))


def test_an_unverified_advice_is_the_planners_only(unverified: tuple[Path, IndexAdviceResult]) -> None:
    """verify False: predictions are filled, measured cells are '–', no insert cost, the notes say so."""
    advice = advice_of(unverified[1])
    assert advice.verification is None and advice.workload_source == "sql-file"
    pvm = predicted_vs_measured_table(advice)
    assert pvm is not None and len(pvm.rows) == 1
    row = pvm.rows[0]
    assert row[5].endswith("×") and row[6:] == ["–", "–", "–", "–", "–"]
    assert insert_cost_table(advice) is None and skipped_table(advice) is None
    assert any("not verified" in n for n in advice_notes(advice))
    assert [r[1] for r in index_table(advice).rows if r[0] == "add"] == [NEEDED]


def _run_folder(root: Path, name: str, source: Path) -> Path:
    """A run folder holding a copy of notebook 06's saved result."""
    run = root / name
    run.mkdir()
    shutil.copy(source / f"{EXPERIMENT}.json", run / f"{EXPERIMENT}.json")
    return run


def test_report_files_the_advice_and_compares_runs_of_the_same_workload_only(
    verified: tuple[Path, IndexAdviceResult], unverified: tuple[Path, IndexAdviceResult], tmp_path: Path
) -> None:
    """The section and its finding; history: run 2 is compared with run 1 (same workload), run 3 with none."""
    reports = tmp_path / "reports"
    reports.mkdir()
    first = assemble_report(_run_folder(reports, "run-1", verified[0]), "run-1", reports_dir=reports, quick=True)
    fingerprint = verified[1]["workload_fingerprint"]
    assert first["workload"] == fingerprint and first["previous_run"] is None
    assert first["machine_key"] == verified[1]["fingerprint"]["machine_key"]
    titles = [t["title"] for t in first["tables"] if t["section"] == "Index advice for your workload"]
    assert (
        titles[0].startswith("Index advice for workload") and "Planner-predicted vs measured gain, per query" in titles
    )
    markdown = (reports / "run-1" / "report.md").read_text()
    assert "## Index advice for your workload" in markdown and NEEDED in markdown
    assert f"**workload**: {fingerprint}" in markdown
    finding = next(f for f in first["summary"]["findings"] if f.startswith("Index advice for workload"))
    assert "replayed queries were significantly faster" in finding and "inserts take" in finding
    assert any("recommended_indexes.up.sql" in r for r in first["summary"]["recommendations"]["do"])

    second = assemble_report(_run_folder(reports, "run-2", verified[0]), "run-2", reports_dir=reports)
    assert second["previous_run"] == "run-1"

    third = assemble_report(_run_folder(reports, "run-3", unverified[0]), "run-3", reports_dir=reports)
    assert third["workload"] == unverified[1]["workload_fingerprint"] != fingerprint
    assert third["previous_run"] is None, "a run of another workload is not comparable"
    assert any("not measured" in f for f in third["summary"]["findings"])
    history = read_history(reports / "history.jsonl")
    assert [(e["run_id"], e["workload"]) for e in history] == [
        ("run-1", fingerprint),
        ("run-2", fingerprint),
        ("run-3", third["workload"]),
    ]


def test_previous_comparable_keys_runs_by_workload_fingerprint() -> None:
    """Same machine and scale: a workload run matches its own workload only; runs without one (old ones too) match."""
    entries: list[dict[str, Any]] = [
        {"run_id": "old", "machine_key": "m", "scale": 5},  # before workloads existed: no key at all
        {"run_id": "w1", "machine_key": "m", "scale": 5, "workload": "aaaa"},
        {"run_id": "plain", "machine_key": "m", "scale": 5, "workload": None},
        {"run_id": "w2", "machine_key": "m", "scale": 5, "workload": "bbbb"},
        {"run_id": "w1-other-scale", "machine_key": "m", "scale": 6, "workload": "aaaa"},
    ]

    def previous(workload: str | None, scale: int = 5) -> str | None:
        found = previous_comparable(entries, "m", scale, exclude_run=None, workload=workload)
        return None if found is None else str(found["run_id"])

    assert previous("aaaa") == "w1" and previous("bbbb") == "w2" and previous("cccc") is None
    assert previous(None) == "plain"
    assert previous("aaaa", scale=6) == "w1-other-scale" and previous(None, scale=6) is None
    assert previous_comparable(entries[:1], "m", 5) is not None  # a run without workload still matches old runs


def test_the_report_runs_06_only_with_a_workload(tmp_path: Path) -> None:
    """No workload: the notebooks of today. A workload: 06 after 04, before 05, verified, the path made absolute."""
    today = [*NOTEBOOKS]
    assert notebooks_to_run(ReportParams.QUICK) == today and notebooks_to_run(ReportParams.FULL) == today
    sql = tmp_path / "w.sql"
    sql.write_text("SELECT 1 FROM psra_verdicts WHERE status = $1;\n")
    params = ReportParams.QUICK.replace(workload=sql, sections=["01_query_latency"])
    assert notebooks_to_run(params) == ["01_query_latency", ADVICE_NOTEBOOK, "05_report"]
    for quick in (True, False):
        nb = notebook_params(ADVICE_NOTEBOOK, params.replace(quick=quick), tmp_path, "run-x")
        assert isinstance(nb, IndexAdviceParams) and nb.verify and nb.workload == str(sql.resolve())
        assert nb.papermill()["verdicts"] == params.verdicts and nb.check().fingerprint
        assert nb.rounds == (IndexAdviceParams.QUICK if quick else IndexAdviceParams.FULL).rounds


def test_a_bad_workload_is_refused_before_any_work(settings: Settings, tmp_path: Path) -> None:
    """run_report and `psra-bench report --workload` name the file in one sentence; no run folder is left."""
    reports = tmp_path / "reports"
    missing = tmp_path / "nope.sql"
    with pytest.raises(InputError, match="nope.sql"):
        run_report(ReportParams.QUICK.replace(workload=str(missing), reports_dir=str(reports)))
    assert list(reports.iterdir()) == []
    env = cli_env(settings, home=tmp_path / "home")
    result = CliRunner().invoke(
        cli, ["report", "--quick", "--workload", str(missing), "--reports-dir", str(reports)], env=env
    )
    assert result.exit_code == 2 and result.output.startswith("error: ") and "nope.sql" in result.output
    assert result.output.count("\n") == 1 and list(reports.iterdir()) == []


def test_notebook_06_parameters_are_its_model() -> None:
    """papermill reads notebook 06's parameters with their types and help; the defaults pass their own checks."""
    found = papermill.inspect_notebook(str(NOTEBOOK))
    assert list(found) == IndexAdviceParams.cell_fields()
    for name in IndexAdviceParams.cell_fields():
        assert found[name]["inferred_type_name"] not in ("None", "Unknown type"), name
        assert found[name]["help"] == IndexAdviceParams.help(name)
    namespace: dict[str, object] = {}
    exec(IndexAdviceParams.cell(), namespace)  # the parameters cell, run as the kernel runs it
    params = IndexAdviceParams.from_namespace(namespace)
    assert params == IndexAdviceParams() == IndexAdviceParams.NOTEBOOK
    assert params.check().source == "sql-file"
    advice = params.advice_params()
    assert (advice.rounds, advice.iterations, advice.seed) == (params.rounds, params.iterations, params.seed)
