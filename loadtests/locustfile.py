"""Locust load test of the PSRA API, with microsecond-resolution latency histograms.

Run it like any locustfile (the API must be running; see loadtests/README.md):

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000                 # web UI
    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 --headless -u 20 -r 5 -t 60s \\
        --psra-hdr-out reports/_scratch/locust_hdr.json
    locust -f loadtests/locustfile.py --host ... --headless -u 200 -r 20 -t 2m --processes 2

Every request's latency is also recorded into an HdrHistogram (µs resolution) per endpoint;
worker processes ship their histograms to the master with each stats report, and the master
(or the single local process) writes the merged result to ``--psra-hdr-out`` and prints
p50/p95/p99/p99.9 with n. ``--psra-steps 10,20,40 --psra-step-seconds 20`` runs a step load
(one measured stage per user count) instead of a constant one. ``--psra-mix PLAN`` (a replay plan
written by ``psra-bench load --from-log``) makes every user draw its requests from a recorded log,
in the log's own proportions and with its own paths and tenants, instead of the synthetic mix.

The request mix, tenants and parameters come from :mod:`psra_bench.load.request_mix`; this file only
wires them into Locust. The cross-tenant requests send the server's operator token, given as
``--psra-admin-token`` or (better: command lines are visible to every user of the machine) as
``PSRA_ADMIN_TOKEN`` in the environment.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from typing import Any

import gevent
from locust import FastHttpUser, LoadTestShape, events, task
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from psra_bench.db.reference import hs_rows
from psra_bench.exceptions import PsraBenchError
from psra_bench.load.capacity import CapacitySearch, SearchPlan, Step, step_passed
from psra_bench.load.replay import ReplaySource
from psra_bench.load.request_mix import KIND_WEIGHTS, RequestSpec, Workload, search_words
from psra_bench.measure.hdr import StageRecorder, write_recording
from psra_bench.measure.progress import note
from psra_bench.psra.assessment import default_rules, known_hs_subheadings

_DONE = {"completed", "failed", "cancelled"}

# The reference data every process needs, parsed once here: with --processes the workers are
# forked after this import and inherit it, so none of them blocks its event loop on it later
# (a worker that misses its heartbeats for a few seconds is dropped by the master).
hs_rows(), search_words(), default_rules(), known_hs_subheadings()
import scipy.stats  # noqa: E402, F401 - a step's p95 CI (measure.hdr) at the first step boundary would import it


class _State:
    """What this process shares between Locust's events and the users."""

    recorder = StageRecorder()
    workload: Any = None  # the greenlet building this process's Workload
    mix: Any = None  # the recorded log's replay plan (--psra-mix), or None: the synthetic mix
    options: Any = None
    reporters: set[str] = set()
    ready: set[str] = set()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("psra-bench", "PSRA workload and precise latency recording")
    group.add_argument("--psra-hdr-out", default="", help="Write the merged HdrHistogram recording (JSON) here.")
    group.add_argument(
        "--psra-warmup",
        type=float,
        default=0.0,
        help="Seconds after a stage starts whose requests are counted but not measured.",
    )
    group.add_argument("--psra-steps", default="", help="Step load: comma-separated user counts, e.g. 10,20,40.")
    group.add_argument("--psra-step-seconds", type=float, default=30.0, help="Length of each step.")
    group.add_argument(
        "--psra-stop-p95-ms",
        type=float,
        default=0.0,
        help="Step load: stop after a step whose p95 exceeds this (0 = run every step).",
    )
    group.add_argument(
        "--psra-stop-min-users",
        type=int,
        default=0,
        help="Step load: never stop early before a step with at least this many users.",
    )
    group.add_argument(
        "--psra-search",
        default="",
        help="Step load as a capacity search (psra_bench.load.capacity): "
        "SLO_P95_MS,HEADLINE_USERS,MEASURE_S,SHORT_S — the --psra-steps are its grid.",
    )
    group.add_argument(
        "--psra-mix",
        default="",
        help="Draw each request from this replay plan (psra-bench load --from-log) instead of the synthetic mix.",
    )
    group.add_argument("--psra-tenants", type=int, default=200, help="Tenants in the seeded dataset.")
    group.add_argument("--psra-seed", type=int, default=42, help="Seed of the request mix.")
    group.add_argument("--psra-think-min", type=float, default=0.5, help="Think time between tasks, min (s).")
    group.add_argument("--psra-think-max", type=float, default=1.5, help="Think time between tasks, max (s).")
    group.add_argument("--psra-timeout", type=float, default=30.0, help="Network timeout per request (s).")
    group.add_argument("--psra-job-polls", type=int, default=10, help="Status polls per submitted job, at most.")
    group.add_argument(
        "--psra-admin-token",
        default="",
        env_var="PSRA_ADMIN_TOKEN",
        help="The server's operator token (PSRA_ADMIN_TOKEN), sent on the cross-tenant requests.",
    )


