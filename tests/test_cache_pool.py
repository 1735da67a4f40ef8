"""The asyncio cache's connection pool: at most ``max_connections``, a bounded wait, no leaked slot.

Each test holds the pool at a known point (connections taken and not given back) instead of
racing it, on the real test Redis.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import redis
import redis.asyncio

from psra_bench.cache.aio import WaitingConnectionPool
from psra_bench.settings import Settings


def _pool(settings: Settings, **kw: Any) -> WaitingConnectionPool:
    assert settings.redis is not None
    kwargs = settings.redis.client_kwargs()
    kwargs.pop("ssl", None)
    return WaitingConnectionPool(**(kwargs | kw))


async def test_a_full_pool_waits_and_then_refuses_in_one_sentence(settings: Settings) -> None:
    pool = _pool(settings, max_connections=2, wait_seconds=0.2)
    try:
        held = [await pool.get_connection(), await pool.get_connection()]
        with pytest.raises(redis.ConnectionError, match=r"no Redis connection became free within 0.2 s \(2 in use\)"):
            await pool.get_connection()
        waiter = asyncio.ensure_future(pool.get_connection())
        await asyncio.sleep(0)  # the waiter is parked on the semaphore now
        assert not waiter.done()
        await pool.release(held[0])
        assert await waiter is held[0]  # the freed connection, reused
        await pool.release(held[1])
        await pool.release(held[0])
        assert len(pool._in_use_connections) == 0 and not pool._slots.locked()
    finally:
        await pool.aclose()


async def test_many_concurrent_commands_never_open_more_than_the_limit(settings: Settings) -> None:
    pool = _pool(settings, max_connections=3, wait_seconds=5)
    client = redis.asyncio.Redis.from_pool(pool)
    try:
        key = f"{settings.cache_namespace}pool-test"
        await client.set(key, b"v")
        answers = await asyncio.gather(*(client.get(key) for _ in range(200)))
        assert answers == [b"v"] * 200
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 3
        assert len(pool._in_use_connections) == 0 and pool._slots._value == 3  # every slot came back
        await client.delete(key)
    finally:
        await client.aclose()


async def test_a_failed_connect_gives_its_slot_back(settings: Settings) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = WaitingConnectionPool(host="127.0.0.1", port=port, max_connections=1, wait_seconds=0.2)
    try:
        for _ in range(3):  # with the slot leaked, the 2nd attempt would wait and say "no connection became free"
            with pytest.raises(redis.ConnectionError) as e:
                await pool.get_connection()
            assert "became free" not in str(e.value)
        assert pool._slots._value == 1
    finally:
        await pool.aclose()
