"""The arq side of benchmarks/bench_jobs.py; runs ONLY in the separate venv ``.venv-arq`` (arq pins redis<6).

Standalone on purpose (imports arq and the standard library, never psra_bench). Two commands:

* ``worker``: one arq worker process with a no-op function, until SIGTERM/SIGINT;
* ``load``: enqueue ``--jobs`` no-op jobs (as fast as possible, or at ``--rate`` per second),
  wait until the queue is drained, then print one JSON line with every job's enqueue, start
  and finish time in epoch milliseconds, so bench_jobs.py computes the same statistics for arq
  and for psra-bench.

Every Redis key arq writes is moved under ``--namespace`` (arq's fixed ``arq:`` key prefixes are
rebound at start-up), so the benchmark shares a Redis without touching anyone else's keys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import arq.connections
import arq.constants
import arq.jobs
import arq.worker
from arq.connections import RedisSettings, create_pool
from arq.jobs import Job

__all__ = ["main"]

_PREFIX_NAMES = ("job_key_prefix", "in_progress_key_prefix", "result_key_prefix", "retry_key_prefix", "abort_jobs_ss")


def namespace_arq(namespace: str) -> str:
    """Rebind arq's key prefixes under ``namespace``; return the namespaced queue name."""
    for module in (arq.connections, arq.jobs, arq.worker):
        for name in _PREFIX_NAMES:
            if hasattr(module, name):
                setattr(module, name, namespace + getattr(arq.constants, name))
    return namespace + arq.constants.default_queue_name


async def noop(ctx: dict[str, Any]) -> None:
    """The benchmark's no-op job."""
    return None


def run_worker(redis_url: str, namespace: str, max_jobs: int, poll_delay: float) -> None:
    """Run one arq worker until a signal; mark it ready under the namespace once it is connected."""
    queue_name = namespace_arq(namespace)

    async def on_startup(ctx: dict[str, Any]) -> None:
        await ctx["redis"].set(f"{namespace}arq:ready:{os.getpid()}", "1", ex=600)

    worker = arq.worker.Worker(
        functions=[arq.worker.func(noop, name="noop")],
        redis_settings=RedisSettings.from_dsn(redis_url),
        queue_name=queue_name,
        max_jobs=max_jobs,
        poll_delay=poll_delay,
        keep_result=600,
        on_startup=on_startup,
        health_check_interval=3600,
    )
    worker.run()


async def load(redis_url: str, namespace: str, jobs: int, rate: float, in_flight: int) -> dict[str, Any]:
    """Enqueue ``jobs`` no-op jobs, wait for the queue to drain, return per-job times (ms)."""
    queue_name = namespace_arq(namespace)
    pool = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=queue_name)
    try:
        ids: list[str] = []
        sem = asyncio.Semaphore(in_flight)
        t0 = time.perf_counter()

        async def enqueue(i: int) -> None:
            if rate > 0:
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            async with sem:
                job = await pool.enqueue_job("noop")
                assert job is not None
                ids.append(job.job_id)

        await asyncio.gather(*(enqueue(i) for i in range(jobs)))
        enqueue_seconds = time.perf_counter() - t0
        while await pool.zcard(queue_name) > 0:
            await asyncio.sleep(0.1)
        infos: dict[str, Any] = {}
        deadline = time.monotonic() + 120
        while len(infos) < len(ids) and time.monotonic() < deadline:
            missing = [i for i in ids if i not in infos]
            for job_id, info in zip(
                missing,
                await asyncio.gather(*(Job(job_id, pool, _queue_name=queue_name).result_info() for job_id in missing)),
                strict=True,
            ):
                if info is not None:
                    infos[job_id] = info
            if len(infos) < len(ids):
                await asyncio.sleep(0.1)
        rows = [
            [
                int(r.enqueue_time.timestamp() * 1000),
                int(r.start_time.timestamp() * 1000),
                int(r.finish_time.timestamp() * 1000),
            ]
            for r in infos.values()
            if r.success
        ]
        return {
            "system": "arq",
            "jobs": jobs,
            "completed": len(rows),
            "enqueue_seconds": enqueue_seconds,
            "times_ms": rows,
        }
    finally:
        await pool.aclose()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``worker`` or ``load`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="arq_peer.py")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--redis-url", required=True)
    w.add_argument("--namespace", required=True)
    w.add_argument("--max-jobs", type=int, default=10)
    w.add_argument("--poll-delay", type=float, default=0.5)
    ld = sub.add_parser("load")
    ld.add_argument("--redis-url", required=True)
    ld.add_argument("--namespace", required=True)
    ld.add_argument("--jobs", type=int, required=True)
    ld.add_argument("--rate", type=float, default=0.0)
    ld.add_argument("--in-flight", type=int, default=32)
    args = parser.parse_args(argv)
    if not args.namespace.endswith(":"):
        parser.error("--namespace must end with ':'")
    if args.command == "worker":
        run_worker(args.redis_url, args.namespace, args.max_jobs, args.poll_delay)
        return 0
    result = asyncio.run(load(args.redis_url, args.namespace, args.jobs, args.rate, args.in_flight))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