def _runner_kind(runner: Any) -> str:
    if isinstance(runner, MasterRunner):
        return "master"
    if isinstance(runner, WorkerRunner):
        return "worker"
    return "local" if isinstance(runner, LocalRunner) else "none"


def _begin_stage(environment: Any, index: int, users: int | None, warmup: float) -> None:
    """Open stage ``index`` now on this process and (through messages) on every worker."""
    now = time.time()
    data = {"stage": index, "users": users, "started_at": now, "measure_from": now + warmup}
    _State.recorder.begin_stage(index, now + warmup, users=users, started_at=now)
    if isinstance(environment.runner, MasterRunner):
        environment.runner.send_message("psra_stage", data)


def _on_stage_message(environment: Any, msg: Any, **kwargs: Any) -> None:
    d = msg.data
    _State.recorder.begin_stage(
        int(d["stage"]), float(d["measure_from"]), users=d.get("users"), started_at=d.get("started_at")
    )


def _write(environment: Any) -> None:
    opts = _State.options
    if _runner_kind(environment.runner) == "local":
        _State.recorder.flush()
    if opts is None or not opts.psra_hdr_out:
        return
    meta = {
        "runner": _runner_kind(environment.runner),
        "workers_reporting": len(_State.reporters),
        "host": environment.host,
        "tenants": opts.psra_tenants,
        "seed": opts.psra_seed,
        "think_s": [opts.psra_think_min, opts.psra_think_max],
        "warmup_s": opts.psra_warmup,
        "steps": opts.psra_steps,
        "step_s": opts.psra_step_seconds,
    }
    write_recording(opts.psra_hdr_out, _State.recorder.ordered(), meta, outside_requests=_State.recorder.outside)


class _Steps(LoadTestShape):
    """What both step loads share: waiting for the workers, and telling a report run where the steps are."""

    abstract = True
    steps: list[int]
    current: int
    started: bool

    def _workers_ready(self) -> bool:
        """On a master, hold at 0 users until every expected worker finished its set-up (at most 120 s)."""
        if not self.started:
            opts = self.runner.environment.parsed_options
            expected = int(getattr(opts, "expect_workers", 1) or 1) if _runner_kind(self.runner) == "master" else 0
            if len(_State.ready) < expected and self.get_run_time() < 120:
                return False
            self.started = True
            self.reset_time()
        return True

    def _overall(self, index: int) -> dict[str, Any]:
        """Stage ``index``'s overall summary as far as reports have arrived (n, p95, failure rate)."""
        if _runner_kind(self.runner) == "local":
            _State.recorder.flush()
        stage = _State.recorder.stages.get(index)
        return stage.histograms.summary()["overall"] if stage else {"n": 0}

    def _tell(self, done: int, total: int, message: str, users: int | None = None) -> None:
        """A progress event for a report run following this process: where the steps are, the last step's p95."""
        if self.current >= 0 and self.current != getattr(self, "_told", None):
            self._told = self.current
            overall = self._overall(self.current)
            if overall.get("n"):
                n, p95 = overall["n"], overall["p95_ms"]
                message += f"; {users or self.steps[self.current]} users: p95 {p95:.1f} ms (n={n:,})"
        note("load steps", message, done=done, total=total)


