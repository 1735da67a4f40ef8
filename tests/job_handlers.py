"""Job handlers for tests/test_jobs.py, loaded in the test process and in spawned worker processes.

``setup(queue)`` registers them (``psra-bench worker --handlers tests/job_handlers.py:setup``).
They leave evidence in Redis under the queue's prefix (``{<ns>jobs}:t:...``, via ``queue.key``) so a test can see what
ran where and in which order, and hold a job until the test releases it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import redis

from psra_bench.jobs import JobQueue, ProgressCallback
from psra_bench.jobs.models import current_job, run_in_thread

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
            await asyncio.shield(r.decr(queue.key("t:running")))

    async def sleeper(payload: dict[str, Any], update_progress: ProgressCallback) -> str:
        job_id, _ = ctx_ids()
        await r.set(queue.key(f"t:started:{job_id}"), "1")
        try:
            await asyncio.sleep(float(payload["seconds"]))
        except asyncio.CancelledError:
            await asyncio.shield(r.set(queue.key(f"t:interrupted:{job_id}"), "1"))
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

    # -- the storms' handlers (tests/test_job_storms.py): each runs payload["seconds"] unless stopped,
    # and records how it ended in t:ended:{job_id} ("done" or "stopped").

    async def ended(job_id: str, how: str) -> None:
        await asyncio.shield(r.set(queue.key(f"t:ended:{job_id}"), how))

    async def chatty(payload: dict[str, Any], update_progress: ProgressCallback) -> str:
        """Reports progress every 5 ms (a Redis call each time: where a cancel used to be swallowed)."""
        job_id, _ = ctx_ids()
        deadline = time.monotonic() + float(payload["seconds"])
        try:
            while time.monotonic() < deadline:
                await update_progress(50, "chatting")
                await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            await ended(job_id, "stopped")
            raise
        await ended(job_id, "done")
        return "chatty"

    async def quiet(payload: dict[str, Any], update_progress: ProgressCallback) -> str:
        """Sleeps without a word to its worker."""
        job_id, _ = ctx_ids()
        try:
            await asyncio.sleep(float(payload["seconds"]))
        except asyncio.CancelledError:
            await ended(job_id, "stopped")
            raise
        await ended(job_id, "done")
        return "quiet"

    async def busy_io(payload: dict[str, Any], update_progress: ProgressCallback) -> str:
        """Does its own Redis I/O in a loop (redis-py's send path, never the progress callback)."""
        job_id, _ = ctx_ids()
        deadline = time.monotonic() + float(payload["seconds"])
        try:
            while time.monotonic() < deadline:
                await r.incr(queue.key(f"t:io:{job_id}"))
        except asyncio.CancelledError:
            await ended(job_id, "stopped")
            raise
        await ended(job_id, "done")
        return "busy_io"

    def thread_work(seconds: float, hold_key: str | None) -> str:
        """Runs in a thread: polls the job's cancelled event every 5 ms (``hold_key``: keep going until it exists)."""
        job = current_job()
        assert job is not None, "run_in_thread copies the job context into the thread"
        client = redis.Redis(**queue.store.client_kwargs())
        try:
            deadline = time.monotonic() + seconds
            while True:
                released = hold_key is None or bool(client.exists(hold_key))
                if job.cancelled.is_set():
                    client.set(queue.key(f"t:saw_cancel:{job.job_id}"), "1")
                    if released:
                        client.set(queue.key(f"t:ended:{job.job_id}"), "stopped")
                        client.set(queue.key(f"t:thread_ended_ms:{job.job_id}"), str(int(time.time() * 1000)))
                        job.check_cancelled()
                elif released and time.monotonic() >= deadline:
                    break
                time.sleep(0.005)
            client.set(queue.key(f"t:ended:{job.job_id}"), "done")
            return "thread"
        finally:
            client.close()

    async def in_thread(payload: dict[str, Any], update_progress: ProgressCallback) -> str:
        """CPU-style work in a thread that cooperates through the job's cancelled event."""
        job_id, _ = ctx_ids()
        hold = queue.key(f"t:release:{job_id}") if payload.get("hold") else None
        result: str = await run_in_thread(thread_work, float(payload.get("seconds", 0)), hold)
        return result

    async def forever(payload: dict[str, Any], update_progress: ProgressCallback) -> None:
        """Awaits something that never happens (the timeout test)."""
        job_id, _ = ctx_ids()
        await r.set(queue.key(f"t:started:{job_id}"), "1")
        await asyncio.Event().wait()

    async def marked(payload: dict[str, Any], update_progress: ProgressCallback) -> str:
        """Appends start/stop lines (worker, attempt, wall time) to payload["file"]; runs until stopped.

        From attempt ``finish_on_attempt`` on it finishes after payload["seconds"]. The file, not
        Redis, is the evidence: the hung-link test freezes one worker's Redis connection.
        """
        ctx = current_job()
        assert ctx is not None

        def mark(event: str) -> None:
            line = json.dumps({"worker": ctx.worker_id, "attempt": ctx.attempt, "event": event, "t": time.time()})
            fd = os.open(payload["file"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)

        mark("start")
        try:
            if ctx.attempt >= int(payload.get("finish_on_attempt", 2)):
                await asyncio.sleep(float(payload.get("seconds", 0.2)))
            else:
                await asyncio.Event().wait()
        finally:
            mark("stop")
        return "marked"

    async def deaf(payload: dict[str, Any], update_progress: ProgressCallback) -> str:
        """Swallows every cancel and returns normally once released (as a cancel lost in a Redis call did)."""
        job_id, _ = ctx_ids()
        await r.set(queue.key(f"t:started:{job_id}"), "1")
        while True:
            try:
                await released(job_id)
                return "finished anyway"
            except asyncio.CancelledError:
                await r.incr(queue.key(f"t:swallowed:{job_id}"))
                t = asyncio.current_task()
                if t is not None:
                    t.uncancel()

    for name, fn in {
        "deaf": deaf,
        "chatty": chatty,
        "quiet": quiet,
        "busy_io": busy_io,
        "in_thread": in_thread,
        "forever": forever,
        "marked": marked,
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
