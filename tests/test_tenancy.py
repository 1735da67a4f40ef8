"""Tenant isolation on every route: a table of each route's rule, and real requests proving it.

``RULES`` names the tenant rule of every route of the app; ``test_every_route_has_a_rule`` fails
when a route is added (or removed) without a row here. The rules, proven over real HTTP against
an app served by uvicorn (``LiveApp`` of test_api) on a fresh database:

* ``path``: ``/api/tenants/{tenant_id}/…`` — the owner's header reads, another tenant's header is a
  403 that shows none of the owner's rows, no header a 422 naming X-Tenant-ID;
* ``header``: the tenant comes from X-Tenant-ID (and a body's ``tenant_id`` must equal it); another
  tenant's verdict or job is a 404 exactly like one that does not exist;
* ``operator``: ``Authorization: Bearer <PSRA_ADMIN_TOKEN>`` — 404 on an app without a token
  configured, 401 with ``WWW-Authenticate: Bearer`` for a missing or wrong one, 200/202 with it;
* ``public``: shared reference data, answered without any header.

The ``secured`` app has an operator token and no job workers (submitted jobs stay pending, so a
refused cancel can be checked afterwards without a race); the ``unsecured`` app has no token.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from test_api import LiveApp, assessment, serving, tenant

from psra_bench.settings import Settings

TOKEN = secrets.token_urlsafe(32)
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
A, B = str(uuid.uuid4()), str(uuid.uuid4())
SPEC_BODY = {"rule_id": "USMCA-2024-01", "hs_code": "8471.30", "origin_country": "MX", "destination_country": "US"}
_ITEM = {"code": "0101", "description": "Live horses, asses, mules and hinnies"}

#: (method, path) -> the route's tenant rule. Every route of the app must be here.
RULES: dict[tuple[str, str], str] = {
    ("GET", "/api/tenants/{tenant_id}/verdicts"): "path",
    ("GET", "/api/tenants/{tenant_id}/duplicates/{input_hash}"): "path",
    ("GET", "/api/tenants/{tenant_id}/dashboard"): "path",
    ("GET", "/api/tenants/{tenant_id}/trade-route-report"): "path",
    ("POST", "/api/assessments"): "header",
    ("GET", "/api/verdicts/{evaluation_id}"): "header",
    ("POST", "/api/jobs/assessment/submit"): "header",
    ("POST", "/api/jobs/submit"): "header",  # job_type assessment; every other job type is the operator's
    ("GET", "/api/jobs/{job_id}/status"): "header",
    ("POST", "/api/jobs/{job_id}/cancel"): "header",
    ("GET", "/api/verdicts/recent"): "operator",
    ("GET", "/api/trade-routes/{export_country}/{import_country}"): "operator",
    ("POST", "/api/jobs/bulk-import/submit"): "operator",
    ("GET", "/api/jobs/health"): "public",  # a plain status; its details are the operator's
    ("GET", "/api/hs/search"): "public",
    ("GET", "/api/hs/{code}"): "public",
    ("GET", "/api/agreements"): "public",
    ("GET", "/api/rules"): "public",
    ("GET", "/api/rules/{rule_id}"): "public",
    ("GET", "/openapi.json"): "public",
    ("GET", "/docs"): "public",
    ("GET", "/docs/oauth2-redirect"): "public",
    ("GET", "/redoc"): "public",
}


def _of(rule: str) -> list[tuple[str, str]]:
    return [route for route, r in RULES.items() if r == rule]


def _id(route: tuple[str, str]) -> str:
    return f"{route[0]} {route[1]}"


# ----------------------------------------------------------------------------- apps and data


def _serve(settings: Settings, dsn: str, name: str, token: str | None) -> Iterator[LiveApp]:
    with serving(settings.replace(db_dsn=dsn), f"tenancy-{name}", admin_token=token) as live:
        yield live


@pytest.fixture(scope="module")
def secured(settings: Settings, dsn: str) -> Iterator[LiveApp]:
    """The app with an operator token (PSRA_ADMIN_TOKEN) and no job workers."""
    yield from _serve(settings, dsn, "secured", TOKEN)


@pytest.fixture(scope="module")
def unsecured(settings: Settings, dsn: str) -> Iterator[LiveApp]:
    """The app without an operator token: its operator routes are off."""
    yield from _serve(settings, dsn, "unsecured", None)


@pytest.fixture
def client(secured: LiveApp) -> Iterator[httpx.Client]:
    """An HTTP client of the secured app (fails the test on any 5xx and on the token in a response)."""
    with secured.client() as c:
        yield c


@dataclass(frozen=True)
class Owned:
    """Rows and jobs of tenant B, made through the API, that tenant A must never reach."""

    evaluation_id: str
    input_hash: str
    job_id: str  # an assessment job of B (pending: no workers)
    free_job_id: str  # a job of nobody (the spec's four-field body, no header)


@pytest.fixture(scope="module")
def owned(secured: LiveApp) -> Owned:
    """B's verdict (synchronous assessment) and jobs, submitted as B and as nobody."""
    with secured.client() as c:
        r = c.post("/api/assessments", json=assessment(B), headers=tenant(B))
        assert r.status_code == 200, r.text
        verdict = r.json()
        job = c.post("/api/jobs/assessment/submit", json=assessment(B), headers=tenant(B))
        free = c.post("/api/jobs/assessment/submit", json=SPEC_BODY)
        assert (job.status_code, free.status_code) == (202, 202), (job.text, free.text)
    return Owned(verdict["evaluation_id"], verdict["input_hash"], job.json()["job_id"], free.json()["job_id"])


