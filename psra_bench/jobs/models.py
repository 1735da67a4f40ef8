"""Value types of the job queue: status and priority enums, the job snapshot, cancel outcome, job context.

The job lifecycle is ``PENDING → RUNNING → COMPLETED | FAILED | CANCELLED``. One back-edge
exists: a RUNNING job whose worker is lost (lease expired) or stops gracefully before the job
ends goes back to PENDING, at the front of its priority queue; ``attempts`` (runs started)
grows by one when it runs again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from psra_bench.exceptions import JobError, JobInputError

__all__ = [
    "JobStatus",
    "JobPriority",
    "JobResult",
    "CancelResult",
    "JobContext",
    "current_job",
    "TERMINAL_STATUSES",
    "RESERVED_METADATA_KEYS",
    "dump_json",
    "parse_priority",
    "CURRENT_JOB",
    "ProgressCallback",
    "JobHandler",
    "PayloadValidator",
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
    {"job_type", "priority", "attempts", "workers_lost", "worker_id", "ttl_seconds", "cancel_requested", "owner"}
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
                "owner": h.get("owner") or None,
            }
        )
        if h.get("cancel_requested") == "1":
            metadata["cancel_requested"] = True
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form ``{job_id, status, message}`` (the spec's cancel response)."""
        return {"job_id": self.job_id, "status": self.status.value, "message": self.message}


@dataclass(frozen=True)
class JobContext:
    """The job a handler is running for: id, type, attempt number and the worker running it."""

    job_id: str
    job_type: str
    attempt: int
    worker_id: str
    priority: JobPriority


CURRENT_JOB: ContextVar[JobContext | None] = ContextVar("psra_bench_current_job", default=None)


def current_job() -> JobContext | None:
    """Inside a handler: the JobContext of the job it runs; elsewhere None."""
    return CURRENT_JOB.get()


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
