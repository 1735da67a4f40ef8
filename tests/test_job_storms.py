"""The job queue under storms, against real servers and real worker processes.

* **Cancel storm:** hundreds of cancels at random offsets into running chatty, quiet, I/O-bound
  and thread handlers; every accepted cancel ends CANCELLED, every other one says the job had
  finished.
* **Kill storm:** a thousand assessment jobs on two worker processes while workers are killed
  with ``kill -9``; every job COMPLETED and exactly one verdict row per job.
* **Lost keys:** the processing set, a queue list and job hashes deleted mid-run; every job ends
  in a final state or is reported lost, nothing stays RUNNING.
* **Hung link:** one worker's Redis connection frozen by a TCP proxy; the job it runs is stopped
  there before another worker takes it over.
* **Timeout:** a handler that awaits forever is ended and its slot freed.

Each prints its counts (``pytest -s`` shows them); the closing notes quote them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from job_fixtures import (
    check_lost_keys_repaired,
    lose_keys_while_held,
    make_queue,
    spawn_worker,
    wait_status,
    wait_until,
    wait_workers,
)
from tcp_proxy import TcpProxy

from psra_bench.jobs import JobPriority, JobQueue, JobStatus, register_default_handlers
from psra_bench.psra.service import job_verdict_ids
from psra_bench.settings import Settings

__all__ = ["make_queue", "spawn_worker"]  # fixtures, imported so pytest finds them here


async def _final(q: JobQueue, job_id: str, timeout: float = 60.0) -> Any:
    state = await q.wait(job_id, timeout=timeout, interval=0.05)
    assert state is not None, f"job {job_id} vanished"
    return state


# -- cancel storm -----------------------------------------------------------------------------

STORM_LEASE = 2.0
HANDLER_KINDS = ("chatty", "quiet", "busy_io", "in_thread")


async def test_cancel_storm_every_accepted_cancel_ends_cancelled(
    make_queue: Callable[..., JobQueue],
    spawn_worker: Callable[..., subprocess.Popen[bytes]],
    namespaced_settings: Settings,
) -> None:
    cap = 16
    q = make_queue(namespaced_settings.replace(max_concurrent_jobs=cap), lease_seconds=STORM_LEASE)
    procs = [spawn_worker(concurrency=8, max_concurrent_jobs=cap, lease=STORM_LEASE) for _ in range(2)]
    await wait_workers(q, 2, procs)
    rng = random.Random(20261202)
    plan = [(HANDLER_KINDS[i % 4], rng.uniform(0.3, 1.2), rng.random()) for i in range(260)]

    async def one(i: int, kind: str, seconds: float, fraction: float) -> tuple[str, str, Any, float]:
        await asyncio.sleep(i * 0.04)  # a steady stream the workers keep up with: jobs run, not wait
        job_id = await q.submit(kind, {"seconds": seconds})
        await wait_status(q, job_id, JobStatus.RUNNING, timeout=60)
        await asyncio.sleep(fraction * seconds * 1.1)  # a random point of its run (or just after it)
        sent = time.time()
        result = await q.cancel(job_id)
        return job_id, kind, result, sent

    outcomes = await asyncio.gather(*(one(i, *p) for i, p in enumerate(plan)))
    counts: Counter[tuple[str, str]] = Counter()
    stop_latency: list[float] = []
    slowest: dict[str, float] = {}
    for job_id, kind, result, sent in outcomes:
        final = await _final(q, job_id)
        counts[(kind, result.outcome)] += 1
        if result.outcome == "accepted":
            assert final.status is JobStatus.CANCELLED, (kind, final)
            stop_latency.append(final.completed_at.timestamp() - sent)
            slowest[kind] = max(slowest.get(kind, 0.0), stop_latency[-1])
        else:
            assert result.outcome == "already_finished", (kind, result)
            assert final.status is JobStatus.COMPLETED and result.status is JobStatus.COMPLETED
    accepted = sum(n for (_, outcome), n in counts.items() if outcome == "accepted")
    stop_latency.sort()
    print(
        f"\ncancel storm: {len(plan)} jobs, {len(plan)} cancels into running handlers: {accepted} accepted "
        f"(all CANCELLED), {len(plan) - accepted} after the job finished; by handler: {dict(sorted(counts.items()))}; "
        f"cancel -> CANCELLED p50 {stop_latency[len(stop_latency) // 2] * 1000:.0f} ms, "
        f"max {stop_latency[-1] * 1000:.0f} ms (heartbeat every {STORM_LEASE / 4:g} s); slowest by handler (ms): "
        f"{ {k: round(v * 1000) for k, v in sorted(slowest.items())} }"
    )
    assert accepted >= 200
    assert all(counts[(kind, "accepted")] >= 30 for kind in HANDLER_KINDS)
    # A cancel arrives through pub/sub at once (or with the next heartbeat, every lease/4) and is
    # repeated every 5 ms until the handler ends: 99 % of them land within one heartbeat interval,
    # and none takes a lease (then the fence would have stopped the job as lost instead).
    assert stop_latency[int(len(stop_latency) * 0.99)] < STORM_LEASE / 4
    assert stop_latency[-1] < STORM_LEASE
    assert (await q.health())["running_jobs"] == 0


# -- kill storm -------------------------------------------------------------------------------


def _assessment(tenant: uuid.UUID, i: int) -> dict[str, Any]:
    bom = [
        {"hs_code": "8473.30", "value": 120 + i % 7, "origin_country": "CN"},
        {"hs_code": "8542.31", "value": 80, "origin_country": "MX"},
    ]
    return {
        "hs_code": "8471.30",
        "bill_of_materials": bom,
        "transaction_value": 5000 + i,  # every input differs: no job is answered from the cache
        "agreement_code": "USMCA",
        "origin_country": "MX",
        "destination_country": "US",
        "tenant_id": str(tenant),
    }


async def test_kill_storm_every_job_completes_with_exactly_one_verdict(
    make_queue: Callable[..., JobQueue],
    spawn_worker: Callable[..., subprocess.Popen[bytes]],
    namespaced_settings: Settings,
) -> None:
    jobs, kills, lease = 1000, 10, 1.0
    q = make_queue(lease_seconds=lease)
    register_default_handlers(q)  # submit-time checks; the workers run the real handlers
    assert namespaced_settings.db_dsn is not None
    tenant = uuid.uuid4()

    def spawn() -> subprocess.Popen[bytes]:
        return spawn_worker(concurrency=8, lease=lease, handlers=None, extra=("--max-attempts", "100"))

    live = [spawn(), spawn()]
    await wait_workers(q, 2, live)
    ids = [await q.submit("assessment", _assessment(tenant, i)) for i in range(jobs)]

    def stored() -> int:
        with psycopg.connect(namespaced_settings.db_dsn, autocommit=True) as conn:  # type: ignore[arg-type]
            row = conn.execute("SELECT count(*) FROM psra_verdicts WHERE tenant_id = %s", (tenant,)).fetchone()
        return int(row[0]) if row else 0

    rng = random.Random(7)
    for k in range(kills):
        # Kill at known points of progress: after every 80 stored verdicts, with jobs in flight.
        await wait_until(lambda k=k: asyncio.to_thread(lambda: stored() >= (k + 1) * 80), timeout=120, interval=0.02)
        victim = live.pop(rng.randrange(len(live)))
        os.kill(victim.pid, signal.SIGKILL)
        await asyncio.to_thread(victim.wait, 10)
        live.append(spawn())
    finals = [await _final(q, job_id, timeout=180) for job_id in ids]
    statuses = Counter(f.status for f in finals)
    reruns = sum(1 for f in finals if f.attempts > 1)
    with psycopg.connect(namespaced_settings.db_dsn, autocommit=True) as conn:  # type: ignore[arg-type]
        rows = conn.execute("SELECT evaluation_id FROM psra_verdicts WHERE tenant_id = %s", (tenant,)).fetchall()
    stored_ids = Counter(r[0] for r in rows)
    print(
        f"\nkill storm: {jobs} assessment jobs, 2 worker processes, {kills} kill -9: {dict(statuses)}; "
        f"{reruns} jobs ran more than once; {len(rows)} verdict rows, {len(stored_ids)} distinct evaluation ids"
    )
    assert statuses == {JobStatus.COMPLETED: jobs}
    assert reruns >= 1, "no job was in flight when a worker was killed: the storm proved nothing"
    assert len(rows) == jobs and set(stored_ids) == {job_verdict_ids(job_id)[0] for job_id in ids}
    assert all(f.result["evaluation_id"] == str(job_verdict_ids(f.job_id)[0]) for f in finals)


# -- lost keys ----------------------------------------------------------------------------------


async def test_lost_keys_are_repaired_or_reported_and_nothing_stays_running(
    make_queue: Callable[..., JobQueue], namespaced_settings: Settings
) -> None:
    q = make_queue(namespaced_settings.replace(max_concurrent_jobs=4), lease_seconds=1.0, sweep_seconds=3600)
    await q.start_workers(4)
    lost = await lose_keys_while_held(q)  # the chaos, each at a point where nothing else moves
    report = await q.sweep()
    print(f"\nlost keys: {report.summary()}")
    await check_lost_keys_repaired(q, lost, report)


#: KEYS: processing, the queue lists, then a hash per job. ARGV: the number of lists, then the job ids.
#: Deletes the hash of each job still named by the processing set or a queue list; returns their ids.
_DELETE_IF_REFERENCED = """
local lists = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV do
  local id, hit = ARGV[i], redis.call('ZSCORE', KEYS[1], ARGV[i])
  for l = 2, lists + 1 do
    if not hit and redis.call('LPOS', KEYS[l], id) then hit = true end
  end
  if hit then
    redis.call('DEL', KEYS[lists + i])
    out[#out + 1] = id
  end
end
return out
"""


async def _lost_has(q: JobQueue, ids: set[str]) -> bool:
    return ids <= set(await q.lost_jobs())


async def test_random_key_loss_mid_run_ends_every_job_final_or_lost(
    make_queue: Callable[..., JobQueue],
    spawn_worker: Callable[..., subprocess.Popen[bytes]],
    namespaced_settings: Settings,
) -> None:
    q = make_queue(lease_seconds=1.0)
    procs = [spawn_worker(concurrency=4, lease=1.0, extra=("--sweep-interval", "1")) for _ in range(2)]
    await wait_workers(q, 2, procs)
    rng = random.Random(99)
    ids = [
        await q.submit("quiet", {"seconds": rng.uniform(0.05, 0.4)}, priority=rng.choice(list(JobPriority)))
        for _ in range(300)
    ]
    deleted: set[str] = set()
    for step in range(12):
        await asyncio.sleep(rng.uniform(0.1, 0.4))
        what = step % 3
        if what == 0:
            await q.redis.delete(q.processing_key)
        elif what == 1:
            await q.redis.delete(q.queue_keys[rng.choice(list(JobPriority))])
        else:  # hashes of jobs that are referenced somewhere (queued or running), so they can be noticed
            referenced = set(await q.redis.zrange(q.processing_key, 0, -1))
            for prio in JobPriority:
                referenced.update(await q.redis.lrange(q.queue_keys[prio], 0, -1))
            picked = rng.sample(sorted(referenced), min(3, len(referenced)))
            # A job may finish between the read above and its deletion, and a finished job's hash is
            # referenced by nothing: delete only what is still queued or running, in one script.
            keys = [q.processing_key, *q.queue_keys.values(), *(q.job_key(j) for j in picked)]
            deleted.update(await q.redis.eval(_DELETE_IF_REFERENCED, len(keys), *keys, len(q.queue_keys), *picked))
            # Known point: the deleted jobs were noticed (a later step could delete the list that
            # still names one, and then nothing in the store would remember it).
            await wait_until(lambda: _lost_has(q, deleted), timeout=30)

    async def settled() -> bool:
        states = [await q.get_job_status(j) for j in ids]
        return all(s is None or s.status.finished for s in states)

    await wait_until(settled, timeout=120, interval=0.2)
    lost = set(await q.lost_jobs())
    finals = {j: await q.get_job_status(j) for j in ids}
    missing = {j for j, s in finals.items() if s is None}
    print(
        f"\nrandom key loss: {len(ids)} jobs; {len(deleted)} job hashes deleted while referenced; "
        f"{Counter(s.status.value for s in finals.values() if s)}; {len(lost & set(ids))} reported lost"
    )
    assert missing == deleted  # nothing vanished that the chaos did not delete
    await wait_until(lambda: _lost_has(q, deleted), timeout=30)
    assert all(s is None or s.status is JobStatus.COMPLETED for s in finals.values())
    assert (await q.health())["running_jobs"] == 0


# -- hung link ------------------------------------------------------------------------------------


async def test_a_worker_with_a_hung_link_stops_its_job_before_another_takes_it(
    make_queue: Callable[..., JobQueue],
    spawn_worker: Callable[..., subprocess.Popen[bytes]],
    namespaced_settings: Settings,
    tmp_path: Path,
) -> None:
    lease = 2.0
    jobs = namespaced_settings.jobs_redis or namespaced_settings.redis
    assert jobs is not None
    q = make_queue(lease_seconds=lease)
    marks = tmp_path / "marks.jsonl"
    with TcpProxy(jobs.host, jobs.port) as proxy:
        hung = spawn_worker(concurrency=1, lease=lease, jobs_url=dataclasses.replace(jobs, port=proxy.port).url())
        await wait_workers(q, 1, [hung])
        job_id = await q.submit("marked", {"file": str(marks), "finish_on_attempt": 2, "seconds": 0.2})
        await wait_status(q, job_id, JobStatus.RUNNING)
        await wait_until(lambda: asyncio.to_thread(lambda: marks.exists() and "start" in marks.read_text()))
        proxy.freeze()  # the first worker still runs the job, but can no longer renew its lease
        healthy = spawn_worker(concurrency=1, lease=lease)
        state = await wait_status(q, job_id, JobStatus.COMPLETED, timeout=60)
        lines = [json.loads(line) for line in marks.read_text().splitlines()]
        proxy.thaw()
    first = [m for m in lines if m["attempt"] == 1]
    second = [m for m in lines if m["attempt"] == 2]
    stop_first = next(m["t"] for m in first if m["event"] == "stop")
    start_second = next(m["t"] for m in second if m["event"] == "start")
    print(
        f"\nhung link: lease {lease:g} s; attempt 1 stopped {start_second - stop_first:.2f} s before attempt 2 "
        f"started (overlap {max(0.0, stop_first - start_second):.2f} s)"
    )
    assert state.attempts == 2 and f":{healthy.pid}:" in state.metadata["worker_id"]
    assert f":{hung.pid}:" in first[0]["worker"]
    assert stop_first < start_second  # never two at once: the fence stops it before its lease can expire


# -- timeout -------------------------------------------------------------------------------------


async def test_a_handler_that_awaits_forever_times_out_and_frees_its_slot(
    make_queue: Callable[..., JobQueue], namespaced_settings: Settings
) -> None:
    q = make_queue(namespaced_settings.replace(max_concurrent_jobs=1))
    await q.start_workers(1)
    stuck = await q.submit("forever", {}, timeout_seconds=0.5)
    after = await q.submit("noop", {"echo": "next"})
    failed = await _final(q, stuck)
    assert failed.status is JobStatus.FAILED and failed.error == "timed out after 0.5 s"
    assert failed.metadata["timeout_seconds"] == 0.5
    done = await _final(q, after)
    assert done.status is JobStatus.COMPLETED and done.result == {"ok": True, "echo": "next"}


@pytest.mark.parametrize("bad", [0, -1, float("nan"), 86_401, "10", True])
async def test_bad_timeouts_are_refused_naming_the_value(make_queue: Callable[..., JobQueue], bad: Any) -> None:
    from psra_bench.exceptions import JobInputError

    q = make_queue()
    with pytest.raises(JobInputError, match=r"timeout_seconds=.* is not valid: use seconds above 0, at most 86400"):
        await q.submit("noop", {}, timeout_seconds=bad)
