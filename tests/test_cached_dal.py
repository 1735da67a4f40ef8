"""CachedDAL against the real PostgreSQL and Redis: same answers as the DAL, spec keys/TTLs, invalidation."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from psra_bench.cache import MISSING, CacheService, keys
from psra_bench.cache.cached_dal import CachedDAL
from psra_bench.db import reference
from psra_bench.db.dal import PostgresDAL
from psra_bench.db.seed import DEFAULT_END, seed_database, tenant_ids
from psra_bench.exceptions import InputError
from psra_bench.infra import postgres as db
from psra_bench.psra.service import assess_with_cache
from psra_bench.settings import Settings


class CountingDAL(PostgresDAL):
    """The real DAL, counting how often each lookup reaches PostgreSQL."""

    def __init__(self, pool: ConnectionPool) -> None:
        super().__init__(pool)
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def fetch_all(self, name: str, params: Any) -> list[dict[str, Any]]:
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1
        return super().fetch_all(name, params)


@pytest.fixture(scope="module")
def pool(settings: Settings, make_database: Callable[..., str]) -> Iterator[ConnectionPool]:
    """A pool on a database of this module's own (the tests write HS codes)."""
    p = db.create_pool(settings.replace(db_dsn=make_database()), max_size=12)
    yield p
    p.close()


@pytest.fixture
def make_cached(namespaced_settings: Settings) -> Iterator[Callable[[ConnectionPool], CachedDAL]]:
    """Factory: ``make_cached(pool)`` -> a CachedDAL over a counting DAL on ``pool`` and a fresh cache namespace."""
    services: list[CacheService] = []

    def make(pool: ConnectionPool) -> CachedDAL:
        services.append(CacheService(namespaced_settings))
        return CachedDAL(CountingDAL(pool), services[-1])

    yield make
    for service in services:
        service.close()


@pytest.fixture
def cached(pool: ConnectionPool, make_cached: Callable[[ConnectionPool], CachedDAL]) -> CachedDAL:
    """A CachedDAL on the module's database (HS codes and rules, no verdicts)."""
    return make_cached(pool)


def _calls(c: CachedDAL) -> dict[str, int]:
    assert isinstance(c.dal, CountingDAL)
    return c.dal.calls


def test_hs_code_lookup_is_cached_under_the_spec_key(cached: CachedDAL) -> None:
    direct = PostgresDAL(cached.dal.pool).hs_code_by_code("847130")
    assert direct is not None and direct["code"] == "847130"
    assert cached.hs_code_by_code("8471.30") == direct
    assert cached.hs_code_by_code("847130") == direct and cached.hs_code_by_code("8471 30") == direct
    assert _calls(cached) == {"hs_code_by_code": 1}
    assert 3590 <= (cached.cache.get_ttl("hs:code:847130") or 0) <= 3600
    assert cached.hs_code_by_code("000000") is None and cached.hs_code_by_code("0000.00") is None
    assert _calls(cached) == {"hs_code_by_code": 2}  # the unknown code is cached too (as None)
    assert cached.cache.get("hs:code:000000", MISSING) is None
    with pytest.raises(InputError, match="code"):
        cached.hs_code_by_code("84*")
    assert cached.cache.stats()["entities"]["hs_codes"]["hits"] == 4  # 3 lookups + the get above


def test_hs_search_matches_the_dal(cached: CachedDAL) -> None:
    direct = PostgresDAL(cached.dal.pool)
    for query, limit in (("computers", 5), ("Horses", 20), ("100%", 10), ("a_b", 3), ("ü*", 5)):
        assert cached.hs_search(query, limit) == direct.hs_search(query, limit)
        assert cached.hs_search(f"  {query.upper()} ", limit) == direct.hs_search(query, limit)
    assert _calls(cached) == {"hs_search": 6}  # "Ü*" is a key of its own: non-ASCII case is not folded
    assert cached.cache.exists(keys.hs_search_key("computers", 5))
    assert cached.cache.exists("hs:search:100%25:10")
    with pytest.raises(InputError):
        cached.hs_search("x", 5)
    with pytest.raises(InputError):
        cached.hs_search("computers", 0)


