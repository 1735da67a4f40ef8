"""The parameters of workload capture and index advice, defined once (CLI options and tests are views of them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import field_validator

from psra_bench.paramspec import NotebookParams, ParamModel, field_of, param, seed_param

if TYPE_CHECKING:
    from psra_bench.workload.model import Workload

__all__ = ["CaptureParams", "AdviceParams", "IndexAdviceParams", "EXAMPLE_WORKLOAD"]

#: The small workload notebook 06 advises when it is given none (shipped in the package).
EXAMPLE_WORKLOAD = "data/example_workload.sql"


class CaptureParams(ParamModel):
    """``psra-bench workload capture``: which statements of ``pg_stat_statements`` make the workload."""

    top: int = param(
        50,
        "keep the N statements with the most total execution time",
        allowed="a whole number from 1 to 10,000 (statements kept)",
        ge=1,
        le=10_000,
    )
    min_calls: int = param(
        1,
        "ignore statements called fewer times",
        allowed="a whole number ≥ 1 (calls a statement needs to be kept)",
        ge=1,
    )


class AdviceParams(ParamModel):
    """``psra-bench indexes advise``: candidate limits, the screening's budget and penalty, the verification's size."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # the tests' small run: few samples, one insert batch size, one round trip per side
        "quick": {"rounds": 2, "iterations": 15, "warmup": 2, "write_batches": 3, "write_batch_rows": 50},
    }

    seed: int = seed_param("seed of the replay parameters and the bootstrap")
    max_candidates: int = param(
        40,
        "candidates screened per greedy step (ranked by their single-index gain)",
        allowed="a whole number from 1 to 1,000 (candidates screened per step)",
        ge=1,
        le=1000,
    )
    max_indexes: int = param(
        5, "indexes the advice may add at most", allowed="a whole number from 0 to 100 (indexes added)", ge=0, le=100
    )
    budget_mb: float = param(
        1024.0,
        "size budget of the added indexes in MB (estimated)",
        allowed="a number of MB > 0 (size budget of the added indexes)",
        gt=0,
    )
    min_gain: float = param(
        0.02,
        "least share of the workload's planner cost an added index must remove, net of its write penalty",
        allowed="a number from 0 to 1 (share of the workload's weighted planner cost)",
        ge=0,
        le=1,
    )
    write_penalty: float = param(
        1.0,
        "weight of the write overhead (index entry size / row size × share of writes to the table)",
        allowed="a number ≥ 0 (weight of the write overhead)",
        ge=0,
    )
    min_write_share: float = param(
        0.05,
        "share of writes assumed for a table the workload holds no write to",
        allowed="a number from 0 to 1 (assumed share of writes)",
        ge=0,
        le=1,
    )
    unused_scans: int = param(
        0,
        "an existing index with at most this many idx_scan in the statistics window is unused",
        allowed="a whole number ≥ 0 (idx_scan threshold)",
        ge=0,
    )
    plan_samples: int = param(
        3,
        "parameter sets each query is planned with (costs are averaged)",
        allowed="a whole number from 1 to 100 (parameter sets per query)",
        ge=1,
        le=100,
    )
    limit_value: int = param(
        20,
        "value of a LIMIT placeholder when replaying",
        allowed="a whole number from 1 to 100,000 (rows a LIMIT placeholder allows)",
        ge=1,
        le=100_000,
    )
    rounds: int = param(
        3,
        "verification rounds per side (current, recommended), interleaved ABBA",
        allowed="a whole number from 1 to 50 (rounds per side)",
        ge=1,
        le=50,
    )
    iterations: int = param(
        30,
        "timed calls per query per round",
        allowed="a whole number from 2 to 100,000 (timed calls)",
        ge=2,
        le=100_000,
    )
    warmup: int = param(2, "untimed calls per query per round", allowed="a whole number ≥ 0 (untimed calls)", ge=0)
    write_batches: int = param(
        5,
        "insert batches into psra_verdicts per round (0 skips the insert cost)",
        allowed="a whole number ≥ 0 (insert batches per round)",
        ge=0,
    )
    write_batch_rows: int = param(
        100, "rows per insert batch", allowed="a whole number from 1 to 10,000 (rows per batch)", ge=1, le=10_000
    )
    factor: float = param(
        1.1,
        "a query is faster only when its median improves by this factor (and the test is significant)",
        allowed="a number ≥ 1 (speedup factor)",
        ge=1,
    )
    alpha: float = param(
        0.05, "significance level of the Mann-Whitney test", allowed="a number between 0 and 1 (alpha)", gt=0, lt=1
    )


#: The knobs of :class:`AdviceParams` notebook 06 and the report set (the rest keep AdviceParams' defaults).
_NOTEBOOK_KNOBS = ("max_indexes", "rounds", "iterations", "warmup", "write_batches", "write_batch_rows")
_SMALL = AdviceParams.QUICK


class IndexAdviceParams(NotebookParams):
    """Notebook 06: index advice for a workload, screened by planner cost and measured against the current set.

    The field defaults are the small run nbval executes (AdviceParams' ``quick`` verification);
    ``full`` measures with AdviceParams' own defaults.
    """

    NOTEBOOK_NAME: ClassVar[str] = "06_index_advice"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {name: AdviceParams.field_default(name) for name in _NOTEBOOK_KNOBS},
    }

    seed: int = seed_param("dataset seed, and the seed of the replay parameters and the bootstrap")
    workload: str | None = param(
        None,
        "a workload file from `psra-bench workload capture`, or a .sql file; None: the example workload shipped "
        "with psra-bench",
        allowed="None (the example workload) or the path of a workload file (JSON from `workload capture`) or a "
        ".sql file",
    )
    verify: bool = param(
        True,
        "measure the recommended index set against the current one (the database must be psra-bench's)",
        allowed="True or False",
    )
    max_indexes: int = field_of(AdviceParams, "max_indexes", _SMALL.max_indexes)
    rounds: int = field_of(AdviceParams, "rounds", _SMALL.rounds)
    iterations: int = field_of(AdviceParams, "iterations", _SMALL.iterations)
    warmup: int = field_of(AdviceParams, "warmup", _SMALL.warmup)
    write_batches: int = field_of(AdviceParams, "write_batches", _SMALL.write_batches)
    write_batch_rows: int = field_of(AdviceParams, "write_batch_rows", _SMALL.write_batch_rows)

    @field_validator("workload", mode="before")
    @classmethod
    def _workload_as_text(cls, value: object) -> object:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    def workload_path(self) -> Path:
        """The workload file: ``workload``, or the example shipped with psra-bench."""
        from psra_bench.resources import shipped_file

        return Path(self.workload) if self.workload is not None else shipped_file(EXAMPLE_WORKLOAD)

    def advice_params(self) -> AdviceParams:
        """The AdviceParams of this run: the notebook's knobs and seed, the rest at their defaults."""
        return AdviceParams.NOTEBOOK.replace(seed=self.seed, **{name: getattr(self, name) for name in _NOTEBOOK_KNOBS})

    def check(self) -> Workload:
        """The workload, read and parsed before any work; ``output_dir`` proven writable (values are valid already)."""
        from psra_bench.workload.model import read_workload

        self.check_output_dir()
        return read_workload(self.workload_path())
