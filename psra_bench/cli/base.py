"""The ``psra-bench`` group and what every command shares: settings read once, one-sentence errors.

A :class:`PsraBenchError` becomes one sentence on stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from psra_bench import __version__
from psra_bench.exceptions import PsraBenchError
from psra_bench.settings import LiveSettings, Settings, redact

__all__ = ["cli", "main", "handle_errors", "settings_from", "ready"]

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Turn a PsraBenchError raised by a command into ``error: <sentence>`` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PsraBenchError as e:
            click.echo(f"error: {redact(str(e))}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def settings_from(ctx: click.Context) -> Settings:
    """The settings the group read from the environment."""
    settings: Settings = ctx.obj
    return settings


def ready(ctx: click.Context) -> LiveSettings:
    """Settings with live endpoints: embedded servers started if no servers are configured."""
    from psra_bench.infra.embedded import ensure_services

    return ensure_services(settings_from(ctx))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="psra-bench")
@click.pass_context
@handle_errors
def cli(ctx: click.Context) -> None:
    """Benchmark and tune the PSRA backend: real PostgreSQL, real Redis, honest numbers."""
    ctx.obj = Settings.from_env()


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="psra-bench")
