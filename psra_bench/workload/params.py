"""The parameters of workload capture and index advice, defined once (CLI options and tests are views of them)."""

from __future__ import annotations

from typing import Any, ClassVar

from psra_bench.paramspec import ParamModel, param, seed_param

__all__ = ["CaptureParams", "AdviceParams"]


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
