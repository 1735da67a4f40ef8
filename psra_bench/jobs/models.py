"""Value types of the job queue: status and priority enums, the job snapshot, cancel outcome, job context.

Also the job store's client type (a single Redis or a Redis Cluster) and the errors it raises.

The job lifecycle is ``PENDING → RUNNING → COMPLETED | FAILED | CANCELLED``. One back-edge
exists: a RUNNING job whose worker is lost (lease expired) or stops gracefully before the job
ends goes back to PENDING, at the front of its priority queue; ``attempts`` (runs started)
grows by one when it runs again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import datetime as dt
import decimal
import json
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import redis
import redis.asyncio
import redis.asyncio.cluster
from redis.exceptions import RedisClusterException

from psra_bench.exceptions import JobError, JobInputError

__all__ = [
    "JobStatus",
    "JobPriority",
    "JobResult",
    "CancelResult",
    "SweepReport",
    "JobContext",
    "current_job",
    "run_in_thread",
    "run_to_the_end",
    "TERMINAL_STATUSES",
    "RESERVED_METADATA_KEYS",
    "dump_json",
    "parse_priority",
    "CURRENT_JOB",
    "ProgressCallback",
    "JobHandler",
    "PayloadValidator",
    "JobStoreClient",
    "STORE_ERRORS",
]


class JobStatus(StrEnum):
    """Where a job is in its lifecycle."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for COMPLETED, FAILED and CANCELLED (the states a job never leaves)."""
        return self in TERMINAL_STATUSES


