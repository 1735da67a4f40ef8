"""The API's request bodies, with every constraint the server enforces written into their JSON schema.

The domain models (:mod:`psra_bench.psra.assessment`) validate with Python functions (an HS code
may be written ``8471.30``, a country in lower case); their generated schema says only ``string``.
The subclasses here validate exactly the same way and add what those functions accept — patterns,
enums, bounds, "an agreement or a rule", "a price" — so a request that matches the OpenAPI
document passes request validation. What the schema cannot say (an HS code missing from the HS
table, a country that is not a party of the agreement) is checked against reference data and
refused with a 422 that names the field but has no ``errors`` list.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated, Any, Literal, NamedTuple, get_args

import pydantic
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

from psra_bench.db.seed import tenant_ids
from psra_bench.psra.assessment import (
    ISO_COUNTRY_CODES,
    MAX_AMOUNT,
    MIN_PRICE,
    AssessmentInput,
    AssessmentRequest,
    BomLine,
    input_hash,
)

__all__ = [
    "COUNTRY_SCHEMA",
    "HS_SUBHEADING_SCHEMA",
    "HS_CODE_PATTERN",
    "EXAMPLE_TENANT",
    "ApiBomLine",
    "ApiAssessmentRequest",
    "AssessmentJobRequest",
    "HsImportItem",
    "BulkImportItems",
    "BulkImportRequest",
    "JobTtl",
    "JobOptions",
    "AssessmentJob",
    "BulkImportJob",
    "SubmitJobRequest",
    "JOB_TYPES",
    "inline_schema",
    "json_body",
    "parse_assessment_body",
    "ParsedAssessment",
    "PARSED_BODIES",
    "PARSED_BODY_BYTES",
    "Priority",
    "IsoDate",
    "IsoDateTime",
]

#: The first synthetic tenant of ``psra-bench seed`` (the OpenAPI examples use it).
EXAMPLE_TENANT = tenant_ids(1)[0]
#: An ISO 3166-1 alpha-2 code in upper case (lower case is accepted too, and upper-cased).
COUNTRY_SCHEMA: dict[str, Any] = {"type": "string", "enum": sorted(ISO_COUNTRY_CODES)}
#: A 6-digit HS subheading: digits with dots and spaces between them (a JSON integer is accepted too).
HS_SUBHEADING_SCHEMA: dict[str, Any] = {"type": "string", "pattern": r"^\s*[. ]*(?:[0-9][. ]*){6}\s*$", "maxLength": 64}
#: An HS code of 2, 4 or 6 digits, dots and spaces allowed (the path of ``GET /api/hs/{code}``).
HS_CODE_PATTERN = r"^[. ]*(?:[0-9][. ]*){2}(?:(?:[0-9][. ]*){2}){0,2}$"
#: A price: > 0 and ≤ 10^15 (ratios of amounts to it stay finite floats).
_PRICE: dict[str, Any] = {"type": "number", "minimum": float(MIN_PRICE), "maximum": float(MAX_AMOUNT)}
#: An amount: 0, or 10^-20 … 10^15 (an amount is a decimal of at most 40 digits, so nothing smaller).
_AMOUNT: dict[str, Any] = {
    "anyOf": [{"type": "number", "enum": [0]}, {"type": "number", "minimum": 1e-20, "maximum": float(MAX_AMOUNT)}]
}
_PROCESSES: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_ -]*$"},
}
#: What AssessmentInput's validators accept, field by field (None: the generated schema is exact).
_INPUT_FIELDS: dict[str, dict[str, Any]] = {
    "hs_code": HS_SUBHEADING_SCHEMA,
    "origin_country": COUNTRY_SCHEMA,
    "destination_country": COUNTRY_SCHEMA,
    # "" and null both mean "not given".
    "agreement_code": {"anyOf": [{"type": "string", "pattern": r"^[A-Za-z0-9-]*$", "maxLength": 16}, {"type": "null"}]},
    "rule_id": {"anyOf": [{"type": "string", "pattern": r"^[A-Za-z0-9._-]*$", "maxLength": 32}, {"type": "null"}]},
    "processes": {"anyOf": [_PROCESSES, {"type": "null"}]},
    "ex_works_price": {"anyOf": [_PRICE, {"type": "null"}]},
    "transaction_value": {"anyOf": [_PRICE, {"type": "null"}]},
    "net_cost": {"anyOf": [_PRICE, {"type": "null"}]},
}
#: "An agreement or a rule" (AssessmentInput's model validator) and "a price" (AssessmentRequest's).
_AGREEMENT_OR_RULE: dict[str, Any] = {
    "anyOf": [
        {"required": [name], "properties": {name: {"type": "string", "minLength": 1}}}
        for name in ("agreement_code", "rule_id")
    ]
}
_A_PRICE: dict[str, Any] = {
    "anyOf": [
        {"required": [name], "properties": {name: {"type": "number"}}}
        for name in ("ex_works_price", "transaction_value")
    ]
}
_EXAMPLE = {
    "hs_code": "3901.10",
    "agreement_code": "CETA",
    "origin_country": "DE",
    "destination_country": "CA",
    "assessment_date": "2024-06-01",
    "tenant_id": EXAMPLE_TENANT,
    "ex_works_price": 100,
    "processes": ["POLYMERIZATION"],
    "bill_of_materials": [
        {"hs_code": "290121", "origin_country": "FR", "value": 65},
        {"hs_code": "381519", "origin_country": "US", "value": 10},
    ],
}


def _iso_text(value: object) -> object:
    """Refuse what pydantic would read as a Unix time (``0``, ``"0.5"``): dates are ISO 8601 text here."""
    if not isinstance(value, str | dt.date) or (isinstance(value, str) and not re.match(r"\s*[0-9]{4}-", value)):
        raise ValueError("use an ISO 8601 date such as 2025-01-31 (or a date-time such as 2025-01-31T12:00:00Z)")
    return value


#: A date as ISO 8601 text (``2025-01-31``); a number is refused, though pydantic would read it as Unix time.
IsoDate = Annotated[dt.date, BeforeValidator(_iso_text)]
#: A date-time as ISO 8601 text.
IsoDateTime = Annotated[dt.datetime, BeforeValidator(_iso_text)]


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _documented(fields: dict[str, dict[str, Any]], **extra: Any) -> Callable[[dict[str, Any]], None]:
    """A ``json_schema_extra`` that writes ``fields``' real constraints into the generated schema."""

    def patch(schema: dict[str, Any]) -> None:
        props = schema.get("properties", {})
        for name, field_schema in fields.items():
            if name in props:
                title = props[name].get("title")
                props[name] = {**({"title": title} if title else {}), **field_schema}
        schema.update(extra)

    return patch