class StepShape(_Steps):
    """Holds each user count of ``--psra-steps`` for ``--psra-step-seconds``, one measured stage per step."""

    abstract = True  # selected in the init event only when --psra-steps is given

    def __init__(
        self, steps: list[int], step_s: float, spawn_rate: float, settle: float, stop_p95_ms: float, stop_min_users: int
    ) -> None:
        super().__init__()
        self.steps, self.step_s, self.spawn_rate = steps, step_s, spawn_rate
        self.settle, self.stop_p95_ms, self.stop_min_users = settle, stop_p95_ms, stop_min_users
        self.current = -1
        self.started = False

    def _breached(self) -> bool:
        """Whether the stage just finished went over the stop threshold (as far as reports have arrived)."""
        if self.stop_p95_ms <= 0 or self.current < 0 or self.steps[self.current] < self.stop_min_users:
            return False
        overall = self._overall(self.current)
        return bool(overall.get("n") and overall["p95_ms"] > self.stop_p95_ms)

    def tick(self) -> tuple[int, float] | None:
        """The user count of the current step; None after the last step (or an over-threshold step)."""
        if not self._workers_ready():
            return 0, self.spawn_rate
        # Locust ticks shapes once a second; the small lead keeps a tick that comes a hair
        # early from holding a step one second too long.
        index = int((self.get_run_time() + 0.05) // self.step_s)
        if index >= len(self.steps):
            self._tell(len(self.steps), len(self.steps), "all steps done")
            return None
        if index != self.current:
            if self._breached():
                done = f"stopped after step {self.current + 1}: p95 over {self.stop_p95_ms:g} ms"
                self._tell(len(self.steps), len(self.steps), done)
                return None
            self._tell(index, len(self.steps), f"step {index + 1}/{len(self.steps)}: {self.steps[index]} users")
            previous = self.steps[index - 1] if index else 0
            ramp = abs(self.steps[index] - previous) / self.spawn_rate
            self.current = index
            _begin_stage(self.runner.environment, index, self.steps[index], ramp + self.settle)
        return self.steps[index], self.spawn_rate


class SearchShape(_Steps):
    """A capacity search (:mod:`psra_bench.load.capacity`): the grid of ``--psra-steps``, then bisection.

    Each step lasts its ramp from the step before, the settle time and its own measurement time; at
    its end the search reads the step's p95 and failure rate and picks the next user count.
    """

    abstract = True  # selected in the init event only when --psra-search is given

    def __init__(self, search: CapacitySearch, spawn_rate: float, settle: float) -> None:
        super().__init__()
        self.search, self.spawn_rate, self.settle = search, spawn_rate, settle
        self.steps = list(search.plan.grid)
        self.step: Step | None = None
        self.ends_at = 0.0
        self.current = -1
        self.started = False

    def tick(self) -> tuple[int, float] | None:
        """The user count of the current step; None once the search is done."""
        if not self._workers_ready():
            return 0, self.spawn_rate
        now = self.get_run_time()
        if self.step is not None and now + 0.05 < self.ends_at:
            return self.step.users, self.spawn_rate
        plan = self.search.plan
        if self.step is None:
            following: Step | None = self.search.first()
        else:
            passed = step_passed(self._overall(self.current), plan.slo_p95_ms, plan.max_failure_rate)
            following = self.search.after(self.step.users, passed)
        budget = len(plan.grid) + plan.extra_steps
        if following is None:
            self._tell(budget, budget, "capacity search done", self.step.users if self.step else None)
            return None
        self._tell(self.current + 1, budget, f"step {self.current + 2}: {following.users} users ({following.kind})",
                   self.step.users if self.step else None)  # fmt: skip
        ramp = abs(following.users - (self.step.users if self.step else 0)) / self.spawn_rate
        self.current, self.step = self.current + 1, following
        # From now, after the decision: reading the last step's histograms takes a moment.
        self.ends_at = self.get_run_time() + math.ceil(ramp + self.settle + following.measure_s - 1e-9)
        _begin_stage(self.runner.environment, self.current, following.users, ramp + self.settle)
        return following.users, self.spawn_rate


@events.init.add_listener
def _init(environment: Any, runner: Any, **kwargs: Any) -> None:
    opts = environment.parsed_options
    _State.options = opts
    _State.recorder = StageRecorder()
    kind = _runner_kind(runner)
    if kind in ("local", "worker"):
        runner.register_message("psra_stage", _on_stage_message)
        PsraUser.network_timeout = opts.psra_timeout
        if opts.psra_mix:
            _State.mix = _read_mix(opts.psra_mix)
            PsraUser.tasks = [PsraUser.recorded]  # the log's requests replace the synthetic tasks
        # Built in a greenlet that yields every few products, so heartbeats keep flowing.
        _State.workload = gevent.spawn(
            Workload,
            tenants=opts.psra_tenants,
            seed=opts.psra_seed,
            pause=lambda: gevent.sleep(0),
            admin_token=opts.psra_admin_token or None,
        )
    if kind == "worker":

        def _announce() -> None:
            _State.workload.get()
            runner.send_message("psra_ready", {})

        gevent.spawn(_announce)
    if kind == "master":
        runner.register_message("psra_ready", lambda environment, msg, **kw: _State.ready.add(msg.node_id))

        @events.worker_report.add_listener
        def _merge(client_id: str, data: dict[str, Any]) -> None:
            delta = data.get("psra_hdr")
            if delta is not None:
                _State.reporters.add(client_id)
                _State.recorder.add_delta(delta)

    if kind == "worker":

        @events.report_to_master.add_listener
        def _report(client_id: str, data: dict[str, Any]) -> None:
            data["psra_hdr"] = _State.recorder.take_delta()

    if opts.psra_steps and kind in ("local", "master"):
        try:
            steps = [int(s) for s in opts.psra_steps.split(",") if s.strip()]
        except ValueError:
            steps = []
        if not steps or min(steps) < 1:
            sys.exit(f"--psra-steps={opts.psra_steps!r} is not valid: use user counts >= 1 such as 10,20,40")
        spawn_rate = float(opts.spawn_rate or max(steps))
        if opts.psra_search:
            environment.shape_class = SearchShape(_search(opts.psra_search, steps), spawn_rate, opts.psra_warmup)
        else:
            environment.shape_class = StepShape(
                steps,
                opts.psra_step_seconds,
                spawn_rate,
                opts.psra_warmup,
                opts.psra_stop_p95_ms,
                opts.psra_stop_min_users,
            )
        environment.shape_class.runner = runner


def _read_mix(path: str) -> Any:
    """The replay plan of ``--psra-mix``: its arrivals (one per recorded request) and assessment bodies."""
    try:
        with open(path) as fh:
            plan = json.load(fh)
        if not plan["arrivals"]:
            raise ValueError("it holds no requests")
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"--psra-mix={path!r} is not a replay plan written by psra-bench load --from-log ({e})")
    return plan


