"""Pure rules-of-origin logic: countries, rule compilation and rule selection.

Nothing here touches a database, a clock or a random source: the same rules and facts give the
same result, so :mod:`psra_bench.psra.assessment` can call it hundreds of times per second.

Vocabulary. An *input* (BOM line) is **originating** when its origin country is covered by the
rule's jurisdictions (``"EU"`` covers the 27 member states). VNM is the value of the
non-originating inputs, VOM the value of the originating ones, AV the ex-works price when given,
else the transaction value. A criterion's outcome is ``pass``, ``fail`` or ``unknown`` (a value it
needs is missing).
Evaluation and its confidence formula live in :mod:`psra_bench.psra.evaluation`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
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
    "Target",
    "RuleSelection",
    "jurisdiction_covers",
    "party_of",
    "agreement_parties",
    "compile_rule",
    "compile_rules",
    "applicability",
    "select_rule",
]

#: The 27 member states of the European Union (ISO 3166-1 alpha-2; Greece is GR, not EL).
EU_MEMBER_STATES: frozenset[str] = frozenset(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split()
)

#: Tariff-shift types -> how many HS digits must change (chapter, heading, subheading).
TARIFF_SHIFT_TYPES: dict[str, int] = {"CC": 2, "CTH": 4, "CTSH": 6}
#: Regional value content methods a rule may name.
RVC_METHODS: tuple[str, ...] = ("build_up", "build_down", "transaction_value", "net_cost")
#: Reason severities, mildest first.
SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")
_CRITERIA_KEYS = frozenset(
    {"combination", "tariff_shift", "rvc", "non_originating_max_percent", "de_minimis_percent", "process"}
)


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
