"""Who may call what: the tenant header, the operator token, and whose job a caller may see.

* A **tenant** names itself in the ``X-Tenant-ID`` header; a route that returns a tenant's rows
  needs it (a path or body naming another tenant is a 403, another tenant's verdict or job a 404).
* The **operator** sends ``Authorization: Bearer <PSRA_ADMIN_TOKEN>``. Cross-tenant routes need it:
  without ``PSRA_ADMIN_TOKEN`` configured they are off (404), and a missing or wrong token is a
  401 with ``WWW-Authenticate: Bearer``. Tokens are compared with :func:`hmac.compare_digest` and
  never echoed.
* A **job** belongs to whoever submitted it: ``tenant:{id}`` (the header), ``operator``, or
  nobody (no header). A tenant's job is visible to that tenant and the operator only, and looks
  to anyone else exactly like a job that does not exist; a job of nobody is visible to everyone.

The OpenAPI document says what this server does: without ``PSRA_ADMIN_TOKEN`` it has no operator
routes, no operator job types, no ``operator`` credential and no 401 (:func:`document_operator_access`).
"""

from __future__ import annotations

import copy
import hmac
import uuid
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import WithJsonSchema

from psra_bench.api.models import EXAMPLE_TENANT

__all__ = [
    "TENANT_HEADER",
    "OPERATOR",
    "TENANT_JOB_TYPES",
    "TenantHeader",
    "OptionalTenantHeader",
    "require_operator",
    "optional_operator",
    "check_operator",
    "tenant_owner",
    "submitting_owner",
    "job_visible",
    "same_tenant",
    "without_operator",
    "document_operator_access",
]

#: The header a tenant names itself with.
TENANT_HEADER = "X-Tenant-ID"
#: The owner label of jobs the operator submitted.
OPERATOR = "operator"
#: Job types a tenant (or anyone, without a tenant) may submit; every other type is the operator's.
TENANT_JOB_TYPES = frozenset({"assessment"})

TenantHeader = Annotated[
    uuid.UUID, Header(alias=TENANT_HEADER, description="The caller's tenant id", examples=[EXAMPLE_TENANT])
]
OptionalTenantHeader = Annotated[
    uuid.UUID | None,
    WithJsonSchema({"type": "string", "format": "uuid"}),  # a header is absent or a uuid, never null
    Header(alias=TENANT_HEADER, description="The caller's tenant id (needed for a tenant's own jobs)"),
]

#: Documents the operator credential in OpenAPI; the header itself is read in :func:`_operator`.
_bearer = HTTPBearer(
    auto_error=False, scheme_name="operator", description="Authorization: Bearer <PSRA_ADMIN_TOKEN> (operator only)"
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _operator(request: Request, required: bool) -> bool:
    """True for a correct operator token; raise 404 (operator access off) or 401 as the rules say."""
    expected = request.app.state.psra.settings.admin_token
    sent = request.headers.get("authorization")
    if expected is None:
        if required:
            raise HTTPException(
                status_code=404,
                detail="this route is operator-only and operator access is off on this server "
                "(PSRA_ADMIN_TOKEN is not set); tenants read their own rows under /api/tenants/{tenant_id}/.",
            )
        return False
    if sent is None:
        if required:
            raise HTTPException(
                status_code=401,
                detail="this route is operator-only: send the operator token as Authorization: Bearer <token>.",
                headers=_CHALLENGE,
            )
        return False
    scheme, _, token = sent.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            status_code=401,
            detail="the Authorization header is not a bearer token: send Authorization: Bearer <token>.",
            headers=_CHALLENGE,
        )
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise HTTPException(
            status_code=401,
            detail="the operator token is not valid: send the server's PSRA_ADMIN_TOKEN as Authorization: Bearer.",
            headers=_CHALLENGE,
        )
    return True


def check_operator(request: Request) -> None:
    """Refuse the request unless it carries the operator token (404 when operator access is off, else 401)."""
    _operator(request, required=True)


