"""The rules-of-origin assessment service: request model, validation, verdicts, storage.

:func:`assess` is pure (request + rules + known HS codes -> :class:`Verdict`); the rule logic
itself lives in :mod:`psra_bench.psra.rules`. :func:`assess_and_store` loads the agreement's rules
from ``psra_rules`` in one query, assesses, and INSERTs the verdict into ``psra_verdicts``.

Decisions (documented here because callers depend on them):

* No applicable rule for a known HS code -> status ``insufficient_data`` with reason
  ``NO_APPLICABLE_RULE`` (the row stores ``rule_id = UNMATCHED_RULE_ID``, the column is NOT NULL).
* A value a criterion needs is missing (net cost, transaction value, ex-works price, the list of
  processes, or — through :class:`AssessmentInput`, the job API's body — the whole bill of
  materials) -> ``insufficient_data`` unless the verdict is decided without it (another
  alternative passes, or a required criterion fails anyway); each such reason names the rule,
  its requirement and the inputs not given.
* Origin and destination must be parties of the agreement and belong to *different* parties
  (DE -> FR is intra-EU trade, outside all four agreements): otherwise an InputError.
* ``input_hash`` = sha256 of the canonical JSON of the normalized input: BOM lines sorted, values
  as normalized decimals, processes sorted, agreement resolved, ``tenant_id`` included (duplicate
  detection is per tenant), free-text ``description`` left out (it cannot change a verdict).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from decimal import Decimal
from functools import cache
from typing import Annotated, Any, Literal, TypeVar

import orjson
import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from psra_bench.db.reference import hs_rows
from psra_bench.db.reference import rules as vendored_rules
from psra_bench.exceptions import InputError
from psra_bench.psra import evaluation as ev
from psra_bench.psra import rules as orr

__all__ = [
    "ISO_COUNTRY_CODES",
    "STATUSES",
    "UNMATCHED_RULE_ID",
    "normalize_hs",
    "HsCode",
    "CountryCode",
    "BomLine",
    "AssessmentInput",
    "AssessmentRequest",
    "Citation",
    "Verdict",
    "KnownHsCodes",
    "parse_request",
    "parse_input",
    "validation_error_from_pydantic",
    "known_hs_subheadings",
    "default_rules",
    "validate_request",
    "canonical_input",
    "input_hash",
    "request_to_dict",
    "assess",
    "verdict_to_dict",
]

#: The 249 officially assigned ISO 3166-1 alpha-2 country codes.
ISO_COUNTRY_CODES: frozenset[str] = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
    BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG
    EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR
    HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR
    LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG
    NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE
    SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA
    UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW""".split()
)


