"""``psra-bench services | doctor | serve | worker | jobs``: the servers, the API and the job workers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import click

from psra_bench.cli.base import cli, handle_errors, ready, settings_from
from psra_bench.constants import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_SWEEP_SECONDS,
)
from psra_bench.table import Table

__all__ = ["services", "doctor", "serve", "worker", "jobs"]


# ----------------------------------------------------------------------------- services
@cli.group()
def services() -> None:
    """Start, stop or inspect the embedded PostgreSQL and Valkey."""


@services.command("up")
@click.pass_context
@handle_errors
def services_up(ctx: click.Context) -> None:
    """Start the embedded servers (configured servers are only checked)."""
    from psra_bench.infra.embedded import services_status
    from psra_bench.infra.postgres import connect
    from psra_bench.infra.redis_client import check_redis

    settings = ready(ctx)
    connect(settings.db_dsn).close()
    check_redis(settings)
    check_redis(settings.jobs_redis)
    _print_status(services_status(settings_from(ctx)))


@services.command("down")
@click.pass_context
@handle_errors
def services_down(ctx: click.Context) -> None:
    """Stop the embedded servers; configured servers are never stopped."""
    from psra_bench.infra.embedded import stop_services

    stopped = stop_services(settings_from(ctx))
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@services.command("status")
@click.pass_context
@handle_errors
def services_status_cmd(ctx: click.Context) -> None:
    """Show whether each server runs, where, and whether psra-bench manages it."""
    from psra_bench.infra.embedded import services_status

    _print_status(services_status(settings_from(ctx)))


def _print_status(statuses: Sequence[Any]) -> None:
    click.echo(
        Table.of(
            ["service", "managed", "running", "endpoint", "pid", "data"],
            [
                [
                    s.name,
                    "embedded" if s.managed else "configured",
                    "yes" if s.running else "no",
                    s.endpoint,
                    s.pid or "",
                    s.data_dir or "",
                ]
                for s in statuses
            ],
        ).text()
    )


# ----------------------------------------------------------------------------- doctor
@cli.command()
@click.pass_context
@handle_errors
def doctor(ctx: click.Context) -> None:
    """Show what psra-bench is connected to: versions, extensions, tables, indexes, Redis memory policy."""
    from psra_bench.doctor import diagnose

    for section, rows in diagnose(ready(ctx)).items():
        click.echo(f"\n{section}")
        click.echo(Table.of(["item", "value"], [[k, v] for k, v in rows.items()]).text())


# ----------------------------------------------------------------------------- serve / worker
@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--job-workers/--no-job-workers",
    default=True,
    show_default=True,
    help="Also run job workers inside the API process.",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="Log every request.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="API processes sharing the port (uvicorn workers); each reads the same settings from the environment.",
)
@click.pass_context
@handle_errors
def serve(ctx: click.Context, host: str, port: int, job_workers: bool, access_log: bool, workers: int) -> None:
    """Run the PSRA API (FastAPI + uvicorn with uvloop and httptools); OpenAPI at /docs."""
    import uvicorn

    from psra_bench.api.app import create_app
    from psra_bench.db.reference import prepare_database
    from psra_bench.infra.postgres import connect

    settings = ready(ctx)
    with connect(settings.db_dsn, autocommit=True) as conn:
        prepare_database(conn)
    if settings.enable_async_tasks:
        from psra_bench.jobs.queue import check_job_store_now

        check_job_store_now(settings)  # an evicting job store: one sentence, before serving
    click.echo(
        f"PSRA API on http://{host}:{port} (docs at /docs); cache {'on' if settings.enable_cache else 'off'}; "
        f"{workers} process{'es' if workers > 1 else ''}",
        err=True,
    )
    options: dict[str, Any] = {"host": host, "port": port, "access_log": access_log, "log_level": "warning"}
    if workers == 1:
        uvicorn.run(create_app(settings, run_workers=job_workers), **options)
    else:  # each worker process builds its app from the same environment (a factory, by import path)
        factory = "app_with_job_workers_from_env" if job_workers else "app_from_env"
        uvicorn.run(f"psra_bench.api.app:{factory}", factory=True, workers=workers, **options)


@cli.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1000),
    default=None,
    help="Jobs this process runs at once (default: MAX_CONCURRENT_JOBS).",
)
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@click.option(
    "--handlers",
    default=None,
    metavar="MODULE:FUNCTION",
    help="A setup(queue) registering handlers, as module:function or path/file.py:function "
    "(default: the installed defaults, assessment and bulk_import).",
)
@click.option("--lease", type=click.FloatRange(0.1, 3600), default=DEFAULT_LEASE_SECONDS, show_default=True,
              help="Seconds a job is leased to this worker between heartbeats.")  # fmt: skip
@click.option("--max-attempts", type=click.IntRange(1, 100), default=DEFAULT_MAX_ATTEMPTS, show_default=True,
              help="Lost workers before a job is FAILED.")  # fmt: skip
@click.option("--grace", type=click.FloatRange(0, 3600), default=DEFAULT_GRACE_SECONDS, show_default=True,
              help="Seconds in-flight jobs get to finish on SIGTERM.")  # fmt: skip
@click.option("--poll-interval", type=click.FloatRange(0.01, 60), default=DEFAULT_POLL_INTERVAL, show_default=True,
              help="Seconds between polls when the queues are empty.")  # fmt: skip
@click.option("--sweep-interval", type=click.FloatRange(1, 86_400), default=DEFAULT_SWEEP_SECONDS, show_default=True,
              help="Seconds between sweeps that repair inconsistent job state.")  # fmt: skip
@click.option("--namespace", default=None, help="Redis key prefix (overrides PSRA_CACHE_NAMESPACE).")
@click.pass_context
@handle_errors
def worker(
    ctx: click.Context,
    concurrency: int | None,
    burst: bool,
    handlers: str | None,
    lease: float,
    max_attempts: int,
    grace: float,
    poll_interval: float,
    sweep_interval: float,
    namespace: str | None,
) -> None:
    """Run a job worker process; several may share one Redis (the cap is global)."""
    from psra_bench.jobs.process import run_worker, worker_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = worker_settings(settings_from(ctx), default_handlers=handlers is None, namespace=namespace)
    done = run_worker(
        settings,
        concurrency,
        handlers_setup=handlers,
        burst=burst,
        lease_seconds=lease,
        max_attempts=max_attempts,
        grace_seconds=grace,
        poll_interval=poll_interval,
        sweep_seconds=sweep_interval,
    )
    click.echo(f"worker stopped after {done} jobs", err=True)


@cli.group()
def jobs() -> None:
    """Inspect and repair the job store."""


@jobs.command("sweep")
@click.option("--namespace", default=None, help="Redis key prefix (overrides PSRA_CACHE_NAMESPACE).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
@handle_errors
def jobs_sweep(ctx: click.Context, namespace: str | None, as_json: bool) -> None:
    """Repair inconsistent job state now (what every worker does once a minute) and list lost jobs."""
    import asyncio
    import json

    from psra_bench.jobs.process import worker_settings
    from psra_bench.jobs.queue import JobQueue

    settings = worker_settings(settings_from(ctx), default_handlers=False, namespace=namespace)

    async def sweep() -> Any:
        queue = JobQueue(settings)
        try:
            return await queue.sweep()
        finally:
            await queue.close()

    report = asyncio.run(sweep())
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(report.summary())
    for job_id in report.lost:
        click.echo(f"lost: {job_id}")
