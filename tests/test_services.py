"""Embedded PostgreSQL + two Valkeys (cache, jobs): start, reuse, status, stop, recovery from killed runs.

These tests start their own servers in a private home (``tmp_path``), never the shared test
home, and stop them at the end. The cache's Valkey evicts and keeps nothing on disk; the job
queue's keeps everything (noeviction, append-only file). Configured servers (PSRA_DB_DSN /
REDIS_URL / JOBS_REDIS_URL) are never started or stopped by psra-bench, which the last tests check.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis
from click.testing import CliRunner

from psra_bench.cli import cli
from psra_bench.infra.embedded import ServiceStatus, ensure_services, services_status, stop_services
from psra_bench.infra.redis_client import redis_info
from psra_bench.settings import LiveSettings, RedisSettings, Settings

SECRET = "s3cr3t-Pw"
EMBEDDED = ("postgres", "valkey", "valkey-jobs")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private state folder for this module's embedded servers; all are stopped at the end."""
    path = tmp_path_factory.mktemp("services") / "home"
    try:
        yield path
    finally:
        stop_services(Settings(home=path))


def _status(settings: Settings) -> dict[str, ServiceStatus]:
    return {s.name: s for s in services_status(settings)}


def _pids(home: Path) -> dict[str, int | None]:
    return {name: s.pid for name, s in _status(Settings(home=home)).items()}


def _check_alive(settings: Settings) -> None:
    assert settings.db_dsn is not None and settings.redis is not None and settings.jobs_redis is not None
    with psycopg.connect(settings.db_dsn, connect_timeout=10) as conn:
        row = conn.execute("SELECT 1").fetchone()
        assert row == (1,)
    for server in (settings.redis, settings.jobs_redis):
        client = redis.Redis(**server.client_kwargs())
        try:
            assert client.ping() is True
        finally:
            client.close()


def _client(server: RedisSettings | None) -> redis.Redis:
    assert server is not None
    return redis.Redis(**server.client_kwargs(), decode_responses=True)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids: list[int], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not all(_gone(p) for p in pids):
        assert time.monotonic() < deadline, f"processes {pids} did not exit"
        time.sleep(0.05)


def _pg_pid_file(home: Path) -> Path:
    return home / "postgres" / "pgdata" / "postmaster.pid"


def _valkey_pid_file(home: Path, name: str = "valkey") -> Path:
    return home / name / "valkey.pid"


# --------------------------------------------------------------------------- start, reuse, stop


