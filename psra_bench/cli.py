"""``psra-bench``: a thin command line over the library's plain functions.

Settings come from the environment here, once; each command calls into ``psra_bench`` and
prints. A :class:`PsraBenchError` becomes one sentence on stderr and exit code 2 — never a
traceback.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from psra_bench import __version__
from psra_bench.constants import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_SWEEP_SECONDS,
)
from psra_bench.exceptions import PsraBenchError
from psra_bench.settings import LiveSettings, Settings, redact
from psra_bench.table import Table

__all__ = ["main", "cli"]

F = TypeVar("F", bound=Callable[..., Any])


def _errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PsraBenchError as e:
            click.echo(f"error: {redact(str(e))}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def _ready(ctx: click.Context) -> LiveSettings:
    """Settings with live endpoints: embedded servers started if no servers are configured."""
    from psra_bench.infra.embedded import ensure_services

    return ensure_services(_settings(ctx))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="psra-bench")
@click.pass_context
@_errors
def cli(ctx: click.Context) -> None:
    """Benchmark and tune the PSRA backend: real PostgreSQL, real Redis, honest numbers."""
    ctx.obj = Settings.from_env()


# ----------------------------------------------------------------------------- services
@cli.group()
def services() -> None:
    """Start, stop or inspect the embedded PostgreSQL and Valkey."""


@services.command("up")
@click.pass_context
@_errors
def services_up(ctx: click.Context) -> None:
    """Start the embedded servers (configured servers are only checked)."""
    from psra_bench.infra.embedded import services_status
    from psra_bench.infra.postgres import connect
    from psra_bench.infra.redis_client import check_redis

    settings = _ready(ctx)
    connect(settings.db_dsn).close()
    check_redis(settings)
    check_redis(settings.jobs_redis)
    _print_status(services_status(_settings(ctx)))


@services.command("down")
@click.pass_context
@_errors
def services_down(ctx: click.Context) -> None:
    """Stop the embedded servers; configured servers are never stopped."""
    from psra_bench.infra.embedded import stop_services

    stopped = stop_services(_settings(ctx))
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@services.command("status")
@click.pass_context
@_errors
def services_status_cmd(ctx: click.Context) -> None:
    """Show whether each server runs, where, and whether psra-bench manages it."""
    from psra_bench.infra.embedded import services_status

    _print_status(services_status(_settings(ctx)))


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


# ----------------------------------------------------------------------------- seed
@cli.command()
@click.option(
    "--verdicts", "verdicts", type=int, default=100_000, show_default=True, help="How many synthetic verdicts to write."
)
@click.option("--seed", "seed", type=int, default=42, show_default=True, help="Random seed (same seed, same data).")
@click.option("--tenants", type=int, default=200, show_default=True, help="How many tenants.")
@click.option("--force", is_flag=True, help="Replace existing verdicts.")
@click.option("--append", is_flag=True, help="Add to existing verdicts.")
@click.pass_context
@_errors
def seed(ctx: click.Context, verdicts: int, seed: int, tenants: int, force: bool, append: bool) -> None:
    """Create the schema, load HS codes and rules, and write synthetic verdicts with COPY."""
    from psra_bench.db.ownership import require_owned
    from psra_bench.db.reference import prepare_database
    from psra_bench.db.seed import check_seed_args, seed_database, verdict_count
    from psra_bench.exceptions import ParameterError
    from psra_bench.infra.postgres import connect

    if force and append:
        raise ParameterError("--force/--append", "both", "pass at most one of them")
    check_seed_args(verdicts, tenants)  # every flag checked before a server is touched
    settings = _ready(ctx)
    require_owned(settings, "seed")
    with connect(settings.db_dsn, autocommit=True) as conn:
        counts = prepare_database(conn, owned=True)
        click.echo(f"reference data: {counts['hs_codes']:,} HS codes, {counts['psra_rules']} rules")
        mode = "force" if force else "append" if append else "refuse"
        if mode == "refuse" and verdict_count(conn):
            seed_database(conn, verdicts, seed=seed, tenants=tenants, mode=mode)  # raises SeedError, writes nothing
        with click.progressbar(length=verdicts, label="seeding verdicts", file=sys.stderr) as bar:
            result = seed_database(conn, verdicts, seed=seed, tenants=tenants, mode=mode, progress=bar.update)
    click.echo(
        f"wrote {result.verdicts:,} verdicts for {result.tenants} tenants in {result.seconds:.1f} s "
        f"({result.rows_per_second:,.0f} rows/s); seed {result.seed}, checksum {result.checksum}"
    )


# ----------------------------------------------------------------------------- handover
@cli.command()
@click.option("--database", default=None, help="A database NAME on the configured server (default: PSRA_DB_DSN's).")
@click.option("--yes", is_flag=True, help="Hand it over even though it holds data psra-bench did not put there.")
@click.option("--release", is_flag=True, help="Take the hand-over back: psra-bench no longer writes there.")
@click.pass_context
@_errors
def handover(ctx: click.Context, database: str | None, yes: bool, release: bool) -> None:
    """Hand a database over to psra-bench, so seed, report, notebooks and the audit may overwrite it."""
    from psra_bench.db import ownership
    from psra_bench.exceptions import ParameterError
    from psra_bench.infra import postgres as db

    if database is not None and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", database):
        raise ParameterError(
            "--database", redact(database), "a lower-case PostgreSQL name (letters, digits, _), not a DSN"
        )
    if yes and release:
        raise ParameterError("--yes/--release", "both", "pass at most one of them")
    settings = _ready(ctx)
    dsn = settings.db_dsn if database is None else db.with_database(settings.db_dsn, database)
    with db.connect(dsn, autocommit=True) as conn:
        found = ownership.inspect(conn)
        if release:
            done = ownership.release(conn)
            click.echo(
                f"{found.database}: " + ("released; psra-bench no longer writes there" if done else "was not owned")
            )
            return
        if found.owned:
            click.echo(f"{found.database}: already {found.describe()}")
            return
        if found.foreign and not yes:
            raise ParameterError(
                "--yes",
                False,
                f"given, to hand over {found.database!r}, which holds "
                + "; ".join(found.foreign)
                + " (seed, report, the notebooks and the audit may overwrite or drop that)",
            )
        ownership.claim(conn, "handed-over")
    click.echo(f"{found.database}: handed over to psra-bench (`psra-bench handover --release` takes it back)")


# ----------------------------------------------------------------------------- migrate
@cli.command()
@click.argument("action", type=click.Choice(["up", "down", "status", "verify"]))
@click.argument("name", required=False)
@click.pass_context
@_errors
def migrate(ctx: click.Context, action: str, name: str | None) -> None:
    """Apply (up), roll back (down), inspect (status) or verify the index migration."""
    from psra_bench.db import migrate as m
    from psra_bench.db.reference import prepare_database
    from psra_bench.infra.postgres import connect

    names = m.resolve_migrations(name)
    settings = _ready(ctx)
    if action in ("status", "verify"):
        with connect(settings.db_dsn, autocommit=True) as conn:
            if not m.schema_ready(conn):  # never lock the tables a running `migrate up` is building on
                prepare_database(conn)
            if action == "status":
                for n in names:
                    _echo_status(m.migration_status(conn, n))
            else:
                for t in m.verify(conn):
                    click.echo("\n" + t.text())
        return

    def report(kind: str, index: str, seconds: float) -> None:
        if kind == "wait":
            click.echo(f"  waiting for another `migrate` run on this database ({index}) to finish", err=True)
        else:
            click.echo(f"  {kind} {index} ({seconds:.2f} s)", err=True)

    # up/down prepare the schema under the migration's lock: never while another run builds indexes.
    for n in names if action == "up" else list(reversed(names)):
        if action == "up":
            r = m.migrate_up(settings.db_dsn, n, progress=report, prepare=prepare_database)
            click.echo(
                f"{n}: created {len(r['created'])}, repaired {len(r['repaired'])}, already present "
                f"{len(r['already'])}; {r['index_count']} indexes in schema public"
            )
            if r["preexisting"]:
                click.echo(f"  present before the migration, kept by `migrate down`: {', '.join(r['preexisting'])}")
        else:
            r = m.migrate_down(settings.db_dsn, n, progress=report, prepare=prepare_database)
            if not r["dropped"]:
                click.echo(f"{n}: not applied, nothing to roll back; {r['index_count']} indexes in schema public")
            else:
                click.echo(f"{n}: dropped {len(r['dropped'])}; {r['index_count']} indexes in schema public")
            if r["kept"]:
                click.echo(f"  kept, not created by the migration: {', '.join(r['kept'])}")
        if r["waited_seconds"]:
            click.echo(f"  waited {r['waited_seconds']:.1f} s for another `migrate` run on this database")


def _echo_status(st: Any) -> None:
    """One line for where a migration stands, then one line per kind of index needing attention."""
    total = len(st.present) + len(st.missing) + len(st.invalid) + len(st.building) + len(st.conflicts)
    click.echo(
        f"{st.name}: {st.state} (recorded: {st.recorded or 'nothing'}); {len(st.present)}/{total} indexes valid; "
        f"{st.index_count} indexes in schema public"
    )
    if st.invalid:
        click.echo(f"  INVALID (run `migrate up` to rebuild): {', '.join(st.invalid)}")
    if st.building:
        click.echo(f"  being built by another connection: {', '.join(st.building)}")
    if st.conflicts:
        click.echo(f"  another definition than the migration's (rename or drop them): {', '.join(st.conflicts)}")
    if st.preexisting:
        click.echo(f"  present before the migration, kept by `migrate down`: {', '.join(st.preexisting)}")


# ----------------------------------------------------------------------------- indexes
@cli.group()
def indexes() -> None:
    """Audit the database's indexes against measured query patterns."""


