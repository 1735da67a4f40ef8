"""``psra-bench trace``: capture, import and tune on a team's own cache traffic (issue 23).

Thin: each command reads the settings, calls :mod:`psra_bench.trace` or
:mod:`psra_bench.cachesim.imported` and prints. Options are views of
:class:`psra_bench.trace.params.TraceCaptureParams`, :class:`~psra_bench.trace.params.TraceImportParams`
and :class:`psra_bench.cachesim.params.TraceTuneParams`.
"""

from __future__ import annotations

import click

from psra_bench.cachesim.params import TraceTuneParams
from psra_bench.cli.base import cli, handle_errors, ready, settings_from
from psra_bench.cli.options import model_option
from psra_bench.trace.params import TraceCaptureParams, TraceImportParams

__all__ = ["trace", "trace_capture", "trace_import", "trace_tune"]

_CAPTURE = TraceCaptureParams.NOTEBOOK
_IMPORT = TraceImportParams.NOTEBOOK
_TUNE = TraceTuneParams.NOTEBOOK


@cli.group()
def trace() -> None:
    """Tune TTLs and cache memory on your own cache traffic: capture it, import it, tune on it."""


@trace.command("capture")
@model_option(TraceCaptureParams, "seconds", preset=_CAPTURE)
@model_option(TraceCaptureParams, "memory_usage_keys", preset=_CAPTURE)
@click.option(
    "--out", "out", type=click.Path(dir_okay=False), required=True, help="Capture file to write (JSON lines)."
)
@click.pass_context
@handle_errors
def trace_capture(ctx: click.Context, seconds: float, memory_usage_keys: int, out: str) -> None:
    """Record the configured Redis's cache traffic with MONITOR (it slows the server while it runs)."""
    from psra_bench.trace.capture import capture

    params = _CAPTURE.replace(seconds=seconds, memory_usage_keys=memory_usage_keys)
    summary = capture(ready(ctx), out, params)
    events = ", ".join(f"{n} {op}s" for op, n in sorted(summary["events"].items()))
    click.echo(f"{summary['commands']} commands in {summary['seconds']:g} s: {events}; "
               f"internal {summary['internal']}, unmapped {summary['unmapped']}: {out}")  # fmt: skip


@trace.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@model_option(TraceImportParams, "format", preset=_IMPORT)
@click.option("--mapping", "mapping", default=None,
              help="libcachesim-csv columns: time=C,key=C[,size=C][,op=C][,entity=C] (C a header name or 1-based "
                   "number; default time=1,key=2,size=3).")  # fmt: skip
@click.option(
    "--entity",
    "entity",
    default=None,
    help="Entity of keys that follow none of the spec's patterns (numeric ids of a foreign trace).",
)
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="Normalized trace file to write.")
@click.pass_context
@handle_errors
def trace_import(ctx: click.Context, file: str, format: str, mapping: str | None, entity: str | None, out: str) -> None:  # noqa: A002
    """Normalize a capture, a JSON-lines trace or a libCacheSim trace into one trace file with a fingerprint."""
    from psra_bench.trace.formats import import_file
    from psra_bench.trace.tracefile import write_trace

    fmt = _IMPORT.replace(format=format).format
    settings = settings_from(ctx)
    cols, account = import_file(file, fmt, namespace=settings.cache_namespace, mapping=mapping, entity=entity)
    meta = write_trace(out, cols, account)
    click.echo(f"{meta['reads']} reads, {meta['writes']} writes over {meta['duration_s']:.3f} s, "
               f"fingerprint {meta['fingerprint'][:16]}: {out}")  # fmt: skip
    if account.unreadable:
        quoted = "; ".join(repr(x) for x in account.unreadable_first)
        click.echo(f"{account.unreadable} unreadable lines skipped (first: {quoted})")
    if account.reordered:
        click.echo(f"{account.reordered} events were earlier than the one before: sorted by time")
    if meta["unmapped"]:
        click.echo("unknown key prefixes: " + ", ".join(f"{p} {n}" for p, n in meta["unmapped"].items()))


@trace.command("tune")
@click.argument("trace_file", type=click.Path(dir_okay=False))
@model_option(TraceTuneParams, "target_hit_rate", preset=_TUNE)
@model_option(TraceTuneParams, "max_staleness_s", preset=_TUNE)
@model_option(TraceTuneParams, "staleness_metric", preset=_TUNE)
@model_option(TraceTuneParams, "warmup_s", preset=_TUNE)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the result here.")
@click.pass_context
@handle_errors
def trace_tune(
    ctx: click.Context,
    trace_file: str,
    target_hit_rate: float,
    max_staleness_s: float,
    staleness_metric: str,
    warmup_s: float,
    json_out: str | None,
) -> None:
    """Per entity: the TTL in force simulated, and the recommended TTL with hit rate, staleness and memory."""
    from psra_bench.cachesim.imported import tune_file, write_result

    params = _TUNE.replace(target_hit_rate=target_hit_rate, max_staleness_s=max_staleness_s,
                           staleness_metric=staleness_metric, warmup_s=warmup_s)  # fmt: skip
    result = tune_file(trace_file, settings_from(ctx), params)
    for entity, row in result["entities"].items():
        cur, rec = row["current"], row["recommended"]
        click.echo(f"{entity:<12} now TTL {cur['ttl_s']:g} s: hit rate {_pct(cur['hit_rate'])} (n={cur['n']}); "
                   + (f"recommended TTL {rec['ttl_s']:g} s: hit rate {_pct(rec['hit_rate'])} "
                      f"[{_pct(rec['hit_rate_ci'][0])}, {_pct(rec['hit_rate_ci'][1])}], staleness "
                      f"{rec['staleness_s']:g} s, {_mb(rec['memory_bytes'])}"
                      if rec["ttl_s"] is not None else f"no recommendation: {rec['reason']}"))  # fmt: skip
    if json_out:
        write_result(json_out, result)
        click.echo(f"written: {json_out}")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _mb(value: float | None) -> str:
    return "memory unknown (no sizes in the trace)" if value is None else f"{value / 1e6:.3f} MB"
