"""The job queue's client: submit, inspect, cancel and wait for jobs stored in Redis, and check the store.

Jobs live in Redis, not in a process: :meth:`JobClient.submit` writes the job's state hash and
pushes its id onto the list of its priority; workers (:mod:`psra_bench.jobs.worker`, in a
``psra-bench worker`` process or in-process through :class:`psra_bench.jobs.queue.JobQueue`) take
them. A client runs no job, holds no lease and starts no server: it needs a concrete job store in
its settings (the caller resolves them, e.g. :func:`psra_bench.infra.job_store_settings`). What a
client may rely on:

* **Strict priority.** CRITICAL > HIGH > NORMAL > LOW; a lower priority waits while a higher
  one has jobs (no aging: a steady stream of high-priority work starves low-priority jobs).
* **Global concurrency cap.** At most ``settings.max_concurrent_jobs`` jobs run at once across
  all workers sharing the Redis.
* **Completion exactly once.** Execution is at-least-once (a lost worker's job runs again), but
  its end is recorded once (see :mod:`psra_bench.jobs.worker_store`). Handlers make their effects
  idempotent per job id (the assessment verdict's id derives from it).
* **Cancels land.** A cancel of a running job is accepted (and then the job ends CANCELLED,
  whatever its handler does meanwhile) unless the job has ended or passed its *point of no
  return* (:meth:`JobContext.point_of_no_return`: its effects are being committed), which the
  answer says.
* **Timeouts and limits.** A job runs at most ``timeout_seconds`` (per submit, per handler, or
  ``settings.job_timeout_seconds``), then FAILS "timed out after N s"; a payload larger than
  ``settings.max_job_payload_bytes`` is refused at submit (JobPayloadTooLarge).
* **TTL.** A finished job's hash expires ``ttl_seconds`` after it ends; a job that waits (or
  whose worker vanished with no other worker alive) expires after ``max_age_seconds`` (default
  one day), so nothing stays in Redis forever.

``get_job_status`` returns None for an unknown (or expired) id; ``cancel`` raises
JobNotFoundError for one, because cancelling nothing is a caller error.

**The job store.** Jobs live on ``settings.jobs_redis`` (``JOBS_REDIS_URL``, else the cache's
Redis; the embedded default is a Valkey of their own with noeviction and an append-only file). A
server that evicts keys can drop a queue list or a job hash, so :meth:`JobClient.check_job_store`
(called before workers start, and by the API) refuses one unless
``PSRA_ALLOW_EVICTING_JOB_STORE=true``.

**Redis Cluster.** Every key of a queue starts with ``{<namespace>jobs}:``, one hash tag (see
:mod:`psra_bench.jobs.scripts`), so the whole queue lives in one slot of a cluster and every
script is single-slot; queues of other namespaces hash elsewhere. With
``PSRA_JOBS_REDIS_CLUSTER=true`` (settings.jobs_redis_cluster) the client connects to the cluster
that ``JOBS_REDIS_URL`` names a node of (a ``RedisCluster`` client); ``JobClient(settings,
client=...)`` takes any asyncio client instead. The eviction check asks the node that owns the tag.

A job may carry an ``owner``: an opaque label given at submit (the API uses ``tenant:{id}`` or
``operator``), stored in the job hash and reported as ``metadata["owner"]``. The queue only keeps
it; who may see or cancel whose job is the caller's policy (:mod:`psra_bench.api.access`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
from redis.exceptions import SlotNotCoveredError

from psra_bench import constants
from psra_bench.constants import DEFAULT_MAX_AGE_SECONDS, MAX_JOB_TIMEOUT_SECONDS, MAX_TTL_SECONDS
from psra_bench.exceptions import (
    DatabaseConnectionError,
    JobError,
    JobInputError,
    JobNotFoundError,
    JobPayloadTooLarge,
    JobStoreError,
)
from psra_bench.infra.redis_client import create_async_redis
from psra_bench.jobs import scripts as job_scripts
from psra_bench.jobs.models import (
    RESERVED_METADATA_KEYS,
    STORE_ERRORS,
    CancelResult,
    JobHandler,
    JobPriority,
    JobResult,
    JobStatus,
    JobStoreClient,
    PayloadValidator,
    dump_json,
    parse_priority,
)
from psra_bench.settings import RedisSettings, Settings, redact

__all__ = ["JobClient", "check_job_store_now", "job_store_policy_now"]

log = logging.getLogger(__name__)

#: Read timeout of the queue's Redis client (longer than the cache's fail-fast 0.5 s).
SOCKET_TIMEOUT = 5.0
#: Longest owner label a job may carry.
MAX_OWNER_LENGTH = 200


def _timeout_ok(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value <= MAX_JOB_TIMEOUT_SECONDS
    )


def _create_client(settings: Settings, store: RedisSettings) -> JobStoreClient:
    """The queue's asyncio client for ``store``: a RedisCluster when settings.jobs_redis_cluster, else a Redis."""
    timeout = max(SOCKET_TIMEOUT, store.socket_timeout)
    if not settings.jobs_redis_cluster:
        return create_async_redis(store, decode_responses=True, socket_timeout=timeout)
    if store.db != 0:
        raise JobError(f"the job store {store!r} is a Redis Cluster, which has only db 0: use …/0 in JOBS_REDIS_URL.")
    return redis.asyncio.cluster.RedisCluster(
        **store.client_kwargs() | {"socket_timeout": timeout},
        max_connections=store.max_connections,
        decode_responses=True,
    )


