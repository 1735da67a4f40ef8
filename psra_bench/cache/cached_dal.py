"""The DAL's reference-data lookups through the cache, with the spec's keys and TTLs.

Reads go through :meth:`CacheService.get_or_compute` (a miss reaches PostgreSQL once however
many callers ask; a dead Redis just means every call reaches PostgreSQL). Writes go to the DAL
first and then drop what they made stale: HS code updates drop ``hs:*`` and ``assessment:*``,
a rules reload drops ``rule:*``, ``rules:*`` and ``assessment:*``. Dropping starts a new
invalidation generation of each entity first, so a read that queried PostgreSQL before the write
committed never stores its old row afterwards (see :mod:`psra_bench.cache.core`).

The three aggregates over verdicts (a tenant's dashboard and trade-route report, one route's
analysis) are cached too, under ``report:*`` for ``settings.ttl.reports`` (60 s): nothing drops
them when a verdict is written, so what they count is at most one TTL behind. Their keys carry
the tenant, so one tenant's summary is never another's answer.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, cast

from psra_bench.cache import keys
from psra_bench.cache.aio import AsyncCacheService
from psra_bench.cache.core import MISSING
from psra_bench.cache.service import CacheService
from psra_bench.db.aio import AsyncPostgresDAL
from psra_bench.db.dal import PostgresDAL, normalize_hs_code

__all__ = ["CachedDAL", "AsyncCachedDAL"]


def _search_text(query: Any, limit: Any) -> str | None:
    """The normalized search text when ``query`` and ``limit`` are valid, else None (the DAL then says why)."""
    text = query.strip() if isinstance(query, str) else query
    if (
        not isinstance(text, str)
        or not 2 <= len(text) <= 200
        or isinstance(limit, bool)
        or not isinstance(limit, int)
        or not 1 <= limit <= 200
    ):
        return None
    return text


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _country_code(value: Any) -> str | None:
    return value.upper() if isinstance(value, str) and len(value) == 2 and value.isalpha() else None


def _canonical_uuid(value: str | uuid.UUID) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


class CachedDAL:
    """PostgresDAL reads cached under the spec keys (hs:code, hs:search, rule:id, ...) and report:*."""

    def __init__(self, dal: PostgresDAL, cache: CacheService) -> None:
        self.dal = dal
        self.cache = cache

    def hs_code_by_code(self, code: str) -> dict[str, Any] | None:
        """One HS code (``8471.30`` and ``847130`` share a key); an unknown code is cached as None."""
        normalized = normalize_hs_code(code)  # the DAL's InputError for a bad code, before any key
        return self.cache.get_or_compute(keys.hs_code_key(normalized), lambda: self.dal.hs_code_by_code(normalized))

    def hs_search(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        """HS codes whose description contains ``query``, cached per normalized query and limit."""
        text = _search_text(query, limit)
        if text is None:
            return self.dal.hs_search(query, limit)  # raises the DAL's InputError
        return self.cache.get_or_compute(keys.hs_search_key(text, limit), lambda: self.dal.hs_search(text, limit))

    def rules_by_agreement(self, agreement_code: str) -> list[dict[str, Any]]:
        """All rules of one agreement (``rules:agreement:{code}``)."""
        return self.cache.get_or_compute(
            keys.rules_agreement_key(agreement_code), lambda: self.dal.rules_by_agreement(agreement_code)
        )

    def rules_by_agreement_chapter(self, agreement_code: str, chapter: str) -> list[dict[str, Any]]:
        """Rules of one agreement for one HS chapter: the cached agreement list, filtered (same order as SQL)."""
        chapter = normalize_hs_code(chapter, "chapter")[:2]
        return [r for r in self.rules_by_agreement(agreement_code) if r.get("hs_chapter") == chapter]

    def rule_by_id(self, rule_id: str) -> dict[str, Any] | None:
        """One rule by id (``rule:id:{rule_id}``); an unknown id is cached as None."""
        return self.cache.get_or_compute(keys.rule_key(rule_id), lambda: self.dal.rule_by_id(rule_id))

    def verdict_by_evaluation_id(self, evaluation_id: str | uuid.UUID) -> dict[str, Any] | None:
        """One verdict (``verdict:{evaluation_id}``, TTL settings.ttl.verdicts); a missing one is not cached.

        Verdicts never change once written, but one not written yet may be soon: caching its
        absence for an hour would hide it.
        """
        canonical = _canonical_uuid(evaluation_id)
        if canonical is None:
            return self.dal.verdict_by_evaluation_id(evaluation_id)  # raises the DAL's InputError
        key = keys.verdict_key(canonical)
        found = self.cache.get(key, MISSING)
        if found is not MISSING:
            return cast(dict[str, Any], found)
        generation = self.cache.generation(key)  # before the query: a later invalidation voids the set
        row = self.dal.verdict_by_evaluation_id(canonical)
        if row is not None:
            self.cache.set_if_generation(key, row, generation)
        return row

    def tenant_dashboard(
        self, tenant_id: str | uuid.UUID, days: int = 30, now: dt.datetime | None = None
    ) -> list[dict[str, Any]]:
        """A tenant's dashboard (``report:dashboard:{tenant_id}:{days}:{until}``, TTL settings.ttl.reports).

        Without ``now`` the key's moment is ``now``: the answer is the dashboard as of at most one
        TTL ago. Input the DAL refuses goes to the DAL, which says why.
        """
        tid = _canonical_uuid(tenant_id)
        if tid is None or not _whole(days, 1, 3660) or not (now is None or isinstance(now, dt.datetime)):
            return self.dal.tenant_dashboard(tenant_id, days, now=now)
        key = keys.dashboard_key(tid, days, "now" if now is None else now.isoformat())
        return cast(
            list[dict[str, Any]], self.cache.get_or_compute(key, lambda: self.dal.tenant_dashboard(tid, days, now=now))
        )

    def trade_route_report(
        self, tenant_id: str | uuid.UUID, date_from: dt.date, date_to: dt.date, limit: int = 50
    ) -> list[dict[str, Any]]:
        """A tenant's trade-route report (``report:routes:...``, TTL settings.ttl.reports)."""
        tid = _canonical_uuid(tenant_id)
        dates_ok = isinstance(date_from, dt.date) and isinstance(date_to, dt.date) and date_from <= date_to
        if tid is None or not dates_ok or not _whole(limit, 1, 1000):
            return self.dal.trade_route_report(tenant_id, date_from, date_to, limit)
        key = keys.route_report_key(tid, date_from.isoformat(), date_to.isoformat(), limit)
        return cast(
            list[dict[str, Any]],
            self.cache.get_or_compute(key, lambda: self.dal.trade_route_report(tid, date_from, date_to, limit)),
        )

    def trade_route_analysis(self, export_country: str, import_country: str) -> list[dict[str, Any]]:
        """One route's verdicts per status, all tenants (``report:trade-route:...``, TTL settings.ttl.reports)."""
        exp, imp = _country_code(export_country), _country_code(import_country)
        if exp is None or imp is None:
            return self.dal.trade_route_analysis(export_country, import_country)
        return cast(
            list[dict[str, Any]],
            self.cache.get_or_compute(keys.trade_route_key(exp, imp), lambda: self.dal.trade_route_analysis(exp, imp)),
        )

    def update_hs_codes(self, items: Iterable[Mapping[str, str]]) -> int:
        """Upsert HS codes through the DAL, then drop ``hs:*`` and ``assessment:*``; return rows written."""
        try:
            return self.dal.update_hs_codes(items)
        finally:  # also after a failed call: dropping entries is always safe
            self.cache.invalidate_hs_codes()
            self.cache.invalidate_assessments()

    def reload_rules(self) -> int:
        """Drop every cached rule, rule list and assessment (after rules changed); return keys deleted."""
        return int(self.cache.invalidate_rules()) + int(self.cache.invalidate_assessments())


