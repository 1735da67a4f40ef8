"""Pure rules-of-origin logic: countries, rule compilation, rule selection and rule evaluation.

Nothing here touches a database, a clock or a random source: the same rules and facts give the
same result, so :mod:`psra_bench.assessment` can call it hundreds of times per second.

Vocabulary. An *input* (BOM line) is **originating** when its origin country is covered by the
rule's jurisdictions (``"EU"`` covers the 27 member states). VNM is the value of the
non-originating inputs, VOM the value of the originating ones, AV the ex-works price when given,
else the transaction value. A criterion's outcome is ``pass``, ``fail`` or ``unknown`` (a value it
needs is missing).

Confidence (documented formula, deterministic)::

    confidence = 1 − min(0.5, p)            (insufficient_data: 0.0)

``p`` sums, over the criteria the verdict rests on, ``0.3·t + 0.1·d``. ``t = max(0, 1 − margin/5)``
is how thin the margin to the criterion's threshold is, in percentage points (a margin of 5 points
or more gives t = 0; exactly at the threshold t = 1); criteria without a threshold (a tariff shift
without de minimis, a process requirement) have t = 0. ``d = 1`` when a tariff shift passed only
thanks to the de minimis tolerance. The verdict rests on: *qualified, combination all* → every
criterion; *qualified, combination any* → the process requirement plus the passing alternative with
the smallest penalty; *not_qualified* → a failed process requirement (robust: p = 0), else the most
robust failed criterion (combination all: smallest penalty) or the thinnest failed alternative
(combination any: largest penalty, since flipping any one alternative would flip the verdict).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .exceptions import RuleDefinitionError

__all__ = [
    "EU_MEMBER_STATES",
    "ISO_COUNTRY_CODES",
    "TARIFF_SHIFT_TYPES",
    "RVC_METHODS",
    "SEVERITIES",
    "PASS",
    "FAIL",
    "UNKNOWN",
    "TariffShift",
    "RvcRequirement",
    "Rule",
    "Material",
    "Facts",
    "Finding",
    "Outcome",
    "Figures",
    "Evaluation",
    "RuleSelection",
    "normalize_hs",
    "jurisdiction_covers",
    "party_of",
    "agreement_parties",
    "compile_rule",
    "compile_rules",
    "applicability",
    "select_rule",
    "evaluate",
    "confidence",
]

#: The 27 member states of the European Union (ISO 3166-1 alpha-2; Greece is GR, not EL).
EU_MEMBER_STATES: frozenset[str] = frozenset(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split()
)

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

#: Tariff-shift types -> how many HS digits must change (chapter, heading, subheading).
TARIFF_SHIFT_TYPES: dict[str, int] = {"CC": 2, "CTH": 4, "CTSH": 6}
_LEVEL_NAMES = {2: "chapter", 4: "heading", 6: "subheading"}
#: Regional value content methods a rule may name.
RVC_METHODS: tuple[str, ...] = ("build_up", "build_down", "transaction_value", "net_cost")
#: Reason severities, mildest first.
SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")
_CRITERIA_KEYS = frozenset(
    {"combination", "tariff_shift", "rvc", "non_originating_max_percent", "de_minimis_percent", "process"}
)

PASS = "pass"
FAIL = "fail"
UNKNOWN = "unknown"

_HUNDRED = Decimal(100)
_THIN_MARGIN_POINTS = 5.0
_MARGIN_WEIGHT = 0.3
_DE_MINIMIS_WEIGHT = 0.1
_MAX_PENALTY = 0.5


def normalize_hs(value: object) -> str | None:
    """'8471.30', '8471 30' or '847130' -> '847130'; None when it is not 6 digits."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    digits = str(value).strip().replace(".", "").replace(" ", "")
    return digits if len(digits) == 6 and digits.isascii() and digits.isdigit() else None


def jurisdiction_covers(jurisdiction: str, country: str) -> bool:
    """True when ``country`` belongs to ``jurisdiction`` (itself, or an EU member state for "EU")."""
    return jurisdiction == country or (jurisdiction == "EU" and country in EU_MEMBER_STATES)


