"""``psra-bench serve`` as a real subprocess: it serves the API on --host/--port, honours the
environment (database, Redis, namespace, ENABLE_CACHE), runs jobs with its in-process workers and
stops cleanly on Ctrl-C; a bad port is one clear line.

Two servers start side by side (imports take seconds on a busy machine): ``on`` with the cache and
job workers, ``off`` with ENABLE_CACHE=false and --no-job-workers.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from click.testing import CliRunner

from psra_bench.cli import cli
from psra_bench.constants import JOB_QUEUE_PREFIX
from psra_bench.settings import Settings

_CLEARED = ("REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB", "ENABLE_CACHE", "ENABLE_ASYNC_TASKS",
            "MAX_CONCURRENT_JOBS", "PSRA_CACHE_NAMESPACE", "PSRA_DB_POOL_MIN", "PSRA_DB_POOL_MAX",
            "PSRA_ADMIN_TOKEN")  # fmt: skip
_ITEM = {"code": "0101", "description": "Live horses, asses, mules and hinnies"}
#: The operator token both servers get (PSRA_ADMIN_TOKEN) and the header that sends it.
_TOKEN = secrets.token_urlsafe(32)
_OPERATOR = {"Authorization": f"Bearer {_TOKEN}"}


@dataclass
class Served:
    """One ``psra-bench serve`` process."""

    proc: subprocess.Popen[str]
    url: str
    namespace: str
    banner: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(settings: Settings, dsn: str, home: Path, flags: list[str], env_extra: dict[str, str]) -> Served:
    assert settings.redis is not None
    port = _free_port()
    # PSRA_CACHE_NAMESPACE allows no inner ':', so this is a sibling of the session namespace, not a
    # child of it; the fixture's teardown deletes its keys.
    namespace = f"{settings.cache_namespace.rstrip(':')}-serve-{uuid.uuid4().hex[:6]}:"
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env |= {"PSRA_DB_DSN": dsn, "REDIS_URL": settings.redis.url(), "PSRA_BENCH_HOME": str(home),
            "JOBS_REDIS_URL": (settings.jobs_redis or settings.redis).url(),
            "PSRA_CACHE_NAMESPACE": namespace, "PSRA_ADMIN_TOKEN": _TOKEN, **env_extra}  # fmt: skip
    argv = [sys.executable, "-m", "psra_bench", "serve", "--host", "127.0.0.1", "--port", str(port), *flags]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    cache = "off" if env_extra.get("ENABLE_CACHE") == "false" else "on"
    return Served(proc, url, namespace, f"PSRA API on {url} (docs at /docs); cache {cache}")


def _wait_ready(served: Served, http: httpx.Client, deadline: float) -> None:
    while True:
        if served.proc.poll() is not None:
            pytest.fail(f"serve exited with {served.proc.returncode}: {served.proc.communicate()[1][-2000:]}")
        try:
            if http.get(served.url + "/api/jobs/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"serve at {served.url} did not answer within 60 s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """One HTTP client for every request of this module."""
    with httpx.Client(timeout=30, verify=ssl.create_default_context()) as client:
        yield client


@pytest.fixture(scope="module")
def servers(
    make_database: Callable[..., str],
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    http: httpx.Client,
    rds: redis.Redis,
) -> Iterator[dict[str, Served]]:
    """``on`` and ``off`` servers on one fresh database; interrupted at the end, each must exit 0 cleanly."""
    dsn, home = make_database(), tmp_path_factory.mktemp("serve-home")
    running = {
        "on": _start(settings, dsn, home, [], {}),
        "off": _start(settings, dsn, home, ["--no-job-workers"], {"ENABLE_CACHE": "false"}),
    }
    try:
        deadline = time.monotonic() + 60
        for served in running.values():
            _wait_ready(served, http, deadline)
        yield running
    finally:
        for served in running.values():
            if served.proc.poll() is None:
                served.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        outcomes = []
        for served in running.values():
            try:
                _, stderr = served.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                served.proc.kill()
                _, stderr = served.proc.communicate()
                stderr += "\n(did not stop within 30 s of SIGINT)"
            outcomes.append((served, stderr))
            patterns = (served.namespace + "*", JOB_QUEUE_PREFIX.format(namespace=served.namespace) + "*")
            keys = [k for m in patterns for k in rds.scan_iter(match=m, count=1000)]
            if keys:
                rds.unlink(*keys)
    for served, stderr in outcomes:
        assert served.proc.returncode == 0, stderr[-2000:]
        assert "Traceback" not in stderr, stderr[-2000:]
        assert served.banner in stderr
        assert _TOKEN not in stderr


def test_serve_runs_the_api_with_the_cache_and_job_workers(
    servers: dict[str, Served], http: httpx.Client, rds: redis.Redis
) -> None:
    on = servers["on"]
    hs = http.get(on.url + "/api/hs/8471.30").json()
    assert (hs["code"], hs["section"]) == ("847130", "XVI")
    assert rds.exists(on.namespace + "hs:code:847130")  # PSRA_CACHE_NAMESPACE and the cache reached the app
    assert "/api/jobs/bulk-import/submit" in http.get(on.url + "/openapi.json").json()["paths"]
    assert http.get(on.url + "/docs").status_code == 200
    health = http.get(on.url + "/api/jobs/health", headers=_OPERATOR).json()
    assert health["registered_handlers"] == ["assessment", "bulk_import"] and health["workers"] >= 1
    job = http.post(on.url + "/api/jobs/bulk-import/submit", json={"items": [_ITEM]}, headers=_OPERATOR)
    assert job.status_code == 202
    deadline = time.monotonic() + 30
    status_url = f"{on.url}/api/jobs/{job.json()['job_id']}/status"
    while (state := http.get(status_url, headers=_OPERATOR).json())["status"] in (
        "pending",
        "running",
    ):
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    assert (state["status"], state["progress"], state["result"]["updated"]) == ("completed", 100, 1), state


def test_serve_with_the_cache_off_and_no_workers(
    servers: dict[str, Served], http: httpx.Client, rds: redis.Redis
) -> None:
    off = servers["off"]
    for _ in range(2):
        assert http.get(off.url + "/api/hs/847130").json()["code"] == "847130"
    assert list(rds.scan_iter(match=off.namespace + "hs:*")) == []
    assert http.get(off.url + "/api/jobs/health", headers=_OPERATOR).json()["workers"] == 0
    job = http.post(off.url + "/api/jobs/bulk-import/submit", json={"items": [_ITEM]}, headers=_OPERATOR)
    time.sleep(0.3)  # a worker, if one ran in this process, would take the job now
    status = http.get(f"{off.url}/api/jobs/{job.json()['job_id']}/status", headers=_OPERATOR).json()
    assert status["status"] == "pending"


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_serve_rejects_a_bad_port_in_one_line(port: str) -> None:
    result = CliRunner().invoke(cli, ["serve", "--port", port])
    assert result.exit_code == 2
    assert "--port" in result.output and "Traceback" not in result.output


def test_serve_with_two_worker_processes_shares_one_port_and_stops_cleanly(
    make_database: Callable[..., str],
    settings: Settings,
    tmp_path: Path,
    http: httpx.Client,
    rds: redis.Redis,
) -> None:
    """``serve --workers 2``: two API processes on one port, each with its job worker; Ctrl-C stops all."""
    import psutil

    served = _start(settings, make_database(), tmp_path, ["--workers", "2"], {})
    try:
        _wait_ready(served, http, time.monotonic() + 60)
        children = psutil.Process(served.proc.pid).children(recursive=True)
        deadline = time.monotonic() + 60
        while (health := http.get(served.url + "/api/jobs/health", headers=_OPERATOR).json())["workers"] < 2:
            assert time.monotonic() < deadline, health  # each process registers its own job worker
            time.sleep(0.1)
            children = psutil.Process(served.proc.pid).children(recursive=True)
        assert health["workers"] == 2 and len([c for c in children if "python" in c.name().lower()]) >= 2
        assert http.get(served.url + "/api/hs/847130").json()["code"] == "847130"
    finally:
        served.proc.send_signal(signal.SIGINT)
        try:
            _, stderr = served.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            served.proc.kill()
            _, stderr = served.proc.communicate()
        patterns = (served.namespace + "*", JOB_QUEUE_PREFIX.format(namespace=served.namespace) + "*")
        keys = [k for m in patterns for k in rds.scan_iter(match=m, count=1000)]
        if keys:
            rds.unlink(*keys)
    assert served.proc.returncode == 0, stderr[-2000:]
    assert "2 processes" in stderr and "Traceback" not in stderr, stderr[-2000:]

    # Every process it started ends. multiprocessing's resource tracker (a child too) exits on its own once
    # the server has closed its pipe, a moment after the server: wait for that (bounded), don't race it.
    def running(p: psutil.Process) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 30
    while [c for c in children if running(c)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [c for c in children if running(c)], [(c.pid, c.cmdline()) for c in children if running(c)]
