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
from pathlib import Path
from typing import Any

import pytest

from psra_bench.jobs import JobQueue, JobStatus
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
