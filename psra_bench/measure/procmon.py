"""CPU and memory of the processes a load test involves, sampled with psutil.

A :class:`ProcessMonitor` samples named *groups* of processes in a background thread — the
PostgreSQL server (its postmaster and every child: backends, workers), Redis/Valkey, the API
process tree and the load generator — and keeps per-sample CPU seconds and memory so any time
window (a phase of the test) can be summarized afterwards with :meth:`ProcessMonitor.window`.

Accounting, stated once:

* **CPU** of a group over a window = the CPU seconds (user + system) its processes used in that
  window / the window's length, in *cores* (1.0 = one core busy); ``pct_of_machine`` divides
  by the machine's logical CPUs. Processes born during the run count from zero; processes that
  exited between two samples lose their last interval (PostgreSQL backends of a connection pool
  live for the whole run, so this is small). The kernel counts CPU time in ticks (10 ms), so a
  group that used less than that in a short window reads 0.
* **Memory**: RSS summed over the group (for PostgreSQL this counts shared buffers once per
  process that touched them, so it over-states), and for the groups named in ``pss_groups``
  PSS (proportional set size: shared pages split between their users) — the honest sum — read
  every ``pss_every`` samples because it is costlier (~3 ms per process); a window reports the
  PSS readings inside it widened by one PSS period on each side.
* **Overhead**: a sample walks the process trees and reads /proc; at the default 0.5 s interval
  the monitor thread uses a few percent of one core.
* **The machine**: system-wide busy cores per sample, so noise from other work on a shared
  machine is visible next to the groups.
* **PostgreSQL** CPU includes every database of that server, not just the one under test.

Finders (:func:`postgres_processes`, :func:`redis_processes`, :func:`process_tree`) only look
at servers on this machine; for a remote server they return nothing and the group reads 0.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from psra_bench.settings import Settings

__all__ = [
    "Finder",
    "GroupSample",
    "ProcessMonitor",
    "process_tree",
    "postgres_root_pid",
    "postgres_processes",
    "redis_pid",
    "redis_processes",
    "LOCAL_HOSTS",
]

#: A callable returning the current processes of a group (called at every sample).
Finder = Callable[[], list[psutil.Process]]
#: Host names that mean "this machine".
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def process_tree(pid: int | None) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants (empty when it is gone)."""
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def postgres_root_pid(settings: Settings) -> int | None:
    """The postmaster pid of the settings' PostgreSQL if it runs on this machine, else None."""
    from psra_bench.infra import postgres as db

    if settings.db_dsn is None:
        return None
    if settings.embedded_db:
        try:
            pid = int((Path(settings.home) / "postgres" / "pgdata" / "postmaster.pid").read_text().split()[0])
            if "postgres" in psutil.Process(pid).name():
                return pid
        except (OSError, ValueError, IndexError, psutil.Error):
            pass
    host, _ = db.dsn_host_port(settings.db_dsn)
    if host not in LOCAL_HOSTS:
        return None
    try:
        with db.connect(settings.db_dsn, autocommit=True) as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
        backend = psutil.Process(int(row[0])) if row else None
        parent = backend.parent() if backend else None
        return parent.pid if parent is not None and "postgres" in parent.name() else None
    except Exception:  # monitoring is best effort: no pid means "not measured"
        return None


def postgres_processes(settings: Settings) -> Finder:
    """A finder for the PostgreSQL server's processes (postmaster + children), if local."""
    pid = postgres_root_pid(settings)
    return lambda: process_tree(pid)


def redis_pid(settings: Settings) -> int | None:
    """The pid of the settings' Redis/Valkey server (INFO server's process_id) if it runs here."""
    from psra_bench.infra.redis_client import create_redis

    if settings.redis is None or settings.redis.host not in LOCAL_HOSTS:
        return None
    client = create_redis(settings)
    try:
        pid = int(client.info("server").get("process_id", 0)) or None
        return pid if pid is not None and psutil.pid_exists(pid) else None
    except Exception:  # best effort, as above
        return None
    finally:
        client.close()


def redis_processes(settings: Settings) -> Finder:
    """A finder for the Redis/Valkey server process, if local."""
    pid = redis_pid(settings)
    return lambda: process_tree(pid)


@dataclass
class GroupSample:
    """One group at one sample: CPU seconds since the previous sample, memory, processes."""

    cpu_seconds: float
    per_process_cpu: dict[int, float]
    rss_bytes: int
    pss_bytes: int | None
    processes: int


@dataclass
class _Sample:
    t: float
    dt: float
    machine_busy_cores: float
    groups: dict[str, GroupSample] = field(default_factory=dict)


