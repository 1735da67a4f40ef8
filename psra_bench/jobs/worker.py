"""The job worker loop: take jobs from Redis, run handlers, renew leases, reap lost jobs, honour cancels.

A :class:`Worker` runs inside one asyncio loop with up to ``concurrency`` jobs at once (the
global cap, ``settings.max_concurrent_jobs``, is enforced by the dequeue script across all
workers). Three background tasks: the fetch loop (dequeue up to the free local slots in one
script call; woken by pub/sub, else polling), the heartbeat loop (renew leases every lease/4 s,
notice cancels and lost leases, run the reaper every lease/2 s and the sweep every
``sweep_seconds``) and the pub/sub listener (wake-ups and instant cancels). On a Redis Cluster the
listener subscribes on the node that owns the queue's hash tag (redis-py's ClusterPubSub picks it
from the channel's name); a cluster delivers every PUBLISH to all of its nodes.

Stopping a job: every stop (a cancel, a lost lease, the job's timeout, shutdown) sets the job's
``cancelled`` event and cancels its task, and then again every 5 ms until it ends (a single
cancel can be swallowed inside a Redis call on Python 3.11). This is level-triggered
cancellation, as in Trio and anyio: a handler that awaits during its cleanup must shield it.

**Fencing:** each job has a local deadline, ``FENCE_FRACTION`` of a lease after its last
successful renewal, kept by a timer (not a heartbeat tick, so a hung link cannot delay it). When
it passes, the job is stopped here before the server-side lease can expire and another worker
can take it.

Handlers must not block the event loop for longer than about a lease (use
:func:`psra_bench.jobs.models.run_in_thread` for heavy CPU work): a worker that cannot heartbeat
loses its jobs to other workers. A Worker runs jobs through a
:class:`~psra_bench.jobs.worker_store.WorkerStore` (every Redis call is one of its scripts). Build
one in-process with :meth:`psra_bench.jobs.queue.JobQueue.start_workers`; a worker process is
:func:`psra_bench.jobs.process.run_worker` (``psra-bench worker``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import socket
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from psra_bench.constants import DEFAULT_GRACE_SECONDS
from psra_bench.exceptions import JobError, PsraBenchError
from psra_bench.jobs.models import (
    CURRENT_JOB,
    STORE_ERRORS,
    JobContext,
    JobPriority,
    JobStatus,
    dump_json,
)
from psra_bench.jobs.worker_store import WorkerStore

__all__ = ["Worker"]

log = logging.getLogger(__name__)

_PROGRESS_MESSAGE_MAX = 500

#: A job is stopped here once its lease was last renewed this fraction of a lease ago. The
#: server's lease runs at least a whole lease from the same renewal, so the job has stopped
#: (an async handler at once; a thread handler when it next checks ``cancelled``) before any
#: other worker can take it.
FENCE_FRACTION = 0.75

#: Seconds between the cancels of a handler that was told to stop and has not ended yet. Like
#: Trio's and anyio's level-triggered cancellation: a handler that awaits in its cleanup after
#: CancelledError must shield that await (asyncio.shield), or it is cancelled again.
NUDGE_INTERVAL = 0.005

#: What a heartbeat survives: the job store failing, or not answering within half a lease.
_BEAT_ERRORS: tuple[type[Exception], ...] = (*STORE_ERRORS, TimeoutError)

#: Why a job's handler is being stopped. "lost" (the lease) overrides the others; otherwise the first wins.
STOP_REASONS = ("cancel", "lost", "timeout", "shutdown")


@dataclass
class _Run:
    """One job this worker is running."""

    job_id: str
    job_type: str
    payload_json: str
    attempt: int
    priority: JobPriority
    #: Seconds the handler may run (0 = no limit).
    timeout: float
    #: Loop time when the request that last renewed the lease (or took the job) was sent.
    renewed_at: float
    ctx: JobContext | None = None
    task: asyncio.Task[Any] | None = None
    #: Why the handler is being stopped: one of STOP_REASONS, or None while it may run.
    reason: str | None = None
    #: True once the handler passed its point of no return (cancels and timeouts no longer apply).
    committed: bool = False
    fence: asyncio.TimerHandle | None = None
    deadline: asyncio.TimerHandle | None = None
    nudge: asyncio.TimerHandle | None = None

    def disarm(self) -> None:
        """Cancel the fence, timeout and nudge timers."""
        for handle in (self.fence, self.deadline, self.nudge):
            if handle is not None:
                handle.cancel()


class Worker:
    """Takes jobs of one WorkerStore in this event loop; build it through ``JobQueue.start_workers``."""

    def __init__(self, queue: WorkerStore, concurrency: int, *, burst: bool = False) -> None:
        self.queue = queue
        self.concurrency = concurrency
        self.burst = burst
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        #: Jobs this worker ended (any final status) since it started.
        self.jobs_done = 0
        #: Jobs this worker stopped because their lease could not be renewed in time (fencing).
        self.jobs_lost = 0
        self.stopped = False
        self._runs: dict[str, _Run] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._fetch_done = asyncio.Event()
        self._stopping = False
        self._dequeuing = False
        self._next_reap = 0.0
        self._next_sweep = 0.0
        #: Why the job store last failed this worker, until it answers again (one WARNING each way, not one per poll).
        self._store_down: str | None = None
        self._background: list[asyncio.Task[None]] = []
        self._fetch_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Worker({self.id!r}, concurrency={self.concurrency}, running={len(self._runs)})"

    @property
    def running_count(self) -> int:
        """Jobs this worker is running now."""
        return len(self._runs)

    def running_jobs(self) -> dict[str, str]:
        """Job id -> job type of the jobs this worker is running now (a copy)."""
        return {job_id: run.job_type for job_id, run in self._runs.items()}

    async def start(self) -> None:
        """Register as alive and start the fetch, heartbeat and listener tasks."""
        await self.queue.mark_worker_alive(self.id, self.queue.lease_seconds * 3)
        self._background = [
            asyncio.create_task(self._listen(), name=f"jobs-listen-{self.id}"),
            asyncio.create_task(self._heartbeat_loop(), name=f"jobs-heartbeat-{self.id}"),
        ]
        self._fetch_task = asyncio.create_task(self._fetch_loop(), name=f"jobs-fetch-{self.id}")
        log.info(
            "worker %s started: concurrency=%d, max_concurrent_jobs=%d, lease=%.1fs",
            self.id,
            self.concurrency,
            self.queue.settings.max_concurrent_jobs,
            self.queue.lease_seconds,
        )

    async def wait_drained(self) -> None:
        """Wait until the fetch loop ended (burst mode: the queues were empty) and in-flight jobs ended."""
        await self._fetch_done.wait()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> None:
        """Stop fetching; give in-flight jobs ``grace_seconds`` to end, then re-queue the rest; deregister."""
        if self.stopped:
            return
        self._stopping = True
        self._wake.set()
        if self._fetch_task is not None:
            if not self._dequeuing:  # never cancel a dequeue in flight: its job would be stranded
                self._fetch_task.cancel()
            await asyncio.gather(self._fetch_task, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_seconds)
            for run in list(self._runs.values()):
                self._cancel_run(run, "shutdown")
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        try:
            await self.queue.mark_worker_alive(self.id, 0)
        except STORE_ERRORS as e:
            log.warning("worker %s: could not deregister: %s", self.id, type(e).__name__)
        self.stopped = True
        log.info("worker %s stopped after %d jobs", self.id, self.jobs_done)

    # -- fetching ---------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        try:
            while not self._stopping:
                await self._slots.acquire()
                held = 1
                while held < self.concurrency and not self._slots.locked():
                    await self._slots.acquire()  # a free slot is taken without suspending
                    held += 1
                runs: list[_Run] = []
                try:
                    runs = await self._next_jobs(held)
                finally:
                    for _ in range(held - len(runs)):
                        self._slots.release()
                if not runs:
                    break
                for run in runs:
                    self._spawn(run)
        finally:
            self._fetch_done.set()

    async def _next_jobs(self, count: int) -> list[_Run]:
        while not self._stopping:
            self._wake.clear()
            self._dequeuing = True
            sent_at = asyncio.get_running_loop().time()
            try:
                state, jobs = await self.queue.dequeue_many(self.id, count)
            except STORE_ERRORS as e:
                self._store_failed("dequeue", e)
                state, jobs = "error", []
            else:
                self._store_answers()
            finally:
                self._dequeuing = False
            if jobs:
                return [_Run(i, t, p, int(a), JobPriority(pr), float(to or 0), sent_at) for i, t, p, a, pr, to in jobs]
            if state == "empty" and self.burst:
                return []
            try:
                await asyncio.wait_for(self._wake.wait(), self.queue.poll_interval)
            except TimeoutError:
                pass
        return []

    def _store_failed(self, what: str, e: BaseException) -> None:
        """One WARNING when the job store stops answering this worker; later failures stay quiet until it is back."""
        if self._store_down is None:
            log.warning("worker %s: the job store is not answering (%s failed: %s); retrying quietly",
                        self.id, what, type(e).__name__)  # fmt: skip
        self._store_down = type(e).__name__

    def _store_answers(self) -> None:
        if self._store_down is not None:
            log.warning("worker %s: the job store answers again", self.id)
            self._store_down = None

    def _spawn(self, run: _Run) -> None:
        self._runs[run.job_id] = run
        self._arm_fence(run)
        task = asyncio.create_task(self._execute(run), name=f"job-{run.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._job_task_done)

    def _job_task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("worker %s: job task crashed: %r", self.id, task.exception())

    # -- running one job --------------------------------------------------------------------

    async def _execute(self, run: _Run) -> None:
        try:
            handler = self.queue.handler_for(run.job_type)
            if handler is None:
                await self._finish(
                    run,
                    JobStatus.FAILED,
                    error=(
                        f"no handler for job type {run.job_type!r} is registered in worker {self.id}: "
                        "register it in the worker's handlers setup."
                    ),
                )
                return
            try:
                payload = json.loads(run.payload_json)
            except ValueError as e:
                await self._finish(run, JobStatus.FAILED, error=f"the stored payload is not valid JSON: {e}")
                return
            loop = asyncio.get_running_loop()
            run.ctx = JobContext(
                run.job_id,
                run.job_type,
                run.attempt,
                self.id,
                run.priority,
                commit=lambda: self._commit(run),
                loop=loop,
            )
            if run.reason is not None:  # stopped (fenced, cancelled) before it even started
                run.ctx.cancelled.set()
            token = CURRENT_JOB.set(run.ctx)
            try:  # the handler task copies the context, so current_job() works inside it
                run.task = asyncio.create_task(_call_handler(handler, payload, self._progress_callback(run)))
            finally:
                CURRENT_JOB.reset(token)
            if run.reason is not None:
                run.task.cancel()
            if run.timeout > 0:
                run.deadline = loop.call_later(run.timeout, self._cancel_run, run, "timeout")
            try:
                result = await run.task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                await self._after_cancel(run)
            except PsraBenchError as e:  # bad input or an unreachable server: one sentence, no traceback
                await self._finish(run, JobStatus.FAILED, error=" ".join(str(e).split()))
            except Exception as e:
                await self._finish(
                    run, JobStatus.FAILED, error=f"{type(e).__name__}: {e}", traceback_text=traceback.format_exc()
                )
            else:
                # It returned although a stop was asked for (the cancel was swallowed, or came late).
                # A requested cancel still wins (the FINISH script decides atomically); a lost lease,
                # a timeout or a shutdown do not discard a result that is already there.
                if run.reason == "cancel":
                    await self._finish(run, JobStatus.CANCELLED, error="cancelled on request while running")
                    return
                try:
                    result_json = dump_json(result, f"the result of job {run.job_id}")
                except JobError as e:
                    await self._finish(run, JobStatus.FAILED, error=str(e))
                else:
                    await self._finish(run, JobStatus.COMPLETED, result_json=result_json)
        finally:
            run.disarm()
            run.ctx = None  # breaks the run <-> context cycle (its commit closure) for the GC
            self._runs.pop(run.job_id, None)

    async def _commit(self, run: _Run) -> None:
        """The job's point of no return (JobContext.point_of_no_return): mark it committed, or stop it."""
        try:
            flag = await self.queue.commit(self.id, run.job_id, run.attempt)
        except STORE_ERRORS as e:  # unknown whether a cancel came first: do not commit
            self._cancel_run(run, "lost")
            raise asyncio.CancelledError(f"the job store did not answer ({type(e).__name__})") from None
        if flag == -1:
            self._cancel_run(run, "lost")
            raise asyncio.CancelledError("the job's lease was lost")
        if flag == 1:
            self._cancel_run(run, "cancel")
            raise asyncio.CancelledError("cancelled on request")
        run.committed = True
        if run.deadline is not None:  # a committed job finishes: its timeout no longer applies
            run.deadline.cancel()

    async def _after_cancel(self, run: _Run) -> None:
        if run.reason == "cancel":
            await self._finish(run, JobStatus.CANCELLED, error="cancelled on request while running")
        elif run.reason == "timeout":
            await self._finish(run, JobStatus.FAILED, error=f"timed out after {run.timeout:g} s")
        elif run.reason == "shutdown":
            try:
                given_back = await self.queue.requeue(self.id, run.job_id, run.attempt)
            except STORE_ERRORS as e:  # the reaper re-queues it when the lease expires
                log.warning("worker %s: could not re-queue job %s (%s)", self.id, run.job_id, type(e).__name__)
            else:
                log.info(
                    "worker %s: job %s %s",
                    self.id,
                    run.job_id,
                    "re-queued (worker stopping)" if given_back else "was no longer ours",
                )
        elif run.reason == "lost":
            log.warning(
                "worker %s: job %s lost: its lease could not be renewed in time; stopped it here "
                "(the reaper gives it to another worker)",
                self.id,
                run.job_id,
            )
        else:
            await self._finish(run, JobStatus.FAILED, error="the handler was cancelled from inside (CancelledError)")

    async def _finish(
        self, run: _Run, status: JobStatus, *, result_json: str = "", error: str = "", traceback_text: str = ""
    ) -> bool:
        delay = 0.05
        for _ in range(6):
            try:
                reply = await self.queue.finish(
                    self.id,
                    run.job_id,
                    run.attempt,
                    status,
                    result_json=result_json,
                    error=error,
                    traceback_text=traceback_text,
                )
            except STORE_ERRORS as e:
                log.warning(
                    "worker %s: recording the end of job %s failed (%s); retrying",
                    self.id,
                    run.job_id,
                    type(e).__name__,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.queue.lease_seconds / 3)
                continue
            if reply == 2:
                log.info("worker %s: job %s was cancelled before its %s end was recorded", self.id, run.job_id, status)
            if reply:
                self.jobs_done += 1
            else:
                log.warning(
                    "worker %s: job %s (attempt %d) was no longer ours; its %s outcome was discarded",
                    self.id,
                    run.job_id,
                    run.attempt,
                    status.value,
                )
            return bool(reply)
        log.error(
            "worker %s: could not record the end of job %s; its lease will expire and it will run again",
            self.id,
            run.job_id,
        )
        return False

    def _progress_callback(self, run: _Run) -> Callable[..., Awaitable[None]]:
        async def update_progress(percent: int, message: str = "") -> None:
            """Record progress (0..100) and a message; raises CancelledError when the job must stop."""
            if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 <= percent <= 100:
                raise JobError(f"progress percent={percent!r} is not valid: use a whole number from 0 to 100.")
            if run.reason is not None:
                raise asyncio.CancelledError(f"job {run.job_id} must stop ({run.reason})")
            text = str(message)[:_PROGRESS_MESSAGE_MAX]
            try:
                flag = await self.queue.report_progress(self.id, run.job_id, run.attempt, int(percent), text)
            except STORE_ERRORS as e:
                log.warning("worker %s: progress of job %s not recorded (%s)", self.id, run.job_id, type(e).__name__)
                return
            if run.reason is not None:  # told to stop while the call was in flight (its cancel may be lost)
                raise asyncio.CancelledError(f"job {run.job_id} must stop ({run.reason})")
            if flag == -1:
                self._cancel_run(run, "lost")
                raise asyncio.CancelledError(f"job {run.job_id} lost its lease")
            if flag == 1 and not run.committed:
                self._cancel_run(run, "cancel")
                raise asyncio.CancelledError(f"job {run.job_id} cancelled on request")

        return update_progress

    def _cancel_run(self, run: _Run, reason: str) -> None:
        """Stop ``run``'s handler for ``reason`` (see STOP_REASONS); a committed job ignores cancels and timeouts."""
        if run.committed and reason in ("cancel", "timeout"):
            return
        if run.reason is None or reason == "lost":
            run.reason = reason
        if run.ctx is not None:
            run.ctx.cancelled.set()
        if run.task is not None and not run.task.done():
            run.task.cancel()
            if run.nudge is None:
                run.nudge = asyncio.get_running_loop().call_later(NUDGE_INTERVAL, self._nudge, run)

    def _nudge(self, run: _Run) -> None:
        """Cancel a stopping handler again, every NUDGE_INTERVAL until it ends.

        A single cancel can be swallowed: redis-py sends with ``asyncio.wait_for``, which on
        Python 3.11 drops a cancel that arrives as the send completes.
        """
        if run.task is None or run.task.done() or self._runs.get(run.job_id) is not run:
            return
        run.task.cancel()
        run.nudge = asyncio.get_running_loop().call_later(NUDGE_INTERVAL, self._nudge, run)

    # -- fencing ----------------------------------------------------------------------------

    def _arm_fence(self, run: _Run) -> None:
        if run.fence is not None:
            run.fence.cancel()
        when = run.renewed_at + self.queue.lease_seconds * FENCE_FRACTION
        run.fence = asyncio.get_running_loop().call_at(when, self._fence_passed, run)

    def _fence_passed(self, run: _Run) -> None:
        if self._runs.get(run.job_id) is not run or run.reason == "lost":
            return
        self.jobs_lost += 1
        age = asyncio.get_running_loop().time() - run.renewed_at
        log.warning(
            "worker %s: lease of job %s not renewed for %.2f s (lease %.2f s); stopping it before it expires",
            self.id,
            run.job_id,
            age,
            self.queue.lease_seconds,
        )
        self._cancel_run(run, "lost")

    # -- heartbeats, reaping, wake-ups ------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.queue.lease_seconds / 4  # one missed renewal stays inside the fence
        while True:
            await asyncio.sleep(interval)
            await self.beat()

    async def beat(self) -> None:
        """Renew this worker's leases, act on cancels and lost leases, and reap and sweep when due."""
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        runs = list(self._runs.values())
        lease = self.queue.lease_seconds
        try:
            async with asyncio.timeout(lease / 2):  # a hung server must not stall the heartbeat loop
                await self.queue.mark_worker_alive(self.id, lease * 3)
                flags = await self.queue.heartbeat(self.id, [(r.job_id, r.attempt) for r in runs])
                for run, flag in zip(runs, flags, strict=True):
                    if flag == -1:
                        self._cancel_run(run, "lost")
                        continue
                    if run.reason != "lost" and self._runs.get(run.job_id) is run:
                        run.renewed_at = sent_at
                        self._arm_fence(run)
                    if flag == 1:
                        self._cancel_run(run, "cancel")
                if sent_at >= self._next_reap:
                    self._next_reap = sent_at + lease / 2
                    moved = await self.queue.reap()
                    if moved:
                        log.info("worker %s: reaped %d job(s) whose worker was lost", self.id, moved)
            if sent_at >= self._next_sweep:
                first = self._next_sweep == 0.0
                self._next_sweep = sent_at + self.queue.sweep_seconds
                if not first:  # not at start-up: a fleet restarting together would all sweep at once
                    report = await self.queue.sweep()
                    if report.repaired or report.forgotten:
                        log.warning("worker %s: sweep: %s", self.id, report.summary())
        except _BEAT_ERRORS as e:
            if runs:  # a lease at risk is worth a line every time
                log.warning("worker %s: heartbeat failed (%s)", self.id, type(e).__name__)
            else:
                self._store_failed("heartbeat", e)

    async def _listen(self) -> None:
        while True:
            pubsub = self.queue.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.queue.channel)
                self._wake.set()  # anything published while we were not subscribed
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if msg is None:
                        continue
                    data = str(msg.get("data", ""))
                    if data.startswith("cancel:"):
                        run = self._runs.get(data[len("cancel:") :])
                        if run is not None:
                            self._cancel_run(run, "cancel")
                    else:
                        self._wake.set()
            except STORE_ERRORS as e:
                log.warning(
                    "worker %s: event listener lost its connection (%s); polling meanwhile", self.id, type(e).__name__
                )
                await asyncio.sleep(self.queue.poll_interval)
            finally:
                await pubsub.aclose()


async def _call_handler(handler: Callable[..., Any], payload: dict[str, Any], progress: Any) -> Any:
    result = handler(payload, progress)
    if inspect.isawaitable(result):
        result = await result
    return result
