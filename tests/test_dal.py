"""PostgresDAL: every query's exact result on a small hand-made dataset, and its input validation.

Eight verdicts with explicit values (two tenants, three trade routes, repeated input hashes,
created_at spread over 100 days before a fixed ``NOW``) go into a fresh database; HS codes and
rules are the vendored reference data, so their expected values come from the package's files.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from psra_bench.db.dal import QUERIES, PostgresDAL, escape_like, jsonable, normalize_hs_code
from psra_bench.db.reference import hs_rows, rules
from psra_bench.exceptions import InputError
from psra_bench.infra import postgres as db
from psra_bench.settings import Settings

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
TENANT_A = uuid.UUID("aaaaaaaa-0000-4000-8000-000000000001")
TENANT_B = uuid.UUID("bbbbbbbb-0000-4000-8000-000000000002")
_NS = uuid.UUID("5d2b7a59-7c4c-4c1f-8a8e-1f6a0f3c9d10")
H1, H2, H3, H4, H5, H6 = (c * 64 for c in "123456")


@dataclass(frozen=True)
class V:
    """One hand-made verdict."""

    key: str
    tenant: uuid.UUID
    status: str
    confidence: float
    export_country: str
    import_country: str
    agreement_code: str
    rule_id: str
    hs_subheading: str
    age: dt.timedelta
    input_hash: str

    @property
    def id(self) -> uuid.UUID:
        return uuid.uuid5(_NS, "id-" + self.key)

    @property
    def evaluation_id(self) -> uuid.UUID:
        return uuid.uuid5(_NS, "eval-" + self.key)

    @property
    def request_id(self) -> uuid.UUID:
        return uuid.uuid5(_NS, "req-" + self.key)

    @property
    def created_at(self) -> dt.datetime:
        return NOW - self.age

    @property
    def effective_date(self) -> dt.date:
        return self.created_at.date()

    @property
    def citations(self) -> list[dict[str, str]]:
        return [{"rule_id": self.rule_id, "clause": f"{self.agreement_code} annex"}]

    @property
    def reasons(self) -> list[dict[str, str]]:
        return [] if self.status == "qualified" else [{"code": "INSUFFICIENT_RVC", "severity": "high"}]


d, h = dt.timedelta(days=1), dt.timedelta(hours=1)
VERDICTS = [
    V("v1", TENANT_A, "qualified", 0.90, "DE", "GB", "EU-UK-TCA", "TCA-HS40-002", "401110", 1 * d, H1),
    V("v2", TENANT_A, "not_qualified", 0.60, "DE", "GB", "EU-UK-TCA", "TCA-HS40-002", "401110", 2 * d, H2),
    V("v3", TENANT_A, "qualified", 0.80, "DE", "GB", "EU-UK-TCA", "TCA-HS87-001", "870321", 40 * d, H1),
    V("v4", TENANT_A, "qualified", 0.70, "MX", "US", "USMCA", "USMCA-2024-01", "847130", 100 * d, H3),
    V("v5", TENANT_B, "qualified", 0.95, "DE", "GB", "EU-UK-TCA", "TCA-HS40-002", "401110", 3 * h, H1),
    V("v6", TENANT_B, "insufficient_data", 0.20, "GB", "DE", "EU-UK-TCA", "TCA-HS40-002", "401110", 5 * h, H4),
    V("v7", TENANT_A, "insufficient_data", 0.30, "DE", "GB", "EU-UK-TCA", "TCA-HS61-001", "610910", 10 * d, H5),
    V("v8", TENANT_B, "not_qualified", 0.55, "MX", "US", "USMCA", "USMCA-2024-01", "847130", 0 * d, H6),
]
BY_KEY = {v.key: v for v in VERDICTS}


def _insert(conn: psycopg.Connection[Any]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO psra_verdicts (id, evaluation_id, request_id, rule_id, tenant_id, status, confidence,
                   citations, reasons, input_hash, processing_time_ms, rules_evaluated, agreement_code,
                   hs_subheading, effective_date, export_country, import_country, lineage_required, decided_at,
                   created_at, updated_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            [
                (
                    v.id,
                    v.evaluation_id,
                    v.request_id,
                    v.rule_id,
                    v.tenant,
                    v.status,
                    v.confidence,
                    psycopg.types.json.Jsonb(v.citations),
                    psycopg.types.json.Jsonb(v.reasons),
                    v.input_hash,
                    40 + i,
                    2,
                    v.agreement_code,
                    v.hs_subheading,
                    v.effective_date,
                    v.export_country,
                    v.import_country,
                    v.rule_id.startswith("TCA"),
                    v.created_at,
                    v.created_at,
                    v.created_at,
                )
                for i, v in enumerate(VERDICTS)
            ],
        )


@pytest.fixture(scope="module")
def dal(make_database: Callable[..., str], settings: Settings) -> Iterator[PostgresDAL]:
    """A DAL on a fresh database holding the reference data and the eight verdicts."""
    dsn = make_database()
    with db.connect(dsn, autocommit=True) as conn:
        _insert(conn)
    pool = db.create_pool(settings.replace(db_dsn=dsn), min_size=1, max_size=2)
    try:
        yield PostgresDAL(pool)
    finally:
        pool.close()


def _keys(rows: list[dict[str, Any]]) -> list[str]:
    by_id = {str(v.id): v.key for v in VERDICTS}
    return [by_id[r["id"]] for r in rows]


def _ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


# --------------------------------------------------------------------------- verdicts


def test_recent_verdicts_newest_first_with_limit(dal: PostgresDAL) -> None:
    assert _keys(dal.recent_verdicts()) == ["v8", "v5", "v6", "v1", "v2", "v7", "v3", "v4"]
    assert _keys(dal.recent_verdicts(3)) == ["v8", "v5", "v6"]
    assert _keys(dal.recent_verdicts(1)) == ["v8"]


def test_a_verdict_row_is_complete_and_json_ready(dal: PostgresDAL) -> None:
    row = dal.recent_verdicts(4)[3]
    v = BY_KEY["v1"]
    assert set(row) == {
        "id",
        "evaluation_id",
        "request_id",
        "rule_id",
        "tenant_id",
        "status",
        "confidence",
        "citations",
        "reasons",
        "input_hash",
        "agreement_code",
        "hs_subheading",
        "effective_date",
        "export_country",
        "import_country",
        "lineage_required",
        "processing_time_ms",
        "created_at",
    }
    assert _ts(row.pop("created_at")) == v.created_at
    assert row == {
        "id": str(v.id),
        "evaluation_id": str(v.evaluation_id),
        "request_id": str(v.request_id),
        "rule_id": "TCA-HS40-002",
        "tenant_id": str(TENANT_A),
        "status": "qualified",
        "confidence": 0.9,
        "citations": [{"rule_id": "TCA-HS40-002", "clause": "EU-UK-TCA annex"}],
        "reasons": [],
        "input_hash": H1,
        "agreement_code": "EU-UK-TCA",
        "hs_subheading": "401110",
        "effective_date": "2026-05-31",
        "export_country": "DE",
        "import_country": "GB",
        "lineage_required": True,
        "processing_time_ms": 40,
    }
    assert dal.verdict_by_evaluation_id(v.evaluation_id) == dal.verdict_by_evaluation_id(str(v.evaluation_id))
    by_eval = dal.verdict_by_evaluation_id(v.evaluation_id)
    assert by_eval is not None and by_eval["id"] == str(v.id)
    assert dal.verdict_by_evaluation_id(uuid.uuid4()) is None


def test_tenant_history_never_crosses_tenants(dal: PostgresDAL) -> None:
    assert _keys(dal.tenant_verdict_history(TENANT_A)) == ["v1", "v2", "v7", "v3", "v4"]
    assert _keys(dal.tenant_verdict_history(str(TENANT_A), limit=2)) == ["v1", "v2"]
    assert _keys(dal.tenant_verdict_history(TENANT_B)) == ["v8", "v5", "v6"]
    assert all(r["tenant_id"] == str(TENANT_B) for r in dal.tenant_verdict_history(TENANT_B))
    assert dal.tenant_verdict_history(uuid.uuid4()) == []


def test_trade_route_analysis(dal: PostgresDAL) -> None:
    assert dal.trade_route_analysis("DE", "GB") == [
        {"status": "insufficient_data", "verdicts": 1, "avg_confidence": 0.3},
        {"status": "not_qualified", "verdicts": 1, "avg_confidence": 0.6},
        {"status": "qualified", "verdicts": 3, "avg_confidence": 0.8833},  # v1, v3, v5 (both tenants)
    ]
    assert dal.trade_route_analysis("GB", "DE") == [
        {"status": "insufficient_data", "verdicts": 1, "avg_confidence": 0.2}
    ]
    assert dal.trade_route_analysis("mx", "us") == [  # country codes are case-insensitive
        {"status": "not_qualified", "verdicts": 1, "avg_confidence": 0.55},
        {"status": "qualified", "verdicts": 1, "avg_confidence": 0.7},
    ]
    assert dal.trade_route_analysis("FR", "JP") == []


def test_duplicate_assessment_is_per_tenant_and_latest(dal: PostgresDAL) -> None:
    a = dal.duplicate_assessment(H1, TENANT_A)  # v1 and v3 share H1: the newer wins
    assert a is not None
    assert a["evaluation_id"] == str(BY_KEY["v1"].evaluation_id)
    assert (a["tenant_id"], a["status"], a["confidence"], a["rule_id"]) == (
        str(TENANT_A),
        "qualified",
        0.9,
        "TCA-HS40-002",
    )
    assert _ts(a["created_at"]) == BY_KEY["v1"].created_at
    b = dal.duplicate_assessment(H1, TENANT_B)  # the same input from another tenant is that tenant's own
    assert b is not None and b["evaluation_id"] == str(BY_KEY["v5"].evaluation_id)
    assert dal.duplicate_assessment(H4, TENANT_A) is None  # B's input is not A's duplicate
    assert dal.duplicate_assessment("f" * 64, TENANT_A) is None


def test_tenant_dashboard_window(dal: PostgresDAL) -> None:
    rows = dal.tenant_dashboard(TENANT_A, days=30, now=NOW)
    assert [(r["status"], r["verdicts"], r["avg_confidence"]) for r in rows] == [
        ("insufficient_data", 1, 0.3),
        ("not_qualified", 1, 0.6),
        ("qualified", 1, 0.9),  # v3 (40 days) is outside the window
    ]
    assert [_ts(r["last_verdict_at"]) for r in rows] == [BY_KEY[k].created_at for k in ("v7", "v2", "v1")]
    wider = dal.tenant_dashboard(TENANT_A, days=45, now=NOW)
    assert [(r["status"], r["verdicts"], r["avg_confidence"]) for r in wider][-1] == ("qualified", 2, 0.85)
    # The window's start is inclusive: v1 is exactly one day old.
    assert [(r["status"], r["verdicts"]) for r in dal.tenant_dashboard(TENANT_A, days=1, now=NOW)] == [("qualified", 1)]
    assert [(r["status"], r["verdicts"]) for r in dal.tenant_dashboard(TENANT_B, days=1, now=NOW)] == [
        ("insufficient_data", 1),
        ("not_qualified", 1),
        ("qualified", 1),
    ]
    assert dal.tenant_dashboard(TENANT_A, days=30, now=NOW + dt.timedelta(days=365)) == []


def test_trade_route_report_groups_and_date_range(dal: PostgresDAL) -> None:
    # v3 (2026-04-22) and v1 (2026-05-31) sit on the bounds, which are inclusive; v4 (2026-02-21) is out.
    rows = dal.trade_route_report(TENANT_A, dt.date(2026, 4, 22), dt.date(2026, 5, 31))
    assert rows == [
        {
            "export_country": "DE",
            "import_country": "GB",
            "agreement_code": "EU-UK-TCA",
            "verdicts": 4,
            "qualified": 2,
            "avg_confidence": 0.65,
        }
    ]
    year = dal.trade_route_report(TENANT_A, dt.date(2026, 1, 1), dt.date(2026, 12, 31))
    assert year == rows + [
        {
            "export_country": "MX",
            "import_country": "US",
            "agreement_code": "USMCA",
            "verdicts": 1,
            "qualified": 1,
            "avg_confidence": 0.7,
        }
    ]
    assert dal.trade_route_report(TENANT_A, dt.date(2026, 1, 1), dt.date(2026, 12, 31), limit=1) == rows
    assert dal.trade_route_report(TENANT_A, dt.date(2026, 4, 23), dt.date(2026, 5, 30)) == [
        {
            "export_country": "DE",
            "import_country": "GB",
            "agreement_code": "EU-UK-TCA",
            "verdicts": 2,
            "qualified": 0,
            "avg_confidence": 0.45,
        }
    ]
    b = dal.trade_route_report(TENANT_B, dt.date(2026, 6, 1), dt.date(2026, 6, 1))
    assert [(r["export_country"], r["import_country"], r["verdicts"]) for r in b] == [
        ("DE", "GB", 1),
        ("GB", "DE", 1),
        ("MX", "US", 1),
    ]  # ties ordered by route


# --------------------------------------------------------------------------- HS codes


def _hs(code: str) -> dict[str, Any]:
    r = next(r for r in hs_rows() if r.code == code)
    return {
        "code": r.code,
        "description": r.description,
        "parent": r.parent,
        "level": r.level,
        "section": r.section,
        "chapter": r.chapter,
        "version": "HS2022",
    }


def test_hs_code_by_code(dal: PostgresDAL) -> None:
    expected = _hs("847130")
    assert expected["parent"] == "8471" and expected["section"] == "XVI"
    for spelling in ("847130", "8471.30", "8471 30"):
        assert dal.hs_code_by_code(spelling) == expected
    assert dal.hs_code_by_code("0101") == _hs("0101")
    assert dal.hs_code_by_code("01") == _hs("01")
    assert dal.hs_code_by_code("010199") is None  # no such subheading


def test_hs_children(dal: PostgresDAL) -> None:
    assert dal.hs_children("0101") == [
        {"code": c, "description": _hs(c)["description"], "level": 6} for c in ("010121", "010129", "010130", "010190")
    ]


def _expected_search(text: str, limit: int) -> list[str]:
    found = [r for r in hs_rows() if text.lower() in r.description.lower()]
    return [r.code for r in sorted(found, key=lambda r: (r.level, r.code))][:limit]


def test_hs_search_is_case_insensitive_and_ordered(dal: PostgresDAL) -> None:
    rows = dal.hs_search("HORSES", limit=200)
    assert [r["code"] for r in rows] == _expected_search("horses", 200)
    assert len(rows) >= 4
    assert set(rows[0]) == {"code", "description", "parent", "level", "section", "chapter"}
    assert [r["code"] for r in dal.hs_search("live", limit=5)] == _expected_search("live", 5)
    assert [r["code"] for r in dal.hs_search("  horses  ")] == _expected_search("horses", 20)


def test_hs_search_matches_percent_and_underscore_literally(dal: PostgresDAL) -> None:
    with_percent = [r["code"] for r in dal.hs_search("50%", limit=200)]
    assert with_percent == _expected_search("50%", 200) and with_percent
    assert len(with_percent) < len(_expected_search("50", 200))  # unescaped, "50%" would match any "50"
    # "_" would match any one character: "t_e" would find every "the".
    with dal.pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM hs_codes WHERE description ILIKE '%t_e%'").fetchone() != (0,)
    assert dal.hs_search("t_e") == []
    assert dal.hs_search("%%") == []
    assert dal.hs_search("\\%") == []


def test_escape_like_and_normalize() -> None:
    assert escape_like("50%_a\\b") == "50\\%\\_a\\\\b"
    assert normalize_hs_code("8471.30") == "847130"
    assert jsonable({"a": [uuid.UUID(int=1), dt.date(2026, 1, 2)]}) == {
        "a": ["00000000-0000-0000-0000-000000000001", "2026-01-02"]
    }


# --------------------------------------------------------------------------- rules


def _rule_row(rule_id: str) -> dict[str, Any]:
    r = next(r for r in rules() if r["rule_id"] == rule_id)
    return {
        "rule_id": r["rule_id"],
        "version": r.get("version", 1),
        "agreement_code": r["agreement_code"],
        "agreement_name": r["agreement_name"],
        "title": r["title"],
        "hs_chapter": r["hs_chapter"],
        "hs_heading": r.get("hs_heading"),
        "hs_subheading": r.get("hs_subheading"),
        "jurisdictions": r["jurisdictions"],
        "effective_from": r["effective_from"],
        "effective_to": r.get("effective_to"),
        "priority": r.get("priority", 0),
        "supersedes": r.get("supersedes", []),
        "payload": r["payload"],
    }


def test_rule_by_id(dal: PostgresDAL) -> None:
    row = dal.rule_by_id("CETA-HS39-001")
    assert row == _rule_row("CETA-HS39-001")
    assert row is not None and (row["hs_subheading"], row["jurisdictions"]) == ("390110", ["EU", "CA"])
    assert dal.rule_by_id("TCA-HS40-001") == _rule_row("TCA-HS40-001")  # has an effective_to
    assert dal.rule_by_id("NOPE-1") is None


def test_rules_by_agreement_chapter_highest_priority_first(dal: PostgresDAL) -> None:
    assert [r["rule_id"] for r in dal.rules_by_agreement_chapter("CETA", "39")] == ["CETA-HS39-001", "CETA-HS39-000"]
    assert [r["rule_id"] for r in dal.rules_by_agreement_chapter("EU-UK-TCA", "4011.10")] == [
        "TCA-HS40-002",
        "TCA-HS40-001",
    ]  # a longer code means its chapter
    assert dal.rules_by_agreement_chapter("USMCA", "84") == [_rule_row("USMCA-2024-01")]
    assert dal.rules_by_agreement_chapter("USMCA", "40") == []
    assert dal.rules_by_agreement_chapter("NOPE", "39") == []
    assert [r["rule_id"] for r in dal.rules_by_agreement("USMCA")] == [
        "USMCA-2024-02",
        "USMCA-2024-01",
        "USMCA-2024-03",
        "USMCA-2024-04",
    ]


def test_agreements(dal: PostgresDAL) -> None:
    expected: dict[str, dict[str, Any]] = {}
    for r in rules():
        e = expected.setdefault(
            r["agreement_code"],
            {"agreement_code": r["agreement_code"], "agreement_name": r["agreement_name"], "rules": 0},
        )
        e["agreement_name"] = min(e["agreement_name"], r["agreement_name"])
        e["rules"] += 1
    assert dal.agreements() == [expected[k] for k in sorted(expected)]
    assert [(a["agreement_code"], a["rules"]) for a in dal.agreements()] == [
        ("CETA", 3),
        ("EU-JP-EPA", 2),
        ("EU-UK-TCA", 4),
        ("USMCA", 4),
    ]


# --------------------------------------------------------------------------- writes


def test_update_hs_codes_upserts(make_database: Callable[..., str], settings: Settings) -> None:
    dsn = make_database()
    pool = db.create_pool(settings.replace(db_dsn=dsn), min_size=1, max_size=1)
    try:
        dal = PostgresDAL(pool)
        assert dal.update_hs_codes([]) == 0
        written = dal.update_hs_codes(
            [
                {"code": "8471.30", "description": "Portable computers"},
                {"code": "0101.99", "description": "Test animals x_y"},
            ]
        )
        assert written == 2
        assert dal.hs_code_by_code("847130") == _hs("847130") | {"description": "Portable computers"}
        assert dal.hs_code_by_code("010199") == {
            "code": "010199",
            "description": "Test animals x_y",
            "parent": "0101",
            "level": 6,
            "section": "I",
            "chapter": "01",
            "version": "HS2022",
        }
        assert [r["code"] for r in dal.hs_search("x_y")] == ["010199"]
        with pool.connection() as conn:
            assert conn.execute("SELECT count(*) FROM hs_codes").fetchone() == (len(hs_rows()) + 1,)

        # One bad item: a clear error naming the item, and nothing is written.
        with pytest.raises(InputError) as err:
            dal.update_hs_codes([{"code": "0101", "description": "changed"}, {"code": "0102", "description": " "}])
        assert err.value.field == "items[1].description"
        with pytest.raises(InputError) as err:
            dal.update_hs_codes([{"code": "12345", "description": "five digits"}])
        assert err.value.field == "items[0].code" and "12345" in str(err.value)
        assert dal.hs_code_by_code("0101") == _hs("0101")
    finally:
        pool.close()


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("call", "field", "shown"),
    [
        (lambda dal: dal.tenant_verdict_history("not-a-uuid"), "tenant_id", "'not-a-uuid'"),
        (lambda dal: dal.tenant_dashboard("123", now=NOW), "tenant_id", "'123'"),
        (lambda dal: dal.trade_route_report("x", dt.date(2026, 1, 1), dt.date(2026, 2, 1)), "tenant_id", "'x'"),
        (lambda dal: dal.duplicate_assessment(H1, "zzz"), "tenant_id", "'zzz'"),
        (lambda dal: dal.verdict_by_evaluation_id("nope"), "evaluation_id", "'nope'"),
        (lambda dal: dal.recent_verdicts(0), "limit", "0"),
        (lambda dal: dal.recent_verdicts(1001), "limit", "1001"),
        (lambda dal: dal.recent_verdicts(True), "limit", "True"),
        (lambda dal: dal.recent_verdicts("5"), "limit", "'5'"),
        (lambda dal: dal.tenant_verdict_history(TENANT_A, limit=-3), "limit", "-3"),
        (lambda dal: dal.hs_search("live", limit=201), "limit", "201"),
        (lambda dal: dal.trade_route_analysis("DEU", "GB"), "export_country", "'DEU'"),
        (lambda dal: dal.trade_route_analysis("DE", "G1"), "import_country", "'G1'"),
        (lambda dal: dal.duplicate_assessment("abc", TENANT_A), "input_hash", "'abc'"),
        (lambda dal: dal.tenant_dashboard(TENANT_A, days=0, now=NOW), "days", "0"),
        (
            lambda dal: dal.trade_route_report(TENANT_A, dt.date(2026, 2, 2), dt.date(2026, 2, 1)),
            "date_from",
            "'2026-02-02'",
        ),
        (lambda dal: dal.hs_search("a"), "q", "'a'"),
        (lambda dal: dal.hs_search("   a   "), "q", "'a'"),
        (lambda dal: dal.hs_search("x" * 201), "q", "xxxx"),
        (lambda dal: dal.hs_code_by_code("abc"), "code", "'abc'"),
        (lambda dal: dal.hs_code_by_code("84713"), "code", "'84713'"),
        (lambda dal: dal.hs_children("8"), "code", "'8'"),
        (lambda dal: dal.rules_by_agreement_chapter("CETA", "3"), "chapter", "'3'"),
    ],
)
def test_validation_errors_name_the_field(
    dal: PostgresDAL, call: Callable[[PostgresDAL], Any], field: str, shown: str
) -> None:
    with pytest.raises(InputError) as err:
        call(dal)
    message = str(err.value)
    assert err.value.field == field
    assert message.startswith(f"{field}=") and shown in message
    assert "not valid" in message and "\n" not in message


def test_every_named_query_is_parameterized() -> None:
    for name, sql in QUERIES.items():
        assert "{" not in sql and "'" not in sql.replace("'qualified'", ""), name
