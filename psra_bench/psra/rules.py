"""Pure rules-of-origin logic: countries, rule compilation, rule selection and rule evaluation.

Nothing here touches a database, a clock or a random source: the same rules and facts give the
same result, so :mod:`psra_bench.psra.assessment` can call it hundreds of times per second.

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
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from psra_bench.exceptions import RuleDefinitionError

__all__ = [
    "EU_MEMBER_STATES",
    "TARIFF_SHIFT_TYPES",
    "RVC_METHODS",
    "SEVERITIES",
    "TariffShift",
    "RvcRequirement",
    "Rule",
    "Material",
    "Facts",
    "Reason",
    "Outcome",
    "Figures",
    "Evaluation",
    "Target",
    "RuleSelection",
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
    severities: Mapping[str, str]
    lineage_required: bool
    ledger_reference: str | None
    #: Every ISO country the jurisdictions cover ("EU" expanded), for O(1) origin checks.
    countries: frozenset[str] = frozenset()

    @property
    def hs_code(self) -> str:
        """The rule's product code at its own level (2, 4 or 6 digits)."""
        return self.hs_subheading or self.hs_heading or self.hs_chapter

    @property
    def level(self) -> int:
        """Specificity: 6 (subheading), 4 (heading) or 2 (chapter)."""
        return len(self.hs_code)

    def matches(self, hs6: str) -> bool:
        """True when the 6-digit product code falls under the rule's chapter/heading/subheading."""
        return hs6.startswith(self.hs_code)

    def effective_on(self, day: dt.date) -> bool:
        """True when effective_from ≤ day ≤ effective_to (an open end never expires)."""
        return self.effective_from <= day and (self.effective_to is None or day <= self.effective_to)

    def covers(self, country: str) -> bool:
        """True when ``country`` is in one of the rule's jurisdictions."""
        return country in self.countries

    def severity(self, code: str) -> str:
        """Severity the payload gives reason ``code`` (``high`` when it names none)."""
        return self.severities.get(code, "high")

    def clause(self, criterion: str) -> str:
        """Citation string of one criterion, e.g. 'CETA Annex 5-A, HS 39 [criteria.rvc]'."""
        base = self.citations[0] if self.citations else self.rule_id
        return f"{base} [criteria.{criterion}]"


def _require(ok: bool, rule_id: str, field: str, value: object, allowed: str) -> None:
    if not ok:
        raise RuleDefinitionError(rule_id, field, value, allowed)


def _date(rule_id: str, field: str, value: object) -> dt.date:
    if isinstance(value, dt.date):
        return value.date() if isinstance(value, dt.datetime) else value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise RuleDefinitionError(rule_id, field, value, "an ISO date such as 2024-01-01") from None


def _percent(rule_id: str, field: str, value: object) -> Decimal:
    try:
        number = None if isinstance(value, bool) else Decimal(str(value)) if value is not None else None
    except ArithmeticError:
        number = None
    ok = number is not None and number.is_finite() and 0 <= number <= 100
    _require(ok, rule_id, field, value, "a percentage from 0 to 100")
    assert number is not None
    return number


def _strings(rule_id: str, field: str, values: object, digits: tuple[int, ...] = ()) -> tuple[str, ...]:
    items = list(values) if isinstance(values, list | tuple) else [None]
    ok = all(isinstance(v, str) and v and (not digits or (v.isdigit() and len(v) in digits)) for v in items)
    allowed = f"a list of HS codes of {' or '.join(map(str, digits))} digits" if digits else "a list of names"
    _require(ok, rule_id, field, values, allowed)
    return tuple(str(v) if digits else str(v).upper() for v in items)


