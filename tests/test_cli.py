"""The command line: migrate/seed/doctor/services outputs and exit codes, one-line errors, no passwords.

Commands run in-process through click's CliRunner, with the environment pointing at the session's
servers (PSRA_DB_DSN = a fresh database per test, REDIS_URL = the session Redis), so nothing is
started and no shared data is touched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from psra_bench import __version__
from psra_bench.cli import cli
from psra_bench.infra import postgres as db
from psra_bench.settings import Settings

MIGRATION = "0001_performance_indexes"
SECRET = "s3cr3t"
_CLEARED = ("REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB", "ENABLE_CACHE", "ENABLE_ASYNC_TASKS",
            "MAX_CONCURRENT_JOBS", "CACHE_DEFAULT_TTL", "CACHE_TTL_HS_CODES", "CACHE_TTL_RULES",
            "CACHE_TTL_ASSESSMENTS", "CACHE_TTL_VERDICTS", "PSRA_CACHE_NAMESPACE", "PSRA_DB_POOL_MIN",
            "PSRA_DB_POOL_MAX")  # fmt: skip


@pytest.fixture(scope="module")
def shared_dsn(make_database: Callable[..., str]) -> str:
    """One database (schema + reference data) for the commands that change nothing in it."""
    return make_database()


@pytest.fixture
def env(shared_dsn: str, settings: Settings, tmp_path: Path) -> dict[str, str | None]:
    """Environment for one command: the shared database and the session Redis; nothing else configured."""
    assert settings.redis is not None
    out: dict[str, str | None] = {k: None for k in _CLEARED}
    jobs = settings.jobs_redis or settings.redis
    out |= {"PSRA_DB_DSN": shared_dsn, "REDIS_URL": settings.redis.url(), "PSRA_BENCH_HOME": str(tmp_path)}
    out |= {"JOBS_REDIS_URL": jobs.url()}
    return out


@pytest.fixture
def fresh_env(env: dict[str, str | None], make_database: Callable[..., str]) -> dict[str, str | None]:
    """Like ``env`` but with a database of its own, for commands that migrate or seed."""
    return env | {"PSRA_DB_DSN": make_database()}


def run(env: dict[str, str | None], *args: str) -> Result:
    """Invoke ``psra-bench args...`` in-process."""
    return CliRunner().invoke(cli, list(args), env=env)


def _one_line_error(result: Result, *, quiet: bool = True) -> str:
    """Exit code 2, one 'error: ...' line at the end of stderr, no traceback.

    ``quiet``: nothing else was printed at all (``seed`` prints what it loaded before it refuses).
    """
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert sum(ln.startswith("error") for ln in lines) == 1
    assert "Traceback" not in result.output
    if quiet:
        assert result.stdout == "" and len(lines) == 1, result.output
    return lines[-1]


def _count(dsn: str | None, query: str) -> Any:
    assert dsn is not None
    with db.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query.encode()).fetchone()
    assert row is not None
    return row[0]


# --------------------------------------------------------------------------- migrate


def test_migrate_status_up_verify_down(fresh_env: dict[str, str | None]) -> None:
    env = fresh_env
    r = run(env, "migrate", "status")
    assert r.exit_code == 0, r.output
    assert r.stdout == (
        f"{MIGRATION}: not applied (recorded: nothing); 0/26 indexes valid; 20 indexes in schema public\n"
    )

    r = run(env, "migrate", "up")
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{MIGRATION}: created 26, repaired 0, already present 0; 46 indexes in schema public\n"
    progress = r.stderr.splitlines()
    assert len(progress) == 26 and all(re.fullmatch(r"  create idx_\w+ \(\d+\.\d\d s\)", ln) for ln in progress)

    r = run(env, "migrate", "status", MIGRATION)
    assert r.stdout == f"{MIGRATION}: applied (recorded: applied); 26/26 indexes valid; 46 indexes in schema public\n"

    r = run(env, "migrate", "up", "all")
    assert r.exit_code == 0
    assert r.stdout == f"{MIGRATION}: created 0, repaired 0, already present 26; 46 indexes in schema public\n"

    r = run(env, "migrate", "verify")
    assert r.exit_code == 0, r.output
    for title in (
        "Index count (schema public)",
        "Index size per table",
        "Index usage",
        "Unused indexes (candidates for removal)",
        "Invalid indexes",
    ):
        assert title in r.stdout
    assert re.search(r"^public\s+46$", r.stdout, re.M)

    r = run(env, "migrate", "down")
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{MIGRATION}: dropped 26; 20 indexes in schema public\n"
    assert len(r.stderr.splitlines()) == 26

    r = run(env, "migrate", "down")
    assert r.exit_code == 0
    assert r.stdout == f"{MIGRATION}: not applied, nothing to roll back; 20 indexes in schema public\n"
    assert _count(env["PSRA_DB_DSN"], "SELECT count(*) FROM pg_stat_user_indexes WHERE schemaname = 'public'") == 20


def test_unknown_migration_is_one_line(env: dict[str, str | None]) -> None:
    for action in ("up", "down", "status", "verify"):
        line = _one_line_error(run(env, "migrate", action, "nope"))
        assert line == f"error: migration nope: is not a known migration; known: {MIGRATION}"
    assert _count(env["PSRA_DB_DSN"], "SELECT count(*) FROM pg_stat_user_indexes WHERE schemaname = 'public'") == 20


def test_migrate_reports_kept_and_conflicting_indexes(fresh_env: dict[str, str | None]) -> None:
    env = fresh_env
    dsn = env["PSRA_DB_DSN"]
    assert dsn is not None
    with db.connect(dsn, autocommit=True) as conn:
        conn.execute(b"CREATE INDEX idx_hs_codes_version ON hs_codes (version)")  # the spec's own definition
    r = run(env, "migrate", "up")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        f"{MIGRATION}: created 25, repaired 0, already present 1; 46 indexes in schema public",
        "  present before the migration, kept by `migrate down`: idx_hs_codes_version",
    ]
    r = run(env, "migrate", "status")
    assert r.stdout.splitlines()[1] == "  present before the migration, kept by `migrate down`: idx_hs_codes_version"
    r = run(env, "migrate", "down")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        f"{MIGRATION}: dropped 25; 21 indexes in schema public",
        "  kept, not created by the migration: idx_hs_codes_version",
    ]

    with db.connect(dsn, autocommit=True) as conn:
        conn.execute(b"DROP INDEX idx_hs_codes_version")
        conn.execute(b"CREATE INDEX idx_hs_codes_version ON hs_codes (code)")  # the spec's name, another definition
    line = _one_line_error(run(env, "migrate", "up"))
    assert line.startswith(f"error: migration {MIGRATION}: index idx_hs_codes_version exists with another definition")
    assert "USING btree (code)" in line and "ON hs_codes (version)" in line and "psycopg" not in line
    r = run(env, "migrate", "status")
    assert r.stdout.startswith(f"{MIGRATION}: conflict (recorded: nothing); 0/26 indexes valid; 21 indexes")
    assert "  another definition than the migration's (rename or drop them): idx_hs_codes_version" in r.stdout
    assert _count(dsn, "SELECT count(*) FROM pg_stat_user_indexes WHERE schemaname = 'public'") == 21


def test_unknown_sub_commands_exit_2(env: dict[str, str | None]) -> None:
    r = run(env, "migrate", "sideways")
    assert r.exit_code == 2 and "sideways" in r.stderr and "up" in r.stderr
    r = run(env, "bogus")
    assert r.exit_code == 2 and "bogus" in r.stderr
    r = run(env, "seed", "--verdicts", "many")
    assert r.exit_code == 2 and "many" in r.stderr


# --------------------------------------------------------------------------- seed


def test_seed_refuse_force_append(fresh_env: dict[str, str | None]) -> None:
    env = fresh_env
    dsn = env["PSRA_DB_DSN"]
    r = run(env, "seed", "--verdicts", "2000", "--seed", "3")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "reference data: 6,940 HS codes, 13 rules"
    m = re.fullmatch(
        r"wrote 2,000 verdicts for 200 tenants in [\d.]+ s \([\d,]+ rows/s\); seed 3, checksum ([0-9a-f]{16})", lines[1]
    )
    assert m, lines
    assert _count(dsn, "SELECT checksum FROM psra_bench.seed_runs ORDER BY id DESC LIMIT 1") == m.group(1)
    assert _count(dsn, "SELECT count(*) FROM psra_verdicts") == 2000

    line = _one_line_error(run(env, "seed", "--verdicts", "10"), quiet=False)
    assert (
        line == "error: psra_verdicts already holds 2,000 rows; pass --force to replace them or --append to add more."
    )
    assert _count(dsn, "SELECT count(*) FROM psra_verdicts") == 2000

    r = run(env, "seed", "--verdicts", "1000", "--force")
    assert r.exit_code == 0, r.output
    assert _count(dsn, "SELECT count(*) FROM psra_verdicts") == 1000

    r = run(env, "seed", "--verdicts", "500", "--append", "--seed", "4")
    assert r.exit_code == 0, r.output
    assert _count(dsn, "SELECT count(*) FROM psra_verdicts") == 1500

    line = _one_line_error(run(env, "seed", "--verdicts", "10", "--force", "--append"))
    assert "--force/--append" in line
    line = _one_line_error(run(env, "seed", "--verdicts", "-5", "--force"), quiet=False)
    assert "-5" in line
    assert _count(dsn, "SELECT count(*) FROM psra_verdicts") == 1500


def test_seed_append_twice_with_the_default_seed(fresh_env: dict[str, str | None]) -> None:
    env = fresh_env
    """`seed` then `seed --append` (both with the default seed 42): more rows or one error line, no traceback."""
    assert run(env, "seed", "--verdicts", "300").exit_code == 0
    r = run(env, "seed", "--verdicts", "300", "--append")
    if r.exit_code == 0:
        assert _count(env["PSRA_DB_DSN"], "SELECT count(*) FROM psra_verdicts") == 600
    else:
        _one_line_error(r, quiet=False)


# --------------------------------------------------------------------------- doctor


def test_doctor(env: dict[str, str | None]) -> None:
    r = run(env, "doctor")
    assert r.exit_code == 0, (r.output, r.exception)
    for section in ("settings", "postgresql", "tables", "migrations", "redis"):
        assert re.search(rf"^{section}$", r.stdout, re.M), section
    assert re.search(r"^indexes in schema public\s+20 \(baseline 20, migrated 46\)$", r.stdout, re.M)
    assert re.search(rf"^{MIGRATION}\s+not applied$", r.stdout, re.M)
    assert re.search(r"^hs_codes\s+6,940$", r.stdout, re.M)
    assert re.search(r"^psra_rules\s+13$", r.stdout, re.M)
    assert re.search(r"^postgres\s+configured postgresql://", r.stdout, re.M)
    assert re.search(r"^max concurrent jobs\s+10$", r.stdout, re.M)
    assert "pg_trgm" in r.stdout


def _section(stdout: str, title: str) -> dict[str, str]:
    """One section of ``doctor``'s output as {item: value}."""
    block = stdout.split(f"\n{title}\n", 1)[1].split("\n\n", 1)[0]
    rows = [ln for ln in block.splitlines()[2:] if ln.strip()]  # below the header and its rule
    pairs = [re.split(r"\s{2,}", ln, maxsplit=1) for ln in rows]
    return {k: v for k, v in pairs}