def _job_type_ok(job_type: object) -> bool:
    return (
        isinstance(job_type, str)
        and 0 < len(job_type) <= 64
        and job_type.isascii()
        and job_type.replace("_", "").replace("-", "").isalnum()
    )


class JobClient:
    """Submit, inspect and cancel jobs stored in Redis, and check the store; it runs no job.

    The client talks to ``settings.jobs_redis`` (else ``settings.redis``) through a client it makes
    (a RedisCluster when ``settings.jobs_redis_cluster``) and closes; ``client`` (an asyncio Redis or
    RedisCluster made with ``decode_responses=True``) replaces it, and then the caller closes it.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client: JobStoreClient | None = None,
        max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS,
    ) -> None:
        store = settings.jobs_redis or settings.redis  # JOBS_REDIS_URL defaults to REDIS_URL
        if store is None:
            raise JobError(
                "the job queue needs a Redis server: resolve the settings first "
                "(psra_bench.infra.job_store_settings or ensure_services)."
            )
        if not (isinstance(max_age_seconds, int) and max_age_seconds >= 60):
            raise JobError(f"max_age_seconds={max_age_seconds!r} is not valid: use a whole number ≥ 60.")
        if client is not None and not client.get_encoder().decode_responses:
            raise JobError("the job queue's client must decode responses: make it with decode_responses=True.")
        self.settings = settings
        self.max_age_seconds = max_age_seconds
        #: Where the jobs live (settings.jobs_redis, else the cache's Redis; on a cluster, one of its nodes).
        self.store = store
        self._owns_client = client is None
        #: The job store's client: a Redis, or a RedisCluster (the queue's keys still share one slot).
        self.redis: JobStoreClient = _create_client(settings, store) if client is None else client
        self._handlers: dict[str, JobHandler] = {}
        self._validators: dict[str, PayloadValidator] = {}
        self._timeouts: dict[str, float] = {}
        self._close_callbacks: list[Callable[[], Any]] = []
        #: What every key of this queue starts with: ``{<namespace>jobs}:``, one cluster hash tag.
        self.prefix = constants.JOB_QUEUE_PREFIX.format(namespace=settings.cache_namespace)
        self.processing_key = self.prefix + "processing"
        self.workers_key = self.prefix + "workers"
        self.lost_key = self.prefix + "lost"
        self.channel = self.prefix + "events"
        self.queue_keys = {p: f"{self.prefix}queue:{p.value}" for p in JobPriority}
        self._scripts = {name: self.redis.register_script(getattr(job_scripts, name)) for name in job_scripts.__all__}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(namespace={self.settings.cache_namespace!r}, handlers={sorted(self._handlers)})"

    # -- keys and handlers ---------------------------------------------------------------

    def key(self, suffix: str) -> str:
        """``suffix`` under this queue's prefix, ``{<namespace>jobs}:{suffix}``: a handler's own Redis key.

        It shares the queue's hash tag, so on a cluster it is in the queue's slot (a handler's script
        or MULTI may combine it with the queue's keys).
        """
        return self.prefix + suffix

    def job_key(self, job_id: str) -> str:
        """The Redis key of one job's state hash: ``{<namespace>jobs}:job:{job_id}``."""
        return self.prefix + constants.JOB_KEY.format(job_id=job_id)

    def register_handler(
        self,
        job_type: str,
        handler: JobHandler,
        *,
        validate: PayloadValidator | None = None,
        timeout_seconds: float | None = None,
    ) -> None:
        """Make ``job_type`` submittable here and runnable by this process's workers.

        ``validate`` runs at submit; ``timeout_seconds`` is the type's default timeout (else
        ``settings.job_timeout_seconds``; a submit may give its own).
        """
        if not _job_type_ok(job_type):
            raise JobError(f"job_type={job_type!r} is not valid: use 1-64 letters, digits, '_' or '-'.")
        if not callable(handler):
            raise JobError(f"the handler for job type {job_type!r} is not callable: pass an async function.")
        if timeout_seconds is not None and not _timeout_ok(timeout_seconds):
            raise JobError(
                f"timeout_seconds={timeout_seconds!r} is not valid: "
                f"use seconds above 0, at most {MAX_JOB_TIMEOUT_SECONDS}."
            )
        self._handlers[job_type] = handler
        if timeout_seconds is not None:
            self._timeouts[job_type] = float(timeout_seconds)
        else:
            self._timeouts.pop(job_type, None)
        if validate is not None:
            self._validators[job_type] = validate
        else:
            self._validators.pop(job_type, None)

    def handler_for(self, job_type: str) -> JobHandler | None:
        """The handler registered for ``job_type`` here, or None."""
        return self._handlers.get(job_type)

    @property
    def handlers(self) -> Mapping[str, JobHandler]:
        """Registered job types and their handlers (read-only view)."""
        return MappingProxyType(dict(self._handlers))

    @property
    def max_concurrent_jobs(self) -> int:
        """Most jobs running at once across all workers sharing this Redis (settings.max_concurrent_jobs)."""
        return self.settings.max_concurrent_jobs

    def add_close_callback(self, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` (sync, run in a thread, or async) when the queue is closed: handlers' resources."""
        self._close_callbacks.append(callback)

    # -- client API -----------------------------------------------------------------------

    async def submit(
        self,
        job_type: str,
        payload: dict[str, Any],
        priority: JobPriority | str = JobPriority.NORMAL,
        ttl_seconds: int = 3600,
        metadata: dict[str, Any] | None = None,
        *,
        owner: str | None = None,
        timeout_seconds: float | None = None,
    ) -> str:
        """Queue a job (PENDING) and return its id (a uuid4 string); bad input raises JobError.

        ``owner`` (1-200 characters, or None for nobody) is kept with the job and never changes.
        ``timeout_seconds`` (default: the handler's, else settings.job_timeout_seconds) bounds its
        run time. A payload over ``settings.max_job_payload_bytes`` raises JobPayloadTooLarge.
        """
        if not self.settings.enable_async_tasks:
            raise JobError("async tasks are disabled (ENABLE_ASYNC_TASKS=false): enable them to submit jobs.")
        if job_type not in self._handlers:
            known = ", ".join(sorted(self._handlers)) or "none registered"
            raise JobInputError("job_type", job_type, f"use one of the job types known to this queue: {known}")
        prio = parse_priority(priority)
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
            raise JobInputError("ttl_seconds", ttl_seconds, f"use a whole number from 1 to {MAX_TTL_SECONDS}")
        if not isinstance(payload, dict):
            raise JobInputError("payload", payload, "use a JSON object (dict)")
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise JobInputError("metadata", metadata, "use a dict or None")
            clash = sorted(RESERVED_METADATA_KEYS & set(metadata))
            if clash:
                raise JobInputError(f"metadata.{clash[0]}", metadata[clash[0]], "this key is reserved for the queue")
        if owner is not None and not (isinstance(owner, str) and 0 < len(owner) <= MAX_OWNER_LENGTH):
            raise JobInputError("owner", owner, f"use a label of 1 to {MAX_OWNER_LENGTH} characters, or None")
        if timeout_seconds is None:
            timeout = self._timeouts.get(job_type, float(self.settings.job_timeout_seconds))
        elif _timeout_ok(timeout_seconds):
            timeout = float(timeout_seconds)
        else:
            raise JobInputError(
                "timeout_seconds", timeout_seconds, f"use seconds above 0, at most {MAX_JOB_TIMEOUT_SECONDS}"
            )
        validator = self._validators.get(job_type)
        if validator is not None:
            validator(payload)
        try:
            payload_json = dump_json(payload, "payload")
        except JobError as e:
            raise JobInputError("payload", payload, "use JSON-serializable values only") from e
        size = len(payload_json.encode())
        if size > self.settings.max_job_payload_bytes:
            raise JobPayloadTooLarge(size, self.settings.max_job_payload_bytes)
        try:
            metadata_json = dump_json(metadata or {}, "metadata")
        except JobError as e:
            raise JobInputError("metadata", metadata, "use JSON-serializable values only") from e
        job_id = str(uuid.uuid4())
        await self._scripts["SUBMIT"](
            keys=[self.job_key(job_id), self.queue_keys[prio], self.channel],
            args=[
                job_id,
                job_type,
                prio.value,
                payload_json,
                ttl_seconds,
                metadata_json,
                self.max_age_seconds,
                owner or "",
                f"{timeout:g}",
            ],
        )
        return job_id

    async def get_job_status(self, job_id: str) -> JobResult | None:
        """The job's current state, or None when no such job exists (never submitted, or expired)."""
        if not isinstance(job_id, str) or not job_id:
            return None
        h: dict[str, str] = await self.redis.hgetall(self.job_key(job_id))  # type: ignore[assignment]
        if not h or "status" not in h:
            return None
        return JobResult.from_hash(job_id, h)

    async def cancel(self, job_id: str, *, wait_seconds: float = 0.0) -> CancelResult:
        """Cancel a job and say what happened (``CancelResult.outcome``).

        * ``cancelled`` — it was pending: it never starts;
        * ``accepted`` — it was running: it ends CANCELLED, whatever its handler does now (its
          worker stops it within a heartbeat; the FINISH script records CANCELLED even if the
          handler returns);
        * ``already_finished`` — it had ended (its final status is reported);
        * ``too_late`` — it passed its point of no return (its effects are being committed).

        With ``wait_seconds`` > 0, wait up to that long for an accepted cancel to land and report
        the final status. Raises JobNotFoundError for an unknown (or expired) id.
        """
        if not isinstance(job_id, str) or not job_id:
            raise JobNotFoundError(str(job_id))
        reply = await self._scripts["CANCEL"](keys=[self.job_key(job_id), self.channel], args=[job_id, self.prefix])
        kind = reply[0]
        if kind == "missing":
            raise JobNotFoundError(job_id)
        if kind == "cancelled":
            return CancelResult(
                job_id, JobStatus.CANCELLED, "Job cancelled successfully (it had not started).", True, "cancelled"
            )
        if kind == "final":
            status = JobStatus(reply[1])
            return CancelResult(
                job_id, status, f"Job already {status.value}; nothing to cancel.", False, "already_finished"
            )
        if kind == "committed":
            return CancelResult(
                job_id,
                JobStatus(reply[1]),
                "Too late to cancel: the job passed its point of no return (its changes are being committed); "
                "it will finish.",
                False,
                "too_late",
            )
        if wait_seconds > 0:
            final = await self.wait(job_id, timeout=wait_seconds, raise_on_timeout=False)
            if final is not None and final.status.finished:
                return CancelResult(job_id, final.status, "Job cancelled successfully.", True, "accepted")
        return CancelResult(
            job_id, JobStatus.RUNNING, "Cancellation accepted; the job will end as cancelled.", True, "accepted"
        )

    async def wait(
        self, job_id: str, *, timeout: float = 30.0, interval: float = 0.05, raise_on_timeout: bool = True
    ) -> JobResult | None:
        """Poll until the job is finished and return its final state (None if it vanished; see raise_on_timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            state = await self.get_job_status(job_id)
            if state is None or state.status.finished:
                return state
            if time.monotonic() >= deadline:
                if raise_on_timeout:
                    raise JobError(f"job {job_id!r} is still {state.status.value} after {timeout:g} s.", job_id)
                return state
            await asyncio.sleep(interval)

    async def health(self) -> dict[str, Any]:
        """The spec's health document, with counts read from Redis (all workers), never raising."""
        base: dict[str, Any] = {
            "service": "async_job_queue",
            "max_concurrent_jobs": self.settings.max_concurrent_jobs,
            "registered_handlers": sorted(self._handlers),
        }
        order = JobPriority.dequeue_order()
        try:
            res = await self._scripts["HEALTH"](
                keys=[self.processing_key, self.workers_key, *(self.queue_keys[p] for p in order)]
            )
        except STORE_ERRORS as e:
            return {"status": "error", **base, "error": f"Redis unavailable: {type(e).__name__}"}
        queued = {p.value: int(n) for p, n in zip(order, res[2:], strict=True)}
        return {
            "status": "ok",
            **base,
            "running_jobs": int(res[0]),
            "queued_jobs": queued,
            "workers": int(res[1]),
            "running_in_this_process": self._running_here(),
        }

    def _running_here(self) -> int:
        """Jobs running in this process: none for a client (a JobQueue with workers counts its own)."""
        return 0

    async def close(self) -> None:
        """Close the Redis client it made, then call the close callbacks (newest first)."""
        if self._owns_client:
            await self.redis.aclose()
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in reversed(callbacks):
            if inspect.iscoroutinefunction(callback):
                await callback()
            else:
                await asyncio.to_thread(callback)

    # -- the job store's safety ------------------------------------------------------------

    async def store_policy(self) -> tuple[str, str]:
        """``(where, policy)``: the server holding this queue's keys and its maxmemory-policy ('' if unknown).

        ``where`` is ``host:port``; on a cluster, of the node that owns the queue's hash tag.
        """
        node: Any = {}
        where = f"{self.store.host}:{self.store.port}"
        if isinstance(self.redis, redis.asyncio.cluster.RedisCluster):
            owner = await self._tag_node(self.redis)
            node, where = {"target_nodes": owner}, f"{owner.host}:{owner.port}"
        client: Any = self.redis  # redis-py types neither call with target_nodes
        try:
            found = await client.config_get("maxmemory-policy", **node)
            return where, str(found.get("maxmemory-policy", ""))
        except redis.ResponseError:  # CONFIG disabled (managed servers): INFO still tells
            info = await client.info("memory", **node)
            return where, str(info.get("maxmemory_policy", ""))

    async def check_job_store(self) -> str:
        """The jobs server's maxmemory-policy; JobStoreError if it evicts keys (unless that is allowed).

        On a cluster the server asked is the node that owns the queue's hash tag (where its keys
        live). ``PSRA_ALLOW_EVICTING_JOB_STORE=true`` (settings.allow_evicting_job_store) turns the
        error into a logged warning.
        """
        where, policy = await self.store_policy()
        if policy == "noeviction":
            return policy
        if isinstance(self.redis, redis.asyncio.cluster.RedisCluster):
            where = f"{where} (the cluster node of {self.prefix})"
            fix = "set maxmemory-policy noeviction on every primary of the cluster"
        else:
            fix = "point JOBS_REDIS_URL at a server with maxmemory-policy noeviction"
        message = (
            f"the job store at {where} evicts keys "
            f"(maxmemory-policy={policy or 'unknown'}), so queued and running jobs can vanish: "
            f"{fix}, or set PSRA_ALLOW_EVICTING_JOB_STORE=true to run anyway."
        )
        if not self.settings.allow_evicting_job_store:
            raise JobStoreError(message)
        log.warning("%s (running anyway: PSRA_ALLOW_EVICTING_JOB_STORE=true)", message)
        return policy

    async def lost_jobs(self) -> tuple[str, ...]:
        """Ids of the jobs recorded as lost (their hash vanished while queued or running), oldest first."""
        ids: list[str] = await self.redis.zrange(self.lost_key, 0, -1)  # type: ignore[assignment]
        return tuple(ids)

    async def _tag_node(self, cluster: redis.asyncio.cluster.RedisCluster) -> redis.asyncio.cluster.ClusterNode:
        """The primary that owns this queue's hash tag: where all of its keys live."""
        await cluster.initialize()  # a no-op once the client knows the slots
        node = cluster.get_node_from_key(self.prefix)
        if node is None:
            raise SlotNotCoveredError(f"no node of the cluster serves the slot of {self.prefix!r}")
        return node


def check_job_store_now(settings: Settings) -> str:
    """:meth:`JobClient.check_job_store` for a caller outside an event loop (``psra-bench serve``, before serving).

    A job store that does not answer raises DatabaseConnectionError naming its host:port (no password).
    """

    async def check() -> str:
        client = JobClient(settings)
        try:
            return await client.check_job_store()
        finally:
            await client.close()

    try:
        return asyncio.run(check())
    except (redis.ConnectionError, redis.TimeoutError) as e:
        store = settings.jobs_redis or settings.redis
        assert store is not None  # JobClient refused to start without one
        reason = redact(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        raise DatabaseConnectionError("the job store's Redis", store.host, store.port, reason) from None


def job_store_policy_now(settings: Settings) -> tuple[str, str]:
    """:meth:`JobClient.store_policy` outside an event loop (``psra-bench doctor``): where jobs live, its policy."""

    async def ask() -> tuple[str, str]:
        client = JobClient(settings)
        try:
            return await client.store_policy()
        finally:
            await client.close()

    return asyncio.run(ask())
