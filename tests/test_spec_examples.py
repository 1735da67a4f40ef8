"""The spec's Python examples, run against the real servers with only the import paths changed.

``backend.services.cache_service`` -> ``psra_bench.cache`` and ``backend.tasks.async_assessment``
-> ``psra_bench.jobs``. Each test holds the spec's code as written (marked ``# --- spec``); where
the spec calls something that does not exist in any codebase (``db.query(HSCode)``,
``PostgresDAL(session_factory)``, ``update_hs_codes_in_db()``, ``process_data``), the test defines
the smallest real stand-in on our DAL and database just before it. The no-argument
``get_cache()`` / ``get_job_queue()`` use the process settings, set here to the test's database
and Redis namespace with :func:`psra_bench.infra.use_settings` and forgotten afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis

from psra_bench.cache import close_caches
from psra_bench.db import dal as dal_module
from psra_bench.exceptions import ConfigError
from psra_bench.infra import process_settings, use_settings
from psra_bench.infra.postgres import create_pool
from psra_bench.jobs import get_job_queue as queue_of
from psra_bench.settings import Settings


@pytest.fixture
def spec_settings(namespaced_settings: Settings) -> Iterator[Settings]:
    """The process settings = this test's database and Redis namespace; forgotten (and caches closed) after."""
    previous = use_settings(namespaced_settings)
    try:
        yield namespaced_settings
    finally:
        use_settings(previous)
        close_caches()


@pytest.fixture
async def spec_queue(spec_settings: Settings) -> AsyncIterator[Settings]:
    """As spec_settings, and the process's job queue is stopped and closed after the test (request it last)."""
    yield spec_settings
    queue = queue_of()  # the process settings' queue (fresh_db_settings, set up first, may have changed them)
    await queue.stop_workers(grace_seconds=0)
    await queue.close()


@pytest.fixture
def fresh_db_settings(spec_settings: Settings, make_database: Callable[..., str]) -> Iterator[Settings]:
    """Process settings on a database of its own (for examples that write reference data)."""
    s = spec_settings.replace(db_dsn=make_database())
    use_settings(s)
    yield s
    use_settings(spec_settings)


def _physical(settings: Settings, key: str) -> str:
    return settings.cache_namespace + key


#: Agreement codes PostgresDAL.get_rules_by_agreement was called with (it reached PostgreSQL).
RULE_QUERIES: list[str] = []


class _Row(dict[str, Any]):
    """A DAL row with the ORM-style ``to_dict()`` the spec's examples call."""

    def to_dict(self) -> dict[str, Any]:
        """The row as a plain dict."""
        return dict(self)


class PostgresDAL(dal_module.PostgresDAL):
    """Our PostgresDAL under the method names of the spec's examples (get_hs_code, get_rules_by_agreement)."""

    def get_hs_code(self, code: str) -> _Row:
        """One HS code (our hs_code_by_code)."""
        row = self.hs_code_by_code(code)
        assert row is not None, f"HS {code} is in the vendored table"
        return _Row(row)

    def get_rules_by_agreement(self, agreement_code: str) -> list[_Row]:
        """All rules of an agreement (our rules_by_agreement); each call is recorded in RULE_QUERIES."""
        RULE_QUERIES.append(agreement_code)
        return [_Row(r) for r in self.rules_by_agreement(agreement_code)]


@pytest.fixture
def session_factory(spec_settings: Settings) -> Iterator[Any]:
    """The spec's ``session_factory``: here a real psycopg pool on the process database."""
    pool = create_pool(process_settings(), min_size=1, max_size=2)
    yield pool
    pool.close()


# ----------------------------------------------------------------------------- section 1


