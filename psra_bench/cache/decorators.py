"""The cache decorators: ``cache_result`` (single-flight read-through) and ``invalidate_cache``.

Both work on sync and async functions. ``cache=`` names the cache (a
:class:`~psra_bench.cache.service.CacheService`, an :class:`~psra_bench.cache.service.AsyncCacheService`, or a
zero-argument callable returning one); left out, as in the spec, each call uses
:func:`psra_bench.cache.shared.get_cache` (the process settings), looked up at call time, not at
import. Keys come from the
arguments bound to the signature with defaults applied (:class:`psra_bench.cache.keys.ArgumentKeys`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias, TypeVar, cast

from psra_bench.cache import keys
from psra_bench.cache.aio import AsyncCacheService
from psra_bench.cache.service import CacheService
from psra_bench.cache.shared import get_cache
from psra_bench.exceptions import CacheError

__all__ = ["CacheLike", "cache_result", "invalidate_cache"]

F = TypeVar("F", bound=Callable[..., Any])

CacheLike: TypeAlias = "CacheService | AsyncCacheService | Callable[[], CacheService | AsyncCacheService]"


def _resolve(cache: CacheLike | None, owner: str, asynchronous: bool) -> Any:
    if cache is None:
        cache = get_cache
    service = cache() if callable(cache) and not isinstance(cache, CacheService | AsyncCacheService) else cache
    if asynchronous and isinstance(service, CacheService):
        return service.aio
    if isinstance(service, AsyncCacheService if asynchronous else CacheService):
        return service
    wanted = "a CacheService or AsyncCacheService" if asynchronous else "a CacheService"
    raise CacheError(f"cache={service!r} is not valid for {owner}(): use {wanted} (or a function returning one).")


def cache_result(
    ttl: float | None = None,
    key: str | Callable[..., str] | None = None,
    *,
    cache: CacheLike | None = None,
    lock_timeout: float | None = None,
    exclude: Iterable[str] = (),
) -> Callable[[F], F]:
    """Cache a sync or async function's JSON result per arguments; a miss is computed once across callers.

    ``ttl`` None uses the key's entity TTL (``default`` for ``fn:`` keys); ``key`` is a template
    (``"hs:code:{code}"``), a callable or None (see :class:`~psra_bench.cache.keys.ArgumentKeys`).
    A result whose entity was invalidated while it was computed is returned but not cached.
    """
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0):
        raise CacheError(f"ttl={ttl!r} is not valid: use seconds > 0, or None for the entity's TTL.")

    def decorate(func: F) -> F:
        build = keys.ArgumentKeys(func, key, exclude)
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                service = _resolve(cache, build.name, True)
                return await service.get_or_compute(
                    build(*args, **kwargs), lambda: func(*args, **kwargs), ttl, lock_timeout
                )

            async_wrapper.cache_key = build  # type: ignore[attr-defined]
            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            service = _resolve(cache, build.name, False)
            return service.get_or_compute(
                build(*args, **kwargs), functools.partial(func, *args, **kwargs), ttl, lock_timeout
            )

        wrapper.cache_key = build  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


def invalidate_cache(patterns: Iterable[str], *, cache: CacheLike | None = None) -> Callable[[F], F]:
    """After the function runs (also when it raises), delete the keys matching ``patterns``.

    A pattern may name parameters, e.g. ``"hs:code:{code}"``: the escaped argument fills it in.
    Each pattern first starts a new generation of the entities it may match, so a ``cache_result``
    computation already under way does not store its old value afterwards.
    """
    patterns = list(patterns) if not isinstance(patterns, str) else [patterns]
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise CacheError(f"patterns={patterns!r} is not valid: use a non-empty list of glob strings like 'hs:*'.")

    def decorate(func: F) -> F:
        build = keys.ArgumentKeys(func, None)
        for p in patterns:
            if "{" in p:
                keys.ArgumentKeys(func, p)  # checks the template's fields now

        def resolved(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
            return [build.fill(p, args, kwargs) if "{" in p else p for p in patterns]

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                todo = resolved(args, kwargs)
                try:
                    return await func(*args, **kwargs)
                finally:
                    service = _resolve(cache, build.name, True)
                    for p in todo:
                        await service.delete_pattern(p)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            todo = resolved(args, kwargs)
            try:
                return func(*args, **kwargs)
            finally:
                service = _resolve(cache, build.name, False)
                for p in todo:
                    service.delete_pattern(p)

        return cast(F, wrapper)

    return decorate
