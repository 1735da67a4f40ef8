"""Settings: the spec's defaults, every environment variable, and one clear ConfigError per bad value.

Pure parsing: no server is needed. Every error message must name the variable and must never
contain a password, and neither may ``repr()`` of a settings object.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from psra_bench import constants
from psra_bench.exceptions import ConfigError, PsraBenchError
from psra_bench.infra import process_settings, use_settings
from psra_bench.settings import (
    LiveSettings,
    RedisSettings,
    Settings,
    TTLSettings,
    default_home,
    redact,
)

SECRET = "s3cr3t-Pw"


# --------------------------------------------------------------------------- defaults


def test_defaults_are_the_spec_values() -> None:
    s = Settings.from_env({})
    assert s.db_dsn is None and s.redis is None  # embedded servers
    assert s.embedded_db and s.embedded_redis
    assert s.enable_cache is True
    assert s.enable_async_tasks is True
    assert s.max_concurrent_jobs == 10
    assert s.ttl == TTLSettings(hs_codes=3600, rules=1800, assessments=300, verdicts=3600, default=3600)
    assert s.cache_namespace == ""
    assert s.home == default_home()
    assert s.embedded_services == ()
    # The job queue: its own embedded server, jobs never on an evicting one, the default limits.
    assert s.jobs_redis is None and s.embedded_jobs_redis
    assert s.allow_evicting_job_store is False
    assert s.job_timeout_seconds == 600
    assert s.max_job_payload_bytes == 1_048_576  # 1 MiB


def test_redis_defaults_are_the_spec_values() -> None:
    r = RedisSettings()
    assert (r.host, r.port, r.db, r.password, r.ssl) == ("127.0.0.1", 6379, 0, None, False)
    assert r.max_connections == 50 == constants.REDIS_MAX_CONNECTIONS


def test_ttl_for_entity() -> None:
    ttl = TTLSettings()
    assert [ttl.for_entity(e) for e in ("hs_codes", "rules", "assessments", "verdicts", "default")] == [
        3600,
        1800,
        300,
        3600,
        3600,
    ]
    with pytest.raises(ConfigError) as err:
        ttl.for_entity("users")
    assert "users" in str(err.value) and "hs_codes" in str(err.value)


def test_settings_are_immutable_and_replace_copies() -> None:
    s = Settings.from_env({})
    t = s.replace(max_concurrent_jobs=3)
    assert (s.max_concurrent_jobs, t.max_concurrent_jobs) == (10, 3)
    with pytest.raises(AttributeError):
        s.max_concurrent_jobs = 5  # type: ignore[misc]


# --------------------------------------------------------------------------- each variable


def test_db_dsn() -> None:
    dsn = f"postgresql://psra:{SECRET}@psra-postgres:5432/psra_production"
    s = Settings.from_env({"PSRA_DB_DSN": dsn})
    assert s.db_dsn == dsn
    assert not s.embedded_db
    assert Settings.from_env({"PSRA_DB_DSN": "postgres://u@h/db"}).db_dsn == "postgres://u@h/db"
    assert Settings.from_env({"PSRA_DB_DSN": ""}).db_dsn is None  # empty means unset


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost", dict(host="localhost", port=6379, db=0, password=None, username=None, ssl=False)),
        ("redis://cache.example:6380/3", dict(host="cache.example", port=6380, db=3, password=None, ssl=False)),
        (f"redis://:{SECRET}@h:7000/2", dict(host="h", port=7000, db=2, password=SECRET, username=None)),
        (f"redis://alice:{SECRET}@h/5", dict(host="h", port=6379, db=5, password=SECRET, username="alice")),
        (f"rediss://:{SECRET}@tls.example:6390/1", dict(host="tls.example", port=6390, db=1, ssl=True)),
        ("redis://:p%40ss%3Aw%2Frd@h/0", dict(password="p@ss:w/rd")),  # percent-encoded password
    ],
)
def test_redis_url(url: str, expected: dict[str, object]) -> None:
    r = Settings.from_env({"REDIS_URL": url}).redis
    assert r is not None
    for attr, value in expected.items():
        assert getattr(r, attr) == value, attr
    # The URL round-trips (password included when asked for).
    assert RedisSettings.from_url(r.url()) == r
    assert r.client_kwargs()["password"] == r.password
    assert r.client_kwargs()["ssl"] is r.ssl


def test_redis_host_port_password_db() -> None:
    env = {"REDIS_HOST": "psra-redis", "REDIS_PORT": "6380", "REDIS_PASSWORD": SECRET, "REDIS_DB": "4"}
    r = Settings.from_env(env).redis
    assert r is not None
    assert (r.host, r.port, r.password, r.db, r.ssl) == ("psra-redis", 6380, SECRET, 4, False)
    # Any one of them is enough to mean "a configured Redis"; the rest default.
    only_port = Settings.from_env({"REDIS_PORT": "6390"}).redis
    assert only_port is not None and (only_port.host, only_port.port, only_port.db) == ("127.0.0.1", 6390, 0)
    assert Settings.from_env({"REDIS_PASSWORD": ""}).redis is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://jobs.example", dict(host="jobs.example", port=6379, db=0, password=None, ssl=False)),
        ("redis://127.0.0.1:6390/2", dict(host="127.0.0.1", port=6390, db=2, password=None)),
        (f"redis://alice:{SECRET}@h/5", dict(host="h", db=5, password=SECRET, username="alice")),
        (f"rediss://:{SECRET}@tls.example:6391/1", dict(host="tls.example", port=6391, password=SECRET, ssl=True)),
    ],
)
def test_jobs_redis_url(url: str, expected: dict[str, object]) -> None:
    s = Settings.from_env({"JOBS_REDIS_URL": url, "REDIS_URL": "redis://cache.example:6379/0"})
    assert s.jobs_redis is not None
    for attr, value in expected.items():
        assert getattr(s.jobs_redis, attr) == value, attr
    assert RedisSettings.from_url(s.jobs_redis.url()) == s.jobs_redis
    # It is a server of its own: the cache's REDIS_URL is untouched, and neither is embedded.
    assert s.redis is not None and s.redis.host == "cache.example"
    assert not s.embedded_jobs_redis and not s.embedded_redis


def test_jobs_redis_url_unset_or_empty_means_resolved_later() -> None:
    """Unset: None, which ensure_services turns into the configured Redis, else the embedded jobs Valkey."""
    for env in ({}, {"JOBS_REDIS_URL": ""}, {"REDIS_URL": "redis://cache.example/0"}):
        assert Settings.from_env(env).jobs_redis is None
    assert Settings.from_env({}).embedded_jobs_redis
    assert not Settings.from_env({"REDIS_URL": "redis://cache.example/0"}).embedded_jobs_redis  # jobs share it
    assert not Settings.from_env({"REDIS_HOST": "cache.example"}).embedded_jobs_redis
    # Only the cache embedded, the jobs configured (and the other way round).
    only_jobs = Settings.from_env({"JOBS_REDIS_URL": "redis://jobs.example/0"})
    assert only_jobs.embedded_redis and not only_jobs.embedded_jobs_redis
    assert Settings(embedded_services=("valkey-jobs",), jobs_redis=RedisSettings(port=1)).embedded_jobs_redis


def test_job_settings() -> None:
    env = {
        "PSRA_ALLOW_EVICTING_JOB_STORE": " Yes ",
        "PSRA_JOB_TIMEOUT_SECONDS": "1",
        "PSRA_JOB_MAX_PAYLOAD_BYTES": " 1024 ",
    }
    s = Settings.from_env(env)
    assert (s.allow_evicting_job_store, s.job_timeout_seconds, s.max_job_payload_bytes) == (True, 1, 1024)
    s = Settings.from_env({"PSRA_ALLOW_EVICTING_JOB_STORE": "off", "PSRA_JOB_TIMEOUT_SECONDS": "3600"})
    assert (s.allow_evicting_job_store, s.job_timeout_seconds) == (False, 3600)
    assert Settings.from_env({"PSRA_JOB_TIMEOUT_SECONDS": ""}).job_timeout_seconds == 600  # empty means unset


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    [
        (
            "PSRA_ALLOW_EVICTING_JOB_STORE",
            "maybe",
            "PSRA_ALLOW_EVICTING_JOB_STORE='maybe' is not valid: use true or false (also 1/0, yes/no, on/off).",
        ),
        ("PSRA_JOB_TIMEOUT_SECONDS", "0", "PSRA_JOB_TIMEOUT_SECONDS='0' is not valid: use a whole number ≥ 1."),
        ("PSRA_JOB_TIMEOUT_SECONDS", "10s", "PSRA_JOB_TIMEOUT_SECONDS='10s' is not valid: use a whole number ≥ 1."),
        (
            "PSRA_JOB_MAX_PAYLOAD_BYTES",
            "1023",
            "PSRA_JOB_MAX_PAYLOAD_BYTES='1023' is not valid: use a whole number ≥ 1024.",
        ),
    ],
)
def test_job_settings_errors_are_exact(variable: str, raw: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({variable: raw})
    assert str(err.value) == expected


def test_redis_url_wins_over_host_variables() -> None:
    r = Settings.from_env({"REDIS_URL": "redis://a:1/1", "REDIS_HOST": "b", "REDIS_PORT": "2"}).redis
    assert r is not None and (r.host, r.port, r.db) == ("a", 1, 1)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("1", True),
        ("YES", True),
        (" on ", True),
        ("false", False),
        ("0", False),
        ("No", False),
        ("off", False),
    ],
)
def test_feature_flags(raw: str, value: bool) -> None:
    s = Settings.from_env({"ENABLE_CACHE": raw, "ENABLE_ASYNC_TASKS": raw})
    assert s.enable_cache is value
    assert s.enable_async_tasks is value


def test_flags_are_independent() -> None:
    s = Settings.from_env({"ENABLE_CACHE": "false"})
    assert (s.enable_cache, s.enable_async_tasks) == (False, True)
    s = Settings.from_env({"ENABLE_ASYNC_TASKS": "false"})
    assert (s.enable_cache, s.enable_async_tasks) == (True, False)


def test_max_concurrent_jobs() -> None:
    assert Settings.from_env({"MAX_CONCURRENT_JOBS": "1"}).max_concurrent_jobs == 1
    assert Settings.from_env({"MAX_CONCURRENT_JOBS": " 32 "}).max_concurrent_jobs == 32


def test_ttls() -> None:
    env = {
        "CACHE_DEFAULT_TTL": "100",
        "CACHE_TTL_HS_CODES": "101",
        "CACHE_TTL_RULES": "102",
        "CACHE_TTL_ASSESSMENTS": "103",
        "CACHE_TTL_VERDICTS": "104",
    }
    assert Settings.from_env(env).ttl == TTLSettings(
        hs_codes=101, rules=102, assessments=103, verdicts=104, default=100
    )
    # One variable changes one TTL only.
    ttl = Settings.from_env({"CACHE_TTL_RULES": "60"}).ttl
    assert ttl == TTLSettings(rules=60)


def test_home(tmp_path: Path) -> None:
    assert Settings.from_env({"PSRA_BENCH_HOME": str(tmp_path / "state")}).home == tmp_path / "state"
    assert Settings.from_env({"PSRA_BENCH_HOME": "~/psra-state"}).home == Path("~/psra-state").expanduser()
    assert not (tmp_path / "state").exists()  # parsing creates nothing


@pytest.mark.parametrize(("raw", "namespace"), [("", ""), ("team-a", "team-a:"), ("ci.run_7:", "ci.run_7:")])
def test_cache_namespace(raw: str, namespace: str) -> None:
    assert Settings.from_env({"PSRA_CACHE_NAMESPACE": raw}).cache_namespace == namespace


def test_pool_sizes() -> None:
    s = Settings.from_env({"PSRA_DB_POOL_MIN": "2", "PSRA_DB_POOL_MAX": "7"})
    assert (s.db_pool_min, s.db_pool_max) == (2, 7)


def test_max_body_bytes() -> None:
    assert Settings.from_env({}).max_body_bytes == 1_048_576  # 1 MiB
    assert Settings.from_env({"PSRA_MAX_BODY_BYTES": " 4096 "}).max_body_bytes == 4096
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"PSRA_MAX_BODY_BYTES": "1mb"})
    assert str(err.value) == "PSRA_MAX_BODY_BYTES='1mb' is not valid: use a whole number ≥ 1024."


# --------------------------------------------------------------------------- invalid values


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("CACHE_DEFAULT_TTL", "1h"),
        ("CACHE_DEFAULT_TTL", "3600.5"),
        ("CACHE_TTL_HS_CODES", "abc"),
        ("CACHE_TTL_RULES", "0"),
        ("CACHE_TTL_ASSESSMENTS", "-300"),
        ("CACHE_TTL_VERDICTS", "ten"),
        ("MAX_CONCURRENT_JOBS", "0"),
        ("MAX_CONCURRENT_JOBS", "-1"),
        ("MAX_CONCURRENT_JOBS", "many"),
        ("ENABLE_CACHE", "maybe"),
        ("ENABLE_ASYNC_TASKS", "2"),
        ("REDIS_PORT", "sixtythree"),
        ("REDIS_DB", "-1"),
        ("PSRA_CACHE_NAMESPACE", "has space"),
        ("PSRA_CACHE_NAMESPACE", "a*b"),
        ("PSRA_DB_POOL_MAX", "0"),
        ("PSRA_MAX_BODY_BYTES", "1023"),
        ("PSRA_MAX_BODY_BYTES", "1MiB"),
        ("PSRA_ALLOW_EVICTING_JOB_STORE", "sometimes"),
        ("PSRA_ALLOW_EVICTING_JOB_STORE", "2"),
        ("PSRA_JOB_TIMEOUT_SECONDS", "0"),
        ("PSRA_JOB_TIMEOUT_SECONDS", "-5"),
        ("PSRA_JOB_TIMEOUT_SECONDS", "1.5"),
        ("PSRA_JOB_TIMEOUT_SECONDS", "ten minutes"),
        ("PSRA_JOB_MAX_PAYLOAD_BYTES", "1023"),
        ("PSRA_JOB_MAX_PAYLOAD_BYTES", "1MiB"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, raw: str) -> None:
    env = {variable: raw}
    if variable.startswith("REDIS_"):
        env["REDIS_PASSWORD"] = SECRET
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    message = str(err.value)
    assert isinstance(err.value, PsraBenchError)
    assert err.value.variable == variable
    assert message.startswith(f"{variable}=")
    assert repr(raw) in message  # the bad value is shown...
    assert "\n" not in message  # ...in one sentence
    assert SECRET not in message


@pytest.mark.parametrize(
    "dsn",
    [
        f"mysql://u:{SECRET}@h/db",  # wrong scheme
        f"postgresql://u:{SECRET}@h:notaport/db",  # bad port
        f"postgresql://u:{SECRET}@h:99999/db",  # port out of range
        f"postgresql://u:{SECRET}@h:5432",  # no database name
        f"postgresql://u:{SECRET}@h:5432/",
        f"postgresql://u:{SECRET}@/db",  # no host
        "just-a-word",
    ],
)
def test_malformed_dsn(dsn: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"PSRA_DB_DSN": dsn})
    message = str(err.value)
    assert err.value.variable == "PSRA_DB_DSN"
    assert message.startswith("PSRA_DB_DSN=")
    assert "postgresql://" in message  # says what is allowed
    assert SECRET not in message


@pytest.mark.parametrize(
    "url",
    [
        f"http://:{SECRET}@h:6379/0",  # wrong scheme
        f"redis://:{SECRET}@h:port/0",  # bad port
        f"redis://:{SECRET}@h:6379/zero",  # db not a number
        f"redis://:{SECRET}@:6379/0",  # no host
        "localhost:6379",
    ],
)
def test_malformed_redis_url(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"REDIS_URL": url})
    message = str(err.value)
    assert err.value.variable == "REDIS_URL"
    assert message.startswith("REDIS_URL=")
    assert "redis://" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    "url",
    [
        f"http://:{SECRET}@h:6379/0",  # wrong scheme
        f"redis://:{SECRET}@h:port/0",  # bad port
        f"redis://:{SECRET}@h:99999/0",  # port out of range
        f"redis://:{SECRET}@h:6379/zero",  # db not a number
        f"redis://:{SECRET}@:6379/0",  # no host
        f"redis://user:{SECRET}@h:port/0",
        "localhost:6379",
    ],
)
def test_malformed_jobs_redis_url(url: str) -> None:
    env = {"JOBS_REDIS_URL": url, "REDIS_URL": "redis://cache.example:6379/0"}  # a good REDIS_URL beside it
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    message = str(err.value)
    assert err.value.variable == "JOBS_REDIS_URL"
    assert message.startswith("JOBS_REDIS_URL=") and message.endswith(".")
    assert "REDIS_URL=" not in message.removeprefix("JOBS_REDIS_URL=")  # names this variable, not the cache's
    assert "redis://" in message  # says what is allowed
    assert "\n" not in message  # one sentence
    assert SECRET not in message


def test_whitespace_in_dsn_password_never_leaks() -> None:
    """A password with a raw space is not a valid libpq URI; it must not show up in repr or errors."""
    dsn = "postgresql://psra:my secret@db.example:5432/psra"
    try:
        s = Settings.from_env({"PSRA_DB_DSN": dsn})
    except ConfigError as e:
        assert "secret" not in str(e)
    else:
        assert "secret" not in repr(s)


# --------------------------------------------------------------------------- no passwords in text


def test_repr_hides_passwords() -> None:
    s = Settings.from_env(
        {"PSRA_DB_DSN": f"postgresql://psra:{SECRET}@db:5432/psra", "REDIS_URL": f"redis://u:{SECRET}@r:6379/1"}
    )
    text = repr(s)
    assert SECRET not in text
    assert "db:5432" in text and "r:6379" in text  # still says where
    assert s.redis is not None
    assert SECRET not in repr(s.redis)
    assert SECRET not in s.redis.url(with_password=False)
    assert SECRET in s.redis.url()  # the real URL keeps it, for clients
    assert SECRET not in str(s.redis)


def test_repr_shows_the_jobs_server_without_its_password() -> None:
    s = Settings.from_env(
        {"REDIS_URL": f"redis://:{SECRET}@cache:6379/0", "JOBS_REDIS_URL": f"redis://u:{SECRET}@jobs:6390/1"}
    )
    text = repr(s)
    assert "jobs_redis=" in text and "jobs:6390/1" in text and "cache:6379" in text
    assert SECRET not in text and SECRET not in str(s)
    assert "jobs_redis=None" in repr(Settings.from_env({}))


def test_live_settings_have_a_concrete_jobs_server() -> None:
    live = LiveSettings(db_dsn="postgresql://u@h/db", jobs_redis=RedisSettings(port=6390))
    assert live.jobs_redis == RedisSettings(port=6390) and live.redis == RedisSettings()
    assert LiveSettings(db_dsn="postgresql://u@h/db").jobs_redis == RedisSettings()


def test_admin_token_is_read_and_never_shown() -> None:
    from psra_bench.measure.fingerprint import describe_settings, environment_fingerprint, sanitize

    token = "Op3rator-" + SECRET + "-t0ken"
    assert Settings.from_env({}).admin_token is None
    assert Settings.from_env({"PSRA_ADMIN_TOKEN": "  "}).admin_token is None
    s = Settings.from_env({"PSRA_ADMIN_TOKEN": f" {token} "})
    assert s.admin_token == token
    shown = [repr(s), str(s), repr(describe_settings(s)), repr(sanitize(s)), repr(sanitize({"settings": s}))]
    shown.append(repr(sanitize({"admin_token": token, "nested": [s]})))
    shown.append(repr(environment_fingerprint(settings=s, params={"admin_token": token})))
    for text in shown:
        assert token not in text and SECRET not in text


@pytest.mark.parametrize("raw", ["short-Pw", "has a space in it, long enough", "n\u00f6n-ascii-but-long-enough"])
def test_a_bad_admin_token_is_refused_without_echoing_it(raw: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"PSRA_ADMIN_TOKEN": raw})
    message = str(err.value)
    assert message.startswith("PSRA_ADMIN_TOKEN=") and "16 to 4096 visible ASCII characters" in message
    assert raw not in message and raw[:6] not in message


def test_redis_password_from_host_variables_not_in_repr() -> None:
    s = Settings.from_env({"REDIS_HOST": "r", "REDIS_PASSWORD": SECRET})
    assert SECRET not in repr(s)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"postgresql://psra:{SECRET}@h:5432/db", "postgresql://psra:***@h:5432/db"),
        (f"redis://:{SECRET}@h:6379/0", "redis://:***@h:6379/0"),
        (f"rediss://user:{SECRET}@h/0", "rediss://user:***@h/0"),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
        (
            f"failed: connect to postgresql://u:{SECRET}@h/db refused",
            "failed: connect to postgresql://u:***@h/db refused",
        ),
        (f"host=h password={SECRET} dbname=x", "host=h password=*** dbname=x"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),  # nothing to hide
        ("no url here", "no url here"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


#: The pieces of every secret below: none of them may survive redaction, wherever the secret sits.
_PIECES = ("Kx7", "Qm9")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # URL forms
        ("postgresql://psra:Kx7Qm9@h:5432/db", "postgresql://psra:***@h:5432/db"),
        ("postgresql://u:Kx7@Qm9@h/db", "postgresql://u:***@h/db"),  # unencoded '@'
        ("postgresql://u:Kx7@@Qm9@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:Kx7:Qm9@h/db", "postgresql://u:***@h/db"),  # ':'
        ("postgresql://u:Kx7/Qm9@h/db", "postgresql://u:***@h/db"),  # '/'
        ("postgresql://u:Kx7 Qm9@127.0.0.1:1/x", "postgresql://u:***@127.0.0.1:1/x"),  # a space
        ("postgresql://u:Kx7 @ Qm9@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:Kx7@ Qm9@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:Kx7\"'Qm9'@h/db", "postgresql://u:***@h/db"),  # quotes
        ("postgresql://u:Kx7%40Qm9@h/db", "postgresql://u:***@h/db"),  # percent-encoded
        ("postgres://u:Kx7@Qm9@h:5432/db?sslmode=require", "postgres://u:***@h:5432/db?sslmode=require"),
        ("postgresql+psycopg://u:Kx7@Qm9@h/db", "postgresql+psycopg://u:***@h/db"),
        ("postgresql://u@h/db?password=Kx7Qm9&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
        # redis URLs
        ("redis://:Kx7@Qm9@h:6379/0", "redis://:***@h:6379/0"),
        ("rediss://user:Kx7 Qm9@h/0", "rediss://user:***@h/0"),
        ("redis://default:Kx7:@/Qm9@h:6380/2", "redis://default:***@h:6380/2"),
        # keyword forms
        ("host=h password=Kx7Qm9 dbname=x", "host=h password=*** dbname=x"),
        ("host=h password='Kx7 Qm9' dbname=x", "host=h password=*** dbname=x"),
        ("host=h password='Kx7 \\'@:/ Qm9\\' x' dbname=x", "host=h password=*** dbname=x"),
        ("host=h password = Kx7@Qm9 user=u", "host=h password = *** user=u"),
        ("host=h PASSWORD='Kx7 Qm9", "host=h PASSWORD=***"),  # unterminated quote: hide the rest
        ("sslpassword='Kx7 Qm9' sslmode=verify-full", "sslpassword=*** sslmode=verify-full"),
        ("PGPASSWORD=Kx7Qm9 psql -h h", "PGPASSWORD=*** psql -h h"),
        # text that merely contains a DSN
        (
            "failed: connect to postgresql://u:Kx7@Qm9@h/db refused; mail ops@example.com",
            "failed: connect to postgresql://u:***@h/db refused; mail ops@example.com",
        ),
        (
            "error: PSRA_DB_DSN='postgresql://u:Kx7 Qm9@db:port/x' is not valid",
            "error: PSRA_DB_DSN='postgresql://u:***@db:port/x' is not valid",
        ),
        (
            "a postgresql://a:Kx7@h/1 and redis://:Qm9@r/0 and host=h password='Kx7 Qm9'",
            "a postgresql://a:***@h/1 and redis://:***@r/0 and host=h password=***",
        ),
        ("conninfo: host=h port=5432 password=Kx7Qm9\nnext line", "conninfo: host=h port=5432 password=***\nnext line"),
        # nothing to hide
        (
            "postgresql://h:5432/db refused, mail ops@example.com",
            "postgresql://h:5432/db refused, mail ops@example.com",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_redact_leaves_no_secret_fragment(text: str, expected: str) -> None:
    out = redact(text)
    assert out == expected
    assert not any(piece in out for piece in _PIECES), out
    assert redact(out) == out  # idempotent


def test_use_settings_sets_and_forgets_the_process_settings(settings: Settings) -> None:
    with pytest.raises(ConfigError, match=r"^settings=.* is not valid: LiveSettings with concrete endpoints"):
        use_settings(Settings(home=Path("/nonexistent")))
    previous = use_settings(settings)
    try:
        assert process_settings() is settings and process_settings({"CACHE_TTL_RULES": "x"}) is settings
        assert use_settings(None) is settings
    finally:
        use_settings(previous)
