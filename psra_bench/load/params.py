"""Experiment 04's parameters, defined once: notebook 04, ``psra-bench load`` and the report.

:class:`LoadTestParams` holds the load test's parameters with their types, bounds, defaults and
help; its presets are the notebook's small run (``NOTEBOOK``), the quick and the full report
(``QUICK``, ``FULL``) and the ``psra-bench load`` command (``CLI``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import field_validator

from psra_bench.exceptions import ParameterError
from psra_bench.load.replay import ReplayParams
from psra_bench.load.results import CONFIGURATIONS, resolve_configurations
from psra_bench.paramspec import NotebookParams, field_of, param, refusal, seed_param, verdicts_param

if TYPE_CHECKING:
    from psra_bench.load.replay import ReplayPlan

__all__ = ["LoadTestParams"]

_POSITIVE = "a number > 0"
#: The full report's load test; the quick report and the CLI change a few of its values.
_FULL: dict[str, Any] = {
    "users": 20,
    # 100 users/s: a capacity search steps up to 640 users and back (about 930 users started and stopped
    # for "both"); at 40/s those ramps took about 23 s of each such configuration, at 10/s about a minute.
    "spawn_rate": 100.0,
    "duration": 8.0,
    "arrival_rate": 50.0,
    "configurations": "all",
    "slo_p95_ms": 200.0,
    "quick": False,
}


class LoadTestParams(NotebookParams):
    """Notebook 04: Locust and the open model against the API, per configuration."""

    NOTEBOOK_NAME: ClassVar[str] = "04_load_test"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": _FULL
        | {
            "users": 5,
            "spawn_rate": 5.0,
            "duration": 4.0,
            "arrival_rate": 20.0,
            "configurations": "baseline,both",
            "quick": True,
        },
        "full": _FULL,
        "cli": _FULL | {"duration": 20.0, "verdicts": 100_000, "output_dir": "reports/load"},
    }
    CLI: ClassVar[LoadTestParams]

    verdicts: int = verdicts_param(2_000)
    seed: int = seed_param("dataset seed and request-mix seed")
    users: int = param(
        2,
        "headline closed-model users (the step load brackets it)",
        allowed="a whole number from 1 to 10,000",
        ge=1,
        le=10_000,
    )
    spawn_rate: float = param(4.0, "Locust users started per second", allowed=_POSITIVE, gt=0, allow_inf_nan=False)
    duration: float = param(
        1.5,
        "seconds measured per step, and per open-model run",
        allowed="seconds > 0, at most 3600",
        gt=0,
        le=3600,
    )
    arrival_rate: float = param(5.0, "open model: requests per second", allowed=_POSITIVE, gt=0, allow_inf_nan=False)
    configurations: str = param(
        "baseline,both",
        'comma-separated: baseline, indexes, cache, both — or "all"',
        allowed="'all' or comma-separated names of " + ", ".join(CONFIGURATIONS),
    )
    slo_p95_ms: float = param(
        500.0, 'p95 SLO for "concurrent users supported"', allowed=_POSITIVE, gt=0, allow_inf_nan=False
    )
    quick: bool = param(True, "two steps (users, 2 × users) instead of five", allowed="True or False")
    open_search: bool = param(
        False,
        "also search the open model's highest arrival rate meeting the SLO (one open-model run per step)",
        allowed="True or False",
    )

    from_log: str | None = param(
        None,
        "an access log to replay against the 'both' configuration, with a capacity search at its own mix; "
        "None: no replay",
        allowed="None or the path of an access log (nginx/Apache combined, JSON lines or HAR: see log_format)",
    )
    log_format: str = field_of(ReplayParams, "log_format", "combined", "from_log's format: combined, jsonl or har")
    log_speed: float = field_of(ReplayParams, "speed", 1.0, "replay from_log this many times faster than recorded")

    @field_validator("from_log", mode="before")
    @classmethod
    def _log_as_text(cls, value: object) -> object:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("configurations", mode="before")
    @classmethod
    def _configurations_as_text(cls, value: object) -> object:
        """A list of names is the comma-separated text."""
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return ",".join(value)
        return value

    @field_validator("configurations")
    @classmethod
    def _known_configurations(cls, value: str) -> str:
        try:
            resolve_configurations(value)
        except ParameterError as e:
            raise refusal(e) from None
        return value

    @property
    def configuration_names(self) -> list[str]:
        """The configurations to run, in the order given."""
        return resolve_configurations(self.configurations)

    def check(self) -> list[str]:
        """The configuration names to run, once ``output_dir`` is proven writable and ``from_log`` is replayable."""
        return self.prepare()[0]

    def prepare(self) -> tuple[list[str], ReplayPlan | None]:
        """:meth:`check`, with the replay plan it read (the notebook's one read of ``from_log``)."""
        self.check_output_dir()
        return self.configuration_names, self.replay_plan()

    def replay_plan(self) -> ReplayPlan | None:
        """``from_log`` read and templated (refused in one sentence when nothing in it is replayable); None without one.

        Read before any measurement, so a bad log costs nothing.
        """
        if self.from_log is None:
            return None
        from psra_bench.load.replay import load_replay

        return load_replay(
            self.from_log,
            ReplayParams.NOTEBOOK.replace(log_format=self.log_format, speed=self.log_speed, seed=self.seed),
        )
