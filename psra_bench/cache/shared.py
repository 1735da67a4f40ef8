"""The process's shared cache services, and the spec's module-level helpers over them.

:func:`get_cache` with no argument uses the process settings (:func:`psra_bench.infra.process_settings`);
``cache_hs_code`` ... ``invalidate_rules`` delegate to it, so the spec's examples run as written.
"""

from __future__ import annotations

import threading
from typing import Any

from psra_bench.cache.service import CacheService
from psra_bench.infra.embedded import process_settings
from psra_bench.settings import Settings

__all__ = [
    "get_cache",
    "close_caches",
    "cache_hs_code",
    "get_cached_hs_code",
    "cache_rule",
    "get_cached_rule",
    "cache_assessment",
    "get_cached_assessment",
    "invalidate_hs_codes",
    "invalidate_rules",
]

_SERVICES: dict[Settings, CacheService] = {}
_SERVICES_LOCK = threading.Lock()


def get_cache(settings: Settings | None = None) -> CacheService:
    """The one shared CacheService of ``settings`` (default: the process settings), created on first use."""
    settings = process_settings() if settings is None else settings
    with _SERVICES_LOCK:
        service = _SERVICES.get(settings)
        if service is None:
            service = _SERVICES[settings] = CacheService(settings)
        return service


def close_caches() -> None:
    """Close and forget every service made by :func:`get_cache`."""
    with _SERVICES_LOCK:
        services = list(_SERVICES.values())
        _SERVICES.clear()
    for service in services:
        service.close()


# --------------------------------------------------------------------------- the spec's module-level helpers
# Thin functions over get_cache() (the process settings), so the spec's examples run as written.


def cache_hs_code(code: str, data: Any, ttl: float | None = None) -> bool:
    """Cache one HS code under ``hs:code:{code}`` in the process cache (TTL: settings.ttl.hs_codes)."""
    return bool(get_cache().cache_hs_code(code, data, ttl))


def get_cached_hs_code(code: str) -> Any:
    """The HS code cached in the process cache, or None."""
    return get_cache().get_cached_hs_code(code)


def cache_rule(rule_id: str, data: Any, ttl: float | None = None) -> bool:
    """Cache one rule under ``rule:id:{rule_id}`` in the process cache (TTL: settings.ttl.rules)."""
    return bool(get_cache().cache_rule(rule_id, data, ttl))


def get_cached_rule(rule_id: str) -> Any:
    """The rule cached in the process cache, or None."""
    return get_cache().get_cached_rule(rule_id)


def cache_assessment(
    rule_id: str, hs_code: str, origin_country: str, dest_country: str, result: Any, ttl: float | None = None
) -> bool:
    """Cache one assessment result in the process cache (TTL: settings.ttl.assessments)."""
    return bool(get_cache().cache_assessment(rule_id, hs_code, origin_country, dest_country, result, ttl))


def get_cached_assessment(rule_id: str, hs_code: str, origin_country: str, dest_country: str) -> Any:
    """The assessment result cached in the process cache, or None."""
    return get_cache().get_cached_assessment(rule_id, hs_code, origin_country, dest_country)


def invalidate_hs_codes() -> int:
    """Delete ``hs:*`` from the process cache; return the count."""
    return int(get_cache().invalidate_hs_codes())


def invalidate_rules() -> int:
    """Delete ``rule:*`` and ``rules:*`` from the process cache; return the count."""
    return int(get_cache().invalidate_rules())
