"""The Redis job queue against a real Redis: order, progress, cancel, failures, TTL, leases, crashes.

In-process tests run workers in the test's event loop; the cross-process tests spawn
``psra-bench worker`` processes (always killed in teardown). Leases are ~1 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from job_fixtures import make_queue, spawn_worker, wait_status, wait_until, wait_workers

from psra_bench.exceptions import JobError, JobInputError, JobNotFoundError
from psra_bench.jobs import JobPriority, JobQueue, JobStatus, get_job_queue, register_default_handlers
from psra_bench.psra.handlers import validate_bulk_items
from psra_bench.settings import Settings

__all__ = ["make_queue", "spawn_worker"]  # fixtures, imported so pytest finds them here


# -- validation and plain API -------------------------------------------------------------


async def test_submit_rejects_bad_input_with_one_clear_sentence(make_queue: Callable[..., JobQueue]) -> None:
    q = make_queue()
    with pytest.raises(JobInputError, match=r"job_type='nope' is not valid: use one of the job types .*noop"):
        await q.submit("nope", {})
    with pytest.raises(JobError, match=r"priority='urgent' is not valid: use one of low, normal, high, critical"):
        await q.submit("noop", {}, priority="urgent")
    for ttl in (0, -5, 10**9, True, 1.5):
        with pytest.raises(JobInputError, match=r"ttl_seconds=.* is not valid: use a whole number from 1 to"):
            await q.submit("noop", {}, ttl_seconds=ttl)  # type: ignore[arg-type]
    with pytest.raises(JobInputError, match=r"payload=\[1, 2\] is not valid: use a JSON object"):
        await q.submit("noop", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(JobInputError, match="payload=.* is not valid: use JSON-serializable values only"):
        await q.submit("noop", {"x": object()})
    with pytest.raises(JobInputError, match="metadata.attempts=9 is not valid: this key is reserved"):
        await q.submit("noop", {}, metadata={"attempts": 9})
    assert (await q.health())["queued_jobs"] == {"critical": 0, "high": 0, "normal": 0, "low": 0}


async def test_unknown_ids_none_for_status_error_for_cancel(make_queue: Callable[..., JobQueue]) -> None:
    q = make_queue()
    assert await q.get_job_status("00000000-0000-4000-8000-000000000000") is None
    with pytest.raises(JobNotFoundError, match="does not exist"):
        await q.cancel("00000000-0000-4000-8000-000000000000")


async def test_submit_writes_a_pending_job_under_the_namespace(
    make_queue: Callable[..., JobQueue], jobs_redis_client: Any, namespaced_settings: Settings
) -> None:
    q = make_queue()
    job_id = await q.submit("noop", {"echo": 1}, priority="high", ttl_seconds=60, metadata={"tenant_id": "t1"})
    state = await q.get_job_status(job_id)
    assert state is not None and state.status is JobStatus.PENDING and state.progress == 0
    assert state.metadata["job_type"] == "noop" and state.metadata["priority"] == "high"
    assert state.metadata["tenant_id"] == "t1" and state.attempts == 0 and state.duration_seconds is None
    assert state.created_at is not None and state.started_at is None
    # One hash tag per queue, {<namespace>jobs}: every key of the queue shares one cluster slot.
    assert q.job_key(job_id) == f"{{{namespaced_settings.cache_namespace}jobs}}:job:{job_id}"
    assert q.key("t:x") == f"{{{namespaced_settings.cache_namespace}jobs}}:t:x"
    assert jobs_redis_client.exists(q.job_key(job_id)) == 1 and jobs_redis_client.exists(f"job:{job_id}") == 0
    assert jobs_redis_client.exists(f"{namespaced_settings.cache_namespace}job:{job_id}") == 0  # the old layout
    # A waiting job carries the max-age bound, so it cannot stay in Redis forever.
    assert 0 < jobs_redis_client.ttl(q.job_key(job_id)) <= q.max_age_seconds
    health = await q.health()
    assert health["service"] == "async_job_queue" and health["queued_jobs"]["high"] == 1
    assert health["running_jobs"] == 0 and "noop" in health["registered_handlers"]


async def test_a_job_keeps_its_owner_and_the_queue_only_reports_it(make_queue: Callable[..., JobQueue]) -> None:
    q = make_queue()
    mine = await q.submit("noop", {}, owner="tenant:t1")
    nobodys = await q.submit("noop", {})
    first, second = await q.get_job_status(mine), await q.get_job_status(nobodys)
    assert first is not None and (first.owner, first.metadata["owner"]) == ("tenant:t1", "tenant:t1")
    assert second is not None and (second.owner, second.metadata["owner"]) == (None, None)
    # The queue enforces nothing: who may see whose job is the caller's policy (psra_bench.api.access).
    assert (await q.cancel(mine)).status is JobStatus.CANCELLED
    assert (await q.get_job_status(mine)).owner == "tenant:t1"  # type: ignore[union-attr]
    for bad in ("", "x" * 201, 7):
        with pytest.raises(JobInputError, match="owner=.* is not valid: use a label of 1 to 200 characters"):
            await q.submit("noop", {}, owner=bad)  # type: ignore[arg-type]
    with pytest.raises(JobInputError, match="metadata.owner=.* this key is reserved"):
        await q.submit("noop", {}, metadata={"owner": "someone"})


async def test_get_job_queue_returns_one_queue_per_settings(namespaced_settings: Settings) -> None:
    a = get_job_queue(namespaced_settings)
    b = get_job_queue(namespaced_settings)
    other = get_job_queue(namespaced_settings.replace(cache_namespace=namespaced_settings.cache_namespace + "x:"))
    try:
        assert a is b and a is not other
    finally:
        await a.close()
        await other.close()
    assert get_job_queue(namespaced_settings) is not a
    await get_job_queue(namespaced_settings).close()


def test_the_job_queue_imports_no_embedded_server() -> None:
    """No module of psra_bench.jobs imports psra_bench.infra.embedded, at any depth: the caller resolves settings."""
    import ast

    jobs = Path(__file__).resolve().parent.parent / "psra_bench" / "jobs"
    found = []
    for path in sorted(jobs.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            found += [f"{path.name}: {n}" for n in names if n.startswith("psra_bench.infra.embedded")]
    assert found == []


@pytest.fixture
def bare_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No process settings and an environment naming no server, with a home of the test's own; restored after."""
    from psra_bench.infra import use_settings
    from psra_bench.infra.embedded import VALKEY_JOBS, stop_valkey

    home = tmp_path / "home"
    for name in list(os.environ):
        if name.startswith(("REDIS_", "JOBS_REDIS", "PSRA_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PSRA_BENCH_HOME", str(home))
    previous = use_settings(None)
    try:
        yield home
    finally:
        use_settings(previous)
        stop_valkey(home, name=VALKEY_JOBS)


async def test_get_job_queue_without_settings_uses_the_configured_redis_and_starts_nothing(
    bare_environment: Path, namespaced_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert namespaced_settings.redis is not None
    monkeypatch.setenv("REDIS_URL", namespaced_settings.redis.url())
    monkeypatch.setenv("PSRA_CACHE_NAMESPACE", namespaced_settings.cache_namespace)
    q = get_job_queue()
    try:
        assert q is get_job_queue() and q.settings.db_dsn is None and q.store == namespaced_settings.redis
        assert (await q.health())["status"] == "ok"
    finally:
        await q.close()
    assert not bare_environment.exists()  # no embedded PostgreSQL, no Valkey


async def test_get_job_queue_without_any_server_starts_only_the_jobs_valkey(bare_environment: Path) -> None:
    from psra_bench.infra import process_job_settings

    q = get_job_queue()
    try:
        assert q.settings is process_job_settings() and q.settings.db_dsn is None and q.settings.redis is None
        assert q.settings.embedded_jobs_redis and await q.check_job_store() == "noeviction"
    finally:
        await q.close()
    assert sorted(p.name for p in bare_environment.iterdir() if p.is_dir()) == ["valkey-jobs"]


# -- ordering, progress, failure, TTL -----------------------------------------------------


async def test_priority_order_then_fifo_within_a_priority(make_queue: Callable[..., JobQueue]) -> None:
    q = make_queue()
    tags = []
    for i in range(3):
        for prio in ("low", "normal", "critical", "high"):
            tags.append((prio, f"{prio}-{i}"))
            await q.submit("record", {"tag": f"{prio}-{i}"}, priority=prio)
    await q.start_workers(concurrency=1)
    await wait_until(lambda: _llen_is(q, "t:order", len(tags)))
    order = await q.redis.lrange(q.key("t:order"), 0, -1)
    expected = [t for p in JobPriority.dequeue_order() for prio, t in tags if prio == p.value]
    assert order == expected


async def _llen_is(q: JobQueue, suffix: str, n: int) -> bool:
    return int(await q.redis.llen(q.key(suffix))) >= n


async def test_progress_is_visible_while_running(make_queue: Callable[..., JobQueue]) -> None:
    q = make_queue()
    await q.start_workers(concurrency=2)
    job_id = await q.submit("wait_for_release", {})

    async def halfway() -> Any:
        s = await q.get_job_status(job_id)
        return s if s is not None and s.progress == 50 else None

    state = await wait_until(halfway)
    assert state.status is JobStatus.RUNNING and state.progress_message == "halfway"
    assert state.started_at is not None and state.completed_at is None
    assert state.metadata["worker_id"] == q.worker.id and state.attempts == 1  # type: ignore[union-attr]
    assert (await q.health())["running_jobs"] == 1
    await q.redis.set(q.key(f"t:release:{job_id}"), "1")
    done = await wait_status(q, job_id, JobStatus.COMPLETED)
    assert done.result == "released" and done.progress == 100
    assert done.duration_seconds is not None and done.duration_seconds >= 0


async def test_handler_exception_fails_the_job_with_its_traceback(make_queue: Callable[..., JobQueue]) -> None:
    q = make_queue()
    await q.start_workers(concurrency=1)
    job_id = await q.submit("boom", {"why": "bad input 42"})
    state = await wait_status(q, job_id, JobStatus.FAILED)
    assert state.error == "ValueError: boom: bad input 42"
    assert state.error_traceback is not None and "Traceback (most recent call last)" in state.error_traceback
    assert "raise ValueError" in state.error_traceback and state.result is None
    assert state.completed_at is not None


async def test_finished_job_expires_after_its_ttl(make_queue: Callable[..., JobQueue], jobs_redis_client: Any) -> None:
    q = make_queue()
    await q.start_workers(concurrency=1)
    job_id = await q.submit("noop", {"echo": "x"}, ttl_seconds=1)
    state = await wait_status(q, job_id, JobStatus.COMPLETED)
    assert state.result == {"ok": True, "echo": "x"}
    pttl = jobs_redis_client.pttl(q.job_key(job_id))
    assert pttl == -2 or 0 < pttl <= 1000  # -2: already expired on a slow machine
    await wait_until(lambda: _is_gone(q, job_id), timeout=10, interval=0.1)


async def _is_gone(q: JobQueue, job_id: str) -> bool:
    return await q.get_job_status(job_id) is None


# -- cancel ---------------------------------------------------------------------------------


async def test_cancel_pending_job_never_starts(make_queue: Callable[..., JobQueue]) -> None:
    q = make_queue()
    doomed = await q.submit("record", {"tag": "doomed"})
    after = await q.submit("record", {"tag": "after"})
    outcome = await q.cancel(doomed)
    assert outcome.status is JobStatus.CANCELLED and outcome.accepted
    assert (await q.health())["queued_jobs"]["normal"] == 1
    await q.start_workers(concurrency=2)
    await wait_status(q, after, JobStatus.COMPLETED)
    state = await q.get_job_status(doomed)
    assert state is not None and state.status is JobStatus.CANCELLED and state.started_at is None
    assert await q.redis.lrange(q.key("t:order"), 0, -1) == ["after"]
    assert not await q.redis.exists(q.key(f"t:started:{doomed}"))
    # Cancelling a finished job changes nothing and is not an error.
    again = await q.cancel(after)
    assert again.status is JobStatus.COMPLETED and not again.accepted and "already completed" in again.message
    assert (await q.get_job_status(after)).status is JobStatus.COMPLETED  # type: ignore[union-attr]


async def test_cancel_running_job_ends_cancelled(make_queue: Callable[..., JobQueue]) -> None:
    q = make_queue()
    await q.start_workers(concurrency=1)
    job_id = await q.submit("sleeper", {"seconds": 60})
    await wait_status(q, job_id, JobStatus.RUNNING)
    outcome = await q.cancel(job_id, wait_seconds=10)
    assert outcome.status is JobStatus.CANCELLED and outcome.accepted
    state = await q.get_job_status(job_id)
    assert state is not None and state.status is JobStatus.CANCELLED and state.error is not None
    assert await q.redis.exists(q.key(f"t:interrupted:{job_id}"))
    assert (await q.health())["running_jobs"] == 0


async def test_cancel_flag_seen_by_heartbeat_without_pubsub(make_queue: Callable[..., JobQueue]) -> None:
    q = make_queue(lease_seconds=0.6)
    await q.start_workers(concurrency=1)
    job_id = await q.submit("sleeper", {"seconds": 60})
    await wait_status(q, job_id, JobStatus.RUNNING)
    await q.redis.hset(q.job_key(job_id), "cancel_requested", "1")  # the flag only, no event published
    state = await wait_status(q, job_id, JobStatus.CANCELLED, timeout=10)
    assert state.error == "cancelled on request while running"


async def test_cancel_flag_seen_by_update_progress(make_queue: Callable[..., JobQueue]) -> None:
    q = make_queue(lease_seconds=120)  # heartbeats every 40 s: only update_progress can notice
    await q.start_workers(concurrency=1)
    job_id = await q.submit("spin_progress", {})
    await wait_status(q, job_id, JobStatus.RUNNING)
    await q.redis.hset(q.job_key(job_id), "cancel_requested", "1")
    await wait_status(q, job_id, JobStatus.CANCELLED, timeout=10)


async def test_a_swallowed_cancel_still_ends_cancelled(make_queue: Callable[..., JobQueue]) -> None:
    # The handler swallows every CancelledError (as one lost inside a Redis call on Python 3.11)
    # and returns normally: the heartbeat keeps asking, and the accepted cancel still wins.
    q = make_queue(lease_seconds=0.8)
    await q.start_workers(concurrency=1)
    job_id = await q.submit("deaf", {})
    await wait_status(q, job_id, JobStatus.RUNNING)
    outcome = await q.cancel(job_id)
    assert (outcome.outcome, outcome.accepted, outcome.status) == ("accepted", True, JobStatus.RUNNING)
    await wait_until(lambda: _count_is_at_least(q, f"t:swallowed:{job_id}", 2))  # asked again by a heartbeat
    await q.redis.set(q.key(f"t:release:{job_id}"), "1")
    state = await wait_status(q, job_id, JobStatus.CANCELLED)
    assert state.error == "cancelled on request while running"
    again = await q.cancel(job_id)
    assert (again.outcome, again.accepted, again.status) == ("already_finished", False, JobStatus.CANCELLED)


async def _count_is_at_least(q: JobQueue, suffix: str, n: int) -> bool:
    return int(await q.redis.get(q.key(suffix)) or 0) >= n


async def test_finish_records_cancelled_when_a_cancel_came_first(make_queue: Callable[..., JobQueue]) -> None:
    # The race itself, held still: the job is dequeued by hand, the cancel lands, then FINISH
    # arrives with COMPLETED. The cancel was accepted first, so CANCELLED is recorded.
    q = make_queue()
    job_id = await q.submit("noop", {})
    taken = await q.dequeue("hand")
    assert taken[:2] == ("job", job_id)
    assert (await q.cancel(job_id)).outcome == "accepted"
    assert await q.finish("hand", job_id, 1, JobStatus.COMPLETED, result_json='"done"') == 2
    state = await q.get_job_status(job_id)
    assert state is not None and state.status is JobStatus.CANCELLED and state.result is None
    assert state.error == "cancelled on request while running (the handler then ended as completed)"


async def test_a_cancel_after_the_point_of_no_return_is_refused(make_queue: Callable[..., JobQueue]) -> None:
    q = make_queue()
    job_id = await q.submit("noop", {})
    await q.dequeue("hand")
    assert await q.commit("hand", job_id, 1) == 0  # the handler's point of no return
    refused = await q.cancel(job_id)
    assert (refused.outcome, refused.accepted, refused.status) == ("too_late", False, JobStatus.RUNNING)
    assert refused.message.startswith("Too late to cancel: the job passed its point of no return")
    assert await q.finish("hand", job_id, 1, JobStatus.COMPLETED, result_json='"done"') == 1
    state = await q.get_job_status(job_id)
    assert state is not None and state.status is JobStatus.COMPLETED and state.metadata["committed"] is True
    # A cancel that came before the commit point makes the handler stop instead.
    other = await q.submit("noop", {})
    await q.dequeue("hand")
    await q.cancel(other)
    assert await q.commit("hand", other, 1) == 1


async def test_a_thread_handler_keeps_its_slot_until_the_thread_stops(make_queue: Callable[..., JobQueue]) -> None:
    q = make_queue(lease_seconds=0.8)
    await q.start_workers(concurrency=1)
    job_id = await q.submit("in_thread", {"hold": True})
    await wait_status(q, job_id, JobStatus.RUNNING)
    assert (await q.cancel(job_id)).outcome == "accepted"
    # Known point: the thread saw the cancel but is held (it ignores it until released).
    await wait_until(lambda: q.redis.exists(q.key(f"t:saw_cancel:{job_id}")))
    state = await q.get_job_status(job_id)
    assert state is not None and state.status is JobStatus.RUNNING
    assert q.worker is not None and q.worker.running_count == 1 and (await q.health())["running_jobs"] == 1
    await q.redis.set(q.key(f"t:release:{job_id}"), "1")
    final = await wait_status(q, job_id, JobStatus.CANCELLED)
    ended_ms = int(await q.redis.get(q.key(f"t:thread_ended_ms:{job_id}")))
    assert final.completed_at is not None and final.completed_at.timestamp() * 1000 >= ended_ms - 1
    assert await q.redis.get(q.key(f"t:ended:{job_id}")) == "stopped"
    assert q.worker.running_count == 0 and (await q.health())["running_jobs"] == 0


async def test_payloads_over_the_limit_are_refused_at_submit(
    make_queue: Callable[..., JobQueue], namespaced_settings: Settings
) -> None:
    from psra_bench.exceptions import JobPayloadTooLarge

    q = make_queue(namespaced_settings.replace(max_job_payload_bytes=2048))
    await q.submit("noop", {"echo": "x" * 1900})
    with pytest.raises(
        JobPayloadTooLarge,
        match=r"payload is 2,\d{3} bytes of JSON, over the limit: "
        r"use at most 2,048 bytes \(PSRA_JOB_MAX_PAYLOAD_BYTES\)\.$",
    ):
        await q.submit("noop", {"echo": "x" * 2100})
    assert await q.redis.llen(q.queue_keys[JobPriority.NORMAL]) == 1  # the refused one left nothing behind


# -- leases, reaper, compare-and-set ----------------------------------------------------------


async def test_late_finisher_cannot_overwrite_and_nothing_completes_twice(make_queue: Callable[..., JobQueue]) -> None:
    q = make_queue(lease_seconds=0.3)
    job_id = await q.submit("noop", {})
    first = await q.dequeue("ghost-A")
    assert first[:2] == ("job", job_id) and first[4] == "1"
    await asyncio.sleep(0.4)
    assert await q.reap() == 1
    state = await q.get_job_status(job_id)
    assert state is not None and state.status is JobStatus.PENDING and state.metadata["workers_lost"] == 1
    second = await q.dequeue("ghost-B")
    assert second[:2] == ("job", job_id) and second[4] == "2"
    assert await q.heartbeat("ghost-A", [(job_id, 1)]) == [-1]
    assert await q.report_progress("ghost-A", job_id, 1, 90, "late") == -1
    assert not await q.finish("ghost-A", job_id, 1, JobStatus.COMPLETED, result_json='"from A"')
    assert await q.finish("ghost-B", job_id, 2, JobStatus.COMPLETED, result_json='"from B"')
    assert not await q.finish("ghost-B", job_id, 2, JobStatus.COMPLETED, result_json='"again"')
    final = await q.get_job_status(job_id)
    assert final is not None and final.status is JobStatus.COMPLETED and final.result == "from B"
    assert final.attempts == 2 and final.metadata["worker_id"] == "ghost-B"


async def test_reaper_fails_a_job_after_max_attempts_lost_workers(make_queue: Callable[..., JobQueue]) -> None:
    q = make_queue(lease_seconds=0.2, max_attempts=2)
    job_id = await q.submit("noop", {})
    other = await q.submit("noop", {}, priority="low")
    assert (await q.dequeue("ghost-1"))[1] == job_id
    await asyncio.sleep(0.3)
    # The dequeue script reaps first: the lost job goes back to the FRONT, ahead of older work.
    assert (await q.dequeue("ghost-2"))[1:5:3] == (job_id, "2")
    await asyncio.sleep(0.3)
    assert await q.reap() == 1
    state = await q.get_job_status(job_id)
    assert state is not None and state.status is JobStatus.FAILED
    assert state.error == "worker lost 2 times (max_attempts=2)"
    assert (await q.get_job_status(other)).status is JobStatus.PENDING  # type: ignore[union-attr]


async def test_dequeue_respects_the_global_cap(
    make_queue: Callable[..., JobQueue], namespaced_settings: Settings
) -> None:
    q = make_queue(namespaced_settings.replace(max_concurrent_jobs=1))
    a = await q.submit("noop", {})
    await q.submit("noop", {})
    assert (await q.dequeue("w1"))[1] == a
    assert await q.dequeue("w2") == ("full",)
    assert await q.finish("w1", a, 1, JobStatus.COMPLETED, result_json="1")
    assert (await q.dequeue("w2"))[0] == "job"


async def test_batch_dequeue_takes_at_most_the_free_slots_in_priority_order(
    make_queue: Callable[..., JobQueue], namespaced_settings: Settings
) -> None:
    q = make_queue(namespaced_settings.replace(max_concurrent_jobs=3))
    low = await q.submit("noop", {}, priority="low")
    normal = [await q.submit("noop", {}) for _ in range(2)]
    high = await q.submit("noop", {}, priority="high")
    state, jobs = await q.dequeue_many("w1", 5)
    assert state == "jobs" and [j[0] for j in jobs] == [high, *normal]
    assert await q.dequeue_many("w2", 5) == ("full", [])
    assert (await q.health())["running_jobs"] == 3 and (await q.health())["queued_jobs"]["low"] == 1
    assert (await q.get_job_status(low)).status is JobStatus.PENDING  # type: ignore[union-attr]


async def test_graceful_stop_requeues_unfinished_jobs(make_queue: Callable[..., JobQueue]) -> None:
    q = make_queue()
    job_id = await q.submit("sleeper", {"seconds": 60})
    await q.start_workers(concurrency=1)
    await wait_status(q, job_id, JobStatus.RUNNING)
    await q.stop_workers(grace_seconds=0.1)
    state = await q.get_job_status(job_id)
    assert state is not None and state.status is JobStatus.PENDING and state.attempts == 1
    assert state.metadata["workers_lost"] == 0 and (await q.health())["queued_jobs"]["normal"] == 1
    assert await q.redis.exists(q.key(f"t:interrupted:{job_id}"))


# -- default handlers -------------------------------------------------------------------------


async def test_bulk_import_upserts_hs_codes_with_progress_and_invalidation(
    make_queue: Callable[..., JobQueue], namespaced_settings: Settings, make_database: Callable[..., str]
) -> None:
    import psycopg

    dsn = make_database()
    calls: list[int] = []

    async def invalidate() -> int:
        calls.append(1)
        return 7

    q = make_queue(namespaced_settings.replace(db_dsn=dsn))
    register_default_handlers(q, on_done=invalidate)
    items = [
        {"code": "8471.30", "description": "Portable computers (updated)"},
        {"code": "0199", "description": "New heading in chapter 01"},
        {"code": "0199.01", "description": "New subheading"},
    ] + [{"code": f"01{n:02d}", "description": f"filler {n}"} for n in range(50, 80)]
    await q.start_workers(concurrency=1)
    job_id = await q.submit("bulk_import", {"items": items})
    state = await wait_status(q, job_id, JobStatus.COMPLETED, timeout=30)
    assert state.result == {"imported": 33, "inserted": 32, "updated": 1, "invalidated": 7} and calls == [1]
    with psycopg.connect(dsn) as conn:
        rows = dict(
            (r[0], r[1:])
            for r in conn.execute(
                "SELECT code, description, level, parent, chapter, section FROM hs_codes "
                "WHERE code IN ('847130', '0199', '019901')"
            )
        )
        total = conn.execute("SELECT count(*) FROM hs_codes").fetchone()
    assert rows["847130"] == ("Portable computers (updated)", 6, "8471", "84", "XVI")
    assert rows["0199"] == ("New heading in chapter 01", 4, "01", "01", "I")
    assert rows["019901"] == ("New subheading", 6, "0199", "01", "I")
    assert total is not None and total[0] == 6940 + 32


async def test_bulk_import_cancelled_after_its_commit_completes_and_invalidates(
    make_queue: Callable[..., JobQueue], namespaced_settings: Settings, make_database: Callable[..., str]
) -> None:
    import psycopg

    dsn = make_database()
    q = make_queue(namespaced_settings.replace(db_dsn=dsn))
    gate = asyncio.Event()
    calls: list[str] = []

    async def invalidate() -> int:  # runs after the COMMIT; held here, the test cancels the job
        calls.append("started")
        await gate.wait()
        calls.append("done")
        return 3

    register_default_handlers(q, on_done=invalidate)
    await q.start_workers(concurrency=1)
    job_id = await q.submit("bulk_import", {"items": [{"code": "0198", "description": "Committed heading"}]})
    await wait_until(lambda: asyncio.sleep(0, bool(calls)))  # the import committed and invalidates now
    refused = await q.cancel(job_id)
    assert (refused.outcome, refused.accepted) == ("too_late", False)
    gate.set()
    state = await wait_status(q, job_id, JobStatus.COMPLETED, timeout=30)
    assert state.result == {"imported": 1, "inserted": 1, "updated": 0, "invalidated": 3} and calls == [
        "started",
        "done",
    ]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT description FROM hs_codes WHERE code = '0198'").fetchone() == ("Committed heading",)


async def test_bulk_import_cancelled_before_its_commit_rolls_back(
    make_queue: Callable[..., JobQueue], namespaced_settings: Settings, make_database: Callable[..., str]
) -> None:
    import psycopg

    dsn = make_database()
    q = make_queue(namespaced_settings.replace(db_dsn=dsn))
    register_default_handlers(q)
    job_id = await q.submit("bulk_import", {"items": [{"code": "0197", "description": "Never committed"}]})
    # Run the handler by hand up to its point of no return, with a cancel already accepted.
    _, _, job_type, payload, attempt, _, _ = await q.dequeue("hand")
    await q.cancel(job_id)
    from psra_bench.jobs.models import CURRENT_JOB, JobContext

    handler = q.handler_for(job_type)
    assert handler is not None

    async def commit() -> None:
        if await q.commit("hand", job_id, int(attempt)) != 0:
            raise asyncio.CancelledError("cancelled on request")

    async def progress(percent: int, message: str = "") -> None:
        return None

    token = CURRENT_JOB.set(JobContext(job_id, job_type, int(attempt), "hand", JobPriority.NORMAL, commit=commit))
    try:
        with pytest.raises(asyncio.CancelledError):
            await handler(json.loads(payload), progress)
    finally:
        CURRENT_JOB.reset(token)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM hs_codes WHERE code = '0197'").fetchone() == (0,)


async def test_bulk_import_rejects_bad_items_naming_the_index(make_queue: Callable[..., JobQueue]) -> None:
    q = make_queue()
    register_default_handlers(q)
    with pytest.raises(JobInputError, match=r"items\[1\]\.code='847' is not valid: use 2, 4 or 6 digits") as e:
        await q.submit(
            "bulk_import", {"items": [{"code": "01", "description": "ok"}, {"code": "847", "description": "x"}]}
        )
    assert e.value.field == "items[1].code"
    with pytest.raises(JobInputError, match=r"items\[0\]\.description='  ' is not valid"):
        await q.submit("bulk_import", {"items": [{"code": "01", "description": "  "}]})
    with pytest.raises(JobInputError, match="without NUL characters"):
        await q.submit("bulk_import", {"items": [{"code": "01", "description": "a\x00b"}]})
    with pytest.raises(JobInputError, match=r"items\[0\]\.foo=1 is not valid: an item has only code and description"):
        await q.submit("bulk_import", {"items": [{"code": "01", "description": "d", "foo": 1}]})
    with pytest.raises(JobInputError, match=r"use at most 10000 items per job \(got 10001\)"):
        await q.submit("bulk_import", {"items": [{"code": "01", "description": "d"}] * 10_001})
    with pytest.raises(JobInputError, match="non-empty list"):
        await q.submit("bulk_import", {"items": []})
    assert [i.code for i in validate_bulk_items({"items": [{"code": "84.71", "description": "d"}]})] == ["8471"]


async def test_assessment_handler_runs_the_injected_function(make_queue: Callable[..., JobQueue]) -> None:
    seen: list[dict[str, Any]] = []

    def assess(payload: dict[str, Any]) -> dict[str, Any]:  # sync: runs in a thread
        seen.append(payload)
        return {"status": "qualified", "hs_code": payload["hs_code"]}

    q = make_queue()
    register_default_handlers(q, assessment_fn=assess)
    assert {"assessment", "bulk_import"} <= set((await q.health())["registered_handlers"])
    with pytest.raises(JobInputError, match="origin_country='Mexico' is not valid"):
        await q.submit("assessment", {"hs_code": "8471.30", "origin_country": "Mexico", "destination_country": "US"})
    await q.start_workers(concurrency=1)
    body = {"rule_id": "USMCA-2024-01", "hs_code": "8471.30", "origin_country": "MX", "destination_country": "US"}
    job_id = await q.submit("assessment", body)
    state = await wait_status(q, job_id, JobStatus.COMPLETED)
    assert state.result == {"status": "qualified", "hs_code": "8471.30"} and seen == [body]


# -- separate worker processes ----------------------------------------------------------------


async def test_concurrency_cap_holds_across_worker_processes(
    make_queue: Callable[..., JobQueue],
    spawn_worker: Callable[..., subprocess.Popen[bytes]],
    namespaced_settings: Settings,
) -> None:
    # Three processes with a slot each could run three jobs at once; the shared cap of 2 is what
    # holds them to two. Every job is held until the test releases it, one at a time, so the test
    # looks at the queue only while it stands still.
    q = make_queue(namespaced_settings.replace(max_concurrent_jobs=2))
    procs = [spawn_worker(concurrency=1, max_concurrent_jobs=2) for _ in range(3)]
    await wait_workers(q, 3, procs)
    ids = [await q.submit("gated", {}) for _ in range(6)]
    for i, job_id in enumerate(ids):
        expected = min(2, len(ids) - i)  # FIFO: jobs i and i+1 run while job i is held

        async def running_now(n: int = expected) -> bool:
            return await q.redis.get(q.key("t:running")) == str(n)

        await wait_until(running_now, timeout=30)
        await wait_status(q, job_id, JobStatus.RUNNING)
        assert (await q.health())["running_jobs"] == expected
        await q.redis.set(q.key(f"t:release:{job_id}"), "1")
        await wait_status(q, job_id, JobStatus.COMPLETED, timeout=30)
    starts = [json.loads(x) for x in await q.redis.lrange(q.key("t:peaks"), 0, -1)]
    assert sorted(s["job"] for s in starts) == sorted(ids)
    assert max(s["running"] for s in starts) == 2  # reached, and never passed
    assert len({s["worker"] for s in starts}) >= 2, "jobs ran side by side in different processes"


async def test_kill_9_mid_job_completes_once_on_another_worker(
    make_queue: Callable[..., JobQueue],
    spawn_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    q = make_queue()
    victim = spawn_worker(concurrency=1)
    await wait_workers(q, 1, [victim])
    job_id = await q.submit("crashable", {"hold": True})  # runs until the test sets t:release:{job_id}
    running = await wait_status(q, job_id, JobStatus.RUNNING)
    victim_id = running.metadata["worker_id"]
    assert f":{victim.pid}:" in victim_id
    await wait_until(lambda: _llen_is(q, f"t:starts:{job_id}", 1))
    os.kill(victim.pid, signal.SIGKILL)  # mid-job, for certain: the job cannot end before its release
    victim.wait(timeout=10)
    await q.redis.set(q.key(f"t:release:{job_id}"), "1")
    rescuer = spawn_worker(concurrency=1)
    state = await wait_status(q, job_id, JobStatus.COMPLETED, timeout=30)
    assert state.attempts == 2 and state.metadata["workers_lost"] == 1
    assert f":{rescuer.pid}:" in state.metadata["worker_id"] and state.result == {"worker": state.metadata["worker_id"]}
    assert await q.redis.get(q.key(f"t:completions:{job_id}")) == "1"
    assert await q.redis.lrange(q.key(f"t:finishers:{job_id}"), 0, -1) == [state.metadata["worker_id"]]
    assert await q.redis.lrange(q.key(f"t:starts:{job_id}"), 0, -1) == [victim_id, state.metadata["worker_id"]]
    assert (await q.health())["running_jobs"] == 0


async def test_sigterm_requeues_in_flight_job_and_exits_cleanly(
    make_queue: Callable[..., JobQueue],
    spawn_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    q = make_queue()
    proc = spawn_worker(concurrency=1)
    await wait_workers(q, 1, [proc])
    job_id = await q.submit("sleeper", {"seconds": 60})
    await wait_status(q, job_id, JobStatus.RUNNING)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0
    state = await q.get_job_status(job_id)
    assert state is not None and state.status is JobStatus.PENDING and state.metadata["workers_lost"] == 0
    assert (await q.health())["workers"] == 0 and (await q.health())["running_jobs"] == 0


async def test_burst_worker_drains_the_queues_and_exits(
    make_queue: Callable[..., JobQueue],
    spawn_worker: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    q = make_queue()
    ids = [await q.submit("noop", {"echo": i}) for i in range(5)]
    proc = spawn_worker(concurrency=2, extra=("--burst",))
    assert await asyncio.to_thread(proc.wait, 30) == 0
    assert (tmp_path / "worker-0.log").read_text().strip().splitlines()[-1] == "worker stopped after 5 jobs"
    for i, job_id in enumerate(ids):
        state = await q.get_job_status(job_id)
        assert state is not None and state.status is JobStatus.COMPLETED and state.result == {"ok": True, "echo": i}


# -- the job store's safety ---------------------------------------------------------------------


@pytest.fixture
def evicting_store(tmp_path: Path) -> Iterator[Any]:
    """A Valkey of this test's own with the cache's policy (allkeys-lru): a server that may drop jobs."""
    from psra_bench.infra.embedded import start_valkey, stop_valkey

    store = start_valkey(tmp_path, name="evicting", maxmemory="64mb", policy="allkeys-lru")
    yield store
    stop_valkey(tmp_path, name="evicting")


async def test_workers_refuse_a_job_store_that_evicts(
    make_queue: Callable[..., JobQueue],
    namespaced_settings: Settings,
    evicting_store: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from psra_bench.exceptions import JobStoreError

    q = make_queue(namespaced_settings.replace(jobs_redis=evicting_store))
    expected = (
        f"the job store at 127.0.0.1:{evicting_store.port} evicts keys (maxmemory-policy=allkeys-lru), so queued "
        "and running jobs can vanish: point JOBS_REDIS_URL at a server with maxmemory-policy noeviction, or set "
        "PSRA_ALLOW_EVICTING_JOB_STORE=true to run anyway."
    )
    with pytest.raises(JobStoreError) as refused:
        await q.start_workers(1)
    assert str(refused.value) == expected and q.worker is None
    allowed = make_queue(namespaced_settings.replace(jobs_redis=evicting_store, allow_evicting_job_store=True))
    with caplog.at_level("WARNING", logger="psra_bench.jobs.client"):
        await allowed.start_workers(1)
    assert expected in caplog.text and "running anyway" in caplog.text
    job_id = await allowed.submit("noop", {"echo": 1})
    assert (await wait_status(allowed, job_id, JobStatus.COMPLETED)).result == {"ok": True, "echo": 1}


def test_the_worker_command_refuses_an_evicting_job_store_in_one_sentence(
    namespaced_settings: Settings, evicting_store: Any, tmp_path: Path
) -> None:
    from job_fixtures import HANDLERS as handlers

    assert namespaced_settings.redis is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "JOBS_", "PSRA_"))}
    env |= {"REDIS_URL": namespaced_settings.redis.url(), "JOBS_REDIS_URL": evicting_store.url()}
    env |= {"PSRA_BENCH_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "psra_bench", "worker", "--handlers", handlers, "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert lines[-1].startswith("error: the job store at 127.0.0.1:") and "maxmemory-policy=allkeys-lru" in lines[-1]


async def test_jobs_sweep_command_reports_what_it_repaired(
    make_queue: Callable[..., JobQueue], namespaced_settings: Settings
) -> None:
    from click.testing import CliRunner

    from psra_bench.cli import cli

    q = make_queue()
    pending = await q.submit("noop", {})
    await q.redis.delete(q.queue_keys[JobPriority.NORMAL])  # a pending job in no queue
    jobs = namespaced_settings.jobs_redis or namespaced_settings.redis
    assert jobs is not None and namespaced_settings.redis is not None
    env = {"REDIS_URL": namespaced_settings.redis.url(), "JOBS_REDIS_URL": jobs.url()}
    argv = ["jobs", "sweep", "--namespace", namespaced_settings.cache_namespace, "--json"]
    out = await asyncio.to_thread(CliRunner().invoke, cli, argv, env=env)
    assert out.exit_code == 0, (out.output, out.exception)
    report = json.loads(out.stdout)
    assert (report["scanned"], report["requeued_pending"], report["repaired"], report["lost"]) == (1, 1, 1, [])
    assert await q.redis.lrange(q.queue_keys[JobPriority.NORMAL], 0, -1) == [pending]
