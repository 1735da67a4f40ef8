"""A crash-safe Redis job queue, generic like arq: it knows nothing of PSRA.

``psra_bench.jobs`` is the spec's ``backend.tasks.async_assessment``.
"""

from __future__ import annotations

from psra_bench.jobs.models import (
    CancelResult,
    JobContext,
    JobHandler,
    JobPriority,
    JobResult,
    JobStatus,
    PayloadValidator,
    ProgressCallback,
    current_job,
)
from psra_bench.jobs.process import HandlersSetup, load_handlers_setup, run_worker, worker_settings
from psra_bench.jobs.queue import JobQueue, get_job_queue, register_default_handlers
from psra_bench.jobs.worker import Worker

__all__ = [
    "JobStatus",
    "JobPriority",
    "JobResult",
    "CancelResult",
    "JobContext",
    "current_job",
    "JobQueue",
    "JobHandler",
    "ProgressCallback",
    "PayloadValidator",
    "get_job_queue",
    "register_default_handlers",
    "Worker",
    "HandlersSetup",
    "run_worker",
    "worker_settings",
    "load_handlers_setup",
]