def _search(text: str, grid: list[int]) -> CapacitySearch:
    """The search of ``--psra-search SLO_P95_MS,HEADLINE_USERS,MEASURE_S,SHORT_S`` over ``grid``."""
    try:
        slo, headline, measure, short = (float(v) for v in text.split(","))
        return CapacitySearch(SearchPlan(tuple(sorted(set(grid))), int(headline), slo, measure, short))
    except (ValueError, PsraBenchError) as e:
        sys.exit(f"--psra-search={text!r} is not valid: use SLO_P95_MS,HEADLINE_USERS,MEASURE_S,SHORT_S ({e})")


@events.test_start.add_listener
def _test_start(environment: Any, **kwargs: Any) -> None:
    if _runner_kind(environment.runner) not in ("local", "master"):
        return
    if environment.shape_class is None:  # a step load's stages are opened by StepShape.tick
        _State.recorder = StageRecorder()
        users = getattr(environment.parsed_options, "num_users", None)
        _begin_stage(environment, 0, users, _State.options.psra_warmup if _State.options else 0.0)


@events.test_stopping.add_listener
def _test_stopping(environment: Any, **kwargs: Any) -> None:
    if _runner_kind(environment.runner) in ("local", "master"):
        if _runner_kind(environment.runner) == "local":
            _State.recorder.flush()
        _State.recorder.end_stage(time.time())


@events.test_stop.add_listener
def _test_stop(environment: Any, **kwargs: Any) -> None:
    if _runner_kind(environment.runner) in ("local", "master"):
        _write(environment)


@events.quitting.add_listener
def _quitting(environment: Any, **kwargs: Any) -> None:
    if _runner_kind(environment.runner) not in ("local", "master"):
        return
    _write(environment)
    for stage in _State.recorder.ordered():
        s = stage.summary()
        print(
            f"\nPSRA latency, stage {stage.index} ({stage.users} users, {s['window_s'] or 0:.1f} s measured, "
            f"{stage.warmup_requests} warm-up requests excluded) — HdrHistogram, µs resolution"
        )
        print(f"{'endpoint':48} {'n':>7} {'fail':>5} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'p99.9 ms':>9}")
        rows = [*s["endpoints"].items(), ("overall", s["overall"])]
        for name, e in rows:
            cells = [
                f"{e[k]:9.2f}" if e[k] is not None else f"{'-':>9}" for k in ("p50_ms", "p95_ms", "p99_ms", "p999_ms")
            ]
            print(f"{name:48} {e['n']:>7} {e['failures']:>5} {' '.join(cells)}")


@events.request.add_listener
def _on_request(request_type: str, name: str, response_time: float, exception: Any = None, **kwargs: Any) -> None:
    _State.recorder.record(f"{request_type} {name}", response_time * 1000.0, exception is None, time.time())


