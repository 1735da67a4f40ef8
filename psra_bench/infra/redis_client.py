"""Redis clients from settings: sync or asyncio, standalone or cluster, pooled, password-safe errors."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio

from psra_bench.exceptions import DatabaseConnectionError
from psra_bench.settings import RedisSettings, Settings, redact

__all__ = ["create_redis", "create_async_redis", "check_redis", "redis_info"]


def _settings_of(settings: Settings | RedisSettings) -> RedisSettings:
    rs = settings.redis if isinstance(settings, Settings) else settings
    assert rs is not None, "call psra_bench.infra.ensure_services(settings) first"
    return rs


def create_redis(settings: Settings | RedisSettings, **overrides: Any) -> redis.Redis:
    """A sync client with its own pool of ``max_connections`` (the spec's 50)."""
    rs = _settings_of(settings)
    kwargs = rs.client_kwargs() | {"max_connections": rs.max_connections} | overrides
    return redis.Redis(**kwargs)


def create_async_redis(settings: Settings | RedisSettings, **overrides: Any) -> redis.asyncio.Redis:
    """An asyncio client with its own pool of ``max_connections``."""
    rs = _settings_of(settings)
    kwargs = rs.client_kwargs() | {"max_connections": rs.max_connections} | overrides
    return redis.asyncio.Redis(**kwargs)


def check_redis(settings: Settings | RedisSettings) -> None:
    """PING the server; raise DatabaseConnectionError (host, port, no password) when it is unreachable."""
    rs = _settings_of(settings)
    client = create_redis(rs)
    try:
        client.ping()
    except redis.RedisError as e:
        raise DatabaseConnectionError("Redis", rs.host, rs.port, redact(str(e)) or type(e).__name__) from None
    finally:
        client.close()


def _config_value(client: redis.Redis, name: str) -> str | None:
    """CONFIG GET ``name``, or None when CONFIG is disabled (managed servers) or the name is unknown."""
    try:
        value = client.config_get(name).get(name)
    except redis.ResponseError:
        return None
    return None if value is None else str(value)


def redis_info(client: redis.Redis) -> dict[str, Any]:
    """Server facts for doctor and fingerprints: version, memory limit and eviction policy, persistence, hits/misses.

    Persistence: ``appendonly`` (bool), ``appendfsync`` (always/everysec/no, None when unknown),
    ``save`` (the RDB ``save`` rules, '' for none, None when unknown) and ``aof_enabled`` (INFO's
    word). With CONFIG disabled the INFO fields stand in: the policy, and appendonly = aof_enabled.
    """
    info = client.info()
    maxmemory_policy = _config_value(client, "maxmemory-policy") or info.get("maxmemory_policy")
    aof_enabled = bool(int(info.get("aof_enabled", 0) or 0))
    appendonly_text = _config_value(client, "appendonly")
    return {
        "server": "valkey" if "valkey_version" in info else "redis",
        "version": info.get("valkey_version") or info.get("redis_version"),
        "redis_compat_version": info.get("redis_version"),
        "maxmemory": int(info.get("maxmemory", 0)),
        "maxmemory_human": info.get("maxmemory_human"),
        "maxmemory_policy": maxmemory_policy,
        "used_memory": int(info.get("used_memory", 0)),
        "keyspace_hits": int(info.get("keyspace_hits", 0)),
        "keyspace_misses": int(info.get("keyspace_misses", 0)),
        "cluster_enabled": bool(info.get("cluster_enabled", 0)),
        "appendonly": aof_enabled if appendonly_text is None else appendonly_text.lower() == "yes",
        "appendfsync": _config_value(client, "appendfsync"),
        "save": _config_value(client, "save"),
        "aof_enabled": aof_enabled,
    }
