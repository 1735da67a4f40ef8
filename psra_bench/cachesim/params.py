"""Experiments 02 and 03's parameters, defined once: notebooks 02 (cache hit rates) and 03 (TTL tuning), and the report.

:class:`CacheHitRatesParams` and :class:`TtlTuningParams` share the workload trace's parameters
(:class:`WorkloadParams`); their presets are the notebook's small run (``NOTEBOOK``) and the quick
and full report (``QUICK``, ``FULL``: the report's ``cache_requests`` feeds both). ``check()``
gives what the notebook works with: :class:`ReplayParams` or :class:`TuningParams`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import field_validator, model_validator

from psra_bench.cachesim.ttl_sim import STALENESS_METRICS
from psra_bench.cachesim.workload import ALL_ENTITIES, ENTITIES, WorkloadSpec, check_ttls
from psra_bench.exceptions import ParameterError
from psra_bench.paramspec import NotebookParams, ParamModel, output_dir_param, param, refusal, seed_param
from psra_bench.settings import Settings

__all__ = [
    "WorkloadParams",
    "CacheHitRatesParams",
    "TtlTuningParams",
    "TraceTuneParams",
    "ReplayParams",
    "TuningParams",
]

_RATE = "updates per simulated hour, from 0 to 1,000,000"
_COMPRESSION = "None (calibrated) or a number > 0"


def _requests(default: int, help: str) -> Any:  # noqa: A002
    """A field counting reads: 1 to 10,000,000."""
    return param(default, help, allowed="a whole number from 1 to 10,000,000", ge=1, le=10_000_000)


@dataclass(frozen=True)
class ReplayParams:
    """Notebook 02's parameters as the replay takes them."""

    spec: WorkloadSpec
    #: TTLs given in the notebook (None: the settings' TTLs); entities left out keep the settings' TTL.
    ttls: dict[str, float] | None
    compression: float | None
    invalidate_on_update: bool

    def ttls_for(self, settings: Settings) -> dict[str, float]:
        """The TTL of every entity: the settings', overridden by the notebook's (all five for an imported trace)."""
        entities = ALL_ENTITIES if self.spec.trace_file else ENTITIES
        base = {e: float(settings.ttl.for_entity(e)) for e in entities}
        return base | (self.ttls or {})


@dataclass(frozen=True)
class TuningParams:
    """Notebook 03's parameters as the tuning takes them."""

    spec: WorkloadSpec
    grid_s: tuple[float, ...]
    target_hit_rate: float
    max_staleness_s: float
    staleness_metric: str
    live_check_requests: int
    compression: float | None
    #: None: auto (see :func:`psra_bench.cachesim.explorer.resolve_interactive`).
    interactive: bool | None


class WorkloadParams(NotebookParams):
    """The Zipf workload trace notebooks 02 and 03 share (its bounds are :meth:`WorkloadSpec.validate`'s)."""

    seed: int = seed_param("dataset seed and trace seed")
    requests: int = _requests(1000, "reads in the trace")
    duration_s: float = param(7200.0, "simulated period, seconds", allowed="seconds > 0")
    warmup_s: float = param(1800.0, "simulated seconds not counted", allowed="seconds ≥ 0 and < duration_s")
    zipf_s: float = param(1.1, "key skew of reads, 0 means uniform", allowed="a number from 0 to 5")
    hs_updates_per_hour: float = param(
        12.0, "HS description changes per simulated hour", allowed=_RATE, ge=0, le=1_000_000
    )
    rule_updates_per_hour: float = param(2.0, "rule changes per simulated hour", allowed=_RATE, ge=0, le=1_000_000)
    trace: str | None = param(
        None,
        "a trace file from psra-bench trace import (no warm-up); None: the synthetic Zipf trace",
        allowed="None or an existing file written by `psra-bench trace import`",
    )

    @model_validator(mode="after")
    def _valid_trace(self) -> WorkloadParams:
        self.spec  # noqa: B018 - WorkloadSpec.validate raises ParameterError naming the bad value
        return self

    @property
    def spec(self) -> WorkloadSpec:
        """The workload trace these parameters draw, checked."""
        rates = {"hs_codes": self.hs_updates_per_hour, "rules": self.rule_updates_per_hour}
        return WorkloadSpec(
            requests=self.requests,
            duration_s=self.duration_s,
            warmup_s=self.warmup_s,
            zipf_s=self.zipf_s,
            updates_per_hour=rates,
            seed=self.seed,
            trace_file=self.trace,
        ).validate()


