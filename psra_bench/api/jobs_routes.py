"""The spec's async job API (section 3): submit, status, cancel, health, and two shortcuts.

Who may submit, see and cancel which job is :mod:`psra_bench.api.access`: an assessment job is
its tenant's (``X-Tenant-ID``, which must equal a ``tenant_id`` in the body) or nobody's; every
other job type (``bulk_import`` rewrites the shared HS table) is the operator's.

``POST /api/jobs/submit`` documents its ``payload`` per ``job_type`` (the job types of the
handlers create_app registers: the body of each shortcut), so a body that matches the schema is
queued and one that does not is a 422 naming the field, e.g. ``payload.hs_code``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import psycopg
import pydantic
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from psra_bench.api.access import (
    OPERATOR,
    OptionalTenantHeader,
    check_operator,
    job_visible,
    optional_operator,
    require_operator,
    submitting_owner,
)
from psra_bench.api.errors import responses
from psra_bench.api.models import (
    JOB_TYPES,
    AssessmentJob,
    AssessmentJobRequest,
    BulkImportJob,
    BulkImportRequest,
    SubmitJobRequest,
    json_body,
)
from psra_bench.exceptions import JobNotFoundError

__all__ = ["router", "SubmitJobRequest", "SubmitJobResponse", "Health", "MAX_BULK_ITEMS"]

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

#: The largest bulk import one request may carry (larger bodies get 413).
MAX_BULK_ITEMS = 10_000


class SubmitJobResponse(BaseModel):
    """The spec's submit response."""

    job_id: str
    status: str
    message: str


class Health(BaseModel):
    """``GET /api/jobs/health``: ``ok`` only when every dependency answers (else a 503 saying which is down)."""

    model_config = ConfigDict(extra="allow")  # the operator's view adds workers, queue lengths and handlers
    status: Literal["ok", "unavailable"]
    service: str
    dependencies: dict[str, Literal["ok", "down"]] = Field(description="redis and postgresql: ok or down")
    detail: str | None = Field(default=None, description="When unavailable: which dependency is down")


#: The operator token is optional on these routes (it widens what the caller may see).
_OPTIONAL_OPERATOR: dict[str, Any] = {"security": [{}]}
#: ``GET/POST /api/jobs/{job_id}/...``: any text; an unknown id is a 404.
JobId = Annotated[str, Path(description="The id submit returned", examples=["6f1c0d3e-2a4b-4c5d-8e9f-0a1b2c3d4e5f"])]
#: Validates the spec's submit body (a union on job_type: FastAPI would name the variant in each error's field).
_SUBMIT_BODY: TypeAdapter[AssessmentJob | BulkImportJob] = TypeAdapter(SubmitJobRequest)


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
    timeout: float | None = None,
) -> SubmitJobResponse:
    job_id = await _queue(request).submit(
        job_type, payload, priority=priority, ttl_seconds=ttl, metadata=metadata, owner=owner, timeout_seconds=timeout
    )
    return SubmitJobResponse(job_id=job_id, status="pending", message="Job submitted successfully")


async def _read_json(request: Request) -> Any:
    """The request's JSON body; a 422 naming ``body`` when it is not JSON."""
    try:
        return await request.json()
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        error = {"loc": ("body",), "msg": "the body is not valid JSON", "type": "json"}
        raise RequestValidationError([error]) from None


def _check_bulk_size(items: object) -> None:
    """Refuse a bulk import of more than MAX_BULK_ITEMS items with a 413, before its items are validated."""
    if isinstance(items, list) and len(items) > MAX_BULK_ITEMS:
        raise HTTPException(
            status_code=413, detail=f"items has {len(items):,} entries; at most {MAX_BULK_ITEMS:,} per bulk import"
        )


