"""PostgreSQL plumbing: connections with clear errors, pools that fail fast, database create/drop, the schema.

Connection failures become :class:`DatabaseConnectionError` naming host and port, never the
password. SQL files are found in the package (installed) or beside it (a checkout).

The pools (:func:`create_pool`, :func:`create_async_pool`) know whether PostgreSQL answers: each
connection attempt they make records it. While the last attempt failed, a checkout gives up after
:data:`CHECKOUT_SLICE` seconds (``PoolTimeout`` naming host and port) instead of waiting its whole
timeout, the idle connections are checked (the dead ones discarded) and a lost connection is
retried about every second, so the first checkout after the server is back succeeds within a
second or two. A busy pool still waits its whole timeout while the server answers. With
``check=True`` every checkout is tested first (one empty query), so a connection the server
dropped while nobody used it is replaced, never handed out.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from psra_bench.exceptions import DatabaseConnectionError, ParameterError
from psra_bench.resources import shipped_file
from psra_bench.settings import LiveSettings, redact

__all__ = [
    "CHECKOUT_SLICE",
    "CONNECT_TIMEOUT",
    "RECONNECT_TIMEOUT",
    "ReachabilityCallback",
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


#: Seconds a pooled connection attempt may take (libpq's minimum ``connect_timeout``).
CONNECT_TIMEOUT = 2
#: Seconds a checkout waits before it asks whether PostgreSQL answers; while it does not, the checkout gives up.
CHECKOUT_SLICE = 1.0
#: Seconds a pool retries a lost connection in the background (attempts about a second apart) before it waits
#: for demand: a checkout then starts a new attempt at once, so no attempt is ever far behind the server's return.
#: (While a pool opens with ``wait=True`` it keeps psycopg_pool's patient default, so a server still starting
#: up has the whole open timeout to accept.)
RECONNECT_TIMEOUT = 2.0
#: psycopg_pool's default reconnect_timeout, used while a pool opens and waits.
_OPENING_RECONNECT_TIMEOUT = 300.0

#: ``callback(reachable, started, reason)``: a pool's connection attempts started at ``started`` (time.monotonic)
#: found PostgreSQL reachable or not (``reason``: the first line of the error, password-free). Called on each change.
ReachabilityCallback = Callable[[bool, float, str], None]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return redact(text.splitlines()[0] if text else type(error).__name__)


class _Reachability:
    """What a pool's connection attempts last said about its server, in the order the attempts started."""

    def __init__(self, where: str, callback: ReachabilityCallback | None) -> None:
        self.where = where
        self.reachable = True
        self.reason = ""
        self._callback = callback
        self._last_ok = float("-inf")
        self._lock = threading.Lock()

    def note(self, ok: bool, started: float, error: BaseException | None = None) -> bool:
        """Record one attempt; True when it changed reachability (a failure older than a success changes nothing)."""
        reason = "" if error is None else _first_line(error)
        with self._lock:
            if ok:
                self._last_ok = max(self._last_ok, started)
            elif started < self._last_ok:
                return False
            changed = self.reachable != ok
            self.reachable = ok
            if not ok:
                self.reason = reason
        if changed and self._callback is not None:
            self._callback(ok, started, reason)
        return changed

    def timeout(self, waited: float) -> PoolTimeout:
        """The error of a checkout that gave up because the server does not answer."""
        return PoolTimeout(
            f"PostgreSQL at {self.where} is not reachable ({self.reason or 'no connection'}); "
            f"no connection within {waited:.1f} s"
        )


class _ServingPool(ConnectionPool[psycopg.Connection[Any]]):
    """A ConnectionPool that records whether PostgreSQL answers and fails a checkout fast while it does not."""

    def __init__(self, conninfo: str, *, where: str, on_reachable: ReachabilityCallback | None, **kwargs: Any) -> None:
        self.reach = _Reachability(where, on_reachable)
        super().__init__(conninfo, **kwargs)

    def _connect(self, timeout: float | None = None) -> psycopg.Connection[Any]:
        started = monotonic()
        try:
            conn = super()._connect(timeout)
        except Exception as e:
            if self.reach.note(False, started, e):
                with contextlib.suppress(Exception):  # a closing pool: nothing left to check
                    self.check()  # the idle connections died with the server: discard them now, not at checkout
            raise
        self.reach.note(True, started)
        return conn

    def getconn(self, timeout: float | None = None) -> psycopg.Connection[Any]:
        """A connection within ``timeout`` (default: the pool's), or within a slice while PostgreSQL does not answer."""
        start = monotonic()
        deadline = start + (self.timeout if timeout is None else timeout)
        while True:
            try:
                return super().getconn(max(0.0, min(deadline - monotonic(), CHECKOUT_SLICE)))
            except PoolTimeout:
                now = monotonic()
                if not self.reach.reachable:
                    raise self.reach.timeout(now - start) from None
                if now >= deadline:
                    raise