def normalize_hs(value: object) -> str | None:
    """'8471.30', '8471 30' or '847130' -> '847130'; None when it is not 6 digits."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    digits = str(value).strip().replace(".", "").replace(" ", "")
    return digits if len(digits) == 6 and digits.isascii() and digits.isdigit() else None


#: The three verdict statuses.
STATUSES: tuple[str, ...] = ("qualified", "not_qualified", "insufficient_data")
#: ``psra_verdicts.rule_id`` of a verdict for which no rule applied (the column is NOT NULL).
UNMATCHED_RULE_ID = "NO_APPLICABLE_RULE"

_COUNTRY_ALLOWED = "a two-letter ISO 3166-1 country code such as DE, GB or US"
_COUNTRY_HINTS = {"UK": "GB for the United Kingdom", "EL": "GR for Greece", "EU": "an EU member state such as DE"}


def _invalid(allowed: str, field: str | None = None) -> PydanticCustomError:
    ctx: dict[str, Any] = {"allowed": allowed}
    if field is not None:
        ctx["field"] = field
    return PydanticCustomError("psra_invalid", "{allowed}", ctx)


def _hs_value(value: object) -> str:
    code = normalize_hs(value)
    if code is None:
        raise _invalid("a 6-digit HS subheading such as 847130 or 8471.30")
    return code


def _country_value(value: object) -> str:
    code = value.strip().upper() if isinstance(value, str) else None
    if code in ISO_COUNTRY_CODES:
        return code
    hint = _COUNTRY_HINTS.get(code or "")
    raise _invalid(_COUNTRY_ALLOWED + (f" (use {hint})" if hint else ""))


def _operation_value(value: str) -> str:
    name = value.strip().upper().replace(" ", "_").replace("-", "_")
    if not name or not name.replace("_", "").isalnum() or not name[0].isalpha() or not name.isascii():
        raise _invalid("an operation name of letters, digits and '_' such as POLYMERIZATION")
    return name


def _json_number(value: Decimal) -> float:
    return float(value)


#: A 6-digit HS subheading; '8471.30' and '8471 30' are accepted and stored as '847130'.
HsCode = Annotated[str, BeforeValidator(_hs_value)]
#: An ISO 3166-1 alpha-2 country code, upper-cased.
CountryCode = Annotated[str, BeforeValidator(_country_value)]
_Operation = Annotated[str, AfterValidator(_operation_value)]
#: Largest amount accepted (bill-of-materials values, prices): beyond it float figures stop being exact.
MAX_AMOUNT = Decimal("1e15")
#: Smallest price accepted: ratios of amounts to prices then stay finite floats.
MIN_PRICE = Decimal("0.000001")
_AsFloat = PlainSerializer(_json_number, return_type=float, when_used="json")
_NonNegative = Annotated[Decimal, Field(ge=0, le=MAX_AMOUNT, max_digits=40), _AsFloat]
_Positive = Annotated[Decimal, Field(ge=MIN_PRICE, le=MAX_AMOUNT, max_digits=40), _AsFloat]


class BomLine(BaseModel):
    """One input of the bill of materials."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    hs_code: HsCode
    origin_country: CountryCode
    value: _NonNegative
    description: str | None = Field(default=None, max_length=500, pattern=r"^[^\x00]*$")


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


_Bom = Annotated[tuple[BomLine, ...], Field(min_length=1, max_length=10_000)]


class AssessmentInput(BaseModel):
    """What the job API may assess: product, route, rule or agreement; BOM, prices and tenant optional.

    Without a bill of materials or a price the verdict is ``insufficient_data`` naming what the
    rule needs; without a tenant nothing is stored (see :class:`AssessmentRequest` for the full body).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    hs_code: HsCode
    bill_of_materials: _Bom | None = None
    ex_works_price: _Positive | None = None
    transaction_value: _Positive | None = None
    net_cost: _Positive | None = None
    agreement_code: str | None = Field(default=None, max_length=16, pattern=r"^[A-Za-z0-9-]*$")
    origin_country: CountryCode
    destination_country: CountryCode
    assessment_date: dt.date = Field(default_factory=_today)
    tenant_id: uuid.UUID | None = None
    #: Operations performed in the origin country; None = not declared (rules that check
    #: processes then give insufficient_data), () = declared: none.
    processes: tuple[_Operation, ...] | None = None
    rule_id: str | None = Field(default=None, max_length=32, pattern=r"^[A-Za-z0-9._-]*$")

    @field_validator("agreement_code", "rule_id")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() or None if value is not None else None

    @field_validator("processes")
    @classmethod
    def _sorted(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return tuple(sorted(set(value))) if value is not None else None

    @model_validator(mode="after")
    def _check(self) -> AssessmentInput:
        if self.agreement_code is None and self.rule_id is None:
            raise _invalid("an agreement code such as CETA (or a rule_id)", "agreement_code")
        return self


class AssessmentRequest(AssessmentInput):
    """The full assessment body (``POST /api/assessments``): bill of materials, a price and the tenant required."""

    bill_of_materials: _Bom
    tenant_id: uuid.UUID

    @model_validator(mode="after")
    def _check_full(self) -> AssessmentRequest:
        if self.ex_works_price is None and self.transaction_value is None:
            raise _invalid("a price > 0: give ex_works_price or transaction_value", "ex_works_price")
        return self


class Citation(BaseModel):
    """A legal citation of the rule the verdict applied."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    clause: str


