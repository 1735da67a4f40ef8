"""Load generators as child processes: Locust (closed model, step load) and the open-model driver.

:class:`LoadPlan` says what one configuration's run does; :func:`run_locust` runs its step load
with ``loadtests/locustfile.py`` headless and reads back the merged µs histograms
(:mod:`psra_bench.measure.hdr`), cross-checking their request count against Locust's own;
:func:`run_open_model` runs ``python -m psra_bench.load.open_model``. Both run bounded in time (a
budget after which the process group is stopped) and only against 127.0.0.1. The server's operator
token (for the cross-tenant requests of the mix) reaches them as ``PSRA_ADMIN_TOKEN`` in their
environment, never on their command line.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psra_bench.exceptions import MeasurementError, ParameterError
from psra_bench.load.api_server import log_tail, stop_process_group
from psra_bench.load.capacity import SearchPlan
from psra_bench.load.open_model import check_loopback_url, check_target_url
from psra_bench.measure.hdr import read_recording
from psra_bench.resources import shipped_file
from psra_bench.settings import environ_with

__all__ = ["LoadPlan", "GeneratorProcess", "locustfile_path", "run_locust", "run_open_model"]


def _num(name: str, value: Any, *, integer: bool = False, minimum: float = 0.0, strict: bool = True) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or value != value or (value <= minimum if strict else value < minimum):
        what = "a whole number" if integer else "a number"
        raise ParameterError(name, value, f"{what} {'>' if strict else '>='} {minimum:g}")
    return value


@dataclass(frozen=True)
class LoadPlan:
    """What one configuration's run does: step users, timings, arrival rate, SLO, generator settings."""

    users: int
    spawn_rate: float
    duration_s: float
    arrival_rate: float
    slo_p95_ms: float
    steps: tuple[int, ...]
    #: Seconds after a step's ramp before it is measured. Users start at ``spawn_rate`` with their first
    #: request at once, so a ramp's burst is spread over the ramp; half a second lets the last users'
    #: first requests and those of users just stopped finish (1.0 s cost the full report ~25 s of 33 steps).
    settle_s: float = 0.5
    think_s: tuple[float, float] = (0.5, 1.5)
    processes: int = 1
    tenants: int = 200
    seed: int = 42
    open_max_in_flight: int = 64
    request_timeout_s: float = 10.0
    #: Find users supported to within 10 % (load.capacity): the steps are the search's grid.
    search: bool = False
    #: Also search the open model's highest arrival rate (arrival_rate × 1, 2, 4, 8, then bisection).
    open_search: bool = False

    @classmethod
    def make(
        cls,
        *,
        users: int,
        spawn_rate: float,
        duration: float,
        arrival_rate: float,
        slo_p95_ms: float,
        quick: bool = False,
        steps: Sequence[int] | None = None,
        **extra: Any,
    ) -> LoadPlan:
        """Validate the parameters and derive the steps: users × (½, 1, 2, 4, 8), or (1, 2) with ``quick``.

        Without ``quick`` and without explicit ``steps`` the step load is a capacity search
        (``search``) on that grid, unless ``search=False`` is given.
        """
        _num("users", users, integer=True)
        _num("spawn_rate", spawn_rate)
        _num("duration", duration)
        _num("arrival_rate", arrival_rate)
        _num("slo_p95_ms", slo_p95_ms)
        _num("processes", extra.get("processes", 1), integer=True)
        think = tuple(extra.get("think_s", (0.5, 1.5)))
        if len(think) != 2 or _num("think_s", think[0], strict=False) > _num("think_s", think[1], strict=False):
            raise ParameterError("think_s", think, "two numbers (min, max) with 0 <= min <= max")
        extra.setdefault("search", not quick and steps is None)
        if steps is None:
            factors = (1, 2) if quick else (0.5, 1, 2, 4, 8)
            steps = sorted({max(1, int(users * f)) for f in factors})
        steps = tuple(int(_num("steps", s, integer=True)) for s in steps)
        if users not in steps:
            raise ParameterError("steps", list(steps), f"user counts that include users={users}")
        return cls(
            users,
            float(spawn_rate),
            float(duration),
            float(arrival_rate),
            float(slo_p95_ms),
            tuple(sorted(set(steps))),
            **{**extra, "think_s": think},
        )

    @property
    def step_s(self) -> float:
        """Length of each step: the largest ramp-up + settle time + ``duration_s``, up to whole seconds.

        Locust re-evaluates a load shape once a second, so whole seconds keep steps as long as planned.
        """
        prev = (0, *self.steps[:-1])
        ramp = max(abs(b - a) for a, b in zip(prev, self.steps, strict=True)) / self.spawn_rate
        return float(math.ceil(ramp + self.settle_s + self.duration_s - 1e-9))

    @property
    def search_plan(self) -> SearchPlan:
        """The capacity search over the steps: the full ``duration_s`` at the headline and near the crossing."""
        return SearchPlan(self.steps, self.users, self.slo_p95_ms, self.duration_s, max(2.0, self.duration_s / 2))

    @property
    def max_steps(self) -> int:
        """Steps the run may take: the grid, plus the search's extra steps."""
        return len(self.steps) + (self.search_plan.extra_steps if self.search else 0)


def locustfile_path() -> Path:
    """``loadtests/locustfile.py``: shipped inside the package, or in the checkout beside it."""
    return shipped_file("loadtests/locustfile.py")


@dataclass
class GeneratorProcess:
    """The load generator process running right now, if any (the process monitor's 'generator' group)."""

    pid: int | None = None


