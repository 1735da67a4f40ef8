"""psra-bench writes only into a database it owns: a team's database is refused, untouched, until handed over.

The "team's database" is built here as a user would have it: the PSRA tables with 500 verdicts
psra-bench did not seed (the seed's bookkeeping removed) and a ``customer_orders`` table of their
own. ``seed --force``, ``report``, notebooks 01–04 and the audit's index-set changes must refuse it
in one sentence naming the database and what it holds, with every row count and every index
unchanged; once ``psra-bench handover`` hands it over, the same writers proceed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import papermill
import pytest
from click.testing import CliRunner, Result
from helpers import cli_env, quick_report_argv

from psra_bench.cli import cli
from psra_bench.db import ownership
from psra_bench.exceptions import NotOwnedError
from psra_bench.infra import postgres as db
from psra_bench.settings import LiveSettings, Settings
from psra_bench.workbench import ensure_dataset, notebook_settings

ROOT = Path(__file__).resolve().parent.parent
FOREIGN = ("psra_verdicts has 500 rows psra-bench did not seed", "table public.customer_orders")


def _name(dsn: str) -> str:
    return dsn.rsplit("/", 1)[-1].split("?")[0]


def snapshot(dsn: str) -> dict[str, Any]:
    """Row counts of every table and every index definition: what a refusal must leave as it was."""
    with db.connect(dsn, autocommit=True) as conn:
        tables = conn.execute("""SELECT schemaname || '.' || relname FROM pg_stat_user_tables ORDER BY 1""").fetchall()
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}".encode()).fetchone() for (t,) in tables}
        indexes = conn.execute("SELECT schemaname, indexname, indexdef FROM pg_indexes ORDER BY 1, 2").fetchall()
        schemas = conn.execute("SELECT nspname FROM pg_namespace ORDER BY 1").fetchall()
    return {"counts": counts, "indexes": indexes, "schemas": schemas}


@pytest.fixture
def team_db(make_team_database: Callable[[], str]) -> str:
    """A database psra-bench did not create, holding a team's own verdicts and a table of theirs."""
    return make_team_database()


@pytest.fixture
def env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    """The process environment for a CLI command or a notebook kernel, on the session's servers."""
    return cli_env(settings, home=tmp_path / "home", PSRA_CACHE_NAMESPACE=settings.cache_namespace + "own:")


def run(env: dict[str, str], dsn: str, *args: str) -> Result:
    """``psra-bench args...`` in-process, PSRA_DB_DSN pointing at ``dsn``."""
    return CliRunner().invoke(cli, list(args), env=env | {"PSRA_DB_DSN": dsn})