class Verdict(BaseModel):
    """The outcome of one assessment (deterministic except ids, decided_at and timing)."""

    model_config = ConfigDict(frozen=True)

    evaluation_id: uuid.UUID
    request_id: uuid.UUID
    #: None for an assessment without a tenant (the job API's short body): such verdicts are not stored.
    tenant_id: uuid.UUID | None
    status: Literal["qualified", "not_qualified", "insufficient_data"]
    confidence: float
    rule_id: str | None
    agreement_code: str
    hs_code: str
    origin_country: str
    destination_country: str
    assessment_date: dt.date
    reasons: tuple[ev.Reason, ...]
    citations: tuple[Citation, ...]
    figures: ev.Figures | None
    rules_evaluated: int
    lineage_required: bool
    ledger_reference: str | None
    input_hash: str
    processing_time_ms: float
    decided_at: dt.datetime


#: Known HS subheadings: a set (or any container) of 6-digit codes, a predicate, or None (vendored table).
KnownHsCodes = Collection[str] | Callable[[str], bool] | None


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_PYDANTIC_ALLOWED = {
    "missing": "a value is required",
    "too_short": "a non-empty list",
    "uuid_parsing": "a UUID such as 550e8400-e29b-41d4-a716-446655440000",
    "date_from_datetime_parsing": "an ISO date such as 2024-01-01",
    "date_parsing": "an ISO date such as 2024-01-01",
    **dict.fromkeys(("decimal_parsing", "decimal_type", "finite_number", "float_parsing"), "a finite number"),
}


