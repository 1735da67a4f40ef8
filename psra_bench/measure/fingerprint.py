"""Environment fingerprint: everything needed to tell whether two benchmark runs are comparable.

A fingerprint describes the machine (CPU, RAM, OS), the software (Python, package versions, the
git commit of the checkout), the servers (PostgreSQL version and key settings, Redis/Valkey
version and memory policy, read through connections the caller passes in), the dataset and
every run parameter. It never holds a password: settings are described as host/port/database
only (this module never connects using them), and every string parameter goes through
:func:`psra_bench.settings.redact`, with values of password-like keys replaced by ``***``.

:func:`machine_key` hashes only the parts that make timings comparable, so "the previous
comparable run" is the latest run with the same key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import psycopg
import redis
from psycopg.conninfo import conninfo_to_dict

from psra_bench.infra.redis_client import redis_info
from psra_bench.resources import PACKAGE_DIR
from psra_bench.settings import RedisSettings, Settings, redact

__all__ = [
    "FINGERPRINT_VERSION",
    "PACKAGES",
    "PG_SETTINGS",
    "environment_fingerprint",
    "machine_info",
    "package_versions",
    "git_state",
    "postgres_info",
    "describe_settings",
    "sanitize",
    "machine_key",
]

#: Version of the fingerprint's layout; bump when keys move.
FINGERPRINT_VERSION = 1
#: Distributions whose versions are recorded (None when not installed).
PACKAGES = (
    "psra-bench",
    "psycopg",
    "psycopg-binary",
    "psycopg-pool",
    "redis",
    "fastapi",
    "uvicorn",
    "pydantic",
    "numpy",
    "scipy",
    "locust",
    "hdrhistogram",
    "papermill",
)
#: PostgreSQL settings recorded with SHOW semantics (``current_setting``).
PG_SETTINGS = (
    "shared_buffers",
    "work_mem",
    "maintenance_work_mem",
    "effective_cache_size",
    "max_connections",
    "jit",
    "random_page_cost",
    "effective_io_concurrency",
    "max_parallel_workers_per_gather",
    "synchronous_commit",
)

#: Parameter names whose values are masked: a password-ish word between separators, or "password" anywhere.
_SECRET_KEY = re.compile(
    r"(?:^|[_.-])(?:pass|passwd|password|secret|token|api_?key|credentials?)(?:$|[_.-])|password", re.IGNORECASE
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _os_release() -> dict[str, str]:
    try:
        return platform.freedesktop_os_release()
    except OSError:
        return {}


def machine_info() -> dict[str, Any]:
    """CPU model and counts, RAM, OS, kernel and Python of this machine."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    release = _os_release()
    ram = psutil.virtual_memory().total
    return {
        "hostname": platform.node(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_physical": psutil.cpu_count(logical=False),
        "cpu_usable": usable,
        "architecture": platform.machine(),
        "ram_bytes": int(ram),
        "ram_gib": round(ram / 2**30, 1),
        "os": {
            "system": platform.system(),
            "kernel": platform.release(),
            "distro_id": release.get("ID"),
            "distro_version": release.get("VERSION_ID"),
            "pretty": release.get("PRETTY_NAME"),
            "platform": platform.platform(),
        },
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "compiler": platform.python_compiler(),
            "executable": sys.executable,
        },
    }


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (None when it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(repo_dir: Path | None = None) -> dict[str, Any] | None:
    """Commit, branch and dirty flag of the checkout (None outside a git work tree or without git).

    Without ``repo_dir`` the checkout is the folder above the ``psra_bench`` package, and only
    when it is a work tree's top level (an installed copy inside someone's repo is not ours).
    Untracked, non-ignored files count as dirty: they can change what runs.
    """
    default = repo_dir is None
    repo = PACKAGE_DIR.parent if repo_dir is None else Path(repo_dir)
    top = _git(repo, "rev-parse", "--show-toplevel")
    if top is None or (default and Path(top).resolve() != repo.resolve()):
        return None
    commit = _git(repo, "rev-parse", "HEAD")
    status = _git(repo, "status", "--porcelain")
    return {
        "commit": commit,
        "branch": _git(repo, "rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": None if status is None else bool(status),
    }


def postgres_info(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Server version, major version and :data:`PG_SETTINGS` of a psycopg connection (never its password)."""
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    try:
        version = conn.execute("SELECT current_setting('server_version')").fetchone()
        number = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
        rows = conn.execute(
            "SELECT name, current_setting(name, true) FROM unnest(%s::text[]) AS name", (list(PG_SETTINGS),)
        ).fetchall()
    except psycopg.Error as e:
        return {"error": redact(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)}
    finally:
        if idle and not conn.autocommit and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()  # leave the caller's connection as we found it
    assert version is not None and number is not None
    return {
        "version": str(version[0]).split()[0],
        "version_num": int(number[0]),
        "major_version": int(number[0]) // 10000,
        "host": conn.info.host,
        "port": conn.info.port,
        "dbname": conn.info.dbname,
        "settings": dict(rows),
    }


def _redis_facts(client: redis.Redis) -> dict[str, Any]:
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {}) or {}
    try:
        info = redis_info(client)
    except redis.RedisError as e:
        info = {"error": redact(str(e)) or type(e).__name__}
    return {"host": kwargs.get("host"), "port": kwargs.get("port"), "db": kwargs.get("db")} | info


def _dsn_parts(dsn: str) -> dict[str, Any]:
    try:
        parts = conninfo_to_dict(dsn)  # parses only (libpq PQconninfoParse); never connects
    except psycopg.Error:
        return {"unparseable": True}
    port = parts.get("port")
    return {
        "host": parts.get("host") or parts.get("hostaddr"),
        "port": int(port) if isinstance(port, str) and port.isdigit() else port,
        "dbname": parts.get("dbname"),
    }


def _redis_settings_parts(rs: RedisSettings) -> dict[str, Any]:
    return {"host": rs.host, "port": rs.port, "db": rs.db, "ssl": rs.ssl, "max_connections": rs.max_connections}


def describe_settings(settings: Settings) -> dict[str, Any]:
    """Settings without secrets: servers as host/port/database only, plus every tuning knob."""
    jobs = settings.jobs_redis or settings.redis
    return {
        "db": {"embedded": True} if settings.db_dsn is None else {"embedded": False} | _dsn_parts(settings.db_dsn),
        "redis": {"embedded": True}
        if settings.redis is None
        else {"embedded": False} | _redis_settings_parts(settings.redis),
        "jobs_redis": {"embedded": True}
        if settings.embedded_jobs_redis or jobs is None
        else {"embedded": False} | _redis_settings_parts(jobs),
        "home": str(settings.home),
        "enable_cache": settings.enable_cache,
        "enable_async_tasks": settings.enable_async_tasks,
        "max_concurrent_jobs": settings.max_concurrent_jobs,
        "ttl": dataclasses.asdict(settings.ttl),
        "cache_namespace": settings.cache_namespace,
        "db_pool_min": settings.db_pool_min,
        "db_pool_max": settings.db_pool_max,
        "job_timeout_seconds": settings.job_timeout_seconds,
        "max_job_payload_bytes": settings.max_job_payload_bytes,
    }


def sanitize(value: Any) -> Any:
    """A JSON-friendly copy of ``value`` with URLs redacted and password-like keys masked."""
    if isinstance(value, Settings):
        return describe_settings(value)
    if isinstance(value, RedisSettings):
        return _redis_settings_parts(value)
    if isinstance(value, Mapping):
        return {
            str(k): "***" if _SECRET_KEY.search(str(k)) and v is not None else sanitize(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [sanitize(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sanitize(dataclasses.asdict(value))
    return redact(str(value))


def environment_fingerprint(
    *,
    settings: Settings | None = None,
    conn: psycopg.Connection[Any] | None = None,
    redis_client: redis.Redis | None = None,
    params: Mapping[str, Any] | None = None,
    dataset: Mapping[str, Any] | None = None,
    repo_dir: Path | None = None,
) -> dict[str, Any]:
    """Describe machine, software, servers (through ``conn``/``redis_client``), dataset and parameters.

    ``settings`` is only described, never used to connect. The result is JSON-friendly and
    carries its own :func:`machine_key` under ``"machine_key"``.
    """
    fp: dict[str, Any] = {
        "fingerprint_version": FINGERPRINT_VERSION,
        "captured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "packages": package_versions(),
        "git": git_state(repo_dir),
        "postgres": postgres_info(conn) if conn is not None else None,
        "redis": _redis_facts(redis_client) if redis_client is not None else None,
        "settings": describe_settings(settings) if settings is not None else None,
        "dataset": sanitize(dataset) if dataset is not None else None,
        "params": sanitize(params) if params is not None else None,
    }
    fp["machine_key"] = machine_key(fp)
    return fp


def _major_minor(version: Any) -> str | None:
    if not version:
        return None
    match = re.match(r"(\d+)(?:\.(\d+))?", str(version))
    if not match:
        return str(version)
    return match.group(1) if match.group(2) is None else f"{match.group(1)}.{match.group(2)}"


def machine_key(fp: Mapping[str, Any]) -> str:
    """A 16-hex-digit hash of what makes timings comparable: CPU, usable cores, RAM, OS, server versions, scale.

    Parts: CPU model, usable cores, RAM rounded to whole GiB, OS (system, distro id and version,
    kernel major.minor), PostgreSQL major version, Redis/Valkey server and major.minor version,
    dataset scale. Hostname, time, packages, git and parameters do not change it.
    """
    machine = fp.get("machine") or {}
    os_info = machine.get("os") or {}
    pg = fp.get("postgres") or {}
    rd = fp.get("redis") or {}
    dataset = fp.get("dataset") or {}
    ram = machine.get("ram_bytes")
    parts = {
        "cpu_model": machine.get("cpu_model"),
        "cpu_usable": machine.get("cpu_usable", machine.get("cpu_count")),
        "ram_gib": round(ram / 2**30) if isinstance(ram, int | float) else None,
        "os": [
            os_info.get("system"),
            os_info.get("distro_id"),
            os_info.get("distro_version"),
            _major_minor(os_info.get("kernel")),
        ],
        "postgres_major": pg.get("major_version"),
        "redis": [rd.get("server"), _major_minor(rd.get("version"))],
        "dataset_scale": dataset.get("scale"),
    }
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
