"""Shared fixtures: real servers, fresh databases, isolated Redis key namespaces.

The servers are the embedded PostgreSQL and the two embedded Valkeys, cache and jobs (under
``.psra-bench/test-home`` in the checkout), unless PSRA_DB_DSN / REDIS_URL (or REDIS_HOST...) /
JOBS_REDIS_URL name real ones; with REDIS_URL alone the jobs share that Redis. Tests never touch
data they did not create: each session creates its own database(s) and drops them, and every
Redis key, on the cache's server and on the jobs' server, lives under a per-session namespace
that is deleted (SCAN + UNLINK) at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from psra_bench.cache.keys import scan_unlink_nodes
from psra_bench.db.reference import load_reference_data
from psra_bench.db.seed import seed_database
from psra_bench.infra import postgres as db
from psra_bench.infra.embedded import ensure_services
from psra_bench.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _delete_namespace(client: redis.Redis, namespace: str) -> None:
    scan_unlink_nodes([client], namespace + "*")


def _cleanup(settings: Settings) -> None:
    """Delete every Redis key under ``settings.cache_namespace``, on the cache's and on the jobs' server.

    The job queue's keys start with its hash tag, ``{<namespace>jobs}:`` (constants.JOB_QUEUE_PREFIX),
    so ``{<namespace>*`` covers them and those of every namespace below this one.
    """
    assert settings.redis is not None
    servers = [settings.redis]
    if settings.jobs_redis is not None and settings.jobs_redis.url() != settings.redis.url():
        servers.append(settings.jobs_redis)
    for server in servers:
        client = redis.Redis(**server.client_kwargs())
        try:
            _delete_namespace(client, settings.cache_namespace)
            _delete_namespace(client, "{" + settings.cache_namespace)
        finally:
            client.close()


@pytest.fixture(scope="session")
def server_settings() -> Settings:
    """Settings with concrete endpoints: configured servers, or the embedded ones (started here)."""
    env = dict(os.environ)
    env.setdefault("PSRA_BENCH_HOME", str(ROOT / ".psra-bench" / "test-home"))
    return ensure_services(Settings.from_env(env))


@pytest.fixture(scope="session")
def make_database(server_settings: Settings) -> Iterator[Callable[..., str]]:
    """Factory: ``make_database(schema=True, reference=True)`` -> DSN of a fresh database, dropped at the end."""
    assert server_settings.db_dsn is not None
    created: list[str] = []

    def make(*, schema: bool = True, reference: bool = True) -> str:
        name = f"psra_test_{uuid.uuid4().hex[:10]}"
        assert server_settings.db_dsn is not None
        dsn = db.create_database(server_settings.db_dsn, name)
        created.append(name)
        if schema:
            with db.connect(dsn) as conn:
                db.apply_schema(conn)
                if reference:
                    load_reference_data(conn)
                conn.commit()
        return dsn

    yield make
    for name in created:
        db.drop_database(server_settings.db_dsn, name)


@pytest.fixture(scope="session")
def settings(server_settings: Settings, make_database: Callable[..., str]) -> Iterator[Settings]:
    """Session settings: a fresh database with schema + HS codes + rules, and its own Redis namespace."""
    namespace = f"psra-test-{uuid.uuid4().hex[:8]}:"
    s = server_settings.replace(db_dsn=make_database(), cache_namespace=namespace)
    yield s
    _cleanup(s)


@pytest.fixture
def namespaced_settings(settings: Settings) -> Iterator[Settings]:
    """Per-test settings with a fresh Redis namespace (same database), cleaned after the test."""
    namespace = f"{settings.cache_namespace}{uuid.uuid4().hex[:6]}:"
    s = settings.replace(cache_namespace=namespace)
    yield s
    _cleanup(s)


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    """A plain redis-py client on the test server (decode_responses=False); closed after the test."""
    assert settings.redis is not None
    client = redis.Redis(**settings.redis.client_kwargs())
    yield client
    client.close()


@pytest.fixture
def jobs_redis_client(settings: Settings) -> Iterator[redis.Redis]:
    """A plain redis-py client on the job queue's server (decode_responses=False); closed after the test."""
    assert settings.jobs_redis is not None
    client = redis.Redis(**settings.jobs_redis.client_kwargs())
    yield client
    client.close()


@pytest.fixture
def conn(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the session database (autocommit)."""
    assert settings.db_dsn is not None
    with db.connect(settings.db_dsn, autocommit=True) as c:
        yield c


@pytest.fixture(scope="session")
def make_seeded_database(make_database: Callable[..., str]) -> Callable[..., str]:
    """Factory: ``make_seeded_database(verdicts, seed=1, tenants=200)`` -> DSN of a fresh database with them."""

    def make(verdicts: int, *, seed: int = 1, tenants: int = 200) -> str:
        dsn = make_database()
        with db.connect(dsn, autocommit=True) as conn:
            seed_database(conn, verdicts, seed=seed, tenants=tenants)
        return dsn

    return make


@pytest.fixture(scope="session")
def make_team_database(make_seeded_database: Callable[..., str]) -> Callable[[], str]:
    """Factory: a database psra-bench does not own, as a team's would be (their verdicts and a table of theirs).

    No claim and no bookkeeping of psra-bench's: it looks as if the team had written the rows.
    """

    def make() -> str:
        dsn = make_seeded_database(500, seed=3, tenants=5)
        with db.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM psra_bench.seed_runs")
            conn.execute("DROP TABLE psra_bench.ownership")
            conn.execute("CREATE TABLE customer_orders (id int PRIMARY KEY, total numeric)")
            conn.execute("INSERT INTO customer_orders SELECT g, g * 10 FROM generate_series(1, 3) g")
            conn.execute("ANALYZE")
        return dsn

    return make


@pytest.fixture(scope="module")
def dsn(make_database: Callable[..., str]) -> str:
    """A database of this module's own: the schema, the HS table and the 13 rules, no verdicts."""
    return make_database()


@pytest.fixture(scope="module")
def rds(settings: Settings) -> Iterator[redis.Redis]:
    """A Redis client with str replies on the test server, for looking at keys."""
    assert settings.redis is not None
    client = redis.Redis(**settings.redis.client_kwargs(), decode_responses=True)
    yield client
    client.close()
