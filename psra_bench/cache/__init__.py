"""The spec's Redis cache service (section 1); ``psra_bench.cache`` is the spec's ``backend.services.cache_service``."""

from __future__ import annotations

from psra_bench.cache.aio import AsyncCacheService
from psra_bench.cache.cached_dal import CachedDAL
from psra_bench.cache.core import LOCK_PREFIX, MISSING, STATS_KEY
from psra_bench.cache.decorators import CacheLike, cache_result, invalidate_cache
from psra_bench.cache.service import CacheService
from psra_bench.cache.shared import (
    cache_assessment,
    cache_hs_code,
    cache_rule,
    close_caches,
    get_cache,
    get_cached_assessment,
    get_cached_hs_code,
    get_cached_rule,
    invalidate_hs_codes,
    invalidate_rules,
)
from psra_bench.cache.stats import CacheStats, CircuitBreaker

__all__ = [
    "MISSING",
    "STATS_KEY",
    "LOCK_PREFIX",
    "CacheService",
    "AsyncCacheService",
    "CacheLike",
    "cache_result",
    "invalidate_cache",
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
    "CacheStats",
    "CircuitBreaker",
    "CachedDAL",
]
