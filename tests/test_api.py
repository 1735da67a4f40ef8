"""The PSRA API over real HTTP: every endpoint against a real database and Redis, bad input, tenant isolation.

Each app runs under uvicorn in a background thread (so its real lifespan opens the pool, the cache
and the job queue) and is spoken to with httpx. Three apps, each with its own Redis namespace:

* ``api``: cache on, no job workers (submitted jobs stay pending, so cancel is deterministic);
* ``worker_api``: cache on, in-process job workers, MAX_CONCURRENT_JOBS=3, a pool of 1..3 connections;
* ``nocache_api``: ENABLE_CACHE=false.

They share one module database with 3,000 seeded verdicts (seed 1, 200 tenants); the expected
content of each read endpoint comes from SQL on that database, run beside the HTTP call. Every
response passes a hook that fails the test on any 5xx (but the 503 of a health check that found a
dependency down) and on any ``password`` key or secret in the body, so no test can pass by accident
while the server crashes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import functools
import json
import logging
import queue
import random
import secrets
import socket
import ssl
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
import redis
import uvicorn

from psra_bench.api.app import create_app
from psra_bench.cache import keys
from psra_bench.cache.keys import scan_unlink_nodes
from psra_bench.db.reference import hs_rows
from psra_bench.db.seed import DEFAULT_END, tenant_ids
from psra_bench.infra import postgres as db
from psra_bench.infra.embedded import start_valkey, stop_valkey
from psra_bench.settings import Settings

#: ``sql(query, params)`` -> rows of the module database.
Oracle = Callable[..., list[tuple[Any, ...]]]
A, B = tenant_ids(200)[:2]  # the two biggest seeded tenants (Zipf ranks 1 and 2)
SUBHEADING = "847130"
#: The operator token of the apps served here (PSRA_ADMIN_TOKEN) and the header that sends it.
ADMIN_TOKEN = secrets.token_urlsafe(32)
OPERATOR = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# ----------------------------------------------------------------------------- live servers


def _keys_in(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _keys_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from _keys_in(v)


class _PlainTracebacks(logging.Filter):
    """Render the servers' logged exceptions without the caret markup of Python 3.11's traceback module.

    That markup parses source lines with ``ast``, whose recursion counter CPython 3.11 shares between
    threads: a server thread logging a 500 while pytest formats the failing assertion in the main
    thread can end the whole session with "SystemError: AST constructor recursion depth mismatch".
    The last line of each is also queued, so a test that sees a 500 can say what the server raised.
    """

    def __init__(self) -> None:
        super().__init__()
        self.errors: queue.Queue[str] = queue.Queue()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            exc = record.exc_info[1]
            frames = [
                f'  File "{f.filename}", line {f.lineno}, in {f.name}' for f in traceback.extract_tb(exc.__traceback__)
            ]
            last = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
            record.exc_text = "\n".join(["Traceback (most recent call last):", *frames, last])
            self.errors.put(last)
        return True


SERVER_LOG = _PlainTracebacks()


def _response_check(secrets: list[str]) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        response.read()
        where = f"{response.request.method} {response.request.url}"
        health_down = response.status_code == 503 and response.request.url.path == "/api/jobs/health"
        if response.status_code >= 500 and not health_down:  # a 503 health says a dependency is down
            try:  # uvicorn logs the exception just after it sent the 500
                raised = SERVER_LOG.errors.get(timeout=5)
            except queue.Empty:
                raised = "(nothing logged)"
            raise AssertionError(f"{where} -> {response.status_code}; the server raised {raised[:500]}")
        text = response.text
        for secret in secrets:
            assert secret not in text, f"{where} leaks a secret"
        if response.headers.get("content-type", "").startswith("application/json"):
            leaked = [k for k in _keys_in(response.json()) if "password" in k.lower()]
            assert not leaked, f"{where} returns key(s) {leaked}"

    return check


@functools.cache
def _tls() -> ssl.SSLContext:
    # Plain HTTP only; one shared context spares every new client loading the CA bundle again (~0.3 s).
    return ssl.create_default_context()


class LiveApp:
    """``create_app(settings)`` served by uvicorn in a thread on a free port of 127.0.0.1."""

    def __init__(self, settings: Settings, *, run_workers: bool = False) -> None:
        self.settings = settings
        self.app = create_app(settings, run_workers=run_workers)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_config=None, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        hidden = [
            urlsplit(settings.db_dsn or "").password,
            settings.redis.password if settings.redis else None,
            settings.admin_token,
        ]
        self.check = _response_check([s for s in hidden if s])

    def start(self) -> None:
        """Start serving; wait until the lifespan has run and the socket accepts requests."""
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the app at {self.url} did not start (see the captured log)")
            time.sleep(0.02)

    def stop(self) -> None:
        """Let uvicorn shut down (running the lifespan's cleanup) and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "uvicorn did not shut down within 30 s"

    def client(self) -> httpx.Client:
        """A new HTTP client for this app (each test gets its own, so one crash cannot spill into the next)."""
        return httpx.Client(base_url=self.url, timeout=30, verify=_tls(), event_hooks={"response": [self.check]})

    def key(self, logical: str) -> str:
        """A logical cache key as stored in Redis under this app's namespace."""
        return self.settings.cache_namespace + logical


@pytest.fixture(scope="module", autouse=True)
def _plain_server_tracebacks() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "asyncio")]
    for logger in loggers:
        logger.addFilter(SERVER_LOG)
    yield
    for logger in loggers:
        logger.removeFilter(SERVER_LOG)


@pytest.fixture(scope="module")
def data_dsn(make_seeded_database: Callable[..., str]) -> str:
    """A fresh database with reference data and 3,000 seeded verdicts (200 tenants)."""
    dsn = make_seeded_database(3000, seed=1)
    return dsn


