"""The FastAPI service: the spec's job API plus the PSRA read API the load tests exercise.

``create_app(settings)`` builds an app whose lifespan opens the PostgreSQL pool, the cache and
the job queue (and, with ``run_workers=True``, in-process job workers) and closes them again.
Routes live in :mod:`psra_bench.api.psra_routes` and :mod:`psra_bench.api.jobs_routes`; they only
translate HTTP to calls of plain library functions. Every refusal is an
:class:`psra_bench.api.errors.ApiError`, and the OpenAPI document lists each status a route can
return; request bodies are bounded by :class:`psra_bench.api.limits.BodyLimits` (size, nesting).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from psra_bench import __version__
from psra_bench.api.limits import BodyLimits
from psra_bench.exceptions import InputError, JobError, JobNotFoundError, JobPayloadTooLarge, PsraBenchError
from psra_bench.settings import LiveSettings, Settings, redact

__all__ = ["create_app", "AppState", "app_from_env", "app_with_job_workers_from_env"]


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


def create_app(settings: LiveSettings, *, run_workers: bool = False) -> FastAPI:
    """The PSRA API for ``settings`` (which must have concrete endpoints: see services.ensure_services)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from psra_bench.cache.cached_dal import AsyncCachedDAL, CachedDAL
        from psra_bench.cache.service import CacheService
        from psra_bench.db.aio import AsyncPostgresDAL
        from psra_bench.db.dal import PostgresDAL
        from psra_bench.infra.postgres import create_async_pool, create_pool
        from psra_bench.jobs.queue import JobQueue
        from psra_bench.psra.service import register_default_handlers

        pool = create_pool(settings)
        cache = CacheService(settings)
        acache = cache.aio
        queue = JobQueue(settings)

        async def close() -> None:
            await queue.close()
            await acache.aclose()
            cache.close()
            pool.close()

        try:
            apool = await create_async_pool(settings)
        except BaseException:
            await close()
            raise
        dal = PostgresDAL(pool)
        cached = CachedDAL(dal, cache)
        adal = AsyncPostgresDAL(apool)
        state = AppState(settings, pool, dal, cache, cached, queue, apool, adal, AsyncCachedDAL(adal, acache))
        workers = run_workers and settings.enable_async_tasks
        try:
            if settings.enable_async_tasks:
                await queue.check_job_store()  # an evicting job store: refuse to start, one sentence
            register_default_handlers(queue, pool=pool, cached=cached)
            app.state.psra = state
            if workers:
                await queue.start_workers()
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

    # The router tries routes in order: the read routes, the hottest under load, go first.
    app.include_router(psra_router)
    app.include_router(jobs_router)
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
