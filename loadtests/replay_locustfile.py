"""Locust replay of a recorded access log (closed model), paced to the recorded arrival times.

The plan file comes from :func:`psra_bench.load.replay.load_replay` (``psra-bench load --from-log
FILE --mode closed`` writes it as ``replay_plan.json``): every recorded request in time order with
its recorded offset, path, tenant and body. Run it by hand like any locustfile:

    locust -f loadtests/replay_locustfile.py --host http://127.0.0.1:8000 --headless \\
        --psra-replay replay_plan.json --psra-replay-out replay_closed.json [--processes 2]

How the load follows the log: a ``LoadTestShape`` runs ``rate / user_rps`` users (at least one per
process), the rate being the plan's recorded rate per 10-second bucket times its speed; each
process releases its share of the arrivals (arrival i goes to partition i mod processes) as tokens
at their recorded time divided by the speed, and a user sends one request per token. So the users
pace themselves to the recorded times, and when they are all busy the tokens wait (the closed
model: a slow server slows the load down; the wait is reported as lateness). Worker processes ship
their counts and µs histograms to the master with each stats report; the master (or the single
local process) writes requests sent per endpoint and bucket of recorded time, latency histograms
per endpoint and the lateness to ``--psra-replay-out``. The plan file must be readable at the same
path on every worker (a shared disk, or one machine); their clocks must agree (NTP).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from typing import Any

import gevent
import gevent.queue
from locust import FastHttpUser, LoadTestShape, constant, events, task
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from psra_bench.load.replay import ReplaySource
from psra_bench.measure.hdr import HistogramSet, LatencyHistogram

#: Seconds between the start message and the first recorded arrival (users spawn meanwhile).
LEAD_IN_S = 1.0


class _State:
    """What this process shares between Locust's events, its dispatcher and its users."""

    options: Any = None
    plan: Any = None
    source: ReplaySource | None = None
    tokens: gevent.queue.Queue = gevent.queue.Queue()
    t0 = 0.0
    in_flight = 0
    scheduled = 0
    done = False
    # this process's records since its last report (a worker) or all of them (a local process)
    histograms = HistogramSet()
    sent: Counter[tuple[str, int]] = Counter()
    lateness = LatencyHistogram()
    # the master's merge of the workers' reports
    total_histograms = HistogramSet()
    total_sent: Counter[tuple[str, int]] = Counter()
    total_lateness = LatencyHistogram()
    total_scheduled = 0
    reporters: set[str] = set()
    done_nodes: set[str] = set()
    partitions = 1
    #: bucket of recorded time -> the most users the shape asked for in it
    users: dict[int, int] = {}


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("psra-bench replay", "replay of a recorded access log")
    group.add_argument("--psra-replay", default="", help="The replay plan (JSON) psra-bench built from the log.")
    group.add_argument("--psra-replay-out", default="", help="Write the replay result (JSON) here.")
    group.add_argument("--psra-timeout", type=float, default=30.0, help="Network timeout per request (s).")
    group.add_argument(
        "--psra-admin-token",
        default="",
        env_var="PSRA_ADMIN_TOKEN",
        help="The server's operator token (PSRA_ADMIN_TOKEN), sent on the operator routes.",
    )


def _kind(runner: Any) -> str:
    if isinstance(runner, MasterRunner):
        return "master"
    if isinstance(runner, WorkerRunner):
        return "worker"
    return "local" if isinstance(runner, LocalRunner) else "none"


def _load_plan(path: str, environment: Any) -> Any:
    if _State.plan is None:
        with open(path) as fh:
            _State.plan = json.load(fh)
        token = getattr(environment.parsed_options, "psra_admin_token", "") or None
        _State.source = ReplaySource(_State.plan, token)
    return _State.plan