#: The states a job never leaves; its hash then expires after the job's ttl_seconds.
TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class JobPriority(StrEnum):
    """Queue priority; a worker always takes the oldest job of the highest non-empty priority."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"

    @classmethod
    def dequeue_order(cls) -> tuple[JobPriority, ...]:
        """Priorities from the one served first to the one served last."""
        return (cls.CRITICAL, cls.HIGH, cls.NORMAL, cls.LOW)


def parse_priority(value: object) -> JobPriority:
    """``value`` as a JobPriority; anything else raises JobInputError naming the allowed values."""
    if isinstance(value, JobPriority):
        return value
    if isinstance(value, str):
        try:
            return JobPriority(value.strip().lower())
        except ValueError:
            pass
    allowed = ", ".join(p.value for p in JobPriority)
    raise JobInputError("priority", value, f"use one of {allowed}")


#: Metadata keys the queue fills in itself; user metadata may not use them.
RESERVED_METADATA_KEYS = frozenset(
    {
        "job_type",
        "priority",
        "attempts",
        "workers_lost",
        "worker_id",
        "ttl_seconds",
        "timeout_seconds",
        "cancel_requested",
        "committed",
        "owner",
    }
)


def _ms_to_datetime(raw: str | None) -> dt.datetime | None:
    if raw is None or raw == "":
        return None
    return dt.datetime.fromtimestamp(int(float(raw)) / 1000.0, tz=dt.UTC)


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class JobResult:
    """A snapshot of one job's state hash (timestamps are the Redis server's clock, UTC)."""

    job_id: str
    status: JobStatus
    result: Any = None
    error: str | None = None
    error_traceback: str | None = None
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    progress: int = 0
    progress_message: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_seconds(self) -> float | None:
        """Run time of the latest attempt: completed_at - started_at; None if it never started or is unfinished."""
        if self.started_at is None or self.completed_at is None:
            return None
        return max(0.0, (self.completed_at - self.started_at).total_seconds())

    @property
    def owner(self) -> str | None:
        """The label given as ``owner`` at submit (who the job belongs to), or None for nobody."""
        value = self.metadata.get("owner")
        return str(value) if value else None

    @property
    def attempts(self) -> int:
        """How many times a worker started this job."""
        return int(self.metadata.get("attempts", 0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (ISO-8601 timestamps with ``Z``) for the API and the CLI."""
        return {
            "job_id": self.job_id,
            "status": self.status.value,
            "result": self.result,
            "error": self.error,
            "error_traceback": self.error_traceback,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "completed_at": _iso(self.completed_at),
            "duration_seconds": self.duration_seconds,
            "progress": self.progress,
            "progress_message": self.progress_message,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_hash(cls, job_id: str, h: Mapping[str, str]) -> JobResult:
        """Build a snapshot from the fields of the job's Redis hash (as written by job_scripts)."""
        user_meta = json.loads(h["metadata"]) if h.get("metadata") else {}
        metadata: dict[str, Any] = dict(user_meta)
        metadata.update(
            {
                "job_type": h.get("job_type"),
                "priority": h.get("priority"),
                "attempts": int(h.get("attempts") or 0),
                "workers_lost": int(h.get("lost") or 0),
                "worker_id": h.get("worker_id") or None,
                "ttl_seconds": int(h.get("ttl_seconds") or 0),
                "timeout_seconds": float(h["timeout_seconds"]) if h.get("timeout_seconds") else None,
                "owner": h.get("owner") or None,
            }
        )
        if h.get("cancel_requested") == "1":
            metadata["cancel_requested"] = True
        if h.get("committed") == "1":
            metadata["committed"] = True
        return cls(
            job_id=job_id,
            status=JobStatus(h["status"]),
            result=json.loads(h["result"]) if h.get("result") else None,
            error=h.get("error") or None,
            error_traceback=h.get("error_traceback") or None,
            created_at=_ms_to_datetime(h.get("created_at")),
            started_at=_ms_to_datetime(h.get("started_at")),
            completed_at=_ms_to_datetime(h.get("completed_at")),
            progress=int(h.get("progress") or 0),
            progress_message=h.get("progress_message") or None,
            metadata=metadata,
        )


@dataclass(frozen=True)
class CancelResult:
    """What :meth:`JobQueue.cancel` did: the job's status afterwards and one sentence saying why."""

    job_id: str
    status: JobStatus
    message: str
    #: True when this call changed something (a pending job cancelled, or a running one flagged).
    accepted: bool
    #: What happened: "cancelled" (was pending), "accepted" (was running: it ends CANCELLED),
    #: "already_finished" or "too_late" (past its point of no return).
    outcome: str = "accepted"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the spec's ``{job_id, status, message}`` plus ``accepted`` and ``outcome``."""
        return {
            "job_id": self.job_id,
            "status": self.status.value,
            "message": self.message,
            "accepted": self.accepted,
            "outcome": self.outcome,
        }


@dataclass(frozen=True)
class SweepReport:
    """What :meth:`JobQueue.sweep` found and repaired in the job store."""

    #: Jobs scanned (their state hashes).
    scanned: int = 0
    #: RUNNING jobs missing from the processing set, given a lease there again.
    restored_running: int = 0
    #: PENDING jobs in no queue list, put back at the front of their priority's list.
    requeued_pending: int = 0
    #: Ids found in a queue list or the processing set whose hash was gone, dropped from there.
    forgotten: int = 0
    #: Every job id recorded as lost (its hash vanished while it was queued or running), newest last.
    lost: tuple[str, ...] = ()

    @property
    def repaired(self) -> int:
        """Jobs put back into a consistent state by this sweep."""
        return self.restored_running + self.requeued_pending

    def summary(self) -> str:
        """One line: what was scanned, repaired and lost."""
        return (
            f"{self.scanned} jobs scanned; {self.restored_running} running job(s) given their lease back, "
            f"{self.requeued_pending} pending job(s) re-queued, {self.forgotten} id(s) without a job dropped; "
            f"{len(self.lost)} job(s) lost in all"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI's ``jobs sweep --json``)."""
        return {**dataclasses.asdict(self), "lost": list(self.lost), "repaired": self.repaired}


@dataclass(frozen=True)
class JobContext:
    """The job a handler is running for, and the two ways a handler cooperates with its worker.

    * ``cancelled`` is set when the job must stop (a cancel, a lost lease, its timeout, the worker
      shutting down). Async code is stopped by task cancellation anyway; code running in a thread
      (:func:`run_in_thread`) cannot be, so it polls ``cancelled`` or calls :meth:`check_cancelled`.
    * :meth:`point_of_no_return` is called just before a handler commits its effects. It raises
      CancelledError if a cancel came first (roll back and stop); otherwise the job is marked
      committed and from then on cancels are refused, so a job is never reported CANCELLED after
      its effects were committed.
    """

    job_id: str
    job_type: str
    attempt: int
    worker_id: str
    priority: JobPriority
    cancelled: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)
    #: The worker's COMMIT call and its event loop (None outside a worker: then nothing is marked).
    commit: Callable[[], Awaitable[None]] | None = field(default=None, repr=False, compare=False)
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False, compare=False)

    def check_cancelled(self) -> None:
        """Raise CancelledError if the job must stop (for code in a thread, between steps)."""
        if self.cancelled.is_set():
            raise asyncio.CancelledError(f"job {self.job_id} must stop")

    async def point_of_no_return(self) -> None:
        """Mark the job committed, or raise CancelledError when a cancel (or a lost lease) came first."""
        self.check_cancelled()
        if self.commit is not None:
            await self.commit()

    def point_of_no_return_from_thread(self) -> None:
        """:meth:`point_of_no_return` for code running in a thread (it blocks until the worker answered)."""
        self.check_cancelled()
        if self.commit is None or self.loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self.point_of_no_return(), self.loop)
        try:
            future.result()
        except concurrent.futures.CancelledError:  # how the loop's CancelledError reaches a thread
            raise asyncio.CancelledError(f"job {self.job_id} must stop") from None


