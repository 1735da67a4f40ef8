"""``psra-bench indexes audit | load | report``: the experiments, their options views of their parameter models.

Each option's type, default and help come from the model's field (:mod:`psra_bench.cli.options`):
``indexes audit`` from :attr:`QueryLatencyParams.AUDIT`, ``load`` from :attr:`LoadTestParams.CLI`,
``report`` from :class:`ReportParams` (unset flags keep the preset or the params file's value).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import click

from psra_bench.cli.base import cli, handle_errors, ready
from psra_bench.cli.options import model_option
from psra_bench.latency.params import QueryLatencyParams
from psra_bench.load.params import LoadTestParams
from psra_bench.load.replay import ReplayParams
from psra_bench.report.runner import ReportParams
from psra_bench.settings import LiveSettings
from psra_bench.table import Table

__all__ = ["indexes", "load", "report"]

_AUDIT = QueryLatencyParams.AUDIT
_LOAD = LoadTestParams.CLI
_REPLAY = ReplayParams.NOTEBOOK


# ----------------------------------------------------------------------------- indexes
@cli.group()
def indexes() -> None:
    """Audit the database's indexes against measured query patterns."""


@indexes.command("audit")
@model_option(QueryLatencyParams, "iterations", preset=_AUDIT)
@model_option(QueryLatencyParams, "rounds", preset=_AUDIT)
@model_option(QueryLatencyParams, "warmup", preset=_AUDIT)
@model_option(QueryLatencyParams, "write_batches", preset=_AUDIT)
@model_option(QueryLatencyParams, "budget_s", "--budget", preset=_AUDIT)
@model_option(QueryLatencyParams, "recommend", preset=_AUDIT)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for audit.json and recommended_indexes.{up,down}.sql (else none).")  # fmt: skip
@click.pass_context
@handle_errors
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
    from psra_bench.latency.tables import audit_table, three_way_cost_table, three_way_table
    from psra_bench.workbench import check_writable_dir, save_results

    params = _AUDIT.replace(
        iterations=iterations, rounds=rounds, warmup=warmup, write_batches=write_batches, budget_s=budget_s,
        recommend=recommend,
    )  # fmt: skip
    if out_dir is not None:
        check_writable_dir("--out", out_dir)
    settings = ready(ctx)
    found = _owned_or_none(settings)
    if found is not None:
        _catalog_audit(settings, out_dir, found)
        return
    results = run_query_latency(settings, params, progress=lambda msg: click.echo(f"  {msg}", err=True))
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


# ----------------------------------------------------------------------------- load
@cli.command()
@model_option(LoadTestParams, "users", preset=_LOAD)
@model_option(LoadTestParams, "spawn_rate", preset=_LOAD)
@model_option(LoadTestParams, "duration", preset=_LOAD)
@model_option(LoadTestParams, "arrival_rate", preset=_LOAD)
@model_option(LoadTestParams, "configurations", preset=_LOAD)
@model_option(LoadTestParams, "slo_p95_ms", preset=_LOAD)
@model_option(LoadTestParams, "verdicts", preset=_LOAD)
@model_option(LoadTestParams, "seed", preset=_LOAD)
@model_option(LoadTestParams, "output_dir", preset=_LOAD)
@model_option(LoadTestParams, "quick", preset=_LOAD)
@click.option(
    "--url",
    default=None,
    help="Load an API this tool did not start (http(s)://host[:port]): only the Locust step load (or, with "
    "--from-log, the replay), no configurations; the operator token comes from PSRA_ADMIN_TOKEN.",
)
@click.option("--from-log", "from_log", type=click.Path(dir_okay=False), default=None,
              help="Replay this access log (see --format, --speed, --mode) instead of the synthetic mix.")  # fmt: skip
