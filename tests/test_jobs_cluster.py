"""The job queue on a real Redis Cluster (three Valkey primaries): one hash tag per queue.

Every test forms a throwaway cluster (tests/cluster_fixtures.py) and runs the queue on it, in this
process (``PSRA_JOBS_REDIS_CLUSTER``'s setting, or ``JobQueue(client=RedisCluster)``) and in real
``psra-bench worker`` processes. Where a test needs to know a queue's node it picks a namespace
whose tag hashes into that node's slots, so nothing depends on chance.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
from cluster_fixtures import SLOT_RANGES, cluster
from job_fixtures import (
    check_lost_keys_repaired,
    lose_keys_while_held,
    make_queue,
    spawn_worker,
    wait_status,
    wait_until,
    wait_workers,
)
from redis.crc import key_slot
from redis.exceptions import ClusterCrossSlotError

from psra_bench.constants import JOB_QUEUE_PREFIX
from psra_bench.doctor import diagnose
from psra_bench.exceptions import ConfigError, JobError, JobStoreError
from psra_bench.jobs import JobPriority, JobQueue, JobStatus
from psra_bench.jobs import scripts as job_scripts
from psra_bench.jobs.client import job_store_policy_now
from psra_bench.settings import RedisSettings, Settings

__all__ = ["cluster", "make_queue", "spawn_worker"]  # fixtures, imported so pytest finds them here

#: What a worker process needs to run on the cluster (with JOBS_REDIS_URL naming one of its nodes).
CLUSTER_ENV = {"PSRA_JOBS_REDIS_CLUSTER": "true"}


def node_of(key: str) -> int:
    """Index (into the cluster's ports) of the primary that serves ``key``'s slot."""
    slot = key_slot(key.encode())
    return next(i for i, (lo, hi) in enumerate(SLOT_RANGES) if lo <= slot <= hi)


def namespace_on(base: str, node: int) -> str:
    """A namespace under ``base`` whose queue's hash tag lives on primary ``node``."""
    for i in range(1000):
        namespace = f"{base}n{i}:"
        if node_of(JOB_QUEUE_PREFIX.format(namespace=namespace)) == node:
            return namespace
    raise AssertionError(f"no namespace under {base!r} hashes to node {node}")


@pytest.fixture
def cluster_settings(cluster: list[int], namespaced_settings: Settings) -> Settings:
    """The test's settings with the job store on the cluster: JOBS_REDIS_URL names its first node."""
    return namespaced_settings.replace(jobs_redis=RedisSettings(port=cluster[0]), jobs_redis_cluster=True)


@pytest.fixture
def cluster_queue(cluster_settings: Settings, make_queue: Callable[..., JobQueue]) -> Callable[..., JobQueue]:
    """``make_queue`` on the cluster (``cluster_settings`` unless given); made after the cluster, closed before it."""

    def make(settings: Settings | None = None, **options: Any) -> JobQueue:
        return make_queue(settings or cluster_settings, **options)

    return make


@pytest.fixture
def cluster_worker(
    cluster_settings: Settings, spawn_worker: Callable[..., subprocess.Popen[bytes]]
) -> Callable[..., subprocess.Popen[bytes]]:
    """``spawn_worker`` on the cluster (PSRA_JOBS_REDIS_CLUSTER=true); its processes die before the cluster stops."""
    assert cluster_settings.jobs_redis is not None
    url = cluster_settings.jobs_redis.url()

    def spawn(**options: Any) -> subprocess.Popen[bytes]:
        return spawn_worker(jobs_url=url, env_extra=CLUSTER_ENV, **options)

    return spawn


def _nodes(cluster: list[int]) -> list[redis.Redis]:
    return [redis.Redis(port=port, decode_responses=True) for port in cluster]


def _all_keys(nodes: list[redis.Redis]) -> list[tuple[int, str]]:
    """Every key of the (throwaway) cluster, with the index of the node holding it."""
    return [(i, key) for i, node in enumerate(nodes) for key in set(node.scan_iter(count=1000))]


def _scans(node: redis.Redis) -> int:
    return int(node.info("commandstats").get("cmdstat_scan", {}).get("calls", 0))


async def _numsub(node: redis.asyncio.Redis, channel: str) -> int:
    """Subscribers of ``channel`` on this node itself (a cluster node counts only its own)."""
    return int((await node.pubsub_numsub(channel))[0][1])


async def _subscribed(cluster: list[int], channel: str, node: int) -> None:
    """Wait until a worker listens on ``channel`` at primary ``node``, and on no other node."""
    clients = [redis.asyncio.Redis(port=port) for port in cluster]
    try:

        async def listening() -> bool:
            counts = [await _numsub(c, channel) for c in clients]
            return counts[node] >= 1 and sum(counts) == counts[node]

        await wait_until(listening)
    finally:
        for c in clients:
            await c.aclose()


# -- the keys ---------------------------------------------------------------------------------


async def test_all_keys_of_a_queue_share_one_slot_and_the_old_layout_is_crossslot(
    cluster_queue: Callable[..., JobQueue], cluster_settings: Settings, cluster: list[int]
) -> None:
    ns = cluster_settings.cache_namespace
    q = cluster_queue(cluster_settings.replace(max_concurrent_jobs=1))
    assert isinstance(q.redis, redis.asyncio.cluster.RedisCluster) and q.prefix == f"{{{ns}jobs}}:"
    await q.start_workers(1)
    done = await q.submit("record", {"tag": "a"})
    await wait_status(q, done, JobStatus.COMPLETED)
    held = await q.submit("wait_for_release", {})
    await wait_status(q, held, JobStatus.RUNNING)  # the processing set exists
    waiting = {p: await q.submit("noop", {}, priority=p) for p in JobPriority}  # the cap holds them: 4 lists
    doomed = await q.submit("noop", {}, priority=JobPriority.LOW)
    await q.redis.delete(q.job_key(doomed))
    assert (await q.sweep()).forgotten == 1  # the lost set exists
    nodes = _nodes(cluster)
    try:
        found = _all_keys(nodes)
        names = {key for _, key in found}
        queue_keys = {q.processing_key, q.workers_key, q.lost_key, *q.queue_keys.values()}
        job_keys = {q.job_key(job_id) for job_id in (done, held, *waiting.values())}
        assert queue_keys | job_keys | {q.key("t:order"), q.key(f"t:started:{done}")} <= names
        assert all(key.startswith(q.prefix) for key in names), names
        tag_node = node_of(q.prefix)
        assert {i for i, _ in found} == {tag_node}  # one node holds the whole queue
        slots = {int(nodes[tag_node].execute_command("CLUSTER KEYSLOT", key)) for key in [*names, q.channel]}
        assert slots == {key_slot(q.prefix.encode())}

        # Without the tag (the old layout, {ns}job:{id} and {ns}jobs:...) a script spans slots.
        job_id = next(f"job-{i}" for i in range(1000) if node_of(f"{ns}job:job-{i}") != tag_node)
        old = [f"{ns}job:{job_id}", f"{ns}jobs:queue:normal", f"{ns}jobs:events"]
        assert len({key_slot(k.encode()) for k in old}) > 1
        args = [job_id, "noop", "normal", "{}", 60, "{}", 3600, "", "600"]
        with pytest.raises(ClusterCrossSlotError, match="same slot"):  # the server's CROSSSLOT
            nodes[node_of(old[0])].eval(job_scripts.SUBMIT, len(old), *old, *args)
        # ... and a key a script builds from an id (as DEQUEUE does) may live on another node.
        with pytest.raises(redis.ResponseError, match="non local key"):
            nodes[tag_node].eval("return redis.call('HGET', ARGV[1], 'status')", 1, q.processing_key, old[0])
        # The tagged keys, sent as they are by a plain connection to the owning node: one slot, accepted.
        tagged = [q.job_key(job_id), q.queue_keys[JobPriority.NORMAL], q.channel]
        assert int(nodes[tag_node].eval(job_scripts.SUBMIT, len(tagged), *tagged, *args)) > 0
        state = await q.get_job_status(job_id)
        assert state is not None and state.status is JobStatus.PENDING
    finally:
        for node in nodes:
            node.close()
    await q.redis.set(q.key(f"t:release:{held}"), "1")
    await wait_status(q, held, JobStatus.COMPLETED)


async def test_two_namespaces_on_two_nodes_are_independent_queues(
    cluster_queue: Callable[..., JobQueue], cluster_settings: Settings, cluster: list[int]
) -> None:
    base = cluster_settings.cache_namespace
    client = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=cluster[2], decode_responses=True)
    try:
        qa = cluster_queue(cluster_settings.replace(cache_namespace=namespace_on(base, 0)), client=client)
        qb = cluster_queue(cluster_settings.replace(cache_namespace=namespace_on(base, 1)), client=client)
        assert (node_of(qa.prefix), node_of(qb.prefix)) == (0, 1) and qa.redis is qb.redis is client
        await qa.start_workers(1)  # only queue A has a worker
        a_jobs = [await qa.submit("noop", {"echo": i}) for i in range(3)]
        b_jobs = [await qb.submit("noop", {"echo": i}) for i in range(3)]
        for i, job_id in enumerate(a_jobs):
            assert (await wait_status(qa, job_id, JobStatus.COMPLETED)).result == {"ok": True, "echo": i}
        health_a, health_b = await qa.health(), await qb.health()
        assert health_a["workers"] == 1 and health_a["queued_jobs"]["normal"] == 0
        assert health_b["workers"] == 0 and health_b["queued_jobs"]["normal"] == 3
        assert await qa.get_job_status(b_jobs[0]) is None  # another queue's job is unknown here
        assert (await qb.cancel(b_jobs[0])).outcome == "cancelled"
        nodes = _nodes(cluster)
        try:
            for i, key in _all_keys(nodes):
                assert key.startswith((qa.prefix, qb.prefix)) and i == (0 if key.startswith(qa.prefix) else 1), key
        finally:
            for node in nodes:
                node.close()
        await qa.close()  # a queue leaves a client it was given open: B still uses it
        await qb.start_workers(1)
        for job_id in b_jobs[1:]:
            await wait_status(qb, job_id, JobStatus.COMPLETED)
        cancelled = await qb.get_job_status(b_jobs[0])
        assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
        await qb.close()
    finally:
        await client.aclose()