def party_of(country: str, jurisdictions: Iterable[str]) -> str | None:
    """The jurisdiction among ``jurisdictions`` that covers ``country`` (None if it is not a party)."""
    for jurisdiction in jurisdictions:
        if jurisdiction_covers(jurisdiction, country):
            return jurisdiction
    return None


@dataclass(frozen=True, slots=True)
class TariffShift:
    """A required change of tariff classification of the non-originating inputs."""

    type: str
    exceptions: tuple[str, ...]

    @property
    def digits(self) -> int:
        """How many leading HS digits must differ: 2 (CC), 4 (CTH) or 6 (CTSH)."""
        return TARIFF_SHIFT_TYPES[self.type]


@dataclass(frozen=True, slots=True)
class RvcRequirement:
    """A minimum regional value content under one calculation method."""

    method: str
    threshold: Decimal


@dataclass(frozen=True, slots=True)
class Rule:
    """One product-specific rule, compiled from its table row / JSON dict for fast evaluation."""

    rule_id: str
    agreement_code: str
    title: str
    hs_chapter: str
    hs_heading: str | None
    hs_subheading: str | None
    jurisdictions: tuple[str, ...]
    effective_from: dt.date
    effective_to: dt.date | None
    priority: int
    supersedes: tuple[str, ...]
    combination: str
    tariff_shift: TariffShift | None
    rvc: RvcRequirement | None
    non_originating_max_percent: Decimal | None
    de_minimis_percent: Decimal | None
    process_required: tuple[str, ...]
    process_disallowed: tuple[str, ...]
    citations: tuple[str, ...]
    severities: tuple[tuple[str, str], ...]
    lineage_required: bool
    ledger_reference: str | None

    @property
    def hs_code(self) -> str:
        """The rule's product code at its own level (2, 4 or 6 digits)."""
        return self.hs_subheading or self.hs_heading or self.hs_chapter

    @property
    def level(self) -> int:
        """Specificity: 6 (subheading), 4 (heading) or 2 (chapter)."""
        return len(self.hs_code)

    @property
    def has_process(self) -> bool:
        """True when the rule requires or forbids some operation."""
        return bool(self.process_required or self.process_disallowed)

    def matches(self, hs6: str) -> bool:
        """True when the 6-digit product code falls under the rule's chapter/heading/subheading."""
        return hs6.startswith(self.hs_code)

    def effective_on(self, day: dt.date) -> bool:
        """True when effective_from ≤ day ≤ effective_to (an open end never expires)."""
        return self.effective_from <= day and (self.effective_to is None or day <= self.effective_to)

    def covers(self, country: str) -> bool:
        """True when ``country`` is in one of the rule's jurisdictions."""
        return any(jurisdiction_covers(j, country) for j in self.jurisdictions)

    def severity(self, code: str) -> str:
        """Severity the payload gives reason ``code`` (``high`` when it names none)."""
        for known, severity in self.severities:
            if known == code:
                return severity
        return "high"

    def clause(self, criterion: str) -> str:
        """Citation string of one criterion, e.g. 'CETA Annex 5-A, HS 39 [criteria.rvc]'."""
        base = self.citations[0] if self.citations else self.rule_id
        return f"{base} [criteria.{criterion}]"


def _date(rule_id: str, field: str, value: object) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise RuleDefinitionError(rule_id, field, value, "an ISO date such as 2024-01-01") from None


def _percent(rule_id: str, field: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise RuleDefinitionError(rule_id, field, value, "a percentage from 0 to 100")
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        raise RuleDefinitionError(rule_id, field, value, "a percentage from 0 to 100") from None
    if not number.is_finite() or not 0 <= number <= 100:
        raise RuleDefinitionError(rule_id, field, value, "a percentage from 0 to 100")
    return number


def _codes(rule_id: str, field: str, values: object, lengths: tuple[int, ...]) -> tuple[str, ...]:
    if not isinstance(values, list | tuple) or not all(
        isinstance(v, str) and v.isdigit() and len(v) in lengths for v in values
    ):
        allowed = "a list of HS codes of " + " or ".join(str(n) for n in lengths) + " digits"
        raise RuleDefinitionError(rule_id, field, values, allowed)
    return tuple(values)


def _operations(rule_id: str, field: str, values: object) -> tuple[str, ...]:
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) and v for v in values):
        raise RuleDefinitionError(rule_id, field, values, "a list of operation names such as POLYMERIZATION")
    return tuple(v.upper() for v in values)