def test_section_1_basic_caching(spec_settings: Settings, redis_client: redis.Redis) -> None:
    # --- spec
    from psra_bench.cache import get_cache

    cache = get_cache()

    # Set value with 1 hour TTL
    cache.set("my_key", {"data": "value"}, ttl=3600)

    # Get value
    value = cache.get("my_key")
    # --- end
    assert value == {"data": "value"}
    assert 3590 <= redis_client.ttl(_physical(spec_settings, "my_key")) <= 3600
    cache.set("hs:code:01", {"code": "01"})
    cache.set("hs:search:horses:20", [])
    # --- spec
    # Delete single key
    cache.delete("my_key")

    # Delete pattern
    cache.delete_pattern("hs:*")
    # --- end
    assert cache.get("my_key") is None and not redis_client.exists(_physical(spec_settings, "my_key"))
    assert list(redis_client.scan_iter(match=_physical(spec_settings, "hs:*"))) == []
    assert cache is get_cache() and cache.namespace == spec_settings.cache_namespace


def test_section_1_using_decorators(spec_settings: Settings, session_factory: Any) -> None:
    queries: list[str] = []

    class HSCode:
        """The spec's ORM model, as a marker: ``db.query(HSCode)`` asks the hs_codes table."""

    class _Query:
        def __init__(self, model: type) -> None:
            assert model is HSCode

        def filter_by(self, code: str) -> _Query:
            self.code = code
            return self

        def first(self) -> Any:
            queries.append(self.code)
            return dal_module.PostgresDAL(session_factory).hs_code_by_code(self.code)

    class db:  # noqa: N801 - the spec's name
        """The spec's session: ``db.query(HSCode).filter_by(code=...).first()`` on our DAL."""

        @staticmethod
        def query(model: type) -> _Query:
            return _Query(model)

    # --- spec
    from psra_bench.cache import cache_result, invalidate_cache

    @cache_result(ttl=3600)
    def get_hs_code(code: str) -> dict:
        # Expensive database lookup
        return db.query(HSCode).filter_by(code=code).first()

    @invalidate_cache(patterns=["hs:*", "assessment:*"])
    def update_hs_codes(codes: list):
        # Update database
        # Cache is automatically invalidated after function execution
        pass

    # --- end
    from psra_bench.cache import cache_assessment, cache_hs_code, get_cache

    first = get_hs_code("847130")
    assert first is not None and first["code"] == "847130" and queries == ["847130"]
    assert get_hs_code("847130") == first and get_hs_code(code="847130") == first and queries == ["847130"]
    cache_hs_code("847130", first)
    cache_assessment("R", "847130", "MX", "US", {"verdict": "qualified"})
    update_hs_codes(["847130"])
    cache = get_cache()
    assert not cache.exists("hs:code:847130") and not cache.exists("assessment:R:847130:MX:US")
    # As in the spec's own code, the decorated function's entry is not under hs:* (its key is fn:...),
    # so update_hs_codes's patterns do not reach it: it is served from the cache until its TTL.
    assert get_hs_code("847130") == first and queries == ["847130"]


def test_section_1_specialized_functions(spec_settings: Settings, redis_client: redis.Redis) -> None:
    # --- spec
    from psra_bench.cache import (  # noqa: I001 - the spec's order
        cache_hs_code,
        get_cached_hs_code,
        cache_rule,
        get_cached_rule,
        cache_assessment,
        get_cached_assessment,
    )

    # Cache HS code
    hs_data = {"code": "8471.30", "description": "Portable computers"}
    cache_hs_code("8471.30", hs_data)

    # Retrieve from cache
    cached = get_cached_hs_code("8471.30")

    # Cache assessment result
    cache_assessment(
        rule_id="USMCA-2024-01",
        hs_code="8471.30",
        origin_country="MX",
        dest_country="US",
        result={"verdict": "qualified", "confidence": 0.95},
    )

    # Retrieve assessment
    result = get_cached_assessment(rule_id="USMCA-2024-01", hs_code="8471.30", origin_country="MX", dest_country="US")
    # --- end
    assert cached == hs_data and result == {"verdict": "qualified", "confidence": 0.95}
    assert 3590 <= redis_client.ttl(_physical(spec_settings, "hs:code:8471.30")) <= 3600
    assert 290 <= redis_client.ttl(_physical(spec_settings, "assessment:USMCA-2024-01:8471.30:MX:US")) <= 300
    assert get_cached_rule("USMCA-2024-01") is None
    cache_rule("USMCA-2024-01", {"rule_id": "USMCA-2024-01"})
    assert get_cached_rule("USMCA-2024-01") == {"rule_id": "USMCA-2024-01"}
    assert 1790 <= redis_client.ttl(_physical(spec_settings, "rule:id:USMCA-2024-01")) <= 1800


