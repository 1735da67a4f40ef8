"""The PSRA service layer: cached assessment, submit-time checks and the one registration of the default job handlers.

An assessment is cached under the spec's key ``assessment:{rule_id}:{hs_code}:{origin}:{dest}``.
That key does not name the bill of materials, so the cached value carries the hash of the
normalized request it answers (:func:`~psra_bench.psra.assessment.input_hash`), and only a request
with the same hash is a hit; a hit returns the stored verdict instead of storing a second,
identical one. The key and the hash come before any work, so a hit costs one cache read: no rules
lookup, no evaluation. A request that names its rule has its key at once; one that names only an
agreement learns its rule from this process's earlier evaluations of the same product, route and
date (:class:`RuleChoices`), and the first time from the evaluation itself. A remembered choice
that a rules reload made wrong only points at a key the reload emptied (it drops ``assessment:*``),
so it costs a miss, never a wrong answer. An input without a tenant (the job API's short body) is
assessed and cached but never stored: its verdict lives in the job result.

A job's verdict has ids derived from the job (:func:`job_verdict_ids`, uuid5 of the job id), and
the INSERT does nothing when that evaluation_id is stored already: a job that runs again after
its worker died stores no second verdict. Just before the verdict's COMMIT the job passes its
point of no return, so a job is never CANCELLED with its verdict stored.

:func:`register_default_handlers` is the one way the default set (``assessment`` and
``bulk_import``) is registered: by the API's lifespan, by ``psra-bench worker`` and by the spec's
``psra_bench.jobs.register_default_handlers(queue)``, which finds it through the
``psra_bench.default_handlers`` entry point (the generic queue never imports this domain).
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool, ConnectionPool

from psra_bench.cache.cached_dal import AsyncCachedDAL
from psra_bench.cache.keys import assessment_key
from psra_bench.exceptions import InputError
from psra_bench.infra.embedded import ensure_services
from psra_bench.jobs.models import JobHandler, current_job
from psra_bench.jobs.queue import JobQueue
from psra_bench.psra.assessment import (
    AssessmentInput,
    AssessmentRequest,
    Verdict,
    assess,
    input_hash,
    parse_input,
    parse_request,
    validate_request,
    verdict_to_dict,
)
from psra_bench.psra.handlers import (
    check_bulk_payload,
    make_assessment_handler,
    make_bulk_import_handler,
    validate_assessment_payload,
)
from psra_bench.psra.rules import compile_rules
from psra_bench.psra.storage import store_verdict, store_verdict_async
from psra_bench.settings import Settings

__all__ = [
    "RuleChoices",
    "assess_with_cache",
    "assess_with_cache_async",
    "check_assessment",
    "register_default_handlers",
    "job_verdict_ids",
    "JOB_VERDICT_NAMESPACE",
]

#: The uuid5 namespace of verdict ids derived from job ids (fixed: the same job always maps to the same ids).
JOB_VERDICT_NAMESPACE = uuid.UUID("5a07ba50-d487-4f99-8675-20daa9d70337")


def job_verdict_ids(job_id: str) -> tuple[uuid.UUID, uuid.UUID]:
    """``(evaluation_id, request_id)`` of job ``job_id``'s verdict: uuid5s of the job id, the same on every re-run."""
    return (
        uuid.uuid5(JOB_VERDICT_NAMESPACE, f"evaluation:{job_id}"),
        uuid.uuid5(JOB_VERDICT_NAMESPACE, f"request:{job_id}"),
    )


def _unknown_agreement(req: AssessmentInput, agreements: list[dict[str, Any]]) -> InputError:
    known = ", ".join(a["agreement_code"] for a in agreements)
    return InputError("agreement_code", req.agreement_code, f"one of {known}")


def _unknown_rule(req: AssessmentInput) -> InputError:
    return InputError("rule_id", req.rule_id, "the id of a rule in psra_rules")


def _rules_for(cached: Any, req: AssessmentInput) -> list[dict[str, Any]]:
    if req.agreement_code:
        rules: list[dict[str, Any]] = cached.rules_by_agreement(req.agreement_code)
        if not rules:
            raise _unknown_agreement(req, cached.dal.agreements())
        return rules
    rule = cached.rule_by_id(req.rule_id)
    if rule is None:
        raise _unknown_rule(req)
    return [rule]


async def _rules_for_async(cached: AsyncCachedDAL, req: AssessmentInput) -> list[dict[str, Any]]:
    if req.agreement_code:
        rules = await cached.rules_by_agreement(req.agreement_code)
        if not rules:
            raise _unknown_agreement(req, await cached.dal.agreements())
        return rules
    rule = await cached.rule_by_id(str(req.rule_id))
    if rule is None:
        raise _unknown_rule(req)
    return [rule]


