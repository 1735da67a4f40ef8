"""Notebook parameters have one definition (psra_bench.params): the cell, the checks and the runner derive from it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import papermill
import pytest

from psra_bench.exceptions import ParameterError
from psra_bench.params import NOTEBOOK_PARAMS, QueryLatencyParams, TtlTuningParams
from psra_bench.report.runner import NOTEBOOKS, ReportParams, notebook_params

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def test_every_notebook_has_one_parameter_class() -> None:
    assert list(NOTEBOOK_PARAMS) == list(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_papermill_reads_every_parameter_with_its_type_and_help(name: str) -> None:
    cls = NOTEBOOK_PARAMS[name]
    found = papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"))
    assert list(found) == [f.name for f in dataclasses.fields(cls)]
    for f in dataclasses.fields(cls):
        assert found[f.name]["inferred_type_name"] not in ("None", "Unknown type"), f.name
        assert found[f.name]["help"] == f.metadata["help"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_defaults_pass_their_own_checks(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(NOTEBOOK_PARAMS[name].cell(), namespace)  # the parameters cell, run as the kernel runs it
    params = NOTEBOOK_PARAMS[name].from_namespace(namespace)
    assert params == NOTEBOOK_PARAMS[name]()
    params.check()


@pytest.mark.parametrize("quick", [False, True])
def test_the_report_fills_every_notebook_from_its_own_parameters(quick: bool, tmp_path: Path) -> None:
    report = ReportParams.quick_defaults() if quick else ReportParams()
    for name in NOTEBOOKS:
        nb = notebook_params(name, report, tmp_path, "run-1")
        nb.check()
        assert nb.papermill()["output_dir"] == str(tmp_path) and nb.papermill()["verdicts"] == report.verdicts
    assert notebook_params("04_load_test", report, tmp_path, "run-1").papermill()["quick"] is quick


def test_a_bad_value_is_named_and_a_missing_one_too() -> None:
    with pytest.raises(ParameterError, match="rounds=0"):
        dataclasses.replace(QueryLatencyParams(), rounds=0).check()
    with pytest.raises(ParameterError, match="interactive='yes'"):
        dataclasses.replace(TtlTuningParams(), interactive="yes").check()
    with pytest.raises(ParameterError, match="requests"):
        TtlTuningParams.from_namespace({"output_dir": "x"})
