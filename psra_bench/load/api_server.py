"""The API server under test: ``psra-bench serve`` as a child process on a free 127.0.0.1 port.

Its settings travel only through the environment built here from a :class:`Settings` (nothing
is inherited from the parent's environment), so a load test measures exactly the configuration
it names. The server always gets an operator token (``PSRA_ADMIN_TOKEN``: the settings' own, or a
fresh ``secrets.token_urlsafe``) so the load generators can call the cross-tenant routes; it is
kept on :class:`ApiServer` out of its repr, and never put on a command line or in a log.

The child runs in its own process group, which :func:`stop_api_server` stops gracefully (SIGINT,
so the lifespan closes pools and flushes cache statistics), then by force.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from psra_bench.exceptions import ConfigError, MeasurementError
from psra_bench.settings import LiveSettings, Settings, redact

__all__ = [
    "ApiServer",
    "free_port",
    "server_env",
    "start_api_server",
    "stop_api_server",
    "stop_process_group",
    "log_tail",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(settings: Settings) -> dict[str, str]:
    """The environment of a ``psra-bench serve`` child built from ``settings`` only (nothing inherited)."""
    if not isinstance(settings, LiveSettings):
        raise ConfigError("settings", repr(settings), "LiveSettings with concrete endpoints (from ensure_services)")
    t = settings.ttl
    operator = {"PSRA_ADMIN_TOKEN": settings.admin_token} if settings.admin_token else {}
    return {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PSRA_BENCH_HOME": str(settings.home),
        "PSRA_DB_DSN": settings.db_dsn,
        "REDIS_URL": settings.redis.url(with_password=True),
        "JOBS_REDIS_URL": settings.jobs_redis.url(with_password=True),
        "PSRA_ALLOW_EVICTING_JOB_STORE": str(settings.allow_evicting_job_store).lower(),
        "PSRA_JOBS_REDIS_CLUSTER": str(settings.jobs_redis_cluster).lower(),
        "PSRA_JOB_TIMEOUT_SECONDS": str(settings.job_timeout_seconds),
        "PSRA_JOB_MAX_PAYLOAD_BYTES": str(settings.max_job_payload_bytes),
        "ENABLE_CACHE": str(settings.enable_cache).lower(),
        "ENABLE_ASYNC_TASKS": str(settings.enable_async_tasks).lower(),
        "MAX_CONCURRENT_JOBS": str(settings.max_concurrent_jobs),
        "CACHE_TTL_HS_CODES": str(t.hs_codes),
        "CACHE_TTL_RULES": str(t.rules),
        "CACHE_TTL_ASSESSMENTS": str(t.assessments),
        "CACHE_TTL_VERDICTS": str(t.verdicts),
        "CACHE_TTL_REPORTS": str(t.reports),
        "CACHE_DEFAULT_TTL": str(t.default),
        "PSRA_CACHE_NAMESPACE": settings.cache_namespace,
        "PSRA_DB_POOL_MIN": str(settings.db_pool_min),
        "PSRA_DB_POOL_MAX": str(settings.db_pool_max),
        **operator,
    }


@dataclass
class ApiServer:
    """A running ``psra-bench serve`` child process."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    enable_cache: bool
    #: The server's operator token (send it as ``Authorization: Bearer``); a secret, so not in repr.
    admin_token: str = field(default="", repr=False)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server process id."""
        return int(self.process.pid)


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, passwords redacted (for error messages)."""
    try:
        return redact("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
    except OSError:
        return ""


def start_api_server(
    settings: Settings, log_path: str | Path, *, job_workers: bool = True, timeout_s: float = 60.0
) -> ApiServer:
    """Start ``psra-bench serve`` on a free 127.0.0.1 port and wait until /api/jobs/health reports status ok.

    A server that exits at once because its port was taken meanwhile is started again on
    another port (twice at most). Without ``settings.admin_token`` the server gets a fresh one.
    """
    if not settings.admin_token:
        settings = settings.replace(admin_token=secrets.token_urlsafe(32))
    for attempt in range(3):
        try:
            return _start_api_server(settings, log_path, job_workers, timeout_s)
        except MeasurementError as e:
            if attempt == 2 or "address already in use" not in str(e).lower():
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _start_api_server(settings: Settings, log_path: str | Path, job_workers: bool, timeout_s: float) -> ApiServer:
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "psra_bench",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--job-workers" if job_workers else "--no-job-workers",
    ]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            cmd,
            env=server_env(settings),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = ApiServer(proc, port, log, settings.enable_cache, settings.admin_token or "")
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise MeasurementError(
                f"the API server exited with code {proc.returncode} before it answered; "
                f"its log ends with:\n{log_tail(log)}"
            )
        health = _health(server.base_url)
        if health.get("status") == "ok":
            return server
        if time.monotonic() > deadline:
            stop_api_server(server)
            said = f"its last answer was {health}" if health else "it never answered"
            raise MeasurementError(
                f"the API server did not report status ok on /api/jobs/health within {timeout_s:g} s ({said}); "
                f"its log ends with:\n{log_tail(log)}"
            )
        time.sleep(0.2)


def _health(base_url: str) -> dict[str, object]:
    """The body of GET /api/jobs/health (a 503 one too: it says which dependency is down); {} when none came."""
    try:
        with urllib.request.urlopen(f"{base_url}/api/jobs/health", timeout=2) as resp:
            body = resp.read()
    except urllib.error.HTTPError as e:  # 503: the server runs, a dependency does not
        body = e.read()
    except OSError:
        return {}
    try:
        doc = json.loads(body)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_process_group(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """SIGINT, then SIGTERM, then SIGKILL to the process group of ``proc`` (started by us); return its exit code."""
    for sig, wait in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        _signal_group(proc, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    _signal_group(proc, signal.SIGKILL)  # children left behind by the leader
    return proc.poll()


def stop_api_server(server: ApiServer, timeout_s: float = 15.0) -> int | None:
    """Stop the server gracefully (its lifespan closes pools and flushes cache stats); return its exit code."""
    return stop_process_group(server.process, timeout_s)
