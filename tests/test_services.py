"""Embedded PostgreSQL + Valkey: start, reuse, status, stop, and recovery from killed runs.

These tests start their own pair of servers in a private home (``tmp_path``), never the shared
test home, and stop them at the end. Configured servers (PSRA_DB_DSN / REDIS_URL) are never
started or stopped by psra-bench, which the last tests check.
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
from psra_bench.settings import LiveSettings, RedisSettings, Settings

SECRET = "s3cr3t-Pw"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private state folder for this module's embedded servers; both are stopped at the end."""
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
    assert settings.db_dsn is not None and settings.redis is not None
    with psycopg.connect(settings.db_dsn, connect_timeout=10) as conn:
        row = conn.execute("SELECT 1").fetchone()
        assert row == (1,)
    client = redis.Redis(**settings.redis.client_kwargs())
    try:
        assert client.ping() is True
    finally:
        client.close()


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


def _valkey_pid_file(home: Path) -> Path:
    return home / "valkey" / "valkey.pid"


# --------------------------------------------------------------------------- start, reuse, stop


@pytest.mark.slow
def test_start_reuse_and_status(home: Path) -> None:
    s = ensure_services(Settings(home=home))
    assert s.embedded_services == ("postgres", "valkey")
    assert s.embedded_db and s.embedded_redis
    assert s.db_dsn is not None and s.db_dsn.startswith("postgresql://postgres@127.0.0.1:")
    assert s.redis is not None and s.redis.host == "127.0.0.1"
    _check_alive(s)

    status = _status(s)
    assert set(status) == {"postgres", "valkey"}
    for st in status.values():
        assert st.managed and st.running and st.pid is not None
        assert st.data_dir is not None and Path(st.data_dir).is_relative_to(home)
        # Both listen on the loopback interface only.
        listening = [c for c in psutil.Process(st.pid).net_connections("inet") if c.status == psutil.CONN_LISTEN]
        assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening)
    assert status["postgres"].endpoint == s.db_dsn
    assert status["valkey"].endpoint == s.redis.url()

    # A second call reuses the running servers: same endpoints, same processes.
    again = ensure_services(Settings(home=home))
    assert (again.db_dsn, again.redis) == (s.db_dsn, s.redis)
    assert _pids(home) == {name: st.pid for name, st in status.items()}

    # So does another process (the next CLI command).
    code = (
        "import json, sys; from pathlib import Path; from psra_bench.infra.embedded import ensure_services; "
        "from psra_bench.settings import Settings; s = ensure_services(Settings(home=Path(sys.argv[1]))); "
        "print(json.dumps([s.db_dsn, s.redis.port]))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(home)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [s.db_dsn, s.redis.port]
    assert _pids(home) == {name: st.pid for name, st in status.items()}


@pytest.mark.slow
def test_stop_then_start_again_keeps_data(home: Path) -> None:
    s = ensure_services(Settings(home=home))
    assert s.db_dsn is not None
    with psycopg.connect(s.db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS kept (v int)")
        conn.execute("TRUNCATE kept")
        conn.execute("INSERT INTO kept VALUES (7)")
    pids = [p for p in _pids(home).values() if p is not None]
    assert len(pids) == 2

    assert sorted(stop_services(s)) == ["postgres", "valkey"]
    _wait_gone(pids)
    status = _status(Settings(home=home))
    assert not status["postgres"].running and not status["valkey"].running
    assert status["postgres"].pid is None and status["valkey"].pid is None
    assert stop_services(Settings(home=home)) == []  # nothing left to stop

    s2 = ensure_services(Settings(home=home))
    _check_alive(s2)
    assert s2.db_dsn is not None
    with psycopg.connect(s2.db_dsn) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [(7,)]


# --------------------------------------------------------------------------- stale state of killed runs


@pytest.mark.slow
def test_recovers_after_both_servers_are_killed(home: Path) -> None:
    ensure_services(Settings(home=home))
    pids = _pids(home)
    pg_pid, vk_pid = pids["postgres"], pids["valkey"]
    assert pg_pid is not None and vk_pid is not None
    os.kill(pg_pid, signal.SIGKILL)
    os.kill(vk_pid, signal.SIGKILL)
    _wait_gone([pg_pid, vk_pid])
    # The pid files of the killed run are still there...
    assert _pg_pid_file(home).exists() and _valkey_pid_file(home).exists()
    # ...but status sees through them.
    status = _status(Settings(home=home))
    assert not status["postgres"].running and not status["valkey"].running

    s = ensure_services(Settings(home=home))
    _check_alive(s)
    new = _pids(home)
    assert new["postgres"] not in (None, pg_pid) and new["valkey"] not in (None, vk_pid)


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

    status = _status(Settings(home=home))
    assert not status["postgres"].running and not status["valkey"].running

    s2 = ensure_services(Settings(home=home))
    _check_alive(s2)
    new = _pids(home)
    assert new["postgres"] not in (None, os.getpid()) and new["valkey"] not in (None, os.getpid())
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
        for name, pid_file in (("postgres", _pg_pid_file(home)), ("valkey-server", _valkey_pid_file(home))):
            exe = tmp_path / name
            shutil.copy(sleep, exe)
            proc = subprocess.Popen([str(exe), "60"])
            decoys.append(proc)
            pid_file.write_text(f"{proc.pid}\n")
        status = _status(Settings(home=home))
        assert not status["postgres"].running, "a process merely named 'postgres' is reported as the server"
        assert not status["valkey"].running, "a process merely named 'valkey-server' is reported as the server"
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
    assert up.stdout.count("embedded") == 2 and up.stdout.count(" yes ") == 2

    status = runner.invoke(cli, ["services", "status"], env=env)
    assert status.exit_code == 0 and status.stdout == up.stdout

    down = runner.invoke(cli, ["services", "down"], env=env)
    assert down.exit_code == 0
    assert down.stdout.strip() == "stopped: postgres, valkey"
    again = runner.invoke(cli, ["services", "down"], env=env)
    assert again.stdout.strip() == "stopped: nothing was running"
    status = runner.invoke(cli, ["services", "status"], env=env)
    assert status.stdout.count(" no ") == 2


# --------------------------------------------------------------------------- configured servers


def test_configured_servers_are_never_started_or_stopped(tmp_path: Path) -> None:
    state = tmp_path / "state"
    s = Settings(
        home=state,
        db_dsn=f"postgresql://psra:{SECRET}@127.0.0.1:1/psra",
        redis=RedisSettings(port=1, password=SECRET),
    )
    assert not s.embedded_db and not s.embedded_redis
    live = ensure_services(s)  # the same values, typed as settings whose endpoints are known
    assert isinstance(live, LiveSettings) and dataclasses.asdict(live) == dataclasses.asdict(s)
    assert ensure_services(live) is live
    assert stop_services(s) == []
    status = _status(s)
    assert set(status) == {"postgres", "redis"}
    assert not any(st.managed for st in status.values())
    assert all(st.pid is None and st.data_dir is None for st in status.values())
    assert SECRET not in repr(status)
    assert status["postgres"].endpoint == "postgresql://psra:***@127.0.0.1:1/psra"
    assert not state.exists()  # nothing was created either


@pytest.mark.slow
def test_configured_endpoints_of_a_running_embedded_pair_are_left_running(home: Path) -> None:
    """PSRA_DB_DSN / REDIS_URL may point at servers in our own home: stop_services still leaves them."""
    s = ensure_services(Settings(home=home))
    configured = Settings(home=home, db_dsn=s.db_dsn, redis=s.redis)
    before = _pids(home)
    assert stop_services(configured) == []
    assert _pids(home) == before
    _check_alive(s)