def _compile_criteria(rule_id: str, criteria: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(criteria) - _CRITERIA_KEYS)
    if unknown:
        raise RuleDefinitionError(rule_id, "payload.criteria", unknown[0], "one of " + ", ".join(sorted(_CRITERIA_KEYS)))
    out: dict[str, Any] = {}
    combination = criteria.get("combination", "all")
    if combination not in ("all", "any"):
        raise RuleDefinitionError(rule_id, "payload.criteria.combination", combination, "all or any")
    out["combination"] = combination
    shift = criteria.get("tariff_shift")
    out["tariff_shift"] = None
    if shift is not None:
        kind = shift.get("type") if isinstance(shift, Mapping) else shift
        if kind not in TARIFF_SHIFT_TYPES:
            raise RuleDefinitionError(rule_id, "payload.criteria.tariff_shift.type", kind, "CC, CTH or CTSH")
        exceptions = _codes(rule_id, "payload.criteria.tariff_shift.exceptions", shift.get("exceptions", []), (2, 4, 6))
        out["tariff_shift"] = TariffShift(kind, exceptions)
    rvc = criteria.get("rvc")
    out["rvc"] = None
    if rvc is not None:
        method = rvc.get("method") if isinstance(rvc, Mapping) else rvc
        if method not in RVC_METHODS:
            raise RuleDefinitionError(rule_id, "payload.criteria.rvc.method", method, "one of " + ", ".join(RVC_METHODS))
        out["rvc"] = RvcRequirement(method, _percent(rule_id, "payload.criteria.rvc.threshold", rvc.get("threshold")))
    for key in ("non_originating_max_percent", "de_minimis_percent"):
        value = criteria.get(key)
        out[key] = None if value is None else _percent(rule_id, f"payload.criteria.{key}", value)
    process = criteria.get("process") or {}
    if not isinstance(process, Mapping):
        raise RuleDefinitionError(rule_id, "payload.criteria.process", process, "an object with required/disallowed")
    out["process_required"] = _operations(rule_id, "payload.criteria.process.required", process.get("required", []))
    out["process_disallowed"] = _operations(
        rule_id, "payload.criteria.process.disallowed", process.get("disallowed", [])
    )
    return out


def compile_rule(raw: Mapping[str, Any] | Rule) -> Rule:
    """Check and convert one rule (a ``psra_rules`` row or a rules.json entry) into a :class:`Rule`."""
    if isinstance(raw, Rule):
        return raw
    rule_id = str(raw.get("rule_id") or "?")
    payload = raw.get("payload") or {}
    if not isinstance(payload, Mapping):
        raise RuleDefinitionError(rule_id, "payload", payload, "a JSON object")
    chapter = str(raw.get("hs_chapter") or "").strip()
    heading = (str(raw["hs_heading"]).strip() or None) if raw.get("hs_heading") else None
    subheading = (str(raw["hs_subheading"]).strip() or None) if raw.get("hs_subheading") else None
    if not (len(chapter) == 2 and chapter.isdigit()):
        raise RuleDefinitionError(rule_id, "hs_chapter", chapter, "two digits such as 39")
    if heading is not None and not (len(heading) == 4 and heading.isdigit() and heading.startswith(chapter)):
        raise RuleDefinitionError(rule_id, "hs_heading", heading, f"four digits of chapter {chapter}")
    if subheading is not None and not (
        len(subheading) == 6 and subheading.isdigit() and heading is not None and subheading.startswith(heading)
    ):
        raise RuleDefinitionError(rule_id, "hs_subheading", subheading, f"six digits of heading {heading}")
    criteria = _compile_criteria(rule_id, payload.get("criteria") or {})
    decision = payload.get("decision") or {}
    audit = payload.get("audit") or {}
    severities = tuple(
        (str(r["code"]), str(r.get("severity", "high")))
        for r in decision.get("disqualification_reasons", [])
        if isinstance(r, Mapping) and "code" in r
    )
    for code, severity in severities:
        if severity not in SEVERITIES:
            raise RuleDefinitionError(rule_id, f"payload.decision.disqualification_reasons[{code}].severity",
                                      severity, "one of " + ", ".join(SEVERITIES))
    return Rule(
        rule_id=rule_id,
        agreement_code=str(raw.get("agreement_code") or ""),
        title=str(raw.get("title") or ""),
        hs_chapter=chapter,
        hs_heading=heading,
        hs_subheading=subheading,
        jurisdictions=tuple(str(j).upper() for j in raw.get("jurisdictions") or ()),
        effective_from=_date(rule_id, "effective_from", raw.get("effective_from")),
        effective_to=None if raw.get("effective_to") is None else _date(rule_id, "effective_to", raw["effective_to"]),
        priority=int(raw.get("priority") or 0),
        supersedes=tuple(str(s) for s in raw.get("supersedes") or ()),
        citations=tuple(str(c) for c in decision.get("citations", [])),
        severities=severities,
        lineage_required=bool(audit.get("lineage_required", False)),
        ledger_reference=audit.get("ledger_reference"),
        **criteria,
    )