CURRENT_JOB: ContextVar[JobContext | None] = ContextVar("psra_bench_current_job", default=None)


def current_job() -> JobContext | None:
    """Inside a handler: the JobContext of the job it runs; elsewhere None."""
    return CURRENT_JOB.get()


async def run_to_the_end(work: Awaitable[Any], on_cancel: Callable[[], None] | None = None) -> Any:
    """Await ``work`` to its end even if this task is cancelled meanwhile (once or again and again).

    On the first cancel ``on_cancel()`` is called (to tell the work to stop); the cancel is
    re-raised only after ``work`` has ended, whatever its own outcome.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if on_cancel is not None:
            on_cancel()
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                continue  # cancelled again while the work winds down: keep waiting for it
            except Exception:  # noqa: BLE001 - the work's own ending; the cancel is what we report
                break
        raise


async def run_in_thread(fn: Callable[..., Any], /, *args: Any) -> Any:
    """Run ``fn(*args)`` in a thread for a handler; if the job must stop, wait until the thread really stopped.

    Unlike ``asyncio.to_thread``, a cancelled call does not return while the thread still runs:
    the job's ``cancelled`` event is set, the thread is awaited (it sees the event through
    ``current_job().check_cancelled()``), and only then does CancelledError propagate, so the
    worker frees the job's slot only when the work has stopped.
    """
    loop = asyncio.get_running_loop()
    job = CURRENT_JOB.get()
    future = loop.run_in_executor(None, contextvars.copy_context().run, fn, *args)
    return await run_to_the_end(future, job.cancelled.set if job is not None else None)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"object of type {type(value).__name__} is not JSON serializable")


def dump_json(value: Any, what: str) -> str:
    """``value`` as compact JSON (dates, Decimals, UUIDs, sets and dataclasses converted); JobError otherwise."""
    try:
        return json.dumps(value, default=_json_default, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise JobError(f"{what} cannot be stored as JSON: {e}.") from e


class ProgressCallback(Protocol):
    """``await update_progress(percent, message)`` — percent is a whole number 0..100."""

    def __call__(self, percent: int, message: str = "") -> Awaitable[None]: ...


#: A job handler: ``async def handler(payload, update_progress) -> JSON-able result``.
JobHandler = Callable[[dict[str, Any], ProgressCallback], Awaitable[Any]]
#: Checks a payload at submit time; raises JobError naming the bad field.
PayloadValidator = Callable[[dict[str, Any]], None]

#: The job store's asyncio client: one Redis (or Valkey) server, or a Redis Cluster.
JobStoreClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
#: What a call to the job store may raise when it is unreachable or misbehaves (a cluster client
#: raises RedisClusterException, which is no RedisError, e.g. while a slot is not covered).
STORE_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)
