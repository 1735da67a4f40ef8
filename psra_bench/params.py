"""One definition per notebook parameter: a pydantic model per notebook (:mod:`psra_bench.paramspec`).

Each model is the single place where a parameter gets its name, type, bounds, default and help
text: :class:`QueryLatencyParams` (``psra_bench.latency.params``), :class:`CacheHitRatesParams` and
:class:`TtlTuningParams` (``psra_bench.cachesim.params``), :class:`LoadTestParams`
(``psra_bench.load.params``) and :class:`ReportNotebookParams` here. From a model come the
notebook's papermill ``parameters`` cell (:meth:`NotebookParams.cell`, written by
``notebooks/_build/make_0N.py``), the values the notebook validates
(:meth:`NotebookParams.from_namespace` + :meth:`NotebookParams.check`), what ``psra-bench report``
passes to papermill (:meth:`NotebookParams.papermill`) and the CLI's options.
"""

from __future__ import annotations

from typing import Any, ClassVar

from psra_bench.cachesim.params import CacheHitRatesParams, TtlTuningParams
from psra_bench.latency.params import QueryLatencyParams
from psra_bench.load.params import LoadTestParams
from psra_bench.paramspec import NotebookParams, check_writable_dir, output_dir_param, param, seed_param, verdicts_param

__all__ = [
    "NotebookParams",
    "QueryLatencyParams",
    "CacheHitRatesParams",
    "TtlTuningParams",
    "LoadTestParams",
    "ReportNotebookParams",
    "NOTEBOOK_PARAMS",
]


class ReportNotebookParams(NotebookParams):
    """Notebook 05: assemble the report from the run folder."""

    NOTEBOOK_NAME: ClassVar[str] = "05_report"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"full": {"quick": False}}

    output_dir: str = output_dir_param("the run folder holding 01…04 results")
    verdicts: int = verdicts_param(5000, "unused here (the report takes the scale from the sections' fingerprints)")
    seed: int = seed_param("unused here")
    run_id: str = param(
        "scratch",
        "the run id the report is filed under",
        allowed="1-80 letters, digits, '.', '_' or '-'",
        pattern=r"^[A-Za-z0-9._-]{1,80}$",
    )
    reports_dir: str = output_dir_param("where history.jsonl lives")
    quick: bool = param(True, "a --quick run: the report and its history entry say mode quick", allowed="True or False")

    def check(self) -> None:
        """The run folder and the reports folder must be writable (the values are valid already)."""
        self.check_output_dir()
        check_writable_dir("reports_dir", self.reports_dir)


#: Each notebook's parameter model, by notebook name.
NOTEBOOK_PARAMS: dict[str, type[NotebookParams]] = {
    cls.NOTEBOOK_NAME: cls
    for cls in (QueryLatencyParams, CacheHitRatesParams, TtlTuningParams, LoadTestParams, ReportNotebookParams)
}
