"""The spec's async job API (section 3): submit, status, cancel, health, and two shortcuts.

Who may submit, see and cancel which job is :mod:`psra_bench.api.access`: an assessment job is
its tenant's (``X-Tenant-ID``, which must equal a ``tenant_id`` in the body) or nobody's; every
other job type (``bulk_import`` rewrites the shared HS table) is the operator's.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import pydantic
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from psra_bench.api.access import (
    OPERATOR,
    OptionalTenantHeader,
    check_operator,
    job_visible,
    optional_operator,
    require_operator,
    submitting_owner,
)
from psra_bench.exceptions import JobNotFoundError
from psra_bench.psra.assessment import AssessmentInput, parse_input

__all__ = ["router", "SubmitJobRequest", "SubmitJobResponse", "BulkImportRequest", "AssessmentJobRequest"]

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

Priority = Literal["low", "normal", "high", "critical"]
TTL = Annotated[int, Field(ge=1, le=7 * 86_400, description="Seconds the job's state is kept after it ends")]
#: The largest bulk import one request may carry (larger bodies get 413).
MAX_BULK_ITEMS = 10_000


class SubmitJobRequest(BaseModel):
    """The spec's submit body."""

    model_config = ConfigDict(extra="forbid")
    job_type: Annotated[str, Field(min_length=1, max_length=64)]
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = "normal"
    ttl_seconds: TTL = 3600


class SubmitJobResponse(BaseModel):
    """The spec's submit response."""

    job_id: str
    status: str
    message: str


class AssessmentJobRequest(AssessmentInput):
    """The shortcut body: the spec's four fields (rule_id, hs_code, origin, destination); BOM, tenant... optional."""

    user_id: uuid.UUID | None = None


class HsImportItem(BaseModel):
    """One HS code to upsert."""

    model_config = ConfigDict(extra="forbid")
    code: Annotated[str, Field(min_length=2, max_length=12)]
    description: Annotated[str, Field(min_length=1, max_length=1000)]


class BulkImportRequest(BaseModel):
    """The bulk-import shortcut body."""

    model_config = ConfigDict(extra="forbid")
    items: list[HsImportItem] = Field(min_length=1)
    priority: Priority = "normal"
    ttl_seconds: TTL = 3600


def _queue(request: Request) -> Any:
    return request.app.state.psra.queue


async def _submit(
    request: Request,
    job_type: str,
    payload: dict[str, Any],
    priority: str,
    ttl: int,
    metadata: dict[str, Any] | None = None,
    owner: str | None = None,
) -> SubmitJobResponse:
    job_id = await _queue(request).submit(
        job_type, payload, priority=priority, ttl_seconds=ttl, metadata=metadata, owner=owner
    )
    return SubmitJobResponse(job_id=job_id, status="pending", message="Job submitted successfully")


#: Job types a tenant (or anyone, without a tenant) may submit; every other type is the operator's.
TENANT_JOB_TYPES = frozenset({"assessment"})


@router.post("/submit", status_code=202, response_model=SubmitJobResponse)
async def submit(
    request: Request, body: SubmitJobRequest, x_tenant_id: OptionalTenantHeader = None
) -> SubmitJobResponse:
    """Queue a job of a registered type: an assessment as its tenant's (or nobody's), any other type as the operator."""
    owner: str | None = None
    if body.job_type in TENANT_JOB_TYPES:
        owner = submitting_owner(parse_input(body.payload).tenant_id, x_tenant_id)
    elif body.job_type in _queue(request).handlers:  # an unknown type stays the queue's 422
        check_operator(request)
        owner = OPERATOR
    return await _submit(request, body.job_type, body.payload, body.priority, body.ttl_seconds, owner=owner)


@router.post("/assessment/submit", status_code=202, response_model=SubmitJobResponse)
async def submit_assessment(
    request: Request, body: AssessmentJobRequest, x_tenant_id: OptionalTenantHeader = None
) -> SubmitJobResponse:
    """Queue an assessment, checked now against the rules and HS table (a bad body is a 422, not a failed job)."""
    from psra_bench.psra.service import check_assessment

    owner = submitting_owner(body.tenant_id, x_tenant_id)
    await run_in_threadpool(check_assessment, request.app.state.psra.cached, body)
    payload = body.model_dump(mode="json", exclude={"user_id"}, exclude_none=True)
    metadata = {
        "tenant_id": str(body.tenant_id) if body.tenant_id else None,
        "user_id": str(body.user_id) if body.user_id else None,
    }
    return await _submit(request, "assessment", payload, "normal", 3600, metadata, owner)


@router.post(
    "/bulk-import/submit",
    status_code=202,
    response_model=SubmitJobResponse,
    dependencies=[Depends(require_operator)],
)
async def submit_bulk_import(request: Request) -> SubmitJobResponse:
    """Queue an HS code upsert (operator only: it rewrites shared reference data); over 10,000 items is a 413."""
    try:
        raw = await request.json()
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        error = {"loc": ("body",), "msg": "the body is not valid JSON", "type": "json"}
        raise RequestValidationError([error]) from None
    items = raw.get("items") if isinstance(raw, dict) else None
    if isinstance(items, list) and len(items) > MAX_BULK_ITEMS:
        raise HTTPException(
            status_code=413, detail=f"items has {len(items):,} entries; at most {MAX_BULK_ITEMS:,} per bulk import"
        )
    try:
        body = BulkImportRequest.model_validate(raw)
    except pydantic.ValidationError as e:
        raise RequestValidationError(e.errors()) from None
    payload = {"items": [i.model_dump() for i in body.items]}
    return await _submit(request, "bulk_import", payload, body.priority, body.ttl_seconds, owner=OPERATOR)


@router.get("/health")
async def health(request: Request, operator: Annotated[bool, Depends(optional_operator)]) -> dict[str, Any]:
    """Queue health: status for everyone; workers, running and queued jobs (across processes) for the operator."""
    doc: dict[str, Any] = await _queue(request).health()
    if not operator:
        return {"status": doc["status"], "service": doc["service"]}
    return doc


async def _visible_job(request: Request, job_id: str, tenant: uuid.UUID | None, operator: bool) -> Any:
    """The job's state if this caller may see it; else the same 404 as for a job that does not exist."""
    state = await _queue(request).get_job_status(job_id)
    if state is None or not job_visible(state.owner, tenant, operator):
        raise JobNotFoundError(job_id)
    return state


@router.get("/{job_id}/status")
async def status(
    request: Request,
    job_id: str,
    operator: Annotated[bool, Depends(optional_operator)],
    x_tenant_id: OptionalTenantHeader = None,
) -> dict[str, Any]:
    """A job's state, progress, timings, result or error (a tenant's job only for that tenant)."""
    state = await _visible_job(request, job_id, x_tenant_id, operator)
    out: dict[str, Any] = state.to_dict()
    return out


@router.post("/{job_id}/cancel")
async def cancel(
    request: Request,
    job_id: str,
    operator: Annotated[bool, Depends(optional_operator)],
    x_tenant_id: OptionalTenantHeader = None,
) -> dict[str, Any]:
    """Cancel a job: pending ones never start, running ones stop cooperatively (a tenant's job only for that tenant)."""
    await _visible_job(request, job_id, x_tenant_id, operator)  # the owner never changes once submitted
    result = await _queue(request).cancel(job_id)
    out: dict[str, Any] = result.to_dict()
    return out