def refusal(result: Result) -> str:
    """The one error line of a refused command (exit 2, no traceback)."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def _live(settings: Settings, dsn: str) -> LiveSettings:
    live = settings.replace(db_dsn=dsn)
    assert isinstance(live, LiveSettings)
    return live


# --------------------------------------------------------------------------- refused, untouched


@pytest.mark.parametrize("flags", [(), ("--force",), ("--append",)])
def test_seed_refuses_a_team_database(team_db: str, env: dict[str, str], flags: tuple[str, ...]) -> None:
    before = snapshot(team_db)
    line = refusal(run(env, team_db, "seed", "--verdicts", "2000", *flags))
    assert f"database {_name(team_db)!r}" in line and all(f in line for f in FOREIGN)
    assert "psra-bench handover --database" in line
    assert snapshot(team_db) == before


def test_report_refuses_a_team_database_before_any_work(team_db: str, env: dict[str, str], tmp_path: Path) -> None:
    """`report --params p.yml` with `database: <theirs>`: one sentence, no run folder, nothing written."""
    before = snapshot(team_db)
    params = tmp_path / "p.yml"
    params.write_text(f"database: {_name(team_db)}\nverdicts: 2000\n")
    reports = tmp_path / "reports"
    proc = subprocess.run(
        quick_report_argv(params, reports),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and all(f in proc.stderr for f in FOREIGN), proc.stderr
    assert not [p for p in reports.iterdir() if p.is_dir()], "a refused run leaves no run folder"
    assert snapshot(team_db) == before


@pytest.mark.parametrize("notebook", ["01_query_latency", "02_cache_hit_rates", "03_ttl_tuning", "04_load_test"])
def test_notebooks_refuse_a_team_database(
    team_db: str, env: dict[str, str], tmp_path: Path, notebook: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(team_db)
    for key in [k for k in os.environ if k.startswith(("PSRA_", "REDIS_", "CACHE_", "JOBS_"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(
            str(ROOT / "notebooks" / f"{notebook}.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters={"database": _name(team_db), "output_dir": str(tmp_path / "out")},
            kernel_name="python3",
            progress_bar=False,
            cwd=str(ROOT),
        )
    assert err.value.ename == "NotOwnedError", err.value.evalue
    assert all(f in err.value.evalue for f in FOREIGN)
    assert snapshot(team_db) == before


def test_audit_on_a_team_database_reads_only(team_db: str, env: dict[str, str], tmp_path: Path) -> None:
    """`indexes audit` lists the catalog, idx_scan, plans, unused and duplicate indexes; builds and drops nothing."""
    before = snapshot(team_db)
    r = run(env, team_db, "indexes", "audit", "--iterations", "2", "--out", str(tmp_path / "audit"))
    assert r.exit_code == 0, r.output
    assert "read-only audit" in r.stderr and "owns" in r.stderr and all(f in r.stderr for f in FOREIGN)
    assert "idx_psra_verdicts" in r.stdout  # the catalog of the team's indexes
    assert (tmp_path / "audit" / "catalog.json").exists()
    assert snapshot(team_db) == before
    with pytest.raises(NotOwnedError):  # and the measuring function itself refuses, whoever calls it
        from psra_bench.latency.experiment import run_query_latency

        settings = Settings.from_env(env | {"PSRA_DB_DSN": team_db})
        from psra_bench.infra.embedded import ensure_services

        run_query_latency(ensure_services(settings), iterations=2, rounds=1, write_batches=0, recommend=False)
    assert snapshot(team_db) == before


# --------------------------------------------------------------------------- handed over, it proceeds


def test_handover_then_the_writers_proceed(team_db: str, env: dict[str, str], settings: Settings) -> None:
    before = snapshot(team_db)
    line = refusal(run(env, team_db, "handover"))  # holds their data: --yes is required
    assert "--yes" in line and all(f in line for f in FOREIGN)
    assert snapshot(team_db) == before

    r = run(env, team_db, "handover", "--yes")
    assert r.exit_code == 0 and "handed over" in r.output, r.output
    with db.connect(team_db, autocommit=True) as conn:
        assert ownership.inspect(conn).how == "handed-over"

    r = run(env, team_db, "seed", "--verdicts", "700", "--force")  # seed --force now replaces their rows
    assert r.exit_code == 0, r.output
    after = snapshot(team_db)["counts"]
    assert after["public.psra_verdicts"] == (700,)

    # the notebooks' and the report's way in (ensure_dataset) proceeds too
    dataset = ensure_dataset(_live(settings, team_db), 300, seed=1, tenants=5)
    assert dataset.seeded_now and dataset.verdicts == 300

    # and so do the audit's index-set changes: the 26 indexes are built, measured and dropped again
    r = run(env, team_db, "indexes", "audit", "--iterations", "2", "--warmup", "0", "--write-batches", "0",
            "--no-recommend")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "read-only" not in r.stderr
    public = [i for i in before["indexes"] if i[0] == "public"]
    assert [i for i in snapshot(team_db)["indexes"] if i[0] == "public"] == public, "the audit restores the indexes"

    r = run(env, team_db, "handover", "--release")
    assert r.exit_code == 0 and "released" in r.output
    with db.connect(team_db, autocommit=True) as conn:
        assert not ownership.inspect(conn).owned


# --------------------------------------------------------------------------- how databases become owned


def test_a_database_psra_bench_creates_is_owned(
    settings: Settings, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "psra_test_own_created"
    assert settings.db_dsn is not None
    db.drop_database(settings.db_dsn, name)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        live = notebook_settings(name)
        with db.connect(live.db_dsn, autocommit=True) as conn:
            assert ownership.inspect(conn).how == "created"
    finally:
        db.drop_database(settings.db_dsn, name)


def test_an_empty_database_is_claimed_on_first_write(make_database: Callable[..., str], settings: Settings) -> None:
    dsn = make_database()  # schema + the vendored reference data: nothing of anyone else
    with db.connect(dsn, autocommit=True) as conn:
        assert ownership.inspect(conn) == ownership.Ownership(_name(dsn), None, ())
    found = ownership.require_owned(_live(settings, dsn), "seed")
    assert found.how == "empty"
    with db.connect(dsn, autocommit=True) as conn:
        assert ownership.inspect(conn).how == "empty"


def test_reference_rows_of_another_origin_are_foreign(make_database: Callable[..., str], settings: Settings) -> None:
    """An HS code psra-bench never loads is someone's data; prepare_database leaves it on a database not owned."""
    dsn = make_database()
    with db.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM hs_codes WHERE code LIKE '0101%'")
        conn.execute(
            "INSERT INTO hs_codes (code, description, level, chapter) VALUES ('999901', 'their own code', 6, '99')"
        )
        found = ownership.inspect(conn)
        assert found.foreign == ("hs_codes has 1 row psra-bench did not load",)
        from psra_bench.db.reference import prepare_database

        prepare_database(conn)  # what migrate and serve run: no reload over their rows
        assert conn.execute("SELECT count(*) FROM hs_codes WHERE code = '999901'").fetchone() == (1,)
    with pytest.raises(NotOwnedError) as err:
        ownership.require_owned(_live(settings, dsn), "seed")
    assert "hs_codes has 1 row psra-bench did not load" in str(err.value)


