"""The performance report: the papermill runner, the assembly of report.md/html/results.json, sections, history page."""

from __future__ import annotations

from psra_bench.report.assemble import assemble_report, read_history
from psra_bench.report.history import detect_steps, write_history_page
from psra_bench.report.runner import ReportParams, ReportRun, load_params_file, run_report
from psra_bench.report.sections import SECTION_BUILDERS

__all__ = [
    "ReportParams",
    "ReportRun",
    "run_report",
    "load_params_file",
    "assemble_report",
    "read_history",
    "SECTION_BUILDERS",
    "detect_steps",
    "write_history_page",
]