def _allowed_text(error: Mapping[str, Any], loc: tuple[str | int, ...]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "psra_invalid":
        return str(ctx["allowed"])
    if kind in ("greater_than_equal", "greater_than"):
        return f"a number {'≥' if kind == 'greater_than_equal' else '>'} {ctx.get('ge', ctx.get('gt'))}"
    if kind == "extra_forbidden":
        model = BomLine if loc[:1] == ("bill_of_materials",) and len(loc) > 2 else AssessmentRequest
        return "no such field; use " + ", ".join(model.model_fields)
    message = _PYDANTIC_ALLOWED.get(kind) or str(error["msg"])
    return message[:1].lower() + message[1:]


def validation_error_from_pydantic(exc: pydantic.ValidationError | Sequence[Mapping[str, Any]]) -> InputError:
    """The first error of a pydantic ValidationError (or FastAPI's ``exc.errors()``) as our InputError."""
    error = exc.errors()[0] if isinstance(exc, pydantic.ValidationError) else exc[0]
    loc = tuple(error["loc"])
    loc = loc[1:] if loc[:1] == ("body",) else loc  # FastAPI prefixes request-body errors with "body"
    ctx = error.get("ctx") or {}
    field = _dotted(loc) or str(ctx.get("field", "request"))
    value = None if error["type"] == "missing" or not loc else error.get("input")
    if not loc and "field" in ctx:
        value = error.get("input", {}).get(ctx["field"]) if isinstance(error.get("input"), Mapping) else None
    return InputError(field, value, _allowed_text(error, loc))


def parse_request(data: AssessmentInput | Mapping[str, Any]) -> AssessmentRequest:
    """Validate and normalize a full request (an AssessmentRequest passes through); raises InputError."""
    if isinstance(data, AssessmentRequest):
        return data
    return _parse(AssessmentRequest, data.model_dump() if isinstance(data, AssessmentInput) else data)


def parse_input(data: AssessmentInput | Mapping[str, Any]) -> AssessmentInput:
    """Validate a job payload (BOM, prices, tenant optional; an AssessmentInput passes through); InputError."""
    if isinstance(data, AssessmentInput):
        return data
    return _parse(AssessmentInput, data)


_M = TypeVar("_M", bound=AssessmentInput)


def _parse(model: type[_M], data: object) -> _M:
    if not isinstance(data, Mapping):
        raise InputError("request", type(data).__name__, "a JSON object with the assessment fields")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        raise validation_error_from_pydantic(e) from None


@cache
def known_hs_subheadings() -> frozenset[str]:
    """The 5,613 six-digit subheadings of the vendored HS 2022 table."""
    return frozenset(r.code for r in hs_rows() if r.level == 6)


@cache
def default_rules() -> tuple[orr.Rule, ...]:
    """The 13 vendored rules of rules.json, compiled (for the pure path without a database)."""
    return orr.compile_rules(vendored_rules())


def _hs_checker(known: KnownHsCodes) -> Callable[[str], bool]:
    if known is None:
        return known_hs_subheadings().__contains__
    if callable(known) and not isinstance(known, Collection):
        return known
    assert isinstance(known, Collection)
    return known.__contains__


def _describe_parties(parties: Sequence[str]) -> str:
    names = [p for p in parties if p != "EU"]
    if "EU" in parties:
        names.append("an EU member state (" + ", ".join(sorted(orr.EU_MEMBER_STATES)) + ")")
    return " or ".join(names)


def validate_request(
    request: AssessmentInput, rules: Sequence[orr.Rule], known_hs_codes: KnownHsCodes = None
) -> tuple[orr.Target, orr.Rule | None]:
    """Check a parsed request against reference data; return the selection target and the forced rule (or None)."""
    is_known = _hs_checker(known_hs_codes)
    hs_allowed = "an HS subheading of the HS 2022 nomenclature (6 digits, e.g. 847130)"
    if not is_known(request.hs_code):
        raise InputError("hs_code", request.hs_code, hs_allowed)
    for i, line in enumerate(request.bill_of_materials or ()):
        if not is_known(line.hs_code):
            raise InputError(f"bill_of_materials[{i}].hs_code", line.hs_code, hs_allowed)
    forced: orr.Rule | None = None
    if request.rule_id:
        forced = next((r for r in rules if r.rule_id == request.rule_id), None)
        if forced is None:
            ids = sorted(r.rule_id for r in rules if request.agreement_code in (None, r.agreement_code))
            raise InputError("rule_id", request.rule_id, "one of " + (", ".join(ids) or "no rule (none loaded)"))
    agreement = request.agreement_code or (forced.agreement_code if forced else "")
    agreements = sorted({r.agreement_code for r in rules})
    if agreement not in agreements:
        raise InputError("agreement_code", request.agreement_code, "one of " + ", ".join(agreements))
    parties = orr.agreement_parties(rules, agreement)
    sides = {}
    for field in ("origin_country", "destination_country"):
        sides[field] = orr.party_of(getattr(request, field), parties)
        if sides[field] is None:
            allowed = f"a party of {agreement}: {_describe_parties(parties)}"
            raise InputError(field, getattr(request, field), allowed)
    if sides["origin_country"] == sides["destination_country"]:
        others = [p for p in parties if p != sides["origin_country"]]
        allowed = (
            f"a country of another party than {request.origin_country} ({sides['origin_country']}), i.e. "
            f"{_describe_parties(others)}; {agreement} covers trade between its parties only"
        )
        raise InputError("destination_country", request.destination_country, allowed)
    target = orr.Target(
        agreement, request.hs_code, request.origin_country, request.destination_country, request.assessment_date
    )
    if forced is not None and (why := orr.applicability(forced, target)) is not None:
        raise InputError("rule_id", request.rule_id, f"a rule that applies to this request ({why})")
    return target, forced


def _decimal_text(value: Decimal | None) -> str | None:
    if value is None:
        return None
    return "0" if value == 0 else format(value.normalize(), "f")


def canonical_input(request: AssessmentInput, agreement_code: str | None = None) -> dict[str, Any]:
    """The normalized, order-free form of a request that :func:`input_hash` hashes."""
    given = request.bill_of_materials
    lines = sorted(given or (), key=lambda b: (b.hs_code, b.origin_country, b.value))
    return {
        "agreement_code": agreement_code or request.agreement_code,
        "rule_id": request.rule_id or None,
        "hs_code": request.hs_code,
        "origin_country": request.origin_country,
        "destination_country": request.destination_country,
        "assessment_date": request.assessment_date.isoformat(),
        "tenant_id": str(request.tenant_id) if request.tenant_id is not None else None,
        "ex_works_price": _decimal_text(request.ex_works_price),
        "transaction_value": _decimal_text(request.transaction_value),
        "net_cost": _decimal_text(request.net_cost),
        "processes": list(request.processes) if request.processes is not None else None,
        "bill_of_materials": None
        if given is None
        else [
            {"hs_code": b.hs_code, "origin_country": b.origin_country, "value": _decimal_text(b.value)} for b in lines
        ],
    }


def input_hash(request: AssessmentInput, agreement_code: str | None = None) -> str:
    """sha256 hex of the canonical JSON of :func:`canonical_input` (per tenant, BOM order-free).

    The JSON is ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``'s, UTF-8;
    orjson writes the same bytes for these values in half the time (tests/test_assessment.py checks
    both agree), and the standard library answers what orjson refuses.
    """
    canonical = canonical_input(request, agreement_code)
    try:
        data = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        data = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()


def request_to_dict(request: AssessmentInput) -> dict[str, Any]:
    """The normalized request as JSON-ready data (what ``psra_verdicts.input_payload`` stores)."""
    return request.model_dump(mode="json")


def _facts(request: AssessmentInput) -> ev.Facts:
    bom = request.bill_of_materials
    return ev.Facts(
        hs_code=request.hs_code,
        materials=None
        if bom is None
        else tuple(ev.Material(i, b.hs_code, b.origin_country, b.value) for i, b in enumerate(bom)),
        ex_works_price=request.ex_works_price,
        transaction_value=request.transaction_value,
        net_cost=request.net_cost,
        processes=frozenset(request.processes) if request.processes is not None else None,
    )


def assess(
    request: AssessmentInput | Mapping[str, Any],
    rules: Iterable[orr.Rule | Mapping[str, Any]],
    known_hs_codes: KnownHsCodes = None,
    *,
    evaluation_id: uuid.UUID | None = None,
    request_id: uuid.UUID | None = None,
    decided_at: dt.datetime | None = None,
) -> Verdict:
    """Assess one request against ``rules`` (dicts or compiled); pure apart from new ids and the clock.

    A mapping must be a full :class:`AssessmentRequest`; pass :func:`parse_input`'s result to assess
    without a bill of materials, a price or a tenant.
    """
    started = time.perf_counter()
    req = request if isinstance(request, AssessmentInput) else parse_request(request)
    compiled = orr.compile_rules(rules)
    target, forced = validate_request(req, compiled, known_hs_codes)
    agreement = target.agreement_code
    if forced is not None:
        selection = orr.RuleSelection(forced, (forced,), ())
    else:
        selection = orr.select_rule(compiled, target)
    rule = selection.rule
    if rule is None:
        message = (
            f"no {agreement} rule covers HS {req.hs_code} for {req.origin_country} -> "
            f"{req.destination_country} on {req.assessment_date.isoformat()}."
        )
        status, conf = "insufficient_data", 0.0
        reasons: tuple[ev.Reason, ...] = (ev.Reason("NO_APPLICABLE_RULE", "high", message, None),)
        citations: tuple[Citation, ...] = ()
        figures = None
    else:
        evaluation = ev.evaluate(rule, _facts(req))
        status, conf = evaluation.status, evaluation.confidence
        reasons = evaluation.reasons
        citations = tuple(Citation(rule_id=rule.rule_id, clause=c) for c in rule.citations)
        figures = evaluation.figures
    return Verdict(
        evaluation_id=evaluation_id or uuid.uuid4(),
        request_id=request_id or uuid.uuid4(),
        tenant_id=req.tenant_id,
        status=status,  # type: ignore[arg-type]
        confidence=conf,
        rule_id=rule.rule_id if rule else None,
        agreement_code=agreement,
        hs_code=req.hs_code,
        origin_country=req.origin_country,
        destination_country=req.destination_country,
        assessment_date=req.assessment_date,
        reasons=reasons,
        citations=citations,
        figures=figures,
        rules_evaluated=len(selection.applicable),
        lineage_required=rule.lineage_required if rule else False,
        ledger_reference=rule.ledger_reference if rule else None,
        input_hash=input_hash(req, agreement),
        processing_time_ms=(time.perf_counter() - started) * 1000.0,
        decided_at=decided_at or dt.datetime.now(dt.UTC),
    )


def verdict_to_dict(verdict: Verdict) -> dict[str, Any]:
    """A verdict as JSON-ready data (uuids, dates as strings) for the API, the cache and job results."""
    return verdict.model_dump(mode="json")
