"""A crash-safe Redis job queue, generic like arq: it knows nothing of PSRA and starts no PostgreSQL.

``psra_bench.jobs`` is the spec's ``backend.tasks.async_assessment``. By concern, as arq splits
``ArqRedis`` from ``Worker``: ``client`` (JobClient: submit, status, cancel, wait, health, the store
checks, key naming), ``worker_store`` (WorkerStore: dequeue, leases, finish, reap, sweep) and
``worker`` (the Worker loop), ``queue`` (JobQueue: both, with workers hosted in this process;
``get_job_queue``), ``process`` (``run_worker``, the ``psra-bench worker`` process), ``models``
(value types) and ``scripts`` (the Lua scripts).
"""

from __future__ import annotations

from psra_bench.jobs.client import JobClient
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
from psra_bench.jobs.worker_store import WorkerStore

__all__ = [
    "JobStatus",
    "JobPriority",
    "JobResult",
    "CancelResult",
    "JobContext",
    "current_job",
    "JobClient",
    "JobQueue",
    "JobHandler",
    "ProgressCallback",
    "PayloadValidator",
    "get_job_queue",
    "register_default_handlers",
    "Worker",
    "WorkerStore",
    "HandlersSetup",
    "run_worker",
    "worker_settings",
    "load_handlers_setup",
]
