"""Notebook parameters have one definition (psra_bench.params): the cell, the checks and the runner derive from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    assert list(found) == cls.cell_fields()
    for name in cls.cell_fields():
        assert found[name]["inferred_type_name"] not in ("None", "Unknown type"), name
        assert found[name]["help"] == cls.help(name)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_defaults_pass_their_own_checks(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(NOTEBOOK_PARAMS[name].cell(), namespace)  # the parameters cell, run as the kernel runs it
    params = NOTEBOOK_PARAMS[name].from_namespace(namespace)
    assert params == NOTEBOOK_PARAMS[name]() == NOTEBOOK_PARAMS[name].NOTEBOOK
    params.check()


@pytest.mark.parametrize("quick", [False, True])
def test_the_report_fills_every_notebook_from_its_own_parameters(quick: bool, tmp_path: Path) -> None:
    report = ReportParams.QUICK if quick else ReportParams.FULL
    for name in NOTEBOOKS:
        nb = notebook_params(name, report, tmp_path, "run-1")
        nb.check()
        assert nb.papermill()["output_dir"] == str(tmp_path) and nb.papermill()["verdicts"] == report.verdicts
    assert notebook_params("04_load_test", report, tmp_path, "run-1").papermill()["quick"] is quick


def test_a_bad_value_is_named_and_a_missing_one_too() -> None:
    with pytest.raises(ParameterError, match="rounds=0"):
        QueryLatencyParams().replace(rounds=0).check()
    with pytest.raises(ParameterError, match="interactive='yes'"):
        TtlTuningParams().replace(interactive="yes").check()
    with pytest.raises(ParameterError, match="requests"):
        TtlTuningParams.from_namespace({"output_dir": "x"})


def test_presets_are_named_instances_of_one_model() -> None:
    """The notebook's small run, the quick and the full report are presets of the same model, never literals."""
    assert QueryLatencyParams.NOTEBOOK == QueryLatencyParams()
    assert (QueryLatencyParams.QUICK.iterations, QueryLatencyParams.FULL.iterations) == (10, 20)
    for preset, report in (("quick", ReportParams.QUICK), ("full", ReportParams.FULL)):
        latency = QueryLatencyParams.preset(preset)
        assert (report.iterations, report.rounds, report.verdicts) == (
            latency.iterations,
            latency.rounds,
            latency.verdicts,
        )
        assert report.cache_requests == NOTEBOOK_PARAMS["02_cache_hit_rates"].preset(preset).requests
        assert report.cache_requests == NOTEBOOK_PARAMS["03_ttl_tuning"].preset(preset).requests
        load = NOTEBOOK_PARAMS["04_load_test"].preset(preset)
        assert (report.users, report.duration, report.slo_p95_ms) == (load.users, load.duration, load.slo_p95_ms)
    assert ReportParams() == ReportParams.FULL and ReportParams.QUICK.quick and not ReportParams.FULL.quick
    with pytest.raises(ParameterError, match="preset='huge'"):
        QueryLatencyParams.preset("huge")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rounds": True}, "rounds=True is not valid: a whole number from 1 to 50"),  # a bool is never a number
        ({"iterations": 2.5}, "iterations=2.5 is not valid: a whole number from 2 to 100,000"),
        ({"budget_s": float("inf")}, "budget_s=inf is not valid: None (no cap) or a number of seconds > 0."),
        ({"database": "postgresql://u:secret@h/db"}, "database='postgresql://u:***@h/db' is not valid"),
    ],
)
def test_one_sentence_per_refusal(change: dict[str, object], message: str) -> None:
    with pytest.raises(ParameterError) as info:
        QueryLatencyParams.NOTEBOOK.replace(**change)
    assert str(info.value).startswith(message) and str(info.value).endswith(".")
    assert str(info.value).count(" is not valid: ") == 1


def test_cli_options_are_views_of_the_models() -> None:
    """Each option's default is the preset's value and its help the field's help."""
    from psra_bench.cli import cli
    from psra_bench.load.params import LoadTestParams

    commands: Any = cli.commands
    audit = {p.name: p for p in commands["indexes"].commands["audit"].params}
    for name in ("iterations", "rounds", "warmup", "write_batches", "budget_s", "recommend"):
        assert audit[name].default == getattr(QueryLatencyParams.AUDIT, name), name
        assert QueryLatencyParams.help(name)[1:] in (audit[name].help or ""), name
    load = {p.name: p for p in commands["load"].params}
    for name in ("users", "spawn_rate", "duration", "arrival_rate", "configurations", "slo_p95_ms", "verdicts"):
        assert load[name].default == getattr(LoadTestParams.CLI, name), name
    report = {p.name: p for p in commands["report"].params}
    assert all(report[n].default is None for n in ("verdicts", "seed", "iterations", "rounds", "users", "duration"))
    assert "default 1,000,000; quick 20,000" in (report["verdicts"].help or "")
