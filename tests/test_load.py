"""Load tests: the request mix, the open-model driver, Locust against the real app, run_load end to end."""

from __future__ import annotations

import http.server
import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from psra_bench.exceptions import ParameterError
from psra_bench.infra import postgres as db
from psra_bench.load.api_server import server_env, start_api_server, stop_api_server
from psra_bench.load.experiment import run_load
from psra_bench.load.generators import LoadPlan, run_locust, run_open_model
from psra_bench.load.open_model import OpenLoadConfig, check_loopback_url, run_open_load
from psra_bench.load.request_mix import (
    ENDPOINT_NAMES,
    KIND_WEIGHTS,
    OPERATOR_KINDS,
    RequestSpec,
    Workload,
    ZipfPicker,
)
from psra_bench.load.results import overall_table, users_supported
from psra_bench.measure.procmon import ProcessMonitor, process_tree
from psra_bench.psra.assessment import assess, default_rules
from psra_bench.settings import Settings


def _seeded(settings: Settings, make_seeded_database: Callable[..., str], verdicts: int) -> Settings:
    dsn = make_seeded_database(verdicts, seed=7, tenants=200)
    return settings.replace(db_dsn=dsn)


# ----------------------------------------------------------------------------- request mix


def test_workload_is_deterministic_and_every_kind_is_well_formed() -> None:
    w = Workload(tenants=200, seed=3, products=60, admin_token="t0ken-" * 4)
    a = [w.draw(random.Random(1)) for _ in range(50)]
    b = [w.draw(random.Random(1)) for _ in range(50)]
    assert a == b
    rng = random.Random(2)
    for kind in KIND_WEIGHTS:
        spec = w.request(kind, rng)
        assert spec.name == ENDPOINT_NAMES[kind] and spec.path.startswith("/api/")
        if spec.json is not None:  # every pooled body passes the engine's validation
            assess(spec.json, default_rules())
            assert spec.headers["X-Tenant-ID"] == spec.json["tenant_id"]
        if "/tenants/" in spec.path:
            assert spec.path.split("/")[3] == spec.headers["X-Tenant-ID"]
        # the cross-tenant routes carry the operator token, and only they do
        assert ("Authorization" in spec.headers) == (kind in OPERATOR_KINDS), kind
        if kind in OPERATOR_KINDS:
            assert spec.headers["Authorization"] == "Bearer " + "t0ken-" * 4
            assert "t0ken" not in repr(spec)
    assert "Authorization" not in Workload(tenants=200, seed=3, products=60).request("trade_route", rng).headers
    poll = Workload.job_status("j1", w.tenant_ids[0])
    assert poll.headers == {"X-Tenant-ID": w.tenant_ids[0]} and Workload.job_status("j1").headers == {}
    with pytest.raises(ParameterError, match="kind"):
        w.request("job_status", rng)
    with pytest.raises(ParameterError, match="tenants"):
        Workload(tenants=0)


def test_zipf_skew_favours_the_first_items() -> None:
    picker = ZipfPicker(list("abcdefghij"), 1.1)
    counts = Counter(picker.pick(random.Random(5)) for _ in range(1))  # smoke: one draw works
    rng = random.Random(9)
    counts = Counter(picker.pick(rng) for _ in range(20_000))
    assert counts["a"] > counts["b"] > counts["j"]
    assert counts["a"] / 20_000 == pytest.approx(picker.probability(0), abs=0.02)


# ----------------------------------------------------------------------------- plan, report


def test_plan_derives_steps_and_refuses_bad_values() -> None:
    plan = LoadPlan.make(users=10, spawn_rate=5, duration=20, arrival_rate=50, slo_p95_ms=200)
    assert plan.steps == (5, 10, 20, 40, 80)
    assert plan.step_s == 29.0  # ramp 40 users at 5/s + settle 0.5 s + 20 s measured, up to whole seconds
    assert LoadPlan.make(users=3, spawn_rate=3, duration=2, arrival_rate=5, slo_p95_ms=100, quick=True).steps == (3, 6)
    for bad in ({"users": 0}, {"duration": -1}, {"spawn_rate": True}, {"steps": [1, 2]}, {"think_s": (2, 1)}):
        args: dict[str, Any] = {"users": 4, "spawn_rate": 2, "duration": 1, "arrival_rate": 1, "slo_p95_ms": 50}
        with pytest.raises(ParameterError, match=str(next(iter(bad)))):
            LoadPlan.make(**(args | bad))


