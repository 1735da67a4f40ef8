"""Experiments 02 and 03 (notebooks 02, 03): workload traces, live cache replay, TTL simulation and tuning."""

from __future__ import annotations

from psra_bench.cachesim.experiment import cache_hit_results, ttl_tuning_results
from psra_bench.cachesim.explorer import resolve_interactive, show_ttl_explorer
from psra_bench.cachesim.replay import replay_live
from psra_bench.cachesim.ttl_sim import compare_sim_to_live, simulate, sweep, tune
from psra_bench.cachesim.workload import Trace, WorkloadSpec, generate_trace

__all__ = [
    "WorkloadSpec",
    "Trace",
    "generate_trace",
    "replay_live",
    "simulate",
    "sweep",
    "tune",
    "compare_sim_to_live",
    "cache_hit_results",
    "ttl_tuning_results",
    "show_ttl_explorer",
    "resolve_interactive",
]
