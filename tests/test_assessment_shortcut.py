"""The spec's assessment shortcut body over real HTTP: four fields, an honest verdict, bad input named.

``POST /api/jobs/assessment/submit`` (and ``POST /api/jobs/submit`` with ``job_type: assessment``)
take the spec's ``rule_id``, ``hs_code``, ``origin_country``, ``destination_country``. Without a bill
of materials and a price the verdict is ``insufficient_data`` naming the rule and each missing input;
with them it is the full evaluation; without a tenant nothing is stored. The app runs under uvicorn
with in-process workers on a fresh database and its own Redis namespace (``LiveApp`` of test_api).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from test_api import LiveApp, serving, wait_job

from psra_bench.settings import Settings

SPEC_BODY = {"rule_id": "USMCA-2024-01", "hs_code": "8471.30", "origin_country": "MX", "destination_country": "US"}
#: The CETA polyethylene example: qualifies under CETA-HS39-001 with this BOM, price and process.
CETA_BODY = {"rule_id": "CETA-HS39-001", "hs_code": "3901.10", "origin_country": "DE", "destination_country": "CA"}
CETA_INPUTS = {
    "assessment_date": "2024-06-01",
    "ex_works_price": 100,
    "processes": ["POLYMERIZATION"],
    "bill_of_materials": [
        {"hs_code": "290121", "origin_country": "FR", "value": 65},
        {"hs_code": "381519", "origin_country": "US", "value": 10},
    ],
}


@pytest.fixture(scope="module")
def app(settings: Settings, dsn: str) -> Iterator[LiveApp]:
    """The API with in-process job workers, on its own Redis namespace (deleted afterwards)."""
    with serving(settings.replace(db_dsn=dsn), "shortcut", run_workers=True) as live:
        yield live


@pytest.fixture
def client(app: LiveApp) -> Iterator[httpx.Client]:
    """An HTTP client of the app (fails the test on any 5xx)."""
    with app.client() as c:
        yield c


def stored(dsn: str, evaluation_id: str) -> int:
    """How many psra_verdicts rows have this evaluation id."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM psra_verdicts WHERE evaluation_id = %s", (evaluation_id,)).fetchone()
    assert row is not None
    return int(row[0])