class PsraUser(FastHttpUser):
    """One user of one tenant, exercising the API with the weighted mix of psra_bench.load.request_mix."""

    network_timeout = 30.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        """Pick this user's tenant and random stream."""
        opts = self.environment.parsed_options
        self.rng = random.Random(hash((opts.psra_seed, id(self), time.perf_counter_ns())))
        self.workload: Workload = (
            _State.workload.get()
            if _State.workload is not None
            else Workload(tenants=opts.psra_tenants, seed=opts.psra_seed, admin_token=opts.psra_admin_token or None)
        )
        self.tenant = self.workload.tenant(self.rng)
        self.source: ReplaySource | None = None  # built on the first recorded request (--psra-mix)

    def wait_time(self) -> float:
        """Think time between tasks, uniform in [--psra-think-min, --psra-think-max]."""
        opts = self.environment.parsed_options
        return self.rng.uniform(opts.psra_think_min, max(opts.psra_think_min, opts.psra_think_max))

    def send(self, spec: RequestSpec, **kwargs: Any) -> Any:
        """Send one RequestSpec; stats are grouped under its endpoint name."""
        return self.client.request(
            spec.method,
            spec.path,
            name=spec.name.split(" ", 1)[1],
            headers=dict(spec.headers),
            json=spec.json,
            **kwargs,
        )

    def recorded(self) -> None:
        """One request of the recorded log (``--psra-mix``), drawn uniformly from its requests: the log's own mix.

        Not a @task: it replaces the synthetic tasks when the option is given (see ``_init``).
        """
        if self.source is None:
            self.source = ReplaySource(_State.mix, self.environment.parsed_options.psra_admin_token or None)
        spec = self.source.spec(self.rng.randrange(len(self.source.arrivals)))
        resp = self.send(spec)
        if spec.kind == "job_submit" and resp.status_code == 202:
            try:
                self.source.on_job(resp.json()["job_id"], spec.headers.get("X-Tenant-ID"))
            except (ValueError, KeyError, TypeError):
                pass

    def do(self, kind: str) -> None:
        """One request of ``kind`` for this user's tenant."""
        self.send(self.workload.request(kind, self.rng, self.tenant))

    @task(KIND_WEIGHTS["hs_lookup"])
    def hs_lookup(self) -> None:
        """GET /api/hs/{code}."""
        self.do("hs_lookup")

    @task(KIND_WEIGHTS["hs_search"])
    def hs_search(self) -> None:
        """GET /api/hs/search."""
        self.do("hs_search")

    @task(KIND_WEIGHTS["rules_list"])
    def rules_list(self) -> None:
        """GET /api/rules?agreement=&chapter=."""
        self.do("rules_list")

    @task(KIND_WEIGHTS["rule_by_id"])
    def rule_by_id(self) -> None:
        """GET /api/rules/{rule_id}."""
        self.do("rule_by_id")

    @task(KIND_WEIGHTS["assessment"])
    def assessment(self) -> None:
        """POST /api/assessments (synchronous)."""
        self.do("assessment")

    @task(KIND_WEIGHTS["tenant_history"])
    def tenant_history(self) -> None:
        """GET /api/tenants/{tid}/verdicts."""
        self.do("tenant_history")

    @task(KIND_WEIGHTS["recent_verdicts"])
    def recent_verdicts(self) -> None:
        """GET /api/verdicts/recent."""
        self.do("recent_verdicts")

    @task(KIND_WEIGHTS["dashboard"])
    def dashboard(self) -> None:
        """GET /api/tenants/{tid}/dashboard."""
        self.do("dashboard")

    @task(KIND_WEIGHTS["trade_route_report"])
    def trade_route_report(self) -> None:
        """GET /api/tenants/{tid}/trade-route-report."""
        self.do("trade_route_report")

    @task(KIND_WEIGHTS["trade_route"])
    def trade_route(self) -> None:
        """GET /api/trade-routes/{exp}/{imp}."""
        self.do("trade_route")

    @task(KIND_WEIGHTS["duplicate_check"])
    def duplicate_check(self) -> None:
        """GET /api/tenants/{tid}/duplicates/{input_hash}."""
        self.do("duplicate_check")

    @task(KIND_WEIGHTS["job_submit"])
    def job_submit_and_poll(self) -> None:
        """POST /api/jobs/assessment/submit, then poll its status until it ends (bounded)."""
        resp = self.send(self.workload.request("job_submit", self.rng, self.tenant))
        try:
            job_id = resp.json()["job_id"] if resp.status_code == 202 else None
        except (ValueError, KeyError, TypeError):
            job_id = None
        if not job_id:
            return
        for _ in range(self.environment.parsed_options.psra_job_polls):
            gevent.sleep(0.2)
            with self.send(Workload.job_status(job_id, self.tenant), catch_response=True) as poll:
                try:
                    state = poll.json().get("status") if poll.status_code == 200 else None
                except (ValueError, AttributeError):
                    state = None
                if state == "failed":
                    poll.failure("the job failed")
                if state in _DONE:
                    return
