"""``psra-bench report``: run the notebooks with papermill and assemble the performance report.

The flow: validate every parameter (flags or a YAML ``--params`` file) before any work; bring
up the servers; seed the dataset once; execute 01–04 with papermill into ``reports/<run-id>/``;
execute 05, which assembles ``report.html``, ``report.md`` and — last, atomically —
``results.json``; append the headline figures to ``reports/history.jsonl``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from psra_bench.constants import MAX_TENANTS, MAX_VERDICTS
from psra_bench.exceptions import NotebookFailed, ParameterError
from psra_bench.params import NOTEBOOK_PARAMS, NotebookParams
from psra_bench.resources import shipped_file
from psra_bench.workbench import DEFAULT_DATABASE, check_positive_int, check_positive_number, check_writable_dir

__all__ = [
    "ReportParams",
    "NOTEBOOKS",
    "notebook_path",
    "notebook_params",
    "load_params_file",
    "run_report",
    "ReportRun",
]

#: The notebooks a report runs, in order; the last one assembles the report.
NOTEBOOKS: tuple[str, ...] = ("01_query_latency", "02_cache_hit_rates", "03_ttl_tuning", "04_load_test", "05_report")
_SECTIONS = NOTEBOOKS[:-1]


@dataclass(frozen=True)
class ReportParams:
    """Everything a report run can be told; defaults are the full (≤ 10 min) run."""

    verdicts: int = 1_000_000
    seed: int = 42
    tenants: int = 200
    database: str = DEFAULT_DATABASE
    #: Query latency: timed calls per query per round, and A/B rounds (each round rebuilds the indexes).
    iterations: int = 20
    rounds: int = 2
    #: Cache replay: requests in the trace.
    cache_requests: int = 8_000
    #: Load test: users, spawn rate, seconds per configuration, open-model arrival rate, p95 SLO.
    users: int = 20
    spawn_rate: float = 10.0
    duration: int = 8
    arrival_rate: float = 50.0
    slo_p95_ms: float = 200.0
    sections: tuple[str, ...] = _SECTIONS
    reports_dir: str = "reports"
    quick: bool = False

    @classmethod
    def quick_defaults(cls) -> ReportParams:
        """The small ``--quick`` run (target ≤ 2 minutes on 2 cores)."""
        return cls(
            verdicts=20_000,
            iterations=10,
            rounds=2,
            cache_requests=1_000,
            users=5,
            spawn_rate=5.0,
            duration=4,
            arrival_rate=20.0,
            quick=True,
        )

    def validate(self) -> ReportParams:
        """Check every field (ParameterError naming the first bad one); return self."""
        check_positive_int("verdicts", self.verdicts, MAX_VERDICTS)
        check_positive_int("tenants", self.tenants, MAX_TENANTS)
        check_positive_int("iterations", self.iterations, 100_000)
        check_positive_int("rounds", self.rounds, 50)
        check_positive_int("cache_requests", self.cache_requests, 10_000_000)
        check_positive_int("users", self.users, 10_000)
        check_positive_int("duration", self.duration, 3600)
        check_positive_number("spawn_rate", self.spawn_rate)
        check_positive_number("arrival_rate", self.arrival_rate)
        check_positive_number("slo_p95_ms", self.slo_p95_ms)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ParameterError("seed", self.seed, "a whole number ≥ 0")
        for s in self.sections:
            if s not in _SECTIONS:
                raise ParameterError("sections", s, "one of " + ", ".join(_SECTIONS))
        return self

    def replace(self, **changes: Any) -> ReportParams:
        """A copy with ``changes`` (None values are ignored: an unset CLI flag keeps the default)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


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
    known = {f.name for f in dataclasses.fields(ReportParams)}
    for key in data:
        if key not in known:
            raise ParameterError("--params key", key, "one of " + ", ".join(sorted(known)))
    if "sections" in data and isinstance(data["sections"], list):
        data["sections"] = tuple(data["sections"])
    return data


def notebook_path(name: str) -> Path:
    """Path of ``notebooks/<name>.ipynb`` (in the checkout, or shipped inside the package)."""
    return shipped_file(f"notebooks/{name}.ipynb")


def notebook_params(name: str, params: ReportParams, run_dir: Path, run_id: str) -> NotebookParams:
    """What notebook ``name`` is given in this run: its parameter class, filled from the report's parameters."""
    common: dict[str, Any] = {
        "output_dir": str(run_dir),
        "database": params.database,
        "verdicts": params.verdicts,
        "seed": params.seed,
    }
    specific: dict[str, dict[str, Any]] = {
        "01_query_latency": {"iterations": params.iterations, "rounds": params.rounds},
        "02_cache_hit_rates": {"requests": params.cache_requests},
        "03_ttl_tuning": {"requests": params.cache_requests},
        "04_load_test": {
            "users": params.users,
            "spawn_rate": params.spawn_rate,
            "duration": params.duration,
            "arrival_rate": params.arrival_rate,
            "slo_p95_ms": params.slo_p95_ms,
            "configurations": "baseline,both" if params.quick else "all",
            "quick": params.quick,
        },
        "05_report": {"run_id": run_id, "reports_dir": params.reports_dir, "quick": params.quick},
    }
    return NOTEBOOK_PARAMS[name](**common, **specific[name])


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
    params: ReportParams, *, progress: Callable[[str], None] | None = None, run_id: str | None = None
) -> ReportRun:
    """Execute the notebooks into ``<reports_dir>/<run-id>/`` and assemble the report."""
    import papermill

    from psra_bench.db.ownership import require_owned
    from psra_bench.workbench import ensure_dataset, notebook_settings

    params.validate()
    say = progress or (lambda _msg: None)
    run_id = run_id or new_run_id()
    run_dir = Path(params.reports_dir) / run_id
    names = [n for n in NOTEBOOKS if n in params.sections or n == "05_report"]
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
    for name in names:
        t0 = time.perf_counter()
        say(f"  running {name} ...")
        try:
            papermill.execute_notebook(
                str(notebook_path(name)),
                str(run_dir / f"{name}.ipynb"),
                parameters=notebook_params(name, params, run_dir, run_id).papermill(),
                kernel_name="python3",
                progress_bar=False,
                cwd=str(Path.cwd()),
            )
        except papermill.PapermillExecutionError as e:
            raise NotebookFailed(name, run_dir / f"{name}.ipynb", f"{e.ename}: {e.evalue}") from None
        run.notebook_seconds[name] = time.perf_counter() - t0
        say(f"  {name} done in {run.notebook_seconds[name]:.1f} s")
    run.seconds = time.perf_counter() - started
    from psra_bench.workbench import load_results

    run.results = load_results(run_dir, "results")
    return run


def merge_params(base: ReportParams, file_values: Mapping[str, Any], flags: Mapping[str, Any]) -> ReportParams:
    """Defaults < params file < command-line flags; validated."""
    return base.replace(**dict(file_values)).replace(**dict(flags)).validate()