def _compile_criteria(rule_id: str, criteria: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(criteria) - _CRITERIA_KEYS)
    where = "payload.criteria"
    _require(not unknown, rule_id, where, unknown[:1], "keys among " + ", ".join(sorted(_CRITERIA_KEYS)))
    combination = criteria.get("combination", "all")
    _require(combination in ("all", "any"), rule_id, f"{where}.combination", combination, "all or any")
    out: dict[str, Any] = {"combination": combination, "tariff_shift": None, "rvc": None}
    if (shift := criteria.get("tariff_shift")) is not None:
        kind = shift.get("type") if isinstance(shift, Mapping) else shift
        _require(kind in TARIFF_SHIFT_TYPES, rule_id, f"{where}.tariff_shift.type", kind, "CC, CTH or CTSH")
        exceptions = _strings(rule_id, f"{where}.tariff_shift.exceptions", shift.get("exceptions", []), (2, 4, 6))
        out["tariff_shift"] = TariffShift(str(kind), exceptions)
    if (rvc := criteria.get("rvc")) is not None:
        method = rvc.get("method") if isinstance(rvc, Mapping) else rvc
        _require(method in RVC_METHODS, rule_id, f"{where}.rvc.method", method, "one of " + ", ".join(RVC_METHODS))
        out["rvc"] = RvcRequirement(str(method), _percent(rule_id, f"{where}.rvc.threshold", rvc.get("threshold")))
    for key in ("non_originating_max_percent", "de_minimis_percent"):
        value = criteria.get(key)
        out[key] = None if value is None else _percent(rule_id, f"{where}.{key}", value)
    process = criteria.get("process") or {}
    _require(isinstance(process, Mapping), rule_id, f"{where}.process", process, "an object: required, disallowed")
    for key in ("required", "disallowed"):
        out[f"process_{key}"] = _strings(rule_id, f"{where}.process.{key}", process.get(key, []))
    return out


def compile_rule(raw: Mapping[str, Any] | Rule) -> Rule:
    """Check and convert one rule (a ``psra_rules`` row or a rules.json entry) into a :class:`Rule`.

    Results are memoized on the rule's canonical JSON, so callers that pass the same dicts on every
    request (rows from a cache) pay the compilation once.
    """
    if isinstance(raw, Rule):
        return raw
    return _compile_text(json.dumps(raw, sort_keys=True, default=str))


@lru_cache(maxsize=1024)
def _compile_text(text: str) -> Rule:
    return _compile(json.loads(text))


def _compile(raw: Mapping[str, Any]) -> Rule:
    rule_id = str(raw.get("rule_id") or "?")
    payload = raw.get("payload") or {}
    _require(isinstance(payload, Mapping), rule_id, "payload", payload, "a JSON object")
    chapter = str(raw.get("hs_chapter") or "").strip()
    heading = str(raw.get("hs_heading") or "").strip() or None
    subheading = str(raw.get("hs_subheading") or "").strip() or None
    _require(len(chapter) == 2 and chapter.isdigit(), rule_id, "hs_chapter", chapter, "two digits such as 39")
    ok = heading is None or (len(heading) == 4 and heading.isdigit() and heading.startswith(chapter))
    _require(ok, rule_id, "hs_heading", heading, f"four digits of chapter {chapter}")
    ok = subheading is None or (len(subheading) == 6 and subheading.isdigit() and subheading[:4] == heading)
    _require(ok, rule_id, "hs_subheading", subheading, f"six digits of heading {heading}")
    decision, audit = payload.get("decision") or {}, payload.get("audit") or {}
    severities: Mapping[str, str] = {
        str(r["code"]): str(r.get("severity", "high"))
        for r in decision.get("disqualification_reasons", [])
        if isinstance(r, Mapping) and "code" in r
    }
    for code, severity in severities.items():
        field = f"payload.decision.disqualification_reasons[{code}].severity"
        _require(severity in SEVERITIES, rule_id, field, severity, "one of " + ", ".join(SEVERITIES))
    effective_to = raw.get("effective_to")
    jurisdictions = tuple(str(j).upper() for j in raw.get("jurisdictions") or ())
    return Rule(
        rule_id=rule_id,
        agreement_code=str(raw.get("agreement_code") or ""),
        title=str(raw.get("title") or ""),
        hs_chapter=chapter,
        hs_heading=heading,
        hs_subheading=subheading,
        jurisdictions=jurisdictions,
        effective_from=_date(rule_id, "effective_from", raw.get("effective_from")),
        effective_to=None if effective_to is None else _date(rule_id, "effective_to", effective_to),
        priority=int(raw.get("priority") or 0),
        supersedes=tuple(str(s) for s in raw.get("supersedes") or ()),
        citations=tuple(str(c) for c in decision.get("citations", [])),
        severities=MappingProxyType(dict(severities)),
        lineage_required=bool(audit.get("lineage_required", False)),
        ledger_reference=audit.get("ledger_reference"),
        countries=frozenset(c for c in jurisdictions if c != "EU")
        | (EU_MEMBER_STATES if "EU" in jurisdictions else set()),
        **_compile_criteria(rule_id, payload.get("criteria") or {}),
    )


def compile_rules(rules: Iterable[Mapping[str, Any] | Rule]) -> tuple[Rule, ...]:
    """:func:`compile_rule` over a list (compile once and reuse the result on hot paths)."""
    return tuple(compile_rule(r) for r in rules)


