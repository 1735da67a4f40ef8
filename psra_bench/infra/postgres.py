"""PostgreSQL plumbing: connections with clear errors, database create/drop, the baseline schema.

Connection failures become :class:`DatabaseConnectionError` naming host and port, never the
password. SQL files are found in the package (installed) or beside it (a checkout).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from psra_bench.exceptions import DatabaseConnectionError, ParameterError
from psra_bench.resources import shipped_file
from psra_bench.settings import LiveSettings, redact

__all__ = [
    "create_async_pool",
    "sql_path",
    "dsn_host_port",
    "with_database",
    "connect",
    "create_pool",
    "create_database",
    "drop_database",
    "apply_schema",
    "index_count",
    "server_version",
]


def sql_path(name: str) -> Path:
    """Path of ``sql/<name>``: inside the installed package, or the checkout's top-level ``sql/``."""
    return shipped_file(f"sql/{name}")


def dsn_host_port(dsn: str) -> tuple[str, int]:
    """Host and port of a URL-form DSN (for messages; never the password)."""
    parts = urlsplit(dsn)
    return parts.hostname or "localhost", parts.port or 5432


def with_database(dsn: str, dbname: str) -> str:
    """The same DSN pointing at another database on the same server."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", dbname):
        raise ParameterError("database", dbname, "a database name of letters, digits and '_'")
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def _connection_error(dsn: str, e: Exception) -> DatabaseConnectionError:
    host, port = dsn_host_port(dsn)
    reason = redact(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    return DatabaseConnectionError("PostgreSQL", host, port, reason)


def connect(dsn: str, *, autocommit: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open one connection; an unreachable server raises DatabaseConnectionError (host, port)."""
    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as e:
        raise _connection_error(dsn, e) from None
    except psycopg.ProgrammingError:  # libpq rejected the DSN itself; its message may quote the password
        host, port = dsn_host_port(dsn)
        raise DatabaseConnectionError("PostgreSQL", host, port, "the DSN is malformed") from None


def create_pool(settings: LiveSettings, *, min_size: int | None = None, max_size: int | None = None) -> ConnectionPool:
    """An open psycopg connection pool on ``settings.db_dsn`` sized from the settings."""
    pool = ConnectionPool(
        settings.db_dsn,
        min_size=min_size or settings.db_pool_min,
        max_size=max_size or settings.db_pool_max,
        kwargs={"autocommit": True},
        open=False,
        name="psra-bench",
    )
    try:
        pool.open(wait=True, timeout=15)
    except psycopg.Error as e:  # PoolTimeout is a psycopg.OperationalError
        pool.close()
        raise _connection_error(settings.db_dsn, e) from None
    return pool


async def create_async_pool(
    settings: LiveSettings, *, min_size: int | None = None, max_size: int | None = None
) -> AsyncConnectionPool:
    """An open asyncio pool on ``settings.db_dsn`` (autocommit, sized like :func:`create_pool`), for the API routes."""
    pool = AsyncConnectionPool(
        settings.db_dsn,
        min_size=min_size or settings.db_pool_min,
        max_size=max_size or settings.db_pool_max,
        kwargs={"autocommit": True},
        open=False,
        name="psra-bench-async",
    )
    try:
        await pool.open(wait=True, timeout=15)
    except psycopg.Error as e:
        await pool.close()
        raise _connection_error(settings.db_dsn, e) from None
    return pool


def create_database(dsn: str, dbname: str) -> str:
    """Create database ``dbname`` on the server of ``dsn`` (dropping a leftover one); return its DSN."""
    with connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return with_database(dsn, dbname)


def drop_database(dsn: str, dbname: str) -> None:
    """Drop database ``dbname`` on the server of ``dsn``, disconnecting its sessions."""
    with connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def apply_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the baseline schema (20 indexes in public); safe to run again."""
    text = sql_path("schema.sql").read_text()
    with conn.transaction():
        conn.execute(text.encode())  # several statements: psycopg sends them as one simple query


def index_count(conn: psycopg.Connection[Any]) -> int:
    """Number of indexes in schema public, as the spec's verification query counts them."""
    row = conn.execute("SELECT count(*) FROM pg_stat_user_indexes WHERE schemaname = 'public'").fetchone()
    assert row is not None
    return int(row[0])


def server_version(conn: psycopg.Connection[Any]) -> str:
    """The server's version string, e.g. '18.6'."""
    row = conn.execute("SHOW server_version").fetchone()
    assert row is not None
    return str(row[0]).split()[0]