@indexes.command("audit")
@click.option("--iterations", type=int, default=10, show_default=True, help="Timed calls per query per round.")
@click.option("--rounds", type=int, default=1, show_default=True, help="Rounds per index set.")
@click.option("--warmup", type=int, default=2, show_default=True, help="Untimed calls per query per round.")
@click.option("--write-batches", type=int, default=5, show_default=True, help="Insert batches per round (0: none).")
@click.option("--budget", "budget_s", type=float, default=5.0, show_default=True,
              help="Cap on one query's timed calls per round, seconds.")  # fmt: skip
@click.option("--recommend/--no-recommend", default=True, show_default=True,
              help="Also measure the recommended set as a third side.")  # fmt: skip
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for audit.json and recommended_indexes.{up,down}.sql (else none).")  # fmt: skip
@click.pass_context
@_errors
def indexes_audit(
    ctx: click.Context,
    iterations: int,
    rounds: int,
    warmup: int,
    write_batches: int,
    budget_s: float,
    recommend: bool,
    out_dir: str | None,
) -> None:
    """Measure the spec's query patterns on the baseline, spec and recommended index sets; keep/drop/review each index.

    Runs on the configured database (PSRA_DB_DSN) or the embedded one, switching its index state with
    CREATE/DROP INDEX CONCURRENTLY, and restores the state it found at the end.
    """
    from psra_bench.latency.audit import write_recommended_migration
    from psra_bench.latency.experiment import run_query_latency
    from psra_bench.latency.patterns import check_run_params
    from psra_bench.latency.tables import audit_table, three_way_cost_table, three_way_table
    from psra_bench.workbench import check_writable_dir, save_results

    check_run_params(
        iterations=iterations, rounds=rounds, warmup=warmup, write_batches=write_batches, budget_s=budget_s
    )
    if out_dir is not None:
        check_writable_dir("--out", out_dir)
    settings = _ready(ctx)
    found = _owned_or_none(settings)
    if found is not None:
        _catalog_audit(settings, out_dir, found)
        return
    results = run_query_latency(
        settings, iterations=iterations, rounds=rounds, warmup=warmup, write_batches=write_batches,
        budget_s=budget_s, recommend=recommend, progress=lambda msg: click.echo(f"  {msg}", err=True),
    )  # fmt: skip
    click.echo(audit_table(results).text())
    for table in (three_way_table(results), three_way_cost_table(results)):
        if table is not None:
            click.echo("\n" + table.text())
    if out_dir is not None:
        save_results(out_dir, "audit", results)
        for path in write_recommended_migration(out_dir, results):
            click.echo(f"wrote {path}")


