"""Progress of a report run: events appended by the measurements, shown by the runner without drowning a log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from psra_bench.measure import progress
from psra_bench.report.progress import ProgressFollower, render
from psra_bench.settings import PROGRESS_FILE_ENV


class ManualClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _append(path: Path, stage: str, message: str, done: int | None = None, total: int | None = None) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps({"t": 0, "stage": stage, "message": message, "done": done, "total": total}) + "\n")


def test_note_writes_only_when_a_run_follows_and_at_most_once_a_second_per_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock()
    monkeypatch.setattr(progress, "_clock", clock)
    monkeypatch.setattr(progress, "_last_written", {})
    monkeypatch.delenv(PROGRESS_FILE_ENV, raising=False)
    progress.note("query latency", "round 1", done=0, total=4)  # nobody follows: nothing, nowhere
    target = tmp_path / "progress.jsonl"
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(target))
    progress.note("query latency", "round 1", done=0, total=4)
    progress.note("query latency", "round 2", done=1, total=4)  # the same second: dropped
    progress.note("load steps", "step 1/3", done=0, total=3)  # another stage has its own second
    clock.now = 1.0
    progress.note("query latency", "round 3", done=2, total=4)
    progress.note("query latency", "all rounds measured", done=4, total=4)  # the last is always written
    events = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(e["stage"], e["message"]) for e in events] == [
        ("query latency", "round 1"),
        ("load steps", "step 1/3"),
        ("query latency", "round 3"),
        ("query latency", "all rounds measured"),
    ]


def test_plain_lines_show_each_stage_its_end_and_at_most_one_line_per_interval(tmp_path: Path) -> None:
    path, lines, clock = tmp_path / "progress.jsonl", [], ManualClock()
    _append(path, "earlier notebook", "done", 1, 1)  # written before this follower began: not shown again
    follower = ProgressFollower(path, lines.append, indent="", line_interval_s=15, clock=clock)
    _append(path, "load test", "configuration baseline (1 of 2)", 0, 2)
    _append(path, "load steps", "step 1/3: 10 users", 0, 3)
    follower.poll()
    clock.now = 5
    _append(path, "load steps", "step 2/3: 20 users; 10 users: p95 40.0 ms (n=800)", 1, 3)
    follower.poll()  # 5 s after the last line: kept back
    assert lines == ["load test: [....................] 0/2 configuration baseline (1 of 2)",
                     "load steps: [....................] 0/3 step 1/3: 10 users"]  # fmt: skip
    clock.now = 21
    _append(path, "load steps", "step 3/3: 40 users; 20 users: p95 60.0 ms (n=1,600)", 2, 3)
    _append(path, "load test", "configuration both (2 of 2)", 1, 2)
    with open(path, "a") as fh:
        fh.write('{"stage": "load st')  # half a line: waits for the rest
    follower.poll()
    assert lines[2:] == [
        "load steps: [#############.......] 2/3 step 3/3: 40 users; 20 users: p95 60.0 ms (n=1,600)",
        "load test: [##########..........] 1/2 configuration both (2 of 2)",
    ]
    with open(path, "a") as fh:
        fh.write('eps", "message": "all steps done", "done": 3, "total": 3}\n')
    follower.poll()
    assert lines[-1] == "load steps: [####################] 3/3 all steps done"
    assert len(follower.events) == 6


def test_a_terminal_gets_every_event_on_one_status_line_cleared_at_the_end(tmp_path: Path) -> None:
    path, said, shown = tmp_path / "progress.jsonl", [], []
    with ProgressFollower(path, said.append, live=shown.append, indent="  "):
        _append(path, "query latency", "round 1: baseline", 0, 2)
        _append(path, "query latency", "round 2: spec", 1, 2)
    assert said == []
    assert shown == ["  query latency: [....................] 0/2 round 1: baseline",
                     "  query latency: [##########..........] 1/2 round 2: spec", ""]  # fmt: skip
    assert render({"stage": "cache replay", "message": "warming up"}) == "cache replay: warming up"
