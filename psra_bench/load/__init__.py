"""Experiment 04 (notebook 04): Locust and open-model load tests of the API, four configurations."""

from __future__ import annotations

from psra_bench.load.api_server import ApiServer, start_api_server, stop_api_server
from psra_bench.load.experiment import CONFIGURATIONS, run_configuration, run_load
from psra_bench.load.generators import LoadPlan, run_locust, run_open_model
from psra_bench.load.results import overall_table, users_supported

__all__ = [
    "ApiServer",
    "start_api_server",
    "stop_api_server",
    "LoadPlan",
    "run_locust",
    "run_open_model",
    "CONFIGURATIONS",
    "run_configuration",
    "run_load",
    "users_supported",
    "overall_table",
]