# -- jobs run, end and are cancelled --------------------------------------------------------------


async def test_jobs_run_on_the_cluster_woken_by_pub_sub(
    cluster_queue: Callable[..., JobQueue], cluster_settings: Settings, cluster: list[int]
) -> None:
    settings = cluster_settings.replace(cache_namespace=namespace_on(cluster_settings.cache_namespace, 2))
    q = cluster_queue(settings, poll_interval=60)  # an idle worker polls once a minute: only pub/sub wakes it sooner
    await q.start_workers(2)
    await _subscribed(cluster, q.channel, 2)  # on the node of the queue's tag (the client connected to node 0)
    first = await q.submit("noop", {"echo": "first"})
    await wait_status(q, first, JobStatus.COMPLETED)  # its worker asked for the next job before it ran: now it waits
    ids = {p: await q.submit("noop", {"echo": p.value}, priority=p) for p in JobPriority}
    for prio, job_id in ids.items():
        state = await wait_status(q, job_id, JobStatus.COMPLETED)
        assert state.result == {"ok": True, "echo": prio.value} and state.attempts == 1
    health = await q.health()
    assert health["status"] == "ok" and health["workers"] == 1 and health["running_jobs"] == 0
    assert health["queued_jobs"] == {"critical": 0, "high": 0, "normal": 0, "low": 0}