def _path_request(path: str, owned: Owned, t: str) -> tuple[str, dict[str, Any]]:
    url = path.replace("{tenant_id}", t).replace("{input_hash}", owned.input_hash)
    params = {"date_from": "2000-01-01", "date_to": "2100-01-01"} if url.endswith("trade-route-report") else {}
    return url, params


def _unknown_job_body(job_id: str) -> dict[str, Any]:
    return {"detail": f"job {job_id!r} does not exist (never submitted, or expired)", "job_id": job_id}


def _no_rows_of_b(r: httpx.Response, owned: Owned) -> None:
    assert B not in r.text and owned.evaluation_id not in r.text and owned.input_hash not in r.text


# ----------------------------------------------------------------------------- the table


def _served(routes: Any, prefix: str = "") -> set[tuple[str, str]]:
    """(method, path) of every route, including those of included routers (FastAPI keeps them nested)."""
    out: set[tuple[str, str]] = set()
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            out |= _served(included.routes, prefix + route.include_context.prefix)
            continue
        methods, path = getattr(route, "methods", None), getattr(route, "path", None)
        assert methods and path, f"a route this test cannot read: {route!r}"
        out |= {(m, prefix + path) for m in set(methods) - {"HEAD"}}
    return out


def _documented(c: httpx.Client) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, ops in c.get("/openapi.json").json()["paths"].items() for m in ops}


def test_every_route_has_a_rule(secured: LiveApp, unsecured: LiveApp, client: httpx.Client) -> None:
    served = _served(secured.app.routes)
    assert served == set(RULES), {
        "routes without a rule": served - set(RULES),
        "rules of no route": set(RULES) - served,
    }
    documented = _documented(client)
    assert documented <= served  # the walk above missed nothing OpenAPI knows
    for _, path in _of("path"):
        assert path.startswith("/api/tenants/{tenant_id}/"), path
    # Without a token the operator routes are still served (a 404 saying why) but not documented.
    assert _served(unsecured.app.routes) == served
    with unsecured.client() as uc:
        assert _documented(uc) == documented - set(_of("operator"))


# ----------------------------------------------------------------------------- tenant by path


@pytest.mark.parametrize("route", _of("path"), ids=_id)
def test_path_routes_answer_only_the_tenant_in_the_path(
    client: httpx.Client, owned: Owned, route: tuple[str, str]
) -> None:
    url, params = _path_request(route[1], owned, B)
    own = client.get(url, params=params, headers=tenant(B))
    assert own.status_code == 200 and own.json()["tenant_id"] == B, own.text
    other = client.get(url, params=params, headers=tenant(A))
    assert other.status_code == 403, other.text
    assert other.json() == {"detail": "X-Tenant-ID does not match the tenant in the path"}
    _no_rows_of_b(other, owned)
    missing = client.get(url, params=params)
    assert missing.status_code == 422 and missing.json()["field"].lower() == "x-tenant-id", missing.text
    # The operator token opens no tenant's path routes: they are the tenant's own.
    assert client.get(url, params=params, headers=OPERATOR).status_code == 422


