"""Typed settings, built from the environment in exactly one place (:meth:`Settings.from_env`).

Everything below the CLI / app / notebook edge receives a :class:`Settings` object; no other
module reads ``os.environ``. ``db_dsn`` or ``redis`` left as ``None`` mean "use the embedded
server", which :func:`psra_bench.infra.embedded.ensure_services` starts and fills in. ``jobs_redis``
left as ``None`` means "the cache's server" when a Redis is configured, else a second embedded
Valkey of the job queue's own (noeviction, append-only file): a cache may evict, a job store must not.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote, unquote, urlsplit

from psra_bench import constants
from psra_bench.exceptions import ConfigError

__all__ = [
    "RedisSettings",
    "TTLSettings",
    "Settings",
    "LiveSettings",
    "redact",
    "default_home",
    "admin_token_from_env",
    "progress_file_from_env",
    "PROGRESS_FILE_ENV",
    "environ_with",
]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


#: ``scheme://user:`` — what comes next, up to the '@' before the host, is a URL's password.
_URL_AUTH = re.compile(r"\b[A-Za-z][\w+.-]*://[^:/@\s]*:")
#: ``?password=…`` / ``&password=…`` in a URL query (percent-encoded: '&' ends it).
_QUERY_SECRET = re.compile(r"(?i)([?&]\w*password=)[^&\s#]*")
#: libpq keyword form ``password=value`` / ``password = 'quoted \' value'`` (also sslpassword, PGPASSWORD=…).
_KEYWORD_SECRET = re.compile(r"(?i)(?<![?&\w])(\w*password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)")
_HOST_AT = re.compile(r"@(?=\S)")
_SPACE = re.compile(r"\s")


def redact(text: str) -> str:
    """Return ``text`` with every password in it — URL, URL query or libpq keyword form — replaced by ``***``.

    Errs on the side of hiding: an unencoded '@', ':', '/', quote or space in a URL password, or an
    unterminated quote in the keyword form, hides more than the password rather than less.
    """
    text = _redact_url_passwords(text)
    text = _QUERY_SECRET.sub(r"\1***", text)
    return _KEYWORD_SECRET.sub(r"\1***", text)


def _redact_url_passwords(text: str) -> str:
    out: list[str] = []
    pos = 0
    for m in _URL_AUTH.finditer(text):
        if m.start() < pos:  # inside a password already hidden
            continue
        end = _url_password_end(text, m.end())
        if end is None:
            continue
        out += [text[pos : m.end()], "***"]
        pos = end
    return "".join(out) + text[pos:]


def _url_password_end(text: str, start: int) -> int | None:
    """Where the URL password starting at ``start`` ends (its host's '@'), or None for a URL without one.

    The host follows the *last* '@' of the URL's word that has something after it; a password with
    a space in it runs on to the next such word on the same line (unless the URL reads ``host:port/db``).
    """
    word_end = _word_end(text, start)
    at = text.rfind("@", start, word_end - 1)
    if at >= 0:
        return at
    rest = text[start:word_end]
    if "/" in rest.rstrip("@") or rest.isdigit():  # host:port[/db]: no password here
        return None
    line_end = text.find("\n", word_end)
    m = _HOST_AT.search(text, word_end, len(text) if line_end < 0 else line_end)
    return None if m is None else text.rfind("@", m.start(), _word_end(text, m.start()) - 1)


def _word_end(text: str, start: int) -> int:
    m = _SPACE.search(text, start)
    return len(text) if m is None else m.start()


def default_home() -> Path:
    """The per-user data folder that holds embedded servers' state when PSRA_BENCH_HOME is unset."""
    import platformdirs

    return Path(platformdirs.user_data_dir("psra-bench", appauthor=False))


@dataclass(frozen=True)
class RedisSettings:
    """Where and how to reach Redis (or Valkey); a ``redis://`` / ``rediss://`` URL round-trips."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    max_connections: int = constants.REDIS_MAX_CONNECTIONS
    socket_timeout: float = 0.5
    socket_connect_timeout: float = 0.5

    @classmethod
    def from_url(cls, url: str, variable: str = "REDIS_URL", **overrides: Any) -> RedisSettings:
        """Parse ``redis://[user:password@]host[:port][/db]`` (``rediss://`` for TLS)."""
        allowed = "a URL like redis://[:password@]host[:port][/db] or rediss://… for TLS"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise ConfigError(variable, redact(url), allowed) from e
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ConfigError(variable, redact(url), allowed)
        db_text = parts.path.lstrip("/") or "0"
        if not db_text.isdigit():
            raise ConfigError(variable, redact(url), allowed + " (db must be a whole number)")
        return cls(
            host=parts.hostname,
            port=port or 6379,
            db=int(db_text),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            ssl=parts.scheme == "rediss",
            **overrides,
        )

    def url(self, *, with_password: bool = True) -> str:
        """The URL of this server; ``with_password=False`` gives the form safe for logs."""
        auth = ""
        if self.password is not None or self.username:
            user = quote(self.username or "", safe="")
            secret = quote(self.password or "", safe="") if with_password else "***"
            auth = f"{user}:{secret}@"
        scheme = "rediss" if self.ssl else "redis"
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.db}"

    def __repr__(self) -> str:
        return f"RedisSettings({self.url(with_password=False)!r})"

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis`` / ``redis.asyncio.Redis`` / their pools."""
        return {
            "host": self.host,
            "port": self.port,
            "db": self.db,
            "username": self.username,
            "password": self.password,
            "ssl": self.ssl,
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_connect_timeout,
        }


@dataclass(frozen=True)
class TTLSettings:
    """Cache time-to-live per entity, in seconds (the spec's table)."""

    hs_codes: int = constants.TTL_HS_CODES
    rules: int = constants.TTL_RULES
    assessments: int = constants.TTL_ASSESSMENTS
    verdicts: int = constants.TTL_VERDICTS
    reports: int = constants.TTL_REPORTS
    default: int = constants.DEFAULT_TTL

    def for_entity(self, entity: str) -> int:
        """TTL of ``entity`` (hs_codes, rules, assessments, verdicts, reports or default)."""
        if entity not in _TTL_ENTITY_NAMES:  # a set built once: the cache asks on every write
            allowed = ", ".join(f.name for f in dataclasses.fields(self))
            raise ConfigError("entity", entity, f"one of {allowed}")
        return int(getattr(self, entity))


_TTL_ENTITY_NAMES = frozenset(f.name for f in dataclasses.fields(TTLSettings))


@dataclass(frozen=True)
class Settings:
    """All of psra-bench's configuration; build it with :meth:`from_env` or directly in tests."""

    db_dsn: str | None = None
    redis: RedisSettings | None = None
    #: The job queue's server (JOBS_REDIS_URL); None: the cache's Redis if one is configured, else embedded.
    jobs_redis: RedisSettings | None = None
    home: Path = field(default_factory=default_home)
    enable_cache: bool = True
    enable_async_tasks: bool = True
    max_concurrent_jobs: int = constants.MAX_CONCURRENT_JOBS
    ttl: TTLSettings = field(default_factory=TTLSettings)
    #: Prefix put before every Redis key, so several users (or test runs) share one server.
    cache_namespace: str = ""
    db_pool_min: int = 1
    db_pool_max: int = 10
    #: Which endpoints ensure_services filled in with embedded servers ("postgres", "valkey", "valkey-jobs").
    embedded_services: tuple[str, ...] = ()
    #: The operator credential of the cross-tenant API routes (PSRA_ADMIN_TOKEN); None turns them off.
    #: A secret: never in repr, logs, errors or the run fingerprint.
    admin_token: str | None = field(default=None, repr=False)
    #: The largest request body the API reads (PSRA_MAX_BODY_BYTES); a larger one is a 413.
    max_body_bytes: int = 1_048_576
    #: Run the job queue on a server that evicts keys (PSRA_ALLOW_EVICTING_JOB_STORE): jobs can vanish.
    allow_evicting_job_store: bool = False
    #: The default time limit of one job, in seconds (PSRA_JOB_TIMEOUT_SECONDS).
    job_timeout_seconds: int = 600
    #: The largest job payload accepted at submit, in bytes of JSON (PSRA_JOB_MAX_PAYLOAD_BYTES).
    max_job_payload_bytes: int = 1_048_576
    #: The job store is a Redis Cluster (PSRA_JOBS_REDIS_CLUSTER): ``jobs_redis`` names one of its nodes.
    jobs_redis_cluster: bool = False

    def __repr__(self) -> str:
        dsn = redact(self.db_dsn) if self.db_dsn else "embedded"
        return (
            f"Settings(db={dsn!r}, redis={self.redis!r}, jobs_redis={self.jobs_redis!r}, home={str(self.home)!r}, "
            f"enable_cache={self.enable_cache}, max_concurrent_jobs={self.max_concurrent_jobs}, "
            f"ttl={self.ttl}, cache_namespace={self.cache_namespace!r}, jobs_redis_cluster={self.jobs_redis_cluster})"
        )

    @property
    def embedded_db(self) -> bool:
        """True when no PSRA_DB_DSN was given and the embedded PostgreSQL is used."""
        return self.db_dsn is None or "postgres" in self.embedded_services

    @property
    def embedded_redis(self) -> bool:
        """True when no Redis was configured and the embedded Valkey is used."""
        return self.redis is None or "valkey" in self.embedded_services

    @property
    def embedded_jobs_redis(self) -> bool:
        """True when the job queue uses the embedded jobs Valkey (no JOBS_REDIS_URL and no Redis configured)."""
        return "valkey-jobs" in self.embedded_services or (self.jobs_redis is None and self.redis is None)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied (settings are immutable; a LiveSettings stays one)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables (``os.environ`` unless ``env`` is given)."""
        env = os.environ if env is None else env
        db_dsn = env.get("PSRA_DB_DSN") or None
        if db_dsn is not None:
            _check_dsn(db_dsn)
        jobs_redis = _jobs_redis_from_env(env)
        jobs_redis_cluster = _jobs_redis_cluster_from_env(env, jobs_redis)
        return cls(
            db_dsn=db_dsn,
            redis=_redis_from_env(env),
            jobs_redis=jobs_redis,
            jobs_redis_cluster=jobs_redis_cluster,
            home=Path(env["PSRA_BENCH_HOME"]).expanduser() if env.get("PSRA_BENCH_HOME") else default_home(),
            enable_cache=_bool(env, "ENABLE_CACHE", True),
            enable_async_tasks=_bool(env, "ENABLE_ASYNC_TASKS", True),
            max_concurrent_jobs=_int(env, "MAX_CONCURRENT_JOBS", constants.MAX_CONCURRENT_JOBS, minimum=1),
            ttl=TTLSettings(
                hs_codes=_int(env, "CACHE_TTL_HS_CODES", constants.TTL_HS_CODES, minimum=1),
                rules=_int(env, "CACHE_TTL_RULES", constants.TTL_RULES, minimum=1),
                assessments=_int(env, "CACHE_TTL_ASSESSMENTS", constants.TTL_ASSESSMENTS, minimum=1),
                verdicts=_int(env, "CACHE_TTL_VERDICTS", constants.TTL_VERDICTS, minimum=1),
                reports=_int(env, "CACHE_TTL_REPORTS", constants.TTL_REPORTS, minimum=1),
                default=_int(env, "CACHE_DEFAULT_TTL", constants.DEFAULT_TTL, minimum=1),
            ),
            cache_namespace=_namespace(env.get("PSRA_CACHE_NAMESPACE", "")),
            db_pool_min=_int(env, "PSRA_DB_POOL_MIN", 1, minimum=1),
            db_pool_max=_int(env, "PSRA_DB_POOL_MAX", 10, minimum=1),
            admin_token=admin_token_from_env(env),
            max_body_bytes=_int(env, "PSRA_MAX_BODY_BYTES", 1_048_576, minimum=1024),
            allow_evicting_job_store=_bool(env, "PSRA_ALLOW_EVICTING_JOB_STORE", False),
            job_timeout_seconds=_int(env, "PSRA_JOB_TIMEOUT_SECONDS", 600, minimum=1),
            max_job_payload_bytes=_int(env, "PSRA_JOB_MAX_PAYLOAD_BYTES", 1_048_576, minimum=1024),
        )


#: What PSRA_ADMIN_TOKEN may be: at least 16 visible ASCII characters (it travels in an HTTP header).
_TOKEN = re.compile(r"[\x21-\x7e]{16,4096}")


@dataclass(frozen=True, repr=False)  # repr=False: keep Settings' redacting __repr__
class LiveSettings(Settings):
    """Settings whose servers are known (what ``ensure_services`` returns): nothing below it checks for None."""

    db_dsn: str = ""
    redis: RedisSettings = field(default_factory=RedisSettings)
    jobs_redis: RedisSettings = field(default_factory=RedisSettings)

    def __post_init__(self) -> None:
        if not self.db_dsn:
            raise ConfigError("db_dsn", self.db_dsn, "a PostgreSQL DSN (call ensure_services to get one)")


def admin_token_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """PSRA_ADMIN_TOKEN from ``env`` (``os.environ`` unless given): None when unset or empty; never echoed in errors."""
    env = os.environ if env is None else env
    raw = env.get("PSRA_ADMIN_TOKEN")
    if raw is None or raw.strip() == "":
        return None
    token = raw.strip()
    if not _TOKEN.fullmatch(token):
        raise ConfigError(
            "PSRA_ADMIN_TOKEN",
            f"<hidden, {len(token)} characters>",
            "use 16 to 4096 visible ASCII characters without spaces, "
            "e.g. the output of python -c 'import secrets; print(secrets.token_urlsafe())'",
        )
    return token


#: The file a report run follows for its notebooks' progress (set by the run for its kernels; see measure/progress.py).
PROGRESS_FILE_ENV = "PSRA_BENCH_PROGRESS"


def progress_file_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """PSRA_BENCH_PROGRESS from ``env`` (``os.environ`` unless given): the progress file of a report run, or None."""
    env = os.environ if env is None else env
    return env.get(PROGRESS_FILE_ENV) or None


def environ_with(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment plus ``extra``: the environment of a child process that needs one more variable."""
    return {**os.environ, **extra}


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(name, raw, "use true or false (also 1/0, yes/no, on/off)")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError as e:
        raise ConfigError(name, raw, f"use a whole number ≥ {minimum}") from e
    if value < minimum:
        raise ConfigError(name, raw, f"use a whole number ≥ {minimum}")
    return value


def _namespace(raw: str) -> str:
    if raw and not re.fullmatch(r"[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*:?", raw):
        raise ConfigError(
            "PSRA_CACHE_NAMESPACE",
            raw,
            "use letters, digits, '_', '.', '-', with ':' between parts (a final ':' is added)",
        )
    return raw if not raw or raw.endswith(":") else raw + ":"


def _check_dsn(dsn: str) -> None:
    allowed = "use a URL like postgresql://user[:password]@host[:port]/dbname"
    if any(ch.isspace() for ch in dsn):
        raise ConfigError("PSRA_DB_DSN", redact(dsn), allowed + " (percent-encode spaces as %20)")
    try:
        parts = urlsplit(dsn)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise ConfigError("PSRA_DB_DSN", redact(dsn), allowed) from e
    if parts.scheme not in ("postgresql", "postgres") or not (parts.hostname or "host=" in parts.query):
        raise ConfigError("PSRA_DB_DSN", redact(dsn), allowed)
    if not parts.path.strip("/"):
        raise ConfigError("PSRA_DB_DSN", redact(dsn), allowed + " (the database name is missing)")


def _redis_from_env(env: Mapping[str, str]) -> RedisSettings | None:
    url = env.get("REDIS_URL") or None
    if url is not None:
        return RedisSettings.from_url(url)
    if not any(env.get(k) for k in ("REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB")):
        return None
    return RedisSettings(
        host=env.get("REDIS_HOST") or "127.0.0.1",
        port=_int(env, "REDIS_PORT", 6379, minimum=1),
        db=_int(env, "REDIS_DB", 0, minimum=0),
        password=env.get("REDIS_PASSWORD") or None,
    )


def _jobs_redis_from_env(env: Mapping[str, str]) -> RedisSettings | None:
    """JOBS_REDIS_URL (same grammar as REDIS_URL); None when unset, which ensure_services resolves."""
    url = env.get("JOBS_REDIS_URL") or None
    return None if url is None else RedisSettings.from_url(url, variable="JOBS_REDIS_URL")


def _jobs_redis_cluster_from_env(env: Mapping[str, str], jobs_redis: RedisSettings | None) -> bool:
    """PSRA_JOBS_REDIS_CLUSTER: true needs JOBS_REDIS_URL naming a node of the cluster, with db 0."""
    cluster = _bool(env, "PSRA_JOBS_REDIS_CLUSTER", False)
    if cluster and jobs_redis is None:
        raise ConfigError(
            "PSRA_JOBS_REDIS_CLUSTER",
            env["PSRA_JOBS_REDIS_CLUSTER"],
            "true needs JOBS_REDIS_URL as well, naming one node of the cluster (redis://host:port/0)",
        )
    if cluster and jobs_redis is not None and jobs_redis.db != 0:
        raise ConfigError(
            "JOBS_REDIS_URL",
            jobs_redis.url(with_password=False),
            "use db 0 (…/0) with PSRA_JOBS_REDIS_CLUSTER=true: a Redis Cluster has only one database",
        )
    return cluster