def test_traffic_only_goes_to_this_machine() -> None:
    assert check_loopback_url("http://127.0.0.1:8000") == ("127.0.0.1", 8000)
    for url in ("http://example.com:80", "https://127.0.0.1:8000", "http://10.0.0.1:80", "http://127.0.0.1"):
        with pytest.raises(ParameterError, match="127.0.0.1"):
            check_loopback_url(url)


def _step(users: int, p95: float, failure_rate: float = 0.0, saturated: bool = False) -> dict[str, Any]:
    return {
        "users": users,
        "overall": {"n": 100, "p95_ms": p95, "failure_rate": failure_rate},
        "generator": {"saturated": saturated},
    }


def test_users_supported_is_the_last_step_meeting_the_slo() -> None:
    r = users_supported([_step(10, 50), _step(20, 90), _step(40, 150), _step(80, 90)], slo_p95_ms=100)
    assert (r["users_supported"], r["first_failing_users"], r["lower_bound"]) == (20, 40, False)
    r = users_supported([_step(10, 50), _step(20, 60, failure_rate=0.05)], slo_p95_ms=100)
    assert (r["users_supported"], r["first_failing_users"]) == (10, 20) and "failure rate" in r["reason"]
    r = users_supported([_step(10, 50), _step(20, 60, saturated=True)], slo_p95_ms=100)
    assert (r["users_supported"], r["lower_bound"], r["generator_limited"]) == (20, True, True)
    assert users_supported([_step(5, 500)], slo_p95_ms=100)["users_supported"] is None


def test_overall_table_has_the_spec_rows_with_n() -> None:
    def config(p50: float, users: int, pg: float) -> dict[str, Any]:
        overall = {
            "n": 500,
            "p50_ms": p50,
            "p95_ms": 3 * p50,
            "p99_ms": 5 * p50,
            "rps": 40.0,
            "requests": 510,
            "failure_rate": 0.0,
        }
        return {
            "closed": {
                "overall": overall,
                "endpoints": {},
                "generator": {"saturated": False},
                "resources": {"groups": {"postgres": {"cpu_pct_of_machine": pg}}},
            },
            "users_supported": {"users_supported": users, "slo_p95_ms": 100, "reason": "x"},
        }

    rows = {r["metric"]: r for r in overall_table({"baseline": config(20, 40, 60), "both": config(10, 80, 30)})}
    p50 = rows["API Response Time (p50)"]
    assert (p50["before"], p50["after"], p50["n_before"], p50["improvement"]) == (20, 10, 500, "50% faster")
    assert rows["Concurrent Users Supported"]["improvement"] == "100% increase"
    assert rows["Database CPU Usage"]["improvement"] == "50% reduction"
    assert rows["Dashboard Load Time (p50)"]["before"] is None  # no samples: no number
    assert "too few" not in p50["note"]
    few = config(20, 40, 60)
    few["closed"]["overall"]["n"] = 5
    assert "too few requests" in overall_table({"baseline": few, "both": config(10, 80, 30)})[0]["note"]
    assert {"Report Generation (p95)", "Memory Usage: PostgreSQL", "Database CPU per request"} <= set(rows)


# ----------------------------------------------------------------------------- process monitor


def test_process_monitor_sees_a_busy_process_and_an_idle_one() -> None:
    # Both run until killed and say when they have started, so the window sees them at work on any machine.
    busy = subprocess.Popen([sys.executable, "-c", "print(flush=True)\nwhile True: pass"], stdout=subprocess.PIPE)
    idle = subprocess.Popen(
        [sys.executable, "-c", "import time; print(flush=True); time.sleep(600)"], stdout=subprocess.PIPE
    )
    try:
        for proc in (busy, idle):
            assert proc.stdout is not None and proc.stdout.readline() == b"\n"
        with ProcessMonitor(
            {"busy": lambda: process_tree(busy.pid), "idle": lambda: process_tree(idle.pid)}, interval_s=0.2
        ) as mon:
            start = time.time()
            while sum(s.t > start for s in list(mon.samples)) < 4:  # a count of samples, not an amount of time
                time.sleep(0.05)
        w = mon.window(start, time.time())
    finally:
        for proc in (busy, idle):
            proc.kill()
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
    assert w["samples"] >= 3
    b, i = w["groups"]["busy"], w["groups"]["idle"]
    assert b["cpu_cores"] > 0.05 and b["cpu_cores"] > 10 * i["cpu_cores"]
    assert b["rss_mb_max"] > 0 and b["processes_max"] == 1


