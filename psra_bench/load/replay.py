"""Replay a recorded log (:mod:`psra_bench.load.fromlog`) against the API, open or closed model, and compare.

:func:`load_replay` reads the log and builds a :class:`ReplayPlan`: the recorded requests in time
order, each with its own template, path, tenant and (for an assessment) a body from the request
mix's pool of valid products. :func:`run_replay` sends it either

* ``open``: the recorded inter-arrival times divided by ``speed`` through the open-model driver
  (:func:`psra_bench.load.open_model.run_open_load` with a schedule), latency from the intended start; or
* ``closed``: Locust (``loadtests/replay_locustfile.py``, local or with worker processes) whose
  ``LoadTestShape`` runs users in proportion to the recorded rate and whose users take their
  requests from a token schedule at the recorded times, so they pace themselves to the log;

and writes ``04_load_replay.json`` whose ``replay`` object compares recorded and replayed shares
per endpoint and rates per 10-second bucket of *recorded* time (at ``speed`` 2 the requests go
twice as fast in wall time and are still counted on the recorded scale), with p50/p95/p99 and n per
endpoint. A request is counted in the bucket of its actual dispatch time.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from psra_bench.db.seed import tenant_ids
from psra_bench.exceptions import MeasurementError
from psra_bench.load.fromlog import BUCKET_S, RecordedLog, api_routes, read_log, shares
from psra_bench.load.request_mix import RequestSpec
from psra_bench.paramspec import ParamModel, param
from psra_bench.results import EndpointLatency, LogCapacity, ReplayComparison, ReplayResult

if TYPE_CHECKING:
    from psra_bench.load.generators import LoadPlan

__all__ = [
    "ReplayParams",
    "ReplayPlan",
    "ReplaySource",
    "load_replay",
    "log_capacity",
    "run_replay",
    "replay_summary",
    "plot_replay_rates",
]

#: The POST routes whose body is an assessment (the mix's pool of valid products); the value wraps it.
_BODIES = {
    "POST /api/assessments": None,
    "POST /api/jobs/assessment/submit": None,
    "POST /api/jobs/submit": "assessment",
}
#: Routes whose answer names a job that later status and cancel requests of the log refer to.
_SUBMITS = frozenset({"POST /api/jobs/assessment/submit", "POST /api/jobs/submit"})


class ReplayParams(ParamModel):
    """``psra-bench load --from-log``: how a recorded log is read and replayed."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    log_format: str = param(
        "combined", "the log's format: combined, jsonl or har", allowed="combined, jsonl or har",
        pattern=r"^(combined|jsonl|har)$",
    )  # fmt: skip
    speed: float = param(
        1.0, "replay this many times faster than recorded", allowed="a number > 0, at most 1000", gt=0, le=1000,
        allow_inf_nan=False,
    )  # fmt: skip
    mode: str = param(
        "open", "open: the recorded arrival times; closed: Locust users following the recorded rate",
        allowed="open or closed", pattern=r"^(open|closed)$",
    )  # fmt: skip
    processes: int = param(1, "closed model: Locust worker processes (1: one local process)",
                           allowed="a whole number from 1 to 64", ge=1, le=64)  # fmt: skip
    user_rps: float = param(2.0, "closed model: requests per second one user is expected to send at most",
                            allowed="a number > 0", gt=0, allow_inf_nan=False)  # fmt: skip
    max_in_flight: int = param(64, "open model: requests on the wire at most", allowed="a whole number >= 1", ge=1)
    timeout_s: float = param(10.0, "network timeout per request (s)", allowed="a number > 0", gt=0, le=600)
    tenants: int = param(200, "seeded tenants (for a request without one in the log)", allowed="a whole number >= 1",
                         ge=1)  # fmt: skip
    seed: int = param(42, "seed of the drawn tenants and assessment bodies", allowed="a whole number >= 0", ge=0)


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay sends: one arrival per recorded request (recorded offset, request), and the recorded log."""

    log: RecordedLog
    params: ReplayParams
    #: [offset_s (recorded), method, path, name, tenant, body index (-1: none), operator, job id or "", kind]
    arrivals: list[list[Any]]
    bodies: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """The plan file a Locust process reads (no secrets: the operator token travels separately)."""
        return {
            "version": 1,
            "speed": self.params.speed,
            "bucket_s": BUCKET_S,
            "buckets": self.log.buckets(),
            "user_rps": self.params.user_rps,
            "arrivals": self.arrivals,
            "bodies": self.bodies,
        }


def load_replay(path: str | Path, params: ReplayParams) -> ReplayPlan:
    """Read the log at ``path`` and build its replay; ParameterError (one sentence) when nothing is replayable."""
    log = read_log(path, params.log_format)
    routes = {r.name: r for r in api_routes()}
    rng = random.Random(params.seed)
    values = log.parameter_values().get("tenant", Counter())
    pool = list(values)
    weights = [values[t] for t in pool]
    seeded = tenant_ids(params.tenants)
    workload = None
    if any(r.name in _BODIES for r in log.requests):
        from psra_bench.load.request_mix import Workload

        workload = Workload(tenants=params.tenants, seed=params.seed, products=100)
    bodies: list[dict[str, Any]] = []
    arrivals: list[list[Any]] = []
    for rec in log.requests:
        route = routes[rec.name]
        tenant = rec.tenant
        if tenant is None and (route.tenant_header or rec.name in _BODIES):
            # The log's own tenants (combined format has no header), else a seeded one.
            tenant = rng.choices(pool, weights)[0] if pool else rng.choice(seeded)
        body_index = -1
        if workload is not None and rec.name in _BODIES:
            body: dict[str, Any] = workload.assessment_body(rng, tenant or rng.choice(seeded))
            tenant = body["tenant_id"]
            wrap = _BODIES[rec.name]
            bodies.append({"job_type": wrap, "payload": body} if wrap else body)
            body_index = len(bodies) - 1
        kind = "job_submit" if rec.name in _SUBMITS else "replay"
        arrivals.append(
            [rec.t - log.start, rec.method, rec.path, rec.name, tenant, body_index, route.operator,
             rec.params.get("job_id", ""), kind]
        )  # fmt: skip
    return ReplayPlan(log, params, arrivals, bodies)


class ReplaySource:
    """Turns the plan's arrivals into requests.

    A job id the log names cannot exist here: a status or cancel request asks for a job this replay
    submitted instead, as the tenant that submitted it (that tenant's latest job, else the latest
    job of any tenant); before any job was submitted it goes out as recorded (and gets a 404).
    """

    def __init__(self, plan: Mapping[str, Any], admin_token: str | None = None) -> None:
        self.arrivals = plan["arrivals"]
        self.bodies = plan["bodies"]
        self._operator = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self._jobs: dict[str | None, tuple[str, str | None]] = {}

    def spec(self, index: int) -> RequestSpec:
        """The request of arrival ``index``."""
        _, method, path, name, tenant, body, operator, job_id, kind = self.arrivals[index]
        if job_id:
            mine = self._jobs.get(tenant) or self._jobs.get(None)
            if mine:
                path = path.replace(f"/jobs/{job_id}/", f"/jobs/{mine[0]}/", 1)
                tenant = mine[1]
        headers: dict[str, str] = {"X-Tenant-ID": tenant} if tenant else {}
        if operator:
            headers |= self._operator
        return RequestSpec(kind, method, path, name, headers, self.bodies[body] if body >= 0 else None)

    def on_job(self, job_id: str, tenant: str | None) -> None:
        """A job this replay submitted as ``tenant``: later status/cancel requests ask for it."""
        self._jobs[tenant] = self._jobs[None] = (job_id, tenant)


def replay_summary(
    log: RecordedLog,
    sent: Mapping[str, Mapping[str, int]],
    latency: Mapping[str, Mapping[str, Any]],
    *,
    speed: float,
    mode: str,
    lateness: Mapping[str, Any] | None = None,
) -> ReplayComparison:
    """The ``replay`` object: recorded vs replayed share and rate per recorded bucket, unmatched, latency per endpoint.

    ``sent``: endpoint -> {recorded bucket: requests sent in it}; ``latency``: endpoint -> summary (ms, n);
    ``lateness``: how far behind its intended start each request was sent (a summary in ms).
    """
    per_name = Counter({name: sum(b.values()) for name, b in sent.items()})
    per_bucket: Counter[int] = Counter()
    for buckets in sent.values():
        for b, n in buckets.items():
            per_bucket[int(b)] += n
    n_buckets = max(log.buckets(), max(per_bucket, default=0) + 1)
    recorded_rate = log.rate() + [0.0] * (n_buckets - log.buckets())
    endpoints: dict[str, EndpointLatency] = {}
    for name in sorted(set(log.counts()) | set(latency)):
        s = latency.get(name, {})
        endpoints[name] = EndpointLatency(
            n=s.get("n", 0), failures=s.get("failures", 0), p50_ms=s.get("p50_ms"), p95_ms=s.get("p95_ms"),
            p99_ms=s.get("p99_ms"),
        )  # fmt: skip
    return {
        "mode": mode,
        "speed": speed,
        "bucket_s": BUCKET_S,
        "recorded_requests": len(log.requests),
        "replayed_requests": sum(per_name.values()),
        "recorded_share": log.shares(),
        "replayed_share": shares(per_name),
        "recorded_rate": recorded_rate,
        "replayed_rate": [per_bucket.get(b, 0) / BUCKET_S for b in range(n_buckets)],
        "unmatched": dict(log.unmatched.most_common()),
        "endpoints": endpoints,
        "lateness": dict(lateness) if lateness else None,
        "log": log.summary(),
    }


def _recorded_buckets(timeline: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """{endpoint: {bucket: n}} with bucket indices as strings (already on the recorded scale)."""
    return {name: {str(int(b)): int(n) for b, n in per.items()} for name, per in timeline.items()}


def _run_open(url: str, plan: ReplayPlan, admin_token: str | None, remote: bool) -> dict[str, Any]:
    """The open-model replay: every arrival at its recorded offset / speed, latency from the intended start."""
    from psra_bench.load.open_model import OpenLoadConfig, run_open_load

    p = plan.params
    schedule = tuple(a[0] / p.speed for a in plan.arrivals)
    duration = max(schedule[-1], 1e-3) + 1e-3
    config = OpenLoadConfig(
        url,
        rate=len(schedule) / duration,
        duration_s=duration,
        max_in_flight=p.max_in_flight,
        timeout_s=p.timeout_s,
        tenants=p.tenants,
        seed=p.seed,
        admin_token=admin_token,
        schedule=schedule,
        timeline_bucket_s=BUCKET_S / p.speed,
        remote=remote,
    )
    source = ReplaySource(plan.to_dict(), admin_token)
    counter = iter(range(len(schedule)))
    result = run_open_load(config, lambda rng: source.spec(next(counter)), on_job=source.on_job)
    result.pop("histograms", None)
    result["config"].pop("admin_token", None)
    return {
        "sent": _recorded_buckets(result["timeline"]["sent"]),
        "latency": result["latency"]["endpoints"],
        "lateness": result["lateness"],
        "run": {k: v for k, v in result.items() if k not in ("timeline",)},
    }


def _run_closed(url: str, plan: ReplayPlan, out: Path, admin_token: str | None, remote: bool) -> dict[str, Any]:
    """The closed-model replay: Locust with the replay locustfile (and worker processes when asked)."""
    from psra_bench.load.generators import GeneratorProcess, _run
    from psra_bench.load.open_model import check_loopback_url, check_target_url
    from psra_bench.resources import shipped_file

    if remote:
        check_target_url(url)
    else:
        check_loopback_url(url)
    p = plan.params
    plan_file, result_file = out / "replay_plan.json", out / "replay_closed.json"
    plan_file.write_text(json.dumps(plan.to_dict()))
    result_file.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "locust", "-f", str(shipped_file("loadtests/replay_locustfile.py")), "--host", url,
        "--headless", "--only-summary", "--loglevel", "INFO", "--exit-code-on-error", "0",
        "--psra-replay", str(plan_file), "--psra-replay-out", str(result_file), "--psra-timeout", f"{p.timeout_s:g}",
    ]  # fmt: skip
    if p.processes > 1:
        cmd += ["--processes", str(p.processes)]
    wall = plan.arrivals[-1][0] / p.speed
    code = _run(cmd, out / "replay_locust.log", wall + 2 * p.timeout_s + 120, GeneratorProcess(), admin_token)
    if not result_file.exists():
        from psra_bench.load.api_server import log_tail

        raise MeasurementError(
            f"Locust exited with code {code} without writing the replay result; "
            f"its log ends with:\n{log_tail(out / 'replay_locust.log')}"
        )
    doc = json.loads(result_file.read_text())
    from psra_bench.measure.hdr import HistogramSet

    latency = HistogramSet.from_dict(doc.pop("histograms")).summary()["endpoints"]
    sent = _recorded_buckets(doc.pop("sent"))
    return {"sent": sent, "latency": latency, "lateness": doc.get("lateness"), "run": doc | {"exit_code": code}}


def log_capacity(
    url: str, plan: ReplayPlan, load: LoadPlan, out: Path, admin_token: str | None, remote: bool
) -> LogCapacity:
    """Users supported at the log's own mix: a Locust capacity search whose users draw the log's requests.

    Each user picks one of the recorded requests at random for each task (so the endpoints come in
    the log's proportions, with the log's paths and tenants) and thinks between tasks as in the
    synthetic load; the search is :mod:`psra_bench.load.capacity`'s (grid, bisection to 10 %, the
    low end measured twice). Returns ``capacity`` (the bracket) and each step's summary with the
    load generator's CPU.
    """
    from psra_bench.load.capacity import capacity
    from psra_bench.load.generators import GeneratorProcess, run_locust
    from psra_bench.load.results import generator_flags
    from psra_bench.measure.procmon import ProcessMonitor, process_tree

    if not load.search:
        raise MeasurementError("the capacity at a log's mix is a capacity search: make its LoadPlan with search=True")
    mix = out / "replay_plan.json"
    mix.write_text(json.dumps(plan.to_dict()))
    generator = GeneratorProcess()
    monitor = ProcessMonitor({"generator": lambda: process_tree(generator.pid)})
    monitor.start()
    try:
        closed = run_locust(
            url, load, out / "capacity", stop_p95_ms=load.slo_p95_ms * 3, generator=generator,
            admin_token=admin_token, remote=remote, mix_file=mix,
        )  # fmt: skip
    finally:
        monitor.stop()
    steps = closed["steps"]
    for st in steps:
        st["generator"] = generator_flags(monitor.window(st["measure_from"] or 0, st["ended_at"] or 0))
    return {
        "capacity": capacity(steps, load.search_plan),
        "steps": steps,
        "parameters": {
            "users": load.users, "grid": list(load.steps), "slo_p95_ms": load.slo_p95_ms,
            "duration_s": load.duration_s, "short_step_s": load.search_plan.short_s, "spawn_rate": load.spawn_rate,
            "think_s": list(load.think_s),
        },
        "locust": {k: closed[k] for k in ("exit_code", "locust_requests", "locust_failures", "recorded_requests")},
    }  # fmt: skip


def run_replay(
    plan: ReplayPlan,
    output_dir: str | Path,
    *,
    url: str | None = None,
    settings: Any = None,
    admin_token: str | None = None,
    capacity: LoadPlan | None = None,
    configuration: str | None = None,
) -> ReplayResult:
    """Replay ``plan`` against ``url`` (an API anywhere) or an API started here on ``settings``; save and return it.

    Without ``url`` the API is started on ``settings``' database (a copy the caller prepared, e.g.
    :func:`psra_bench.load.experiment.run_log_replay`) with a fresh operator token, and stopped at
    the end. With ``capacity`` (a search plan) the same API then gets :func:`log_capacity`.
    ``configuration`` names the API's setup in the result. Saved as ``04_load_replay.json``.
    """
    from psra_bench.load.api_server import start_api_server, stop_api_server
    from psra_bench.settings import redact
    from psra_bench.workbench import save_results

    out = Path(output_dir) / "04_load_replay"
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    server = None
    token: str | None
    if url is None:
        if settings is None:
            raise MeasurementError("a replay needs either --url or the settings of an API to start")
        server = start_api_server(settings, out / "server.log")
        target, token, remote = server.base_url, server.admin_token, False
    else:
        from psra_bench.load.open_model import check_target_url

        target, token, remote = check_target_url(url), admin_token, True
    searched = None
    try:
        if plan.params.mode == "open":
            ran = _run_open(target, plan, token, remote)
        else:
            ran = _run_closed(target, plan, out, token, remote)
        if capacity is not None:
            searched = log_capacity(target, plan, capacity, out, token, remote)
    finally:
        if server is not None:
            stop_api_server(server)
    p = plan.params
    replay = replay_summary(plan.log, ran["sent"], ran["latency"], speed=p.speed, mode=p.mode, lateness=ran["lateness"])
    plot_replay_rates(replay, output_dir)
    doc: ReplayResult = {
        "url": redact(url) if url else None,
        "parameters": plan.params.values() | {"bucket_s": BUCKET_S},
        "configuration": configuration,
        "replay": replay,
        "run": ran["run"],
        "capacity": searched,
        "files": {"rates_plot": str(Path(output_dir) / "04_load_replay_rates.png")},
        "started_at": started,
        "seconds": time.time() - started,
    }
    save_results(output_dir, "04_load_replay", doc)
    return doc


def plot_replay_rates(replay: Mapping[str, Any], output_dir: str | Path, filename: str = "04_load_replay_rates") -> Any:
    """The recorded and the replayed rate per bucket of recorded time, saved as ``output_dir/filename.png``."""
    from psra_bench.measure.figures import new_figure, save_figure

    bucket = float(replay["bucket_s"])
    fig = new_figure((7, 3.2))
    ax = fig.subplots()
    for key, label, style in (("recorded_rate", "recorded", "-"), ("replayed_rate", "replayed", "--")):
        rates = list(replay[key])
        xs = [i * bucket for i in range(len(rates) + 1)]
        ax.step(xs, [*rates, rates[-1] if rates else 0.0], where="post", linestyle=style, label=label)
    ax.set_xlabel("recorded time (s)")
    ax.set_ylabel("requests per second")
    ax.set_title(f"recorded vs replayed rate ({replay.get('mode', '')} model, speed {replay['speed']:g})")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, output_dir, filename, 110)
