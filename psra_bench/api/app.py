"""The FastAPI service: the spec's job API plus the PSRA read API the load tests exercise.

``create_app(settings)`` builds an app whose lifespan opens the PostgreSQL pool, the cache and
the job queue (and, with ``run_workers=True``, in-process job workers) and closes them again.
Routes live in :mod:`psra_bench.api.psra_routes` and :mod:`psra_bench.api.jobs_routes`; they only
translate HTTP to calls of plain library functions. Every refusal is an
:class:`psra_bench.api.errors.ApiError`, and the OpenAPI document lists each status a route can
return; request bodies are bounded by :class:`psra_bench.api.limits.BodyLimits` (size, nesting).

Outages: while the API's PostgreSQL or the job queue's Redis is down, a route that needs it answers
503 within about a second (bounded pool checkout, bounded retries), with ``Retry-After`` and an
``ApiError`` naming the dependency and its host:port; the exception handlers here are the one place
that maps the drivers' errors. :class:`Dependencies` logs one WARNING when a dependency goes down
and one when it answers again, never one per request. Routes a cache answers keep answering. The
lifespan does not wait for either dependency: a process that starts during an outage (one of
``serve --workers N``, replaced by uvicorn) starts, answers 503 and recovers like the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

import psycopg
import redis
import redis.asyncio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from psra_bench import __version__
from psra_bench.api.errors import unavailable
from psra_bench.api.limits import BodyLimits
from psra_bench.exceptions import (
    DatabaseConnectionError,
    InputError,
    JobError,
    JobNotFoundError,
    JobPayloadTooLarge,
    PsraBenchError,
)
from psra_bench.settings import LiveSettings, Settings, redact

__all__ = [
    "create_app",
    "AppState",
    "Dependencies",
    "POSTGRESQL",
    "JOB_STORE",
    "app_from_env",
    "app_with_job_workers_from_env",
]

log = logging.getLogger(__name__)

#: The dependencies as the API's messages name them.
POSTGRESQL = "the API's PostgreSQL"
JOB_STORE = "the job queue's Redis"
#: Seconds between the pings that find out the job store is back.
PROBE_INTERVAL = 0.25
#: Retries of the job store client in the API (redis-py's default is 10, seconds apart): a dead server is an
#: error within a second, and a connection it dropped is replaced by the first retry.
JOB_STORE_RETRIES = 2


class Dependencies:
    """Whether each dependency of the API answers, as its last use found; one WARNING line per change.

    PostgreSQL's pools report every change (their connection attempts, in the order they started,
    so an old failure never hides a newer success); the job store is reported down by the request
    that failed on it and up by a probe that pings it until it answers.
    """

    def __init__(self) -> None:
        self._down: dict[str, str] = {}
        self._last_ok: dict[str, float] = {}
        self._lock = threading.Lock()
        self._probes: set[asyncio.Task[None]] = set()

    def report(self, name: str, where: str, ok: bool, started: float, reason: str = "") -> bool:
        """Record one use of ``name`` (at ``where``) begun at ``started``; log and return True on a change."""
        with self._lock:
            if ok:
                self._last_ok[name] = max(self._last_ok.get(name, started), started)
            elif started < self._last_ok.get(name, float("-inf")):
                return False
            if ok != (name in self._down):
                return False
            if ok:
                del self._down[name]
            else:
                self._down[name] = reason
        if ok:
            log.warning("%s (%s) answers again; its routes answer again", name, where)
        else:
            log.warning(
                "%s (%s) is not reachable (%s); routes that need it answer 503 until it is back",
                name,
                where,
                redact(reason) or "no reason given",
            )
        return True

    def probe(
        self,
        name: str,
        where: str,
        ping: Callable[[], Awaitable[Any]],
        then: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        """Ping ``name`` every PROBE_INTERVAL seconds until it answers (and ``then()`` ran), then report it up.

        The probe is a task of the running loop; :meth:`aclose` stops it.
        """

        async def run() -> None:
            while True:
                await asyncio.sleep(PROBE_INTERVAL)
                started = monotonic()
                try:
                    await ping()
                    if then is not None:
                        await then()
                except (redis.RedisError, OSError):
                    continue
                except PsraBenchError as e:  # e.g. the job store came back evicting keys: said once, not retried
                    log.error("%s", redact(str(e)))
                self.report(name, where, True, started)
                return

        task = asyncio.get_running_loop().create_task(run(), name=f"probe {name}")
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def aclose(self) -> None:
        """Stop the probes."""
        for task in list(self._probes):
            task.cancel()
        await asyncio.gather(*self._probes, return_exceptions=True)


class _QuietPoolLog(logging.Filter):
    """Drops psycopg_pool's warnings (one per failed connection attempt): Dependencies logs each change once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@dataclass