def test_a_user_who_may_not_write_gets_one_sentence(make_database: Callable[..., str], settings: Settings) -> None:
    dsn = make_database(schema=False)
    role = "psra_test_reader"
    with db.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}".encode())
        conn.execute(f"CREATE ROLE {role} LOGIN".encode())
        conn.execute(f"REVOKE CREATE ON DATABASE {_name(dsn)} FROM PUBLIC, {role}".encode())
    parts = urlsplit(dsn)  # trust auth on both test servers: the role logs in without a password
    reader = urlunsplit((parts.scheme, f"{role}@{parts.netloc.rsplit('@', 1)[-1]}", parts.path, "", ""))
    try:
        with pytest.raises(NotOwnedError) as err:
            ownership.hand_over(reader)
        message = str(err.value)
        assert f"user {role!r} may not write" in message and "\n" not in message
    finally:
        with db.connect(dsn, autocommit=True) as conn:
            conn.execute(f"REVOKE ALL ON DATABASE {_name(dsn)} FROM {role}".encode())
        db.drop_database(settings.db_dsn or "", _name(dsn))
        with db.connect(settings.db_dsn or "", autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}".encode())


# --------------------------------------------------------------------------- flags before servers


def test_seed_checks_its_flags_before_it_writes(make_database: Callable[..., str], env: dict[str, str]) -> None:
    """`seed --verdicts -5` on a bare database refuses and creates nothing: no schema, no reference data."""
    dsn = make_database(schema=False)
    before = snapshot(dsn)
    for flags in (("--verdicts", "-5"), ("--verdicts", "100000001"), ("--tenants", "0")):
        line = refusal(run(env, dsn, "seed", *flags))
        assert flags[1] in line
    assert snapshot(dsn) == before


def test_a_dsn_as_database_name_is_refused_without_its_password(env: dict[str, str]) -> None:
    line = refusal(run(env, env["PSRA_DB_DSN"], "handover", "--database", "postgresql://u:s3cr3t@h/db"))
    assert "s3cr3t" not in line and "not a DSN" in line