def _owned_or_none(settings: LiveSettings) -> Any:
    """None when psra-bench owns the database (claiming it if allowed); else its :class:`Ownership`, read only."""
    from psra_bench.db.ownership import ownership, require_owned
    from psra_bench.exceptions import NotOwnedError

    try:
        require_owned(settings, "indexes audit")
    except NotOwnedError:
        return ownership(settings)
    return None


def _catalog_audit(settings: LiveSettings, out_dir: str | None, found: Any) -> None:
    """The read-only part of the audit on a database psra-bench does not own."""
    from psra_bench.infra.postgres import connect
    from psra_bench.latency.catalog import catalog_audit
    from psra_bench.workbench import save_results

    with connect(settings.db_dsn, autocommit=True) as conn:
        audit = catalog_audit(conn)
    for table in audit.tables():
        click.echo("\n" + table.text())
    if out_dir is not None:
        click.echo(f"wrote {save_results(out_dir, 'catalog', audit.to_dict())}")
    click.echo(
        f"\nread-only audit of {found.database!r}: measuring index sets builds and drops indexes, which psra-bench "
        f"does only on a database it owns ({'; '.join(found.foreign)}); run it on an owned copy, or hand this one "
        f"over with `psra-bench handover --database {found.database}`",
        err=True,
    )


