"""PSRA read API and synchronous assessment: thin routes over the (async) cached DAL, the DAL and the assessment.

Routes a cache answers (HS lookups and search, rules, one verdict, the cached assessment) are
``async``: a hit is one Redis GET on the event loop, no thread hop. Routes that query PostgreSQL
and turn up to 1,000 rows into JSON (history, duplicates, and on a cache miss the dashboard, the
trade-route report and the trade-route analysis, cached under ``report:*``) are plain functions,
run in the thread pool: on the loop their row conversion would hold up every cached answer behind
it. Both halves were measured (README, "API efficiency").

Tenant-scoped routes need the caller's tenant in the ``X-Tenant-ID`` header and refuse (403) a
path naming another tenant; the two cross-tenant views (recent verdicts, trade-route analysis)
need the operator token (:mod:`psra_bench.api.access`), so no route returns another tenant's rows
to a tenant.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from psra_bench.api.access import TenantHeader, require_operator, same_tenant
from psra_bench.api.errors import responses
from psra_bench.api.models import (
    COUNTRY_SCHEMA,
    EXAMPLE_TENANT,
    HS_CODE_PATTERN,
    ApiAssessmentRequest,
    IsoDate,
    IsoDateTime,
    json_body,
    parse_assessment_body,
)
from psra_bench.api.responses import JsonBytes
from psra_bench.exceptions import InputError
from psra_bench.psra.assessment import ISO_COUNTRY_CODES

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["psra"])


def _state(request: Request) -> Any:
    return request.app.state.psra


#: ``/api/tenants/{tenant_id}/...``: the tenant, which must equal X-Tenant-ID.
TenantPath = Annotated[uuid.UUID, Path(description="The tenant; must equal X-Tenant-ID", examples=[EXAMPLE_TENANT])]


#: An ISO 3166-1 alpha-2 country code in a path (lower case is accepted too).
CountryPath = Annotated[str, Path(pattern=r"^[A-Za-z]{2}$", json_schema_extra={"enum": COUNTRY_SCHEMA["enum"]})]


@router.get("/hs/search", responses=responses(422))
async def hs_search(
    request: Request,
    q: Annotated[
        str,
        Query(
            min_length=2,
            max_length=200,
            pattern=r"^[^\x00]*[^\s\x00][^\x00]*[^\s\x00][^\x00]*$",
            description="Text to find in descriptions: 2 to 200 characters besides surrounding blanks, no NUL",
            examples=["horses"],
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> JsonBytes:
    """HS codes whose description contains ``q`` (cached: hs:search:{query}:{limit})."""
    return JsonBytes({"query": q, "results": await _state(request).acached.hs_search(q, limit)})


@router.get("/hs/{code}", responses=responses(404, 422))
async def hs_code(
    request: Request,
    code: Annotated[
        str, Path(max_length=64, pattern=HS_CODE_PATTERN, description="2, 4 or 6 digits", examples=["8471.30"])
    ],
) -> JsonBytes:
    """One HS code (cached: hs:code:{code})."""
    row = await _state(request).acached.hs_code_by_code(code)
    if row is None:
        raise HTTPException(status_code=404, detail=f"HS code {code!r} does not exist in HS 2022")
    return JsonBytes(dict(row))


@router.get("/agreements")
async def agreements(request: Request) -> JsonBytes:
    """The agreements that have rules."""
    return JsonBytes({"agreements": await _state(request).adal.agreements()})


@router.get("/rules", responses=responses(422))
async def rules(
    request: Request,
    agreement: Annotated[str, Query(min_length=2, max_length=16, pattern=r"^[A-Za-z0-9-]+$", examples=["CETA"])],
    chapter: Annotated[str | None, Query(pattern=r"^\d{2}$")] = None,
) -> JsonBytes:
    """Rules of an agreement, optionally of one HS chapter (cached: rules:agreement:{code})."""
    st = _state(request)
    agreement = agreement.upper()
    if chapter:
        rows = await st.acached.rules_by_agreement_chapter(agreement, chapter)
    else:
        rows = await st.acached.rules_by_agreement(agreement)
    if not rows:  # an unknown agreement, or a chapter it has no rules for
        known = [a["agreement_code"] for a in await st.adal.agreements()]
        if agreement not in known:
            raise InputError("agreement", agreement, "one of " + ", ".join(known))
    return JsonBytes({"agreement": agreement, "chapter": chapter, "rules": rows})


@router.get("/rules/{rule_id}", responses=responses(404, 422))
async def rule(
    request: Request,
    rule_id: Annotated[str, Path(max_length=32, pattern=r"^[A-Za-z0-9._-]+$", examples=["CETA-HS39-001"])],
) -> JsonBytes:
    """One rule (cached: rule:id:{rule_id})."""
    row = await _state(request).acached.rule_by_id(rule_id.upper())
    if row is None:
        raise HTTPException(status_code=404, detail=f"rule {rule_id!r} does not exist")
    return JsonBytes(dict(row))


@router.post("/assessments", responses=responses(403, 413, 422), openapi_extra=json_body(ApiAssessmentRequest))
async def assess(request: Request, x_tenant_id: TenantHeader) -> JsonBytes:
    """Assess a product synchronously, store the verdict, cache it (assessment:{rule}:{hs}:{o}:{d})."""
    from psra_bench.psra.service import assess_with_cache_async

    body, request_hash = parse_assessment_body(await request.body())  # a body seen before is not validated again
    if body.tenant_id != x_tenant_id:
        raise HTTPException(status_code=403, detail="X-Tenant-ID does not match tenant_id in the body")
    st = _state(request)
    return JsonBytes(await assess_with_cache_async(st.apool, st.acached, body, request_hash=request_hash))


@router.get("/verdicts/recent", dependencies=[Depends(require_operator)], responses=responses(401, 404, 422))
def recent_verdicts(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> JsonBytes:
    """The newest verdicts of all tenants (operator view; the spec's 100-row query)."""
    return JsonBytes({"verdicts": _state(request).dal.recent_verdicts(limit)})


@router.get("/verdicts/{evaluation_id}", responses=responses(404, 422))
async def verdict(request: Request, evaluation_id: uuid.UUID, x_tenant_id: TenantHeader) -> JsonBytes:
    """One verdict of the caller's tenant (cached: verdict:{evaluation_id}); others' are 404."""
    row = await _state(request).acached.verdict_by_evaluation_id(str(evaluation_id))
    if row is None or row.get("tenant_id") != str(x_tenant_id):
        raise HTTPException(status_code=404, detail=f"verdict {evaluation_id} does not exist for this tenant")
    return JsonBytes(dict(row))


@router.get("/tenants/{tenant_id}/verdicts", responses=responses(403, 422))
def tenant_history(
    request: Request,
    tenant_id: TenantPath,
    x_tenant_id: TenantHeader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JsonBytes:
    """A tenant's newest verdicts."""
    tid = same_tenant(tenant_id, x_tenant_id)
    return JsonBytes({"tenant_id": tid, "verdicts": _state(request).dal.tenant_verdict_history(tid, limit)})


@router.get("/tenants/{tenant_id}/duplicates/{input_hash}", responses=responses(403, 422))
def duplicate(
    request: Request,
    tenant_id: TenantPath,
    input_hash: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")],
    x_tenant_id: TenantHeader,
) -> JsonBytes:
    """Whether this tenant already has a verdict for the same input (duplicate detection)."""
    tid = same_tenant(tenant_id, x_tenant_id)
    row = _state(request).dal.duplicate_assessment(input_hash, tid)
    return JsonBytes({"tenant_id": tid, "input_hash": input_hash, "duplicate": row is not None, "verdict": row})


@router.get("/tenants/{tenant_id}/dashboard", responses=responses(403, 422))
def dashboard(
    request: Request,
    tenant_id: TenantPath,
    x_tenant_id: TenantHeader,
    days: Annotated[int, Query(ge=1, le=3660)] = 30,
    until: IsoDateTime | None = None,
) -> JsonBytes:
    """A tenant's verdict counts and mean confidence per status over the last ``days`` days.

    Cached under report:dashboard for CACHE_TTL_REPORTS seconds.
    """
    tid = same_tenant(tenant_id, x_tenant_id)
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=dt.UTC)
    return JsonBytes(
        {
            "tenant_id": tid,
            "days": days,
            "by_status": _state(request).cached.tenant_dashboard(tid, days, now=until),
        }
    )


@router.get("/tenants/{tenant_id}/trade-route-report", responses=responses(403, 422))
def trade_route_report(
    request: Request,
    tenant_id: TenantPath,
    x_tenant_id: TenantHeader,
    date_from: IsoDate,
    date_to: IsoDate,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> JsonBytes:
    """A tenant's verdicts per route and agreement between two effective dates.

    Cached under report:routes for CACHE_TTL_REPORTS seconds.
    """
    tid = same_tenant(tenant_id, x_tenant_id)
    return JsonBytes(
        {
            "tenant_id": tid,
            "date_from": date_from.isoformat(),
            "date_to": date_to.isoformat(),
            "routes": _state(request).cached.trade_route_report(tid, date_from, date_to, limit),
        }
    )


@router.get(
    "/trade-routes/{export_country}/{import_country}",
    dependencies=[Depends(require_operator)],
    responses=responses(401, 404, 422),
)
def trade_route(request: Request, export_country: CountryPath, import_country: CountryPath) -> JsonBytes:
    """Verdicts per status on one trade route, all tenants (operator view).

    Cached under report:trade-route for CACHE_TTL_REPORTS seconds.
    """
    for field, value in (("export_country", export_country), ("import_country", import_country)):
        if value.upper() not in ISO_COUNTRY_CODES:
            raise InputError(field, value, "a two-letter ISO 3166-1 country code such as DE")
    return JsonBytes(
        {
            "export_country": export_country.upper(),
            "import_country": import_country.upper(),
            "by_status": _state(request).cached.trade_route_analysis(export_country, import_country),
        }
    )