@pytest.mark.slow
def test_start_reuse_and_status(home: Path) -> None:
    s = ensure_services(Settings(home=home))
    assert s.embedded_services == EMBEDDED
    assert s.embedded_db and s.embedded_redis and s.embedded_jobs_redis
    assert s.db_dsn is not None and s.db_dsn.startswith("postgresql://postgres@127.0.0.1:")
    assert s.redis is not None and s.redis.host == "127.0.0.1"
    assert s.jobs_redis.host == "127.0.0.1" and s.jobs_redis.port != s.redis.port  # a server of its own
    _check_alive(s)

    status = _status(s)
    assert set(status) == set(EMBEDDED)
    for st in status.values():
        assert st.managed and st.running and st.pid is not None
        assert st.data_dir is not None and Path(st.data_dir).is_relative_to(home)
        # Both listen on the loopback interface only.
        listening = [c for c in psutil.Process(st.pid).net_connections("inet") if c.status == psutil.CONN_LISTEN]
        assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening)
    assert status["postgres"].endpoint == s.db_dsn
    assert status["valkey"].endpoint == s.redis.url()
    assert status["valkey-jobs"].endpoint == s.jobs_redis.url()
    assert status["valkey"].data_dir == str(home / "valkey")
    assert status["valkey-jobs"].data_dir == str(home / "valkey-jobs")

    # A second call reuses the running servers: same endpoints, same processes.
    again = ensure_services(Settings(home=home))
    assert (again.db_dsn, again.redis, again.jobs_redis) == (s.db_dsn, s.redis, s.jobs_redis)
    assert again.embedded_services == EMBEDDED
    assert _pids(home) == {name: st.pid for name, st in status.items()}

    # So does another process (the next CLI command).
    code = (
        "import json, sys; from pathlib import Path; from psra_bench.infra.embedded import ensure_services; "
        "from psra_bench.settings import Settings; s = ensure_services(Settings(home=Path(sys.argv[1]))); "
        "print(json.dumps([s.db_dsn, s.redis.port, s.jobs_redis.port]))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(home)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [s.db_dsn, s.redis.port, s.jobs_redis.port]
    assert _pids(home) == {name: st.pid for name, st in status.items()}


@pytest.mark.slow
def test_the_jobs_valkey_never_evicts_and_keeps_an_append_only_file(home: Path) -> None:
    s = ensure_services(Settings(home=home))
    jobs, cache = _client(s.jobs_redis), _client(s.redis)
    try:
        cfg = {k: jobs.config_get(k)[k] for k in ("maxmemory", "maxmemory-policy", "appendonly", "appendfsync", "save")}
        assert cfg == {
            "maxmemory": "0",
            "maxmemory-policy": "noeviction",
            "appendonly": "yes",
            "appendfsync": "everysec",
            "save": "",
        }
        assert jobs.config_get("dir")["dir"] == str((home / "valkey-jobs").resolve())
        info = redis_info(jobs)
        assert info["maxmemory_policy"] == "noeviction" and info["maxmemory"] == 0
        assert (info["appendonly"], info["appendfsync"], info["save"], info["aof_enabled"]) == (
            True,
            "everysec",
            "",
            True,
        )
        # The cache's Valkey is as it always was: 2gb, allkeys-lru, nothing on disk.
        assert cache.config_get("dir")["dir"] == str((home / "valkey").resolve())
        facts = redis_info(cache)
        assert (facts["maxmemory"], facts["maxmemory_policy"]) == (2 * 1024**3, "allkeys-lru")
        assert (facts["appendonly"], facts["save"], facts["aof_enabled"]) == (False, "", False)
    finally:
        jobs.close()
        cache.close()
    # Its own pid, port and log files, in its own folder.
    for name in ("valkey", "valkey-jobs"):
        assert {p.name for p in (home / name).iterdir()} >= {"valkey.pid", "port", "valkey.log"}
    assert (home / "valkey-jobs" / "port").read_text().strip() == str(s.jobs_redis.port)
    assert any((home / "valkey-jobs").glob("appendonlydir/*.aof"))
    assert not (home / "valkey" / "appendonlydir").exists()


@pytest.mark.slow
def test_stop_then_start_again_keeps_data(home: Path) -> None:
    s = ensure_services(Settings(home=home))
    assert s.db_dsn is not None
    with psycopg.connect(s.db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS kept (v int)")
        conn.execute("TRUNCATE kept")
        conn.execute("INSERT INTO kept VALUES (7)")
    for server, value in ((s.jobs_redis, "job"), (s.redis, "cached")):
        client = _client(server)
        try:
            client.set("kept", value)
        finally:
            client.close()
    pids = [p for p in _pids(home).values() if p is not None]
    assert len(pids) == 3

    assert stop_services(s) == list(EMBEDDED)
    _wait_gone(pids)
    status = _status(Settings(home=home))
    assert not any(st.running for st in status.values()) and set(status) == set(EMBEDDED)
    assert all(st.pid is None for st in status.values())
    assert stop_services(Settings(home=home)) == []  # nothing left to stop

    s2 = ensure_services(Settings(home=home))
    _check_alive(s2)
    assert s2.db_dsn is not None
    with psycopg.connect(s2.db_dsn) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [(7,)]
    assert (s2.redis, s2.jobs_redis) == (s.redis, s.jobs_redis)  # the same ports again
    jobs, cache = _client(s2.jobs_redis), _client(s2.redis)
    try:
        assert jobs.get("kept") == "job"  # the job store outlives a restart (its append-only file)...
        assert cache.get("kept") is None  # ...the cache starts empty (nothing on disk)
    finally:
        jobs.close()
        cache.close()


# --------------------------------------------------------------------------- stale state of killed runs


@pytest.mark.slow
def test_recovers_after_all_servers_are_killed(home: Path) -> None:
    before = ensure_services(Settings(home=home))
    jobs = _client(before.jobs_redis)
    try:
        jobs.set("survivor", "1")
    finally:
        jobs.close()
    time.sleep(1.5)  # appendfsync everysec: a crash loses at most about the last second
    pids = _pids(home)
    assert all(pids[name] is not None for name in EMBEDDED)
    for name in EMBEDDED:
        os.kill(pids[name], signal.SIGKILL)  # type: ignore[arg-type]
    _wait_gone([p for p in pids.values() if p is not None])
    # The pid files of the killed run are still there...
    assert _pg_pid_file(home).exists() and _valkey_pid_file(home).exists()
    assert _valkey_pid_file(home, "valkey-jobs").exists()
    # ...but status sees through them.
    status = _status(Settings(home=home))
    assert not any(st.running for st in status.values())

    s = ensure_services(Settings(home=home))
    _check_alive(s)
    new = _pids(home)
    assert all(new[name] not in (None, pids[name]) for name in EMBEDDED)
    jobs = _client(s.jobs_redis)
    try:
        assert jobs.get("survivor") == "1"  # replayed from the append-only file
    finally:
        jobs.close()


@pytest.mark.slow
@pytest.mark.parametrize("content", ["self", "999999", "garbage"])
def test_recovers_from_garbage_pid_files(home: Path, content: str) -> None:
    s = ensure_services(Settings(home=home))
    pids = [p for p in _pids(home).values() if p is not None]
    stop_services(s)
    _wait_gone(pids)
    text = str(os.getpid()) if content == "self" else content  # "self": a live process that is no server
    _pg_pid_file(home).write_text(f"{text}\n{home}\n")
    _valkey_pid_file(home).write_text(f"{text}\n")
    _valkey_pid_file(home, "valkey-jobs").write_text(f"{text}\n")

    status = _status(Settings(home=home))
    assert not any(st.running for st in status.values())

    s2 = ensure_services(Settings(home=home))
    _check_alive(s2)
    new = _pids(home)
    assert all(new[name] not in (None, os.getpid()) for name in EMBEDDED)
    assert psutil.pid_exists(os.getpid())  # and nobody killed us


@pytest.mark.slow
def test_a_reused_pid_with_a_server_like_name_is_not_taken_for_the_server(home: Path, tmp_path: Path) -> None:
    """After a reboot a pid file may point at an unrelated process that happens to be called postgres."""
    s = ensure_services(Settings(home=home))
    pids = [p for p in _pids(home).values() if p is not None]
    stop_services(s)
    _wait_gone(pids)
    sleep = shutil.which("sleep")
    assert sleep is not None
    decoys = []
    try:
        for i, (name, pid_file) in enumerate(
            (
                ("postgres", _pg_pid_file(home)),
                ("valkey-server", _valkey_pid_file(home)),
                ("valkey-server", _valkey_pid_file(home, "valkey-jobs")),
            )
        ):
            exe = tmp_path / str(i) / name
            exe.parent.mkdir()
            shutil.copy(sleep, exe)
            proc = subprocess.Popen([str(exe), "60"])
            decoys.append(proc)
            pid_file.write_text(f"{proc.pid}\n")
        status = _status(Settings(home=home))
        assert not status["postgres"].running, "a process merely named 'postgres' is reported as the server"
        assert not status["valkey"].running, "a process merely named 'valkey-server' is reported as the server"
        assert not status["valkey-jobs"].running
        s2 = ensure_services(Settings(home=home))
        _check_alive(s2)
        assert all(d.poll() is None for d in decoys)  # the decoys were left alone
    finally:
        for d in decoys:
            d.kill()
            d.wait()


@pytest.mark.slow
def test_lock_held_by_a_killed_process_does_not_block(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    code = (
        "import fcntl, sys, time; fh = open(sys.argv[1], 'w'); fcntl.flock(fh, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(60)"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, str(home / ".services.lock")], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        finally:
            holder.kill()
    result: list[Settings] = []
    worker = threading.Thread(target=lambda: result.append(ensure_services(Settings(home=home))), daemon=True)
    worker.start()
    worker.join(60)
    assert result, "ensure_services still waits for the lock of a killed process"
    _check_alive(result[0])


@pytest.mark.slow
def test_concurrent_starts_share_one_server_pair(home: Path) -> None:
    s = ensure_services(Settings(home=home))
    pids = [p for p in _pids(home).values() if p is not None]
    stop_services(s)
    _wait_gone(pids)
    code = (
        "import json, sys; from pathlib import Path; from psra_bench.infra.embedded import ensure_services; "
        "from psra_bench.settings import Settings; s = ensure_services(Settings(home=Path(sys.argv[1]))); "
        "print(json.dumps([s.db_dsn, s.redis.port]))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(home)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=90) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    first, second = (json.loads(o[0]) for o in outs)
    assert first == second
    postmasters = [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "postgres"
        and str(home) in " ".join(p.info["cmdline"] or [])
        and "-D" in (p.info["cmdline"] or [])
    ]
    assert len(postmasters) == 1


@pytest.mark.slow
def test_cli_services_up_status_down(home: Path) -> None:
    env: dict[str, str | None] = {
        "PSRA_BENCH_HOME": str(home),
        "PSRA_DB_DSN": None,
        "REDIS_URL": None,
        "REDIS_HOST": None,
        "REDIS_PORT": None,
        "REDIS_PASSWORD": None,
        "REDIS_DB": None,
    }
    runner = CliRunner()
    up = runner.invoke(cli, ["services", "up"], env=env)
    assert up.exit_code == 0, up.output
    assert up.stdout.count("embedded") == 3 and up.stdout.count(" yes ") == 3
    assert "valkey-jobs" in up.stdout

    status = runner.invoke(cli, ["services", "status"], env=env)
    assert status.exit_code == 0 and status.stdout == up.stdout

    down = runner.invoke(cli, ["services", "down"], env=env)
    assert down.exit_code == 0
    assert down.stdout.strip() == "stopped: postgres, valkey, valkey-jobs"
    again = runner.invoke(cli, ["services", "down"], env=env)
    assert again.stdout.strip() == "stopped: nothing was running"
    status = runner.invoke(cli, ["services", "status"], env=env)
    assert status.stdout.count(" no ") == 3


# --------------------------------------------------------------------------- configured servers


def test_configured_servers_are_never_started_or_stopped(tmp_path: Path) -> None:
    state = tmp_path / "state"
    s = Settings(
        home=state,
        db_dsn=f"postgresql://psra:{SECRET}@127.0.0.1:1/psra",
        redis=RedisSettings(port=1, password=SECRET),
    )
    assert not s.embedded_db and not s.embedded_redis and not s.embedded_jobs_redis
    live = ensure_services(s)  # the same values, typed as settings whose endpoints are known...
    assert isinstance(live, LiveSettings)
    # ...and the jobs on the configured Redis (JOBS_REDIS_URL defaults to REDIS_URL): nothing else starts.
    assert live.jobs_redis == live.redis == s.redis and live.embedded_services == ()
    assert dataclasses.asdict(live) == dataclasses.asdict(s.replace(jobs_redis=s.redis))
    assert ensure_services(live) is live
    assert stop_services(s) == [] and stop_services(live) == []
    status = _status(s)
    assert set(status) == {"postgres", "redis"} == set(_status(live))  # the shared server is listed once
    assert not any(st.managed for st in status.values())
    assert all(st.pid is None and st.data_dir is None for st in status.values())
    assert SECRET not in repr(status)
    assert status["postgres"].endpoint == "postgresql://psra:***@127.0.0.1:1/psra"
    assert not state.exists()  # nothing was created either


def test_a_configured_jobs_server_is_kept_and_listed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    s = Settings(
        home=state,
        db_dsn="postgresql://psra@127.0.0.1:1/psra",
        redis=RedisSettings(port=1),
        jobs_redis=RedisSettings(port=2, db=3, password=SECRET),
    )
    live = ensure_services(s)
    assert live.jobs_redis == s.jobs_redis and live.redis == s.redis and live.embedded_services == ()
    assert stop_services(live) == []
    status = _status(live)
    assert set(status) == {"postgres", "redis", "jobs-redis"}
    jobs = status["jobs-redis"]
    assert (jobs.managed, jobs.pid, jobs.data_dir) == (False, None, None)
    assert jobs.endpoint == "redis://:***@127.0.0.1:2/3"
    assert SECRET not in repr(status) and SECRET not in repr(live)
    assert not state.exists()


@pytest.mark.slow
def test_configured_endpoints_of_a_running_embedded_pair_are_left_running(home: Path) -> None:
    """PSRA_DB_DSN / REDIS_URL may point at servers in our own home: stop_services still leaves them."""
    s = ensure_services(Settings(home=home))
    before = _pids(home)
    for configured in (
        Settings(home=home, db_dsn=s.db_dsn, redis=s.redis),
        Settings(home=home, db_dsn=s.db_dsn, redis=s.redis, jobs_redis=s.jobs_redis),
    ):
        assert stop_services(configured) == []
        assert _pids(home) == before
    _check_alive(s)
    # A configured cache with no JOBS_REDIS_URL: the jobs share it, and the jobs Valkey is not used.
    shared = ensure_services(Settings(home=home, db_dsn=s.db_dsn, redis=s.redis))
    assert shared.jobs_redis == s.redis and shared.embedded_services == ()


@pytest.mark.slow
def test_an_embedded_cache_with_a_configured_jobs_server_starts_only_the_cache(home: Path) -> None:
    s = ensure_services(Settings(home=home))
    jobs = RedisSettings(port=1)  # configured: never started (nor contacted) here
    mixed = ensure_services(Settings(home=home, db_dsn=s.db_dsn, jobs_redis=jobs))
    assert mixed.embedded_services == ("valkey",) and mixed.redis == s.redis and mixed.jobs_redis == jobs
    assert mixed.embedded_redis and not mixed.embedded_jobs_redis
    status = _status(mixed)
    assert set(status) == {"postgres", "valkey", "jobs-redis"}
    assert [status[n].managed for n in ("postgres", "valkey", "jobs-redis")] == [False, True, False]
    assert status["jobs-redis"].endpoint == "redis://127.0.0.1:1/0"