# ----------------------------------------------------------------------------- tenant by header


def _check_assessments(c: httpx.Client, owned: Owned) -> None:
    assert c.post("/api/assessments", json=assessment(B), headers=tenant(B)).status_code == 200
    as_a = c.post("/api/assessments", json=assessment(B), headers=tenant(A))
    assert as_a.status_code == 403 and as_a.json() == {"detail": "X-Tenant-ID does not match tenant_id in the body"}
    missing = c.post("/api/assessments", json=assessment(B))
    assert missing.status_code == 422 and missing.json()["field"].lower() == "x-tenant-id"


def _check_verdict(c: httpx.Client, owned: Owned) -> None:
    url = f"/api/verdicts/{owned.evaluation_id}"
    assert c.get(url, headers=tenant(B)).json()["tenant_id"] == B
    as_a = c.get(url, headers=tenant(A))
    unknown = c.get(f"/api/verdicts/{uuid.uuid4()}", headers=tenant(A))
    assert (as_a.status_code, unknown.status_code) == (404, 404)
    assert as_a.json()["detail"].replace(owned.evaluation_id, "ID") == unknown.json()["detail"].replace(
        unknown.url.path.rsplit("/", 1)[1], "ID"
    )
    assert B not in as_a.text
    assert c.get(url).status_code == 422  # the header is required
    assert c.get(url, headers=OPERATOR).status_code == 422  # the operator reads verdicts via the recent view