class ProcessMonitor:
    """Samples CPU and memory of process groups every ``interval_s`` in a daemon thread."""

    def __init__(
        self,
        groups: dict[str, Finder],
        *,
        interval_s: float = 0.5,
        pss_groups: tuple[str, ...] = (),
        pss_every: int = 4,
    ) -> None:
        self.groups = dict(groups)
        self.interval_s = interval_s
        self.pss_groups = pss_groups
        self.pss_every = max(1, pss_every)
        self.samples: list[_Sample] = []
        self.cpus = psutil.cpu_count() or 1
        self._seen: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._started_at = 0.0
        self._last_t = 0.0
        self._last_machine: Any = None
        self._count = 0

    def __enter__(self) -> ProcessMonitor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Take the baseline and start sampling."""
        self._started_at = self._last_t = time.time()
        self._last_machine = psutil.cpu_times()
        for finder in self.groups.values():
            for proc in self._safe(finder):
                self._cpu_delta(proc)
        self._thread = threading.Thread(target=self._loop, name="psra-procmon", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Take a last sample and stop the thread."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        self._thread = None
        self.sample()

    @staticmethod
    def _safe(finder: Finder) -> list[psutil.Process]:
        try:
            return finder()
        except psutil.Error:
            return []

    def _cpu_delta(self, proc: psutil.Process) -> float:
        """CPU seconds ``proc`` used since it was last seen (all of it if it was born after the start)."""
        try:
            key = (proc.pid, proc.create_time())
            times = proc.cpu_times()
        except psutil.Error:
            return 0.0
        total = float(times.user + times.system)
        previous = self._seen.get(key)
        if previous is None:
            previous = 0.0 if key[1] >= self._started_at else total
        self._seen[key] = total
        return max(0.0, total - previous)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        """Take one sample now (also called by the thread)."""
        with self._lock:
            now = time.time()
            machine = psutil.cpu_times()
            prev = self._last_machine
            busy = 0.0
            if prev is not None:
                total = sum(machine) - sum(prev)
                idle = (machine.idle + getattr(machine, "iowait", 0.0)) - (prev.idle + getattr(prev, "iowait", 0.0))
                busy = max(0.0, (total - idle) / total * self.cpus) if total > 0 else 0.0
            sample = _Sample(now, max(1e-6, now - self._last_t), busy)
            self._count += 1
            for name, finder in self.groups.items():
                cpu: dict[int, float] = {}
                rss = 0
                pss: int | None = 0 if name in self.pss_groups and self._count % self.pss_every == 0 else None
                procs = self._safe(finder)
                for proc in procs:
                    cpu[proc.pid] = self._cpu_delta(proc)
                    try:
                        if pss is not None:
                            full = proc.memory_full_info()
                            rss += full.rss
                            pss += getattr(full, "pss", full.rss)
                        else:
                            rss += proc.memory_info().rss
                    except psutil.Error:
                        continue
                sample.groups[name] = GroupSample(sum(cpu.values()), cpu, rss, pss, len(procs))
            self.samples.append(sample)
            self._last_t, self._last_machine = now, machine

    def _pss_near(self, name: str, start: float, end: float) -> list[int]:
        """PSS readings of ``name`` inside the window, widened by one PSS period on each side."""
        pad = self.interval_s * self.pss_every
        readings = [
            s.groups[name].pss_bytes for s in self.samples if start - pad < s.t <= end + pad and name in s.groups
        ]
        return [r for r in readings if r is not None]

    def window(self, start: float, end: float) -> dict[str, Any]:
        """Summary of every group between epoch times ``start`` and ``end`` (samples ending inside it)."""
        with self._lock:
            inside = [s for s in self.samples if start < s.t <= end + self.interval_s / 2]
        span = sum(s.dt for s in inside)
        out: dict[str, Any] = {
            "window_s": span,
            "samples": len(inside),
            "cpus": self.cpus,
            "interval_s": self.interval_s,
        }
        if not inside or span <= 0:
            return out | {"groups": {}, "machine_busy_cores": None}
        out["machine_busy_cores"] = sum(s.machine_busy_cores * s.dt for s in inside) / span
        groups: dict[str, Any] = {}
        for name in self.groups:
            pairs = [(s, s.groups[name]) for s in inside if name in s.groups]
            if not pairs:
                continue
            rows = [r for _, r in pairs]
            cores = sum(r.cpu_seconds for r in rows) / span
            per_proc: dict[int, float] = {}
            for r in rows:
                for pid, secs in r.per_process_cpu.items():
                    per_proc[pid] = per_proc.get(pid, 0.0) + secs
            peak = [r.cpu_seconds / s.dt for s, r in pairs]
            pss = self._pss_near(name, start, end)
            groups[name] = {
                "cpu_cores": cores,
                "cpu_pct_of_machine": 100.0 * cores / self.cpus,
                "cpu_cores_peak_sample": max(peak) if peak else 0.0,
                "busiest_process_cores": max(per_proc.values()) / span if per_proc else 0.0,
                "processes_max": max(r.processes for r in rows),
                "rss_mb_mean": sum(r.rss_bytes for r in rows) / len(rows) / 2**20,
                "rss_mb_max": max(r.rss_bytes for r in rows) / 2**20,
                "pss_mb_max": max(pss) / 2**20 if pss else None,
                "measured": any(r.processes for r in rows),
            }
        out["groups"] = groups
        return out