class AppState:
    """What the routes need, opened by the lifespan.

    The routes a cache answers are async and use ``apool`` / ``adal`` / ``acached`` (psycopg's
    AsyncConnectionPool and the asyncio cache, which shares ``cache``'s counters and breaker); the
    database-bound routes and the job handlers run in threads on the sync ``pool`` / ``dal`` / ``cached``.
    """

    settings: Settings
    pool: Any
    dal: Any
    cache: Any
    cached: Any
    queue: Any
    apool: Any = None
    adal: Any = None
    acached: Any = None
    dependencies: Dependencies = field(default_factory=Dependencies)


def _field_of(error: dict[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        return "body"  # its loc ends in a character offset, not a field
    loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "header")]
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or str((error.get("ctx") or {}).get("field") or "body")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        field = _field_of(first)
        message = f"{field}: {first.get('msg', 'invalid value')}"
        return JSONResponse(
            status_code=422,
            content={
                "detail": message,
                "field": field,
                "errors": [{"field": _field_of(e), "message": e.get("msg", "")} for e in errors],
            },
        )

    @app.exception_handler(InputError)
    async def _invalid(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc), "field": exc.field})

    @app.exception_handler(JobPayloadTooLarge)
    async def _too_large(request: Request, exc: JobPayloadTooLarge) -> JSONResponse:
        return JSONResponse(status_code=413, content={"detail": str(exc), "field": exc.field})

    @app.exception_handler(JobNotFoundError)
    async def _no_job(request: Request, exc: JobNotFoundError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc), "job_id": exc.job_id})

    @app.exception_handler(JobError)
    async def _job_error(request: Request, exc: JobError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc), "field": getattr(exc, "field", None)})

    @app.exception_handler(PsraBenchError)
    async def _other(request: Request, exc: PsraBenchError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": redact(str(exc))})

    @app.exception_handler(psycopg.OperationalError)  # PoolTimeout is one: a checkout that gave up
    async def _database_down(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        from psra_bench.infra.postgres import dsn_host_port

        host, port = dsn_host_port(request.app.state.psra.settings.db_dsn)
        state = exc.sqlstate or ""
        lost = not state or state.startswith("08") or (state.startswith("57") and state != "57014")
        problem = "is not reachable" if lost else f"could not answer (SQLSTATE {state})"
        return unavailable(POSTGRESQL, f"{host}:{port}", problem)

    @app.exception_handler(DatabaseConnectionError)
    async def _cannot_connect(request: Request, exc: DatabaseConnectionError) -> JSONResponse:
        return unavailable(exc.service, f"{exc.host}:{exc.port}" if exc.port else exc.host)

    async def _job_store_down(request: Request, exc: Exception) -> JSONResponse:
        state: AppState = request.app.state.psra
        store = state.queue.store
        where = f"{store.host}:{store.port}"
        if state.dependencies.report(JOB_STORE, where, False, monotonic(), str(exc) or type(exc).__name__):
            state.dependencies.probe(JOB_STORE, where, state.queue.redis.ping)
        return unavailable(JOB_STORE, where)

    app.add_exception_handler(redis.ConnectionError, _job_store_down)  # the cache never raises: only the job store
    app.add_exception_handler(redis.TimeoutError, _job_store_down)


def create_app(settings: LiveSettings, *, run_workers: bool = False) -> FastAPI:
    """The PSRA API for ``settings`` (which must have concrete endpoints: see services.ensure_services)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from psra_bench.cache.cached_dal import AsyncCachedDAL, CachedDAL
        from psra_bench.cache.service import CacheService
        from psra_bench.db.aio import AsyncPostgresDAL
        from psra_bench.db.dal import PostgresDAL
        from psra_bench.infra.postgres import create_async_pool, create_pool, dsn_host_port
        from psra_bench.jobs.queue import JobQueue
        from psra_bench.psra.service import register_default_handlers

        dependencies = Dependencies()
        host, port = dsn_host_port(settings.db_dsn)

        def database(ok: bool, started: float, reason: str) -> None:
            dependencies.report(POSTGRESQL, f"{host}:{port}", ok, started, reason)

        quiet, pool_log = _QuietPoolLog(), logging.getLogger("psycopg.pool")
        pool_log.addFilter(quiet)
        try:
            pool = create_pool(settings, check=True, on_reachable=database, wait=False)
        except BaseException:
            pool_log.removeFilter(quiet)
            raise
        cache = CacheService(settings)
        acache = cache.aio
        queue = JobQueue(settings)
        if isinstance(queue.redis, redis.asyncio.Redis):  # a RedisCluster keeps its own retries
            queue.redis.set_retry(Retry(ExponentialBackoff(cap=0.2, base=0.05), JOB_STORE_RETRIES))

        async def close() -> None:
            await dependencies.aclose()
            await queue.close()
            await acache.aclose()
            cache.close()
            pool.close()
            pool_log.removeFilter(quiet)

        try:
            apool = await create_async_pool(settings, check=True, on_reachable=database, wait=False)
        except BaseException:
            await close()
            raise
        dal = PostgresDAL(pool)
        cached = CachedDAL(dal, cache)
        adal = AsyncPostgresDAL(apool)
        state = AppState(
            settings, pool, dal, cache, cached, queue, apool, adal, AsyncCachedDAL(adal, acache), dependencies
        )
        workers = run_workers and settings.enable_async_tasks

        async def use_job_store() -> None:
            if settings.enable_async_tasks:
                await queue.check_job_store()  # an evicting job store: refuse to start, one sentence
            if workers:
                await queue.start_workers()

        try:
            register_default_handlers(queue, pool=pool, cached=cached)
            app.state.psra = state
            try:
                await use_job_store()
            except (redis.ConnectionError, redis.TimeoutError) as e:
                # `serve` checked the job store before it started this process (one of --workers N, perhaps a
                # replacement during an outage): start anyway, the job routes answer 503 until the store is back.
                where = f"{queue.store.host}:{queue.store.port}"
                dependencies.report(JOB_STORE, where, False, monotonic(), str(e) or type(e).__name__)
                dependencies.probe(JOB_STORE, where, queue.redis.ping, then=use_job_store)
            # What start-up built (modules, reference data, compiled rules, clients) lives as long as the
            # process: moved out of the collector's generations, a full collection while serving no longer
            # walks it, which shortens the pauses that land in the latency tail (benchmarks/bench_api.py).
            gc.freeze()
            yield
        finally:
            if workers:
                await queue.stop_workers()
            await apool.close()
            await close()

    app = FastAPI(
        title="PSRA API (psra-bench)",
        version=__version__,
        description="Rules-of-origin assessment, HS lookups, verdict history and the async job API.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    app.add_middleware(BodyLimits, max_bytes=settings.max_body_bytes)
    from psra_bench.api.access import document_operator_access
    from psra_bench.api.jobs_routes import router as jobs_router
    from psra_bench.api.psra_routes import router as psra_router

    # The routes join the app's own router rather than being included: FastAPI (0.165) matches an included
    # router's routes twice per request (once to pick the router, once inside it), a third of a cached
    # lookup's own time here (benchmarks/bench_api.py). Routes are tried in order: the read routes, the
    # hottest under load, go first. Their paths, tags and dependencies are set on each route already.
    app.router.routes.extend(psra_router.routes)
    app.router.routes.extend(jobs_router.routes)
    document_operator_access(app, enabled=settings.admin_token is not None)  # no token: no operator in /openapi.json
    return app


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory psra_bench.api.app:app_from_env`` (the process settings, read once)."""
    from psra_bench.infra.embedded import process_settings

    return create_app(process_settings())


def app_with_job_workers_from_env() -> FastAPI:
    """Like :func:`app_from_env`, with job workers in the process (``psra-bench serve --workers N``)."""
    from psra_bench.infra.embedded import process_settings

    return create_app(process_settings(), run_workers=True)