def require_operator(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None
) -> None:
    """Route dependency of the operator-only routes (see :func:`check_operator`)."""
    _operator(request, required=True)


def optional_operator(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None
) -> bool:
    """Route dependency: True with a correct operator token, False without one (a wrong one is a 401)."""
    return _operator(request, required=False)


def tenant_owner(tenant: uuid.UUID) -> str:
    """The owner label of a job a tenant submitted: ``tenant:{id}``."""
    return f"tenant:{tenant}"


def submitting_owner(body_tenant: uuid.UUID | None, header_tenant: uuid.UUID | None) -> str | None:
    """Who owns a submitted assessment job; a body naming a tenant needs the same X-Tenant-ID (403 otherwise)."""
    if body_tenant is not None:
        if header_tenant is None:
            raise HTTPException(
                status_code=403,
                detail="the body names a tenant_id but the X-Tenant-ID header is missing: send X-Tenant-ID "
                "with that tenant (a body without tenant_id needs no header and stores no verdict).",
            )
        if header_tenant != body_tenant:
            raise HTTPException(status_code=403, detail="X-Tenant-ID does not match tenant_id in the body")
    return tenant_owner(header_tenant) if header_tenant is not None else None


def job_visible(owner: str | None, tenant: uuid.UUID | None, operator: bool) -> bool:
    """Whether a caller (its X-Tenant-ID, whether it is the operator) may see a job of ``owner``."""
    if owner is None or operator:
        return True
    return tenant is not None and owner == tenant_owner(tenant)


def same_tenant(path_tenant: uuid.UUID, header_tenant: uuid.UUID) -> str:
    """The tenant of a ``/api/tenants/{tenant_id}/...`` route; a header naming another tenant is a 403."""
    if path_tenant != header_tenant:
        raise HTTPException(status_code=403, detail="X-Tenant-ID does not match the tenant in the path")
    return str(path_tenant)


#: The OpenAPI name of the operator credential (``components.securitySchemes``).
_SCHEME = "operator"


def _tenant_variants(schema: dict[str, Any]) -> dict[str, Any]:
    """A body schema without its operator job types (``oneOf`` variants whose ``job_type`` is not a tenant's)."""
    variants = schema.get("oneOf")
    if not isinstance(variants, list):
        return schema
    kept = [v for v in variants if v.get("properties", {}).get("job_type", {}).get("const", "") in TENANT_JOB_TYPES]
    return kept[0] if len(kept) == 1 else {**schema, "oneOf": kept}


def without_operator(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI ``document`` of a server without operator access (a copy; ``document`` is not changed).

    Operations that need the operator are gone (they answer 404); on the others the operator
    credential is no alternative any more, and a token is ignored, so they never answer 401; a
    job body keeps only the tenants' job types.
    """
    doc = copy.deepcopy(document)
    for path, operations in list(doc.get("paths", {}).items()):
        for method, op in list(operations.items()):
            security = op.get("security")
            if security is None:
                continue
            others = [s for s in security if _SCHEME not in s]
            if not others:  # operator only
                del operations[method]
                continue
            if others == [{}]:
                del op["security"]
            else:
                op["security"] = others
            op.get("responses", {}).pop("401", None)
            for content in op.get("requestBody", {}).get("content", {}).values():
                if "schema" in content:
                    content["schema"] = _tenant_variants(content["schema"])
        if not operations:
            del doc["paths"][path]
    schemes = doc.get("components", {}).get("securitySchemes", {})
    schemes.pop(_SCHEME, None)
    if not schemes:
        doc.get("components", {}).pop("securitySchemes", None)
    return doc


def document_operator_access(app: FastAPI, enabled: bool) -> None:
    """Make ``app``'s OpenAPI document match its operator access: :func:`without_operator` unless ``enabled``."""
    if enabled:
        return
    full = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:  # full() caches the whole document there; the cut one replaces it
            app.openapi_schema = without_operator(full())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