@pytest.fixture(scope="module")
def sql(data_dsn: str) -> Iterator[Oracle]:
    """``sql(query, params)`` -> rows, on the module database (the oracle for the read endpoints)."""
    with db.connect(data_dsn, autocommit=True) as conn:

        def run(query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
            return conn.execute(query.encode(), params or {}).fetchall()

        yield run


@contextlib.contextmanager
def serving(settings: Settings, tag: str, *, run_workers: bool = False, **changes: Any) -> Iterator[LiveApp]:
    """A served app on ``settings`` (plus ``changes``) in a Redis namespace of its own, deleted afterwards."""
    namespace = f"{settings.cache_namespace}{tag}-{uuid.uuid4().hex[:6]}:"
    live = LiveApp(settings.replace(cache_namespace=namespace, **changes), run_workers=run_workers)
    live.start()
    try:
        yield live
    finally:
        live.stop()
        assert settings.redis is not None
        client = redis.Redis(**settings.redis.client_kwargs())
        try:
            scan_unlink_nodes([client], namespace + "*")
        finally:
            client.close()


def _serving(settings: Settings, name: str, *, run_workers: bool = False) -> Any:
    return serving(settings, f"api-{name}", run_workers=run_workers, admin_token=ADMIN_TOKEN)


@pytest.fixture(scope="module")
def api(settings: Settings, data_dsn: str) -> Iterator[LiveApp]:
    """The main app: cache on, no job workers."""
    with _serving(settings.replace(db_dsn=data_dsn), "main") as live:
        yield live


@pytest.fixture(scope="module")
def worker_api(settings: Settings, data_dsn: str) -> Iterator[LiveApp]:
    """An app with in-process job workers, MAX_CONCURRENT_JOBS=3 and a pool of 1..3 connections."""
    s = settings.replace(db_dsn=data_dsn, max_concurrent_jobs=3, db_pool_min=1, db_pool_max=3)
    with _serving(s, "workers", run_workers=True) as live:
        yield live


@pytest.fixture(scope="module")
def nocache_api(settings: Settings, data_dsn: str) -> Iterator[LiveApp]:
    """An app with ENABLE_CACHE=false."""
    with _serving(settings.replace(db_dsn=data_dsn, enable_cache=False), "nocache") as live:
        yield live


@pytest.fixture
def client(api: LiveApp) -> Iterator[httpx.Client]:
    """An HTTP client of the main app."""
    with api.client() as c:
        yield c


@pytest.fixture
def wclient(worker_api: LiveApp) -> Iterator[httpx.Client]:
    """An HTTP client of the app with job workers."""
    with worker_api.client() as c:
        yield c


# ----------------------------------------------------------------------------- helpers


def assessment(who: str, **changes: Any) -> dict[str, Any]:
    """A valid request that qualifies under CETA-HS39-001: polyethylene made in DE, sold to CA."""
    body: dict[str, Any] = {
        "hs_code": "3901.10",
        "agreement_code": "CETA",
        "origin_country": "DE",
        "destination_country": "CA",
        "assessment_date": "2024-06-01",
        "tenant_id": who,
        "ex_works_price": 100,
        "processes": ["POLYMERIZATION"],
        "bill_of_materials": [
            {"hs_code": "290121", "origin_country": "FR", "value": 65},
            {"hs_code": "381519", "origin_country": "US", "value": 10},
        ],
    }
    body.update(changes)
    return body


def tenant(t: str) -> dict[str, str]:
    """The X-Tenant-ID header of tenant ``t``."""
    return {"X-Tenant-ID": t}


def wait_job(
    c: httpx.Client, job_id: str, timeout: float = 30.0, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Poll GET /api/jobs/{id}/status (as ``headers``: a tenant's job needs its X-Tenant-ID) until it is finished."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.get(f"/api/jobs/{job_id}/status", headers=headers)
        assert r.status_code == 200, r.text
        doc: dict[str, Any] = r.json()
        if doc["status"] in ("completed", "failed", "cancelled"):
            return doc
        assert time.monotonic() < deadline, f"job {job_id} still {doc['status']} after {timeout} s"
        time.sleep(0.05)


def scan(rds: redis.Redis, pattern: str) -> list[str]:
    """Keys matching ``pattern`` (SCAN, never KEYS)."""
    return list(rds.scan_iter(match=pattern, count=1000))


def has(doc: dict[str, Any], **fields: Any) -> None:
    """Assert that ``doc`` holds these fields with these values (one message showing all of them)."""
    assert {k: doc.get(k) for k in fields} == fields


def names(field: str, expected: str) -> bool:
    """Whether an error's ``field`` names ``expected`` (headers in any case; a job's payload fields may say so)."""
    return field.lower() == expected.lower() or field == f"payload.{expected}"


# ----------------------------------------------------------------------------- OpenAPI and reference data

ROUTES = {
    ("post", "/api/jobs/submit"),
    ("get", "/api/jobs/{job_id}/status"),
    ("post", "/api/jobs/{job_id}/cancel"),
    ("get", "/api/jobs/health"),
    ("post", "/api/jobs/assessment/submit"),
    ("post", "/api/jobs/bulk-import/submit"),
    ("get", "/api/hs/{code}"),
    ("get", "/api/hs/search"),
    ("get", "/api/agreements"),
    ("get", "/api/rules"),
    ("get", "/api/rules/{rule_id}"),
    ("post", "/api/assessments"),
    ("get", "/api/verdicts/recent"),
    ("get", "/api/verdicts/{evaluation_id}"),
    ("get", "/api/tenants/{tenant_id}/verdicts"),
    ("get", "/api/tenants/{tenant_id}/duplicates/{input_hash}"),
    ("get", "/api/tenants/{tenant_id}/dashboard"),
    ("get", "/api/tenants/{tenant_id}/trade-route-report"),
    ("get", "/api/trade-routes/{export_country}/{import_country}"),
}


def test_openapi_lists_every_route_and_the_spec_fields(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    served = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert ROUTES <= served, ROUTES - served
    assert set(doc["components"]["schemas"]["SubmitJobResponse"]["properties"]) == {"job_id", "status", "message"}
    submit = doc["paths"]["/api/jobs/submit"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert all({"job_type", "payload", "priority", "ttl_seconds"} <= set(v["properties"]) for v in submit["oneOf"])
    for path in [p for _, p in ROUTES if p.startswith("/api/tenants/")] + ["/api/verdicts/{evaluation_id}"]:
        params = doc["paths"][path]["get"]["parameters"]
        assert {"in": "header", "name": "X-Tenant-ID"}.items() <= next(
            p for p in params if p["in"] == "header"
        ).items(), path
    assert client.get("/docs").status_code == 200


def test_hs_code_lookup_is_exact_and_cached(api: LiveApp, client: httpx.Client, rds: redis.Redis) -> None:
    row = next(r for r in hs_rows() if r.code == SUBHEADING)
    rds.unlink(api.key(f"hs:code:{SUBHEADING}"))
    first = client.get("/api/hs/8471.30")
    assert first.status_code == 200
    has(
        first.json(),
        code=SUBHEADING,
        description=row.description,
        parent="8471",
        level=6,
        section="XVI",
        chapter="84",
        version="HS2022",
    )
    assert row.description.startswith("Automatic data processing machines; portable")
    assert 0 < rds.pttl(api.key(f"hs:code:{SUBHEADING}")) <= api.settings.ttl.hs_codes * 1000
    assert client.get(f"/api/hs/{SUBHEADING}").json() == first.json()  # same key for 8471.30 and 847130
    missing = client.get("/api/hs/010199")
    assert missing.status_code == 404 and "010199" in missing.json()["detail"]


def test_hs_search_matches_sql_and_takes_text_literally(
    api: LiveApp, client: httpx.Client, rds: redis.Redis, sql: Oracle
) -> None:
    r = client.get("/api/hs/search", params={"q": "Portable", "limit": 5})
    assert r.status_code == 200
    expected = sql("SELECT code FROM hs_codes WHERE description ILIKE '%%portable%%' ORDER BY level, code LIMIT 5")
    assert [x["code"] for x in r.json()["results"]] == [c for (c,) in expected]
    assert len(expected) == 5
    assert rds.exists(api.key("hs:search:portable:5"))
    # LIKE wildcards in the text match themselves, not everything.
    assert client.get("/api/hs/search", params={"q": "_%"}).json()["results"] == []


def test_agreements_and_rules(api: LiveApp, client: httpx.Client, rds: redis.Redis) -> None:
    agreements = client.get("/api/agreements").json()["agreements"]
    expected = [("CETA", 3), ("EU-JP-EPA", 2), ("EU-UK-TCA", 4), ("USMCA", 4)]
    assert [(a["agreement_code"], a["rules"]) for a in agreements] == expected
    ceta = client.get("/api/rules", params={"agreement": "ceta"}).json()
    assert ceta["agreement"] == "CETA"
    assert [r["rule_id"] for r in ceta["rules"]] == ["CETA-HS39-001", "CETA-HS84-001", "CETA-HS39-000"]
    assert rds.exists(api.key("rules:agreement:CETA"))
    ch39 = client.get("/api/rules", params={"agreement": "CETA", "chapter": "39"}).json()
    assert [r["rule_id"] for r in ch39["rules"]] == ["CETA-HS39-001", "CETA-HS39-000"]
    rule = client.get("/api/rules/ceta-hs39-001").json()
    assert (rule["rule_id"], rule["hs_subheading"], rule["jurisdictions"]) == ("CETA-HS39-001", "390110", ["EU", "CA"])
    assert rds.exists(api.key("rule:id:CETA-HS39-001"))
    assert client.get("/api/rules/NOPE-1").status_code == 404


# ----------------------------------------------------------------------------- assessments, cache on and off


def test_assessment_is_stored_cached_and_read_back(
    api: LiveApp, client: httpx.Client, rds: redis.Redis, sql: Oracle
) -> None:
    me = str(uuid.uuid4())
    first = client.post("/api/assessments", json=assessment(me), headers=tenant(me))
    assert first.status_code == 200, first.text
    v = first.json()
    has(
        v,
        status="qualified",
        rule_id="CETA-HS39-001",
        agreement_code="CETA",
        hs_code="390110",
        tenant_id=me,
        cached=False,
    )
    assert {"rule_id": "CETA-HS39-001", "clause": "CETA Annex 5-A, HS 39"} in v["citations"]
    assert rds.exists(api.key("assessment:CETA-HS39-001:390110:DE:CA"))

    again = client.post("/api/assessments", json=assessment(me), headers=tenant(me)).json()
    assert again["cached"] is True
    assert again["evaluation_id"] == v["evaluation_id"]
    assert sql("SELECT count(*) FROM psra_verdicts WHERE input_hash = %(h)s", {"h": v["input_hash"]}) == [(1,)]

    # The same product for another tenant is another input: not a hit, a verdict of its own.
    other = str(uuid.uuid4())
    theirs = client.post("/api/assessments", json=assessment(other), headers=tenant(other)).json()
    assert (theirs["cached"], theirs["tenant_id"]) == (False, other)
    assert theirs["evaluation_id"] != v["evaluation_id"] and theirs["input_hash"] != v["input_hash"]

    stored = client.get(f"/api/verdicts/{v['evaluation_id']}", headers=tenant(me))
    assert stored.status_code == 200, stored.text
    row = stored.json()
    has(
        row,
        evaluation_id=v["evaluation_id"],
        tenant_id=me,
        status="qualified",
        rule_id="CETA-HS39-001",
        input_hash=v["input_hash"],
        hs_subheading="390110",
        export_country="DE",
        import_country="CA",
        agreement_code="CETA",
    )
    assert client.get(f"/api/verdicts/{v['evaluation_id']}", headers=tenant(me)).json() == row
    assert rds.exists(api.key(f"verdict:{v['evaluation_id']}"))
    # Cached or not, another tenant never sees it.
    assert client.get(f"/api/verdicts/{v['evaluation_id']}", headers=tenant(other)).status_code == 404
    assert client.get(f"/api/verdicts/{uuid.uuid4()}", headers=tenant(me)).status_code == 404


def test_cache_off_app_is_correct_and_never_cached(nocache_api: LiveApp, rds: redis.Redis, sql: Oracle) -> None:
    me = str(uuid.uuid4())
    with nocache_api.client() as c:
        first = c.post("/api/assessments", json=assessment(me), headers=tenant(me)).json()
        second = c.post("/api/assessments", json=assessment(me), headers=tenant(me)).json()
        assert (first["cached"], second["cached"]) == (False, False)
        assert first["status"] == second["status"] == "qualified"
        assert first["evaluation_id"] != second["evaluation_id"]
        assert first["input_hash"] == second["input_hash"]
        assert sql("SELECT count(*) FROM psra_verdicts WHERE input_hash = %(h)s", {"h": first["input_hash"]}) == [(2,)]
        for _ in range(2):
            assert c.get(f"/api/hs/{SUBHEADING}").json()["description"].startswith("Automatic data processing")
            assert len(c.get("/api/rules", params={"agreement": "CETA"}).json()["rules"]) == 3
            assert c.get(f"/api/verdicts/{first['evaluation_id']}", headers=tenant(me)).json()["tenant_id"] == me
    for prefix in ("hs:", "rule", "assessment:", "verdict:", "lock:"):
        assert scan(rds, nocache_api.key(prefix) + "*") == [], prefix


def test_pool_sizes_and_job_cap_come_from_settings(worker_api: LiveApp, wclient: httpx.Client) -> None:
    state = worker_api.app.state.psra
    assert (state.pool.min_size, state.pool.max_size) == (1, 3)
    assert worker_api.settings.redis is not None
    assert state.cache.client.connection_pool.max_connections == worker_api.settings.redis.max_connections
    assert wclient.get("/api/jobs/health", headers=OPERATOR).json()["max_concurrent_jobs"] == 3

    # More concurrent requests than connections: they queue for the pool, none fails.
    def fetch(_: int) -> int:
        with worker_api.client() as c:
            return c.get(f"/api/tenants/{A}/verdicts", headers=tenant(A)).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        assert list(ex.map(fetch, range(8))) == [200] * 8


# ----------------------------------------------------------------------------- verdict reads (SQL is the oracle)

_IDS = "SELECT evaluation_id::text FROM psra_verdicts"


def test_recent_verdicts(client: httpx.Client, sql: Oracle) -> None:
    got = client.get("/api/verdicts/recent", params={"limit": 25}, headers=OPERATOR).json()["verdicts"]
    assert [v["evaluation_id"] for v in got] == [e for (e,) in sql(_IDS + " ORDER BY created_at DESC LIMIT 25")]
    assert len(client.get("/api/verdicts/recent", headers=OPERATOR).json()["verdicts"]) == 100


def test_tenant_history_holds_only_own_rows(client: httpx.Client, sql: Oracle) -> None:
    got = client.get(f"/api/tenants/{A}/verdicts", params={"limit": 50}, headers=tenant(A)).json()
    expected = sql(_IDS + " WHERE tenant_id = %(t)s ORDER BY created_at DESC LIMIT 50", {"t": A})
    assert len(expected) == 50
    assert [v["evaluation_id"] for v in got["verdicts"]] == [e for (e,) in expected]
    assert {v["tenant_id"] for v in got["verdicts"]} == {A} and got["tenant_id"] == A


def test_trade_route_analysis(client: httpx.Client, sql: Oracle) -> None:
    ((exp, imp),) = sql(
        "SELECT export_country, import_country FROM psra_verdicts GROUP BY 1, 2 ORDER BY count(*) DESC, 1, 2 LIMIT 1"
    )
    got = client.get(f"/api/trade-routes/{exp.lower()}/{imp.lower()}", headers=OPERATOR).json()
    assert (got["export_country"], got["import_country"]) == (exp, imp)
    expected = sql(
        "SELECT status, count(*), round(avg(confidence)::numeric, 4)::float FROM psra_verdicts "
        "WHERE export_country = %(e)s AND import_country = %(i)s GROUP BY 1 ORDER BY 1",
        {"e": exp, "i": imp},
    )
    assert [(r["status"], r["verdicts"], r["avg_confidence"]) for r in got["by_status"]] == expected
    assert sum(r["verdicts"] for r in got["by_status"]) > 50


def test_dashboard_counts_the_window_that_ends_at_until(client: httpx.Client, sql: Oracle) -> None:
    # Two months before the end of the seeded history, so verdicts exist both inside and after the window.
    until = DEFAULT_END - dt.timedelta(days=60)
    got = client.get(
        f"/api/tenants/{A}/dashboard", params={"days": 30, "until": until.isoformat()}, headers=tenant(A)
    ).json()
    expected = sql(
        "SELECT status, count(*) FROM psra_verdicts WHERE tenant_id = %(t)s AND created_at >= %(s)s "
        "AND created_at <= %(u)s GROUP BY 1 ORDER BY 1",
        {"t": A, "s": until - dt.timedelta(days=30), "u": until},
    )
    assert sum(n for _, n in expected) > 10
    assert sql(
        "SELECT count(*) > 0 FROM psra_verdicts WHERE tenant_id = %(t)s AND created_at > %(u)s", {"t": A, "u": until}
    ) == [(True,)]
    assert [(r["status"], r["verdicts"]) for r in got["by_status"]] == expected
    assert all(dt.datetime.fromisoformat(r["last_verdict_at"]) <= until for r in got["by_status"])


def test_trade_route_report(client: httpx.Client, sql: Oracle) -> None:
    params: dict[str, str | int] = {"date_from": "2025-01-01", "date_to": "2026-06-30", "limit": 10}
    got = client.get(f"/api/tenants/{A}/trade-route-report", params=params, headers=tenant(A)).json()
    expected = sql(
        "SELECT export_country, import_country, agreement_code, count(*) FROM psra_verdicts "
        "WHERE tenant_id = %(t)s AND effective_date BETWEEN '2025-01-01' AND '2026-06-30' "
        "GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3 LIMIT 10",
        {"t": A},
    )
    assert len(expected) == 10
    assert [
        (r["export_country"], r["import_country"], r["agreement_code"], r["verdicts"]) for r in got["routes"]
    ] == expected
    assert (got["date_from"], got["date_to"]) == ("2025-01-01", "2026-06-30")


def test_aggregate_routes_answer_from_report_keys_per_tenant(
    api: LiveApp, client: httpx.Client, rds: redis.Redis
) -> None:
    until = DEFAULT_END - dt.timedelta(days=10)
    span = {"date_from": "2025-01-01", "date_to": "2026-06-30"}
    routes = [
        (
            "/api/tenants/{t}/dashboard",
            {"days": 90, "until": until.isoformat()},
            lambda t: keys.dashboard_key(t, 90, until.isoformat()),
        ),
        ("/api/tenants/{t}/trade-route-report", span, lambda t: keys.route_report_key(t, *span.values(), 50)),
    ]
    for route, params, key_of in routes:
        answers = {t: client.get(route.format(t=t), params=params, headers=tenant(t)).json() for t in (A, B)}
        assert answers[A] != answers[B] and B not in json.dumps(answers[A])
        for t in (A, B):
            key = api.key(key_of(t))
            assert 0 < rds.ttl(key) <= api.settings.ttl.reports
            rds.set(key, json.dumps([]), keepttl=True)  # what the route answers now comes from the key
            assert client.get(route.format(t=t), params=params, headers=tenant(t)).json() == {
                **answers[t],
                "by_status" if "dashboard" in route else "routes": [],
            }
    got = client.get("/api/trade-routes/de/jp", headers=OPERATOR).json()
    assert 0 < rds.ttl(api.key(keys.trade_route_key("DE", "JP"))) <= api.settings.ttl.reports
    assert client.get("/api/trade-routes/DE/JP", headers=OPERATOR).json() == got


def test_duplicate_detection(client: httpx.Client, sql: Oracle) -> None:
    ((h, latest),) = sql(
        "SELECT input_hash, (array_agg(evaluation_id::text ORDER BY created_at DESC))[1] "
        "FROM psra_verdicts WHERE tenant_id = %(t)s GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT 1",
        {"t": A},
    )
    got = client.get(f"/api/tenants/{A}/duplicates/{h}", headers=tenant(A)).json()
    assert (got["duplicate"], got["verdict"]["evaluation_id"], got["verdict"]["tenant_id"]) == (True, latest, A)
    ((b_hash,),) = sql(
        "SELECT input_hash FROM psra_verdicts WHERE tenant_id = %(b)s AND input_hash NOT IN "
        "(SELECT input_hash FROM psra_verdicts WHERE tenant_id = %(a)s) LIMIT 1",
        {"a": A, "b": B},
    )
    mine = client.get(f"/api/tenants/{A}/duplicates/{b_hash}", headers=tenant(A)).json()
    assert (mine["duplicate"], mine["verdict"]) == (False, None)


# ----------------------------------------------------------------------------- tenant isolation

TENANT_ROUTES: list[tuple[str, str, dict[str, str | int]]] = [
    ("history", "/api/tenants/{t}/verdicts", {}),
    ("dashboard", "/api/tenants/{t}/dashboard", {"days": 3660}),
    ("report", "/api/tenants/{t}/trade-route-report", {"date_from": "2000-01-01", "date_to": "2100-01-01"}),
    ("duplicates", "/api/tenants/{t}/duplicates/{h}", {}),
]


@pytest.fixture(scope="module")
def b_rows(sql: Oracle) -> dict[str, Any]:
    """Tenant B's evaluation ids and input hashes (none of which may reach tenant A)."""
    rows = sql(
        "SELECT evaluation_id::text, input_hash FROM psra_verdicts WHERE tenant_id = %(b)s ORDER BY created_at DESC",
        {"b": B},
    )
    assert len(rows) > 20
    return {"ids": [e for e, _ in rows], "hashes": [h for _, h in rows]}


def _no_rows_of_b(r: httpx.Response, b_rows: dict[str, Any], asked: str = "") -> None:
    text = r.text.replace(asked, "") if asked else r.text  # a 404 may echo the id it was asked for
    assert B not in text
    assert not any(e in text for e in b_rows["ids"])


@pytest.mark.parametrize(
    ("route", "params"), [(p, q) for _, p, q in TENANT_ROUTES], ids=[n for n, _, _ in TENANT_ROUTES]
)
def test_a_cannot_read_bs_tenant_routes(
    client: httpx.Client, b_rows: dict[str, Any], route: str, params: dict[str, Any]
) -> None:
    own = client.get(route.format(t=B, h=b_rows["hashes"][0]), params=params, headers=tenant(B))
    assert own.status_code == 200 and B in own.text  # the same request as B works
    r = client.get(route.format(t=B, h=b_rows["hashes"][0]), params=params, headers=tenant(A))
    assert r.status_code in (403, 404), r.text
    _no_rows_of_b(r, b_rows)


def test_a_cannot_read_bs_verdict_or_assess_as_b(client: httpx.Client, b_rows: dict[str, Any], sql: Oracle) -> None:
    for evaluation_id in b_rows["ids"][:3]:
        assert client.get(f"/api/verdicts/{evaluation_id}", headers=tenant(B)).status_code == 200
        r = client.get(f"/api/verdicts/{evaluation_id}", headers=tenant(A))
        assert r.status_code == 404 and set(r.json()) == {"detail"}
        _no_rows_of_b(r, b_rows, asked=evaluation_id)
    before = sql("SELECT count(*) FROM psra_verdicts WHERE tenant_id = %(b)s", {"b": B})
    r = client.post("/api/assessments", json=assessment(B), headers=tenant(A))
    assert r.status_code == 403
    assert sql("SELECT count(*) FROM psra_verdicts WHERE tenant_id = %(b)s", {"b": B}) == before
    # A's own history, dashboard and report never contain B's rows.
    for _, route, params in TENANT_ROUTES[:3]:
        _no_rows_of_b(client.get(route.format(t=A), params=params, headers=tenant(A)), b_rows)


TENANT_SCOPED = [("GET", route.format(t=A, h="0" * 64), params) for _, route, params in TENANT_ROUTES] + [
    ("GET", f"/api/verdicts/{uuid.uuid5(uuid.NAMESPACE_URL, 'no-such-verdict')}", {}),  # ids equal in every process
    ("POST", "/api/assessments", {}),
]


@pytest.mark.parametrize(("method", "path", "params"), TENANT_SCOPED, ids=[p for _, p, _ in TENANT_SCOPED])
@pytest.mark.parametrize("header", [None, "not-a-uuid", ""], ids=["missing", "bad", "empty"])
def test_tenant_header_missing_or_bad_is_422_naming_it(
    client: httpx.Client, method: str, path: str, params: dict[str, Any], header: str | None
) -> None:
    headers = {} if header is None else {"X-Tenant-ID": header}
    body = assessment(A) if method == "POST" else None
    r = client.request(method, path, params=params, json=body, headers=headers)
    assert r.status_code == 422, r.text
    assert names(r.json()["field"], "X-Tenant-ID")


# ----------------------------------------------------------------------------- the job API

SPEC_STATUS_FIELDS = {"job_id", "status", "progress", "progress_message", "created_at", "started_at", "metadata"}


def test_submit_status_and_cancel_of_a_pending_job(client: httpx.Client) -> None:
    payload = {"items": [{"code": "0101", "description": "Live horses, asses, mules and hinnies"}]}
    r = client.post(
        "/api/jobs/submit",
        json={"job_type": "bulk_import", "payload": payload, "priority": "low", "ttl_seconds": 600},
        headers=OPERATOR,
    )
    assert r.status_code == 202
    sub = r.json()
    assert set(sub) == {"job_id", "status", "message"} and sub["status"] == "pending"
    uuid.UUID(sub["job_id"])
    status = client.get(f"/api/jobs/{sub['job_id']}/status", headers=OPERATOR).json()
    assert SPEC_STATUS_FIELDS <= set(status)
    has(status, job_id=sub["job_id"], status="pending", progress=0, started_at=None)
    assert {"job_type": "bulk_import", "priority": "low", "owner": "operator"}.items() <= status["metadata"].items()
    dt.datetime.fromisoformat(status["created_at"])

    cancel = client.post(f"/api/jobs/{sub['job_id']}/cancel", headers=OPERATOR)
    assert cancel.status_code == 200
    assert set(cancel.json()) == {"job_id", "status", "message", "accepted", "outcome"}
    assert (cancel.json()["accepted"], cancel.json()["outcome"]) == (True, "cancelled")
    assert (cancel.json()["job_id"], cancel.json()["status"]) == (sub["job_id"], "cancelled")
    after = client.get(f"/api/jobs/{sub['job_id']}/status", headers=OPERATOR).json()
    assert (after["status"], after["started_at"], after["result"]) == ("cancelled", None, None)
    again = client.post(f"/api/jobs/{sub['job_id']}/cancel", headers=OPERATOR).json()
    assert again["status"] == "cancelled" and "already" in again["message"]
    assert (again["accepted"], again["outcome"]) == (False, "already_finished")


@pytest.mark.parametrize("job_id", [str(uuid.uuid5(uuid.NAMESPACE_URL, "no-such-job")), "nope", "a*b?[c]", "x" * 300])
def test_unknown_job_is_404(client: httpx.Client, job_id: str) -> None:
    for method, action in (("GET", "status"), ("POST", "cancel")):
        r = client.request(method, f"/api/jobs/{quote(job_id)}/{action}")
        assert r.status_code == 404, (action, r.text)
        assert job_id in r.json()["detail"]


def test_health(api: LiveApp, client: httpx.Client, wclient: httpx.Client) -> None:
    assert client.get("/api/jobs/health").json() == {  # the public part
        "status": "ok",
        "service": "async_job_queue",
        "dependencies": {"redis": "ok", "postgresql": "ok"},
    }
    doc = client.get("/api/jobs/health", headers=OPERATOR).json()
    assert {"status", "service", "max_concurrent_jobs", "running_jobs", "registered_handlers"} <= set(doc)
    has(
        doc,
        status="ok",
        service="async_job_queue",
        max_concurrent_jobs=api.settings.max_concurrent_jobs,
        running_jobs=0,
    )
    assert doc["registered_handlers"] == ["assessment", "bulk_import"]
    assert wclient.get("/api/jobs/health", headers=OPERATOR).json()["workers"] >= 1


def _health(live: LiveApp) -> tuple[int, dict[str, Any]]:
    with live.client() as c:
        r = c.get("/api/jobs/health")
        return r.status_code, r.json()


def test_health_is_503_naming_the_dependency_that_is_down(
    settings: Settings, server_settings: Settings, make_database: Callable[..., str], rds: redis.Redis, tmp_path: Path
) -> None:
    """A real Valkey of this test's own is stopped and restarted, then the app's database is dropped."""
    redis_settings = start_valkey(tmp_path, policy="noeviction")  # the cache and the jobs: a safe job store
    dsn = make_database()
    try:
        with _serving(settings.replace(db_dsn=dsn, redis=redis_settings, jobs_redis=redis_settings), "health") as live:
            assert _health(live) == (
                200,
                {"status": "ok", "service": "async_job_queue", "dependencies": {"redis": "ok", "postgresql": "ok"}},
            )
            stop_valkey(tmp_path)
            status, doc = _health(live)
            assert (status, doc["status"], doc["dependencies"]) == (
                503,
                "unavailable",
                {"redis": "down", "postgresql": "ok"},
            )
            assert doc["detail"] == "the job queue's Redis is not reachable"
            with live.client() as c:  # the operator still sees the details, and the same verdict
                r = c.get("/api/jobs/health", headers=OPERATOR)
                assert (r.status_code, r.json()["dependencies"]["redis"]) == (503, "down")
            start_valkey(tmp_path, policy="noeviction")  # the same port again
            assert _health(live)[0] == 200
            assert server_settings.db_dsn is not None
            db.drop_database(server_settings.db_dsn, urlsplit(dsn).path.lstrip("/"))
            status, doc = _health(live)
            assert (status, doc["dependencies"]) == (503, {"redis": "ok", "postgresql": "down"})
            assert doc["detail"] == "the API's PostgreSQL database is not reachable"
            assert urlsplit(dsn).path.lstrip("/") not in str(doc)
    finally:
        stop_valkey(tmp_path)


def test_assessment_job_runs_to_completion(wclient: httpx.Client, sql: Oracle) -> None:
    me = str(uuid.uuid4())
    r = wclient.post(
        "/api/jobs/submit",
        json={"job_type": "assessment", "payload": assessment(me), "priority": "high"},
        headers=tenant(me),
    )
    assert r.status_code == 202
    done = wait_job(wclient, r.json()["job_id"], headers=tenant(me))
    assert SPEC_STATUS_FIELDS <= set(done)
    assert (done["status"], done["progress"], done["error"]) == ("completed", 100, None), done
    assert done["progress_message"] and done["started_at"] and done["completed_at"]
    assert {"job_type": "assessment", "priority": "high"}.items() <= done["metadata"].items()
    result = done["result"]
    assert (result["status"], result["rule_id"], result["tenant_id"]) == ("qualified", "CETA-HS39-001", me)
    assert sql(
        "SELECT tenant_id::text FROM psra_verdicts WHERE evaluation_id = %(e)s", {"e": result["evaluation_id"]}
    ) == [(me,)]


def test_assessment_shortcut(wclient: httpx.Client) -> None:
    me, user = str(uuid.uuid4()), str(uuid.uuid4())
    r = wclient.post("/api/jobs/assessment/submit", json={**assessment(me), "user_id": user}, headers=tenant(me))
    assert r.status_code == 202 and r.json()["status"] == "pending"
    done = wait_job(wclient, r.json()["job_id"], headers=tenant(me))
    assert (done["status"], done["progress"], done["result"]["tenant_id"]) == ("completed", 100, me)
    assert {"job_type": "assessment", "tenant_id": me, "user_id": user}.items() <= done["metadata"].items()
    # The spec's four-field body is accepted too: without a bill of materials and a price the verdict is
    # insufficient_data naming what is missing; without a tenant nothing is stored (test_assessment_shortcut.py).
    spec_body = {"rule_id": "USMCA-2024-01", "hs_code": "8471.30", "origin_country": "MX", "destination_country": "US"}
    short = wclient.post("/api/jobs/assessment/submit", json=spec_body)
    assert short.status_code == 202
    verdict = wait_job(wclient, short.json()["job_id"])["result"]
    assert (verdict["status"], verdict["rule_id"], verdict["tenant_id"]) == ("insufficient_data", "USMCA-2024-01", None)


def test_bulk_import_upserts_then_invalidates_hs_and_assessments(
    worker_api: LiveApp, wclient: httpx.Client, rds: redis.Redis, sql: Oracle
) -> None:
    # Fill the cache through the API: an HS code, a search, an assessment and a rule.
    old = wclient.get("/api/hs/010129").json()["description"]
    wclient.get("/api/hs/search", params={"q": "horses"})
    me = str(uuid.uuid4())
    assert wclient.post("/api/assessments", json=assessment(me), headers=tenant(me)).status_code == 200
    wclient.get("/api/rules/CETA-HS39-001")
    assert len(scan(rds, worker_api.key("hs:*"))) >= 2 and scan(rds, worker_api.key("assessment:*"))

    new = "Live horses, other than pure-bred breeding animals (bulk import)"
    items = [{"code": "0101.29", "description": new}] + [
        {"code": f"98{i:04d}", "description": f"test code {i}"} for i in range(1200)
    ]
    r = wclient.post("/api/jobs/bulk-import/submit", json={"items": items}, headers=OPERATOR)
    assert r.status_code == 202
    done = wait_job(wclient, r.json()["job_id"], headers=OPERATOR)
    assert (done["status"], done["progress"]) == ("completed", 100), done
    result = done["result"]
    assert (result["imported"], result["inserted"], result["updated"]) == (1201, 1200, 1)
    assert result["invalidated"] >= 3
    assert scan(rds, worker_api.key("hs:*")) == [] and scan(rds, worker_api.key("assessment:*")) == []
    assert rds.exists(worker_api.key("rule:id:CETA-HS39-001"))  # rules were not touched, so not dropped

    assert sql("SELECT description, level, parent, chapter FROM hs_codes WHERE code = '010129'") == [
        (new, 6, "0101", "01")
    ]
    assert sql("SELECT level, parent, chapter FROM hs_codes WHERE code = '981199'") == [(6, "9811", "98")]
    assert old != new and wclient.get("/api/hs/0101.29").json()["description"] == new  # not the stale entry


def test_bulk_import_size_limit(client: httpx.Client) -> None:
    item = {"code": "0101", "description": "Live horses, asses, mules and hinnies"}
    too_many = client.post("/api/jobs/bulk-import/submit", json={"items": [item] * 10_001}, headers=OPERATOR)
    assert too_many.status_code in (413, 422)
    assert "10,000" in too_many.json()["detail"]
    at_limit = client.post("/api/jobs/bulk-import/submit", json={"items": [item] * 10_000}, headers=OPERATOR)
    assert at_limit.status_code == 202
    cancelled = client.post(f"/api/jobs/{at_limit.json()['job_id']}/cancel", headers=OPERATOR)
    assert cancelled.json()["status"] == "cancelled"


def test_a_job_payload_over_the_limit_is_413_and_a_timeout_is_kept(settings: Settings, data_dsn: str) -> None:
    # Bodies up to 1 MiB are read; the job queue's own limit (PSRA_JOB_MAX_PAYLOAD_BYTES) is smaller here.
    with (
        _serving(settings.replace(db_dsn=data_dsn, max_job_payload_bytes=2048), "tiny-jobs") as live,
        live.client() as c,
    ):
        items = [{"code": f"01{n:02d}", "description": "x" * 200} for n in range(10, 30)]
        r = c.post("/api/jobs/bulk-import/submit", json={"items": items}, headers=OPERATOR)
        assert r.status_code == 413, r.text
        assert r.json()["field"] == "payload" and "use at most 2,048 bytes" in r.json()["detail"]
        ok = c.post(
            "/api/jobs/submit",
            json={"job_type": "bulk_import", "payload": {"items": items[:2]}, "timeout_seconds": 30},
            headers=OPERATOR,
        )
        assert ok.status_code == 202, ok.text
        status = c.get(f"/api/jobs/{ok.json()['job_id']}/status", headers=OPERATOR).json()
        assert status["metadata"]["timeout_seconds"] == 30
        bad = c.post(
            "/api/jobs/submit",
            json={"job_type": "bulk_import", "payload": {"items": items[:2]}, "timeout_seconds": 0},
            headers=OPERATOR,
        )
        assert bad.status_code == 422 and "timeout_seconds" in bad.text


@pytest.fixture(scope="module")
def small_api(settings: Settings, data_dsn: str, rds: redis.Redis) -> Iterator[LiveApp]:
    """An app that reads request bodies of at most 1,024 bytes (PSRA_MAX_BODY_BYTES=1024)."""
    with _serving(settings.replace(db_dsn=data_dsn, max_body_bytes=1024), "small") as live:
        yield live


def _raw_request(live: LiveApp, head: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """Send one HTTP/1.1 request as bytes on a socket of its own; the status and the JSON body of the answer."""
    host, port = urlsplit(live.url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + body)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def test_a_body_over_the_limit_is_413_before_it_is_read(small_api: LiveApp) -> None:
    # Content-Length says 2 MB and not one byte follows: the answer cannot have waited for the body.
    head = "POST /api/assessments HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: 2000000\n\n"
    status, doc = _raw_request(small_api, head)
    assert status == 413 and doc["field"] == "body"
    assert doc["detail"] == (
        "the request body is 2,000,000 bytes (Content-Length); at most 1,024 bytes are allowed (PSRA_MAX_BODY_BYTES)"
    )


def test_a_chunked_body_is_counted_while_it_streams(small_api: LiveApp) -> None:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in [b" " * 600, b" " * 600]) + b"0\r\n\r\n"
    head = "POST /api/jobs/submit HTTP/1.1\nHost: x\nContent-Type: application/json\nTransfer-Encoding: chunked\n\n"
    status, doc = _raw_request(small_api, head, chunks)
    assert status == 413 and doc["detail"].startswith("the request body is over 1,024 bytes")
    with small_api.client() as c:  # at the limit the body is read and parsed as usual
        r = c.post("/api/jobs/submit", content=b'{"job_type": "nope"}' + b" " * 1004, headers=_JSON)
        assert (r.status_code, r.json()["field"]) == (422, "job_type")


def _nested(levels: int) -> bytes:
    """A job body whose JSON nests ``levels`` deep (the body object and payload are two of them)."""
    return b'{"job_type": "nope", "payload": {"a": ' + b"[" * (levels - 2) + b"]" * (levels - 2) + b"}}"


def test_json_nesting_is_bounded_without_parsing(client: httpx.Client) -> None:
    deep = client.post("/api/jobs/submit", content=_nested(33), headers=_JSON)
    assert (deep.status_code, deep.json()["field"]) == (422, "body")
    assert "deeper than 32 levels" in deep.json()["detail"]
    at_limit = client.post("/api/jobs/submit", content=_nested(32), headers=_JSON)
    assert (at_limit.status_code, at_limit.json()["field"]) == (422, "job_type")  # parsed: the job type is wrong
    text = client.post("/api/jobs/submit", json={"job_type": "nope", "payload": {"t": "[" * 1000}})
    assert text.json()["field"] == "job_type"  # brackets inside a string are text, not nesting
    not_utf8 = client.post("/api/jobs/submit", content=b'{"job_type": "\xff"}', headers=_JSON)
    assert (not_utf8.status_code, not_utf8.json()["field"]) == (422, "body")


# ----------------------------------------------------------------------------- bad input: 422 naming the field

_JSON = {"content-type": "application/json"}
_BOM0 = {"hs_code": "290121", "origin_country": "FR", "value": 65}


def _case(name: str, method: str, path: str, field: str, **kwargs: Any) -> Any:
    return pytest.param(method, path, field, kwargs, id=name)


def _assess(name: str, field: str, **changes: Any) -> Any:
    return _case(name, "POST", "/api/assessments", field, json=assessment(A, **changes), headers=tenant(A))


def _without(*fields: str) -> dict[str, Any]:
    return {k: v for k, v in assessment(A).items() if k not in fields}


# fmt: off
BAD_INPUT = [
    # HS codes and search
    _case("hs-letters", "GET", "/api/hs/84x130", "code"),
    _case("hs-7-digits", "GET", "/api/hs/8471300", "code"),
    _case("search-no-q", "GET", "/api/hs/search", "q"),
    _case("search-short-q", "GET", "/api/hs/search", "q", params={"q": "a"}),
    _case("search-blank-q", "GET", "/api/hs/search", "q", params={"q": "   "}),
    _case("search-long-q", "GET", "/api/hs/search", "q", params={"q": "x" * 201}),
    _case("search-nul-q", "GET", "/api/hs/search", "q", params={"q": "ab\x00cd"}),
    _case("search-limit-0", "GET", "/api/hs/search", "limit", params={"q": "horse", "limit": 0}),
    _case("search-limit-neg", "GET", "/api/hs/search", "limit", params={"q": "horse", "limit": -5}),
    _case("search-limit-big", "GET", "/api/hs/search", "limit", params={"q": "horse", "limit": 201}),
    _case("search-limit-text", "GET", "/api/hs/search", "limit", params={"q": "horse", "limit": "ten"}),
    # rules
    _case("rules-no-agreement", "GET", "/api/rules", "agreement"),
    _case("rules-unknown-agreement", "GET", "/api/rules", "agreement", params={"agreement": "NOPE"}),
    _case("rules-nul-agreement", "GET", "/api/rules", "agreement", params={"agreement": "CE\x00TA"}),
    _case("rules-chapter-1-digit", "GET", "/api/rules", "chapter", params={"agreement": "CETA", "chapter": "3"}),
    _case("rules-chapter-letters", "GET", "/api/rules", "chapter", params={"agreement": "CETA", "chapter": "ab"}),
    _case("rule-id-nul", "GET", "/api/rules/CETA%00", "rule_id"),
    # synchronous assessment
    _case("assess-malformed-json", "POST", "/api/assessments", "body", content=b'{"hs_code": ',
          headers={**tenant(A), **_JSON}),
    _case("assess-array-body", "POST", "/api/assessments", "body", json=[], headers=tenant(A)),
    _case("assess-no-hs", "POST", "/api/assessments", "hs_code", json=_without("hs_code"), headers=tenant(A)),
    _assess("assess-hs-5-digits", "hs_code", hs_code="12345"),
    _assess("assess-hs-unknown", "hs_code", hs_code="010199"),
    _assess("assess-hs-list", "hs_code", hs_code=["390110"]),
    _assess("assess-bom-empty", "bill_of_materials", bill_of_materials=[]),
    _assess("assess-bom-negative", "bill_of_materials[0].value", bill_of_materials=[{**_BOM0, "value": -1}]),
    _assess("assess-bom-text-value", "bill_of_materials[0].value", bill_of_materials=[{**_BOM0, "value": "lots"}]),
    _assess("assess-bom-huge-value", "bill_of_materials[0].value", bill_of_materials=[{**_BOM0, "value": "1e400"}]),
    _assess("assess-bom-country", "bill_of_materials[0].origin_country",
            bill_of_materials=[{**_BOM0, "origin_country": "XX"}]),
    _assess("assess-bom-extra", "bill_of_materials[0].weight", bill_of_materials=[{**_BOM0, "weight": 3}]),
    _assess("assess-bom-nul-text", "bill_of_materials[0].description",
            bill_of_materials=[{**_BOM0, "description": "a\x00b"}]),
    _assess("assess-price-negative", "ex_works_price", ex_works_price=-5),
    _assess("assess-price-zero", "ex_works_price", ex_works_price=0),
    _assess("assess-price-huge", "ex_works_price", ex_works_price="1e400"),
    _assess("assess-price-tiny", "ex_works_price", ex_works_price="1e-400"),
    _assess("assess-price-max-exponent", "ex_works_price", ex_works_price="1e999999"),
    _case("assess-no-price", "POST", "/api/assessments", "ex_works_price", json=_without("ex_works_price"),
          headers=tenant(A)),
    _case("assess-no-agreement", "POST", "/api/assessments", "agreement_code", json=_without("agreement_code"),
          headers=tenant(A)),
    _assess("assess-unknown-agreement", "agreement_code", agreement_code="NOPE"),
    _assess("assess-nul-agreement", "agreement_code", agreement_code="CE\x00TA"),
    _assess("assess-unknown-rule", "rule_id", rule_id="NOPE-1"),
    _assess("assess-nul-rule", "rule_id", rule_id="CETA\x00", agreement_code=None),
    _assess("assess-origin-uk", "origin_country", origin_country="UK"),
    _assess("assess-origin-digits", "origin_country", origin_country="D1"),
    _assess("assess-same-party", "destination_country", destination_country="FR"),
    _assess("assess-tenant-not-uuid", "tenant_id", tenant_id="tenant-a"),
    _assess("assess-bad-date", "assessment_date", assessment_date="2024-13-01"),
    _assess("assess-bad-process", "processes[0]", processes=["bad op!"]),
    _assess("assess-extra-field", "foo", foo=1),
    # verdicts and tenants
    _case("recent-limit-0", "GET", "/api/verdicts/recent", "limit", params={"limit": 0}, headers=OPERATOR),
    _case("recent-limit-big", "GET", "/api/verdicts/recent", "limit", params={"limit": 1001}, headers=OPERATOR),
    _case("recent-limit-float", "GET", "/api/verdicts/recent", "limit", params={"limit": "2.5"}, headers=OPERATOR),
    _case("verdict-bad-uuid", "GET", "/api/verdicts/not-a-uuid", "evaluation_id", headers=tenant(A)),
    _case("history-bad-uuid", "GET", "/api/tenants/not-a-uuid/verdicts", "tenant_id", headers=tenant(A)),
    _case("history-limit-0", "GET", f"/api/tenants/{A}/verdicts", "limit", params={"limit": 0}, headers=tenant(A)),
    _case("dashboard-days-0", "GET", f"/api/tenants/{A}/dashboard", "days", params={"days": 0}, headers=tenant(A)),
    _case("dashboard-days-big", "GET", f"/api/tenants/{A}/dashboard", "days", params={"days": 3661},
          headers=tenant(A)),
    _case("dashboard-bad-until", "GET", f"/api/tenants/{A}/dashboard", "until", params={"until": "yesterday"},
          headers=tenant(A)),
    _case("dashboard-until-year-1", "GET", f"/api/tenants/{A}/dashboard", "until",
          params={"until": "0001-01-01T00:00:00"}, headers=tenant(A)),
    _case("duplicates-short-hash", "GET", f"/api/tenants/{A}/duplicates/abc", "input_hash", headers=tenant(A)),
    _case("duplicates-upper-hash", "GET", f"/api/tenants/{A}/duplicates/{'A' * 64}", "input_hash",
          headers=tenant(A)),
    _case("report-no-from", "GET", f"/api/tenants/{A}/trade-route-report", "date_from",
          params={"date_to": "2025-01-01"}, headers=tenant(A)),
    _case("report-from-after-to", "GET", f"/api/tenants/{A}/trade-route-report", "date_from",
          params={"date_from": "2025-02-01", "date_to": "2025-01-01"}, headers=tenant(A)),
    _case("report-bad-to", "GET", f"/api/tenants/{A}/trade-route-report", "date_to",
          params={"date_from": "2025-01-01", "date_to": "2025-02-30"}, headers=tenant(A)),
    _case("report-limit-big", "GET", f"/api/tenants/{A}/trade-route-report", "limit",
          params={"date_from": "2025-01-01", "date_to": "2025-02-01", "limit": 1001}, headers=tenant(A)),
    _case("route-export-digit", "GET", "/api/trade-routes/D1/CA", "export_country", headers=OPERATOR),
    _case("route-import-3-letters", "GET", "/api/trade-routes/DE/CAN", "import_country", headers=OPERATOR),
    _case("route-export-not-iso", "GET", "/api/trade-routes/XX/CA", "export_country", headers=OPERATOR),
    _case("route-import-not-iso", "GET", "/api/trade-routes/DE/ZZ", "import_country", headers=OPERATOR),
    # the job API
    _case("submit-malformed-json", "POST", "/api/jobs/submit", "body", content=b"{job_type", headers=_JSON),
    _case("submit-no-job-type", "POST", "/api/jobs/submit", "job_type", json={"payload": {}}),
    _case("submit-empty-job-type", "POST", "/api/jobs/submit", "job_type", json={"job_type": ""}),
    _case("submit-unknown-job-type", "POST", "/api/jobs/submit", "job_type", json={"job_type": "nope"}),
    _case("submit-bad-priority", "POST", "/api/jobs/submit", "priority",
          json={"job_type": "bulk_import", "priority": "urgent"}),
    _case("submit-negative-ttl", "POST", "/api/jobs/submit", "ttl_seconds",
          json={"job_type": "bulk_import", "ttl_seconds": -1}),
    _case("submit-text-ttl", "POST", "/api/jobs/submit", "ttl_seconds",
          json={"job_type": "bulk_import", "ttl_seconds": "soon"}),
    _case("submit-payload-list", "POST", "/api/jobs/submit", "payload",
          json={"job_type": "bulk_import", "payload": []}),
    _case("submit-extra-field", "POST", "/api/jobs/submit", "foo", json={"job_type": "bulk_import", "foo": 1}),
    _case("submit-assessment-payload", "POST", "/api/jobs/submit", "hs_code",
          json={"job_type": "assessment", "payload": {"origin_country": "MX", "destination_country": "US"}}),
    _case("submit-bulk-payload", "POST", "/api/jobs/submit", "items[0].code",
          json={"job_type": "bulk_import", "payload": {"items": [{"code": "84x1", "description": "d"}]}},
          headers=OPERATOR),
    _case("shortcut-malformed-json", "POST", "/api/jobs/assessment/submit", "body", content=b"[1,", headers=_JSON),
    _case("shortcut-bad-user", "POST", "/api/jobs/assessment/submit", "user_id", json={**assessment(A), "user_id": 7},
          headers=tenant(A)),
    _case("shortcut-bad-hs", "POST", "/api/jobs/assessment/submit", "hs_code", json=assessment(A, hs_code="84"),
          headers=tenant(A)),
    _case("shortcut-nul-agreement", "POST", "/api/jobs/assessment/submit", "agreement_code",
          json=assessment(A, agreement_code="CE\x00TA"), headers=tenant(A)),
    _case("bulk-malformed-json", "POST", "/api/jobs/bulk-import/submit", "body", content=b"{bad",
          headers={**OPERATOR, **_JSON}),
    _case("bulk-deep-json", "POST", "/api/jobs/bulk-import/submit", "body", content=b"[" * 100_000 + b"]" * 100_000,
          headers={**OPERATOR, **_JSON}),
    _case("bulk-array-body", "POST", "/api/jobs/bulk-import/submit", "body", json=[1, 2], headers=OPERATOR),
    _case("bulk-no-items", "POST", "/api/jobs/bulk-import/submit", "items", json={}, headers=OPERATOR),
    _case("bulk-empty-items", "POST", "/api/jobs/bulk-import/submit", "items", json={"items": []}, headers=OPERATOR),
    _case("bulk-no-description", "POST", "/api/jobs/bulk-import/submit", "items[0].description",
          json={"items": [{"code": "8471"}]}, headers=OPERATOR),
    _case("bulk-int-code", "POST", "/api/jobs/bulk-import/submit", "items[0].code",
          json={"items": [{"code": 847130, "description": "d"}]}, headers=OPERATOR),
    _case("bulk-letters-code", "POST", "/api/jobs/bulk-import/submit", "items[1].code",
          json={"items": [{"code": "8471", "description": "d"}, {"code": "abcd", "description": "d"}]},
          headers=OPERATOR),
    _case("bulk-5-digit-code", "POST", "/api/jobs/bulk-import/submit", "items[0].code",
          json={"items": [{"code": "84713", "description": "d"}]}, headers=OPERATOR),
    _case("bulk-nul-description", "POST", "/api/jobs/bulk-import/submit", "items[0].description",
          json={"items": [{"code": "8471", "description": "a\x00b"}]}, headers=OPERATOR),
    _case("bulk-extra-key", "POST", "/api/jobs/bulk-import/submit", "items[0].foo",
          json={"items": [{"code": "8471", "description": "d", "foo": 1}]}, headers=OPERATOR),
    _case("bulk-bad-priority", "POST", "/api/jobs/bulk-import/submit", "priority",
          json={"items": [{"code": "8471", "description": "d"}], "priority": "asap"}, headers=OPERATOR),
]
# fmt: on


@pytest.mark.parametrize(("method", "path", "field", "kwargs"), BAD_INPUT)
def test_bad_input_is_422_naming_the_field(
    client: httpx.Client, method: str, path: str, field: str, kwargs: dict[str, Any]
) -> None:
    r = client.request(method, path, **kwargs)
    assert r.status_code == 422, r.text
    doc = r.json()
    assert "field" in doc, f"422 without a field: {doc}"
    assert names(doc["field"], field), (doc["field"], field, doc["detail"])
    assert isinstance(doc["detail"], str) and doc["detail"]


# ----------------------------------------------------------------------------- never a 500

# fmt: off
_ODD: list[Any] = [None, True, False, -1, 0, 2**63, 10**40, -1e308, 1.5, "", " ", "\x00", "💥", "x" * 3000,
                   "NaN", "1e400", "../../etc/passwd", "' OR 1=1 --", "%s%n", "*", "hs:*", "2024-02-30", "847130",
                   "CETA", "DE", A, [], {}]
_FIELDS = ["hs_code", "bill_of_materials", "ex_works_price", "transaction_value", "net_cost", "agreement_code",
           "origin_country", "destination_country", "assessment_date", "tenant_id", "processes", "rule_id",
           "user_id", "job_type", "payload", "priority", "ttl_seconds", "items", "code", "description", "value"]
# fmt: on


def _junk(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 3 and roll < 0.25:
        return [_junk(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 3 and roll < 0.55:
        return {rng.choice(_FIELDS): _junk(rng, depth + 1) for _ in range(rng.randint(0, 6))}
    return rng.choice(_ODD)


def _junk_bodies(seed: int, n: int) -> list[Any]:
    rng = random.Random(seed)
    bodies: list[Any] = [_junk(rng) for _ in range(n)]
    base = assessment(A)
    for _ in range(n):  # nearly valid requests with one or two fields spoiled
        body = dict(base)
        for name in rng.sample(sorted(base), rng.randint(1, 2)):
            body[name] = _junk(rng, 2)
        bodies.append(body)
    return bodies


# fmt: off
RAW_BODIES = [b"", b"null", b"{", b"\xff\xfe", b"1" * 5000, b'{"items": ' + b"[" * 5000, b'"\\ud800"',
              b'{"items": [{"code": "8471", "description": "\\u0000"}]}', b"[" * 100_000]
# fmt: on


@pytest.mark.parametrize(
    "path", ["/api/assessments", "/api/jobs/submit", "/api/jobs/assessment/submit", "/api/jobs/bulk-import/submit"]
)
def test_junk_bodies_never_yield_a_500(client: httpx.Client, path: str) -> None:
    for body in _junk_bodies(seed=len(path), n=6):
        r = client.post(path, json=body, headers={**tenant(A), **OPERATOR})  # the response hook fails on any 5xx
        assert r.status_code in (200, 202, 400, 403, 413, 422), (body, r.status_code, r.text[:200])
        if r.status_code >= 400:
            assert isinstance(r.json()["detail"], str | list)
    for raw in RAW_BODIES:
        r = client.post(path, content=raw, headers={**tenant(A), **OPERATOR, **_JSON})
        assert 400 <= r.status_code < 500, (raw[:40], r.status_code)


# fmt: off
_SEGMENTS = ["%00", "%FF", "..%2F..", "x" * 2000, "%F0%9F%92%A5", "8471.30", "-1", "0", "1e9", "null", "%25", "*",
             str(uuid.uuid4()), A, "a" * 64, "DE"]
# fmt: on


@pytest.mark.parametrize("template", sorted(p for m, p in ROUTES if m == "get"))
def test_junk_paths_and_params_never_yield_a_500(client: httpx.Client, template: str) -> None:
    rng = random.Random(template)
    for _ in range(6):
        path = template
        while "{" in path:
            start, end = path.index("{"), path.index("}")
            path = path[:start] + rng.choice(_SEGMENTS) + path[end + 1 :]
        params = {
            k: rng.choice(_SEGMENTS)
            for k in rng.sample(["q", "limit", "agreement", "chapter", "days", "until", "date_from", "date_to"], 3)
        }
        r = client.get(path, params=params, headers={**tenant(rng.choice([A, B])), **OPERATOR})
        assert r.status_code < 500


def test_an_assessment_body_is_validated_once_per_day_and_only_small_ones_are_remembered() -> None:
    import json as _json

    from fastapi.exceptions import RequestValidationError

    from psra_bench.api import models
    from psra_bench.psra.assessment import input_hash

    me = A
    raw = _json.dumps(assessment(me)).encode()
    first = models.parse_assessment_body(raw)
    assert models.parse_assessment_body(raw) is first  # remembered: no second validation
    assert first.input_hash == input_hash(first.body)
    assert models.parse_assessment_body(raw + b" ") is not first  # other bytes: validated on their own
    padded = _json.dumps({**assessment(me), "processes": None}, indent=models.PARSED_BODY_BYTES).encode()
    assert len(padded) > models.PARSED_BODY_BYTES
    assert models.parse_assessment_body(padded) is not models.parse_assessment_body(padded)  # too big to keep
    bad = _json.dumps({**assessment(me), "hs_code": "12"}).encode()
    for _ in range(2):  # a refused body is refused every time, never remembered
        with pytest.raises(RequestValidationError) as refused:
            models.parse_assessment_body(bad)
        assert refused.value.errors()[0]["loc"][0] == "body"
    for i in range(models.PARSED_BODIES + 5):  # bounded: the oldest go first
        models.parse_assessment_body(raw + b" " * (i + 2))
    assert len(models._parsed) == models.PARSED_BODIES and models.parse_assessment_body(raw) is not first