class ApiBomLine(BomLine):
    """One input of the bill of materials (:class:`BomLine`, its constraints written into the schema)."""

    model_config = ConfigDict(
        json_schema_extra=_documented(
            {"hs_code": HS_SUBHEADING_SCHEMA, "origin_country": COUNTRY_SCHEMA, "value": _AMOUNT}
        )
    )


_Bom = Annotated[tuple[ApiBomLine, ...], Field(min_length=1, max_length=10_000)]


class AssessmentJobRequest(AssessmentInput):
    """The job shortcut's body: the spec's four fields (rule_id, hs_code, origin, destination); BOM, tenant optional."""

    model_config = ConfigDict(json_schema_extra=_documented(_INPUT_FIELDS, **_AGREEMENT_OR_RULE, examples=[_EXAMPLE]))

    bill_of_materials: _Bom | None = None
    assessment_date: IsoDate = Field(default_factory=_today)
    user_id: uuid.UUID | None = None


class ApiAssessmentRequest(AssessmentRequest):
    """The synchronous assessment body (:class:`AssessmentRequest`): bill of materials, a price and the tenant."""

    model_config = ConfigDict(
        json_schema_extra=_documented(_INPUT_FIELDS, allOf=[_AGREEMENT_OR_RULE, _A_PRICE], examples=[_EXAMPLE])
    )

    bill_of_materials: _Bom
    assessment_date: IsoDate = Field(default_factory=_today)


#: A job's priority (strict: critical > high > normal > low).
Priority = Literal["low", "normal", "high", "critical"]
#: A bulk import item's code as the bulk-import handler reads it: 2, 4 or 6 digits, dots allowed.
_ITEM_CODE = r"^[\s.]*(?:[0-9]\.*){2}(?:(?:[0-9]\.*){2}){0,2}[\s.]*$"


class HsImportItem(BaseModel):
    """One HS code to upsert."""

    model_config = ConfigDict(extra="forbid")
    code: Annotated[str, Field(min_length=2, max_length=12, pattern=_ITEM_CODE, examples=["8471.30"])]
    description: Annotated[
        str, Field(min_length=1, max_length=1000, pattern=r"^[^\x00]*[^\s\x00][^\x00]*$", examples=["Laptops"])
    ]