# ----------------------------------------------------------------------------- doctor
@cli.command()
@click.pass_context
@_errors
def doctor(ctx: click.Context) -> None:
    """Show what psra-bench is connected to: versions, extensions, tables, indexes, Redis memory policy."""
    from psra_bench.doctor import diagnose

    for section, rows in diagnose(_ready(ctx)).items():
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
@_errors
def serve(ctx: click.Context, host: str, port: int, job_workers: bool, access_log: bool, workers: int) -> None:
    """Run the PSRA API (FastAPI + uvicorn with uvloop and httptools); OpenAPI at /docs."""
    import uvicorn

    from psra_bench.api.app import create_app
    from psra_bench.db.reference import prepare_database
    from psra_bench.infra.postgres import connect

    settings = _ready(ctx)
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
@_errors
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
    settings = worker_settings(_settings(ctx), default_handlers=handlers is None, namespace=namespace)
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
@_errors
def jobs_sweep(ctx: click.Context, namespace: str | None, as_json: bool) -> None:
    """Repair inconsistent job state now (what every worker does once a minute) and list lost jobs."""
    import asyncio
    import json

    from psra_bench.jobs.process import worker_settings
    from psra_bench.jobs.queue import JobQueue

    settings = worker_settings(_settings(ctx), default_handlers=False, namespace=namespace)

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


# ----------------------------------------------------------------------------- load
@cli.command()
@click.option("--users", type=int, default=20, show_default=True, help="Closed-model users at the headline step.")
@click.option("--spawn-rate", type=float, default=10.0, show_default=True, help="Users started per second.")
@click.option("--duration", type=float, default=20.0, show_default=True, help="Seconds measured per step.")
@click.option("--arrival-rate", type=float, default=50.0, show_default=True, help="Open model: requests/s.")
@click.option(
    "--configurations",
    default="all",
    show_default=True,
    help="Comma-separated: baseline, indexes, cache, both (or all).",
)
@click.option("--slo-p95-ms", type=float, default=200.0, show_default=True, help="p95 SLO for users supported.")
@click.option("--verdicts", type=int, default=100_000, show_default=True, help="Dataset scale.")
@click.option("--seed", type=int, default=42, show_default=True, help="Dataset seed.")
@click.option("--output-dir", default="reports/load", show_default=True, help="Where results go.")
@click.option("--quick", is_flag=True, help="Two steps instead of five.")
@click.option(
    "--url",
    default=None,
    help="Load an API this tool did not start (http(s)://host[:port]): only the Locust step load, no "
    "configurations; the operator token comes from PSRA_ADMIN_TOKEN.",
)
@click.pass_context
@_errors
def load(
    ctx: click.Context,
    users: int,
    spawn_rate: float,
    duration: float,
    arrival_rate: float,
    configurations: str,
    slo_p95_ms: float,
    verdicts: int,
    seed: int,
    output_dir: str,
    quick: bool,
    url: str | None,
) -> None:
    """Load-test the API with Locust for each configuration (baseline/indexes/cache/both), or one at --url."""
    from psra_bench.load.experiment import run_load
    from psra_bench.load.results import check_notebook_params as check_load_test_params
    from psra_bench.workbench import DEFAULT_DATABASE, check_writable_dir, ensure_dataset, notebook_settings

    if url is not None:
        _load_url(ctx, url, users=users, spawn_rate=spawn_rate, duration=duration, slo_p95_ms=slo_p95_ms,
                  output_dir=output_dir, quick=quick)  # fmt: skip
        return
    check_load_test_params(
        users=users, spawn_rate=spawn_rate, duration=duration, arrival_rate=arrival_rate, slo_p95_ms=slo_p95_ms,
        configurations=configurations, verdicts=verdicts, seed=seed, quick=quick,
    )  # fmt: skip
    check_writable_dir("--output-dir", output_dir)
    _ready(ctx)
    settings = notebook_settings(DEFAULT_DATABASE)
    dataset = ensure_dataset(settings, verdicts, seed, action="load")
    doc = run_load(
        settings,
        users=users,
        spawn_rate=spawn_rate,
        duration=duration,
        arrival_rate=arrival_rate,
        configurations=configurations,
        slo_p95_ms=slo_p95_ms,
        output_dir=output_dir,
        quick=quick,
        dataset=dataset,
    )
    from psra_bench.report.sections import load_tables

    for t in load_tables(doc)[0]:
        click.echo("\n" + t.text())