def test_doctor_shows_the_cache_and_the_jobs_server(env: dict[str, str | None], settings: Settings) -> None:
    assert settings.jobs_redis is not None and settings.redis is not None
    r = run(env | {"JOBS_REDIS_URL": settings.jobs_redis.url()}, "doctor")
    assert r.exit_code == 0, (r.output, r.exception)
    jobs, cache = _section(r.stdout, "jobs redis"), _section(r.stdout, "redis")
    assert set(jobs) == {"server", "maxmemory", "maxmemory-policy", "persistence", "used memory", "job safety"}
    assert {"persistence", "maxmemory-policy", "keyspace hits/misses"} <= set(cache)
    shown = _section(r.stdout, "settings")["jobs redis"]
    assert shown.startswith("configured ")  # JOBS_REDIS_URL names it, even when it is the embedded one
    assert settings.jobs_redis.url(with_password=False) in shown
    for section in (jobs, cache):
        assert re.fullmatch(r"none|AOF (always|everysec|no)( \+ RDB save .+)?|RDB save .+", section["persistence"])
    if jobs["maxmemory-policy"] == "noeviction":
        assert jobs["job safety"] == "ok (noeviction)"
    else:
        assert jobs["job safety"] == (
            f"UNSAFE: evicts keys (policy {jobs['maxmemory-policy']}) - jobs can vanish; use noeviction"
        )
    if settings.embedded_jobs_redis:  # the embedded pair: an evicting cache beside a job store that keeps all
        assert (jobs["maxmemory-policy"], jobs["persistence"], jobs["maxmemory"]) == (
            "noeviction",
            "AOF everysec",
            "0 (no limit)",
        )
        assert (cache["maxmemory-policy"], cache["persistence"]) == ("allkeys-lru", "none")