class BulkImportItems(BaseModel):
    """The HS codes of a bulk import: the payload of a ``bulk_import`` job (over 10,000 items is a 413)."""

    model_config = ConfigDict(extra="forbid")
    items: list[HsImportItem] = Field(min_length=1)


#: Seconds a job's state is kept after it ends.
JobTtl = Annotated[int, Field(ge=1, le=7 * 86_400, description="Seconds the job's state is kept after it ends")]


class BulkImportRequest(BulkImportItems):
    """The bulk-import shortcut body: the items, the job's priority and TTL."""

    priority: Priority = "normal"
    ttl_seconds: JobTtl = 3600


class JobOptions(BaseModel):
    """The spec's submit body around its payload: the job type, priority, TTL and time limit."""

    model_config = ConfigDict(extra="forbid")
    job_type: str
    priority: Priority = "normal"
    ttl_seconds: JobTtl = 3600
    timeout_seconds: Annotated[
        float | None,
        Field(
            gt=0,
            le=86_400,
            description="Seconds the job may run before it FAILS as timed out (default: the job type's, else "
            "PSRA_JOB_TIMEOUT_SECONDS)",
        ),
    ] = None


_SPEC_JOB: dict[str, Any] = {
    "rule_id": "USMCA-2024-01",
    "hs_code": "8471.30",
    "origin_country": "MX",
    "destination_country": "US",
}


class AssessmentJob(JobOptions):
    """``POST /api/jobs/submit`` of an assessment: the payload is the body of ``POST /api/jobs/assessment/submit``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"job_type": "assessment", "payload": _SPEC_JOB}]})
    job_type: Literal["assessment"]
    payload: AssessmentJobRequest


class BulkImportJob(JobOptions):
    """``POST /api/jobs/submit`` of a bulk import (operator only): the items of the bulk-import shortcut."""

    job_type: Literal["bulk_import"]
    payload: BulkImportItems


#: The spec's submit body: one variant per job type the API's queue runs, told apart by ``job_type``.
SubmitJobRequest = Annotated[AssessmentJob | BulkImportJob, Field(discriminator="job_type")]
#: The job types ``POST /api/jobs/submit`` accepts: those of the handlers create_app registers.
JOB_TYPES: tuple[str, ...] = tuple(
    get_args(m.model_fields["job_type"].annotation)[0] for m in get_args(AssessmentJob | BulkImportJob)
)


def inline_schema(model: Any) -> dict[str, Any]:
    """``model``'s JSON schema (a model or any type), ``$defs`` resolved in place, for a hand-written requestBody.

    A ``discriminator`` is dropped: its ``mapping`` names ``$defs`` that are gone, and each variant's
    ``const`` already tells the variants apart.
    """
    schema = TypeAdapter(model).json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {
                k: resolve(v)
                for k, v in node.items()
                if not (k == "discriminator" and isinstance(v, dict) and "mapping" in v)
            }
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    out: dict[str, Any] = resolve(schema)
    return out


def json_body(schema: Any) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads its JSON body itself: the body's schema, inlined."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(schema)}}}}


#: Assessment bodies remembered once validated (least recently used first out) and the largest one remembered.
PARSED_BODIES, PARSED_BODY_BYTES = 2048, 4096


class ParsedAssessment(NamedTuple):
    """A validated assessment body and its input hash (:func:`psra_bench.psra.assessment.input_hash`)."""

    body: ApiAssessmentRequest
    input_hash: str


_parsed: OrderedDict[tuple[bytes, dt.date], ParsedAssessment] = OrderedDict()


def parse_assessment_body(raw: bytes) -> ParsedAssessment:
    """The validated body of ``POST /api/assessments`` and its input hash; the same bytes on the same day once.

    Validation and the hash are functions of the bytes and of today's date (``assessment_date``'s
    default) alone, and the model is frozen, so a body seen before is answered from the
    :data:`PARSED_BODIES` remembered ones without pydantic: a client asking the same question again
    (the case a cached assessment answers) pays for parsing and hashing once. Bodies over
    :data:`PARSED_BODY_BYTES` are not remembered. A body that does not validate raises
    RequestValidationError, its errors' ``loc`` under ``body`` as FastAPI's own.
    """
    key = (raw, _today())
    found = _parsed.get(key)
    if found is not None:
        _parsed.move_to_end(key)
        return found
    try:
        body = ApiAssessmentRequest.model_validate_json(raw)
    except pydantic.ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None
    parsed = ParsedAssessment(body, input_hash(body))
    if len(raw) <= PARSED_BODY_BYTES:
        _parsed[key] = parsed
        if len(_parsed) > PARSED_BODIES:
            _parsed.popitem(last=False)
    return parsed
