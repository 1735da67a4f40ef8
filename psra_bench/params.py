"""One definition per notebook parameter: a typed dataclass per notebook.

Each class below is the single place where a notebook parameter gets its name, type, default and
help text. From it come the notebook's papermill ``parameters`` cell (:meth:`NotebookParams.cell`,
written by ``notebooks/_build/make_0N.py``), the values the notebook validates
(:meth:`NotebookParams.from_namespace` + :meth:`NotebookParams.check`, which calls the
experiment's own checks) and what ``psra-bench report`` passes to papermill
(:meth:`NotebookParams.papermill`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from psra_bench.cachesim.experiment import check_replay_params, check_tuning_params
from psra_bench.exceptions import ParameterError
from psra_bench.latency.patterns import check_notebook_params as check_query_latency_params
from psra_bench.load.results import check_notebook_params as check_load_test_params
from psra_bench.workbench import DEFAULT_DATABASE, check_writable_dir

__all__ = [
    "NotebookParams",
    "QueryLatencyParams",
    "CacheHitRatesParams",
    "TtlTuningParams",
    "LoadTestParams",
    "ReportNotebookParams",
    "NOTEBOOK_PARAMS",
]

_P = TypeVar("_P", bound="NotebookParams")


def param(default: Any, help: str, *, factory: Any = None) -> Any:  # noqa: A002 - the help text
    """A dataclass field with its help text (shown by ``papermill --help-notebook``)."""
    if "=" in help:  # papermill's parser drops a parameter whose comment holds "="
        raise ValueError(f"help text of a notebook parameter may not contain '=': {help!r}")
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


def _literal(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    return repr(value)


def _papermill_type(annotation: str) -> str:
    """``X | None`` as ``Optional[X]``: papermill's parser reads the latter, not the former."""
    parts = [p.strip() for p in annotation.split("|")]
    if "None" in parts and len(parts) == 2:
        return f"Optional[{[p for p in parts if p != 'None'][0]}]"
    return annotation


@dataclass(frozen=True)
class NotebookParams:
    """What every notebook is given: where results go, which database, the dataset scale and seed."""

    #: The notebook these parameters belong to (e.g. "01_query_latency").
    NOTEBOOK: ClassVar[str] = ""

    output_dir: str = param("reports/_scratch", "where the JSON results and PNG plots go")
    database: str = param(DEFAULT_DATABASE, "a database NAME on the configured/embedded server (never a DSN)")
    verdicts: int = param(20_000, "dataset scale (rows in psra_verdicts)")
    seed: int = param(42, "dataset seed")

    @classmethod
    def cell(cls) -> str:
        """The source of the notebook's papermill ``parameters`` cell: ``name: type = default  # help``."""
        lines = []
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            lines.append(f"{f.name}: {_papermill_type(str(f.type))} = {_literal(default)}  # {f.metadata['help']}")
        if any("Optional[" in line for line in lines):
            lines.insert(
                0, "from typing import Optional  # papermill --help-notebook reads Optional[X], not X | None\n"
            )
        return "\n".join(lines)

    @classmethod
    def from_namespace(cls: type[_P], namespace: Mapping[str, Any]) -> _P:
        """The parameters as the notebook holds them (its globals after papermill injected any)."""
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in namespace]
        if missing:
            raise ParameterError("parameters cell", ", ".join(missing), "every parameter defined (run it first)")
        return cls(**{f.name: namespace[f.name] for f in dataclasses.fields(cls)})

    def papermill(self) -> dict[str, Any]:
        """The values to hand papermill (every parameter, so the run does not depend on a notebook's defaults)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def check(self) -> Any:
        """Validate with the experiment's own checks (ParameterError naming the first bad value)."""
        return None

    def check_output_dir(self) -> None:
        """``output_dir`` must be a folder this user can write, checked before any measurement."""
        if isinstance(self.output_dir, str) and self.output_dir.strip():
            check_writable_dir("output_dir", self.output_dir)

    def _values(self, *names: str) -> dict[str, Any]:
        return {n: getattr(self, n) for n in names}


@dataclass(frozen=True)
class QueryLatencyParams(NotebookParams):
    """Notebook 01: the spec's queries before vs after the index migration."""

    NOTEBOOK: ClassVar[str] = "01_query_latency"

    seed: int = param(42, "dataset seed and parameter-generator seed")
    iterations: int = param(8, "timed calls per query per round")
    rounds: int = param(2, "rounds per side (ABBA: each side switch builds or drops 26 indexes)")
    warmup: int = param(2, "untimed calls per query per round")
    queries: str = param("all", '"all" or comma-separated query names')
    write_batches: int = param(10, "insert batches per round (0 skips the write cost)")
    write_batch_rows: int = param(200, "rows per insert batch")
    path: str = param("query", '"query": pooled execute + fetch; "dal": PostgresDAL.fetch_all (adds JSON conversion)')
    budget_s: float = param(10.0, 'cap on one query\'s timed calls per round, in seconds (slow "before" scans at 1M)')
    recommend: bool = param(True, "also measure the audit's recommended index set (a third side)")

    def check(self) -> list[str]:
        """The query names to run."""
        if not isinstance(self.recommend, bool):
            raise ParameterError("recommend", self.recommend, "True or False")
        checked = check_query_latency_params(**self._values(
            "verdicts", "database", "output_dir", "queries", "iterations", "rounds", "warmup", "seed",
            "write_batches", "write_batch_rows", "path", "budget_s",
        ))  # fmt: skip
        self.check_output_dir()  # last: a bad value above makes no folder
        return checked


