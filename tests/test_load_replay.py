"""Recorded traffic: a log in three formats templated against this API's routes, replayed open and closed.

The checks are on counts per bucket of *recorded* time, which do not depend on timing luck: the
open model sends every request at its intended time, and the closed model's users take tokens
released at the recorded times (they fall behind only when every user is busy, which the
tolerance of 10 % per 10-second bucket leaves room for on a busy 2-core machine).
"""

from __future__ import annotations

import http.server
import json
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from replay_fixtures import RATES, SECRET, WRITERS, traffic

from psra_bench.cli import cli
from psra_bench.exceptions import ParameterError
from psra_bench.infra import postgres as db
from psra_bench.load.api_server import ApiServer, start_api_server, stop_api_server
from psra_bench.load.experiment import run_log_replay
from psra_bench.load.fromlog import api_routes, match_route, read_log
from psra_bench.load.params import LoadTestParams
from psra_bench.load.replay import ReplayParams, load_replay, run_replay
from psra_bench.load.replay_tables import REPLAY_TITLES, replay_tables
from psra_bench.settings import Settings

SPEED = 6.0


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same recorded traffic in each format."""
    folder = tmp_path_factory.mktemp("logs")
    recorded = traffic()
    return {fmt: write(folder / f"access.{fmt}", recorded) for fmt, write in WRITERS.items()}


@pytest.fixture(scope="module")
def seeded(settings: Settings, make_seeded_database: Callable[..., str]) -> Settings:
    """Settings of a seeded dataset (its tenants are the ones the log names)."""
    return settings.replace(db_dsn=make_seeded_database(2000, seed=7, tenants=200))


@pytest.fixture(scope="module")
def server(seeded: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The API on the seeded dataset, started as `load` starts it, for the replays given its --url."""
    api = start_api_server(seeded, tmp_path_factory.mktemp("server") / "server.log")
    yield api
    stop_api_server(api)


@pytest.fixture
def counting_url() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 that counts what reaches it (to prove nothing was sent)."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def _truth() -> tuple[Counter[str], Counter[str]]:
    recorded = traffic()
    known = Counter(r.name for r in recorded if r.name)
    unknown = Counter(f"{r.method} {r.target}" for r in recorded if not r.name)
    return known, unknown


def _check_replay(replay: dict[str, Any]) -> None:
    """Each endpoint's share within 2 points of the recorded one; each bucket's rate within 10 %."""
    assert set(replay["replayed_share"]) == set(replay["recorded_share"])
    for name, share in replay["recorded_share"].items():
        assert abs(replay["replayed_share"][name] - share) <= 0.02, (name, share, replay["replayed_share"][name])
    recorded, replayed = replay["recorded_rate"], replay["replayed_rate"]
    assert len(recorded) == len(RATES) and len(replayed) == len(recorded), (recorded, replayed)
    for bucket, (want, got) in enumerate(zip(recorded, replayed, strict=True)):
        assert abs(got - want) <= 0.10 * want, (bucket, want, got, replayed)
    assert replay["unmatched"] == dict(_truth()[1])


def _deviation(replay: dict[str, Any]) -> str:
    """The largest share difference (points) and rate difference (%) of a replay, for the log."""
    share = max(abs(replay["replayed_share"][k] - v) for k, v in replay["recorded_share"].items())
    pairs = zip(replay["recorded_rate"], replay["replayed_rate"], strict=True)
    rate = max(abs(b - a) / a for a, b in pairs if a)
    return f"max share diff {share * 100:.2f} points, max rate diff {rate:.1%}, lateness {replay['lateness']}"


# ----------------------------------------------------------------------------- reading a log