# ----------------------------------------------------------------------------- section 3


async def test_section_3_custom_job_handlers(spec_queue: Settings) -> None:
    def process_data(payload: dict[str, Any]) -> dict[str, Any]:
        """The spec's unnamed work: sum the payload's numbers."""
        return {"total": sum(payload["numbers"])}

    # --- spec
    from psra_bench.jobs import get_job_queue

    async def my_custom_handler(payload: dict, update_progress):
        await update_progress(0, "Starting...")

        # Do work
        result = process_data(payload)

        await update_progress(100, "Complete")
        return result

    # Register handler
    queue = get_job_queue()
    queue.register_handler("my_job_type", my_custom_handler)
    # --- end
    assert queue is get_job_queue() and queue.settings.cache_namespace == spec_queue.cache_namespace
    await queue.start_workers()
    job_id = await queue.submit("my_job_type", {"numbers": [1, 2, 3]})
    done = await queue.wait(job_id, timeout=30)
    assert done is not None and done.status == "completed" and done.result == {"total": 6}
    assert (done.progress, done.progress_message) == (100, "Complete")


# ----------------------------------------------------------------------------- section 5


def test_section_5_example_1_cached_hs_code_lookup(
    spec_settings: Settings, session_factory: Any, redis_client: redis.Redis
) -> None:
    # --- spec
    from psra_bench.cache import get_cached_hs_code, cache_hs_code  # noqa: I001 - the spec's order

    def get_hs_code_optimized(code: str) -> dict:
        # Try cache first
        cached = get_cached_hs_code(code)
        if cached:
            return cached

        # Cache miss - query database
        dal = PostgresDAL(session_factory)
        hs_code = dal.get_hs_code(code)

        # Cache for 1 hour
        cache_hs_code(code, hs_code.to_dict(), ttl=3600)

        return hs_code.to_dict()

    # --- end
    row = get_hs_code_optimized("8471.30")
    assert row["code"] == "847130" and row["level"] == 6 and get_cached_hs_code("8471.30") == row
    assert 3590 <= redis_client.ttl(_physical(spec_settings, "hs:code:8471.30")) <= 3600
    cache_hs_code("8471.30", {"code": "from the cache"})  # a second call must read the cache first
    assert get_hs_code_optimized("8471.30") == {"code": "from the cache"}


def test_section_5_example_2_cached_rule_lookup_with_decorator(spec_settings: Settings, session_factory: Any) -> None:
    RULE_QUERIES.clear()
    # --- spec
    from psra_bench.cache import cache_result

    @cache_result(ttl=1800)  # 30 minutes
    def get_rules_by_agreement(agreement_code: str) -> list[dict]:
        """Get all rules for an agreement (cached)."""
        dal = PostgresDAL(session_factory)
        rules = dal.get_rules_by_agreement(agreement_code)
        return [rule.to_dict() for rule in rules]

    # --- end
    from psra_bench.cache import get_cache

    rules = get_rules_by_agreement("CETA")
    assert sorted(r["rule_id"] for r in rules) == ["CETA-HS39-000", "CETA-HS39-001", "CETA-HS84-001"]
    assert get_rules_by_agreement("CETA") == rules and RULE_QUERIES == ["CETA"]
    key = get_rules_by_agreement.cache_key("CETA")  # type: ignore[attr-defined]
    ttl = get_cache().get_ttl(key)
    assert ttl is not None and 1790 <= ttl <= 1800


