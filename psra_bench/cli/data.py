"""``psra-bench seed | handover | migrate``: the dataset, who owns the database, the index migration."""

from __future__ import annotations

import re
import sys
from typing import Any

import click

from psra_bench.cli.base import cli, handle_errors, ready
from psra_bench.cli.options import model_option
from psra_bench.settings import redact
from psra_bench.workbench import SeedParams

__all__ = ["seed", "handover", "migrate"]


# ----------------------------------------------------------------------------- seed
@cli.command()
@model_option(SeedParams, "verdicts", preset=SeedParams.NOTEBOOK)
@model_option(SeedParams, "seed", preset=SeedParams.NOTEBOOK)
@model_option(SeedParams, "tenants", preset=SeedParams.NOTEBOOK)
@click.option("--force", is_flag=True, help="Replace existing verdicts.")
@click.option("--append", is_flag=True, help="Add to existing verdicts.")
@click.pass_context
@handle_errors
def seed(ctx: click.Context, verdicts: int, seed: int, tenants: int, force: bool, append: bool) -> None:
    """Create the schema, load HS codes and rules, and write synthetic verdicts with COPY."""
    from psra_bench.db.ownership import require_owned
    from psra_bench.db.reference import prepare_database
    from psra_bench.db.seed import seed_database, verdict_count
    from psra_bench.exceptions import ParameterError
    from psra_bench.infra.postgres import connect

    if force and append:
        raise ParameterError("--force/--append", "both", "pass at most one of them")
    SeedParams.validated({"verdicts": verdicts, "seed": seed, "tenants": tenants})  # before a server is touched
    settings = ready(ctx)
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
@handle_errors
def handover(ctx: click.Context, database: str | None, yes: bool, release: bool) -> None:
    """Hand a database over to psra-bench, so seed, report, notebooks and the audit may overwrite it."""
    from psra_bench.db import ownership
    from psra_bench.exceptions import ParameterError
    from psra_bench.infra import postgres as db
    from psra_bench.paramspec import DATABASE_PATTERN

    if database is not None and not re.match(DATABASE_PATTERN, database):
        raise ParameterError(
            "--database", redact(database), "a lower-case PostgreSQL name (letters, digits, _), not a DSN"
        )
    if yes and release:
        raise ParameterError("--yes/--release", "both", "pass at most one of them")
    settings = ready(ctx)
    dsn = settings.db_dsn if database is None else db.with_database(settings.db_dsn, database)
    if release:
        with db.connect(dsn, autocommit=True) as conn:
            said = "released; psra-bench no longer writes there" if ownership.release(conn) else "was not owned"
            click.echo(f"{conn.info.dbname}: {said}")
        return
    found = ownership.hand_over(dsn, accept_foreign=yes, confirm="--yes")
    click.echo(f"{found.database}: {found.describe()} (`psra-bench handover --release` takes it back)")


# ----------------------------------------------------------------------------- migrate
@cli.command()
@click.argument("action", type=click.Choice(["up", "down", "status", "verify"]))
@click.argument("name", required=False)
@click.pass_context
@handle_errors
def migrate(ctx: click.Context, action: str, name: str | None) -> None:
    """Apply (up), roll back (down), inspect (status) or verify the index migration."""
    from psra_bench.db import migrate as m
    from psra_bench.db.reference import prepare_database
    from psra_bench.infra.postgres import connect

    names = m.resolve_migrations(name)
    settings = ready(ctx)
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
