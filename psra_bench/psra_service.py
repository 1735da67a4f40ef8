"""The PSRA service layer: cached assessment and the wiring of the default job handlers.

An assessment is cached under the spec's key ``assessment:{rule_id}:{hs_code}:{origin}:{dest}``.
That key does not name the bill of materials, so the cached value carries the ``input_hash``
of the input it answers, and only a request with the same hash is a hit; a hit returns the
stored verdict instead of storing a second, identical one.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import ConnectionPool

from .assessment import AssessmentRequest, assess, parse_request, store_verdict, verdict_to_dict
from .exceptions import ValidationError
from .jobs import JobQueue, register_default_handlers
from .settings import Settings

__all__ = ["assess_with_cache", "setup_default_handlers", "worker_handlers_setup"]


def _rules_for(cached: Any, req: AssessmentRequest) -> list[dict[str, Any]]:
    if req.agreement_code:
        rules: list[dict[str, Any]] = cached.rules_by_agreement(req.agreement_code)
        if not rules:
            known = ", ".join(a["agreement_code"] for a in cached.dal.agreements())
            raise ValidationError("agreement_code", req.agreement_code, f"one of {known}")
        return rules
    rule = cached.rule_by_id(req.rule_id)
    if rule is None:
        raise ValidationError("rule_id", req.rule_id, "the id of a rule in psra_rules")
    return [rule]


def assess_with_cache(pool: ConnectionPool, cached: Any, request: AssessmentRequest | dict[str, Any]) -> dict[str, Any]:
    """Assess ``request`` with rules from the (cached) DAL; store the verdict unless the cache already has it.

    Returns the verdict as a dict plus ``"cached": bool``.
    """
    req = parse_request(request)
    verdict = assess(req, _rules_for(cached, req))
    cache = cached.cache
    key = (verdict.rule_id or "none", verdict.hs_code, verdict.origin_country, verdict.destination_country)
    hit = cache.get_cached_assessment(*key)
    if isinstance(hit, dict) and hit.get("input_hash") == verdict.input_hash:
        return {**hit["verdict"], "cached": True}
    with pool.connection() as conn, conn.transaction():
        store_verdict(conn, verdict, req)
    out = verdict_to_dict(verdict)
    cache.cache_assessment(*key, {"input_hash": verdict.input_hash, "verdict": out})
    return {**out, "cached": False}


def setup_default_handlers(queue: JobQueue, settings: Settings, pool: ConnectionPool, cached: Any) -> None:
    """Register the real ``assessment`` and ``bulk_import`` handlers on ``queue``.

    ``bulk_import`` invalidates ``hs:*`` and ``assessment:*`` when its upsert has committed.
    """
    cache = cached.cache

    def run_assessment(payload: dict[str, Any]) -> dict[str, Any]:
        return assess_with_cache(pool, cached, payload)

    def invalidate() -> int:
        return int(cache.invalidate_hs_codes()) + int(cache.invalidate_assessments())

    register_default_handlers(queue, assessment_fn=run_assessment, on_done=invalidate)


def worker_handlers_setup(settings: Settings) -> Any:
    """A ``setup(queue)`` for ``psra-bench worker``: opens a pool and cache and registers the real handlers."""

    def setup(queue: JobQueue) -> None:
        from .cache import CacheService
        from .cached_dal import CachedDAL
        from .dal import PostgresDAL
        from .db import create_pool

        pool = create_pool(settings)
        setup_default_handlers(queue, settings, pool, CachedDAL(PostgresDAL(pool), CacheService(settings)))

    return setup
