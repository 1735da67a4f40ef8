"""Job handlers for tests/test_jobs.py, loaded in the test process and in spawned worker processes.

``setup(queue)`` registers them (``psra-bench worker --handlers tests/job_handlers.py:setup``).
They leave evidence in Redis under the queue's namespace (``{ns}t:...``) so a test can see what
ran where and in which order, and hold a job until the test releases it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from psra_bench.jobs import JobQueue, ProgressCallback
from psra_bench.jobs.models import current_job

__all__ = ["setup"]


def setup(queue: JobQueue) -> None:  # noqa: C901 - one flat registry of small test handlers
    """Register the test handlers on ``queue``."""
    r = queue.redis

    def ctx_ids() -> tuple[str, str]:
        ctx = current_job()
        assert ctx is not None, "handlers run with a job context"
        return ctx.job_id, ctx.worker_id

    async def released(job_id: str) -> None:
        """Hold the job until the test sets ``t:release:{job_id}``: a known point, whatever the machine's speed."""
        while not await r.exists(queue.key(f"t:release:{job_id}")):
            await asyncio.sleep(0.02)

    async def noop(payload: dict[str, Any], update_progress: ProgressCallback) -> dict[str, Any]:
        return {"ok": True, "echo": payload.get("echo")}

    async def record(payload: dict[str, Any], update_progress: ProgressCallback) -> str:
        job_id, _ = ctx_ids()
        await r.rpush(queue.key("t:order"), payload["tag"])
        await r.set(queue.key(f"t:started:{job_id}"), "1")
        return str(payload["tag"])

    async def wait_for_release(payload: dict[str, Any], update_progress: ProgressCallback) -> str:
        job_id, _ = ctx_ids()
        await update_progress(50, "halfway")
        await released(job_id)
        return "released"

    async def gated(payload: dict[str, Any], update_progress: ProgressCallback) -> None:
        """Count itself as running (``t:running``, each start's count in ``t:peaks``) until released."""
        job_id, worker_id = ctx_ids()
        running = await r.incr(queue.key("t:running"))
        await r.rpush(queue.key("t:peaks"), json.dumps({"job": job_id, "worker": worker_id, "running": running}))
        try:
            await released(job_id)
        finally:
            await r.decr(queue.key("t:running"))

    async def sleeper(payload: dict[str, Any], update_progress: ProgressCallback) -> str:
        job_id, _ = ctx_ids()
        await r.set(queue.key(f"t:started:{job_id}"), "1")
        try:
            await asyncio.sleep(float(payload["seconds"]))
        except asyncio.CancelledError:
            await r.set(queue.key(f"t:interrupted:{job_id}"), "1")
            raise
        return "slept"

    async def spin_progress(payload: dict[str, Any], update_progress: ProgressCallback) -> str:
        job_id, _ = ctx_ids()
        await r.set(queue.key(f"t:started:{job_id}"), "1")
        for i in range(int(payload.get("steps", 10_000))):
            await update_progress(i % 100, f"step {i}")
            await asyncio.sleep(0.01)
        return "spun"

    async def boom(payload: dict[str, Any], update_progress: ProgressCallback) -> None:
        raise ValueError(f"boom: {payload.get('why')}")

    async def crashable(payload: dict[str, Any], update_progress: ProgressCallback) -> dict[str, str]:
        job_id, worker_id = ctx_ids()
        await r.rpush(queue.key(f"t:starts:{job_id}"), worker_id)
        await update_progress(10, "working")
        if payload.get("hold"):
            await released(job_id)
        else:
            await asyncio.sleep(float(payload["seconds"]))
        await r.incr(queue.key(f"t:completions:{job_id}"))
        await r.rpush(queue.key(f"t:finishers:{job_id}"), worker_id)
        return {"worker": worker_id}

    for name, fn in {
        "noop": noop,
        "record": record,
        "wait_for_release": wait_for_release,
        "gated": gated,
        "sleeper": sleeper,
        "spin_progress": spin_progress,
        "boom": boom,
        "crashable": crashable,
    }.items():
        queue.register_handler(name, fn)
