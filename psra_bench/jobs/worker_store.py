"""The worker's side of the job store: take jobs, renew leases, record ends, give jobs back, reap and sweep.

A :class:`WorkerStore` is a :class:`~psra_bench.jobs.client.JobClient` that a
:class:`~psra_bench.jobs.worker.Worker` runs jobs through; every method is one atomic Lua script
(:mod:`psra_bench.jobs.scripts`) on the queue's keys. Guarantees:

* **Leases and fencing.** A running job holds a lease (default 5 s) that its worker renews every
  lease/4 s. When a worker dies, any worker's reaper puts the job back at the front of its queue
  (PENDING); after ``max_attempts`` lost workers the job FAILS with "worker lost N times". A
  worker that could not renew a lease for 3/4 of a lease stops that job itself, before the lease
  can expire, so two workers never run one job at the same time (see the worker's fencing).
* **Completion exactly once.** Only the worker that still owns the lease can end the job
  (:meth:`WorkerStore.finish` is a compare-and-set): a late finisher changes nothing.
* **Repair.** :meth:`WorkerStore.sweep` (every worker, every ``sweep_seconds``; ``psra-bench jobs
  sweep`` by hand) repairs state that an evicting or edited store made inconsistent and reports the
  jobs that were lost. On a cluster it scans the node that owns the queue's hash tag.
"""

from __future__ import annotations

import math
from typing import Any

import redis.asyncio.cluster

from psra_bench.constants import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_AGE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_SWEEP_SECONDS,
)
from psra_bench.exceptions import JobError
from psra_bench.jobs.client import JobClient
from psra_bench.jobs.models import JobPriority, JobStatus, JobStoreClient, SweepReport
from psra_bench.settings import Settings

