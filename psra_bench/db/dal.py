"""Data access layer: one named, parameterized query per pattern the spec measures.

``QUERIES`` holds the SQL by name (the notebooks EXPLAIN and time them by name);
:class:`PostgresDAL` runs them on a psycopg connection pool and returns JSON-ready dicts
(uuids and dates as strings), so results can go straight into the cache or an API response.
No SQL is ever built by string formatting of values.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from psra_bench.exceptions import InputError

__all__ = ["QUERIES", "PostgresDAL", "jsonable", "escape_like", "normalize_hs_code"]

_VERDICT_COLUMNS = """id, evaluation_id, request_id, rule_id, tenant_id, status, confidence, citations,
    reasons, input_hash, agreement_code, hs_subheading, effective_date, export_country, import_country,
    lineage_required, processing_time_ms, created_at"""

#: Query name -> SQL. Named placeholders; values always travel as parameters.
QUERIES: dict[str, str] = {
    "hs_code_by_code": """
        SELECT code, description, parent, level, section, chapter, version
        FROM hs_codes WHERE code = %(code)s""",
    "hs_search": """
        SELECT code, description, parent, level, section, chapter
        FROM hs_codes WHERE description ILIKE %(pattern)s
        ORDER BY level, code LIMIT %(limit)s""",
    "hs_children": """
        SELECT code, description, level FROM hs_codes WHERE parent = %(code)s ORDER BY code""",
    "rules_by_agreement_chapter": """
        SELECT rule_id, version, agreement_code, agreement_name, title, hs_chapter, hs_heading, hs_subheading,
               jurisdictions, effective_from, effective_to, priority, supersedes, payload
        FROM psra_rules WHERE agreement_code = %(agreement_code)s AND hs_chapter = %(chapter)s
        ORDER BY priority DESC, rule_id""",
    "rules_by_agreement": """
        SELECT rule_id, version, agreement_code, agreement_name, title, hs_chapter, hs_heading, hs_subheading,
               jurisdictions, effective_from, effective_to, priority, supersedes, payload
        FROM psra_rules WHERE agreement_code = %(agreement_code)s ORDER BY priority DESC, rule_id""",
    "rule_by_id": """
        SELECT rule_id, version, agreement_code, agreement_name, title, hs_chapter, hs_heading, hs_subheading,
               jurisdictions, effective_from, effective_to, priority, supersedes, payload
        FROM psra_rules WHERE rule_id = %(rule_id)s""",
    "agreements": """
        SELECT agreement_code, min(agreement_name) AS agreement_name, count(*) AS rules
        FROM psra_rules GROUP BY agreement_code ORDER BY agreement_code""",
    "recent_verdicts": f"""
        SELECT {_VERDICT_COLUMNS} FROM psra_verdicts ORDER BY created_at DESC LIMIT %(limit)s""",
    "tenant_verdict_history": f"""
        SELECT {_VERDICT_COLUMNS} FROM psra_verdicts WHERE tenant_id = %(tenant_id)s
        ORDER BY created_at DESC LIMIT %(limit)s""",
    "trade_route_analysis": """
        SELECT status, count(*) AS verdicts, round(avg(confidence)::numeric, 4) AS avg_confidence
        FROM psra_verdicts WHERE export_country = %(export_country)s AND import_country = %(import_country)s
        GROUP BY status ORDER BY status""",
    "duplicate_assessment": """
        SELECT evaluation_id, tenant_id, status, confidence, rule_id, created_at
        FROM psra_verdicts WHERE input_hash = %(input_hash)s AND tenant_id = %(tenant_id)s
        ORDER BY created_at DESC LIMIT 1""",
    "tenant_dashboard": """
        SELECT status, count(*) AS verdicts, round(avg(confidence)::numeric, 4) AS avg_confidence,
               max(created_at) AS last_verdict_at
        FROM psra_verdicts
        WHERE tenant_id = %(tenant_id)s AND created_at >= %(since)s AND created_at <= %(until)s
        GROUP BY status ORDER BY status""",
    "trade_route_report": """
        SELECT export_country, import_country, agreement_code, count(*) AS verdicts,
               count(*) FILTER (WHERE status = 'qualified') AS qualified,
               round(avg(confidence)::numeric, 4) AS avg_confidence
        FROM psra_verdicts
        WHERE tenant_id = %(tenant_id)s AND effective_date BETWEEN %(date_from)s AND %(date_to)s
        GROUP BY export_country, import_country, agreement_code
        ORDER BY verdicts DESC, export_country, import_country, agreement_code LIMIT %(limit)s""",
    "verdict_by_evaluation_id": f"""
        SELECT {_VERDICT_COLUMNS} FROM psra_verdicts WHERE evaluation_id = %(evaluation_id)s""",
    "upsert_hs_code": """
        INSERT INTO hs_codes (code, description, parent, level, section, chapter, updated_at)
        VALUES (%(code)s, %(description)s, %(parent)s, %(level)s,
                (SELECT section FROM hs_codes WHERE code = %(chapter)s), %(chapter)s, now())
        ON CONFLICT (code) DO UPDATE SET description = EXCLUDED.description, updated_at = now()""",
}


def jsonable(value: Any) -> Any:
    """Convert a database value (uuid, date, Decimal, nested containers) to plain JSON types."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def escape_like(text: str) -> str:
    """Escape LIKE wildcards so user text matches literally (backslash is the default escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def normalize_hs_code(code: str, field: str = "code") -> str:
    """'8471.30' / '8471 30' -> '847130'; anything but 2, 4 or 6 digits is an InputError."""
    digits = str(code).replace(".", "").replace(" ", "")
    if not digits.isdigit() or len(digits) not in (2, 4, 6):
        raise InputError(field, code, "an HS code of 2, 4 or 6 digits (dots allowed, e.g. 8471.30)")
    return digits


def _uuid(value: str | uuid.UUID, field: str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise InputError(field, value, "a UUID such as 550e8400-e29b-41d4-a716-446655440000") from None


def _limit(limit: int, maximum: int = 1000) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= maximum:
        raise InputError("limit", limit, f"a whole number from 1 to {maximum}")
    return limit


def _country(value: str, field: str) -> str:
    if not isinstance(value, str) or len(value) != 2 or not value.isalpha():
        raise InputError(field, value, "a two-letter ISO country code such as DE")
    return value.upper()


class PostgresDAL:
    """The PSRA queries on a psycopg connection pool (autocommit connections)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def fetch_all(self, name: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run query ``name`` of :data:`QUERIES` and return its rows as JSON-ready dicts."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(QUERIES[name], params)
            return [jsonable(row) for row in cur.fetchall()]

    def fetch_one(self, name: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """Run query ``name`` and return its first row (or None)."""
        rows = self.fetch_all(name, params)
        return rows[0] if rows else None

    # -- HS codes -----------------------------------------------------------------
    def hs_code_by_code(self, code: str) -> dict[str, Any] | None:
        """One HS code by its 2/4/6-digit code."""
        return self.fetch_one("hs_code_by_code", {"code": normalize_hs_code(code)})

    def hs_search(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        """HS codes whose description contains ``query`` (case-insensitive, literal text)."""
        query = (query or "").strip()
        if not 2 <= len(query) <= 200:
            raise InputError("q", query, "search text of 2 to 200 characters")
        return self.fetch_all("hs_search", {"pattern": f"%{escape_like(query)}%", "limit": _limit(limit, 200)})

    def hs_children(self, code: str) -> list[dict[str, Any]]:
        """Direct children of an HS chapter or heading (hierarchy navigation)."""
        return self.fetch_all("hs_children", {"code": normalize_hs_code(code)})

    def update_hs_codes(self, items: Iterable[Mapping[str, str]]) -> int:
        """Upsert HS codes ({code, description}); returns how many rows were written."""
        rows = []
        for i, item in enumerate(items):
            code = normalize_hs_code(item.get("code", ""), f"items[{i}].code")
            description = str(item.get("description", "")).strip()
            if not description:
                raise InputError(f"items[{i}].description", item.get("description"), "a non-empty description")
            parent = None if len(code) == 2 else code[: len(code) - 2]
            rows.append(
                {"code": code, "description": description, "parent": parent, "level": len(code), "chapter": code[:2]}
            )
        if rows:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                cur.executemany(QUERIES["upsert_hs_code"], rows)
        return len(rows)

    # -- rules --------------------------------------------------------------------
    def rules_by_agreement_chapter(self, agreement_code: str, chapter: str) -> list[dict[str, Any]]:
        """Rules of one agreement for one HS chapter, highest priority first."""
        chapter = normalize_hs_code(chapter, "chapter")[:2]
        return self.fetch_all("rules_by_agreement_chapter", {"agreement_code": agreement_code, "chapter": chapter})

    def rules_by_agreement(self, agreement_code: str) -> list[dict[str, Any]]:
        """All rules of one agreement."""
        return self.fetch_all("rules_by_agreement", {"agreement_code": agreement_code})

    def rule_by_id(self, rule_id: str) -> dict[str, Any] | None:
        """One rule by its rule_id (e.g. CETA-HS39-001)."""
        return self.fetch_one("rule_by_id", {"rule_id": rule_id})

    def agreements(self) -> list[dict[str, Any]]:
        """The agreements that have rules, with their rule counts."""
        return self.fetch_all("agreements", {})

    # -- verdicts -----------------------------------------------------------------
    def recent_verdicts(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest verdicts across tenants (the spec's 100-row query)."""
        return self.fetch_all("recent_verdicts", {"limit": _limit(limit)})

    def tenant_verdict_history(self, tenant_id: str | uuid.UUID, limit: int = 100) -> list[dict[str, Any]]:
        """One tenant's newest verdicts."""
        return self.fetch_all(
            "tenant_verdict_history", {"tenant_id": _uuid(tenant_id, "tenant_id"), "limit": _limit(limit)}
        )

    def trade_route_analysis(self, export_country: str, import_country: str) -> list[dict[str, Any]]:
        """Verdict counts and mean confidence per status on one trade route."""
        return self.fetch_all(
            "trade_route_analysis",
            {
                "export_country": _country(export_country, "export_country"),
                "import_country": _country(import_country, "import_country"),
            },
        )

    def duplicate_assessment(self, input_hash: str, tenant_id: str | uuid.UUID) -> dict[str, Any] | None:
        """The latest verdict of this tenant with the same input hash, if any (duplicate detection)."""
        if not isinstance(input_hash, str) or len(input_hash) != 64:
            raise InputError("input_hash", input_hash, "a 64-character hex SHA-256")
        return self.fetch_one(
            "duplicate_assessment", {"input_hash": input_hash, "tenant_id": _uuid(tenant_id, "tenant_id")}
        )

    def tenant_dashboard(
        self, tenant_id: str | uuid.UUID, days: int = 30, now: dt.datetime | None = None
    ) -> list[dict[str, Any]]:
        """A tenant's verdicts of the last ``days`` days, per status (the dashboard summary)."""
        if not isinstance(days, int) or not 1 <= days <= 3660:
            raise InputError("days", days, "a whole number of days from 1 to 3660")
        now = now or dt.datetime.now(dt.UTC)
        try:
            since = now - dt.timedelta(days=days)
        except OverflowError:
            raise InputError("until", now.isoformat(), f"a moment at least {days} days after 0001-01-01") from None
        return self.fetch_all(
            "tenant_dashboard", {"tenant_id": _uuid(tenant_id, "tenant_id"), "since": since, "until": now}
        )

    def trade_route_report(
        self, tenant_id: str | uuid.UUID, date_from: dt.date, date_to: dt.date, limit: int = 50
    ) -> list[dict[str, Any]]:
        """A tenant's verdicts per trade route and agreement between two effective dates."""
        if date_from > date_to:
            raise InputError("date_from", date_from.isoformat(), f"a date on or before date_to={date_to}")
        return self.fetch_all(
            "trade_route_report",
            {
                "tenant_id": _uuid(tenant_id, "tenant_id"),
                "date_from": date_from,
                "date_to": date_to,
                "limit": _limit(limit),
            },
        )

    def verdict_by_evaluation_id(self, evaluation_id: str | uuid.UUID) -> dict[str, Any] | None:
        """One verdict by its evaluation id."""
        return self.fetch_one("verdict_by_evaluation_id", {"evaluation_id": _uuid(evaluation_id, "evaluation_id")})