@dataclass(frozen=True)
class _WorkloadParams(NotebookParams):
    """The Zipf workload trace notebooks 02 and 03 share."""

    seed: int = param(42, "dataset seed and trace seed")
    requests: int = param(1000, "reads in the trace")
    duration_s: float = param(7200.0, "simulated period, seconds")
    warmup_s: float = param(1800.0, "simulated seconds not counted")
    zipf_s: float = param(1.1, "key skew of reads, 0 means uniform")
    hs_updates_per_hour: float = param(12.0, "HS description changes per simulated hour")
    rule_updates_per_hour: float = param(2.0, "rule changes per simulated hour")

    _TRACE = ("output_dir", "verdicts", "seed", "requests", "duration_s", "warmup_s", "zipf_s",
              "hs_updates_per_hour", "rule_updates_per_hour")  # fmt: skip


@dataclass(frozen=True)
class CacheHitRatesParams(_WorkloadParams):
    """Notebook 02: the workload replayed through the real cache."""

    NOTEBOOK: ClassVar[str] = "02_cache_hit_rates"

    requests: int = param(1000, "reads in the trace (the report passes its cache_requests)")
    ttls: dict[str, float] | None = param(None, 'TTL s per entity, e.g. {"assessments": 600}; None: configured')
    invalidate_on_update: bool = param(False, "True: updates go through CachedDAL's invalidation")
    compression: float | None = param(None, "simulated seconds per real second; None: calibrated")

    def check(self) -> Any:
        """The checked replay parameters."""
        checked = check_replay_params(**self._values(*self._TRACE, "ttls", "compression", "invalidate_on_update"))
        self.check_output_dir()  # last: a bad value above makes no folder
        return checked


@dataclass(frozen=True)
class TtlTuningParams(_WorkloadParams):
    """Notebook 03: TTL sweeps over the simulated trace, sliders in a live kernel."""

    NOTEBOOK: ClassVar[str] = "03_ttl_tuning"

    output_dir: str = param("reports/_scratch", "where the JSON results and PNG plots go (and 02 wrote its results)")
    requests: int = param(4000, "reads in the simulated trace")
    ttl_grid: list[float] = param(
        None, "TTLs to sweep, seconds",
        factory=lambda: [15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200],
    )  # fmt: skip
    target_hit_rate: float = param(0.8, "the hit rate a recommended TTL must reach")
    max_staleness_s: float = param(900.0, "the staleness a recommended TTL may not exceed, seconds")
    staleness_metric: str = param("max_stale_s", "max_stale_s, p95_stale_s or mean_stale_s")
    live_check_requests: int = param(600, "reads of the live replay run here only when 02 results are missing")
    compression: float | None = param(None, "clock compression of that replay; None: calibrated")
    interactive: bool | None = param(None, "sliders; None: auto (in a live kernel, not under papermill or nbval)")

    def check(self) -> Any:
        """The checked tuning parameters."""
        checked = check_tuning_params(**self._values(
            *self._TRACE, "ttl_grid", "target_hit_rate", "max_staleness_s", "staleness_metric",
            "live_check_requests", "compression", "interactive",
        ))  # fmt: skip
        self.check_output_dir()  # last: a bad value above makes no folder
        return checked


@dataclass(frozen=True)
class LoadTestParams(NotebookParams):
    """Notebook 04: Locust and the open model against the API, per configuration."""

    NOTEBOOK: ClassVar[str] = "04_load_test"

    verdicts: int = param(2_000, "dataset scale (rows in psra_verdicts)")
    seed: int = param(42, "dataset seed and request-mix seed")
    users: int = param(2, "headline closed-model users (the step load brackets it)")
    spawn_rate: float = param(4.0, "Locust users started per second")
    duration: float = param(1.5, "seconds measured per step, and per open-model run")
    arrival_rate: float = param(5.0, "open model: requests per second")
    configurations: str = param("baseline,both", 'comma-separated: baseline, indexes, cache, both — or "all"')
    slo_p95_ms: float = param(500.0, 'p95 SLO for "concurrent users supported"')
    quick: bool = param(True, "two steps (users, 2 × users) instead of five")

    def check(self) -> list[str]:
        """The configuration names to run."""
        checked = check_load_test_params(**self._values(
            "users", "spawn_rate", "duration", "arrival_rate", "slo_p95_ms", "configurations", "verdicts", "seed",
            "quick",
        ))  # fmt: skip
        self.check_output_dir()  # last: a bad value above makes no folder
        return checked


@dataclass(frozen=True)
class ReportNotebookParams(NotebookParams):
    """Notebook 05: assemble the report from the run folder."""

    NOTEBOOK: ClassVar[str] = "05_report"

    output_dir: str = param("reports/_scratch", "the run folder holding 01…04 results")
    verdicts: int = param(5000, "unused here (the report takes the scale from the sections' fingerprints)")
    seed: int = param(42, "unused here")
    run_id: str = param("scratch", "the run id the report is filed under")
    reports_dir: str = param("reports/_scratch", "where history.jsonl lives")
    quick: bool = param(True, "a --quick run: the report and its history entry say mode quick")

    def check(self) -> None:
        """The run id and folders must be usable names, and the folders writable."""
        if not isinstance(self.run_id, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,80}", self.run_id):
            raise ParameterError("run_id", self.run_id, "1-80 letters, digits, '.', '_' or '-'")
        for name in ("output_dir", "reports_dir"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ParameterError(name, value, "a folder path (a non-empty string)")
        self.check_output_dir()
        check_writable_dir("reports_dir", self.reports_dir)


#: Each notebook's parameter class, by notebook name.
NOTEBOOK_PARAMS: dict[str, type[NotebookParams]] = {
    cls.NOTEBOOK: cls
    for cls in (QueryLatencyParams, CacheHitRatesParams, TtlTuningParams, LoadTestParams, ReportNotebookParams)
}