def _dispatch(index: int, count: int, t0: float, path: str, environment: Any) -> None:
    """Release this partition's arrivals as tokens at their recorded time / speed; then report done."""
    plan = _load_plan(path, environment)
    _State.t0 = t0
    speed = float(plan["speed"])
    arrivals = plan["arrivals"]
    for i in range(index, len(arrivals), count):
        intended = t0 + arrivals[i][0] / speed
        delay = intended - time.time()
        if delay > 0:
            gevent.sleep(delay)
        _State.tokens.put((i, intended))
        _State.scheduled += 1
    deadline = time.time() + 2 * _State.options.psra_timeout + 5
    while (not _State.tokens.empty() or _State.in_flight) and time.time() < deadline:
        gevent.sleep(0.05)
    _State.done = True
    if _kind(environment.runner) == "worker":
        environment.runner.send_message("psra_replay_done", {"scheduled": _State.scheduled})


def _on_start(environment: Any, msg: Any, **kwargs: Any) -> None:
    d = msg.data
    gevent.spawn(_dispatch, int(d["index"]), int(d["count"]), float(d["t0"]), str(d["plan"]), environment)


class ReplayShape(LoadTestShape):
    """Users in proportion to the recorded rate (per 10-s bucket, times the speed); ends when every arrival was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.started = False

    def _start(self) -> None:
        runner: Any = self.runner
        path = _State.options.psra_replay
        plan = _load_plan(path, runner.environment)
        _State.t0 = time.time() + LEAD_IN_S
        if _kind(runner) == "master":
            nodes = sorted(node.id for node in runner.clients.values())
            _State.partitions = max(1, len(nodes))
            for k, node in enumerate(nodes):
                data = {"index": k, "count": len(nodes), "t0": _State.t0, "plan": path}
                runner.send_message("psra_replay_start", data, client_id=node)
        else:
            gevent.spawn(_dispatch, 0, 1, _State.t0, path, runner.environment)
        speed, bucket = float(plan["speed"]), float(plan["bucket_s"])
        per = Counter(int(a[0] // bucket) for a in plan["arrivals"])
        self.rates = [per.get(b, 0) / bucket * speed for b in range(int(plan["buckets"]) + 1)]
        self.end = _State.t0 + (plan["arrivals"][-1][0] / speed if plan["arrivals"] else 0.0)
        self.started = True

    def _finished(self) -> bool:
        if _kind(self.runner) == "master":
            return len(_State.done_nodes) >= _State.partitions
        return _State.done

    def tick(self) -> tuple[int, float] | None:
        """Users for the current bucket of recorded time (looking one bucket ahead); None when all were sent."""
        if not self.started:
            self._start()
        now = time.time()
        if self._finished() or now > self.end + 2 * _State.options.psra_timeout + 10:
            return None
        plan = _State.plan
        b = int(max(0.0, now - _State.t0) * float(plan["speed"]) // float(plan["bucket_s"]))
        rate = max(self.rates[min(b, len(self.rates) - 1) : b + 2] or [0.0])
        users = max(_State.partitions, math.ceil(rate / float(plan["user_rps"])))
        _State.users[b] = max(users, _State.users.get(b, 0))
        return users, 1000.0


@events.init.add_listener
def _init(environment: Any, runner: Any, **kwargs: Any) -> None:
    opts = environment.parsed_options
    _State.options = opts
    kind = _kind(runner)
    ReplayUser.network_timeout = opts.psra_timeout
    # Users that the shape stops finish the request they hold a token for.
    environment.stop_timeout = opts.psra_timeout + 1
    if kind in ("local", "master"):
        if not opts.psra_replay:
            raise SystemExit("--psra-replay is required: the replay plan psra-bench built from the log")
        environment.shape_class = ReplayShape()
        environment.shape_class.runner = runner
    if kind == "worker":
        runner.register_message("psra_replay_start", _on_start)

        @events.report_to_master.add_listener
        def _report(client_id: str, data: dict[str, Any]) -> None:
            data["psra_replay"] = {
                "histograms": _State.histograms.to_dict(),
                "sent": [[name, b, n] for (name, b), n in _State.sent.items()],
                "lateness": _State.lateness.encode() if _State.lateness.count else None,
                "scheduled": _State.scheduled,
            }
            _State.histograms, _State.sent, _State.lateness = HistogramSet(), Counter(), LatencyHistogram()

    if kind == "master":
        scheduled: dict[str, int] = {}

        def _done(environment: Any, msg: Any, **kw: Any) -> None:
            _State.done_nodes.add(msg.node_id)

        runner.register_message("psra_replay_done", _done)

        @events.worker_report.add_listener
        def _merge(client_id: str, data: dict[str, Any]) -> None:
            delta = data.get("psra_replay")
            if delta is None:
                return
            _State.reporters.add(client_id)
            _State.total_histograms.merge(HistogramSet.from_dict(delta["histograms"]))
            for name, b, n in delta["sent"]:
                _State.total_sent[(name, int(b))] += int(n)
            if delta["lateness"]:
                _State.total_lateness.merge(LatencyHistogram.decode(delta["lateness"]))
            scheduled[client_id] = int(delta["scheduled"])
            _State.total_scheduled = sum(scheduled.values())


def _write(environment: Any) -> None:
    opts = _State.options
    kind = _kind(environment.runner)
    if opts is None or not opts.psra_replay_out or kind not in ("local", "master"):
        return
    if kind == "local":
        hists, sent, lateness, scheduled = _State.histograms, _State.sent, _State.lateness, _State.scheduled
    else:
        hists, sent, lateness = _State.total_histograms, _State.total_sent, _State.total_lateness
        scheduled = _State.total_scheduled
    by_name: dict[str, dict[str, int]] = {}
    for (name, b), n in sorted(sent.items()):
        by_name.setdefault(name, {})[str(b)] = n
    doc = {
        "model": "closed",
        "runner": kind,
        "workers_reporting": len(_State.reporters),
        "partitions": _State.partitions,
        "arrivals": len(_State.plan["arrivals"]) if _State.plan else 0,
        "scheduled": scheduled,
        "sent_total": sum(sent.values()),
        "sent": by_name,
        "histograms": hists.to_dict(),
        "lateness": lateness.summary(),
        "users": {str(b): n for b, n in sorted(_State.users.items())},
    }
    tmp = opts.psra_replay_out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh)
    import os

    os.replace(tmp, opts.psra_replay_out)


@events.test_stop.add_listener
def _test_stop(environment: Any, **kwargs: Any) -> None:
    _write(environment)


@events.quitting.add_listener
def _quitting(environment: Any, **kwargs: Any) -> None:
    _write(environment)


@events.request.add_listener
def _on_request(request_type: str, name: str, response_time: float, exception: Any = None, **kwargs: Any) -> None:
    _State.histograms.record(f"{request_type} {name}", response_time * 1000.0, exception is None)


class ReplayUser(FastHttpUser):
    """Takes the next token of its process's schedule and sends that recorded request."""

    wait_time = constant(0)
    network_timeout = 30.0
    connection_timeout = 10.0

    @task
    def replay_one(self) -> None:
        """One recorded request, at (or, when every user was busy, after) its recorded time."""
        try:  # a user idle for a while ends its task, so one the shape stops goes without waiting for a token
            index, intended = _State.tokens.get(timeout=0.5)
        except gevent.queue.Empty:
            return
        _State.in_flight += 1
        try:
            assert _State.source is not None and _State.plan is not None
            spec = _State.source.spec(index)
            dispatched = time.time()
            bucket = int((dispatched - _State.t0) * float(_State.plan["speed"]) // float(_State.plan["bucket_s"]))
            _State.sent[(spec.name, bucket)] += 1
            _State.lateness.record_us(max(0.0, dispatched - intended) * 1e6)
            resp = self.client.request(
                spec.method, spec.path, name=spec.name.split(" ", 1)[1], headers=dict(spec.headers), json=spec.json
            )
            if spec.kind == "job_submit" and resp.status_code == 202:
                try:
                    _State.source.on_job(str(resp.json()["job_id"]), spec.headers.get("X-Tenant-ID"))
                except (ValueError, KeyError, TypeError):
                    pass
        finally:
            _State.in_flight -= 1