def _submit_error(error: Any) -> dict[str, Any]:
    """A validation error of the submit union, located as in the body: without the variant, job_type for the tag."""
    loc = list(error["loc"])
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        sent = (error.get("ctx") or {}).get("tag")
        got = "no job type was given" if sent is None else f"{sent!r} is not a job type of this server"
        return {**error, "loc": ("body", "job_type"), "msg": f"{got}; use one of {', '.join(JOB_TYPES)}"}
    if loc and loc[0] in JOB_TYPES:
        loc = loc[1:]
    field = (error.get("ctx") or {}).get("field")  # a model validator's error names its field in ctx
    if isinstance(field, str) and loc[-1:] != [field]:
        loc.append(field)
    return {**error, "loc": ("body", *loc)}


def _parse_submit(raw: Any) -> AssessmentJob | BulkImportJob:
    """The submit body as its job type's model; a RequestValidationError (the envelope's problems first) otherwise."""
    if isinstance(raw, dict) and raw.get("job_type") == "bulk_import" and isinstance(raw.get("payload"), dict):
        _check_bulk_size(raw["payload"].get("items"))
    try:
        return _SUBMIT_BODY.validate_python(raw)
    except pydantic.ValidationError as e:
        errors = [_submit_error(error) for error in e.errors()]
        errors.sort(key=lambda error: error["loc"][1:2] == ("payload",))  # the envelope's problems first
        raise RequestValidationError(errors) from None