@model_option(ReplayParams, "log_format", "--format", preset=_REPLAY)
@model_option(ReplayParams, "speed", preset=_REPLAY)
@model_option(ReplayParams, "mode", preset=_REPLAY)
@click.option("--capacity", is_flag=True, default=False,
              help="With --from-log: then search users supported at the log's own mix (Locust users drawing the "
              "log's requests; --users, --spawn-rate, --duration and --slo-p95-ms set the search).")  # fmt: skip
@click.pass_context
@handle_errors
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
    from_log: str | None,
    log_format: str,
    speed: float,
    mode: str,
    capacity: bool,
) -> None:
    """Load-test the API with Locust for each configuration (baseline/indexes/cache/both), or one at --url."""
    from psra_bench.load.experiment import run_load
    from psra_bench.workbench import check_writable_dir, ensure_dataset, notebook_settings

    replay = _REPLAY.replace(log_format=log_format, speed=speed, mode=mode)
    if from_log is not None:
        search = _LOAD.replace(users=users, spawn_rate=spawn_rate, duration=duration, slo_p95_ms=slo_p95_ms, seed=seed)
        _load_from_log(ctx, from_log, replay, url=url, verdicts=verdicts, seed=seed, output_dir=output_dir,
                       search=search if capacity else None)  # fmt: skip
        return
    for name in ("log_format", "speed", "mode", "capacity"):
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
            from psra_bench.exceptions import ParameterError

            flag = "--format" if name == "log_format" else "--" + name
            raise ParameterError(flag, ctx.params[name], "set only together with --from-log")
    if url is not None:
        _load_url(ctx, url, users=users, spawn_rate=spawn_rate, duration=duration, slo_p95_ms=slo_p95_ms,
                  output_dir=output_dir, quick=quick)  # fmt: skip
        return
    params = _LOAD.replace(
        users=users, spawn_rate=spawn_rate, duration=duration, arrival_rate=arrival_rate, slo_p95_ms=slo_p95_ms,
        configurations=configurations, verdicts=verdicts, seed=seed, output_dir=output_dir, quick=quick,
    )  # fmt: skip
    check_writable_dir("--output-dir", params.output_dir)
    ready(ctx)
    settings = notebook_settings(params.database)
    dataset = ensure_dataset(settings, params.verdicts, params.seed, action="load")
    doc = run_load(settings, params, dataset=dataset)
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


def _load_from_log(
    ctx: click.Context,
    from_log: str,
    params: ReplayParams,
    *,
    url: str | None,
    verdicts: int,
    seed: int,
    output_dir: str,
    search: LoadTestParams | None,
) -> None:
    """``load --from-log``: read the log (refusing bad input before anything is sent), then replay it.

    Without ``--url`` the log is replayed against the "both" configuration on a copy of the dataset.
    """
    from psra_bench.exceptions import ParameterError
    from psra_bench.load.experiment import log_search_plan, run_log_replay
    from psra_bench.load.replay import load_replay, run_replay
    from psra_bench.load.replay_tables import replay_tables
    from psra_bench.settings import admin_token_from_env
    from psra_bench.workbench import check_writable_dir, ensure_dataset, notebook_settings

    searching = ("users", "spawn_rate", "duration", "slo_p95_ms")
    for name in ("users", "spawn_rate", "duration", "arrival_rate", "configurations", "slo_p95_ms", "quick"):
        if search is not None and name in searching:
            continue
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
            flag = "--" + name.replace("_", "-")
            why = "the log sets the load" + ("; with --capacity they set the search" if name in searching else "")
            raise ParameterError(flag, ctx.params[name], f"not set together with --from-log ({why})")
    check_writable_dir("--output-dir", output_dir)
    plan = load_replay(from_log, params)
    if url is not None:
        capacity = log_search_plan(search) if search is not None else None
        doc = run_replay(plan, output_dir, url=url, admin_token=admin_token_from_env(), capacity=capacity)
    else:
        ready(ctx)
        settings = notebook_settings(_LOAD.database)
        ensure_dataset(settings, verdicts, seed, action="load")
        doc = run_log_replay(settings, plan, output_dir, load=search)
    for table in replay_tables(doc):
        click.echo("\n" + table.text())
    unparsed = doc["replay"]["log"]["unparsed"]
    if unparsed["count"]:
        click.echo(f"{unparsed['count']} lines did not parse, e.g. " + " | ".join(unparsed["first"]))
    click.echo(f"wrote {Path(output_dir) / '04_load_replay.json'} and {doc['files']['rates_plot']}")