def test_section_5_example_4_bulk_cache_invalidation(
    fresh_db_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from psra_bench.cache import cache_hs_code, cache_rule, get_cache

    assert fresh_db_settings.db_dsn is not None
    dsn = fresh_db_settings.db_dsn

    def update_hs_codes_in_db() -> None:
        """The spec's unnamed HS update: one description changed through our DAL."""
        pool = create_pool(fresh_db_settings, min_size=1, max_size=1)
        try:
            dal_module.PostgresDAL(pool).update_hs_codes([{"code": "847130", "description": "Laptops (renamed)"}])
        finally:
            pool.close()

    def update_rules_in_db() -> None:
        """The spec's unnamed rule update: one rule's priority raised."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE psra_rules SET priority = priority + 1 WHERE rule_id = 'USMCA-2024-01'")

    for code in ("01", "0101", "847130"):
        cache_hs_code(code, {"code": code})
    get_cache().set("hs:search:horses:20", [])
    cache_rule("USMCA-2024-01", {"rule_id": "USMCA-2024-01"})
    get_cache().set("rules:agreement:USMCA", [])

    # --- spec
    from psra_bench.cache import invalidate_hs_codes, invalidate_rules

    def refresh_data():
        # Update HS codes in database
        update_hs_codes_in_db()

        # Invalidate all HS code caches
        deleted = invalidate_hs_codes()
        print(f"Invalidated {deleted} HS code cache entries")

        # Update rules
        update_rules_in_db()

        # Invalidate rule caches
        deleted = invalidate_rules()
        print(f"Invalidated {deleted} rule cache entries")

    # --- end
    refresh_data()
    assert capsys.readouterr().out.splitlines() == [
        "Invalidated 4 HS code cache entries",
        "Invalidated 2 rule cache entries",
    ]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT description FROM hs_codes WHERE code = '847130'").fetchone() == (
            "Laptops (renamed)",
        )


# ----------------------------------------------------------------------------- section 6


def test_section_6_cache_monitoring(spec_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    from psra_bench.cache import cache_hs_code

    cache_hs_code("8471.30", {"code": "8471.30"}, ttl=120)
    # --- spec
    from psra_bench.cache import get_cache

    cache = get_cache()

    # Check connection
    is_healthy = cache.ping()

    # Check key existence
    exists = cache.exists("hs:code:8471.30")

    # Check TTL
    ttl = cache.get_ttl("hs:code:8471.30")
    print(f"Key expires in {ttl} seconds")
    # --- end
    assert is_healthy is True and exists is True and ttl is not None and 110 <= ttl <= 120
    assert capsys.readouterr().out == f"Key expires in {ttl} seconds\n"


async def test_section_6_job_queue_monitoring(spec_queue: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    from psra_bench.jobs import get_job_queue

    release = asyncio.Event()

    async def waits(payload: dict[str, Any], update_progress: Any) -> str:
        await update_progress(50, "waiting")
        await release.wait()
        return "done"

    get_job_queue().register_handler("waits", waits)
    await get_job_queue().start_workers(concurrency=2)
    job_id = await get_job_queue().submit("waits", {})
    deadline = time.monotonic() + 30
    while len(get_job_queue()._running_jobs) != 1:  # the handler has started
        assert time.monotonic() < deadline, "the job did not start within 30 s"
        await asyncio.sleep(0.02)

    # --- spec
    queue = get_job_queue()

    # Check health
    health = {
        "max_concurrent": queue.max_concurrent_jobs,
        "running_jobs": len(queue._running_jobs),
        "registered_handlers": list(queue.handlers.keys()),
    }
    # --- end
    assert health == {
        "max_concurrent": spec_queue.max_concurrent_jobs,
        "running_jobs": 1,
        "registered_handlers": ["waits"],
    }
    release.set()
    assert (await queue.wait(job_id, timeout=30)).status == "completed"  # type: ignore[union-attr]
    assert len(queue._running_jobs) == 0
    capsys.readouterr()
    # --- spec
    # Monitor specific job
    job_result = await queue.get_job_status(job_id)
    if job_result:
        print(f"Status: {job_result.status}")
        print(f"Progress: {job_result.progress}%")
        print(f"Duration: {job_result.duration_seconds}s")
    # --- end
    assert job_result is not None and job_result.duration_seconds is not None
    assert capsys.readouterr().out.splitlines() == [
        "Status: completed",
        "Progress: 100%",
        f"Duration: {job_result.duration_seconds}s",
    ]


async def test_troubleshooting_jobs_stuck_in_pending(fresh_db_settings: Settings, spec_queue: Settings) -> None:
    # --- spec
    from psra_bench.jobs import get_job_queue, register_default_handlers

    queue = get_job_queue()
    register_default_handlers(queue)
    await queue.start_workers()
    # --- end
    assert sorted(queue.handlers.keys()) == ["assessment", "bulk_import"]
    assert queue.settings.db_dsn == fresh_db_settings.db_dsn
    body = {"rule_id": "USMCA-2024-01", "hs_code": "8471.30", "origin_country": "MX", "destination_country": "US"}
    assessed = await queue.wait(await queue.submit("assessment", body), timeout=30)
    assert assessed is not None and assessed.status == "completed", assessed
    verdict = assessed.result
    assert (verdict["status"], verdict["rule_id"], verdict["tenant_id"]) == ("insufficient_data", "USMCA-2024-01", None)
    from psra_bench.cache import cache_hs_code

    cache_hs_code("847130", {"code": "847130"})
    items = [{"code": "8471.30", "description": "Portable computers (bulk)"}]
    imported = await queue.wait(await queue.submit("bulk_import", {"items": items}), timeout=30)
    assert imported is not None and imported.status == "completed", imported
    # hs:code:847130 and the tenant-less assessment cached by the job above are both dropped.
    assert imported.result == {"imported": 1, "inserted": 0, "updated": 1, "invalidated": 2}
    assert fresh_db_settings.db_dsn is not None
    with psycopg.connect(fresh_db_settings.db_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM psra_verdicts").fetchone() == (0,)  # no tenant: nothing stored


# ----------------------------------------------------------------------------- the resolver


def test_get_cache_reads_the_environment_once(namespaced_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from psra_bench.cache import get_cache

    assert namespaced_settings.redis is not None and namespaced_settings.db_dsn is not None
    previous = use_settings(None)
    try:
        monkeypatch.setenv("PSRA_DB_DSN", namespaced_settings.db_dsn)
        monkeypatch.setenv("REDIS_URL", namespaced_settings.redis.url())
        monkeypatch.setenv("JOBS_REDIS_URL", (namespaced_settings.jobs_redis or namespaced_settings.redis).url())
        monkeypatch.setenv("PSRA_CACHE_NAMESPACE", namespaced_settings.cache_namespace)
        monkeypatch.setenv("CACHE_TTL_HS_CODES", "77")
        cache = get_cache()
        assert cache.namespace == namespaced_settings.cache_namespace and cache.settings.ttl.hs_codes == 77
        monkeypatch.setenv("CACHE_TTL_HS_CODES", "99")  # read once per process: no effect now
        assert get_cache() is cache and process_settings().ttl.hs_codes == 77
    finally:
        use_settings(previous)
        close_caches()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("REDIS_PORT", "abc", "REDIS_PORT='abc' is not valid: use a whole number ≥ 1."),
        ("CACHE_TTL_HS_CODES", "-5", "CACHE_TTL_HS_CODES='-5' is not valid: use a whole number ≥ 1."),
    ],
)
def test_get_cache_with_a_bad_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    from psra_bench.cache import get_cache

    previous = use_settings(None)
    try:
        monkeypatch.delenv("REDIS_URL", raising=False)
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigError) as e:
            get_cache()
        assert str(e.value) == message and e.value.variable == variable
        with pytest.raises(ConfigError):  # nothing was kept: the next call reads the environment again
            get_cache()
    finally:
        use_settings(previous)