def test_rules_lookups_match_the_dal(cached: CachedDAL) -> None:
    direct = PostgresDAL(cached.dal.pool)
    rules = reference.rules()
    agreements = sorted({r["agreement_code"] for r in rules})
    chapters = sorted({r["hs_chapter"] for r in rules}) + ["01"]
    for agreement in agreements:
        for chapter in chapters:
            assert cached.rules_by_agreement_chapter(agreement, chapter) == direct.rules_by_agreement_chapter(
                agreement, chapter
            )
        assert cached.rules_by_agreement(agreement) == direct.rules_by_agreement(agreement)
    assert _calls(cached) == {"rules_by_agreement": len(agreements)}  # one query per agreement, then hits
    for rule in rules:
        assert cached.rule_by_id(rule["rule_id"]) == direct.rule_by_id(rule["rule_id"])
    assert cached.rule_by_id("NOPE-1") is None and cached.rule_by_id("NOPE-1") is None
    assert _calls(cached)["rule_by_id"] == len(rules) + 1
    key = keys.rules_agreement_key(agreements[0])
    assert 1790 <= (cached.cache.get_ttl(key) or 0) <= 1800
    assert 1790 <= (cached.cache.get_ttl(keys.rule_key(rules[0]["rule_id"])) or 0) <= 1800


def test_update_hs_codes_writes_through_and_invalidates(cached: CachedDAL) -> None:
    before = cached.hs_code_by_code("010121")
    assert before is not None
    cached.hs_search("horses", 5)
    rule_id = reference.rules()[0]["rule_id"]
    cached.rule_by_id(rule_id)
    cached.cache.cache_assessment(rule_id, "010121", "DE", "FR", {"verdict": "qualified"})
    assert cached.update_hs_codes([{"code": "0101.21", "description": "Pure-bred breeding horses (updated)"}]) == 1
    after = cached.hs_code_by_code("010121")
    assert after is not None and after["description"] == "Pure-bred breeding horses (updated)"
    assert not cached.cache.exists(keys.hs_search_key("horses", 5))
    assert cached.cache.get_cached_assessment(rule_id, "010121", "DE", "FR") is None
    assert cached.cache.exists(keys.rule_key(rule_id))  # rules untouched
    assert _calls(cached)["hs_code_by_code"] == 2


def test_reload_rules_drops_rules_and_assessments(cached: CachedDAL) -> None:
    rules = reference.rules()
    cached.rules_by_agreement(rules[0]["agreement_code"])
    cached.rule_by_id(rules[0]["rule_id"])
    cached.rule_by_id(rules[1]["rule_id"])
    cached.cache.cache_assessment(rules[0]["rule_id"], "390110", "DE", "CA", {"verdict": "qualified"})
    cached.hs_code_by_code("390110")
    assert cached.reload_rules() == 4
    assert cached.cache.exists("hs:code:390110")
    cached.rule_by_id(rules[0]["rule_id"])
    assert _calls(cached)["rule_by_id"] == 3


