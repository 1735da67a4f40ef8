"""The OpenAPI document is the contract: schemathesis, every check, against the served app, in both configurations.

The app runs under uvicorn in a thread (``LiveApp`` of test_api) on a fresh database seeded with
500 verdicts (seed 1: the tenant the OpenAPI examples name owns some), twice on that database:
with an operator token (``PSRA_ADMIN_TOKEN``, sent with every request), and without one, where
the document has no operator routes, job types, credential or 401 (access.without_operator).
Without the token only the operations documented differently are run again (the job API's
four that take the token optionally): the others are the same operations on the same code, and
a test holds that they and their schemas are the same in both documents.
schemathesis reads each app's OpenAPI document (the one ``/openapi.json`` serves, which a test
compares) and, per operation, sends the schema's examples, its coverage
cases (boundaries, missing and wrong values) and fuzzed ones (seeded and derandomized, so a run is
reproducible), and applies all of its checks to each response: documented status codes, content
types and headers, response schemas, schema-violating requests rejected, schema-valid ones accepted,
required headers and the bearer scheme enforced, unsupported methods answered with 405.

One policy is ours. A request can match the schema and still name reference data that does not
exist (an HS code missing from the HS table, a country that is no party of the agreement) or
break a rule between two values (``date_from`` after ``date_to``): the
API answers those with a 422 naming the field, without the ``errors`` list of request validation.
``REFERENCE_FIELDS`` says, per operation, which fields such a 422 may name; any other 422 to a
schema-valid request — and any 422 from request validation — is a failure (``schema_valid_is_accepted``).
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.failures import Failure
from test_api import LiveApp, serving

from psra_bench.api.app import create_app
from psra_bench.api.models import EXAMPLE_TENANT
from psra_bench.db.seed import tenant_ids
from psra_bench.settings import LiveSettings, Settings

TOKEN = secrets.token_urlsafe(32)
#: Fuzzed cases per operation (the examples and coverage phases add their own).
MAX_EXAMPLES = 30

#: Operation -> the fields a 422 to a schema-valid request may name (checks against reference data).
_ASSESSMENT = ("hs_code", "agreement_code", "rule_id", "origin_country", "destination_country")
REFERENCE_FIELDS: dict[str, tuple[str, ...]] = {
    "POST /api/assessments": (*_ASSESSMENT, "bill_of_materials[*].hs_code"),
    "POST /api/jobs/assessment/submit": (*_ASSESSMENT, "bill_of_materials[*].hs_code"),
    # POST /api/jobs/submit: none. Its payload's schema is per job type, and its reference data is
    # checked when the job runs (an unknown rule ends the job FAILED), not when it is submitted.
    "GET /api/rules": ("agreement",),
    "GET /api/tenants/{tenant_id}/dashboard": ("until",),  # until - days must stay after year 1
    "GET /api/tenants/{tenant_id}/trade-route-report": ("date_from",),  # on or before date_to
}


def _matches(field: str, pattern: str) -> bool:
    if "[*]" in pattern:
        head, tail = pattern.split("[*]")
        middle = field[len(head) : len(field) - len(tail)]
        return field.startswith(head + "[") and field.endswith(tail) and middle[1:-1].isdigit()
    return field == pattern


def _refused(operation: str, status: int, body: str) -> Failure:
    message = f"a request that matches the schema got {status}: {body[:500]}"
    return Failure(operation=operation, title="Schema-valid request refused", message=message)


@schemathesis.check
def schema_valid_is_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """A positive case may get a 422 only naming a field of REFERENCE_FIELDS, never from request validation."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    label = f"{case.method.upper()} {case.operation.path}"
    try:
        body = response.json()
    except ValueError:
        raise _refused(label, response.status_code, response.text) from None
    allowed = REFERENCE_FIELDS.get(label, ())
    field = body.get("field") if isinstance(body, dict) else None
    if "errors" in body or not isinstance(field, str) or not any(_matches(field, p) for p in allowed):
        raise _refused(label, response.status_code, response.text)
    return True


@pytest.fixture(scope="module")
def contract_dsn(make_seeded_database: Callable[..., str]) -> str:
    """A fresh database with 500 seeded verdicts, shared by both configurations."""
    dsn = make_seeded_database(500, seed=1)
    assert EXAMPLE_TENANT in tenant_ids(200)
    return dsn


@pytest.fixture(scope="module")
def contract_api(settings: Settings, contract_dsn: str) -> Iterator[LiveApp]:
    """The app with an operator token."""
    with serving(settings.replace(db_dsn=contract_dsn), "contract", admin_token=TOKEN) as live:
        yield live