def agreement_parties(rules: Iterable[Rule], agreement_code: str) -> tuple[str, ...]:
    """Sorted union of the jurisdictions of the agreement's rules (its parties, e.g. CA, EU)."""
    return tuple(sorted({j for r in rules if r.agreement_code == agreement_code for j in r.jurisdictions}))


# --- rule selection -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """What a rule must apply to: agreement, 6-digit product code, route and date."""

    agreement_code: str
    hs_code: str
    origin_country: str
    destination_country: str
    on_date: dt.date


@dataclass(frozen=True, slots=True)
class RuleSelection:
    """The rule that governs a product, and the applicable rules it was chosen from."""

    rule: Rule | None
    applicable: tuple[Rule, ...]
    superseded: tuple[str, ...]


def applicability(rule: Rule, target: Target) -> str | None:
    """Why ``rule`` does not apply to the target product, route and date (None when it applies)."""
    if rule.agreement_code != target.agreement_code:
        return f"it belongs to {rule.agreement_code}, not {target.agreement_code}"
    if not rule.matches(target.hs_code):
        return f"it covers HS {rule.hs_code}, not {target.hs_code}"
    for country in (target.origin_country, target.destination_country):
        if not rule.covers(country):
            return f"its jurisdictions {', '.join(rule.jurisdictions)} do not cover {country}"
    if not rule.effective_on(target.on_date):
        end = rule.effective_to.isoformat() if rule.effective_to else "open"
        return f"it is effective {rule.effective_from.isoformat()} to {end}, not on {target.on_date.isoformat()}"
    return None