def _assessment_job(body: AssessmentJobRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """The queued payload and metadata of an assessment job (the user id goes to metadata, not to the handler)."""
    payload = body.model_dump(mode="json", exclude={"user_id"}, exclude_none=True)
    metadata = {
        "tenant_id": str(body.tenant_id) if body.tenant_id else None,
        "user_id": str(body.user_id) if body.user_id else None,
    }
    return payload, metadata


@router.post(
    "/submit",
    status_code=202,
    response_model=SubmitJobResponse,
    responses=responses(401, 403, 404, 413, 422),
    openapi_extra={**_OPTIONAL_OPERATOR, **json_body(SubmitJobRequest)},
)
async def submit(
    request: Request, operator: Annotated[bool, Depends(optional_operator)], x_tenant_id: OptionalTenantHeader = None
) -> SubmitJobResponse:
    """Queue a job: an assessment as its tenant's (or nobody's), a bulk import as the operator (404 while that is off).

    The payload is checked against its job type's schema now; an assessment's rule and HS code are
    checked when it runs (an unknown rule ends the job FAILED), unlike the assessment shortcut's.
    """
    body = _parse_submit(await _read_json(request))
    if isinstance(body, AssessmentJob):  # the one job type of TENANT_JOB_TYPES
        owner = submitting_owner(body.payload.tenant_id, x_tenant_id)
        payload, metadata = _assessment_job(body.payload)
    else:
        if not operator:
            check_operator(request)
        owner, metadata = OPERATOR, None
        payload = body.payload.model_dump()
    return await _submit(
        request, body.job_type, payload, body.priority, body.ttl_seconds, metadata, owner, body.timeout_seconds
    )


@router.post(
    "/assessment/submit", status_code=202, response_model=SubmitJobResponse, responses=responses(403, 413, 422)
)
async def submit_assessment(
    request: Request, body: AssessmentJobRequest, x_tenant_id: OptionalTenantHeader = None
) -> SubmitJobResponse:
    """Queue an assessment, checked now against the rules and HS table (a bad body is a 422, not a failed job)."""
    from psra_bench.psra.service import check_assessment

    owner = submitting_owner(body.tenant_id, x_tenant_id)
    await run_in_threadpool(check_assessment, request.app.state.psra.cached, body)
    payload, metadata = _assessment_job(body)
    return await _submit(request, "assessment", payload, "normal", 3600, metadata, owner)


@router.post(
    "/bulk-import/submit",
    status_code=202,
    response_model=SubmitJobResponse,
    dependencies=[Depends(require_operator)],
    responses=responses(401, 404, 413, 422),
    openapi_extra=json_body(BulkImportRequest),
)
async def submit_bulk_import(request: Request) -> SubmitJobResponse:
    """Queue an HS code upsert (operator only: it rewrites shared reference data); over 10,000 items is a 413."""
    raw = await _read_json(request)
    _check_bulk_size(raw.get("items") if isinstance(raw, dict) else None)
    try:
        body = BulkImportRequest.model_validate(raw)
    except pydantic.ValidationError as e:
        raise RequestValidationError(e.errors()) from None
    payload = body.model_dump(include={"items"})
    return await _submit(request, "bulk_import", payload, body.priority, body.ttl_seconds, owner=OPERATOR)


def _database_down(pool: Any) -> bool:
    try:
        with pool.connection(timeout=HEALTH_TIMEOUT) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:  # PoolTimeout is one too
        return True
    return False


#: Seconds the health check waits for a PostgreSQL connection before it calls the database down.
HEALTH_TIMEOUT = 2.0


@router.get(
    "/health",
    response_model=Health,
    responses={
        **responses(401),
        503: {"model": Health, "description": "Redis or PostgreSQL is down: `dependencies` says which"},
    },
    openapi_extra=_OPTIONAL_OPERATOR,
)
async def health(request: Request, operator: Annotated[bool, Depends(optional_operator)]) -> Any:
    """Health of the queue's Redis and the API's PostgreSQL: 200 when both answer, 503 naming the one that is down.

    Everyone gets status, service and dependencies; the operator also workers, running and queued jobs.
    """
    doc: dict[str, Any] = await _queue(request).health()
    deps = {
        "redis": "ok" if doc["status"] == "ok" else "down",
        "postgresql": "down" if await run_in_threadpool(_database_down, request.app.state.psra.pool) else "ok",
    }
    down = [name for name, state in deps.items() if state == "down"]
    out: dict[str, Any] = {"status": "unavailable" if down else "ok", "service": doc["service"], "dependencies": deps}
    if down:
        names = {"redis": "the job queue's Redis", "postgresql": "the API's PostgreSQL database"}
        out["detail"] = " and ".join(names[n] for n in down) + (" is" if len(down) == 1 else " are") + " not reachable"
    if operator:
        out.update({k: v for k, v in doc.items() if k not in ("status", "error")})
    return JSONResponse(status_code=503 if down else 200, content=out)


async def _visible_job(request: Request, job_id: str, tenant: uuid.UUID | None, operator: bool) -> Any:
    """The job's state if this caller may see it; else the same 404 as for a job that does not exist."""
    state = await _queue(request).get_job_status(job_id)
    if state is None or not job_visible(state.owner, tenant, operator):
        raise JobNotFoundError(job_id)
    return state


@router.get("/{job_id}/status", responses=responses(401, 404, 422), openapi_extra=_OPTIONAL_OPERATOR)
async def status(
    request: Request,
    job_id: JobId,
    operator: Annotated[bool, Depends(optional_operator)],
    x_tenant_id: OptionalTenantHeader = None,
) -> dict[str, Any]:
    """A job's state, progress, timings, result or error (a tenant's job only for that tenant)."""
    state = await _visible_job(request, job_id, x_tenant_id, operator)
    out: dict[str, Any] = state.to_dict()
    return out


@router.post("/{job_id}/cancel", responses=responses(401, 404, 422), openapi_extra=_OPTIONAL_OPERATOR)
async def cancel(
    request: Request,
    job_id: JobId,
    operator: Annotated[bool, Depends(optional_operator)],
    x_tenant_id: OptionalTenantHeader = None,
) -> dict[str, Any]:
    """Cancel a job and say what happened (a tenant's job only for that tenant).

    ``outcome``: ``cancelled`` (it was pending and never starts), ``accepted`` (it was running and
    ends CANCELLED), ``already_finished`` (``status`` is its final status) or ``too_late`` (it passed
    its point of no return: its changes are being committed and it will finish).
    """
    await _visible_job(request, job_id, x_tenant_id, operator)  # the owner never changes once submitted
    result = await _queue(request).cancel(job_id)
    out: dict[str, Any] = result.to_dict()
    return out
