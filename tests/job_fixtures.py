"""Fixtures and helpers of the job-queue tests (tests/test_jobs.py, tests/test_job_storms.py).

``make_queue`` builds in-process queues on the test's namespace with the handlers of
tests/job_handlers.py; ``spawn_worker`` starts real ``psra-bench worker`` processes (killed in
teardown) against the same servers; ``wait_until`` / ``wait_status`` poll for a state.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from psra_bench.jobs import JobPriority, JobQueue, JobStatus
from psra_bench.jobs.process import load_handlers_setup
from psra_bench.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = f"{ROOT / 'tests' / 'job_handlers.py'}:setup"
setup_test_handlers = load_handlers_setup(HANDLERS)

__all__ = ["make_queue", "spawn_worker", "wait_until", "wait_status", "wait_workers", "HANDLERS", "ROOT"]


@pytest.fixture
async def make_queue(namespaced_settings: Settings) -> AsyncIterator[Callable[..., JobQueue]]:
    """Factory of JobQueues on the test's namespace with the test handlers; all closed after the test."""
    made: list[JobQueue] = []

    def make(settings: Settings | None = None, **options: Any) -> JobQueue:
        options.setdefault("lease_seconds", 1.0)
        options.setdefault("poll_interval", 0.1)
        q = JobQueue(settings or namespaced_settings, **options)
        setup_test_handlers(q)
        made.append(q)
        return q

    yield make
    for q in made:
        await q.stop_workers(grace_seconds=0)
        await q.close()


async def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02) -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def wait_status(q: JobQueue, job_id: str, status: JobStatus, timeout: float = 15.0) -> Any:
    """Wait until the job has ``status``; return its JobResult."""

    async def check() -> Any:
        state = await q.get_job_status(job_id)
        return state if state is not None and state.status is status else None

    return await wait_until(check, timeout)


@pytest.fixture
def spawn_worker(namespaced_settings: Settings, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``python -m psra_bench worker`` processes on the test namespace; every one is killed in teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(
        concurrency: int = 1,
        max_concurrent_jobs: int = 10,
        lease: float = 1.0,
        extra: tuple[str, ...] = (),
        *,
        handlers: str | None = HANDLERS,
        jobs_url: str | None = None,
        env_extra: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """One worker process; ``handlers=None`` runs the default handlers, ``jobs_url`` overrides JOBS_REDIS_URL."""
        jobs = namespaced_settings.jobs_redis or namespaced_settings.redis
        assert namespaced_settings.redis is not None and jobs is not None and namespaced_settings.db_dsn is not None
        env = dict(os.environ)
        env.update(
            {
                "REDIS_URL": namespaced_settings.redis.url(),
                "JOBS_REDIS_URL": jobs_url or jobs.url(),
                "PSRA_DB_DSN": namespaced_settings.db_dsn,
                "MAX_CONCURRENT_JOBS": str(max_concurrent_jobs),
                "PSRA_BENCH_HOME": str(tmp_path / "home"),
                **(env_extra or {}),
            }
        )
        log = open(tmp_path / f"worker-{len(procs)}.log", "wb")  # noqa: SIM115 - closed with the process
        cmd = [
            sys.executable,
            "-m",
            "psra_bench",
            "worker",
            "--concurrency",
            str(concurrency),
            *(("--handlers", handlers) if handlers else ()),
            "--lease",
            str(lease),
            "--poll-interval",
            "0.2",
            "--grace",
            "0.5",
            "--namespace",
            namespaced_settings.cache_namespace,
            *extra,
        ]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


async def wait_workers(q: JobQueue, n: int, procs: list[subprocess.Popen[bytes]]) -> None:
    """Wait until ``n`` workers are registered as alive, failing fast if a process died."""

    async def ready() -> bool:
        for p in procs:
            assert p.poll() is None, f"worker process exited early with code {p.returncode}"
        return int((await q.health())["workers"]) >= n

    await wait_until(ready, timeout=30, interval=0.05)


@dataclass
class LostKeys:
    """The jobs of :func:`lose_keys_while_held` and the two whose hashes it deleted."""

    running: list[str]
    high: list[str]
    normal: list[str]
    doomed_running: str
    doomed_pending: str

    @property
    def survivors(self) -> list[str]:
        return [
            j for j in self.running + self.high + self.normal if j not in (self.doomed_running, self.doomed_pending)
        ]


async def lose_keys_while_held(q: JobQueue) -> LostKeys:
    """Hold 4 ``gated`` jobs running (every slot of a 4-job queue) with 3 HIGH and 4 NORMAL waiting, then
    delete the processing set, the NORMAL queue list and the hashes of one running and one pending job.

    ``q`` needs 4 started workers, max_concurrent_jobs=4 and the ``gated`` handler of tests/job_handlers.py;
    nothing else moves while the keys go (every slot is held).
    """
    running = [await q.submit("gated", {}, priority=JobPriority.CRITICAL) for _ in range(4)]
    for job_id in running:
        await wait_status(q, job_id, JobStatus.RUNNING)
    high = [await q.submit("gated", {}, priority=JobPriority.HIGH) for _ in range(3)]
    normal = [await q.submit("gated", {}) for _ in range(4)]
    await q.redis.delete(q.processing_key)  # every running job's lease entry
    await q.redis.delete(q.queue_keys[JobPriority.NORMAL])  # four pending jobs in no queue
    lost = LostKeys(running, high, normal, running[0], high[0])
    await q.redis.delete(q.job_key(lost.doomed_running), q.job_key(lost.doomed_pending))
    return lost


async def check_lost_keys_repaired(q: JobQueue, lost: LostKeys, report: Any) -> None:
    """After ``report = await q.sweep()``: repaired, both doomed jobs reported lost, every other job COMPLETED."""
    assert report.requeued_pending == 4 and report.scanned == len(lost.running) + len(lost.high) + len(lost.normal) - 2
    for job_id in lost.running[1:]:  # given their lease back (by the sweep or their worker's own heartbeat)
        assert await q.redis.zscore(q.processing_key, job_id) is not None
    for job_id in lost.normal:
        assert await q.redis.lpos(q.queue_keys[JobPriority.NORMAL], job_id) is not None

    async def both_lost() -> bool:
        # the running one is noticed by its worker's heartbeat, the queued one by the sweep (or a dequeue)
        return {lost.doomed_running, lost.doomed_pending} <= set(await q.lost_jobs())

    await wait_until(both_lost)
    for job_id in lost.running + lost.high + lost.normal:
        await q.redis.set(q.key(f"t:release:{job_id}"), "1")
    for job_id in lost.survivors:
        await wait_status(q, job_id, JobStatus.COMPLETED)
    assert await q.get_job_status(lost.doomed_running) is None and await q.get_job_status(lost.doomed_pending) is None
    assert (await q.health())["running_jobs"] == 0 and (await q.sweep()).repaired == 0
