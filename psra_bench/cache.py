"""The cache service of the spec (section 1): JSON values in Redis, TTLs per entity, never a crash.

:class:`CacheService` (sync) and :class:`AsyncCacheService` (asyncio; ``cache.aio`` gives one per
running loop, sharing counters and circuit breaker) put ``settings.cache_namespace`` before every
key and JSON-encode every value (a value JSON cannot hold raises CacheSerializationError naming
the key). A dead or slow server never reaches callers: reads miss, writes are skipped, the error
counter rises, and a circuit breaker stops asking after repeated failures; only :meth:`ping`
bypasses it. ``settings.enable_cache=False`` makes reads miss and writes no-ops.

:func:`cache_result` and :func:`invalidate_cache` decorate sync and async functions; a miss is
computed once however many callers ask at the same time (an in-process flight per key plus a
Redis lock with a token, released by compare-and-delete). Keys come from
:mod:`psra_bench.cache_keys`, counters and the breaker from :mod:`psra_bench.cache_stats`.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import string
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, ParamSpec, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import cache_keys as keys
from .cache_async import AsyncCacheService
from .cache_stats import CacheStats, CircuitBreaker
from .exceptions import CacheError, CacheSerializationError
from .settings import Settings, redact

__all__ = [
    "MISSING",
    "STATS_KEY",
    "LOCK_PREFIX",
    "CacheService",
    "AsyncCacheService",
    "get_cache",
    "close_caches",
    "cache_result",
    "invalidate_cache",
    "cache_hs_code",
    "get_cached_hs_code",
    "cache_rule",
    "get_cached_rule",
    "cache_assessment",
    "get_cached_assessment",
    "invalidate_hs_codes",
    "invalidate_rules",
    "invalidate_assessments",
]