def test_doctor_on_an_evicting_jobs_server_says_unsafe(
    env: dict[str, str | None], settings: Settings, redis_client: Any
) -> None:
    """The jobs on the cache's server: safe only if that server never evicts."""
    assert settings.redis is not None
    policy = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]
    r = run(env | {"JOBS_REDIS_URL": settings.redis.url(), "PSRA_ALLOW_EVICTING_JOB_STORE": "true"}, "doctor")
    assert r.exit_code == 0, (r.output, r.exception)
    assert _section(r.stdout, "settings")["jobs redis"].endswith("(the cache's server)")
    expected = (
        "ok (noeviction)"
        if policy == "noeviction"
        else f"UNSAFE: evicts keys (policy {policy}) - jobs can vanish; use noeviction"
        " (allowed by PSRA_ALLOW_EVICTING_JOB_STORE)"
    )
    assert _section(r.stdout, "jobs redis")["job safety"] == expected


def test_doctor_unreachable_postgres_names_host_and_port_not_the_password(env: dict[str, str | None]) -> None:
    env = env | {
        "PSRA_DB_DSN": f"postgresql://u:{SECRET}@127.0.0.1:1/x",
        "REDIS_URL": f"redis://:{SECRET}@127.0.0.1:1/0",
    }
    r = run(env, "doctor")
    line = _one_line_error(r)
    assert line.startswith("error: cannot connect to PostgreSQL at 127.0.0.1:1")
    assert SECRET not in r.output


