"""Open-model (constant arrival rate) load driver whose latencies include queueing.

Locust runs a *closed* model: each user waits for its response before sending the next request,
so when the server slows down the generator slows down with it and the requests that *would*
have arrived meanwhile are never sent — their delay is missing from the tail ("coordinated
omission"). This driver runs the *open* model instead:

* arrival ``i`` has an **intended start** ``t0 + i / rate`` on a fixed schedule, whatever the
  server does;
* at most ``max_in_flight`` requests are on the wire (one connection each); an arrival that
  finds them all busy waits for one, and is **late** once its dispatch is more than
  ``late_after_s`` (default: one arrival interval) behind its intended start;
* when ``max_backlog`` arrivals are already waiting, a new arrival is **dropped** (counted, never
  sent) — so a run's memory and duration stay bounded however slow the server is;
* **latency = completion − intended start** (the user's view, queueing included); the
  service time (completion − dispatch) and the lateness are reported beside it;
* arrivals intended during the first ``warmup_s`` are sent but not measured; after the schedule
  ends, requests still in flight get ``drain_s`` to finish and are then counted as unfinished.

Instead of a constant rate, ``schedule`` gives every arrival's intended start (seconds after the
start; a recorded log's inter-arrival times, :mod:`psra_bench.load.replay`); then each arrival's
request is drawn before the backlog check, so a dropped arrival drops its own request, and
``timeline_bucket_s`` counts the requests sent per endpoint and bucket of dispatch time.
``remote`` allows a target that is not on this machine (``psra-bench load --url``).

The generator's own CPU use is measured: above ~90 % of a core it is flagged as saturated,
because then lateness is the generator's, not the server's. It uses gevent and geventhttpclient
(Locust's own client stack) without monkey-patching; ``python -m psra_bench.load.open_model`` runs it
as a separate process, which is how :mod:`psra_bench.load.experiment` uses it. The server's operator
token, which the cross-tenant requests of the mix send, comes from ``PSRA_ADMIN_TOKEN`` in its
environment (never from the command line, which other users of the machine can read).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import resource
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from psra_bench.exceptions import ConfigError, ParameterError
from psra_bench.load.request_mix import KIND_WEIGHTS, RequestSpec, Workload
from psra_bench.measure.hdr import HistogramSet, LatencyHistogram
from psra_bench.settings import admin_token_from_env

__all__ = [
    "SATURATION_CORES",
    "LOOPBACK_HOSTS",
    "OpenLoadConfig",
    "check_loopback_url",
    "check_target_url",
    "workload_source",
    "run_open_load",
    "main",
]

#: CPU use (in cores) of one load-generator process above which it is flagged as saturated.
SATURATION_CORES = 0.9
#: Hosts the load tests may send traffic to.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

RequestSource = Callable[[random.Random], RequestSpec]
#: Told of each submitted job: ``on_job(job_id, tenant)`` (the tenant whose header submitted it, or None).
JobCallback = Callable[[str, str | None], None]


def check_loopback_url(url: str, name: str = "base_url") -> tuple[str, int]:
    """Host and port of an ``http://`` URL on this machine; anything else is a ParameterError."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ParameterError(name, url, "an http:// URL on 127.0.0.1 with a port") from e
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS or port is None:
        raise ParameterError(
            name,
            url,
            "an http:// URL on 127.0.0.1 (or localhost) with a port; load tests only send traffic to this machine",
        )
    return str(parts.hostname), int(port)


def check_target_url(url: str, name: str = "url") -> str:
    """An ``http(s)://host[:port]`` base URL of an API anywhere (``psra-bench load --url``); else a ParameterError."""
    allowed = "an http:// or https:// base URL with a host, such as https://psra.example.com"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except (ValueError, TypeError) as e:
        raise ParameterError(name, url, allowed) from e
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ParameterError(name, url, allowed)
    return url.rstrip("/")


def _positive(name: str, value: Any, *, integer: bool = False, zero: bool = False) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        what = "a whole number" if integer else "a number"
        raise ParameterError(name, value, f"{what} {'>=' if zero else '>'} 0")