@pytest.fixture(scope="module")
def tenant_only_api(settings: Settings, contract_dsn: str) -> Iterator[LiveApp]:
    """The app without an operator token: operator access is off."""
    with serving(settings.replace(db_dsn=contract_dsn), "contract-off", admin_token=None) as live:
        yield live


def _config(token: str | None) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": 1,
            "headers": {"Authorization": f"Bearer {token}"} if token else {},
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
            # 422 is decided by schema_valid_is_accepted, which knows which 422s are about reference data.
            # A body over PSRA_MAX_BODY_BYTES (e.g. more than 10,000 BOM lines) is refused unread: 413, which
            # every route with a body documents and no schema can express.
            "checks": {
                "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "413", "422"]},
                "negative_data_rejection": {
                    "expected-statuses": ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422"]
                },
            },
        }
    )


@functools.cache
def _document(token: str | None) -> dict[str, Any]:
    """The app's OpenAPI document, built without serving it (the served one is compared in a test below)."""
    offline = LiveSettings(db_dsn="postgresql://offline@127.0.0.1:1/offline", admin_token=token)
    return create_app(offline).openapi()


def _operations(document: dict[str, Any]) -> dict[str, Any]:
    """``"METHOD /path"`` -> the operation object."""
    return {f"{m.upper()} {p}": op for p, ops in document["paths"].items() for m, op in ops.items()}


#: The operations the second configuration documents differently (the others are tested in the first).
CHANGED_WITHOUT_TOKEN = {
    label for label, op in _operations(_document(None)).items() if op != _operations(_document(TOKEN))[label]
}

# pytest 9 broke schemathesis.pytest.from_fixture (it renames the test node), so each schema is
# loaded from the document itself; every call goes to the served app (base_url).
schema = schemathesis.openapi.from_dict(_document(TOKEN), config=_config(TOKEN))
tenant_only_schema = schemathesis.openapi.from_dict(_document(None), config=_config(None)).include(
    lambda ctx: ctx.operation.label in CHANGED_WITHOUT_TOKEN
)

_HYPOTHESIS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,  # derandomized: no example database to replay from
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)


def test_the_served_documents_are_the_ones_tested(contract_api: LiveApp, tenant_only_api: LiveApp) -> None:
    for live, token in ((contract_api, TOKEN), (tenant_only_api, None)):
        with live.client() as client:
            assert client.get("/openapi.json").json() == _document(token)


def test_without_a_token_the_document_has_no_operator() -> None:
    full, tenant_only = _document(TOKEN), _document(None)
    assert set(_operations(full)) - set(_operations(tenant_only)) == {
        "GET /api/verdicts/recent",
        "GET /api/trade-routes/{export_country}/{import_country}",
        "POST /api/jobs/bulk-import/submit",
    }
    assert "securitySchemes" not in tenant_only["components"] and '"401"' not in json.dumps(tenant_only)
    # Every other operation and every schema they use is the same: the first configuration tests them.
    assert CHANGED_WITHOUT_TOKEN == {
        "POST /api/jobs/submit",
        "GET /api/jobs/health",
        "GET /api/jobs/{job_id}/status",
        "POST /api/jobs/{job_id}/cancel",
    }
    assert tenant_only["components"] == {k: v for k, v in full["components"].items() if k != "securitySchemes"}
    submit = tenant_only["paths"]["/api/jobs/submit"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert submit["properties"]["job_type"]["const"] == "assessment"
    variants = full["paths"]["/api/jobs/submit"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert [v["properties"]["job_type"]["const"] for v in variants["oneOf"]] == ["assessment", "bulk_import"]


def test_every_route_that_takes_a_body_documents_413() -> None:
    for token in (TOKEN, None):
        with_body = {label: op for label, op in _operations(_document(token)).items() if "requestBody" in op}
        assert len(with_body) == (4 if token else 3)
        assert all("413" in op["responses"] for op in with_body.values()), token


@schema.parametrize()
@_HYPOTHESIS
def test_the_api_keeps_its_openapi_contract(contract_api: LiveApp, case: Any) -> None:
    case.call_and_validate(base_url=contract_api.url, timeout=30)


@tenant_only_schema.parametrize()
@_HYPOTHESIS
def test_without_operator_access_the_api_keeps_its_contract(tenant_only_api: LiveApp, case: Any) -> None:
    case.call_and_validate(base_url=tenant_only_api.url, timeout=30)