class _ServingAsyncPool(AsyncConnectionPool[psycopg.AsyncConnection[Any]]):
    """:class:`_ServingPool` for asyncio."""

    def __init__(self, conninfo: str, *, where: str, on_reachable: ReachabilityCallback | None, **kwargs: Any) -> None:
        self.reach = _Reachability(where, on_reachable)
        super().__init__(conninfo, **kwargs)

    async def _connect(self, timeout: float | None = None) -> psycopg.AsyncConnection[Any]:
        started = monotonic()
        try:
            conn = await super()._connect(timeout)
        except Exception as e:
            if self.reach.note(False, started, e):
                with contextlib.suppress(Exception):
                    await self.check()
            raise
        self.reach.note(True, started)
        return conn

    async def getconn(self, timeout: float | None = None) -> psycopg.AsyncConnection[Any]:
        """A connection within ``timeout`` (default: the pool's), or within a slice while PostgreSQL does not answer."""
        start = monotonic()
        deadline = start + (self.timeout if timeout is None else timeout)
        while True:
            try:
                return await super().getconn(max(0.0, min(deadline - monotonic(), CHECKOUT_SLICE)))
            except PoolTimeout:
                now = monotonic()
                if not self.reach.reachable:
                    raise self.reach.timeout(now - start) from None
                if now >= deadline:
                    raise


def _pool_options(
    settings: LiveSettings, min_size: int | None, max_size: int | None, name: str, wait: bool
) -> dict[str, Any]:
    host, port = dsn_host_port(settings.db_dsn)
    return {
        "where": f"{host}:{port}",
        "min_size": min_size or settings.db_pool_min,
        "max_size": max_size or settings.db_pool_max,
        "kwargs": {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
        "open": False,
        "name": name,
        "reconnect_timeout": _OPENING_RECONNECT_TIMEOUT if wait else RECONNECT_TIMEOUT,
    }


def create_pool(
    settings: LiveSettings,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    check: bool = False,
    on_reachable: ReachabilityCallback | None = None,
    wait: bool = True,
) -> ConnectionPool:
    """An open psycopg connection pool on ``settings.db_dsn`` sized from the settings.

    It fails a checkout fast while PostgreSQL does not answer (see the module docstring);
    ``check=True`` tests each connection at checkout; ``on_reachable`` hears each change of reachability.
    ``wait=False`` returns at once, even while PostgreSQL is down (an API process that starts during an outage).
    """
    pool = _ServingPool(
        settings.db_dsn,
        on_reachable=on_reachable,
        check=ConnectionPool.check_connection if check else None,
        **_pool_options(settings, min_size, max_size, "psra-bench", wait),
    )
    try:
        pool.open(wait=wait, timeout=15)
    except psycopg.Error as e:  # PoolTimeout is a psycopg.OperationalError
        pool.close()
        raise _connection_error(settings.db_dsn, e) from None
    pool.reconnect_timeout = RECONNECT_TIMEOUT
    return pool


async def create_async_pool(
    settings: LiveSettings,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    check: bool = False,
    on_reachable: ReachabilityCallback | None = None,
    wait: bool = True,
) -> AsyncConnectionPool:
    """An open asyncio pool on ``settings.db_dsn`` (autocommit, options as :func:`create_pool`), for the API routes."""
    pool = _ServingAsyncPool(
        settings.db_dsn,
        on_reachable=on_reachable,
        check=AsyncConnectionPool.check_connection if check else None,
        **_pool_options(settings, min_size, max_size, "psra-bench-async", wait),
    )
    try:
        await pool.open(wait=wait, timeout=15)
    except psycopg.Error as e:
        await pool.close()
        raise _connection_error(settings.db_dsn, e) from None
    pool.reconnect_timeout = RECONNECT_TIMEOUT
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