@dataclass(frozen=True)
class OpenLoadConfig:
    """One constant-arrival-rate run: where, how fast, how long, and its bounds."""

    base_url: str
    rate: float
    duration_s: float
    warmup_s: float = 0.0
    max_in_flight: int = 64
    #: Arrivals allowed to wait for a connection before new ones are dropped (default: 1 s of arrivals).
    max_backlog: int | None = None
    #: Lateness above which a dispatch counts as late (default: one arrival interval, at least 1 ms).
    late_after_s: float | None = None
    timeout_s: float = 10.0
    #: How long requests still in flight after the schedule may take to finish (default: timeout_s).
    drain_s: float | None = None
    tenants: int = 200
    seed: int = 42
    max_requests: int = 1_000_000
    #: The server's operator token for the cross-tenant requests of the mix (a secret: not in repr or results).
    admin_token: str | None = field(default=None, repr=False)
    #: Intended starts (seconds after the start, ascending) replacing rate × duration; not in the result.
    schedule: tuple[float, ...] | None = field(default=None, repr=False)
    #: Count requests sent per endpoint and bucket of this many seconds of dispatch time (None: no timeline).
    timeline_bucket_s: float | None = None
    #: The target may be anywhere (an http(s):// URL an operator gave), not only on this machine.
    remote: bool = False

    def __post_init__(self) -> None:
        if self.remote:
            check_target_url(self.base_url, "base_url")
        else:
            check_loopback_url(self.base_url)
        _positive("rate", self.rate)
        _positive("duration_s", self.duration_s)
        _positive("warmup_s", self.warmup_s, zero=True)
        _positive("max_in_flight", self.max_in_flight, integer=True)
        _positive("timeout_s", self.timeout_s)
        _positive("max_requests", self.max_requests, integer=True)
        if self.max_backlog is not None:
            _positive("max_backlog", self.max_backlog, integer=True, zero=True)
        if self.late_after_s is not None:
            _positive("late_after_s", self.late_after_s)
        if self.drain_s is not None:
            _positive("drain_s", self.drain_s, zero=True)
        if self.warmup_s >= self.duration_s:
            raise ParameterError("warmup_s", self.warmup_s, f"less than duration_s ({self.duration_s})")
        if self.timeline_bucket_s is not None:
            _positive("timeline_bucket_s", self.timeline_bucket_s)
        if self.schedule is not None:
            s = self.schedule
            ok = (
                bool(s)
                and all(math.isfinite(x) and x >= 0 for x in s)
                and all(a <= b for a, b in zip(s, s[1:], strict=False))
            )
            if not ok:
                raise ParameterError("schedule", f"<{len(s)} times>", "ascending start offsets >= 0 (at least one)")

    @property
    def interval_s(self) -> float:
        """Time between two intended starts."""
        return 1.0 / self.rate

    @property
    def scheduled(self) -> int:
        """Arrivals on the schedule (its length, or rate × duration; capped by max_requests)."""
        planned = len(self.schedule) if self.schedule is not None else int(self.rate * self.duration_s)
        return min(planned, self.max_requests)

    def resolved(self) -> dict[str, Any]:
        """The configuration with every default filled in (for the result)."""
        plain = {k: v for k, v in asdict(self).items() if k not in ("admin_token", "schedule")}
        return plain | {
            "operator_auth": self.admin_token is not None,
            "max_backlog": self.backlog,
            "late_after_s": self.late_threshold_s,
            "drain_s": self.drain_s if self.drain_s is not None else self.timeout_s,
            "scheduled": self.scheduled,
        }

    @property
    def backlog(self) -> int:
        """The effective max_backlog."""
        return self.max_backlog if self.max_backlog is not None else max(self.max_in_flight, int(self.rate))

    @property
    def late_threshold_s(self) -> float:
        """The effective late_after_s."""
        return self.late_after_s if self.late_after_s is not None else max(self.interval_s, 0.001)


