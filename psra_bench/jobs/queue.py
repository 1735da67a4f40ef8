"""The job queue in one object: a client and, on demand, workers in this process (the spec's ``JobQueue``).

:class:`JobQueue` is the :class:`~psra_bench.jobs.client.JobClient` (submit, status, cancel, wait,
health, the store checks) with the worker's store operations
(:class:`~psra_bench.jobs.worker_store.WorkerStore`) and an in-process host for one
:class:`~psra_bench.jobs.worker.Worker`: :meth:`JobQueue.start_workers` /
:meth:`JobQueue.stop_workers`, as the API's lifespan and the spec's
``register_default_handlers(queue); await queue.start_workers()`` use it. A worker process
(``psra-bench worker``) is :mod:`psra_bench.jobs.process`; a caller that only submits and reads
jobs needs only a JobClient.

:func:`get_job_queue` is the spec's accessor: one JobQueue per settings in this process, and
without an argument the settings of this process's job queue
(:func:`psra_bench.infra.process_job_settings`: the process settings once they are resolved, else
the environment with only the job store made concrete, so it never starts a PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

from psra_bench.exceptions import JobError
from psra_bench.jobs.client import check_job_store_now, job_store_policy_now
from psra_bench.jobs.worker import Worker
from psra_bench.jobs.worker_store import WorkerStore
from psra_bench.settings import Settings

__all__ = [
    "JobQueue",
    "get_job_queue",
    "register_default_handlers",
    "DEFAULT_HANDLERS_GROUP",
    # defined in psra_bench.jobs.client; importable from here as before
    "check_job_store_now",
    "job_store_policy_now",
]


class JobQueue(WorkerStore):
    """Submit, inspect and cancel jobs stored in Redis; optionally run workers in this process.

    Everything of :class:`~psra_bench.jobs.client.JobClient` and
    :class:`~psra_bench.jobs.worker_store.WorkerStore` (same arguments), plus :meth:`start_workers`,
    :meth:`stop_workers` and :attr:`worker`.
    """

    _worker: Worker | None = None

    @property
    def _running_jobs(self) -> Mapping[str, str]:
        """Job id -> job type of the jobs this process's worker runs now (read-only).

        It exists for the spec's monitoring example (``len(queue._running_jobs)``); across all
        workers, ``await queue.health()`` counts them from Redis.
        """
        return MappingProxyType(self._worker.running_jobs() if self._worker is not None else {})

    def _running_here(self) -> int:
        """Jobs this process's worker runs now (health's ``running_in_this_process``)."""
        return self._worker.running_count if self._worker is not None else 0

    # -- workers in this process ----------------------------------------------------------

    async def start_workers(self, concurrency: int | None = None, *, burst: bool = False) -> None:
        """Start taking jobs in this process, up to ``concurrency`` at once (default: max_concurrent_jobs).

        With ``burst`` the worker stops fetching once the queues are empty (see Worker.wait_drained).
        """
        if self._worker is not None and not self._worker.stopped:
            return
        n = self.settings.max_concurrent_jobs if concurrency is None else concurrency
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1000:
            raise JobError(f"concurrency={concurrency!r} is not valid: use a whole number from 1 to 1000.")
        await self.check_job_store()
        self._worker = Worker(self, n, burst=burst)
        await self._worker.start()

    async def stop_workers(self, grace_seconds: float | None = None) -> None:
        """Stop taking jobs; let in-flight ones finish for ``grace_seconds``, then give the rest back to the queue."""
        if self._worker is not None:
            await self._worker.stop(self.grace_seconds if grace_seconds is None else grace_seconds)

    @property
    def worker(self) -> Worker | None:
        """This process's worker, once start_workers was called."""
        return self._worker

    async def close(self) -> None:
        """Stop local workers, forget this queue in get_job_queue's registry, then close it as a JobClient."""
        await self.stop_workers()
        for k, q in list(_QUEUES.items()):
            if q is self:
                del _QUEUES[k]
        await super().close()


_QUEUES: dict[Settings, JobQueue] = {}


def get_job_queue(settings: Settings | None = None) -> JobQueue:
    """The process's JobQueue for ``settings``; ``await queue.close()`` forgets it.

    Without ``settings``: :func:`psra_bench.infra.process_job_settings` — the process settings once
    resolved (``process_settings``/``use_settings``), else the environment with only the job store
    made concrete (at most the job queue's own embedded Valkey is started, never a PostgreSQL).
    Its asyncio Redis client belongs to the event loop that first uses it: close the queue before
    that loop ends (FastAPI's lifespan does), and do not share it across ``asyncio.run`` calls.
    """
    if settings is None:
        from psra_bench.infra import process_job_settings

        settings = process_job_settings()
    queue = _QUEUES.get(settings)
    if queue is None:
        queue = _QUEUES[settings] = JobQueue(settings)
    return queue


#: Entry-point group through which an application offers its default handlers (psra-bench's own:
#: ``psra = "psra_bench.psra.service:register_default_handlers"`` in pyproject.toml).
DEFAULT_HANDLERS_GROUP = "psra_bench.default_handlers"


def register_default_handlers(queue: JobQueue, **options: Any) -> None:
    """Register the installed applications' default handlers on ``queue`` (the spec's name for it).

    The queue knows no application: each entry point of :data:`DEFAULT_HANDLERS_GROUP` is a
    ``register(queue, **options)`` function, loaded when this is called (never at import). For
    psra-bench that is :func:`psra_bench.psra.service.register_default_handlers` (``assessment``
    and ``bulk_import``), and ``options`` are its keyword arguments.
    """
    found = sorted(entry_points(group=DEFAULT_HANDLERS_GROUP), key=lambda ep: ep.name)
    if not found:
        raise JobError(
            f"no default job handlers are installed (entry-point group {DEFAULT_HANDLERS_GROUP!r} is empty): "
            "install psra-bench (pip install -e .) or register handlers with queue.register_handler."
        )
    for ep in found:
        ep.load()(queue, **options)
