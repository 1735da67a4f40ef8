"""Rule evaluation: a compiled rule against the facts of one product; pure, deterministic.

See :mod:`psra_bench.psra.rules` for the vocabulary (originating, VNM, VOM, AV).

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

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from psra_bench.psra.rules import TARIFF_SHIFT_TYPES, Rule

__all__ = ["Material", "Facts", "Reason", "Outcome", "Figures", "Evaluation", "evaluate", "confidence"]

#: Names of the HS levels a tariff shift works at.
_LEVEL_NAMES = {2: "chapter", 4: "heading", 6: "subheading"}

#: A criterion's outcome.
PASS = "pass"
FAIL = "fail"
UNKNOWN = "unknown"

_HUNDRED = Decimal(100)
_THIN_MARGIN_POINTS = 5.0
_MARGIN_WEIGHT = 0.3
_DE_MINIMIS_WEIGHT = 0.1
_MAX_PENALTY = 0.5


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