def compile_rules(rules: Iterable[Mapping[str, Any] | Rule]) -> tuple[Rule, ...]:
    """:func:`compile_rule` over a list (compile once and reuse the result on hot paths)."""
    return tuple(compile_rule(r) for r in rules)


def agreement_parties(rules: Iterable[Rule], agreement_code: str) -> tuple[str, ...]:
    """Sorted union of the jurisdictions of the agreement's rules (its parties, e.g. CA, EU)."""
    return tuple(sorted({j for r in rules if r.agreement_code == agreement_code for j in r.jurisdictions}))


# --- rule selection -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleSelection:
    """The rule that governs a product, and the applicable rules it was chosen from."""

    rule: Rule | None
    applicable: tuple[Rule, ...]
    superseded: tuple[str, ...]

    @property
    def rules_evaluated(self) -> int:
        """How many rules were applicable (agreement, route, date and product), superseded ones included."""
        return len(self.applicable)


def applicability(
    rule: Rule, *, agreement_code: str, hs_code: str, origin_country: str, destination_country: str, on_date: dt.date
) -> str | None:
    """Why ``rule`` does not apply to this product, route and date (None when it applies)."""
    if rule.agreement_code != agreement_code:
        return f"it belongs to {rule.agreement_code}, not {agreement_code}"
    if not rule.matches(hs_code):
        return f"it covers HS {rule.hs_code}, not {hs_code}"
    for country in (origin_country, destination_country):
        if not rule.covers(country):
            return f"its jurisdictions {', '.join(rule.jurisdictions)} do not cover {country}"
    if not rule.effective_on(on_date):
        end = rule.effective_to.isoformat() if rule.effective_to else "open"
        return f"it is effective {rule.effective_from.isoformat()} to {end}, not on {on_date.isoformat()}"
    return None


def select_rule(
    rules: Iterable[Rule],
    *,
    agreement_code: str,
    hs_code: str,
    origin_country: str,
    destination_country: str,
    on_date: dt.date,
) -> RuleSelection:
    """Most specific (subheading > heading > chapter), then highest-priority applicable, non-superseded rule."""
    applicable = [
        r
        for r in rules
        if applicability(
            r,
            agreement_code=agreement_code,
            hs_code=hs_code,
            origin_country=origin_country,
            destination_country=destination_country,
            on_date=on_date,
        )
        is None
    ]
    applicable.sort(key=lambda r: (-r.level, -r.priority, -r.effective_from.toordinal(), r.rule_id))
    superseded = {s for r in applicable for s in r.supersedes}
    remaining = [r for r in applicable if r.rule_id not in superseded]
    return RuleSelection(
        rule=remaining[0] if remaining else None,
        applicable=tuple(applicable),
        superseded=tuple(sorted(superseded & {r.rule_id for r in applicable})),
    )


