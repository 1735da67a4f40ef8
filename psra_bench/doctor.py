"""``psra-bench doctor``: what psra-bench is connected to, gathered as plain data (no passwords)."""

from __future__ import annotations

from typing import Any

from psra_bench import constants
from psra_bench.db.migrate import MIGRATIONS, migration_status
from psra_bench.db.ownership import inspect
from psra_bench.db.reference import existing_table_counts
from psra_bench.infra import postgres as db
from psra_bench.infra.redis_client import check_redis, create_redis, redis_info
from psra_bench.settings import LiveSettings, RedisSettings, redact

__all__ = ["diagnose"]


def diagnose(settings: LiveSettings) -> dict[str, dict[str, Any]]:
    """Sections of facts: settings, PostgreSQL, tables, migrations, the cache's Redis, the job queue's Redis."""
    out: dict[str, dict[str, Any]] = {
        "settings": {
            "postgres": ("embedded " if settings.embedded_db else "configured ") + redact(settings.db_dsn),
            "redis": ("embedded " if settings.embedded_redis else "configured ")
            + settings.redis.url(with_password=False),
            "jobs redis": _jobs_endpoint(settings),
            "state folder": str(settings.home),
            "cache": "on" if settings.enable_cache else "off",
            "async tasks": "on" if settings.enable_async_tasks else "off",
            "max concurrent jobs": settings.max_concurrent_jobs,
            "job timeout": f"{settings.job_timeout_seconds} s",
            "max job payload": f"{settings.max_job_payload_bytes:,} bytes",
            "TTLs (hs/rules/assess/verdicts/reports/default)": "/".join(
                str(v)
                for v in (
                    settings.ttl.hs_codes,
                    settings.ttl.rules,
                    settings.ttl.assessments,
                    settings.ttl.verdicts,
                    settings.ttl.reports,
                    settings.ttl.default,
                )
            ),
        }
    }
    with db.connect(settings.db_dsn, autocommit=True) as conn:
        counts = existing_table_counts(conn)  # doctor only reads: no schema, no reference data
        owner = inspect(conn).describe()
        exts = conn.execute("SELECT extname || ' ' || extversion FROM pg_extension ORDER BY extname").fetchall()
        out["postgresql"] = {
            "version": db.server_version(conn),
            "extensions": ", ".join(r[0] for r in exts),
            "indexes in schema public": f"{db.index_count(conn)} (baseline {constants.BASELINE_INDEX_COUNT}, "
            f"migrated {constants.MIGRATED_INDEX_COUNT})",
        }
        for name in ("shared_buffers", "work_mem", "max_connections", "wal_level"):
            row = conn.execute(f"SHOW {name}".encode()).fetchone()
            out["postgresql"][name] = row[0] if row else "?"
        out["tables"] = {k: f"{v:,}" if v is not None else "missing" for k, v in counts.items()}
        out["tables"]["ownership"] = owner
        out["migrations"] = {}
        for name in MIGRATIONS:
            st = migration_status(conn, name)
            out["migrations"][name] = st.state + (f" (invalid: {', '.join(st.invalid)})" if st.invalid else "")
    out["redis"] = _server_facts(settings.redis)
    jobs = _server_facts(settings.jobs_redis)
    del jobs["keyspace hits/misses"]  # the cache's measure; jobs are not looked up by chance
    policy = jobs["maxmemory-policy"]
    if settings.jobs_redis_cluster:  # the facts above are JOBS_REDIS_URL's node; the queue lives on its tag's node
        from psra_bench.constants import JOB_QUEUE_PREFIX
        from psra_bench.jobs.queue import job_store_policy_now

        node, policy = job_store_policy_now(settings)
        prefix = JOB_QUEUE_PREFIX.format(namespace=settings.cache_namespace)
        jobs["cluster"] = f"yes: this queue's keys ({prefix}…) live on {node} (policy {policy})"
    if policy == "noeviction":
        jobs["job safety"] = "ok (noeviction)"
    else:
        allowed = " (allowed by PSRA_ALLOW_EVICTING_JOB_STORE)" if settings.allow_evicting_job_store else ""
        jobs["job safety"] = (
            f"UNSAFE: evicts keys (policy {policy or 'unknown'}) - jobs can vanish; use noeviction{allowed}"
        )
    out["jobs redis"] = jobs
    return out


def _jobs_endpoint(settings: LiveSettings) -> str:
    url = settings.jobs_redis.url(with_password=False)
    if settings.embedded_jobs_redis:
        return f"embedded {url}"
    if settings.jobs_redis.url() == settings.redis.url():
        return f"configured {url} (the cache's server)"
    return f"configured {url}"


def _server_facts(server: RedisSettings) -> dict[str, Any]:
    """One server's facts for a doctor section (an unreachable server: one sentence with host and port)."""
    check_redis(server)
    client = create_redis(server)
    try:
        info = redis_info(client)
    finally:
        client.close()
    return {
        "server": f"{info['server']} {info['version']}",
        "maxmemory": info["maxmemory_human"] if info["maxmemory"] else "0 (no limit)",
        "maxmemory-policy": info["maxmemory_policy"],
        "persistence": _persistence(info),
        "used memory": info["used_memory"],
        "keyspace hits/misses": f"{info['keyspace_hits']}/{info['keyspace_misses']}",
    }


def _persistence(info: dict[str, Any]) -> str:
    """``redis_info``'s persistence facts in words: "none", "AOF everysec", "RDB save 3600 1" or both."""
    parts = []
    if info["appendonly"]:
        parts.append(f"AOF {info['appendfsync'] or '(fsync policy unknown)'}")
    if info["save"]:
        parts.append(f"RDB save {info['save']}")
    if parts:
        return " + ".join(parts)
    return "none" if info["save"] is not None else "no AOF (RDB rules unknown: CONFIG is disabled)"
