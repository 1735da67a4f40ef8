"""The assessment engine: rule selection, every criterion on worked examples, hashing, validation, storage.

Worked examples spell out their arithmetic. Notation: AV = ex-works price (else transaction value),
VNM/VOM = value of non-originating/originating inputs, TV = transaction value, NC = net cost.
Confidence = 1 − min(0.5, p), p = 0.3·t (+0.1 when de minimis saved the tariff shift) with
t = max(0, 1 − margin/5) for the criterion the verdict rests on (see psra_bench.psra.rules).
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from typing import Any

import psycopg
import pydantic
import pytest

from psra_bench.db.reference import rules as vendored_rules
from psra_bench.exceptions import InputError, RuleDefinitionError
from psra_bench.infra import postgres as db
from psra_bench.psra import rules as orr
from psra_bench.psra.assessment import (
    UNMATCHED_RULE_ID,
    AssessmentRequest,
    Verdict,
    assess,
    default_rules,
    input_hash,
    parse_request,
    validation_error_from_pydantic,
    verdict_to_dict,
)
from psra_bench.psra.storage import assess_and_store, load_rules
from psra_bench.settings import Settings

TENANT = uuid.UUID("11111111-2222-4333-8444-555555555555")
RULES = default_rules()


def raw_rule(source: str, **changes: Any) -> dict[str, Any]:
    """A deep copy of the vendored rule ``source`` with top-level fields replaced."""
    rule = copy.deepcopy(next(r for r in vendored_rules() if r["rule_id"] == source))
    rule.update(changes)
    return rule


def line(hs: str, country: str, value: float | str) -> dict[str, Any]:
    """One BOM line."""
    return {"hs_code": hs, "origin_country": country, "value": value}


def request(**fields: Any) -> dict[str, Any]:
    """A valid request dict (CETA polyethylene, DE -> CA) with ``fields`` replaced."""
    base: dict[str, Any] = {
        "hs_code": "3901.10",
        "agreement_code": "CETA",
        "origin_country": "DE",
        "destination_country": "CA",
        "assessment_date": "2024-06-01",
        "tenant_id": str(TENANT),
        "ex_works_price": 100,
        "processes": ["POLYMERIZATION"],
        "bill_of_materials": [line("290121", "FR", 65), line("381519", "US", 10)],
    }
    base.update(fields)
    return base


def codes(verdict: Verdict) -> dict[str, str]:
    """Reason code -> severity."""
    return {r.code: r.severity for r in verdict.reasons}


def target(agreement: str, hs: str, origin: str, dest: str, day: str) -> orr.Target:
    return orr.Target(agreement, hs, origin, dest, dt.date.fromisoformat(day))


# --- rule selection ------------------------------------------------------------------------


def test_most_specific_level_wins_then_priority() -> None:
    # 390110 matches CETA-HS39-001 (subheading) and CETA-HS39-000 (chapter 39): the subheading wins.
    sel = orr.select_rule(RULES, target("CETA", "390110", "DE", "CA", "2024-06-01"))
    assert sel.rule is not None and sel.rule.rule_id == "CETA-HS39-001"
    assert {r.rule_id for r in sel.applicable} == {"CETA-HS39-000", "CETA-HS39-001"}
    # 390120 only falls under the chapter rule.
    sel = orr.select_rule(RULES, target("CETA", "390120", "DE", "CA", "2024-06-01"))
    assert sel.rule is not None and sel.rule.rule_id == "CETA-HS39-000" and len(sel.applicable) == 1
    # Specificity comes before priority: a chapter rule with priority 99 still loses.
    loud = orr.compile_rule(raw_rule("CETA-HS39-000", rule_id="CETA-HS39-LOUD", priority=99))
    sel = orr.select_rule((*RULES, loud), target("CETA", "390110", "DE", "CA", "2024-06-01"))
    assert sel.rule is not None and sel.rule.rule_id == "CETA-HS39-001"
    # Same level: the higher priority wins, whatever the list order.
    low = orr.compile_rule(raw_rule("CETA-HS84-001", rule_id="CETA-HS84-LOW", priority=5))
    high = orr.compile_rule(raw_rule("CETA-HS84-001", rule_id="CETA-HS84-HIGH", priority=15))
    for rules in ((low, high), (high, low)):
        sel = orr.select_rule(rules, target("CETA", "847130", "FR", "CA", "2024-06-01"))
        assert sel.rule is not None and sel.rule.rule_id == "CETA-HS84-HIGH"


def test_effective_dates_switch_tca_tyre_rule_on_2024_01_01() -> None:
    def chosen(day: str) -> str | None:
        rule = orr.select_rule(RULES, target("EU-UK-TCA", "401110", "DE", "GB", day)).rule
        return rule.rule_id if rule else None

    assert chosen("2020-12-31") is None  # before the TCA applied
    assert chosen("2021-01-01") == "TCA-HS40-001"
    assert chosen("2023-12-31") == "TCA-HS40-001"  # effective_to is inclusive
    assert chosen("2024-01-01") == "TCA-HS40-002"
    assert chosen("2030-01-01") == "TCA-HS40-002"  # open end


def test_superseded_rule_is_excluded_even_with_higher_priority() -> None:
    # Pretend TCA-HS40-001 never expired and had priority 99: TCA-HS40-002 supersedes it anyway.
    eternal = orr.compile_rule(raw_rule("TCA-HS40-001", effective_to=None, priority=99))
    rules = [eternal if r.rule_id == "TCA-HS40-001" else r for r in RULES]
    sel = orr.select_rule(rules, target("EU-UK-TCA", "401110", "IT", "GB", "2024-06-01"))
    assert sel.rule is not None and sel.rule.rule_id == "TCA-HS40-002"
    assert sel.superseded == ("TCA-HS40-001",)
    assert len(sel.applicable) == 2


def test_jurisdictions_eu_covers_member_states_only() -> None:
    assert len(orr.EU_MEMBER_STATES) == 27
    assert orr.jurisdiction_covers("EU", "DE") and orr.jurisdiction_covers("EU", "HR")
    assert not orr.jurisdiction_covers("EU", "GB") and not orr.jurisdiction_covers("EU", "CH")
    # CETA-HS84-001 (EU, CA) covers DE -> CA; a rule limited to CA and FR does not.
    narrow = orr.compile_rule(raw_rule("CETA-HS84-001", rule_id="CETA-FR-ONLY", jurisdictions=["CA", "FR"]))
    rules = (narrow,)
    assert orr.select_rule(rules, target("CETA", "847130", "FR", "CA", "2024-06-01")).rule == narrow
    assert orr.select_rule(rules, target("CETA", "847130", "DE", "CA", "2024-06-01")).rule is None
    why = orr.applicability(narrow, target("CETA", "847130", "DE", "CA", "2024-06-01"))
    assert why is not None and "DE" in why


# --- criteria on worked examples -----------------------------------------------------------


def usmca_apparel(*bom: dict[str, Any]) -> Verdict:
    """USMCA-2024-03: chapter 61, CC except yarns/fabrics of 5106-5113, 5204-5212, ..., 6001-6006; de minimis 10%."""
    return assess(
        request(
            hs_code="6110.20",
            agreement_code="USMCA",
            origin_country="MX",
            destination_country="US",
            ex_works_price=100,
            processes=None,
            bill_of_materials=list(bom),
        ),
        RULES,
    )


def test_change_of_chapter_met_and_failed_by_exception() -> None:
    # Cotton fibre 5201 (CN) is chapter 52 -> 61 and not an excepted heading; buttons 9606 shift too.
    v = usmca_apparel(line("520512", "US", 40), line("520100", "CN", 20), line("960610", "CN", 5))
    assert v.status == "qualified" and v.rule_id == "USMCA-2024-03"
    assert codes(v) == {"TARIFF_SHIFT_MET": "info"} and v.confidence == 1.0
    # Knitted fabric 6006 (CN) is an excepted heading: 30 of AV 100 = 30% fails, 20 points above 10%.
    v = usmca_apparel(line("520512", "US", 40), line("600622", "CN", 30))
    assert v.status == "not_qualified" and codes(v) == {"TARIFF_SHIFT_NOT_MET": "high"}
    assert "excepted HS 6006" in v.reasons[0].message
    assert v.figures is not None and v.figures.non_shifting_value == 30.0
    # An input of chapter 61 itself (611030, CN) does not change chapter.
    v = usmca_apparel(line("611030", "CN", 50))
    assert v.status == "not_qualified" and "does not change chapter 61" in v.reasons[0].message
    assert v.confidence == 1.0  # 50% vs 10% tolerance: 40 points of margin, t = 0


def test_de_minimis_saves_the_tariff_shift() -> None:
    # The excepted knitted fabric is worth 8 of AV 100 = 8% <= 10% de minimis: qualified.
    # Margin 10 − 8 = 2 points: t = 1 − 2/5 = 0.6; p = 0.3·0.6 + 0.1 (de minimis) = 0.28; confidence 0.72.
    v = usmca_apparel(line("520512", "US", 40), line("600622", "CN", 8))
    assert v.status == "qualified"
    assert codes(v) == {"DE_MINIMIS_APPLIED": "info"}
    assert v.confidence == pytest.approx(0.72)
    # 10.5 of 100 = 10.5% is over the tolerance: not qualified.
    assert usmca_apparel(line("520512", "US", 40), line("600622", "CN", 10.5)).status == "not_qualified"


def test_change_of_heading_with_an_exception() -> None:
    # A CTH rule for 8471 that excepts heading 8473 (parts of ADP machines), combination all.
    raw = raw_rule("CETA-HS84-001", rule_id="CETA-CTH-X8473")
    raw["payload"]["criteria"] = {"combination": "all", "tariff_shift": {"type": "CTH", "exceptions": ["8473"]}}
    rules = (orr.compile_rule(raw),)

    def verdict(*bom: dict[str, Any]) -> Verdict:
        return assess(request(hs_code="847130", processes=None, bill_of_materials=list(bom)), rules)

    # Processors 8542 (CN) change heading: met.
    assert verdict(line("854231", "CN", 40)).status == "qualified"
    # Parts of heading 8473 (CN): a change, but from an excepted heading -> fails.
    v = verdict(line("854231", "CN", 40), line("847330", "CN", 10))
    assert v.status == "not_qualified" and "excepted HS 8473" in v.reasons[0].message
    # Storage units 847170 (CN) stay in heading 8471 -> fails; originating ones (NL) are ignored.
    v = verdict(line("847170", "CN", 10))
    assert v.status == "not_qualified" and "does not change heading 8471" in v.reasons[0].message
    assert verdict(line("847170", "NL", 10)).status == "qualified"


def usmca_laptop(*bom: dict[str, Any], **fields: Any) -> Verdict:
    """USMCA-2024-01: 847130, CTSH (de minimis 10%) OR RVC ≥ 60% by the transaction-value method."""
    fields = {"ex_works_price": None, "transaction_value": 1000, **fields}
    return assess(
        request(
            hs_code="847130",
            agreement_code="USMCA",
            origin_country="MX",
            destination_country="US",
            processes=None,
            bill_of_materials=list(bom),
            **fields,
        ),
        RULES,
    )


def test_change_of_subheading() -> None:
    # 847170 (CN) is heading 8471 but another subheading: CTSH is met although CTH would not be.
    v = usmca_laptop(line("847170", "CN", 300), line("854231", "CN", 200))
    assert v.status == "qualified" and v.rule_id == "USMCA-2024-01"
    assert codes(v)["TARIFF_SHIFT_MET"] == "info"


def test_transaction_value_rvc_rescues_a_failed_shift_in_an_any_rule() -> None:
    # 847130 (CN) worth 300 does not change subheading: 300/1000 = 30% > 10% de minimis, CTSH fails.
    # RVC = (TV − VNM)/TV = (1000 − 300)/1000 = 70% >= 60%: the alternative passes -> qualified,
    # and the failed alternative is kept as information only. RVC margin 10 points: confidence 1.0.
    v = usmca_laptop(line("847130", "CN", 300), line("854231", "US", 400))
    assert v.status == "qualified"
    assert codes(v) == {"TARIFF_SHIFT_NOT_MET": "info", "RVC_MET": "info"}
    assert v.figures is not None and v.figures.rvc_percent == 70.0 and v.figures.rvc_method == "transaction_value"
    assert v.confidence == 1.0
    # VNM 410: CTSH fails (41%) and RVC = 590/1000 = 59% < 60% fails by 1 point -> not qualified.
    # Both alternatives failed; the thinnest one decides: t = 1 − 1/5 = 0.8, p = 0.24, confidence 0.76.
    v = usmca_laptop(line("847130", "CN", 410), line("854231", "US", 400))
    assert v.status == "not_qualified"
    assert codes(v) == {"TARIFF_SHIFT_NOT_MET": "high", "INSUFFICIENT_RVC": "high"}
    assert v.figures is not None and v.figures.rvc_percent == 59.0
    assert v.confidence == pytest.approx(0.76)
    # Only an ex-works price: CTSH fails and the TV method has no TV -> the rule cannot be decided.
    v = usmca_laptop(line("847130", "CN", 410), transaction_value=None, ex_works_price=1000)
    assert v.status == "insufficient_data" and codes(v)["MISSING_TRANSACTION_VALUE"] == "medium"


def test_build_up_rvc_and_required_process() -> None:
    # CETA-HS39-001: polymerization AND RVC build-up >= 60%. VOM = 65 (ethylene from FR, an EU
    # member, is originating); RVC = VOM/AV = 65/100 = 65% -> 5 points of margin, t = 0: 1.0.
    v = assess(request(), RULES)
    assert v.status == "qualified" and v.rule_id == "CETA-HS39-001"
    assert codes(v) == {"RVC_MET": "info", "PROCESS_MET": "info"} and v.confidence == 1.0
    assert v.figures is not None and (v.figures.originating_value, v.figures.non_originating_value) == (65.0, 10.0)
    assert v.lineage_required and v.ledger_reference == "ledger://ceta/hs39"
    assert [(c.rule_id, c.clause) for c in v.citations] == [("CETA-HS39-001", "CETA Annex 5-A, HS 39")]
    # VOM 61: 61% passes by 1 point: t = 0.8, p = 0.24, confidence 0.76.
    v = assess(request(bill_of_materials=[line("290121", "FR", 61), line("381519", "US", 10)]), RULES)
    assert v.status == "qualified" and v.confidence == pytest.approx(0.76)
    # The process is missing: not qualified whatever the RVC; a process failure is robust (1.0).
    v = assess(request(processes=["extrusion"]), RULES)
    assert v.status == "not_qualified" and codes(v)["MISSING_PROCESS"] == "high" and v.confidence == 1.0
    # Processes not declared at all: the rule cannot be decided.
    v = assess(request(processes=None), RULES)
    assert v.status == "insufficient_data" and "PROCESS_DATA_MISSING" in codes(v) and v.confidence == 0.0


def test_build_down_rvc() -> None:
    # EUJP-HS87-001: RVC build-down >= 55%. JP -> DE; engine from JP is originating.
    # VNM = 5000 (CN gearbox) + 3000 (TH body) = 8000; RVC = (AV − VNM)/AV = (20000 − 8000)/20000 = 60%.
    bom = [line("840734", "JP", 6000), line("870840", "CN", 5000), line("870710", "TH", 3000)]
    fields = {"hs_code": "870323", "agreement_code": "EU-JP-EPA", "origin_country": "JP", "processes": None}
    v = assess(request(destination_country="DE", ex_works_price=20000, bill_of_materials=bom, **fields), RULES)
    assert v.status == "qualified" and v.rule_id == "EUJP-HS87-001"
    assert v.figures is not None and v.figures.rvc_percent == 60.0 and v.confidence == 1.0
    # Without an ex-works price AV is the transaction value: (16000 − 8000)/16000 = 50% < 55%.
    v = assess(
        request(
            destination_country="DE", ex_works_price=None, transaction_value=16000, bill_of_materials=bom, **fields
        ),
        RULES,
    )
    assert v.status == "not_qualified" and v.figures is not None and v.figures.rvc_percent == 50.0


def test_net_cost_rvc_and_missing_net_cost() -> None:
    # USMCA-2024-02 (heading 8703): RVC net cost >= 75%. VNM = 4000 (CN gearbox);
    # RVC = (NC − VNM)/NC = (20000 − 4000)/20000 = 80%.
    fields = {
        "hs_code": "870323",
        "agreement_code": "USMCA",
        "origin_country": "MX",
        "destination_country": "US",
        "processes": None,
        "transaction_value": 25000,
        "ex_works_price": None,
        "bill_of_materials": [line("840734", "MX", 12000), line("870840", "CN", 4000)],
    }
    v = assess(request(net_cost=20000, **fields), RULES)
    assert v.status == "qualified" and v.rule_id == "USMCA-2024-02"
    assert v.figures is not None and v.figures.rvc_percent == 80.0
    # No net cost given: the only criterion cannot be computed.
    v = assess(request(**fields), RULES)
    assert v.status == "insufficient_data" and codes(v) == {"MISSING_NET_COST": "medium"}


def tca_tyre(*bom: dict[str, Any], **fields: Any) -> Verdict:
    """TCA-HS40-002 (from 2024): vulcanization, not PACKAGING_ONLY, non-originating <= 40% of ex-works."""
    base = {
        "hs_code": "401110",
        "agreement_code": "EU-UK-TCA",
        "origin_country": "DE",
        "destination_country": "GB",
        "processes": ["VULCANIZATION"],
        "bill_of_materials": list(bom),
    }
    return assess(request(**{**base, **fields}), RULES)


def test_max_non_originating_content() -> None:
    # VNM = 30 (TH rubber) + 8 (US carbon black) = 38; steel cord from DE is originating.
    # MaxNOM = VNM / ex-works = 38/100 = 38% <= 40%: margin 2 points, t = 0.6, p = 0.18, confidence 0.82.
    bom = (line("400129", "TH", 30), line("280300", "US", 8), line("731210", "DE", 20))
    v = tca_tyre(*bom)
    assert v.status == "qualified" and v.rule_id == "TCA-HS40-002"
    assert v.figures is not None and v.figures.nom_percent == 38.0 and v.figures.nom_max_percent == 40.0
    assert v.confidence == pytest.approx(0.82)
    # Rubber at 37: VNM 45 -> 45% > 40%.
    v = tca_tyre(line("400129", "TH", 37), line("280300", "US", 8))
    assert v.status == "not_qualified" and codes(v)["NON_ORIGINATING_EXCEEDED"] == "high"
    # The same BOM on 2023-06-01 falls under TCA-HS40-001 (max 50%, no process): qualified.
    v = tca_tyre(line("400129", "TH", 37), line("280300", "US", 8), assessment_date="2023-06-01")
    assert v.status == "qualified" and v.rule_id == "TCA-HS40-001"
    # A disallowed operation fails the rule; only a transaction value: MaxNOM cannot be computed.
    v = tca_tyre(*bom, processes=["VULCANIZATION", "PACKAGING_ONLY"])
    assert v.status == "not_qualified" and "DISALLOWED_PROCESS" in codes(v)
    v = tca_tyre(*bom, ex_works_price=None, transaction_value=100)
    assert v.status == "insufficient_data" and "MISSING_EX_WORKS_PRICE" in codes(v)


def test_combination_any_versus_all() -> None:
    # Processors from CN worth 60 of ex-works 100: CTH is met (8542 -> 8471), MaxNOM 60% > 50% fails.
    bom = [line("854231", "CN", 60), line("847330", "FR", 20)]
    req = request(hs_code="847130", processes=None, bill_of_materials=bom)
    any_rule = orr.compile_rule(raw_rule("CETA-HS84-001"))
    raw_all = raw_rule("CETA-HS84-001", rule_id="CETA-HS84-ALL")
    raw_all["payload"]["criteria"]["combination"] = "all"
    all_rule = orr.compile_rule(raw_all)
    v_any = assess(req, (any_rule,))
    v_all = assess(req, (all_rule,))
    assert v_any.status == "qualified"
    assert codes(v_any) == {"TARIFF_SHIFT_MET": "info", "NON_ORIGINATING_EXCEEDED": "info"}
    assert v_all.status == "not_qualified"
    assert codes(v_all) == {"TARIFF_SHIFT_MET": "info", "NON_ORIGINATING_EXCEEDED": "medium"}


def test_no_applicable_rule_is_insufficient_data() -> None:
    # 847141 is a known subheading, but USMCA has no rule for it (only 847130).
    v = assess(request(hs_code="847141", agreement_code="USMCA", origin_country="MX", destination_country="US"), RULES)
    assert v.status == "insufficient_data" and v.rule_id is None and v.rules_evaluated == 0
    assert codes(v) == {"NO_APPLICABLE_RULE": "high"} and v.confidence == 0.0 and v.figures is None


def test_forced_rule_id() -> None:
    # Forcing the chapter rule for 390110 (the subheading rule would be selected otherwise); the
    # agreement is taken from the rule. CTH: ethylene (2901) -> 3901 shifts; MaxNOM 10% <= 50%.
    v = assess(request(agreement_code=None, rule_id="ceta-hs39-000"), RULES)
    assert v.rule_id == "CETA-HS39-000" and v.agreement_code == "CETA" and v.status == "qualified"
    with pytest.raises(InputError) as e:
        assess(request(rule_id="USMCA-2024-01"), RULES)
    assert e.value.field == "rule_id"


# --- input hash ----------------------------------------------------------------------------


def test_input_hash_ignores_bom_order_and_formatting_but_not_tenant_or_values() -> None:
    a = request(bill_of_materials=[line("290121", "FR", 65), line("381519", "US", 10), line("381519", "US", 3)])
    b = request(
        hs_code="390110",
        agreement_code="ceta",
        processes=["polymerization", "POLYMERIZATION"],
        bill_of_materials=[line("3815.19", "us", "3.00"), line("381519", "US", 10), line("2901.21", "FR", 65.0)],
    )
    b["bill_of_materials"][0]["description"] = "catalyst"
    assert input_hash(parse_request(a)) == input_hash(parse_request(b))
    assert assess(a, RULES).input_hash == assess(b, RULES).input_hash
    other_tenant = request(tenant_id=str(uuid.uuid4()))
    assert assess(other_tenant, RULES).input_hash != assess(request(), RULES).input_hash
    other_value = request(bill_of_materials=[line("290121", "FR", 65.01), line("381519", "US", 10)])
    assert assess(other_value, RULES).input_hash != assess(request(), RULES).input_hash
    assert len(assess(a, RULES).input_hash) == 64


# --- validation ----------------------------------------------------------------------------

_BOM3 = [line("290121", "FR", 65), line("381519", "US", 10), line("381519", "US", -5)]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"hs_code": "847199"}, "hs_code"),  # well-formed but not in the HS table
        ({"hs_code": "84713"}, "hs_code"),
        ({"hs_code": "8471.30.10"}, "hs_code"),
        ({"bill_of_materials": [line("290121", "FR", 1), line("999998", "US", 1)]}, "bill_of_materials[1].hs_code"),
        ({"bill_of_materials": _BOM3}, "bill_of_materials[2].value"),
        ({"bill_of_materials": [line("290121", "FR", "NaN")]}, "bill_of_materials[0].value"),
        ({"bill_of_materials": [line("290121", "XX", 1)]}, "bill_of_materials[0].origin_country"),
        ({"bill_of_materials": []}, "bill_of_materials"),
        ({"agreement_code": "NAFTA"}, "agreement_code"),
        ({"agreement_code": None}, "agreement_code"),
        ({"ex_works_price": 0}, "ex_works_price"),
        ({"ex_works_price": None}, "ex_works_price"),
        ({"ex_works_price": None, "transaction_value": -1}, "transaction_value"),
        ({"net_cost": 0}, "net_cost"),
        ({"origin_country": "UK"}, "origin_country"),
        ({"origin_country": "XX"}, "origin_country"),
        ({"origin_country": "CN"}, "origin_country"),  # not a party of CETA
        ({"destination_country": "DE"}, "destination_country"),  # origin == destination
        ({"destination_country": "FR"}, "destination_country"),  # both in the EU: intra-party trade
        ({"tenant_id": "not-a-uuid"}, "tenant_id"),
        ({"tenant_id": None}, "tenant_id"),
        ({"assessment_date": "2024-02-30"}, "assessment_date"),
        ({"rule_id": "CETA-HS99-999"}, "rule_id"),
        ({"rule_id": "CETA-HS84-001"}, "rule_id"),  # exists, but covers 8471, not 390110
        ({"processes": ["POLY MERIZATION!"]}, "processes[0]"),
        ({"exworks_price": 100}, "exworks_price"),
    ],
)
def test_every_validation_error_names_its_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as e:
        assess(request(**changes), RULES)
    assert e.value.field == field
    message = str(e.value)
    assert message.startswith(f"{field}=") and message.endswith(".") and "is not valid: " in message


def test_validation_error_from_pydantic_maps_the_dotted_path() -> None:
    with pytest.raises(pydantic.ValidationError) as e:
        AssessmentRequest.model_validate(request(bill_of_materials=[line("290121", "FR", 1), line("2901", "FR", 1)]))
    mapped = validation_error_from_pydantic(e.value)
    assert mapped.field == "bill_of_materials[1].hs_code" and mapped.value == "2901"
    assert "6-digit HS subheading" in mapped.allowed
    # FastAPI's RequestValidationError.errors() carries the same dicts with a leading "body".
    body_errors = [{**err, "loc": ("body", *err["loc"])} for err in e.value.errors()]
    assert validation_error_from_pydantic(body_errors).field == "bill_of_materials[1].hs_code"


def test_bad_rule_payload_is_a_rule_definition_error() -> None:
    raw = raw_rule("EUJP-HS87-001")
    raw["payload"]["criteria"]["rvc"]["method"] = "guesswork"
    with pytest.raises(RuleDefinitionError) as e:
        orr.compile_rule(raw)
    assert e.value.field == "payload.criteria.rvc.method" and e.value.rule_id == "EUJP-HS87-001"


def test_assess_is_deterministic_apart_from_ids_and_clock() -> None:
    fixed = {
        "evaluation_id": uuid.uuid4(),
        "request_id": uuid.uuid4(),
        "decided_at": dt.datetime(2024, 6, 1, tzinfo=dt.UTC),
    }
    one = verdict_to_dict(assess(request(), RULES, **fixed))
    two = verdict_to_dict(assess(request(), [dict(r) for r in vendored_rules()], **fixed))
    one.pop("processing_time_ms"), two.pop("processing_time_ms")
    assert one == two


# --- storage -------------------------------------------------------------------------------


def _row(conn: psycopg.Connection[Any], evaluation_id: uuid.UUID) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM psra_verdicts WHERE evaluation_id = %s", (evaluation_id,)).fetchone()
    assert row is not None
    return row


def test_load_rules_from_the_table_equals_the_vendored_rules(conn: psycopg.Connection[Any]) -> None:
    loaded = load_rules(conn, agreement_code="eu-uk-tca")
    assert sorted(r.rule_id for r in loaded) == ["TCA-HS40-001", "TCA-HS40-002", "TCA-HS61-001", "TCA-HS87-001"]
    assert all(r in RULES for r in loaded)  # same compiled rules as rules.json
    assert {r.rule_id for r in load_rules(conn, rule_id="USMCA-2024-02")} == {
        r.rule_id for r in RULES if r.agreement_code == "USMCA"
    }
    with pytest.raises(InputError) as e:
        load_rules(conn, agreement_code="NAFTA")
    assert e.value.field == "agreement_code" and "CETA" in e.value.allowed


def test_assess_and_store_writes_a_verdict_row(conn: psycopg.Connection[Any]) -> None:
    tenant = uuid.uuid4()
    request_id = uuid.uuid4()
    v = assess_and_store(conn, request(tenant_id=str(tenant)), request_id=request_id)
    row = _row(conn, v.evaluation_id)
    assert (row["status"], row["rule_id"], row["tenant_id"], row["request_id"]) == (
        "qualified",
        "CETA-HS39-001",
        tenant,
        request_id,
    )
    assert row["input_hash"] == v.input_hash == input_hash(parse_request(request(tenant_id=str(tenant))), "CETA")
    assert (row["agreement_code"], row["hs_subheading"], row["effective_date"]) == (
        "CETA",
        "390110",
        dt.date(2024, 6, 1),
    )
    assert (row["export_country"], row["import_country"]) == ("DE", "CA")
    assert row["lineage_required"] is True and row["ledger_reference"] == "ledger://ceta/hs39"
    assert row["rules_evaluated"] == 2 and row["confidence"] == v.confidence
    assert row["citations"] == verdict_to_dict(v)["citations"]
    assert row["reasons"] == verdict_to_dict(v)["reasons"]
    assert row["input_payload"]["hs_code"] == "390110" and row["input_payload"]["bill_of_materials"][0]["value"] == 65
    assert row["processing_time_ms"] == round(v.processing_time_ms) and row["decided_at"] == v.decided_at


def test_assess_and_store_with_a_pool_and_no_applicable_rule(settings: Settings, conn: psycopg.Connection[Any]) -> None:
    pool = db.create_pool(settings, min_size=1, max_size=2)
    try:
        req = request(
            hs_code="847141",
            agreement_code="USMCA",
            origin_country="MX",
            destination_country="US",
            tenant_id=str(uuid.uuid4()),
        )
        v = assess_and_store(pool, req)
        stored_by_rule_id = assess_and_store(pool, request(agreement_code=None, rule_id="CETA-HS39-000"))
    finally:
        pool.close()
    row = _row(conn, v.evaluation_id)
    assert (row["status"], row["rule_id"], row["confidence"]) == ("insufficient_data", UNMATCHED_RULE_ID, 0.0)
    assert row["reasons"][0]["code"] == "NO_APPLICABLE_RULE"
    assert _row(conn, stored_by_rule_id.evaluation_id)["rule_id"] == "CETA-HS39-000"


def test_assess_and_store_rejects_bad_input_without_writing(conn: psycopg.Connection[Any]) -> None:
    tenant = uuid.uuid4()
    for bad, field in ((request(agreement_code="NAFTA"), "agreement_code"), (request(hs_code="847199"), "hs_code")):
        with pytest.raises(InputError) as e:
            assess_and_store(conn, {**bad, "tenant_id": str(tenant)})
        assert e.value.field == field
    count = conn.execute("SELECT count(*) FROM psra_verdicts WHERE tenant_id = %s", (tenant,)).fetchone()
    assert count == (0,)


def test_stored_request_can_be_replayed(conn: psycopg.Connection[Any]) -> None:
    # The stored input_payload is a complete request: assessing it again gives the same hash and status.
    v = assess_and_store(conn, request(tenant_id=str(uuid.uuid4())))
    payload = _row(conn, v.evaluation_id)["input_payload"]
    again = assess(payload, RULES)
    assert (again.input_hash, again.status) == (v.input_hash, v.status)


def test_assess_and_store_commits_on_a_non_autocommit_connection(
    settings: Settings, conn: psycopg.Connection[Any]
) -> None:
    assert settings.db_dsn is not None
    with db.connect(settings.db_dsn) as own:
        assert not own.autocommit
        v = assess_and_store(own, request(tenant_id=str(uuid.uuid4())))
        assert _row(conn, v.evaluation_id)["status"] == "qualified"  # visible from another session
        # Inside the caller's transaction the row is the caller's to commit or roll back.
        own.execute("SELECT 1")
        rolled_back = assess_and_store(own, request(tenant_id=str(uuid.uuid4())))
        own.rollback()
    missing = conn.execute("SELECT count(*) FROM psra_verdicts WHERE evaluation_id = %s", (rolled_back.evaluation_id,))
    assert missing.fetchone() == (0,)


def test_the_input_hash_is_the_sha256_of_the_standard_librarys_canonical_json() -> None:
    """orjson writes the canonical JSON; these are the bytes json.dumps wrote before (stored hashes stay valid)."""
    import hashlib
    import json
    import random

    from psra_bench.load.request_mix import Workload
    from psra_bench.psra.assessment import canonical_input, input_hash, parse_input, parse_request

    workload = Workload(tenants=20, seed=3, products=60)
    rng = random.Random(3)
    bodies = [workload.assessment_body(rng, workload.tenant(rng)) for _ in range(200)]
    requests = [parse_request(b) for b in bodies]
    bare = {k: v for k, v in bodies[0].items() if k not in ("tenant_id", "ex_works_price", "transaction_value")}
    requests.append(parse_input(bare | {"net_cost": "12.50", "processes": []}))  # no tenant, no BOM price: None
    for req in requests:
        text = json.dumps(canonical_input(req), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert input_hash(req) == hashlib.sha256(text.encode()).hexdigest(), canonical_input(req)