def test_doctor_unreachable_redis_is_one_line_too(env: dict[str, str | None]) -> None:
    r = run(env | {"REDIS_URL": f"redis://:{SECRET}@127.0.0.1:1/0"}, "doctor")
    line = _one_line_error(r)
    assert "127.0.0.1:1" in line
    assert SECRET not in r.output and SECRET not in repr(r.exception)


def test_dsn_with_a_raw_space_in_the_password(env: dict[str, str | None]) -> None:
    """libpq refuses raw spaces in a URI; the user gets one line, without the password."""
    r = run(env | {"PSRA_DB_DSN": "postgresql://u:my secret@127.0.0.1:1/x"}, "doctor")
    assert "secret" not in r.output and "secret" not in repr(r.exception)
    _one_line_error(r)


# --------------------------------------------------------------------------- settings and services


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MAX_CONCURRENT_JOBS", "-1", "error: MAX_CONCURRENT_JOBS='-1' is not valid: use a whole number ≥ 1."),
        ("CACHE_DEFAULT_TTL", "1h", "error: CACHE_DEFAULT_TTL='1h' is not valid: use a whole number ≥ 1."),
        (
            "ENABLE_CACHE",
            "maybe",
            "error: ENABLE_CACHE='maybe' is not valid: use true or false (also 1/0, yes/no, on/off).",
        ),
    ],
)
def test_invalid_environment_is_one_line(env: dict[str, str | None], variable: str, value: str, expected: str) -> None:
    for command in (["migrate", "status"], ["doctor"], ["services", "status"]):
        assert _one_line_error(run(env | {variable: value}, *command)) == expected


def test_malformed_dsn_with_password_is_one_line(env: dict[str, str | None]) -> None:
    r = run(env | {"PSRA_DB_DSN": f"postgresql://u:{SECRET}@db:port/x"}, "doctor")
    line = _one_line_error(r)
    assert line.startswith("error: PSRA_DB_DSN=") and "db:port" in line
    assert SECRET not in r.output


def test_services_status_and_down_leave_configured_servers_alone(env: dict[str, str | None]) -> None:
    env = env | {
        "PSRA_DB_DSN": f"postgresql://u:{SECRET}@127.0.0.1:1/x",
        "REDIS_URL": f"redis://:{SECRET}@127.0.0.1:1/0",
        "JOBS_REDIS_URL": None,  # the jobs share the configured Redis
    }
    r = run(env, "services", "status")
    assert r.exit_code == 0, r.output
    assert r.stdout.count("configured") == 2 and "embedded" not in r.stdout
    assert "postgresql://u:***@127.0.0.1:1/x" in r.stdout and "redis://:***@127.0.0.1:1/0" in r.stdout
    assert SECRET not in r.output
    r = run(env, "services", "down")
    assert r.exit_code == 0 and r.stdout == "stopped: nothing was running\n"
    assert not any(Path(str(env["PSRA_BENCH_HOME"])).iterdir())  # no state was created


def test_version(env: dict[str, str | None]) -> None:
    r = run(env, "--version")
    assert r.exit_code == 0 and r.stdout == f"psra-bench, version {__version__}\n"