class AsyncCachedDAL:
    """:class:`CachedDAL`'s reads for async code: the same keys, TTLs and generations, awaited end to end.

    ``dal`` is the :class:`AsyncPostgresDAL` a miss queries and ``cache`` the asyncio cache (for the
    API: ``CacheService.aio``, which shares the sync service's counters and circuit breaker).
    Writes stay on :class:`CachedDAL`.
    """

    def __init__(self, dal: AsyncPostgresDAL, cache: AsyncCacheService) -> None:
        self.dal = dal
        self.cache = cache

    async def hs_code_by_code(self, code: str) -> dict[str, Any] | None:
        """One HS code (``hs:code:{code}``; an unknown code is cached as None)."""
        normalized = normalize_hs_code(code)
        key = keys.hs_code_key(normalized)
        return cast(
            dict[str, Any] | None, await self.cache.get_or_compute(key, lambda: self.dal.hs_code_by_code(normalized))
        )

    async def hs_search(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        """HS codes whose description contains ``query`` (``hs:search:{query}:{limit}``)."""
        text = _search_text(query, limit)
        if text is None:
            return await self.dal.hs_search(query, limit)  # raises the DAL's InputError
        key = keys.hs_search_key(text, limit)
        return cast(list[dict[str, Any]], await self.cache.get_or_compute(key, lambda: self.dal.hs_search(text, limit)))

    async def rules_by_agreement(self, agreement_code: str) -> list[dict[str, Any]]:
        """All rules of one agreement (``rules:agreement:{code}``)."""
        key = keys.rules_agreement_key(agreement_code)
        return cast(
            list[dict[str, Any]],
            await self.cache.get_or_compute(key, lambda: self.dal.rules_by_agreement(agreement_code)),
        )

    async def rules_by_agreement_chapter(self, agreement_code: str, chapter: str) -> list[dict[str, Any]]:
        """Rules of one agreement for one HS chapter: the cached agreement list, filtered."""
        chapter = normalize_hs_code(chapter, "chapter")[:2]
        return [r for r in await self.rules_by_agreement(agreement_code) if r.get("hs_chapter") == chapter]

    async def rule_by_id(self, rule_id: str) -> dict[str, Any] | None:
        """One rule by id (``rule:id:{rule_id}``; an unknown id is cached as None)."""
        key = keys.rule_key(rule_id)
        return cast(dict[str, Any] | None, await self.cache.get_or_compute(key, lambda: self.dal.rule_by_id(rule_id)))

    async def verdict_by_evaluation_id(self, evaluation_id: str | uuid.UUID) -> dict[str, Any] | None:
        """One verdict (``verdict:{evaluation_id}``); a missing one is not cached (see CachedDAL)."""
        canonical = _canonical_uuid(evaluation_id)
        if canonical is None:
            return await self.dal.verdict_by_evaluation_id(evaluation_id)  # raises the DAL's InputError
        key = keys.verdict_key(canonical)
        found = await self.cache.get(key, MISSING)
        if found is not MISSING:
            return cast(dict[str, Any], found)
        generation = await self.cache.generation(key)
        row = await self.dal.verdict_by_evaluation_id(canonical)
        if row is not None:
            await self.cache.set_if_generation(key, row, generation)
        return row
