"""The parameters of ``psra-bench trace capture`` and ``trace import`` (``trace tune``'s: cachesim.params)."""

from __future__ import annotations

from psra_bench.paramspec import ParamModel, param

__all__ = ["TraceCaptureParams", "TraceImportParams"]


class TraceCaptureParams(ParamModel):
    """``trace capture``: how long MONITOR runs and how many key sizes are sampled afterwards."""

    seconds: float = param(
        60.0, "run MONITOR for at most this many seconds", allowed="seconds > 0 and ≤ 3600", gt=0, le=3600
    )
    memory_usage_keys: int = param(
        200,
        "keys whose MEMORY USAGE is sampled after the capture (on another connection), 0 for none",
        allowed="a whole number from 0 to 100,000",
        ge=0,
        le=100_000,
    )


class TraceImportParams(ParamModel):
    """``trace import``: the input's format."""

    format: str = param(
        "monitor",
        "monitor, jsonl, libcachesim-csv or oracle-general",
        allowed="one of monitor, jsonl, libcachesim-csv, oracle-general",
        pattern="^(monitor|jsonl|libcachesim-csv|oracle-general)$",
    )
