"""``psra-bench workload capture`` and ``psra-bench indexes advise``: index advice from a team's own queries.

Both are thin: they read the settings, call :mod:`psra_bench.workload` and print. Options are
views of :class:`psra_bench.workload.params.CaptureParams` and :class:`AdviceParams`.
"""

from __future__ import annotations

import click

from psra_bench.cli.base import cli, handle_errors, ready
from psra_bench.cli.experiments import indexes
from psra_bench.cli.options import model_option
from psra_bench.workload.params import AdviceParams, CaptureParams

__all__ = ["workload", "workload_capture", "indexes_advise"]

_CAPTURE = CaptureParams.NOTEBOOK
_ADVICE = AdviceParams.NOTEBOOK


@cli.group()
def workload() -> None:
    """Capture the queries a database runs (pg_stat_statements or a PostgreSQL log) as a workload file."""


@workload.command("capture")
@model_option(CaptureParams, "top", preset=_CAPTURE)
@model_option(CaptureParams, "min_calls", preset=_CAPTURE)
@click.option("--log", "log", type=click.Path(dir_okay=False), default=None,
              help="Read statements from this PostgreSQL log (log_min_duration_statement = 0) instead.")  # fmt: skip
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="Workload file to write (JSON).")
@click.pass_context
@handle_errors
def workload_capture(ctx: click.Context, top: int, min_calls: int, log: str | None, out: str) -> None:
    """Write the configured database's top statements (normalized text, calls, times, rows; never values)."""
    from psra_bench.db.ownership import require_owned
    from psra_bench.exceptions import NotOwnedError
    from psra_bench.infra.postgres import connect
    from psra_bench.workload.capture import capture, capture_log
    from psra_bench.workload.model import write_workload

    params = _CAPTURE.replace(top=top, min_calls=min_calls)
    settings = ready(ctx)

    def owned() -> bool:
        try:
            require_owned(settings, "workload capture: CREATE EXTENSION pg_stat_statements")
        except NotOwnedError:
            return False
        return True

    with connect(settings.db_dsn, autocommit=True) as conn:
        if log is not None:
            found = capture_log(conn, log, params)
        else:
            found = capture(conn, params, may_create=owned, embedded=settings.embedded_db)
    path = write_workload(out, found)
    click.echo(f"{len(found.queries)} queries from {found.source} ({len(found.skipped)} skipped), "
               f"fingerprint {found.fingerprint}: {path}")  # fmt: skip
    for q in found.queries[:10]:
        mean = "–" if q.mean_ms is None else f"{q.mean_ms:.3f} ms"
        click.echo(f"  {q.query_id}  {q.calls:>8} calls  {mean:>12}  {' '.join(q.query.split())[:80]}")


@indexes.command("advise")
@click.option("--workload", "workload_file", type=click.Path(dir_okay=False), required=True,
              help="Workload file from `workload capture`, or a plain .sql file.")  # fmt: skip
@click.option("--verify", "verify_set", is_flag=True,
              help="Measure the recommended set against the current one (owned databases only).")  # fmt: skip
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for advice.json and recommended_indexes.{up,down}.sql.")  # fmt: skip
@model_option(AdviceParams, "max_indexes", preset=_ADVICE)
@model_option(AdviceParams, "budget_mb", preset=_ADVICE)
@model_option(AdviceParams, "write_penalty", preset=_ADVICE)
@model_option(AdviceParams, "rounds", preset=_ADVICE)
@model_option(AdviceParams, "iterations", preset=_ADVICE)
@model_option(AdviceParams, "seed", preset=_ADVICE)
@click.pass_context
@handle_errors
def indexes_advise(
    ctx: click.Context,
    workload_file: str,
    verify_set: bool,
    out_dir: str,
    max_indexes: int,
    budget_mb: float,
    write_penalty: float,
    rounds: int,
    iterations: int,
    seed: int,
) -> None:
    """Advise add / keep / drop per index for a workload: screened by planner cost, measured with --verify."""
    from psra_bench.workbench import check_writable_dir
    from psra_bench.workload.advise import advise, write_advice
    from psra_bench.workload.model import read_workload

    params = _ADVICE.replace(max_indexes=max_indexes, budget_mb=budget_mb, write_penalty=write_penalty,
                             rounds=rounds, iterations=iterations, seed=seed)  # fmt: skip
    check_writable_dir("--out", out_dir)
    found = read_workload(workload_file)
    settings = ready(ctx)
    advice = advise(settings, found, params, verify_set=verify_set, progress=lambda m: click.echo(f"  {m}", err=True))
    click.echo(advice.path_note)
    for ix in advice.indexes:
        click.echo(f"{ix.action:<5} {ix.name}: {ix.reason}")
    for qid, row in (advice.predicted_vs_measured or {}).items():
        ci = row["ci"]
        ci_text = "" if not ci else f" [{ci[0]:.2f}–{ci[1]:.2f}]"
        pred = "–" if row["predicted_speedup"] is None else f"{row['predicted_speedup']:.2f}×"
        click.echo(f"  {qid}: predicted {pred}, measured {row['measured_speedup']:.2f}×{ci_text}, p {row['p']:.3g}")
    for s in advice.skipped:
        click.echo(f"skipped: {' '.join(s['query'].split())[:60]}: {s['reason']}", err=True)
    for path in write_advice(out_dir, advice):
        click.echo(f"wrote {path}")