def _check_submit_routes(c: httpx.Client, path: str, body_of: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """A body with a tenant needs that tenant's header; the spec's four fields need none."""
    as_b = c.post(path, json=body_of(assessment(B)), headers=tenant(B))
    assert as_b.status_code == 202, as_b.text
    as_a = c.post(path, json=body_of(assessment(B)), headers=tenant(A))
    assert as_a.status_code == 403 and as_a.json() == {"detail": "X-Tenant-ID does not match tenant_id in the body"}
    missing = c.post(path, json=body_of(assessment(B)))
    assert missing.status_code == 403 and "X-Tenant-ID header is missing" in missing.json()["detail"]
    with_operator = c.post(path, json=body_of(assessment(B)), headers=OPERATOR)
    assert with_operator.status_code == 403  # the operator does not submit as a tenant
    free = c.post(path, json=body_of(SPEC_BODY))
    assert free.status_code == 202, free.text
    state = c.get(f"/api/jobs/{free.json()['job_id']}/status").json()
    assert state["metadata"]["owner"] is None  # no tenant: anyone may read it
    mine = c.post(path, json=body_of(SPEC_BODY), headers=tenant(A))  # a header without a body tenant
    job = mine.json()["job_id"]
    assert c.get(f"/api/jobs/{job}/status", headers=tenant(A)).json()["metadata"]["owner"] == f"tenant:{A}"
    assert c.get(f"/api/jobs/{job}/status").status_code == 404  # it is A's job: invisible without A's header
    status = c.get(f"/api/jobs/{as_b.json()['job_id']}/status", headers=tenant(B)).json()
    assert status["metadata"]["owner"] == f"tenant:{B}"


def _check_shortcut(c: httpx.Client, owned: Owned) -> None:
    _check_submit_routes(c, "/api/jobs/assessment/submit", lambda body: body)


def _check_generic_submit(c: httpx.Client, owned: Owned) -> None:
    _check_submit_routes(c, "/api/jobs/submit", lambda body: {"job_type": "assessment", "payload": body})
    # Any other job type (bulk_import rewrites the shared HS table) is the operator's.
    bulk = {"job_type": "bulk_import", "payload": {"items": [_ITEM]}}
    for headers in ({}, tenant(A), {"Authorization": "Bearer wrong-token-wrong-token"}):
        r = c.post("/api/jobs/submit", json=bulk, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
    ok = c.post("/api/jobs/submit", json=bulk, headers=OPERATOR)
    assert ok.status_code == 202
    job = ok.json()["job_id"]
    assert c.get(f"/api/jobs/{job}/status", headers=OPERATOR).json()["metadata"]["owner"] == "operator"
    assert c.get(f"/api/jobs/{job}/status", headers=tenant(A)).json() == _unknown_job_body(job)


def _check_status(c: httpx.Client, owned: Owned) -> None:
    url = f"/api/jobs/{owned.job_id}/status"
    assert c.get(url, headers=tenant(B)).json()["metadata"]["tenant_id"] == B
    for headers in (tenant(A), {}):
        r = c.get(url, headers=headers)
        assert r.status_code == 404 and r.json() == _unknown_job_body(owned.job_id), r.text
        assert "www-authenticate" not in r.headers
    unknown = str(uuid.uuid4())
    assert c.get(f"/api/jobs/{unknown}/status", headers=tenant(A)).json() == _unknown_job_body(unknown)
    assert c.get(url, headers=OPERATOR).json()["metadata"]["tenant_id"] == B  # the operator sees every job
    assert c.get(url, headers={**tenant(B), "Authorization": "Bearer nope-nope-nope-nope"}).status_code == 401
    for headers in (tenant(A), tenant(B), {}):  # a job of nobody: anyone
        assert c.get(f"/api/jobs/{owned.free_job_id}/status", headers=headers).json()["status"] == "pending"


def _check_cancel(c: httpx.Client, owned: Owned) -> None:
    job = c.post("/api/jobs/assessment/submit", json=assessment(B), headers=tenant(B)).json()["job_id"]
    for headers in (tenant(A), {}):
        r = c.post(f"/api/jobs/{job}/cancel", headers=headers)
        assert r.status_code == 404 and r.json() == _unknown_job_body(job), r.text
    unknown = str(uuid.uuid4())
    assert c.post(f"/api/jobs/{unknown}/cancel", headers=tenant(A)).json() == _unknown_job_body(unknown)
    # The refused cancels changed nothing (no workers: the job can only be pending).
    assert c.get(f"/api/jobs/{job}/status", headers=tenant(B)).json()["status"] == "pending"
    done = c.post(f"/api/jobs/{job}/cancel", headers=tenant(B))
    assert (done.status_code, done.json()["status"]) == (200, "cancelled")
    free = c.post("/api/jobs/assessment/submit", json=SPEC_BODY).json()["job_id"]
    assert c.post(f"/api/jobs/{free}/cancel", headers=tenant(A)).json()["status"] == "cancelled"  # nobody's job
    by_operator = c.post("/api/jobs/assessment/submit", json=assessment(B), headers=tenant(B)).json()["job_id"]
    assert c.post(f"/api/jobs/{by_operator}/cancel", headers=OPERATOR).json()["status"] == "cancelled"


HEADER_CHECKS: dict[tuple[str, str], Callable[[httpx.Client, Owned], None]] = {
    ("POST", "/api/assessments"): _check_assessments,
    ("GET", "/api/verdicts/{evaluation_id}"): _check_verdict,
    ("POST", "/api/jobs/assessment/submit"): _check_shortcut,
    ("POST", "/api/jobs/submit"): _check_generic_submit,
    ("GET", "/api/jobs/{job_id}/status"): _check_status,
    ("POST", "/api/jobs/{job_id}/cancel"): _check_cancel,
}


@pytest.mark.parametrize("route", _of("header"), ids=_id)
def test_header_routes_keep_each_tenant_to_itself(client: httpx.Client, owned: Owned, route: tuple[str, str]) -> None:
    HEADER_CHECKS[route](client, owned)


# ----------------------------------------------------------------------------- operator only

#: A request each operator route answers with 2xx for the operator.
OPERATOR_REQUESTS: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("GET", "/api/verdicts/recent"): ("/api/verdicts/recent", {"params": {"limit": 1000}}),
    ("GET", "/api/trade-routes/{export_country}/{import_country}"): ("/api/trade-routes/DE/CA", {}),
    ("POST", "/api/jobs/bulk-import/submit"): ("/api/jobs/bulk-import/submit", {"json": {"items": [_ITEM]}}),
}


@pytest.mark.parametrize("route", _of("operator"), ids=_id)
def test_operator_routes_need_the_token(
    client: httpx.Client, unsecured: LiveApp, owned: Owned, route: tuple[str, str]
) -> None:
    method, _ = route
    url, kwargs = OPERATOR_REQUESTS[route]
    refused = [
        {},
        tenant(B),
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ]
    for headers in refused:
        r = client.request(method, url, headers=headers, **kwargs)
        assert r.status_code == 401, (headers.keys(), r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert set(r.json()) == {"detail"} and "Authorization: Bearer" in r.json()["detail"]
        _no_rows_of_b(r, owned)
    ok = client.request(method, url, headers=OPERATOR, **kwargs)
    assert ok.status_code in (200, 202), ok.text
    if url == "/api/verdicts/recent":  # the cross-tenant view holds B's verdict
        assert owned.evaluation_id in {v["evaluation_id"] for v in ok.json()["verdicts"]}
    # Without PSRA_ADMIN_TOKEN configured the route is off: 404, whatever is sent.
    with unsecured.client() as uc:
        for headers in ({}, OPERATOR, tenant(B)):
            off = uc.request(method, url, headers=headers, **kwargs)
            assert off.status_code == 404 and "PSRA_ADMIN_TOKEN is not set" in off.json()["detail"], off.text
            assert "www-authenticate" not in off.headers


# ----------------------------------------------------------------------------- public

PUBLIC_REQUESTS: dict[tuple[str, str], str] = {
    ("GET", "/api/jobs/health"): "/api/jobs/health",
    ("GET", "/api/hs/search"): "/api/hs/search?q=horses",
    ("GET", "/api/hs/{code}"): "/api/hs/847130",
    ("GET", "/api/agreements"): "/api/agreements",
    ("GET", "/api/rules"): "/api/rules?agreement=CETA",
    ("GET", "/api/rules/{rule_id}"): "/api/rules/CETA-HS39-001",
    ("GET", "/openapi.json"): "/openapi.json",
    ("GET", "/docs"): "/docs",
    ("GET", "/docs/oauth2-redirect"): "/docs/oauth2-redirect",
    ("GET", "/redoc"): "/redoc",
}


@pytest.mark.parametrize("route", _of("public"), ids=_id)
def test_public_routes_need_no_header(
    client: httpx.Client, unsecured: LiveApp, owned: Owned, route: tuple[str, str]
) -> None:
    url = PUBLIC_REQUESTS[route]
    r = client.get(url)
    assert r.status_code == 200, r.text
    _no_rows_of_b(r, owned)
    with unsecured.client() as uc:
        assert uc.get(url).status_code == 200


#: What everyone may read of a healthy app's /api/jobs/health.
PUBLIC_HEALTH = {"status": "ok", "service": "async_job_queue", "dependencies": {"redis": "ok", "postgresql": "ok"}}


def test_health_details_are_the_operators(client: httpx.Client, unsecured: LiveApp) -> None:
    assert client.get("/api/jobs/health").json() == PUBLIC_HEALTH
    assert client.get("/api/jobs/health", headers=tenant(A)).json() == PUBLIC_HEALTH
    full = client.get("/api/jobs/health", headers=OPERATOR).json()
    assert {"registered_handlers", "queued_jobs", "workers", "running_jobs"} <= set(full)
    wrong = client.get("/api/jobs/health", headers={"Authorization": "Bearer not-the-token-at-all"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    with unsecured.client() as uc:  # no operator on this app: the plain status, whatever is sent
        assert uc.get("/api/jobs/health", headers=OPERATOR).json() == PUBLIC_HEALTH


def test_openapi_documents_the_operator_credential(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["operator"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <PSRA_ADMIN_TOKEN> (operator only)",
    }
    for _, path in _of("operator"):
        ops = doc["paths"][path]
        assert all(op.get("security") == [{"operator": []}] for op in ops.values()), path
    assert TOKEN not in client.get("/openapi.json").text


def test_without_a_token_operator_job_types_are_off(unsecured: LiveApp) -> None:
    bulk = {"job_type": "bulk_import", "payload": {"items": [_ITEM]}}
    with unsecured.client() as uc:
        for headers in ({}, OPERATOR, tenant(B)):
            off = uc.post("/api/jobs/submit", json=bulk, headers=headers)
            assert off.status_code == 404 and "PSRA_ADMIN_TOKEN is not set" in off.json()["detail"], off.text


def test_without_a_token_openapi_has_no_operator(unsecured: LiveApp) -> None:
    with unsecured.client() as uc:
        doc = uc.get("/openapi.json").json()
    assert "securitySchemes" not in doc["components"]
    for ops in doc["paths"].values():
        assert all("security" not in op and "401" not in op["responses"] for op in ops.values())
    submit = doc["paths"]["/api/jobs/submit"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert submit["properties"]["job_type"] == {"const": "assessment", "title": "Job Type", "type": "string"}
