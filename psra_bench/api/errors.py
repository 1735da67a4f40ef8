"""The API's one error body and the OpenAPI ``responses`` that document it, status by status.

Every refusal is ``{"detail": "<one sentence>"}``; a 422 also names the culprit in ``field`` (and,
when the request did not match its schema, lists each problem in ``errors``); an unknown job's
404 carries its ``job_id``. :func:`responses` puts this model under each status a route can return,
and replaces FastAPI's default ``HTTPValidationError`` 422, which this API never sends. A route whose
dependency is down answers :func:`unavailable`: a 503 naming the dependency, with ``Retry-After``.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

__all__ = ["FieldError", "ApiError", "responses", "unavailable", "DESCRIPTIONS", "RETRY_AFTER_SECONDS"]

#: Seconds a client is asked to wait (``Retry-After``) before it repeats a request that met a dependency down.
RETRY_AFTER_SECONDS = 1


class FieldError(BaseModel):
    """One problem with the request: where, and what is allowed there."""

    field: str = Field(description="The culprit: a body field (items[3].code), a query, path or header name, or body")
    message: str


class ApiError(BaseModel):
    """The body of every 4xx and 5xx answer of this API."""

    detail: str = Field(description="One sentence naming the bad value and what is allowed")
    field: str | None = Field(default=None, description="On a 422: the field at fault (see FieldError.field)")
    errors: list[FieldError] | None = Field(default=None, description="On a 422 from request validation: each problem")
    job_id: str | None = Field(default=None, description="On a 404 of the job API: the job that was asked for")


#: What each status means on this API (the description of the documented response).
DESCRIPTIONS: dict[int, str] = {
    400: "The request is well formed but cannot be carried out",
    401: "Operator-only: the operator token is missing or wrong (WWW-Authenticate: Bearer)",
    403: "The X-Tenant-ID header does not match the tenant the request names",
    404: "Not found (or not visible to this caller); operator routes while operator access is off",
    413: "The request body (or the bulk import) is over the limit",
    422: "A value is not allowed: `field` names it",
    503: "A dependency (Redis or PostgreSQL) is down",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` of a route that can answer each of ``statuses`` with an :class:`ApiError`."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ApiError, "description": DESCRIPTIONS[status]}
        if status == 401:
            entry["headers"] = {
                "WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string", "enum": ["Bearer"]}}
            }
        out[status] = entry
    return out


def unavailable(dependency: str, where: str, problem: str = "is not reachable") -> JSONResponse:
    """The 503 of a route whose ``dependency`` (at ``where``, host:port) is down: one sentence, and Retry-After."""
    return JSONResponse(
        status_code=503,
        content={"detail": f"{dependency} ({where}) {problem}; retry in {RETRY_AFTER_SECONDS} s"},
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
