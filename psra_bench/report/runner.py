"""``psra-bench report``: run the notebooks with papermill and assemble the performance report.

The flow: validate every parameter (flags or a YAML ``--params`` file) before any work; bring
up the servers; seed the dataset once; execute 01–04 with papermill into ``reports/<run-id>/``;
with a ``workload``, execute 06 (index advice for it) after them; execute 05, which assembles
``report.html``, ``report.md`` and — last, atomically — ``results.json``; append the headline
figures to ``reports/history.jsonl``.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import field_validator

from psra_bench.exceptions import NotebookFailed, ParameterError
from psra_bench.params import (
    NOTEBOOK_PARAMS,
    CacheHitRatesParams,
    LoadTestParams,
    NotebookParams,
    QueryLatencyParams,
    TtlTuningParams,
)
from psra_bench.paramspec import ParamModel, field_of, output_dir_param, param, refusal
from psra_bench.resources import shipped_file
from psra_bench.workbench import SeedParams, check_writable_dir
from psra_bench.workload.params import IndexAdviceParams

__all__ = [
    "ReportParams",
    "NOTEBOOKS",
    "ADVICE_NOTEBOOK",
    "REPORT_NOTEBOOK_PARAMS",
    "FEEDS",
    "merge_params",
    "notebook_path",
    "notebook_params",
    "load_params_file",
    "notebooks_to_run",
    "TRACE_RUN",
    "run_report",
    "ReportRun",
]

#: The notebooks a report runs, in order; the last one assembles the report.
NOTEBOOKS: tuple[str, ...] = ("01_query_latency", "02_cache_hit_rates", "03_ttl_tuning", "04_load_test", "05_report")
_SECTIONS = NOTEBOOKS[:-1]
#: Index advice for a workload: run after 01–04 (before 05 assembles) only when the report is given a workload.
ADVICE_NOTEBOOK = IndexAdviceParams.NOTEBOOK_NAME
#: Every notebook a report may run, with its parameter model (psra_bench.params' and notebook 06's).
REPORT_NOTEBOOK_PARAMS: dict[str, type[NotebookParams]] = {**NOTEBOOK_PARAMS, ADVICE_NOTEBOOK: IndexAdviceParams}


#: Each report parameter that a notebook takes: report field -> (the notebooks, their field).
FEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "database": ((*NOTEBOOKS, ADVICE_NOTEBOOK), "database"),
    "verdicts": ((*NOTEBOOKS, ADVICE_NOTEBOOK), "verdicts"),
    "seed": ((*NOTEBOOKS, ADVICE_NOTEBOOK), "seed"),
    "iterations": (("01_query_latency",), "iterations"),
    "rounds": (("01_query_latency",), "rounds"),
    "cache_requests": (("02_cache_hit_rates", "03_ttl_tuning"), "requests"),
    "users": (("04_load_test",), "users"),
    "spawn_rate": (("04_load_test",), "spawn_rate"),
    "duration": (("04_load_test",), "duration"),
    "arrival_rate": (("04_load_test",), "arrival_rate"),
    "slo_p95_ms": (("04_load_test",), "slo_p95_ms"),
    "quick": (("04_load_test", "05_report"), "quick"),
    "reports_dir": (("05_report",), "reports_dir"),
    "workload": ((ADVICE_NOTEBOOK,), "workload"),
    "from_log": (("04_load_test",), "from_log"),
    "log_format": (("04_load_test",), "log_format"),
    "log_speed": (("04_load_test",), "log_speed"),
}


def _from_notebooks(preset: str) -> dict[str, Any]:
    """The report's values of ``preset`` ("quick", "full"): those of the notebooks' own presets."""
    values: dict[str, Any] = {}
    for key, (names, name) in FEEDS.items():
        if key in ("quick", "reports_dir", "workload", "from_log"):
            continue
        values[key] = getattr(NOTEBOOK_PARAMS[names[0]].preset(preset), name)
    return values


_FULL = _from_notebooks("full")
_QL, _CH, _LT = QueryLatencyParams, CacheHitRatesParams, LoadTestParams


class ReportParams(ParamModel):
    """Everything a report run can be told; the defaults are the full (≤ 10 min) run, ``QUICK`` the ``--quick`` one.

    Each field that a notebook takes is that notebook's field (bounds, help, refusal), and its
    defaults are the notebooks' ``FULL`` / ``QUICK`` presets (:data:`FEEDS`).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"quick": _from_notebooks("quick") | {"quick": True}}

    verdicts: int = field_of(_QL, "verdicts", _FULL["verdicts"])
    seed: int = field_of(_QL, "seed", _FULL["seed"], "dataset seed")
    tenants: int = field_of(SeedParams, "tenants", SeedParams.NOTEBOOK.tenants, "tenants in the dataset")
    database: str = field_of(_QL, "database", _FULL["database"])
    iterations: int = field_of(_QL, "iterations", _FULL["iterations"])
    rounds: int = field_of(_QL, "rounds", _FULL["rounds"])
    cache_requests: int = field_of(
        _CH, "requests", _FULL["cache_requests"], "reads in the cache trace (notebooks 02, 03)"
    )
    users: int = field_of(_LT, "users", _FULL["users"], "load test users at the headline step")
    spawn_rate: float = field_of(_LT, "spawn_rate", _FULL["spawn_rate"])
    duration: float = field_of(_LT, "duration", _FULL["duration"], "load test seconds measured per step")
    arrival_rate: float = field_of(_LT, "arrival_rate", _FULL["arrival_rate"])
    slo_p95_ms: float = field_of(_LT, "slo_p95_ms", _FULL["slo_p95_ms"])
    sections: tuple[str, ...] = param(
        _SECTIONS, "the sections to run (default all)", allowed="one of " + ", ".join(_SECTIONS)
    )
    reports_dir: str = output_dir_param("where run folders and history.jsonl go", "reports")
    quick: bool = param(False, "a small run (target ≤ 2 minutes)", allowed="True or False")
    workload: str | None = field_of(
        IndexAdviceParams,
        "workload",
        None,
        "a workload file from `workload capture`, or a .sql file: the report adds index advice for it (notebook 06, "
        "verified); None: no index advice section",
    )

    trace: str | None = field_of(
        TtlTuningParams,
        "trace",
        None,
        "a trace file from `psra-bench trace import`: TTL tuning runs on it too, beside the synthetic trace "
        "(notebook 03 once more); None: the synthetic trace only",
    )

    from_log: str | None = field_of(
        _LT,
        "from_log",
        None,
        "an access log (combined, jsonl or har: log_format): the load section replays it against 'both' and "
        "searches the capacity at its mix; None: the synthetic load only",
    )
    log_format: str = field_of(_LT, "log_format", _FULL["log_format"])
    log_speed: float = field_of(_LT, "log_speed", _FULL["log_speed"])

    @field_validator("workload", "trace", "from_log", mode="before")
    @classmethod
    def _workload_as_text(cls, value: object) -> object:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("sections", mode="before")
    @classmethod
    def _sections_as_tuple(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("sections")
    @classmethod
    def _known_sections(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for s in value:
            if s not in _SECTIONS:
                raise refusal(ParameterError("sections", s, "one of " + ", ".join(_SECTIONS)))
        return value

    @classmethod
    def quick_defaults(cls) -> ReportParams:
        """The small ``--quick`` run (target ≤ 2 minutes on 2 cores): :attr:`QUICK`."""
        return cls.QUICK


def load_params_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML params file; unknown keys are a ParameterError (before any work starts)."""
    p = Path(path)
    if not p.is_file():
        raise ParameterError("--params", str(path), "a readable YAML file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParameterError("--params", str(path), f"valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ParameterError("--params", str(path), "a YAML mapping of parameter names to values")
    known = list(ReportParams.model_fields)
    for key in data:
        if key not in known:
            raise ParameterError("--params key", key, "one of " + ", ".join(sorted(known)))
    return data


def notebook_path(name: str) -> Path:
    """Path of ``notebooks/<name>.ipynb`` (in the checkout, or shipped inside the package)."""
    return shipped_file(f"notebooks/{name}.ipynb")


#: The second run of notebook 03, on the report's ``trace``: its files go to ``<run-id>/trace/``.
TRACE_RUN = "03_ttl_tuning:trace"


def notebook_params(name: str, params: ReportParams, run_dir: Path, run_id: str) -> NotebookParams:
    """What notebook ``name`` is given in this run: its quick or full preset, with the report's own values (FEEDS)."""
    if name == TRACE_RUN:
        assert params.trace is not None
        tuning = notebook_params("03_ttl_tuning", params, run_dir, run_id)
        return tuning.replace(output_dir=str(run_dir / "trace"), trace=str(Path(params.trace).resolve()))
    values: dict[str, Any] = {"output_dir": str(run_dir)}
    values |= {theirs: getattr(params, key) for key, (names, theirs) in FEEDS.items() if name in names}
    if name == "05_report":
        values["run_id"] = run_id
    if name == "04_load_test" and params.from_log is not None:
        values["from_log"] = str(Path(params.from_log).resolve())  # papermill runs the notebook in another folder
    if name == ADVICE_NOTEBOOK:
        values["verify"] = True  # the report's database is psra-bench's own: the advice is measured
        values["workload"] = str(Path(params.workload).resolve()) if params.workload is not None else None
    return REPORT_NOTEBOOK_PARAMS[name].preset("quick" if params.quick else "full").replace(**values)


def notebooks_to_run(params: ReportParams) -> list[str]:
    """The notebooks this run executes, in order: the chosen sections (03 twice with a trace), 06 when given a
    workload, then 05."""
    names = [n for n in _SECTIONS if n in params.sections]
    if params.trace is not None and "03_ttl_tuning" in names:
        names.insert(names.index("03_ttl_tuning") + 1, TRACE_RUN)
    if params.workload is not None:
        names.append(ADVICE_NOTEBOOK)
    return [*names, "05_report"]


@dataclass
class ReportRun:
    """What a report run produced."""

    run_id: str
    run_dir: Path
    seconds: float
    notebook_seconds: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] | None = None


def new_run_id(now: dt.datetime | None = None) -> str:
    """A sortable, unique run id such as 20261128T160233Z-3f9a."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def run_report(
    params: ReportParams,
    *,
    progress: Callable[[str], None] | None = None,
    live: Callable[[str], None] | None = None,
    run_id: str | None = None,
) -> ReportRun:
    """Execute the notebooks into ``<reports_dir>/<run-id>/`` and assemble the report.

    ``progress`` gets plain lines: each step, and where each notebook is (a few lines per stage,
    :mod:`psra_bench.report.progress`); with ``live`` (a terminal's status line, rewritten in
    place) the notebooks' progress goes there instead. Their events are kept in
    ``<run-id>/progress.jsonl``.
    """
    import tempfile

    import papermill

    from psra_bench.db.ownership import require_owned
    from psra_bench.report.progress import ProgressFollower, kernel_manager_class
    from psra_bench.workbench import ensure_dataset, notebook_settings

    say = progress or (lambda _msg: None)
    run_id = run_id or new_run_id()
    run_dir = Path(params.reports_dir) / run_id
    names = notebooks_to_run(params)
    check_writable_dir("reports_dir", params.reports_dir)  # one sentence now, not a failure after the measurements
    run_dir.mkdir(exist_ok=False)
    try:
        for name in names:  # every notebook's parameters are checked before any work
            notebook_params(name, params, run_dir, run_id).check()
        settings = notebook_settings(params.database)
        require_owned(settings, "psra-bench report")  # a team's database is refused before anything is written
    except Exception:
        run_dir.rmdir()  # still empty: nothing was measured
        raise
    started = time.perf_counter()
    say(f"run {run_id}: servers and dataset ({params.verdicts:,} verdicts, seed {params.seed})")
    dataset = ensure_dataset(settings, params.verdicts, params.seed, params.tenants, action="psra-bench report")
    if dataset.seeded_now:
        say(f"  dataset seeded at {dataset.seed_rows_per_second:,.0f} rows/s (checksum {dataset.checksum})")
    else:
        say(f"  dataset reused (checksum {dataset.checksum})")
    run = ReportRun(run_id, run_dir, 0.0)
    events = run_dir / "progress.jsonl"
    with tempfile.TemporaryDirectory(prefix="psra-kernel-") as ipc_dir:
        kernels = kernel_manager_class(Path(ipc_dir), events)
        for name in names:
            t0 = time.perf_counter()
            say(f"  running {name} ...")
            notebook, _, variant = name.partition(":")  # "03_ttl_tuning:trace" runs 03 into <run-id>/trace/
            executed = run_dir / variant / f"{notebook}.ipynb"
            executed.parent.mkdir(exist_ok=True)
            try:
                with ProgressFollower(events, say, live=live):
                    papermill.execute_notebook(
                        str(notebook_path(notebook)),
                        str(executed),
                        parameters=notebook_params(name, params, run_dir, run_id).papermill(),
                        kernel_name="python3",
                        progress_bar=False,
                        cwd=str(Path.cwd()),
                        kernel_manager_class=kernels,
                    )
            except papermill.PapermillExecutionError as e:
                raise NotebookFailed(name, executed, f"{e.ename}: {e.evalue}") from None
            run.notebook_seconds[name] = time.perf_counter() - t0
            say(f"  {name} done in {run.notebook_seconds[name]:.1f} s")
    run.seconds = time.perf_counter() - started
    from psra_bench.workbench import load_results

    run.results = load_results(run_dir, "results")
    return run


def merge_params(base: ReportParams, file_values: Mapping[str, Any], flags: Mapping[str, Any]) -> ReportParams:
    """Defaults < params file < command-line flags, validated; a None (an unset flag, an empty key) keeps the value."""
    values = {k: v for k, v in file_values.items() if v is not None} | {k: v for k, v in flags.items() if v is not None}
    return base.replace(**values)