def test_concurrent_cold_lookups_reach_postgres_once(cached: CachedDAL) -> None:
    barrier = threading.Barrier(10)
    results: list[Any] = []

    def call() -> None:
        barrier.wait()
        results.append(cached.hs_code_by_code("870321"))

    threads = [threading.Thread(target=call) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 10 and all(r == results[0] and r is not None for r in results)
    assert _calls(cached) == {"hs_code_by_code": 1}


def test_verdicts_are_cached_once_they_exist(cached: CachedDAL, pool: ConnectionPool) -> None:
    evaluation_id = uuid.uuid4()
    assert cached.verdict_by_evaluation_id(evaluation_id) is None
    assert not cached.cache.exists(keys.verdict_key(str(evaluation_id)))  # absence is not cached
    with pool.connection() as conn:
        conn.execute(
            """INSERT INTO psra_verdicts (id, evaluation_id, request_id, rule_id, tenant_id, status, confidence,
                   input_hash, agreement_code, hs_subheading, effective_date, export_country, import_country,
                   decided_at, created_at, updated_at)
               VALUES (%s, %s, %s, 'CETA-HS39-001', %s, 'qualified', 0.9, %s, 'CETA', '390110', '2025-01-01',
                       'DE', 'CA', now(), now(), now())""",
            (uuid.uuid4(), evaluation_id, uuid.uuid4(), uuid.uuid4(), "0" * 64),
        )
    row = cached.verdict_by_evaluation_id(str(evaluation_id).upper())
    assert row is not None and row["evaluation_id"] == str(evaluation_id) and row["status"] == "qualified"
    assert cached.verdict_by_evaluation_id(evaluation_id) == row
    assert _calls(cached) == {"verdict_by_evaluation_id": 2}
    assert 3590 <= (cached.cache.get_ttl(keys.verdict_key(str(evaluation_id))) or 0) <= 3600
    with pytest.raises(InputError, match="evaluation_id"):
        cached.verdict_by_evaluation_id("not-a-uuid")


class HeldDAL(CountingDAL):
    """The counting DAL whose ``hold`` query, once it has its rows, waits until the test releases it."""

    def __init__(self, pool: ConnectionPool, hold: str) -> None:
        super().__init__(pool)
        self.hold = hold
        self.begun = threading.Event()
        self.release = threading.Event()

    def fetch_all(self, name: str, params: Any) -> list[dict[str, Any]]:
        rows = super().fetch_all(name, params)  # read (and the connection returned) before the writer commits
        if name == self.hold and not self.release.is_set():
            self.begun.set()
            assert self.release.wait(10), "the test never released the query"
        return rows


def _held_read(held: HeldDAL, read: Callable[[], Any], write: Callable[[], object] | None) -> Any:
    """``read()`` in a thread, held after its query; ``write()`` (commit + invalidate) runs meanwhile."""
    out: list[Any] = []
    reader = threading.Thread(target=lambda: out.append(read()))
    reader.start()
    try:
        assert held.begun.wait(10)
        if write is not None:
            write()
    finally:
        held.release.set()
        reader.join(10)
    assert len(out) == 1
    return out[0]


@pytest.fixture
def held_hs(pool: ConnectionPool, namespaced_settings: Settings) -> Iterator[CachedDAL]:
    """A CachedDAL whose HS code query is held; HS code 870321's description is restored afterwards."""
    service = CacheService(namespaced_settings)
    original = PostgresDAL(pool).hs_code_by_code("870321")
    assert original is not None
    yield CachedDAL(HeldDAL(pool, "hs_code_by_code"), service)
    PostgresDAL(pool).update_hs_codes([{"code": "870321", "description": original["description"]}])
    service.close()


def test_update_during_a_cold_read_leaves_no_stale_hs_code(held_hs: CachedDAL) -> None:
    held = held_hs.dal
    assert isinstance(held, HeldDAL)
    old = _held_read(
        held,
        lambda: held_hs.hs_code_by_code("870321"),
        lambda: held_hs.update_hs_codes([{"code": "870321", "description": "Cars (updated)"}]),
    )
    assert old is not None and old["description"] != "Cars (updated)"  # the reader got what it read
    assert held_hs.cache.get(keys.hs_code_key("870321"), MISSING) is MISSING  # but did not cache it
    assert held_hs.cache.stats()["entities"]["hs_codes"]["stale"] == 1
    new = held_hs.hs_code_by_code("870321")
    assert new is not None and new["description"] == "Cars (updated)"
    assert held_hs.cache.get(keys.hs_code_key("870321")) == new and _calls(held_hs)["hs_code_by_code"] == 2


def test_a_cold_read_without_a_write_is_cached(held_hs: CachedDAL) -> None:
    held = held_hs.dal
    assert isinstance(held, HeldDAL)
    row = _held_read(held, lambda: held_hs.hs_code_by_code("870321"), None)  # negative control
    assert row is not None and held_hs.cache.get(keys.hs_code_key("870321")) == row
    assert held_hs.hs_code_by_code("870321") == row and _calls(held_hs)["hs_code_by_code"] == 1
    assert held_hs.cache.stats()["entities"]["hs_codes"]["stale"] == 0


def test_rules_reload_during_a_cold_read_leaves_no_stale_rule(
    pool: ConnectionPool, namespaced_settings: Settings
) -> None:
    rule_id = reference.rules()[0]["rule_id"]
    service = CacheService(namespaced_settings)
    held = HeldDAL(pool, "rule_by_id")
    cached = CachedDAL(held, service)
    original = PostgresDAL(pool).rule_by_id(rule_id)
    assert original is not None

    def write() -> None:
        with pool.connection() as conn:
            conn.execute("UPDATE psra_rules SET title = %s WHERE rule_id = %s", ("Reloaded", rule_id))
        cached.reload_rules()

    try:
        old = _held_read(held, lambda: cached.rule_by_id(rule_id), write)
        assert old is not None and old["title"] == original["title"]
        assert service.get(keys.rule_key(rule_id), MISSING) is MISSING
        new = cached.rule_by_id(rule_id)
        assert new is not None and new["title"] == "Reloaded" and service.get(keys.rule_key(rule_id)) == new
    finally:
        with pool.connection() as conn:
            conn.execute("UPDATE psra_rules SET title = %s WHERE rule_id = %s", (original["title"], rule_id))
        service.close()


def test_verdict_invalidated_during_its_read_is_not_cached(cached: CachedDAL, pool: ConnectionPool) -> None:
    evaluation_id = uuid.uuid4()
    with pool.connection() as conn:
        conn.execute(
            """INSERT INTO psra_verdicts (id, evaluation_id, request_id, rule_id, tenant_id, status, confidence,
                   input_hash, agreement_code, hs_subheading, effective_date, export_country, import_country,
                   decided_at, created_at, updated_at)
               VALUES (%s, %s, %s, 'CETA-HS39-001', %s, 'qualified', 0.9, %s, 'CETA', '390110', '2025-01-01',
                       'DE', 'CA', now(), now(), now())""",
            (uuid.uuid4(), evaluation_id, uuid.uuid4(), uuid.uuid4(), "0" * 64),
        )
    held = HeldDAL(pool, "verdict_by_evaluation_id")
    reader = CachedDAL(held, cached.cache)
    row = _held_read(
        held, lambda: reader.verdict_by_evaluation_id(evaluation_id), lambda: cached.cache.invalidate("verdicts")
    )
    assert row is not None and not cached.cache.exists(keys.verdict_key(str(evaluation_id)))
    assert reader.verdict_by_evaluation_id(evaluation_id) == row  # released: the next read caches it
    assert cached.cache.exists(keys.verdict_key(str(evaluation_id)))


class _InvalidatingRules(CachedDAL):
    """A CachedDAL whose rule lookup lets a writer invalidate the assessments mid-assessment (a known point)."""

    def __init__(self, *args: Any, writer: Callable[[], object] | None = None) -> None:
        super().__init__(*args)
        self.writer = writer

    def rule_by_id(self, rule_id: str) -> Any:
        rule = super().rule_by_id(rule_id)
        if self.writer is not None:
            self.writer()  # the rule was read; the verdict is not computed yet
        return rule


_SPEC_BODY = {"rule_id": "USMCA-2024-01", "hs_code": "8471.30", "origin_country": "MX", "destination_country": "US"}


@pytest.mark.parametrize("invalidated", [True, False], ids=["invalidated-while-assessing", "no-writer"])
def test_an_assessment_invalidated_while_it_is_computed_is_not_cached(
    pool: ConnectionPool, namespaced_settings: Settings, invalidated: bool
) -> None:
    service = CacheService(namespaced_settings)
    try:
        racing = _InvalidatingRules(
            CountingDAL(pool), service, writer=service.invalidate_assessments if invalidated else None
        )
        first = assess_with_cache(pool, racing, _SPEC_BODY, full=False)
        assert first["cached"] is False
        again = assess_with_cache(pool, CachedDAL(CountingDAL(pool), service), _SPEC_BODY, full=False)
        assert again["cached"] is (not invalidated)  # a verdict computed across an invalidation was not stored
        assert again["evaluation_id"] != first["evaluation_id"] if invalidated else again == {**first, "cached": True}
    finally:
        service.close()


# ----------------------------------------------------------------------------- aggregates (report:*)


@pytest.fixture(scope="module")
def verdict_pool(settings: Settings, make_seeded_database: Callable[..., str]) -> Iterator[ConnectionPool]:
    """A pool on a database of its own with 3,000 seeded verdicts over 4 tenants (the tests append more)."""
    dsn = make_seeded_database(3000, seed=5, tenants=4)
    p = db.create_pool(settings.replace(db_dsn=dsn), max_size=4)
    yield p
    p.close()


@pytest.fixture
def report_cached(verdict_pool: ConnectionPool, make_cached: Callable[[ConnectionPool], CachedDAL]) -> CachedDAL:
    """A CachedDAL on the verdict database."""
    return make_cached(verdict_pool)


def test_aggregates_match_the_dal_are_cached_per_tenant_and_live_for_the_reports_ttl(report_cached: CachedDAL) -> None:
    direct = PostgresDAL(report_cached.dal.pool)
    a, b = tenant_ids(4)[:2]
    start, end = DEFAULT_END.date() - dt.timedelta(days=365), DEFAULT_END.date()
    for t in (a, b, a, b):
        assert report_cached.tenant_dashboard(t, 90, now=DEFAULT_END) == direct.tenant_dashboard(t, 90, now=DEFAULT_END)
        assert report_cached.trade_route_report(t, start, end, 20) == direct.trade_route_report(t, start, end, 20)
    assert report_cached.tenant_dashboard(a, 90, now=DEFAULT_END) != report_cached.tenant_dashboard(
        b, 90, now=DEFAULT_END
    )
    for exp, imp in (("de", "jp"), ("DE", "JP"), ("De", "jP")):  # one key whatever the case
        assert report_cached.trade_route_analysis(exp, imp) == direct.trade_route_analysis("DE", "JP")
    assert _calls(report_cached) == {"tenant_dashboard": 2, "trade_route_report": 2, "trade_route_analysis": 1}
    dashboard = keys.dashboard_key(a, 90, DEFAULT_END.isoformat())
    for key in (
        dashboard,
        keys.route_report_key(b, start.isoformat(), end.isoformat(), 20),
        keys.trade_route_key("DE", "JP"),
    ):
        assert 55 <= (report_cached.cache.get_ttl(key) or 0) <= 60  # settings.ttl.reports
    assert report_cached.cache.stats()["entities"]["reports"]["hits"] >= 5
    # Without a moment the dashboard is keyed "now": one key, one query, for every caller within a TTL.
    report_cached.tenant_dashboard(a, 30)
    report_cached.tenant_dashboard(a, 30)
    assert _calls(report_cached)["tenant_dashboard"] == 3 and report_cached.cache.exists(
        keys.dashboard_key(a, 30, "now")
    )


def test_a_cached_aggregate_trails_new_verdicts_until_it_expires_or_is_dropped(report_cached: CachedDAL) -> None:
    a = tenant_ids(4)[0]
    window = (DEFAULT_END.date() - dt.timedelta(days=3660), DEFAULT_END.date() + dt.timedelta(days=3660))
    total = sum(r["verdicts"] for r in report_cached.trade_route_report(a, *window, 1000))
    with db.connect(report_cached.dal.pool.conninfo, autocommit=True) as conn:
        seed_database(conn, 400, seed=6, tenants=4, mode="append")
    # What the cache promises: the old answer, for at most settings.ttl.reports seconds (no waiting here:
    # the key's TTL is what bounds the lag).
    assert sum(r["verdicts"] for r in report_cached.trade_route_report(a, *window, 1000)) == total
    assert (
        0 < (report_cached.cache.get_ttl(keys.route_report_key(a, *(d.isoformat() for d in window), 1000)) or 0) <= 60
    )
    assert report_cached.cache.invalidate("reports") >= 1
    assert sum(r["verdicts"] for r in report_cached.trade_route_report(a, *window, 1000)) > total


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.tenant_dashboard("not-a-uuid"), "tenant_id"),
        (lambda c: c.tenant_dashboard(tenant_ids(1)[0], 0), "days"),
        (lambda c: c.trade_route_report(tenant_ids(1)[0], dt.date(2026, 2, 1), dt.date(2026, 1, 1)), "date_from"),
        (lambda c: c.trade_route_report(tenant_ids(1)[0], dt.date(2026, 1, 1), dt.date(2026, 2, 1), 0), "limit"),
        (lambda c: c.trade_route_analysis("D1", "JP"), "export_country"),
        (lambda c: c.trade_route_analysis("DE", "JPN"), "import_country"),
    ],
    ids=["tenant", "days", "dates", "limit", "export", "import"],
)
def test_bad_aggregate_input_is_the_dals_sentence_and_caches_nothing(
    report_cached: CachedDAL, call: Callable[[CachedDAL], Any], field: str
) -> None:
    with pytest.raises(InputError, match=field):
        call(report_cached)
    assert report_cached.cache.stats()["entities"].get("reports", {}).get("sets", 0) == 0