def _ms(value: Any) -> str:
    return "–" if value is None else f"{value:.1f}"


# ----------------------------------------------------------------------------- report
def _shown(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}" if isinstance(value, float) else str(value)


def _status_line() -> Any:
    """On a terminal, a status line on stderr rewritten in place (None in a log or under cron: plain lines)."""
    stream = sys.stderr
    if not stream.isatty():
        return None

    def show(text: str) -> None:
        width = shutil.get_terminal_size().columns - 1
        stream.write("\r\033[K" + text[:width])
        stream.flush()

    return show


def _report_option(name: str, *flags: str) -> Any:
    """A ``report`` option without a default (an unset flag keeps the preset's or the params file's value)."""
    full, quick = getattr(ReportParams.FULL, name), getattr(ReportParams.QUICK, name)
    note = f"default {_shown(full)}" + ("" if quick == full else f"; quick {_shown(quick)}")
    return model_option(ReportParams, name, *flags, note=note)


@cli.command()
@model_option(ReportParams, "quick")
@click.option(
    "--params",
    "params_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML file of report parameters (unknown keys are an error).",
)
@_report_option("verdicts")
@_report_option("seed")
@_report_option("iterations")
@_report_option("rounds")
@_report_option("users")
@_report_option("duration")
@click.option(
    "--section",
    "sections",
    multiple=True,
    type=click.Choice(list(ReportParams.FULL.sections)),
    help="Run only these sections (repeatable; default all).",
)
@_report_option("reports_dir")
@click.option("--workload", "workload", type=click.Path(dir_okay=False), default=None,
              help="Also advise indexes for this workload (`workload capture` file or .sql): notebook 06.")  # fmt: skip
@click.option("--trace", "trace", type=click.Path(dir_okay=False), default=None,
              help="Also tune TTLs on this trace (`trace import`), beside the synthetic one.")  # fmt: skip
@click.option("--from-log", "from_log", type=click.Path(dir_okay=False), default=None,
              help="Also replay this access log in the load section, with the capacity at its own mix.")  # fmt: skip
@_report_option("log_format", "--log-format")
@_report_option("log_speed", "--log-speed")
@click.pass_context
@handle_errors
def report(
    ctx: click.Context,
    quick: bool,
    params_file: str | None,
    verdicts: int | None,
    seed: int | None,
    iterations: int | None,
    rounds: int | None,
    users: int | None,
    duration: float | None,
    sections: tuple[str, ...],
    reports_dir: str | None,
    workload: str | None,
    trace: str | None,
    from_log: str | None,
    log_format: str | None,
    log_speed: float | None,
) -> None:
    """The main job: measure everything and write reports/<run-id>/ (HTML, Markdown, JSON, plots, notebooks)."""
    from psra_bench.report.runner import load_params_file, merge_params, run_report

    base = ReportParams.QUICK if quick else ReportParams.FULL
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
            "workload": workload,
            "trace": trace,
            "from_log": from_log,
            "log_format": log_format,
            "log_speed": log_speed,
        },
    )
    ready(ctx)
    run = run_report(params, progress=lambda msg: click.echo(msg, err=True), live=_status_line())
    click.echo(f"\nreport finished in {run.seconds:.0f} s: {run.run_dir / 'report.html'}")
    if run.results:
        from psra_bench.report.sections import summary_lines

        for line in summary_lines(run.results):
            click.echo(line)