def select_rule(rules: Iterable[Rule], target: Target) -> RuleSelection:
    """Most specific (subheading > heading > chapter), then highest-priority applicable, non-superseded rule."""
    applicable = sorted(
        (r for r in rules if applicability(r, target) is None),
        key=lambda r: (-r.level, -r.priority, -r.effective_from.toordinal(), r.rule_id),
    )
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


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything an evaluation needs about the product (already validated and normalized)."""

    hs_code: str
    #: None: no bill of materials was given (criteria that need it are then unknown).
    materials: tuple[Material, ...] | None
    ex_works_price: Decimal | None
    transaction_value: Decimal | None
    net_cost: Decimal | None
    processes: frozenset[str] | None

    @property
    def product_value(self) -> Decimal | None:
        """AV: the ex-works price when given, else the transaction value (None when neither is given)."""
        return self.ex_works_price if self.ex_works_price is not None else self.transaction_value


@dataclass(frozen=True, slots=True)
class Reason:
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
    reasons: tuple[Reason, ...]


@dataclass(frozen=True, slots=True)
class Figures:
    """The computed values behind a verdict: values in the request's currency, percentages in % (4 decimals)."""

    product_value: float | None
    originating_value: float | None
    non_originating_value: float | None
    non_shifting_value: float | None = None
    rvc_method: str | None = None
    rvc_percent: float | None = None
    rvc_threshold: float | None = None
    nom_percent: float | None = None
    nom_max_percent: float | None = None
    de_minimis_percent: float | None = None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Status, confidence, reasons and figures of one rule applied to one product."""

    status: str
    confidence: float
    reasons: tuple[Reason, ...]
    figures: Figures
    outcomes: tuple[Outcome, ...]


def _pct(value: Decimal) -> str:
    return f"{value:.2f}%"


def _num(value: Decimal) -> str:
    return f"{value:f}"


def _f(value: Decimal | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _result(
    rule: Rule, criterion: str, result: str, code: str, message: str, margin: Decimal | None = None, dm: bool = False
) -> Outcome:
    """One criterion's outcome with its one finding (pass: info; unknown: medium; fail: the payload's severity)."""
    severity = "info" if result == PASS else ("medium" if result == UNKNOWN else rule.severity(code))
    return Outcome(criterion, result, margin, dm, (Reason(code, severity, message, rule.clause(criterion)),))


_BOM = "bill_of_materials"
_AV = "ex_works_price (or transaction_value)"


def _missing(rule: Rule, criterion: str, requirement: str, needs: Sequence[str], missing: Sequence[str]) -> Outcome:
    """An unknown outcome naming the rule, its requirement, what it needs and which of that was not given."""
    code = "MISSING_" + missing[0].split(" ")[0].upper() if len(missing) == 1 else "MISSING_INPUTS"
    message = f"{rule.rule_id}: {requirement} needs {' and '.join(needs)}; not given: {', '.join(missing)}."
    return _result(rule, criterion, UNKNOWN, code, message)


def _tariff_shift(rule: Rule, facts: Facts, non_originating: list[Material]) -> tuple[Outcome, Decimal | None]:
    shift = rule.tariff_shift
    assert shift is not None
    digits = TARIFF_SHIFT_TYPES[shift.type]
    level, product_part = _LEVEL_NAMES[digits], facts.hs_code[:digits]
    if facts.materials is None:
        requirement = f"{shift.type} (every non-originating input changes {level})"
        return _missing(rule, "tariff_shift", requirement, [f"{_BOM} (HS code and origin of each input)"], [_BOM]), None
    failing: list[str] = []
    failing_value = Decimal(0)
    for m in non_originating:
        label = f"bill_of_materials[{m.index}] (HS {m.hs_code} from {m.origin_country})"
        excepted = next((e for e in shift.exceptions if m.hs_code.startswith(e)), None)
        if m.hs_code[:digits] == product_part:
            failing.append(f"{label} does not change {level} {product_part}")
        elif excepted is not None:
            failing.append(f"{label} comes from excepted HS {excepted}")
        else:
            continue
        failing_value += m.value
    if not failing:
        what = f"every non-originating input changes {level}" if non_originating else "no input is non-originating"
        return _result(rule, "tariff_shift", PASS, "TARIFF_SHIFT_MET", f"{shift.type} met: {what}."), failing_value
    detail, tolerance = "; ".join(failing), rule.de_minimis_percent
    if tolerance is None:
        message = f"{shift.type} not met: {detail}."
        return _result(rule, "tariff_shift", FAIL, "TARIFF_SHIFT_NOT_MET", message), failing_value
    if facts.product_value is None:
        requirement = f"{shift.type} with the {_num(tolerance)}% de minimis tolerance ({detail})"
        return _missing(rule, "tariff_shift", requirement, [_AV], ["ex_works_price"]), failing_value
    share = failing_value / facts.product_value * _HUNDRED
    summary = f"{detail}; their value {_num(failing_value)} is {_pct(share)} of the product value"
    if share <= tolerance:
        message = f"{shift.type} met with the de minimis tolerance: {summary}, within {_num(tolerance)}%."
        return _result(rule, "tariff_shift", PASS, "DE_MINIMIS_APPLIED", message, tolerance - share, True), (
            failing_value
        )
    message = f"{shift.type} not met: {summary}, above the {_num(tolerance)}% de minimis tolerance."
    return _result(rule, "tariff_shift", FAIL, "TARIFF_SHIFT_NOT_MET", message, share - tolerance), failing_value


def _rvc(rule: Rule, facts: Facts, vom: Decimal, vnm: Decimal) -> tuple[Outcome, Decimal | None]:
    req = rule.rvc
    assert req is not None
    av, av_name = facts.product_value, "ex-works price" if facts.ex_works_price is not None else "transaction value"
    base = {"transaction_value": facts.transaction_value, "net_cost": facts.net_cost}.get(req.method, av)
    if base is None or facts.materials is None:
        field = req.method if req.method in ("net_cost", "transaction_value") else "ex_works_price"
        named = _AV if field == "ex_works_price" else field
        missing = ([field] if base is None else []) + ([_BOM] if facts.materials is None else [])
        requirement = f"RVC ({req.method.replace('_', '-')}) ≥ {_num(req.threshold)}%"
        return _missing(rule, "rvc", requirement, [named, f"the values of {_BOM}"], missing), None
    if req.method == "build_up":
        assert av is not None  # build-up's base is AV
        value, formula = vom, f"VOM {_num(vom)} / AV {_num(av)} ({av_name})"
    else:
        name = {"build_down": "AV", "transaction_value": "TV", "net_cost": "NC"}[req.method]
        value, formula = base - vnm, f"({name} {_num(base)} − VNM {_num(vnm)}) / {name}"
        formula += f" ({av_name})" if name == "AV" else ""
    rvc = value / base * _HUNDRED
    message = (
        f"RVC ({req.method.replace('_', '-')}) = {formula} = {_pct(rvc)}; at least {_num(req.threshold)}% is required."
    )
    if rvc >= req.threshold:
        return _result(rule, "rvc", PASS, "RVC_MET", message, rvc - req.threshold), rvc
    return _result(rule, "rvc", FAIL, "INSUFFICIENT_RVC", message, req.threshold - rvc), rvc


def _max_nom(rule: Rule, facts: Facts, vnm: Decimal) -> tuple[Outcome, Decimal | None]:
    limit, criterion = rule.non_originating_max_percent, "non_originating_max_percent"
    assert limit is not None
    if facts.ex_works_price is None or facts.materials is None:
        missing = (["ex_works_price"] if facts.ex_works_price is None else []) + (
            [_BOM] if facts.materials is None else []
        )
        requirement = f"non-originating materials ≤ {_num(limit)}% of the ex-works price"
        return _missing(rule, criterion, requirement, ["ex_works_price", f"the values of {_BOM}"], missing), None
    nom = vnm / facts.ex_works_price * _HUNDRED
    message = (
        f"non-originating materials = VNM {_num(vnm)} / ex-works price {_num(facts.ex_works_price)} = "
        f"{_pct(nom)}; at most {_num(limit)}% is allowed."
    )
    if nom <= limit:
        return _result(rule, criterion, PASS, "NON_ORIGINATING_WITHIN_LIMIT", message, limit - nom), nom
    return _result(rule, criterion, FAIL, "NON_ORIGINATING_EXCEEDED", message, nom - limit), nom


def _process(rule: Rule, facts: Facts) -> Outcome:
    if facts.processes is None:
        checks = ", ".join(rule.process_required + rule.process_disallowed)
        message = f"{rule.rule_id}: the operations {checks} are checked, which needs processes; not given: processes."
        return _result(rule, "process", UNKNOWN, "PROCESS_DATA_MISSING", message)
    missing = [p for p in rule.process_required if p not in facts.processes]
    forbidden = [p for p in rule.process_disallowed if p in facts.processes]
    failures = [
        _result(rule, "process", FAIL, code, message)
        for code, names, message in (
            ("MISSING_PROCESS", missing, f"required operation(s) {', '.join(missing)} not performed."),
            ("DISALLOWED_PROCESS", forbidden, f"operation(s) {', '.join(forbidden)} do not confer origin."),
        )
        if names
    ]
    if failures:
        return Outcome("process", FAIL, None, False, tuple(f for o in failures for f in o.reasons))
    done = ", ".join(rule.process_required) or "no disallowed operation"
    return _result(rule, "process", PASS, "PROCESS_MET", f"performed in the origin country: {done}.")


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
    non_originating: list[Material] = []
    vom = vnm = Decimal(0)
    for m in facts.materials or ():
        if m.origin_country in rule.countries:
            vom += m.value
        else:
            vnm += m.value
            non_originating.append(m)
    criteria: list[Outcome] = []
    figures: dict[str, Any] = {}
    if rule.tariff_shift is not None:
        outcome, non_shifting = _tariff_shift(rule, facts, non_originating)
        criteria.append(outcome)
        figures.update(non_shifting_value=_f(non_shifting), de_minimis_percent=_f(rule.de_minimis_percent))
    if rule.rvc is not None:
        outcome, rvc = _rvc(rule, facts, vom, vnm)
        criteria.append(outcome)
        figures.update(rvc_method=rule.rvc.method, rvc_percent=_f(rvc), rvc_threshold=_f(rule.rvc.threshold))
    if rule.non_originating_max_percent is not None:
        outcome, nom = _max_nom(rule, facts, vnm)
        criteria.append(outcome)
        figures.update(nom_percent=_f(nom), nom_max_percent=_f(rule.non_originating_max_percent))
    process = _process(rule, facts) if rule.process_required or rule.process_disallowed else None
    results = [o.result for o in criteria]
    combined = _all(results) if rule.combination == "all" else _any(results)
    final = _all([combined] + ([process.result] if process is not None else []))
    status = {PASS: "qualified", FAIL: "not_qualified", UNKNOWN: "insufficient_data"}[final]
    reasons: list[Reason] = []
    for outcome in criteria:
        if status == "qualified" and outcome.result != PASS:
            # An alternative that was not needed: keep it visible, but only as information.
            reasons.extend(
                Reason(f.code, "info", f.message + " (not needed: another alternative is met)", f.clause)
                for f in outcome.reasons
            )
        else:
            reasons.extend(outcome.reasons)
    if process is not None:
        reasons.extend(process.reasons)
    return Evaluation(
        status=status,
        confidence=confidence(status, rule.combination, criteria, process),
        reasons=tuple(reasons),
        figures=Figures(
            None if facts.product_value is None else float(facts.product_value),
            None if facts.materials is None else float(vom),
            None if facts.materials is None else float(vnm),
            **figures,
        ),
        outcomes=tuple(criteria) + ((process,) if process is not None else ()),
    )
