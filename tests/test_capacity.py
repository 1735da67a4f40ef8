"""Users supported to within 10 %: the capacity search's decisions, its read-back, and a real Locust run of it.

The decisions are checked on systems whose capacity is known (a step passes when its users are at
most the capacity, or per a scripted list), so no timing decides them; the real run holds the SLO
at the two ends where the outcome is certain (every step passes, or none does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from psra_bench.exceptions import ParameterError
from psra_bench.load.api_server import start_api_server, stop_api_server
from psra_bench.load.capacity import CapacitySearch, SearchPlan, capacity
from psra_bench.load.experiment import _open_capacity
from psra_bench.load.generators import GeneratorProcess, LoadPlan, run_locust
from psra_bench.settings import Settings

GRID = (10, 20, 40, 80, 160)


def _plan(**changes: Any) -> SearchPlan:
    return SearchPlan(**({"grid": GRID, "headline": 20, "slo_p95_ms": 200, "duration_s": 8, "short_s": 4} | changes))


def _run(plan: SearchPlan, passes: Callable[[int], bool]) -> tuple[CapacitySearch, list[tuple[int, str, float]]]:
    """Drive a search against a system: (the search, each step as users, kind, seconds measured)."""
    search, taken = CapacitySearch(plan), []
    step = search.first()
    while step is not None:
        taken.append((step.users, step.kind, step.measure_s))
        step = search.after(step.users, passes(step.users))
    return search, taken


@pytest.mark.parametrize("limit", [7, 19, 30, 75, 150, 159, 230, 500])
def test_the_search_brackets_a_known_capacity_within_ten_percent(limit: int) -> None:
    search, taken = _run(_plan(), lambda users: users <= limit)
    assert search.low is not None and search.high is not None
    assert search.low <= limit < search.high, taken
    assert search.high / search.low <= 1.10 or search.high == search.low + 1, taken
    assert search.confirmed and taken[-1] == (search.low, "confirm", 8)
    assert len(taken) <= len(GRID) + 6
    # Far from the crossing a grid step is measured briefly; the headline and the deciding steps in full.
    for users, kind, seconds in taken:
        assert seconds == (4 if kind == "grid" and users != 20 else 8)


def test_a_doubling_grid_would_have_said_80_where_the_search_says_about_150() -> None:
    search, taken = _run(_plan(), lambda users: users <= 150)
    assert [u for u, kind, _ in taken if kind == "grid"] == [10, 20, 40, 80, 160]
    assert [u for u, kind, _ in taken if kind != "grid"] == [113, 134, 146, 146]
    assert (search.low, search.high) == (146, 160)


def test_a_low_end_that_fails_its_second_look_moves_the_search_below_it() -> None:
    looks: dict[int, int] = {}

    def flaky(users: int) -> bool:  # 113 passes the first time, not the second
        looks[users] = looks.get(users, 0) + 1
        return users <= 100 or (users == 113 and looks[users] == 1)

    search, taken = _run(_plan(extra_steps=8), flaky)
    assert (113, "confirm", 8) in taken or (113, "bisect", 8) in taken
    assert search.high is not None and search.low is not None and search.high <= 113
    assert search.low <= 100 < search.high and search.confirmed


def test_every_step_passing_is_a_lower_bound_and_nothing_passing_halves_down() -> None:
    search, taken = _run(_plan(), lambda users: True)  # past the grid: two doublings, then a lower bound
    assert (search.low, search.high, [u for u, _, _ in taken]) == (640, None, [10, 20, 40, 80, 160, 320, 640])
    search, taken = _run(_plan(), lambda users: False)
    assert [u for u, _, _ in taken] == [10, 5, 2, 1] and (search.low, search.high) == (None, 1)


def test_the_budget_ends_a_search_unconfirmed() -> None:
    search, taken = _run(_plan(extra_steps=2), lambda users: users <= 150)
    assert len(taken) == len(GRID) + 2 and not search.confirmed


def test_bad_plans_are_refused_in_one_sentence() -> None:
    for bad, field in (({"grid": (20, 10)}, "steps"), ({"bracket": 1.0}, "bracket"), ({"extra_steps": 0}, "extra")):
        with pytest.raises(ParameterError, match=field):
            _plan(**bad)


def _summary(users: int, p95: float, n: int = 500, failure_rate: float = 0.0) -> dict[str, Any]:
    return {"users": users, "overall": {"n": n, "p95_ms": p95, "p95_ci_ms": [p95 * 0.9, p95 * 1.1],
                                        "failure_rate": failure_rate}}  # fmt: skip


def test_capacity_reads_the_steps_back_with_their_kinds() -> None:
    plan = _plan()
    _, taken = _run(plan, lambda users: users <= 150)
    steps = [_summary(u, 100.0 if u <= 150 else 250.0) for u, _, _ in taken]
    cap = capacity(steps, plan)
    assert [s["kind"] for s in cap["steps"]] == [kind for _, kind, _ in taken]
    assert cap["low"] is not None and cap["high"] is not None and cap["low"] <= 150 < cap["high"]
    assert cap["within_bracket"] and cap["confirmed"]
    assert all(s["n"] == 500 and s["p95_ci_ms"] for s in cap["steps"])
    # A step with too many failures misses the SLO whatever its p95; an empty one too.
    cap = capacity([_summary(10, 50), _summary(20, 50, failure_rate=0.05), _summary(40, 50, n=0)], plan)
    assert (cap["low"], cap["high"]) == (10, 20) and not cap["confirmed"]


# ----------------------------------------------------------------------------- a real Locust run


@pytest.fixture(scope="module")
def api_url(
    settings: Settings, make_seeded_database: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """The real API on a small seeded database: its URL and its operator token."""
    dsn = make_seeded_database(1500)
    server = start_api_server(settings.replace(db_dsn=dsn), tmp_path_factory.mktemp("api") / "server.log")
    yield server.base_url, server.admin_token
    stop_api_server(server)


@pytest.mark.parametrize("slo_p95_ms", [60_000.0, 0.001], ids=["every-step-passes", "no-step-passes"])
def test_locust_runs_the_search_step_by_step(api_url: tuple[str, str], slo_p95_ms: float, tmp_path: Path) -> None:
    plan = LoadPlan.make(users=2, spawn_rate=8, duration=1, arrival_rate=5, slo_p95_ms=slo_p95_ms, settle_s=0.5,
                         think_s=(0.05, 0.1), steps=None)  # fmt: skip
    plan = LoadPlan(**{**plan.__dict__, "steps": (2, 4)})  # a two-step grid keeps the run short
    assert plan.search
    r = run_locust(api_url[0], plan, tmp_path, admin_token=api_url[1])
    cap = capacity(r["steps"], plan.search_plan)
    if slo_p95_ms > 1:
        assert [s["users"] for s in r["steps"]] == [2, 4, 8, 16] and (cap["low"], cap["high"]) == (16, None)
    else:  # 2 fails, then halving: 1 fails too
        assert [s["users"] for s in r["steps"]] == [2, 1] and (cap["low"], cap["high"]) == (None, 1)
    assert all(s["kind"] != "unplanned" and s["n"] > 0 for s in cap["steps"]), cap
    assert r["accounted"]


def test_the_open_model_search_runs_one_open_model_run_per_step(api_url: tuple[str, str], tmp_path: Path) -> None:
    """An SLO no request meets: the first rate fails, the search halves down to 1 req/s, every run recorded."""
    plan = LoadPlan.make(users=2, spawn_rate=8, duration=1, arrival_rate=4, slo_p95_ms=0.001, settle_s=0.2,
                         open_search=True)  # fmt: skip
    cap = _open_capacity(api_url[0], plan, tmp_path, GeneratorProcess(), api_url[1])
    assert [(s["users"], s["kind"], s["passed"]) for s in cap["steps"]] == [
        (4, "grid", False), (2, "bisect", False), (1, "bisect", False)
    ]  # fmt: skip
    assert (cap["low"], cap["high"]) == (None, 1) and cap["steps"][0]["n"] > 0
    assert len(list(tmp_path.glob("open-*/open.json"))) == 3