# --- evaluation ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Material:
    """One bill-of-materials line: its position, HS subheading, origin and value."""

    index: int
    hs_code: str
    origin_country: str
    value: Decimal

    @property
    def label(self) -> str:
        """How messages name the line, e.g. 'bill_of_materials[2] (HS 520512 from CN)'."""
        return f"bill_of_materials[{self.index}] (HS {self.hs_code} from {self.origin_country})"


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything an evaluation needs about the product (already validated and normalized)."""

    hs_code: str
    materials: tuple[Material, ...]
    ex_works_price: Decimal | None
    transaction_value: Decimal | None
    net_cost: Decimal | None
    processes: frozenset[str] | None

    @property
    def product_value(self) -> Decimal:
        """AV: the ex-works price when given, else the transaction value."""
        value = self.ex_works_price if self.ex_works_price is not None else self.transaction_value
        assert value is not None, "validation guarantees ex_works_price or transaction_value"
        return value


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason of a verdict: code, severity, one-sentence message, clause it rests on."""

    code: str
    severity: str
    message: str
    clause: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """Result of one criterion, with its margin to the threshold in percentage points."""

    criterion: str
    result: str
    margin: Decimal | None
    de_minimis_used: bool
    findings: tuple[Finding, ...]


@dataclass(frozen=True, slots=True)
class Figures:
    """The computed values behind a verdict (percentages in %, values in the request's currency)."""

    product_value: Decimal
    originating_value: Decimal
    non_originating_value: Decimal
    non_shifting_value: Decimal | None = None
    rvc_method: str | None = None
    rvc_percent: Decimal | None = None
    rvc_threshold: Decimal | None = None
    nom_percent: Decimal | None = None
    nom_max_percent: Decimal | None = None
    de_minimis_percent: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Status, confidence, reasons and figures of one rule applied to one product."""

    status: str
    confidence: float
    findings: tuple[Finding, ...]
    figures: Figures
    outcomes: tuple[Outcome, ...]


def _pct(value: Decimal) -> str:
    return f"{value:.2f}%"


def _num(value: Decimal) -> str:
    return f"{value:f}"


def _tariff_shift(rule: Rule, facts: Facts, non_originating: list[Material]) -> tuple[Outcome, Decimal]:
    shift = rule.tariff_shift
    assert shift is not None
    digits = shift.digits
    level = _LEVEL_NAMES[digits]
    product_part = facts.hs_code[:digits]
    clause = rule.clause("tariff_shift")
    failing: list[str] = []
    failing_value = Decimal(0)
    for m in non_originating:
        excepted = next((e for e in shift.exceptions if m.hs_code.startswith(e)), None)
        if m.hs_code[:digits] == product_part:
            failing.append(f"{m.label} does not change {level} {product_part}")
        elif excepted is not None:
            failing.append(f"{m.label} comes from excepted HS {excepted}")
        else:
            continue
        failing_value += m.value
    if not failing:
        what = f"every non-originating input changes {level} ({shift.type})" if non_originating else (
            "there are no non-originating inputs"
        )
        return Outcome("tariff_shift", PASS, None, False, (Finding("TARIFF_SHIFT_MET", "info", what + ".", clause),)), (
            failing_value
        )
    detail = "; ".join(failing)
    tolerance = rule.de_minimis_percent
    if tolerance is None:
        message = f"{shift.type} not met: {detail}."
        finding = Finding("TARIFF_SHIFT_NOT_MET", rule.severity("TARIFF_SHIFT_NOT_MET"), message, clause)
        return Outcome("tariff_shift", FAIL, None, False, (finding,)), failing_value
    share = failing_value / facts.product_value * _HUNDRED
    summary = (
        f"their value {_num(failing_value)} is {_pct(share)} of the product value {_num(facts.product_value)}"
    )
    if share <= tolerance:
        findings = (
            Finding("DE_MINIMIS_APPLIED", "info",
                    f"{detail}; {summary}, within the {_num(tolerance)}% de minimis tolerance.",
                    rule.clause("de_minimis_percent")),
            Finding("TARIFF_SHIFT_MET", "info", f"{shift.type} met with the de minimis tolerance.", clause),
        )
        return Outcome("tariff_shift", PASS, tolerance - share, True, findings), failing_value
    message = f"{shift.type} not met: {detail}; {summary}, above the {_num(tolerance)}% de minimis tolerance."
    finding = Finding("TARIFF_SHIFT_NOT_MET", rule.severity("TARIFF_SHIFT_NOT_MET"), message, clause)
    return Outcome("tariff_shift", FAIL, share - tolerance, False, (finding,)), failing_value


def _missing(criterion: str, code: str, field: str, rule: Rule, why: str) -> Outcome:
    message = f"{field} is missing: {why}."
    return Outcome(criterion, UNKNOWN, None, False, (Finding(code, "medium", message, rule.clause(criterion)),))


def _rvc(rule: Rule, facts: Facts, vom: Decimal, vnm: Decimal) -> tuple[Outcome, Decimal | None]:
    req = rule.rvc
    assert req is not None
    av_name = "ex-works price" if facts.ex_works_price is not None else "transaction value"
    av = facts.product_value
    if req.method == "build_up":
        base, value, formula = av, vom, f"VOM {_num(vom)} / AV {_num(av)} ({av_name})"
    elif req.method == "build_down":
        base, value, formula = av, av - vnm, f"(AV {_num(av)} − VNM {_num(vnm)}) / AV ({av_name})"
    elif req.method == "transaction_value":
        if facts.transaction_value is None:
            return _missing("rvc", "MISSING_TRANSACTION_VALUE", "transaction_value", rule,
                            "the transaction-value RVC method needs it"), None
        tv = facts.transaction_value
        base, value, formula = tv, tv - vnm, f"(TV {_num(tv)} − VNM {_num(vnm)}) / TV"
    else:
        if facts.net_cost is None:
            return _missing("rvc", "MISSING_NET_COST", "net_cost", rule, "the net-cost RVC method needs it"), None
        nc = facts.net_cost
        base, value, formula = nc, nc - vnm, f"(NC {_num(nc)} − VNM {_num(vnm)}) / NC"
    rvc = value / base * _HUNDRED
    method = req.method.replace("_", "-")
    message = f"RVC ({method}) = {formula} = {_pct(rvc)}; at least {_num(req.threshold)}% is required."
    if rvc >= req.threshold:
        finding = Finding("RVC_MET", "info", message, rule.clause("rvc"))
        return Outcome("rvc", PASS, rvc - req.threshold, False, (finding,)), rvc
    finding = Finding("INSUFFICIENT_RVC", rule.severity("INSUFFICIENT_RVC"), message, rule.clause("rvc"))
    return Outcome("rvc", FAIL, req.threshold - rvc, False, (finding,)), rvc


def _max_nom(rule: Rule, facts: Facts, vnm: Decimal) -> tuple[Outcome, Decimal | None]:
    limit = rule.non_originating_max_percent
    assert limit is not None
    criterion = "non_originating_max_percent"
    if facts.ex_works_price is None:
        return _missing(criterion, "MISSING_EX_WORKS_PRICE", "ex_works_price", rule,
                        "the non-originating maximum is a share of the ex-works price"), None
    nom = vnm / facts.ex_works_price * _HUNDRED
    message = (f"non-originating materials = VNM {_num(vnm)} / ex-works {_num(facts.ex_works_price)} = "
               f"{_pct(nom)}; at most {_num(limit)}% is allowed.")
    if nom <= limit:
        finding = Finding("NON_ORIGINATING_WITHIN_LIMIT", "info", message, rule.clause(criterion))
        return Outcome(criterion, PASS, limit - nom, False, (finding,)), nom
    code = "NON_ORIGINATING_EXCEEDED"
    return Outcome(criterion, FAIL, nom - limit, False,
                   (Finding(code, rule.severity(code), message, rule.clause(criterion)),)), nom


def _process(rule: Rule, facts: Facts) -> Outcome:
    clause = rule.clause("process")
    if facts.processes is None:
        needs = ", ".join(rule.process_required + rule.process_disallowed)
        return _missing("process", "PROCESS_DATA_MISSING", "processes", rule,
                        f"the rule checks the operations {needs}")
    missing = [p for p in rule.process_required if p not in facts.processes]
    forbidden = [p for p in rule.process_disallowed if p in facts.processes]
    findings: list[Finding] = []
    if missing:
        findings.append(Finding("MISSING_PROCESS", rule.severity("MISSING_PROCESS"),
                                f"required operation(s) {', '.join(missing)} not performed in the origin country.",
                                clause))
    if forbidden:
        findings.append(Finding("DISALLOWED_PROCESS", rule.severity("DISALLOWED_PROCESS"),
                                f"operation(s) {', '.join(forbidden)} do not confer origin under this rule.", clause))
    if findings:
        return Outcome("process", FAIL, None, False, tuple(findings))
    done = ", ".join(rule.process_required) or "no disallowed operation"
    return Outcome("process", PASS, None, False, (Finding("PROCESS_MET", "info", f"performed: {done}.", clause),))


def _all(results: Sequence[str]) -> str:
    if FAIL in results:
        return FAIL
    return UNKNOWN if UNKNOWN in results else PASS


def _any(results: Sequence[str]) -> str:
    if not results or PASS in results:
        return PASS
    return UNKNOWN if UNKNOWN in results else FAIL


def _penalty(outcome: Outcome) -> float:
    thin = 0.0 if outcome.margin is None else max(0.0, 1.0 - float(outcome.margin) / _THIN_MARGIN_POINTS)
    used = outcome.de_minimis_used and outcome.result == PASS
    return _MARGIN_WEIGHT * thin + (_DE_MINIMIS_WEIGHT if used else 0.0)


def confidence(status: str, combination: str, criteria: Sequence[Outcome], process: Outcome | None) -> float:
    """The module docstring's formula: 1 − min(0.5, p) for decided verdicts, 0.0 for insufficient data."""
    if status == "insufficient_data":
        return 0.0
    if status == "qualified":
        deciding = [process] if process is not None else []
        if combination == "all":
            deciding.extend(criteria)
        else:
            passing = [o for o in criteria if o.result == PASS]
            if passing:
                deciding.append(min(passing, key=_penalty))
        p = sum(_penalty(o) for o in deciding)
    elif process is not None and process.result == FAIL:
        p = 0.0
    else:
        failed = [_penalty(o) for o in criteria if o.result == FAIL]
        p = min(failed) if combination == "all" else max(failed)
    return round(1.0 - min(_MAX_PENALTY, p), 4)