class CacheHitRatesParams(WorkloadParams):
    """Notebook 02: the workload replayed through the real cache."""

    NOTEBOOK_NAME: ClassVar[str] = "02_cache_hit_rates"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"quick": {"requests": 1_000}, "full": {"requests": 8_000}}

    requests: int = _requests(1000, "reads in the trace (the report passes its cache_requests)")
    ttls: dict[str, float] | None = param(
        None,
        'TTL s per entity, e.g. {"assessments": 600}; None: configured',
        allowed="None or a mapping of entity name (" + ", ".join(ALL_ENTITIES) + ") to seconds > 0",
    )
    invalidate_on_update: bool = param(
        False, "True: updates go through CachedDAL's invalidation", allowed="True or False"
    )
    compression: float | None = param(
        None, "simulated seconds per real second; None: calibrated", allowed=_COMPRESSION, gt=0, allow_inf_nan=False
    )

    @field_validator("ttls", mode="before")
    @classmethod
    def _known_ttls(cls, value: object) -> object:
        if value is None:
            return None
        try:
            return check_ttls(value, allowed=ALL_ENTITIES)  # type: ignore[arg-type]  # refuses all but a mapping
        except ParameterError as e:
            raise refusal(e) from None

    def replay(self) -> ReplayParams:
        """What the replay takes (no folder is made)."""
        return ReplayParams(self.spec, self.ttls, self.compression, self.invalidate_on_update)

    def check(self) -> ReplayParams:
        """What the replay takes, once ``output_dir`` is proven writable."""
        self.check_output_dir()
        return self.replay()


class TtlTuningParams(WorkloadParams):
    """Notebook 03: TTL sweeps over the simulated trace, sliders in a live kernel."""

    NOTEBOOK_NAME: ClassVar[str] = "03_ttl_tuning"
    #: The report's cache_requests feeds notebooks 02 and 03 alike.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"requests": CacheHitRatesParams.QUICK.requests},
        "full": {"requests": CacheHitRatesParams.FULL.requests},
    }

    output_dir: str = output_dir_param("where the JSON results and PNG plots go (and 02 wrote its results)")
    requests: int = _requests(4000, "reads in the simulated trace")
    ttl_grid: list[float] = param(
        [15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200],
        "TTLs to sweep, seconds",
        allowed="a non-empty list of TTLs in seconds > 0",
        min_length=1,
    )
    target_hit_rate: float = param(
        0.8,
        "the hit rate a recommended TTL must reach",
        allowed="a hit rate between 0 (exclusive) and 1",
        gt=0,
        le=1,
    )
    max_staleness_s: float = param(
        900.0,
        "the staleness a recommended TTL may not exceed, seconds",
        allowed="seconds ≥ 0",
        ge=0,
        allow_inf_nan=False,
    )
    staleness_metric: str = param(
        "max_stale_s", "max_stale_s, p95_stale_s or mean_stale_s", allowed="one of " + ", ".join(STALENESS_METRICS)
    )
    live_check_requests: int = _requests(600, "reads of the live replay run here only when 02 results are missing")
    compression: float | None = param(
        None, "clock compression of that replay; None: calibrated", allowed=_COMPRESSION, gt=0, allow_inf_nan=False
    )
    interactive: bool | None = param(
        None,
        "sliders; None: auto (in a live kernel, not under papermill or nbval)",
        allowed="True (sliders), False (none) or None (auto: sliders only in a live kernel)",
    )

    @field_validator("ttl_grid", mode="before")
    @classmethod
    def _grid_as_list(cls, value: object) -> object:
        return list(value) if isinstance(value, tuple) else value

    @field_validator("ttl_grid")
    @classmethod
    def _positive_ttls(cls, value: list[float]) -> list[float]:
        for v in value:
            if not 0 < v < float("inf"):
                raise refusal(ParameterError("ttl_grid", v, "TTLs in seconds > 0"))
        return value

    @field_validator("staleness_metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in STALENESS_METRICS:
            raise refusal(ParameterError("staleness_metric", value, "one of " + ", ".join(STALENESS_METRICS)))
        return value

    def tuning(self) -> TuningParams:
        """What the tuning takes (no folder is made)."""
        return TuningParams(
            self.spec,
            tuple(sorted(set(self.ttl_grid))),
            self.target_hit_rate,
            self.max_staleness_s,
            self.staleness_metric,
            self.live_check_requests,
            self.compression,
            self.interactive,
        )

    def check(self) -> TuningParams:
        """What the tuning takes, once ``output_dir`` is proven writable."""
        self.check_output_dir()
        return self.tuning()


class TraceTuneParams(ParamModel):
    """``trace tune``: what a recommended TTL must reach, and the grid it is chosen from."""

    target_hit_rate: float = param(
        0.8, "the hit rate a recommended TTL must reach", allowed="a hit rate between 0 (exclusive) and 1", gt=0, le=1
    )
    max_staleness_s: float = param(
        900.0, "the staleness a recommended TTL may not exceed, seconds", allowed="seconds ≥ 0", ge=0
    )
    staleness_metric: str = param(
        "max_stale_s",
        "max_stale_s, p95_stale_s or mean_stale_s",
        allowed="one of max_stale_s, p95_stale_s, mean_stale_s",
        pattern="^(max_stale_s|p95_stale_s|mean_stale_s)$",
    )
    warmup_s: float = param(0.0, "trace seconds that fill the cache but are not counted", allowed="seconds ≥ 0", ge=0)
    ttl_grid: list[float] = param(
        [1, 2, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200],
        "TTLs to sweep, seconds",
        allowed="a non-empty list of TTLs in seconds > 0",
        min_length=1,
    )