def test_routes_come_from_the_app_and_a_literal_segment_wins() -> None:
    names = {r.name for r in api_routes()}
    assert {
        "GET /api/hs/{code}",
        "GET /api/hs/search",
        "POST /api/assessments",
        "GET /api/jobs/{job_id}/status",
    } <= names
    found = match_route("GET", "/api/hs/search")
    assert found is not None and found[0].name == "GET /api/hs/search"
    found = match_route("GET", "/api/hs/8471.30")
    assert found is not None and found[0].name == "GET /api/hs/{code}" and found[1] == {"code": "8471.30"}
    found = match_route("GET", "/api/verdicts/recent")
    assert found is not None and found[0].operator
    assert match_route("DELETE", "/api/hs/8471") is None and match_route("GET", "/api/hs/a/b") is None


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_a_log_becomes_templates_shares_a_rate_curve_and_its_leftovers(fmt: str, logs: dict[str, Path]) -> None:
    log = read_log(logs[fmt], fmt)
    known, unknown = _truth()
    assert log.counts() == known and log.unmatched == unknown
    # lines that do not parse: counted, the first three quoted, the rest of the log used
    assert log.unparsed == (3 if fmt == "har" else 5) and len(log.unparsed_examples) == 3
    if fmt != "har":
        assert log.unparsed_examples[0] == "[credential cut]"  # quoted without the credential
    assert log.lines == sum(known.values()) + sum(unknown.values()) + log.unparsed
    # the arrival curve per 10 s of recorded time (a combined log's second is spread within that second)
    per_bucket = Counter(int(r.offset_s // 10) for r in traffic() if r.name)
    assert log.rate() == pytest.approx([per_bucket[b] / 10 for b in range(len(RATES))])
    # codes, rule ids and tenants are the log's own values
    values = log.parameter_values()
    assert {"code", "rule_id", "tenant_id", "tenant"} <= set(values)
    plan = load_replay(logs[fmt], ReplayParams.NOTEBOOK.replace(log_format=fmt))
    assert len(plan.arrivals) == sum(known.values()) and len(plan.bodies) == known["POST /api/assessments"] + known[
        "POST /api/jobs/assessment/submit"]  # fmt: skip
    tenants = set(values["tenant_id"])
    assert {a[4] for a in plan.arrivals if a[3] == "POST /api/assessments"} <= tenants
    # a credential in a header or a query string is never kept
    text = json.dumps(plan.to_dict()) + json.dumps(log.summary())
    assert SECRET not in text and "token=" not in text and "Bearer" not in text


def test_bad_input_is_one_sentence_and_nothing_is_sent(
    tmp_path: Path, logs: dict[str, Path], counting_url: tuple[str, list[str]]
) -> None:
    url, seen = counting_url
    unknown_only = tmp_path / "other.log"
    unknown_only.write_text(
        '10.0.0.1 - - [01/Dec/2026:09:30:00 +0000] "GET /wp-login.php HTTP/1.1" 404 12 "-" "x"\n' * 3
    )
    (tmp_path / "empty.log").write_text("")
    (tmp_path / "bad.har").write_text("<html>not json</html>")
    cases = [
        (["--from-log", str(unknown_only)], "none to a route of this API"),
        (["--from-log", str(tmp_path / "empty.log")], "this file is empty"),
        (["--from-log", str(tmp_path / "bad.har"), "--format", "har"], "a HAR file"),
        (["--from-log", str(logs["combined"]), "--speed", "0"], "speed=0.0"),
        (["--from-log", str(logs["combined"]), "--speed", "-2"], "speed=-2.0"),
        (["--from-log", str(logs["combined"]), "--format", "xml"], "log_format='xml'"),
        (["--speed", "2"], "--speed=2.0"),
        (["--from-log", str(logs["combined"]), "--users", "50"], "--users=50"),
        (["--capacity"], "--capacity=True"),
    ]
    runner = CliRunner()
    for args, named in cases:
        done = runner.invoke(cli, ["load", *args, "--url", url, "--output-dir", str(tmp_path / "out")])
        lines = done.output.strip().splitlines()
        assert done.exit_code == 2 and len(lines) == 1, (args, done.output)
        assert lines[0].startswith("error: ") and named in lines[0], (args, lines[0])
    assert seen == []
    assert not (tmp_path / "out" / "04_load_replay.json").exists()


# ----------------------------------------------------------------------------- replaying it


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_open_replay_through_the_cli_keeps_the_mix_and_the_rate(
    fmt: str, logs: dict[str, Path], server: ApiServer, tmp_path: Path
) -> None:
    args = ["load", "--from-log", str(logs[fmt]), "--format", fmt, "--speed", f"{SPEED:g}", "--url", server.base_url,
            "--output-dir", str(tmp_path)]  # fmt: skip
    done = CliRunner().invoke(cli, args, env={"PSRA_ADMIN_TOKEN": server.admin_token})
    assert done.exit_code == 0, done.output
    saved = (tmp_path / "04_load_replay.json").read_text()
    assert SECRET not in saved and server.admin_token not in saved and server.admin_token not in done.output
    doc = json.loads(saved)
    replay = doc["replay"]
    _check_replay(replay)
    run = doc["run"]
    assert run["scheduled"] == replay["recorded_requests"] and run["sent"] + run["dropped"] == run["scheduled"]
    # every recorded request is answered; the only failures are status polls of jobs this replay did not submit
    endpoints = replay["endpoints"]
    assert sum(e["n"] for e in endpoints.values()) > 0.9 * replay["recorded_requests"]
    failing = {n for n, e in endpoints.items() if e["failures"]}
    assert failing <= {"GET /api/jobs/{job_id}/status"}, {n: endpoints[n] for n in failing}
    assert all(e["p95_ms"] is not None for n, e in endpoints.items() if n not in failing)
    assert REPLAY_TITLES[1] in done.output and REPLAY_TITLES[3] in done.output
    print(fmt, json.dumps({k: replay[k] for k in ("recorded_rate", "replayed_rate")}), _deviation(replay))
    assert Path(doc["files"]["rates_plot"]).stat().st_size > 1000  # the recorded vs replayed rate curve


def test_closed_replay_on_two_locust_workers_follows_the_recorded_rate(
    logs: dict[str, Path], server: ApiServer, tmp_path: Path
) -> None:
    params = ReplayParams.NOTEBOOK.replace(log_format="jsonl", speed=SPEED, mode="closed", processes=2)
    plan = load_replay(logs["jsonl"], params)
    doc = run_replay(plan, tmp_path, url=server.base_url, admin_token=server.admin_token)
    run, replay = doc["run"], doc["replay"]
    assert run["runner"] == "master" and run["workers_reporting"] == 2 and run["partitions"] == 2, run
    assert run["scheduled"] == run["arrivals"] == run["sent_total"] == len(plan.arrivals)
    _check_replay(replay)
    failing = {n for n, e in replay["endpoints"].items() if e["failures"]}
    assert failing <= {"GET /api/jobs/{job_id}/status"}, failing
    assert sum(e["n"] + e["failures"] for e in replay["endpoints"].values()) == len(plan.arrivals)
    # the shape ran users in proportion to the recorded rate (user_rps requests per second each)
    # (looking one bucket ahead, at least one per worker)
    users = {int(b): n for b, n in run["users"].items()}
    rates = replay["recorded_rate"]
    for b in range(len(rates)):
        expected = max(2, math.ceil(max(rates[b : b + 2]) * SPEED / params.user_rps))
        assert users[b] == expected, (b, users, rates)
    for written in tmp_path.rglob("*"):
        if written.is_file():
            assert server.admin_token not in written.read_text(errors="replace"), written
    print("closed", json.dumps({k: replay[k] for k in ("recorded_rate", "replayed_rate")}), _deviation(replay))


def test_without_url_the_replay_starts_and_stops_its_own_api(
    logs: dict[str, Path], seeded: Settings, tmp_path: Path
) -> None:
    plan = load_replay(logs["har"], ReplayParams.NOTEBOOK.replace(log_format="har", speed=12.0))
    doc = run_replay(plan, tmp_path, settings=seeded)
    assert doc["url"] is None and doc["replay"]["mode"] == "open"
    _check_replay(doc["replay"])
    assert doc["run"]["sent"] == doc["replay"]["replayed_requests"] == len(plan.arrivals)
    assert (tmp_path / "04_load_replay" / "server.log").exists()


def test_speed_must_be_positive() -> None:
    with pytest.raises(ParameterError, match="speed=0"):
        ReplayParams.NOTEBOOK.replace(speed=0.0)


def test_capacity_at_the_logs_mix_runs_on_a_copy_and_sends_only_the_logs_requests(
    logs: dict[str, Path], settings: Settings, make_seeded_database: Callable[..., str], tmp_path: Path
) -> None:
    """Replay, then a capacity search whose users draw the log's requests, on a 'both' copy of the dataset.

    The SLO (p95 <= 1 µs) is one no request meets, so the search's path is known without racing
    anything: the grid's first step misses it and the bracket is (none, 1 user).
    """
    dataset = settings.replace(db_dsn=make_seeded_database(2000, seed=7, tenants=200))
    with db.connect(dataset.db_dsn, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM psra_verdicts").fetchone()
    plan = load_replay(logs["jsonl"], ReplayParams.NOTEBOOK.replace(log_format="jsonl", speed=12.0))
    search = LoadTestParams.NOTEBOOK.replace(users=1, duration=1.0, spawn_rate=10.0, slo_p95_ms=0.001)
    doc = run_log_replay(dataset, plan, tmp_path, load=search)
    assert doc["configuration"] == "both" and doc["url"] is None
    _check_replay(doc["replay"])
    searched = doc["capacity"]
    assert searched is not None
    cap = searched["capacity"]
    assert (cap["low"], cap["high"]) == (None, 1) and [s["users"] for s in cap["steps"]] == [1], cap
    recorded = set(doc["replay"]["recorded_share"])
    hit = {name for st in searched["steps"] for name in st.get("endpoints", {})}
    assert hit and hit <= recorded, hit - recorded  # only the log's endpoints, none of the synthetic mix's own
    assert searched["locust"]["locust_requests"] == searched["locust"]["recorded_requests"] > 0
    # the replay's assessments were written to the copy, which is gone; the dataset is as it was
    with db.connect(dataset.db_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM psra_verdicts").fetchone() == before
        name = dataset.db_dsn.rsplit("/", 1)[-1].split("?")[0]
        copies = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (name[:40] + "_load_%",))
        assert copies.fetchall() == []
    titles = [t.title for t in replay_tables(doc)]
    assert titles == list(REPLAY_TITLES), titles