def evaluate(rule: Rule, facts: Facts) -> Evaluation:
    """Apply ``rule`` to ``facts``: status qualified / not_qualified / insufficient_data, with reasons."""
    originating = [m for m in facts.materials if rule.covers(m.origin_country)]
    non_originating = [m for m in facts.materials if not rule.covers(m.origin_country)]
    vom = sum((m.value for m in originating), Decimal(0))
    vnm = sum((m.value for m in non_originating), Decimal(0))
    criteria: list[Outcome] = []
    figures: dict[str, Any] = {}
    if rule.tariff_shift is not None:
        outcome, non_shifting = _tariff_shift(rule, facts, non_originating)
        criteria.append(outcome)
        figures["non_shifting_value"] = non_shifting
        figures["de_minimis_percent"] = rule.de_minimis_percent
    if rule.rvc is not None:
        outcome, rvc = _rvc(rule, facts, vom, vnm)
        criteria.append(outcome)
        figures.update(rvc_method=rule.rvc.method, rvc_percent=rvc, rvc_threshold=rule.rvc.threshold)
    if rule.non_originating_max_percent is not None:
        outcome, nom = _max_nom(rule, facts, vnm)
        criteria.append(outcome)
        figures.update(nom_percent=nom, nom_max_percent=rule.non_originating_max_percent)
    process = _process(rule, facts) if rule.has_process else None
    results = [o.result for o in criteria]
    combined = _all(results) if rule.combination == "all" else _any(results)
    final = _all([combined] + ([process.result] if process is not None else []))
    status = {PASS: "qualified", FAIL: "not_qualified", UNKNOWN: "insufficient_data"}[final]
    findings: list[Finding] = []
    for outcome in criteria:
        if status == "qualified" and outcome.result != PASS:
            # An alternative that was not needed: keep it visible, but only as information.
            findings.extend(
                Finding(f.code, "info", f.message + " (not needed: another alternative is met)", f.clause)
                for f in outcome.findings
            )
        else:
            findings.extend(outcome.findings)
    if process is not None:
        findings.extend(process.findings)
    return Evaluation(
        status=status,
        confidence=confidence(status, rule.combination, criteria, process),
        findings=tuple(findings),
        figures=Figures(
            product_value=facts.product_value, originating_value=vom, non_originating_value=vnm, **figures
        ),
        outcomes=tuple(criteria) + ((process,) if process is not None else ()),
    )