def _load_url(ctx: click.Context, url: str, **options: Any) -> None:
    """``load --url``: the step load against someone else's API; flags that need our own servers are refused."""
    from psra_bench.exceptions import ParameterError
    from psra_bench.load.experiment import run_external_load
    from psra_bench.settings import admin_token_from_env

    for name in ("configurations", "verdicts", "seed", "arrival_rate"):
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
            flag = "--" + name.replace("_", "-")
            raise ParameterError(
                flag, ctx.params[name], "not set together with --url (that API's data and setup are its own)"
            )
    doc = run_external_load(url, admin_token=admin_token_from_env(), **options)
    rows = []
    for st in doc["steps"]:
        o, gen = st["overall"], st.get("generator") or {}
        cores = gen.get("busiest_process_cores")
        load = "–" if cores is None else f"{cores:.2f}" + (" saturated" if gen.get("saturated") else "")
        p50, p95, p99 = (_ms(o.get(k)) for k in ("p50_ms", "p95_ms", "p99_ms"))
        rows.append([st["users"], o.get("n"), p50, p95, p99, f"{o.get('failure_rate', 0):.1%}", load])
    click.echo(Table.of(["users", "n", "p50 ms", "p95 ms", "p99 ms", "failures", "generator cores"], rows).text())
    sup = doc["users_supported"]
    bound = " (a lower bound)" if sup["lower_bound"] else ""
    limited = "; the load generator was saturated, so the limit may be its own" if sup["generator_limited"] else ""
    head = f"users supported at p95 <= {sup['slo_p95_ms']:g} ms: {sup['users_supported']}{bound}"
    click.echo(f"{head} — {sup['reason']}{limited}")


def _ms(value: Any) -> str:
    return "–" if value is None else f"{value:.1f}"


# ----------------------------------------------------------------------------- report
@cli.command()
@click.option("--quick", is_flag=True, help="A small run (target ≤ 2 minutes).")
@click.option(
    "--params",
    "params_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML file of report parameters (unknown keys are an error).",
)
@click.option("--verdicts", type=int, default=None, help="Dataset scale (default 1,000,000; quick 20,000).")
@click.option("--seed", type=int, default=None, help="Dataset seed (default 42).")
@click.option("--iterations", type=int, default=None, help="Timed calls per query per round.")
@click.option("--rounds", type=int, default=None, help="Interleaved before/after rounds.")
@click.option("--users", type=int, default=None, help="Load test users.")
@click.option("--duration", type=int, default=None, help="Load test seconds per configuration.")
@click.option(
    "--section",
    "sections",
    multiple=True,
    type=click.Choice(["01_query_latency", "02_cache_hit_rates", "03_ttl_tuning", "04_load_test"]),
    help="Run only these sections (repeatable; default all).",
)
@click.option("--reports-dir", default=None, help="Where run folders and history.jsonl go (default reports).")
@click.pass_context
@_errors
def report(
    ctx: click.Context,
    quick: bool,
    params_file: str | None,
    verdicts: int | None,
    seed: int | None,
    iterations: int | None,
    rounds: int | None,
    users: int | None,
    duration: int | None,
    sections: tuple[str, ...],
    reports_dir: str | None,
) -> None:
    """The main job: measure everything and write reports/<run-id>/ (HTML, Markdown, JSON, plots, notebooks)."""
    from psra_bench.report.runner import ReportParams, load_params_file, merge_params, run_report

    base = ReportParams.quick_defaults() if quick else ReportParams()
    file_values = load_params_file(params_file) if params_file else {}
    params = merge_params(
        base,
        file_values,
        {
            "verdicts": verdicts,
            "seed": seed,
            "iterations": iterations,
            "rounds": rounds,
            "users": users,
            "duration": duration,
            "sections": tuple(sections) or None,
            "reports_dir": reports_dir,
        },
    )
    _ready(ctx)
    run = run_report(params, progress=lambda msg: click.echo(msg, err=True))
    click.echo(f"\nreport finished in {run.seconds:.0f} s: {run.run_dir / 'report.html'}")
    if run.results:
        from psra_bench.report.sections import summary_lines

        for line in summary_lines(run.results):
            click.echo(line)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="psra-bench")


if __name__ == "__main__":  # pragma: no cover
    main()