def _run(
    cmd: list[str], log: Path, timeout_s: float, generator: GeneratorProcess | None, admin_token: str | None
) -> int:
    env = environ_with({"PSRA_ADMIN_TOKEN": admin_token}) if admin_token else None
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
        )
    if generator is not None:
        generator.pid = proc.pid
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        stop_process_group(proc, 5.0)
        raise MeasurementError(
            f"{Path(cmd[2] if cmd[1] == '-m' else cmd[1]).name} did not finish within "
            f"{timeout_s:.0f} s and was stopped; its log ends with:\n{log_tail(log)}"
        ) from None
    finally:
        if proc.poll() is None:
            stop_process_group(proc, 5.0)
        if generator is not None:
            generator.pid = None


def run_locust(
    base_url: str,
    plan: LoadPlan,
    output_dir: str | Path,
    *,
    stop_p95_ms: float = 0.0,
    generator: GeneratorProcess | None = None,
    admin_token: str | None = None,
    remote: bool = False,
    mix_file: str | Path | None = None,
) -> dict[str, Any]:
    """Run the plan's step load with Locust headless; return per-step summaries and Locust's own totals.

    ``admin_token`` (the server's operator token) is sent on the cross-tenant requests. The API
    must be on this machine unless ``remote`` (``psra-bench load --url``: an API anywhere).
    ``mix_file``: a replay plan (:mod:`psra_bench.load.replay`) whose recorded requests the users
    draw from, in the log's proportions, instead of the synthetic mix.
    """
    if remote:
        check_target_url(base_url)
    else:
        check_loopback_url(base_url)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    hdr, js, csv = out / "locust_hdr.json", out / "locust", out / "locust"
    hdr.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile_path()),
        "--host",
        base_url,
        "--headless",
        "--only-summary",
        "--loglevel",
        "INFO",
        "--exit-code-on-error",
        "0",
        "-r",
        f"{plan.spawn_rate:g}",
        "--psra-steps",
        ",".join(map(str, plan.steps)),
        "--psra-step-seconds",
        f"{plan.step_s:g}",
        "--psra-warmup",
        f"{plan.settle_s:g}",
        "--psra-stop-p95-ms",
        f"{stop_p95_ms:g}",
        "--psra-stop-min-users",
        str(plan.users),
        "--psra-search",
        ",".join(f"{v:g}" for v in (plan.slo_p95_ms, plan.users, plan.duration_s, plan.search_plan.short_s))
        if plan.search
        else "",
        "--psra-hdr-out",
        str(hdr),
        "--json-file",
        str(js),
        "--csv",
        str(csv),
        "--psra-tenants",
        str(plan.tenants),
        "--psra-seed",
        str(plan.seed),
        "--psra-think-min",
        f"{plan.think_s[0]:g}",
        "--psra-think-max",
        f"{plan.think_s[1]:g}",
        "--psra-timeout",
        f"{plan.request_timeout_s:g}",
    ]
    if plan.processes > 1:
        cmd += ["--processes", str(plan.processes)]
    if mix_file is not None:
        cmd += ["--psra-mix", str(mix_file)]
    budget = plan.max_steps * plan.step_s + plan.request_timeout_s + 180  # + start-up, worker readiness, drain
    code = _run(cmd, out / "locust.log", budget, generator, admin_token)
    if not hdr.exists():
        raise MeasurementError(
            f"Locust exited with code {code} without writing its latency recording; "
            f"its log ends with:\n{log_tail(out / 'locust.log')}"
        )
    recording = read_recording(hdr)
    stats = json.loads(Path(f"{js}.json").read_text()) if Path(f"{js}.json").exists() else []
    locust_total = sum(int(e.get("num_requests", 0)) for e in stats)
    return {
        "exit_code": code,
        "steps": [st.summary() for st in recording.stages],
        "plan_steps": list(plan.steps),
        "step_s": plan.step_s,
        "outside_requests": recording.outside_requests,
        "locust_requests": locust_total,
        "locust_failures": sum(int(e.get("num_failures", 0)) for e in stats),
        "recorded_requests": recording.total_requests(),
        "accounted": locust_total == recording.total_requests(),
        "meta": recording.meta,
        "files": {
            "recording": str(hdr),
            "locust_json": f"{js}.json",
            "locust_csv": f"{csv}_stats.csv",
            "log": str(out / "locust.log"),
        },
    }


def run_open_model(
    base_url: str,
    plan: LoadPlan,
    output_dir: str | Path,
    *,
    generator: GeneratorProcess | None = None,
    admin_token: str | None = None,
) -> dict[str, Any]:
    """Run the open-model driver at the plan's arrival rate in its own process; return its result.

    ``admin_token`` (the server's operator token) is sent on the cross-tenant requests.
    """
    check_loopback_url(base_url)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "open.json"
    target.unlink(missing_ok=True)
    total = plan.duration_s + plan.settle_s
    cmd = [
        sys.executable,
        "-m",
        "psra_bench.load.open_model",
        "--url",
        base_url,
        "--rate",
        f"{plan.arrival_rate:g}",
        "--duration",
        f"{total:g}",
        "--warmup",
        f"{plan.settle_s:g}",
        "--max-in-flight",
        str(plan.open_max_in_flight),
        "--timeout",
        f"{plan.request_timeout_s:g}",
        "--tenants",
        str(plan.tenants),
        "--seed",
        str(plan.seed),
        "--out",
        str(target),
    ]
    code = _run(cmd, out / "open.log", total + 2 * plan.request_timeout_s + 60, generator, admin_token)
    if code != 0 or not target.exists():
        raise MeasurementError(
            f"the open-model driver exited with code {code}; its log ends with:\n{log_tail(out / 'open.log')}"
        )
    result: dict[str, Any] = json.loads(target.read_text())
    result["files"] = {"result": str(target), "log": str(out / "open.log")}
    return result