#: The one key whose generation every assessment reads first (all assessments are one entity).
_ANY_ASSESSMENT = assessment_key("any", "00", "XX", "XX")
#: Products, routes and dates whose rule one process remembers (least recently used forgotten first).
RULE_CHOICES = 4096


class RuleChoices:
    """Which rule an agreement's evaluation chose for a product, route and date, as this process last saw it."""

    def __init__(self, size: int = RULE_CHOICES) -> None:
        self._size = size
        self._chosen: OrderedDict[tuple[str, ...], str] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _target(req: AssessmentInput) -> tuple[str, ...]:
        date = req.assessment_date.isoformat()
        return (req.agreement_code or "", req.hs_code, req.origin_country, req.destination_country, date)

    def rule_of(self, req: AssessmentInput) -> str | None:
        """The rule id of the request's cache key: its own, else the one remembered for its target, else None."""
        if req.rule_id:
            return req.rule_id
        with self._lock:
            rule_id = self._chosen.get(self._target(req))
            if rule_id is not None:
                self._chosen.move_to_end(self._target(req))
            return rule_id

    def remember(self, req: AssessmentInput, verdict: Verdict) -> None:
        """Note the rule the evaluation of ``req`` chose ("none": no rule applied)."""
        if req.rule_id:
            return
        with self._lock:
            self._chosen[self._target(req)] = verdict.rule_id or "none"
            self._chosen.move_to_end(self._target(req))
            while len(self._chosen) > self._size:
                self._chosen.popitem(last=False)


_choices: weakref.WeakKeyDictionary[Any, RuleChoices] = weakref.WeakKeyDictionary()
_choices_lock = threading.Lock()


def _choices_of(cache: Any) -> RuleChoices:
    """The rule choices remembered beside one cache (one per cache service: per namespace and database)."""
    with _choices_lock:
        found = _choices.get(cache)
        if found is None:
            found = _choices[cache] = RuleChoices()
        return found


def _key(req: AssessmentInput, rule_id: str) -> str:
    return assessment_key(rule_id, req.hs_code, req.origin_country, req.destination_country)


def _hit(cached_value: Any, request_hash: str) -> dict[str, Any] | None:
    """The cached verdict when ``cached_value`` answers the same normalized request (its hash), else None."""
    if isinstance(cached_value, dict) and cached_value.get("input_hash") == request_hash:
        return {**cached_value["verdict"], "cached": True}
    return None


def check_assessment(cached: Any, request: AssessmentInput | dict[str, Any]) -> AssessmentInput:
    """Check an input against the (cached) rules and HS table before queueing it; InputError names the field."""
    req = parse_input(request)
    validate_request(req, compile_rules(_rules_for(cached, req)))
    return req


