"""Experiment 01's parameters, defined once: notebook 01, ``psra-bench indexes audit`` and the report.

:class:`QueryLatencyParams` holds every parameter of :func:`psra_bench.latency.experiment.run_query_latency`
with its type, bounds, default and help; its presets are the notebook's small run (``NOTEBOOK``),
the quick and the full report (``QUICK``, ``FULL``) and the CLI's audit (``AUDIT``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import field_validator, model_validator

from psra_bench.exceptions import ParameterError
from psra_bench.latency.patterns import QUERY_PATTERNS, TIMING_PATHS, resolve_queries
from psra_bench.paramspec import NotebookParams, param, refusal, seed_param

__all__ = ["QueryLatencyParams"]


class QueryLatencyParams(NotebookParams):
    """Notebook 01: the spec's queries before vs after the index migration (and the recommended set)."""

    NOTEBOOK_NAME: ClassVar[str] = "01_query_latency"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"iterations": 10},
        "full": {"iterations": 20},
        # `psra-bench indexes audit`: one round per set, a 5 s budget, the parameter generators' seed 0
        "audit": {"iterations": 10, "rounds": 1, "write_batches": 5, "budget_s": 5.0, "seed": 0},
    }
    AUDIT: ClassVar[QueryLatencyParams]

    seed: int = seed_param("dataset seed and parameter-generator seed")
    iterations: int = param(
        8,
        "timed calls per query per round",
        allowed="a whole number from 2 to 100,000 (timed calls per query per round)",
        ge=2,
        le=100_000,
    )
    rounds: int = param(
        2,
        "rounds per side (ABBA: each side switch builds or drops 26 indexes)",
        allowed="a whole number from 1 to 50 (rounds per side; each side switch rebuilds or drops 26 indexes)",
        ge=1,
        le=50,
    )
    warmup: int = param(
        2, "untimed calls per query per round", allowed="a whole number ≥ 0 (untimed calls per query per round)", ge=0
    )
    queries: str = param(
        "all",
        '"all" or comma-separated query names',
        allowed="'all', comma-separated query names or a list of them (" + ", ".join(QUERY_PATTERNS) + ")",
    )
    write_batches: int = param(
        10,
        "insert batches per round (0 skips the write cost)",
        allowed="a whole number ≥ 0 (insert batches per round; 0 skips the write cost)",
        ge=0,
    )
    write_batch_rows: int = param(
        200, "rows per insert batch", allowed="a whole number ≥ 1 (rows per insert batch)", ge=1
    )
    path: str = param(
        "query",
        '"query": pooled execute + fetch; "dal": PostgresDAL.fetch_all (adds JSON conversion)',
        allowed="one of " + ", ".join(TIMING_PATHS),
    )
    budget_s: float | None = param(
        10.0,
        'cap on one query\'s timed calls per round, in seconds (slow "before" scans at 1M)',
        allowed="None (no cap) or a number of seconds > 0",
        gt=0,
        allow_inf_nan=False,
    )
    recommend: bool = param(
        True,
        "also measure the audit's recommended index set (a third side)",
        allowed="True (measure the recommended set as a third side) or False",
    )
    factor: float = param(
        1.1,
        "the ratio of medians a verdict needs (1.1: 10 % faster or slower)",
        allowed="a finite number ≥ 1 (1.1 means 10 % faster or slower)",
        notebook=False,
        ge=1,
        allow_inf_nan=False,
    )
    alpha: float = param(
        0.05,
        "the Mann-Whitney significance level a verdict needs",
        allowed="a number strictly between 0 and 1",
        notebook=False,
        gt=0,
        lt=1,
    )

    @field_validator("queries", mode="before")
    @classmethod
    def _queries_as_text(cls, value: object) -> object:
        """A list of names is the comma-separated text; None is "all"."""
        if value is None:
            return "all"
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return ",".join(value) if value else ","
        return value

    @field_validator("queries")
    @classmethod
    def _known_queries(cls, value: str) -> str:
        try:
            resolve_queries(value)
        except ParameterError as e:
            raise refusal(e) from None
        return value

    @field_validator("path")
    @classmethod
    def _known_path(cls, value: str) -> str:
        if value not in TIMING_PATHS:
            raise refusal(ParameterError("path", value, "one of " + ", ".join(TIMING_PATHS)))
        return value

    @model_validator(mode="after")
    def _enough_write_batches(self) -> QueryLatencyParams:
        if self.write_batches and self.write_batches * self.rounds < 2:
            raise ParameterError("write_batches", self.write_batches, "0, or a number with write_batches × rounds ≥ 2")
        return self

    @property
    def query_names(self) -> list[str]:
        """The query names to run, in the spec's order of the names given."""
        return resolve_queries(self.queries)

    def check(self) -> list[str]:
        """The query names to run, once ``output_dir`` is proven writable."""
        self.check_output_dir()
        return self.query_names