__all__ = ["WorkerStore"]


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a SCAN pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class WorkerStore(JobClient):
    """A JobClient with the operations a Worker runs jobs through, and the worker's timing options.

    ``lease_seconds`` is a running job's lease, ``max_attempts`` how many lost workers a job
    survives, ``poll_interval`` how often an idle worker polls besides pub/sub wake-ups,
    ``grace_seconds`` how long a stopping worker lets its jobs finish, ``sweep_seconds`` how often
    it sweeps.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client: JobStoreClient | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        sweep_seconds: float = DEFAULT_SWEEP_SECONDS,
    ) -> None:
        if not (isinstance(lease_seconds, int | float) and 0.1 <= lease_seconds <= 3600):
            raise JobError(f"lease_seconds={lease_seconds!r} is not valid: use a number of seconds from 0.1 to 3600.")
        if not (isinstance(max_attempts, int) and not isinstance(max_attempts, bool) and 1 <= max_attempts <= 100):
            raise JobError(f"max_attempts={max_attempts!r} is not valid: use a whole number from 1 to 100.")
        if not (isinstance(poll_interval, int | float) and 0.01 <= poll_interval <= 60):
            raise JobError(f"poll_interval={poll_interval!r} is not valid: use seconds from 0.01 to 60.")
        if not (isinstance(grace_seconds, int | float) and grace_seconds >= 0):
            raise JobError(f"grace_seconds={grace_seconds!r} is not valid: use a number of seconds ≥ 0.")
        if not (isinstance(sweep_seconds, int | float) and 1 <= sweep_seconds <= 86_400):
            raise JobError(f"sweep_seconds={sweep_seconds!r} is not valid: use seconds from 1 to 86400.")
        super().__init__(settings, client=client, max_age_seconds=max_age_seconds)
        self.lease_seconds = float(lease_seconds)
        self.max_attempts = max_attempts
        self.poll_interval = float(poll_interval)
        self.grace_seconds = float(grace_seconds)
        self.sweep_seconds = float(sweep_seconds)

    async def dequeue(self, worker_id: str, max_running: int | None = None) -> tuple[str, ...]:
        """One job: ``('job', id, type, payload, attempt, priority, timeout)``, or ``('full',)`` / ``('empty',)``."""
        state, jobs = await self.dequeue_many(worker_id, 1, max_running)
        return ("job", *jobs[0]) if jobs else (state,)

    async def dequeue_many(
        self, worker_id: str, count: int, max_running: int | None = None
    ) -> tuple[str, list[tuple[str, str, str, str, str, str]]]:
        """Reap expired leases, then take up to ``count`` jobs while under the cap (one atomic script).

        Returns ``("jobs", [(id, job_type, payload_json, attempt, priority, timeout_seconds), ...])``,
        ``("full", [])`` (the global cap is reached) or ``("empty", [])``.
        """
        cap = self.settings.max_concurrent_jobs if max_running is None else max_running
        keys = [self.processing_key, self.channel, self.lost_key]
        keys += [self.queue_keys[p] for p in JobPriority.dequeue_order()]
        args: list[str | int] = [
            self.prefix,
            worker_id,
            math.ceil(self.lease_seconds * 1000),
            cap,
            self.max_attempts,
            self.max_age_seconds,
            count,
        ]
        reply = [str(x) for x in await self._scripts["DEQUEUE"](keys=keys, args=args)]
        if reply[0] != "jobs":
            return reply[0], []
        fields = reply[1:]
        return "jobs", [
            (fields[i], fields[i + 1], fields[i + 2], fields[i + 3], fields[i + 4], fields[i + 5])
            for i in range(0, len(fields), 6)
        ]

    async def heartbeat(self, worker_id: str, leases: list[tuple[str, int]]) -> list[int]:
        """Renew the leases of ``(job_id, attempt)`` pairs; per job -1 = lost, 1 = cancel requested, 0 = fine."""
        if not leases:
            return []
        args: list[str | int] = [worker_id, math.ceil(self.lease_seconds * 1000), self.max_age_seconds]
        for job_id, attempt in leases:
            args += [job_id, attempt]
        reply = await self._scripts["HEARTBEAT"](
            keys=[self.processing_key, self.lost_key, *(self.job_key(job_id) for job_id, _ in leases)], args=args
        )
        return [int(x) for x in reply]

    async def report_progress(self, worker_id: str, job_id: str, attempt: int, percent: int, message: str) -> int:
        """Write progress if this worker still owns the job; -1 = lost, 1 = cancel requested, 0 = fine."""
        return int(
            await self._scripts["PROGRESS"](keys=[self.job_key(job_id)], args=[worker_id, attempt, percent, message])
        )

    async def finish(
        self,
        worker_id: str,
        job_id: str,
        attempt: int,
        status: JobStatus,
        *,
        result_json: str = "",
        error: str = "",
        traceback_text: str = "",
    ) -> int:
        """Compare-and-set the job's final state.

        Returns 1 (recorded), 2 (recorded CANCELLED instead: an accepted cancel won) or 0 (not ours).
        """
        cap = self.settings.max_concurrent_jobs
        reply = await self._scripts["FINISH"](
            keys=[self.job_key(job_id), self.processing_key, self.channel],
            args=[job_id, worker_id, attempt, status.value, result_json, error, traceback_text, cap],
        )
        return int(reply)

    async def commit(self, worker_id: str, job_id: str, attempt: int) -> int:
        """The job's point of no return: 0 = marked committed, 1 = a cancel came first, -1 = no longer ours."""
        return int(await self._scripts["COMMIT"](keys=[self.job_key(job_id)], args=[worker_id, attempt]))

    async def requeue(self, worker_id: str, job_id: str, attempt: int) -> bool:
        """Give an unfinished job back (front of its queue, PENDING) if this worker still owns it."""
        reply = await self._scripts["REQUEUE"](
            keys=[self.job_key(job_id), self.processing_key, self.channel],
            args=[job_id, worker_id, attempt, self.prefix, self.max_age_seconds],
        )
        return bool(reply)

    async def reap(self, limit: int = 100) -> int:
        """Requeue (or fail) running jobs whose lease expired; return how many were moved."""
        return int(
            await self._scripts["REAP"](
                keys=[self.processing_key, self.channel, self.lost_key],
                args=[self.prefix, self.max_attempts, self.max_age_seconds, limit],
            )
        )

    async def sweep(self, batch: int = 500) -> SweepReport:
        """Repair job state that became inconsistent (evicted or deleted keys); report what was lost.

        * a RUNNING job missing from the processing set gets a lease there again (its worker's next
          heartbeat renews it; a dead worker's job is re-queued by the reaper after the lease);
        * a PENDING job in no queue list goes back to the front of its priority's list;
        * an id in a queue list or in the processing set whose hash is gone is dropped there and
          recorded as lost.

        Every repair is one atomic script that re-checks its job, so sweeping beside live workers
        is safe. Cost: one SCAN of the queue's job hashes (on a cluster, of the node that owns the
        queue's hash tag only) and one read of each queue list.
        """
        lease_ms = math.ceil(self.lease_seconds * 1000)
        queued: set[str] = set()
        forgotten = 0
        for prio in JobPriority:
            ids: list[str] = await self.redis.lrange(self.queue_keys[prio], 0, -1)  # type: ignore[assignment]
            queued.update(ids)
            forgotten += await self._forget_missing(ids, self.queue_keys[prio], "list")
        running_ids: list[str] = await self.redis.zrange(self.processing_key, 0, -1)  # type: ignore[assignment]
        running = set(running_ids)
        forgotten += await self._forget_missing(running_ids, self.processing_key, "zset")
        scanned = restored = requeued = 0
        keys = await self._job_hashes(batch)
        prefix_len = len(self.job_key(""))
        for start in range(0, len(keys), batch):
            chunk = keys[start : start + batch]
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.hget(key, "status")
                statuses = await pipe.execute()
            for key, status in zip(chunk, statuses, strict=True):
                if status is None:
                    continue
                scanned += 1
                job_id = key[prefix_len:]
                if status == JobStatus.RUNNING.value and job_id not in running:
                    restored += int(
                        await self._scripts["REPAIR_RUNNING"](keys=[key, self.processing_key], args=[job_id, lease_ms])
                    )
                elif status == JobStatus.PENDING.value and job_id not in queued:
                    requeued += int(
                        await self._scripts["REPAIR_PENDING"](
                            keys=[key, self.channel], args=[job_id, self.prefix, self.max_age_seconds]
                        )
                    )
        return SweepReport(scanned, restored, requeued, forgotten, await self.lost_jobs())

    async def _job_hashes(self, batch: int) -> list[str]:
        """The keys of this queue's job hashes (SCAN; on a cluster, of the node that owns the hash tag)."""
        pattern = _glob_escape(self.job_key("")) + "*"
        node: dict[str, Any] = {}
        if isinstance(self.redis, redis.asyncio.cluster.RedisCluster):
            node = {"target_nodes": await self._tag_node(self.redis)}
        client: Any = self.redis  # redis-py types scan_iter without target_nodes
        return [key async for key in client.scan_iter(match=pattern, count=batch, _type="hash", **node)]

    async def _forget_missing(self, ids: list[str], container: str, kind: str) -> int:
        if not ids:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(self.job_key(job_id))
            exists = await pipe.execute()
        dropped = 0
        for job_id, found in zip(ids, exists, strict=True):
            if not found:
                dropped += int(
                    await self._scripts["FORGET"](
                        keys=[self.job_key(job_id), container, self.lost_key],
                        args=[job_id, kind, self.max_age_seconds],
                    )
                )
        return dropped

    async def mark_worker_alive(self, worker_id: str, alive_seconds: float) -> int:
        """Record a worker as alive for ``alive_seconds`` (0 removes it); return live workers."""
        return int(
            await self._scripts["WORKER_ALIVE"](
                keys=[self.workers_key],
                args=[worker_id, math.ceil(alive_seconds * 1000), self.max_age_seconds],
            )
        )