def assess_with_cache(
    pool: ConnectionPool,
    cached: Any,
    request: AssessmentInput | dict[str, Any],
    *,
    full: bool = True,
    ids: tuple[uuid.UUID, uuid.UUID] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Assess ``request`` with rules from the (cached) DAL; store the verdict (when it has a tenant) unless cached.

    ``full`` (the synchronous API) requires a whole :class:`AssessmentRequest`; ``full=False`` (jobs)
    accepts an :class:`AssessmentInput`. ``ids`` fixes ``(evaluation_id, request_id)`` (a job's,
    from :func:`job_verdict_ids`); ``before_commit`` runs inside the verdict's transaction, just
    before COMMIT (a job's point of no return; raising rolls back). Returns the verdict as a dict
    plus ``"cached": bool``.
    """
    req = parse_request(request) if full else parse_input(request)
    cache, choices, request_hash = cached.cache, _choices_of(cached.cache), input_hash(req)
    rule_id = choices.rule_of(req)
    if rule_id is not None and (hit := _hit(cache.get(_key(req, rule_id)), request_hash)) is not None:
        return hit  # one cache read: no rules lookup, no evaluation
    # Read the assessments' generation before the rules: an invalidation while we assess (a rule or
    # HS code changed) then keeps our possibly stale verdict out of the cache.
    generation = cache.generation(_ANY_ASSESSMENT)
    evaluation_id, request_id = ids if ids is not None else (None, None)
    verdict = assess(req, _rules_for(cached, req), evaluation_id=evaluation_id, request_id=request_id)
    choices.remember(req, verdict)
    key = _key(req, verdict.rule_id or "none")
    if rule_id is None and (hit := _hit(cache.get(key), request_hash)) is not None:
        return hit  # another process stored it; this one had not seen the product's rule yet
    if req.tenant_id is not None:
        with pool.connection() as conn, conn.transaction():
            store_verdict(conn, verdict, req)
            if before_commit is not None:
                before_commit()
    out = verdict_to_dict(verdict)
    cache.set_if_generation(key, {"input_hash": request_hash, "verdict": out}, generation)
    return {**out, "cached": False}


async def assess_with_cache_async(
    pool: AsyncConnectionPool,
    cached: AsyncCachedDAL,
    request: AssessmentRequest | dict[str, Any],
    *,
    request_hash: str | None = None,
) -> dict[str, Any]:
    """:func:`assess_with_cache` for async callers (the API's synchronous-assessment route): a full request.

    The same steps, each awaited: the cache lookup when the key is known, else (and on a miss) the
    assessments' generation, the cached rules, the pure assessment (on the event loop: about
    0.2 ms), then the verdict's INSERT (with a tenant) and the generation-checked cache write.
    ``request_hash``: the request's :func:`input_hash`, when the caller has it already.
    """
    req = parse_request(request)
    cache, choices = cached.cache, _choices_of(cached.cache)
    request_hash = request_hash or input_hash(req)
    rule_id = choices.rule_of(req)
    if rule_id is not None and (hit := _hit(await cache.get(_key(req, rule_id)), request_hash)) is not None:
        return hit
    generation = await cache.generation(_ANY_ASSESSMENT)
    verdict = assess(req, await _rules_for_async(cached, req))
    choices.remember(req, verdict)
    key = _key(req, verdict.rule_id or "none")
    if rule_id is None and (hit := _hit(await cache.get(key), request_hash)) is not None:
        return hit
    if req.tenant_id is not None:
        async with pool.connection() as conn, conn.transaction():
            await store_verdict_async(conn, verdict, req)
    out = verdict_to_dict(verdict)
    await cache.set_if_generation(key, {"input_hash": request_hash, "verdict": out}, generation)
    return {**out, "cached": False}


class _Resources:
    """A pool, cache and cached DAL on ``settings``, opened on first use and closed with the queue."""

    def __init__(self, settings: Settings, pool: ConnectionPool | None, cached: Any) -> None:
        self.settings = ensure_services(settings)  # the queue's settings, with their endpoints known
        self.pool = pool
        self.cached = cached
        self._cache = cached.cache if cached is not None else None
        self._owned: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def cache(self) -> Any:
        """The cache service (the cached DAL's, else one of this queue's own)."""
        with self._lock:
            if self._cache is None:
                from psra_bench.cache.service import CacheService

                self._cache = CacheService(self.settings)
                self._owned.append(self._cache.close)
            return self._cache

    def pool_and_cached(self) -> tuple[ConnectionPool, Any]:
        """The PostgreSQL pool and the cached DAL (opened now when none were given)."""
        cache = self.cache()
        with self._lock:
            if self.pool is None:
                from psra_bench.infra.postgres import create_pool

                self.pool = create_pool(self.settings)
                self._owned.append(self.pool.close)
            if self.cached is None:
                from psra_bench.cache.cached_dal import CachedDAL
                from psra_bench.db.dal import PostgresDAL

                self.cached = CachedDAL(PostgresDAL(self.pool), cache)
            return self.pool, self.cached

    def close(self) -> None:
        """Close what this object opened itself (given pools and caches stay their owner's)."""
        with self._lock:
            owned, self._owned = self._owned, []
        for close in reversed(owned):
            close()


def register_default_handlers(
    queue: JobQueue,
    *,
    pool: ConnectionPool | None = None,
    cached: Any = None,
    assessment_fn: Callable[[dict[str, Any]], Any] | None = None,
    bulk_import_fn: JobHandler | None = None,
    on_done: Callable[[], Awaitable[int] | int] | None = None,
) -> None:
    """Register the default set on ``queue``: the real ``assessment`` and ``bulk_import`` (then cache invalidation).

    ``assessment`` assesses against ``queue.settings``' database and stores verdicts that have a
    tenant; ``bulk_import`` upserts HS codes, then drops ``hs:*`` and ``assessment:*``. Without
    ``pool`` / ``cached`` they are opened on first use and closed with the queue. ``assessment_fn``,
    ``bulk_import_fn`` and ``on_done`` replace a part (tests, benchmarks).
    """
    resources = _Resources(queue.settings, pool, cached)
    queue.add_close_callback(resources.close)

    def run_assessment(payload: dict[str, Any]) -> dict[str, Any]:
        db_pool, dal = resources.pool_and_cached()
        job = current_job()  # set in the worker's thread too (run_in_thread copies the context)
        if job is None:
            return assess_with_cache(db_pool, dal, payload, full=False)
        return assess_with_cache(
            db_pool,
            dal,
            payload,
            full=False,
            ids=job_verdict_ids(job.job_id),
            before_commit=job.point_of_no_return_from_thread,
        )

    def invalidate() -> int:
        cache = resources.cache()
        return int(cache.invalidate_hs_codes()) + int(cache.invalidate_assessments())

    handler = make_assessment_handler(assessment_fn or run_assessment)
    queue.register_handler("assessment", handler, validate=validate_assessment_payload)
    bulk = bulk_import_fn or make_bulk_import_handler(resources.settings.db_dsn, on_done=on_done or invalidate)
    queue.register_handler("bulk_import", bulk, validate=check_bulk_payload)
