"""Count Redis round trips on the wire: each request a client flushes to the server is one.

A pipeline is one flush however many commands it carries, so this counts what a network pays
for, not commands. :func:`counting_client` (and :func:`counting_async_client`, its asyncio twin)
builds a redis-py client whose connections count every ``send_packed_command``; the cache's
tests and ``benchmarks/bench_cache.py`` use it to check what one cache hit and one miss cost. It
imports only redis-py, so the benchmark can load this file beside an earlier checkout.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
import redis.asyncio

__all__ = ["RoundTrips", "counting_client", "counting_async_client"]


class RoundTrips:
    """A thread-safe count of requests sent; :meth:`since` gives the count after a mark."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent = 0

    def add(self) -> None:
        """One more request flushed to the server."""
        with self._lock:
            self.sent += 1

    def since(self, mark: int) -> int:
        """Requests sent since ``mark`` (an earlier value of :attr:`sent`)."""
        return self.sent - mark


def counting_client(client_kwargs: dict[str, Any]) -> tuple[redis.Redis, RoundTrips]:
    """A redis-py client (``client_kwargs``: ``RedisSettings.client_kwargs()``) and the count of its round trips."""
    trips = RoundTrips()
    kwargs = dict(client_kwargs)
    base = redis.SSLConnection if kwargs.pop("ssl", False) else redis.Connection

    class Counting(base):  # type: ignore[valid-type,misc]
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            trips.add()
            super().send_packed_command(command, check_health)

    pool = redis.ConnectionPool(connection_class=Counting, **kwargs)
    return redis.Redis.from_pool(pool), trips


def counting_async_client(client_kwargs: dict[str, Any]) -> tuple[redis.asyncio.Redis, RoundTrips]:
    """:func:`counting_client` for redis.asyncio (the API's face of the cache)."""
    trips = RoundTrips()
    kwargs = dict(client_kwargs)
    base = redis.asyncio.SSLConnection if kwargs.pop("ssl", False) else redis.asyncio.Connection

    class Counting(base):  # type: ignore[valid-type,misc]
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            trips.add()
            await super().send_packed_command(command, check_health)

    pool = redis.asyncio.ConnectionPool(connection_class=Counting, **kwargs)
    return redis.asyncio.Redis.from_pool(pool), trips