# ----------------------------------------------------------------------------- open model


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """One request at a time, 20 ms each: a server with a capacity of about 50 requests/s."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        time.sleep(0.02)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def slow_url() -> Iterator[str]:
    srv = http.server.HTTPServer(("127.0.0.1", 0), _SlowHandler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_open_model_counts_late_and_dropped_and_keeps_queueing_in_the_tail(slow_url: str) -> None:
    def source(rng: random.Random) -> RequestSpec:
        return RequestSpec("slow", "GET", "/slow", "GET /slow")

    # twice the server's capacity: arrivals queue for the 4 connections, then overflow the backlog
    r = run_open_load(
        OpenLoadConfig(slow_url, rate=100, duration_s=1.5, max_in_flight=4, max_backlog=20, timeout_s=5), source
    )
    assert r["scheduled"] == 150
    assert r["sent"] + r["dropped"] == r["scheduled"]
    assert r["completed"] + r["unfinished"] == r["sent"]
    assert r["dropped"] > 0 and r["late"] > 0 and r["failed"] == 0
    latency, service = r["latency"]["overall"], r["service"]["overall"]
    assert latency["n"] == r["ok"]
    # latency from the intended start includes the wait for a connection; service time does not
    assert latency["p50_ms"] > 2 * service["p50_ms"]
    assert r["achieved_rps"] < r["target_rps"] and r["generator"]["behind_schedule"]


def test_open_model_below_capacity_has_no_drops(slow_url: str) -> None:
    def source(rng: random.Random) -> RequestSpec:
        return RequestSpec("slow", "GET", "/slow", "GET /slow")

    r = run_open_load(
        OpenLoadConfig(slow_url, rate=10, duration_s=1.0, warmup_s=0.2, max_in_flight=4, timeout_s=5), source
    )
    assert (r["scheduled"], r["sent"], r["dropped"], r["failed"]) == (10, 10, 0, 0)
    assert r["warmup_requests"] == 2 and r["latency"]["overall"]["n"] == 8


# ----------------------------------------------------------------------------- against the real app


def test_server_env_is_built_from_settings_only(settings: Settings) -> None:
    env = server_env(settings.replace(enable_cache=False))
    assert env["ENABLE_CACHE"] == "false" and env["PSRA_DB_DSN"] == settings.db_dsn
    assert env["PSRA_CACHE_NAMESPACE"] == settings.cache_namespace
    assert Settings.from_env(env).enable_cache is False
    token = "k" * 32
    assert "PSRA_ADMIN_TOKEN" not in env
    assert Settings.from_env(server_env(settings.replace(admin_token=token))).admin_token == token


def test_locust_and_open_model_against_the_real_app(
    settings: Settings, make_seeded_database: Callable[..., str], tmp_path: Path
) -> None:
    server = start_api_server(_seeded(settings, make_seeded_database, 3000), tmp_path / "server.log")
    try:
        plan = LoadPlan.make(
            users=2,
            spawn_rate=4,
            duration=1.5,
            arrival_rate=20,
            slo_p95_ms=1000,
            steps=(2, 4),
            settle_s=0.5,
            think_s=(0.1, 0.3),
            processes=2,
        )
        assert len(server.admin_token) >= 32 and server.admin_token not in repr(server)
        r = run_locust(server.base_url, plan, tmp_path / "closed", admin_token=server.admin_token)
        o = run_open_model(server.base_url, plan, tmp_path / "open", admin_token=server.admin_token)
    finally:
        stop_api_server(server)
    # the operator token reached the generators through their environment only
    for written in [*tmp_path.rglob("*.json"), *tmp_path.rglob("*.log"), *tmp_path.rglob("*.csv")]:
        assert server.admin_token not in written.read_text(errors="replace"), written
    # Locust with two worker processes: the master merged both workers' histograms, and every
    # request Locust counted is in them (measured, warm-up or outside a stage)
    assert r["meta"]["runner"] == "master" and r["meta"]["workers_reporting"] == 2
    assert r["accounted"] and r["recorded_requests"] == r["locust_requests"] > 0
    assert [s["users"] for s in r["steps"]] == [2, 4]
    log = Path(r["files"]["log"]).read_text()
    assert sum(step["overall"]["n"] for step in r["steps"]) > 0, log
    for step in r["steps"]:
        assert step["window_s"] > 0
        assert set(step["endpoints"]) <= set(ENDPOINT_NAMES.values())
    assert r["locust_failures"] == 0 and sum(s["overall"]["failures"] for s in r["steps"]) == 0
    assert Path(r["files"]["locust_csv"]).exists()
    # the open-model driver in its own process
    assert o["scheduled"] == 40 and o["sent"] + o["dropped"] == 40
    assert o["failed"] == 0, o["errors"]
    assert o["latency"]["overall"]["n"] + o["warmup_requests"] == o["ok"]
    assert o["ended_at"] - o["measure_from"] == pytest.approx(1.5)


def test_run_load_one_configuration_end_to_end(
    settings: Settings, make_seeded_database: Callable[..., str], tmp_path: Path, redis_client: Any
) -> None:
    s = _seeded(settings, make_seeded_database, 2000)
    doc = run_load(
        s,
        users=2,
        spawn_rate=4,
        duration=1.0,
        arrival_rate=5,
        configurations=["both"],
        slo_p95_ms=2000,
        output_dir=tmp_path,
        steps=(2,),
        settle_s=0.5,
        think_s=(0.1, 0.2),
    )
    saved_text = (tmp_path / "04_load_test.json").read_text()
    assert "Bearer" not in saved_text and "admin_token" not in saved_text  # the server's token stays out
    saved = json.loads(saved_text)
    assert saved["parameters"]["steps"] == [2]
    c = saved["configurations"]["both"]
    # a clone of the once-migrated copy: the 46 indexes, built there, not in the dataset
    assert c["cache"] is True and c["indexes"] is True and c["index_count"] == 46
    assert c["locust"]["accounted"] and c["closed"]["users"] == 2 and c["closed"]["overall"]["n"] > 0
    assert c["closed"]["resources"]["groups"]["api"]["measured"]
    assert c["open"]["scheduled"] == 7 and c["users_supported"]["slo_p95_ms"] == 2000
    assert {r["metric"] for r in doc["table"]} >= {"API Response Time (p95)", "Concurrent Users Supported"}
    # the clone and the migrated copy are gone, the dataset untouched, and no key is left under the namespace
    with db.connect(s.db_dsn or "", autocommit=True) as conn:
        clones = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE %s", (s.db_dsn.rsplit("/", 1)[-1] + "_load_%",)
        ).fetchone()  # type: ignore[union-attr]
        assert clones == (0,)
        assert db.index_count(conn) == 20
    assert c["cache_namespace"].startswith(s.cache_namespace)
    assert not list(redis_client.scan_iter(match=c["cache_namespace"] + "*", count=1000))
    print(json.dumps(c["timings_s"]))


# ----------------------------------------------------------------------------- load --url


def test_load_url_runs_the_step_load_against_an_api_this_tool_did_not_start(
    settings: Settings, make_seeded_database: Callable[..., str], tmp_path: Path
) -> None:
    """``psra-bench load --url``: a real process loads a server it was only given the address of."""
    server = start_api_server(_seeded(settings, make_seeded_database, 2000), tmp_path / "server.log")
    try:
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PSRA_ADMIN_TOKEN": server.admin_token}
        cmd = [sys.executable, "-m", "psra_bench", "load", "--url", server.base_url, "--users", "2", "--quick",
               "--duration", "1.5", "--spawn-rate", "4", "--output-dir", str(tmp_path / "out")]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    finally:
        stop_api_server(server)
    assert done.returncode == 0, done.stderr
    doc = json.loads((tmp_path / "out" / "04_load_external.json").read_text())
    assert doc["url"] == server.base_url and [s["users"] for s in doc["steps"]] == [2, 4]
    assert doc["locust"]["locust_failures"] == 0 and all(s["overall"]["n"] > 0 for s in doc["steps"])
    assert all(s["generator"]["busiest_process_cores"] is not None for s in doc["steps"])
    assert doc["users_supported"]["users_supported"] in (2, 4)
    assert "users supported at p95 <= 200 ms" in done.stdout and "generator cores" in done.stdout
    for written in (tmp_path / "out").rglob("*"):
        if written.is_file():
            assert server.admin_token not in written.read_text(errors="replace"), written


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--url", "ftp://example.com"], "url='ftp://example.com'"),
        (["--url", "https://user:hunter2@"], "url="),
        (["--url", "http://example.com", "--configurations", "both"], "--configurations='both'"),
    ],
)
def test_load_url_refuses_bad_input_in_one_sentence(extra: list[str], named: str, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PSRA_BENCH_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "psra_bench", "load", *extra], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], done.stderr
    assert "hunter2" not in done.stderr