def run(client: httpx.Client, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    """POST a job (as ``headers``), expect 202 and return the finished job's status document."""
    r = client.post(path, json=body, headers=headers)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "pending" and r.json()["message"] == "Job submitted successfully"
    return wait_job(client, r.json()["job_id"], headers=headers)


def test_spec_body_gives_an_honest_insufficient_data_verdict(client: httpx.Client, dsn: str) -> None:
    done = run(client, "/api/jobs/assessment/submit", SPEC_BODY)
    assert (done["status"], done["progress"], done["error"]) == ("completed", 100, None), done
    verdict = done["result"]
    assert (verdict["status"], verdict["rule_id"], verdict["tenant_id"]) == ("insufficient_data", "USMCA-2024-01", None)
    assert verdict["confidence"] == 0.0 and verdict["hs_code"] == "847130"
    messages = [r["message"] for r in verdict["reasons"]]
    assert len(messages) == 2 and all(m.startswith("USMCA-2024-01: ") for m in messages), messages
    shift, rvc = messages
    assert "CTSH" in shift and "not given: bill_of_materials." in shift
    assert "RVC (transaction-value) ≥ 60% needs transaction_value and the values of bill_of_materials" in rvc
    assert "not given: transaction_value, bill_of_materials." in rvc
    assert {r["code"] for r in verdict["reasons"]} == {"MISSING_BILL_OF_MATERIALS", "MISSING_INPUTS"}
    assert done["metadata"]["tenant_id"] is None and stored(dsn, verdict["evaluation_id"]) == 0
    assert done["metadata"]["owner"] is None  # no header: the job belongs to no tenant


def test_the_same_body_through_the_generic_submit(client: httpx.Client, dsn: str) -> None:
    # The spec's "Submit Job" example as written.
    body = {"job_type": "assessment", "payload": SPEC_BODY, "priority": "normal", "ttl_seconds": 3600}
    done = run(client, "/api/jobs/submit", body)
    assert done["status"] == "completed", done
    assert (done["result"]["status"], done["result"]["rule_id"]) == ("insufficient_data", "USMCA-2024-01")
    assert stored(dsn, done["result"]["evaluation_id"]) == 0


def test_a_rule_with_a_process_names_the_missing_processes(client: httpx.Client) -> None:
    done = run(client, "/api/jobs/assessment/submit", CETA_BODY)
    reasons = {r["code"]: r["message"] for r in done["result"]["reasons"]}
    assert done["result"]["status"] == "insufficient_data" and set(reasons) == {
        "MISSING_INPUTS",
        "PROCESS_DATA_MISSING",
    }
    assert reasons["MISSING_INPUTS"] == (
        "CETA-HS39-001: RVC (build-up) ≥ 60% needs ex_works_price (or transaction_value) and the values of "
        "bill_of_materials; not given: ex_works_price, bill_of_materials."
    )
    assert "CETA-HS39-001: the operations POLYMERIZATION are checked" in reasons["PROCESS_DATA_MISSING"]


def test_with_bom_price_and_tenant_the_full_evaluation_is_stored(client: httpx.Client, dsn: str) -> None:
    me, user = str(uuid.uuid4()), str(uuid.uuid4())
    body = {**CETA_BODY, **CETA_INPUTS, "tenant_id": me, "user_id": user}
    done = run(client, "/api/jobs/assessment/submit", body, headers={"X-Tenant-ID": me})
    verdict = done["result"]
    assert (verdict["status"], verdict["rule_id"], verdict["tenant_id"]) == ("qualified", "CETA-HS39-001", me)
    assert verdict["figures"]["rvc_percent"] == 65.0
    assert {"tenant_id": me, "user_id": user}.items() <= done["metadata"].items()
    assert stored(dsn, verdict["evaluation_id"]) == 1


def test_with_bom_and_price_but_no_tenant_nothing_is_stored(client: httpx.Client, dsn: str) -> None:
    done = run(client, "/api/jobs/assessment/submit", {**CETA_BODY, **CETA_INPUTS})
    verdict = done["result"]
    assert (verdict["status"], verdict["tenant_id"]) == ("qualified", None)
    assert stored(dsn, verdict["evaluation_id"]) == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"rule_id": "USMCA-2099-99"}, "rule_id"),  # no such rule
        ({"rule_id": "USMCA-2024-02"}, "rule_id"),  # exists, but covers HS 8703, not 847130
        ({"rule_id": "CETA-HS84-001"}, "origin_country"),  # exists, but MX is no party of CETA
        ({"hs_code": "8471.99"}, "hs_code"),  # well-formed, not in HS 2022
        ({"hs_code": "84"}, "hs_code"),  # not a subheading
        ({"origin_country": "XX"}, "origin_country"),  # not a country
        ({"origin_country": "CN"}, "origin_country"),  # not a party of USMCA
        ({"destination_country": "MX"}, "destination_country"),  # origin == destination
        ({"rule_id": None}, "agreement_code"),  # neither a rule nor an agreement
    ],
)
def test_bad_four_field_bodies_are_a_422_naming_the_field(
    client: httpx.Client, changes: dict[str, Any], field: str
) -> None:
    r = client.post("/api/jobs/assessment/submit", json={**SPEC_BODY, **changes})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and field in r.json()["detail"]


def test_a_submitted_job_whose_rule_is_unknown_fails_with_one_line(client: httpx.Client) -> None:
    payload = {**SPEC_BODY, "rule_id": "USMCA-2099-99"}
    done = run(client, "/api/jobs/submit", {"job_type": "assessment", "payload": payload})
    assert done["status"] == "failed" and done["result"] is None
    assert done["error"] == "rule_id='USMCA-2099-99' is not valid: the id of a rule in psra_rules."
    assert done["error_traceback"] is None


def test_the_synchronous_assessment_still_needs_the_full_body(client: httpx.Client) -> None:
    me = str(uuid.uuid4())
    r = client.post("/api/assessments", json={**SPEC_BODY, "tenant_id": me}, headers={"X-Tenant-ID": me})
    assert r.status_code == 422 and r.json()["field"] == "bill_of_materials"