def workload_source(
    tenants: int = 200, seed: int = 42, admin_token: str | None = None
) -> tuple[RequestSource, JobCallback]:
    """The API mix of :class:`Workload` as a request source, plus a callback fed with submitted jobs.

    Job status polls (as the submitting tenant) arrive at twice the rate of job submissions once
    job ids are known; ``admin_token`` is sent on the cross-tenant requests.
    """
    workload = Workload(tenants=tenants, seed=seed, admin_token=admin_token)
    jobs: deque[tuple[str, str | None]] = deque(maxlen=200)
    total = sum(KIND_WEIGHTS.values())
    poll_share = 2 * KIND_WEIGHTS["job_submit"] / (total + 2 * KIND_WEIGHTS["job_submit"])

    def source(rng: random.Random) -> RequestSpec:
        if jobs and rng.random() < poll_share:
            return Workload.job_status(*rng.choice(jobs))
        return workload.draw(rng)

    def on_job(job_id: str, tenant: str | None) -> None:
        jobs.append((job_id, tenant))

    return source, on_job


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class _Run:
    """State of one open-model run (gevent greenlets share it without locks)."""

    def __init__(self, config: OpenLoadConfig, on_job: JobCallback | None) -> None:
        self.config = config
        self.on_job = on_job
        self.latency = HistogramSet()
        self.service = HistogramSet()
        self.lateness = LatencyHistogram()
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.waiting = 0
        self.measure_from = 0.0
        self.first_dispatch: float | None = None
        self.last_dispatch = 0.0
        self.t0 = 0.0
        #: (bucket of dispatch time, endpoint) -> requests sent; (endpoint) -> arrivals dropped.
        self.timeline: Counter[tuple[int, str]] = Counter()
        self.dropped_by_name: Counter[str] = Counter()

    def one(self, client: Any, slots: Any, spec: RequestSpec, intended: float) -> None:
        """Wait for a connection, send ``spec``, record latency from ``intended``."""
        import gevent

        self.waiting += 1
        slots.acquire()
        self.waiting -= 1
        try:
            dispatched = time.perf_counter()
            self.first_dispatch = dispatched if self.first_dispatch is None else self.first_dispatch
            self.last_dispatch = dispatched
            self.counts["sent"] += 1
            if self.config.timeline_bucket_s is not None:
                self.timeline[(int((dispatched - self.t0) // self.config.timeline_bucket_s), spec.name)] += 1
            late = dispatched - intended
            measured = intended >= self.measure_from
            if measured:
                self.lateness.record_us(max(0.0, late) * 1e6)
                if late > self.config.late_threshold_s:
                    self.counts["late"] += 1
            ok, body = False, b""
            try:
                headers = dict(spec.headers)
                payload = b""
                if spec.json is not None:
                    payload = json.dumps(spec.json).encode()
                    headers["Content-Type"] = "application/json"
                with gevent.Timeout(self.config.timeout_s):
                    resp = client.request(spec.method, spec.path, body=payload, headers=headers)
                    body = resp.read()
                    resp.release()
                ok = resp.status_code < 400
                if not ok:
                    self.errors[f"HTTP {resp.status_code}"] += 1
            except gevent.GreenletExit:
                raise
            except (Exception, gevent.Timeout) as e:  # gevent.Timeout is a BaseException; Ctrl-C is not an error
                self.errors[type(e).__name__] += 1
            done = time.perf_counter()
        finally:
            slots.release()
        self.counts["completed"] += 1
        self.counts["ok" if ok else "failed"] += 1
        if measured:
            self.latency.record(spec.name, (done - intended) * 1e6, ok)
            self.service.record(spec.name, (done - dispatched) * 1e6, ok)
        else:
            self.counts["warmup"] += 1
        if ok and spec.kind == "job_submit" and self.on_job is not None:
            try:
                self.on_job(str(json.loads(body)["job_id"]), spec.headers.get("X-Tenant-ID"))
            except (ValueError, KeyError, TypeError):
                pass


def run_open_load(
    config: OpenLoadConfig, source: RequestSource | None = None, *, on_job: JobCallback | None = None
) -> dict[str, Any]:
    """Run one constant-arrival-rate test; return counts, latency summaries and encoded histograms."""
    import gevent
    import gevent.lock
    import gevent.pool
    from geventhttpclient import HTTPClient

    if source is None:
        source, on_job = workload_source(config.tenants, config.seed, config.admin_token)
    rng = random.Random(config.seed)
    run = _Run(config, on_job)
    timeout = config.timeout_s
    if config.remote:
        client = HTTPClient.from_url(
            config.base_url, concurrency=config.max_in_flight, connection_timeout=timeout, network_timeout=timeout
        )
    else:
        host, port = check_loopback_url(config.base_url)
        client = HTTPClient(
            host, port=port, concurrency=config.max_in_flight, connection_timeout=timeout, network_timeout=timeout
        )
    prefix = urlsplit(config.base_url).path.rstrip("/") if config.remote else ""
    slots = gevent.lock.BoundedSemaphore(config.max_in_flight)
    group = gevent.pool.Group()
    gevent.get_hub().loop.update_now()
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    t0 = run.t0 = wall0 + 0.05
    epoch0 = time.time() + (t0 - time.perf_counter())
    run.measure_from = t0 + config.warmup_s
    interval = config.interval_s
    schedule = config.schedule
    try:
        for i in range(config.scheduled):
            intended = t0 + (schedule[i] if schedule is not None else i * interval)
            delay = intended - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
            run.counts["scheduled"] += 1
            if intended >= run.measure_from:
                run.counts["arrivals_measured"] += 1
            spec = source(rng) if schedule is not None else None  # a scheduled arrival drops its own request
            if run.waiting >= config.backlog:
                run.counts["dropped"] += 1
                if spec is not None:
                    run.dropped_by_name[spec.name] += 1
                continue
            spec = spec if spec is not None else source(rng)
            if prefix:
                spec = dataclasses.replace(spec, path=prefix + spec.path)
            group.spawn(run.one, client, slots, spec, intended)
        schedule_end = time.perf_counter()
        group.join(timeout=config.drain_s if config.drain_s is not None else config.timeout_s)
        run.counts["unfinished"] = len(group)
        group.kill(block=True, timeout=5)
    finally:
        client.close()
    wall = time.perf_counter() - wall0
    cpu = _cpu_seconds() - cpu0
    out = _result(config, run, wall, cpu, schedule_end - t0)
    if config.timeline_bucket_s is not None:
        sent: dict[str, dict[str, int]] = {}
        for (bucket, name), n in sorted(run.timeline.items()):
            sent.setdefault(name, {})[str(bucket)] = n
        out["timeline"] = {"bucket_s": config.timeline_bucket_s, "sent": sent}
    if schedule is not None:
        out["dropped_by_endpoint"] = dict(run.dropped_by_name)
    out |= {"started_at": epoch0, "measure_from": epoch0 + config.warmup_s, "ended_at": epoch0 + config.duration_s}
    return out


def _result(config: OpenLoadConfig, run: _Run, wall: float, cpu: float, schedule_s: float) -> dict[str, Any]:
    c = run.counts
    window = max(1e-9, config.duration_s - config.warmup_s)
    measured = c["arrivals_measured"]
    span = (run.last_dispatch - run.first_dispatch) if run.first_dispatch is not None else 0.0
    cores = cpu / wall if wall > 0 else 0.0
    latency = run.latency.summary(window)
    achieved = c["sent"] / max(span, 1e-9) if c["sent"] > 1 else 0.0
    return {
        "model": "open",
        "config": config.resolved(),
        "scheduled": c["scheduled"],
        "sent": c["sent"],
        "completed": c["completed"],
        "ok": c["ok"],
        "failed": c["failed"],
        "late": c["late"],
        "dropped": c["dropped"],
        "unfinished": c["unfinished"],
        "warmup_requests": c["warmup"],
        "measured_arrivals": measured,
        "late_fraction": c["late"] / measured if measured else 0.0,
        "drop_fraction": c["dropped"] / c["scheduled"] if c["scheduled"] else 0.0,
        "target_rps": config.rate,
        "achieved_rps": achieved,
        "completed_rps": latency["overall"]["requests"] / window,
        "schedule_s": schedule_s,
        "wall_s": wall,
        "latency": latency,
        "service": run.service.summary(window),
        "lateness": run.lateness.summary(),
        "errors": dict(run.errors.most_common(10)),
        "generator": {
            "cpu_seconds": cpu,
            "cpu_cores": cores,
            "saturated": cores > SATURATION_CORES,
            "behind_schedule": achieved < 0.95 * config.rate if c["sent"] > 1 else True,
        },
        "histograms": {"latency": run.latency.to_dict(), "service": run.service.to_dict()},
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m psra_bench.load.open_model",
        description="Constant-arrival-rate load on the PSRA API (open model).",
    )
    p.add_argument("--url", required=True, help="Base URL of the API, e.g. http://127.0.0.1:8000")
    p.add_argument("--rate", type=float, required=True, help="Arrivals per second.")
    p.add_argument("--duration", type=float, required=True, help="Seconds of arrivals.")
    p.add_argument("--warmup", type=float, default=0.0, help="First seconds sent but not measured.")
    p.add_argument("--max-in-flight", type=int, default=64)
    p.add_argument("--max-backlog", type=int, default=None)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--tenants", type=int, default=200)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="", help="Write the JSON result here (default: print a summary).")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: run one open-model test and write/print its result."""
    args = _parser().parse_args(argv)
    try:
        config = OpenLoadConfig(
            args.url,
            args.rate,
            args.duration,
            warmup_s=args.warmup,
            max_in_flight=args.max_in_flight,
            max_backlog=args.max_backlog,
            timeout_s=args.timeout,
            tenants=args.tenants,
            seed=args.seed,
            admin_token=admin_token_from_env(),
        )
        result = run_open_load(config)
    except (ParameterError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result))
    o = result["latency"]["overall"]
    print(
        f"open model: {result['sent']}/{result['scheduled']} sent at {result['achieved_rps']:.1f}/s "
        f"(target {config.rate:g}/s); late {result['late']}, dropped {result['dropped']}, failed {result['failed']}; "
        f"latency from intended start p50 {o['p50_ms']} ms, p99 {o['p99_ms']} ms (n={o['n']}); "
        f"generator {result['generator']['cpu_cores']:.2f} cores"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
