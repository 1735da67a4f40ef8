"""The servers psra-bench talks to: embedded PostgreSQL/Valkey or configured ones, connections, Redis clients."""

from __future__ import annotations

from psra_bench.infra.embedded import (
    ServiceStatus,
    ensure_services,
    job_store_settings,
    process_job_settings,
    process_settings,
    services_status,
    stop_services,
    use_settings,
)
from psra_bench.infra.postgres import (
    apply_schema,
    connect,
    create_database,
    create_pool,
    drop_database,
    dsn_host_port,
    index_count,
    server_version,
    sql_path,
    with_database,
)
from psra_bench.infra.redis_client import check_redis, create_async_redis, create_redis, redis_info

__all__ = [
    "ServiceStatus",
    "ensure_services",
    "job_store_settings",
    "process_settings",
    "process_job_settings",
    "use_settings",
    "services_status",
    "stop_services",
    "connect",
    "create_pool",
    "create_database",
    "drop_database",
    "apply_schema",
    "index_count",
    "server_version",
    "dsn_host_port",
    "with_database",
    "sql_path",
    "create_redis",
    "create_async_redis",
    "check_redis",
    "redis_info",
]
