"""The spec's entity helpers (``cache_hs_code`` ... ``invalidate_assessments``), once, over get / set / invalidate.

Both cache faces inherit them through :class:`psra_bench.cache.core.CacheCore`; on the asyncio
face each returns an awaitable, because its ``get``, ``set`` and ``invalidate`` do.
"""

from __future__ import annotations

from typing import Any

from psra_bench.cache import keys

__all__ = ["SpecHelpers"]


class SpecHelpers:
    """The spec's per-entity cache helpers over a face's ``get``, ``set`` and ``invalidate``."""

    def get(self, key: str, default: Any = None) -> Any:  # overridden by both faces
        """The cached value of ``key`` or ``default``."""
        raise NotImplementedError

    def set(self, key: str, value: Any, ttl: float | None = None) -> Any:  # overridden by both faces
        """Store ``value`` under ``key``."""
        raise NotImplementedError

    def invalidate(self, entity: str) -> Any:  # overridden by both faces
        """Delete every key of ``entity``; return the count."""
        raise NotImplementedError

    def cache_hs_code(self, code: str, data: Any, ttl: float | None = None) -> Any:
        """Cache one HS code under ``hs:code:{code}`` (TTL: settings.ttl.hs_codes); awaitable on the async service."""
        return self.set(keys.hs_code_key(code), data, ttl)

    def get_cached_hs_code(self, code: str) -> Any:
        """The cached HS code, or None."""
        return self.get(keys.hs_code_key(code))

    def cache_rule(self, rule_id: str, data: Any, ttl: float | None = None) -> Any:
        """Cache one rule under ``rule:id:{rule_id}`` (TTL: settings.ttl.rules)."""
        return self.set(keys.rule_key(rule_id), data, ttl)

    def get_cached_rule(self, rule_id: str) -> Any:
        """The cached rule, or None."""
        return self.get(keys.rule_key(rule_id))

    def cache_assessment(
        self, rule_id: str, hs_code: str, origin_country: str, dest_country: str, result: Any, ttl: float | None = None
    ) -> Any:
        """Cache one assessment result (TTL: settings.ttl.assessments)."""
        return self.set(keys.assessment_key(rule_id, hs_code, origin_country, dest_country), result, ttl)

    def get_cached_assessment(self, rule_id: str, hs_code: str, origin_country: str, dest_country: str) -> Any:
        """The cached assessment result, or None."""
        return self.get(keys.assessment_key(rule_id, hs_code, origin_country, dest_country))

    def invalidate_hs_codes(self) -> Any:
        """Delete ``hs:*`` (codes and searches); return the count (awaitable on the async service)."""
        return self.invalidate("hs_codes")

    def invalidate_rules(self) -> Any:
        """Delete ``rule:*`` and ``rules:*``; return the count."""
        return self.invalidate("rules")

    def invalidate_assessments(self) -> Any:
        """Delete ``assessment:*``; return the count."""
        return self.invalidate("assessments")