async def test_cancel_pending_and_running_jobs_on_the_cluster(
    cluster_queue: Callable[..., JobQueue], cluster_settings: Settings, cluster: list[int]
) -> None:
    # A 600 s lease: no heartbeat for 150 s, so a running job's cancel can only land through pub/sub.
    q = cluster_queue(cluster_settings, lease_seconds=600, poll_interval=60)
    pending = await q.submit("noop", {})
    cancelled = await q.cancel(pending)
    assert (cancelled.outcome, cancelled.status) == ("cancelled", JobStatus.CANCELLED)
    assert await q.redis.llen(q.queue_keys[JobPriority.NORMAL]) == 0
    await q.start_workers(1)
    await _subscribed(cluster, q.channel, node_of(q.prefix))
    running = await q.submit("wait_for_release", {})
    await wait_status(q, running, JobStatus.RUNNING)
    assert (await q.cancel(running)).outcome == "accepted"
    state = await wait_status(q, running, JobStatus.CANCELLED)
    assert state.error == "cancelled on request while running"
    assert (await q.cancel(running)).outcome == "already_finished"
    assert (await q.health())["running_jobs"] == 0


async def test_a_killed_worker_process_loses_its_lease_and_another_finishes_the_job(
    cluster_queue: Callable[..., JobQueue], cluster_worker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    q = cluster_queue()
    victim = cluster_worker(concurrency=1)
    await wait_workers(q, 1, [victim])
    job_id = await q.submit("crashable", {"hold": True})  # runs until the test sets t:release:{job_id}
    running = await wait_status(q, job_id, JobStatus.RUNNING)
    victim_id = running.metadata["worker_id"]
    assert f":{victim.pid}:" in victim_id

    async def started() -> bool:
        return int(await q.redis.llen(q.key(f"t:starts:{job_id}"))) == 1

    await wait_until(started)
    os.kill(victim.pid, signal.SIGKILL)  # mid-job, for certain: the job cannot end before its release
    victim.wait(timeout=10)
    await q.redis.set(q.key(f"t:release:{job_id}"), "1")
    rescuer = cluster_worker(concurrency=1)
    state = await wait_status(q, job_id, JobStatus.COMPLETED, timeout=30)
    assert state.attempts == 2 and state.metadata["workers_lost"] == 1
    assert f":{rescuer.pid}:" in state.metadata["worker_id"]
    assert await q.redis.get(q.key(f"t:completions:{job_id}")) == "1"
    assert await q.redis.lrange(q.key(f"t:starts:{job_id}"), 0, -1) == [victim_id, state.metadata["worker_id"]]
    assert (await q.health())["running_jobs"] == 0


# -- the store's safety: the sweep and the eviction check ---------------------------------------


async def test_the_sweep_repairs_lost_keys_scanning_only_the_node_of_the_tag(
    cluster_queue: Callable[..., JobQueue], cluster_settings: Settings, cluster: list[int]
) -> None:
    settings = cluster_settings.replace(
        cache_namespace=namespace_on(cluster_settings.cache_namespace, 1), max_concurrent_jobs=4
    )
    q = cluster_queue(settings, lease_seconds=1.0, sweep_seconds=3600)
    await q.start_workers(4)
    lost = await lose_keys_while_held(q)  # the chaos, at a point where nothing else moves
    nodes = _nodes(cluster)
    try:
        before = [_scans(n) for n in nodes]
        report = await q.sweep()
        after = [_scans(n) for n in nodes]
    finally:
        for node in nodes:
            node.close()
    assert after[1] > before[1] and (after[0], after[2]) == (before[0], before[2])  # only the tag's node
    await check_lost_keys_repaired(q, lost, report)


async def test_jobs_sweep_command_runs_on_the_cluster(
    cluster_queue: Callable[..., JobQueue], cluster_settings: Settings
) -> None:
    from click.testing import CliRunner

    from psra_bench.cli import cli

    q = cluster_queue(cluster_settings)
    pending = await q.submit("noop", {})
    await q.redis.delete(q.queue_keys[JobPriority.NORMAL])  # a pending job in no queue
    assert cluster_settings.jobs_redis is not None and cluster_settings.redis is not None
    env = {
        "REDIS_URL": cluster_settings.redis.url(),
        "JOBS_REDIS_URL": cluster_settings.jobs_redis.url(),
        **CLUSTER_ENV,
    }
    argv = ["jobs", "sweep", "--namespace", cluster_settings.cache_namespace, "--json"]
    out = await asyncio.to_thread(CliRunner().invoke, cli, argv, env=env)
    assert out.exit_code == 0, (out.output, out.exception)
    report = json.loads(out.stdout)
    assert (report["scanned"], report["requeued_pending"], report["repaired"], report["lost"]) == (1, 1, 1, [])
    assert await q.redis.lrange(q.queue_keys[JobPriority.NORMAL], 0, -1) == [pending]


async def test_the_eviction_check_asks_the_node_of_the_tag(
    cluster_queue: Callable[..., JobQueue], cluster_settings: Settings, cluster: list[int]
) -> None:
    q = cluster_queue(cluster_settings.replace(cache_namespace=namespace_on(cluster_settings.cache_namespace, 1)))
    assert await q.check_job_store() == "noeviction"
    nodes = _nodes(cluster)
    try:
        nodes[0].config_set("maxmemory-policy", "allkeys-lru")  # the node the client was given, not the queue's
        assert await q.check_job_store() == "noeviction"
        nodes[1].config_set("maxmemory-policy", "allkeys-lru")
        refused = rf"job store at 127\.0\.0\.1:{cluster[1]} \(the cluster node of .* on every primary of the cluster"
        with pytest.raises(JobStoreError, match=refused):
            await q.check_job_store()
        # What `psra-bench doctor` reports for the job store: the queue's node and its policy.
        assert await asyncio.to_thread(job_store_policy_now, q.settings) == (f"127.0.0.1:{cluster[1]}", "allkeys-lru")
        jobs = (await asyncio.to_thread(diagnose, q.settings))["jobs redis"]
        assert f"live on 127.0.0.1:{cluster[1]} (policy allkeys-lru)" in jobs["cluster"], jobs
        assert jobs["job safety"].startswith("UNSAFE"), jobs  # judged by the queue's node, not JOBS_REDIS_URL's
        allowed = cluster_queue(q.settings.replace(allow_evicting_job_store=True))
        assert await allowed.check_job_store() == "allkeys-lru"
    finally:
        for node in nodes:
            node.close()


# -- configuration --------------------------------------------------------------------------------


def test_the_cluster_setting_comes_from_the_environment_with_one_sentence_errors() -> None:
    url = "redis://:hunter2-secret@10.0.0.5:7000/0"
    s = Settings.from_env({"JOBS_REDIS_URL": url, "PSRA_JOBS_REDIS_CLUSTER": "true"})
    assert s.jobs_redis_cluster and s.jobs_redis == RedisSettings.from_url(url)
    assert "hunter2" not in repr(s) and "jobs_redis_cluster=True" in repr(s)
    assert not Settings.from_env({"JOBS_REDIS_URL": url}).jobs_redis_cluster
    with pytest.raises(ConfigError, match=r"PSRA_JOBS_REDIS_CLUSTER='sometimes' is not valid: use true or false"):
        Settings.from_env({"JOBS_REDIS_URL": url, "PSRA_JOBS_REDIS_CLUSTER": "sometimes"})
    with pytest.raises(ConfigError, match=r"PSRA_JOBS_REDIS_CLUSTER='yes' is not valid: true needs JOBS_REDIS_URL"):
        Settings.from_env({"REDIS_URL": "redis://cache:6379/0", "PSRA_JOBS_REDIS_CLUSTER": "yes"})
    with pytest.raises(ConfigError, match=r"JOBS_REDIS_URL='redis://:\*\*\*@10.0.0.5:7000/2' is not valid: use db 0"):
        Settings.from_env({"JOBS_REDIS_URL": url[:-1] + "2", "PSRA_JOBS_REDIS_CLUSTER": "on"})


async def test_a_queue_refuses_a_client_that_does_not_decode(cluster_settings: Settings, cluster: list[int]) -> None:
    client: Any = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=cluster[0])
    try:
        with pytest.raises(JobError, match="decode_responses=True"):
            JobQueue(cluster_settings, client=client)
    finally:
        await client.aclose()
    with pytest.raises(JobError, match="a Redis Cluster, which has only db 0"):
        JobQueue(cluster_settings.replace(jobs_redis=RedisSettings(port=cluster[0], db=3)))
