"""Users supported, measured to within a bracket: a doubling grid, then bisection, then a second look at the low end.

The step load used to answer "users supported" on a doubling grid (10, 20, 40, 80, 160): a
configuration that holds 150 users read as 80. :class:`CapacitySearch` decides each step from
the one before, while Locust runs (loadtests/locustfile.py calls it at every step boundary):

1. **Grid.** The plan's steps in order until one misses the SLO (p95 over ``slo_p95_ms``, or a
   failure rate at or over ``max_failure_rate``, or no successful request); when every one meets
   it, doubling on from the last (within the extra budget) until one does not. Every grid step but
   the headline one (``users``) is measured for ``short_s`` seconds: far from the crossing a
   shorter look says enough, and the time goes to the steps that decide the answer.
2. **Bisection.** Between the highest passing step L and the failing one H, the geometric
   midpoint, until H / L <= ``bracket`` (1.10: within 10 %; or H = L + 1, as narrow as whole
   users get) or ``extra_steps`` is spent.
3. **Confirmation.** L measured again; when it fails this time, H becomes L and the search goes
   on below it (within the budget).

Bisection and confirmation steps get the full ``duration_s``. :func:`capacity` reads the
finished steps back (replaying the same decisions, so it also says which kind each step was)
into the ``capacity`` object of a load run's results: ``{"low", "high", "steps": [...]}``. The
open model's search (``open_capacity``) runs the same decisions over arrival rates (requests per
second instead of users), one open-model run per step, a step passing when its p95 from the
intended start meets the SLO and at most 1 % of its arrivals were late or dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from psra_bench.exceptions import ParameterError
from psra_bench.results import Capacity, CapacityStep

__all__ = ["BRACKET", "EXTRA_STEPS", "SearchPlan", "Step", "CapacitySearch", "step_passed", "capacity"]

#: The bracket the search narrows to: H / L at most this (within 10 %).
BRACKET = 1.10
#: Steps a search may add after the grid: doublings past it, bisection, confirmation.
EXTRA_STEPS = 6
#: Doublings past the grid's largest step at most (160 users -> 320 -> 640): ramps grow with the step.
MAX_DOUBLINGS = 2
#: A step with this share of failed requests (or more) misses the SLO, whatever its p95.
MAX_FAILURE_RATE = 0.01

Kind = Literal["grid", "bisect", "confirm"]


@dataclass(frozen=True)
class SearchPlan:
    """What a search may do: its grid, the SLO, how narrow, how many extra steps, how long each look."""

    grid: tuple[int, ...]
    headline: int
    slo_p95_ms: float
    duration_s: float
    short_s: float
    bracket: float = BRACKET
    extra_steps: int = EXTRA_STEPS
    max_failure_rate: float = MAX_FAILURE_RATE
    max_doublings: int = MAX_DOUBLINGS

    def __post_init__(self) -> None:
        if not self.grid or any(u < 1 for u in self.grid) or list(self.grid) != sorted(set(self.grid)):
            raise ParameterError("steps", list(self.grid), "increasing user counts >= 1")
        if not self.bracket > 1:
            raise ParameterError("bracket", self.bracket, "a ratio > 1 such as 1.1 (within 10 %)")
        if self.extra_steps < 1:
            raise ParameterError("extra_steps", self.extra_steps, "a whole number >= 1")


@dataclass(frozen=True)
class Step:
    """One step the search asks for: its users, how long to measure it, and why."""

    users: int
    measure_s: float
    kind: Kind


@dataclass
class CapacitySearch:
    """The search's state; :meth:`first` gives the first step, :meth:`after` each next one (None: done)."""

    plan: SearchPlan
    low: int | None = None
    high: int | None = None
    confirmed: bool = False
    extra: int = 0
    outcomes: list[tuple[int, bool]] = field(default_factory=list)
    _phase: Kind = "grid"
    _grid_index: int = 0

    def _step(self, users: int, kind: Kind) -> Step:
        short = kind == "grid" and users != self.plan.headline
        return Step(users, self.plan.short_s if short else self.plan.duration_s, kind)

    def first(self) -> Step:
        """The first grid step."""
        return self._step(self.plan.grid[0], "grid")

    def after(self, users: int, passed: bool) -> Step | None:
        """The step after one of ``users`` users that ``passed`` (or not); None when the search is done."""
        self.outcomes.append((users, passed))
        if self._phase == "grid":
            if passed:
                self.low, self._grid_index = users, self._grid_index + 1
                if self._grid_index < len(self.plan.grid):
                    return self._step(self.plan.grid[self._grid_index], "grid")
                doubled = users // self.plan.grid[-1] > 2 ** (self.plan.max_doublings - 1)
                if doubled or self.extra + 2 > self.plan.extra_steps:
                    return None  # the answer is a lower bound: no doubling (or no budget to bracket one) left
                self.extra += 1  # every step met the SLO: double on (its bisection needs budget too)
                return self._step(users * 2, "grid")
            self.high = users
        elif self._phase == "bisect":
            if passed:
                self.low = users
            else:
                self.high = users
        elif passed:  # the confirmation of the low end
            self.confirmed = True
            return None
        else:  # the low end failed its second look: the search goes on below it
            self.high = users
            self.low = max((u for u, ok in self.outcomes if u < users and self._always_passed(u)), default=None)
        return self._narrow()

    def _always_passed(self, users: int) -> bool:
        return all(ok for u, ok in self.outcomes if u == users)

    def _narrow_enough(self, low: int, high: int) -> bool:
        """Within the bracket, or as narrow as whole users get (high = low + 1)."""
        return high / low <= self.plan.bracket or high - low <= 1

    def _narrow(self) -> Step | None:
        if self.extra >= self.plan.extra_steps:
            return None  # out of budget: the bracket is as narrow as it got, unconfirmed
        self.extra += 1
        assert self.high is not None
        if self.low is None:  # nothing passed yet: halve downwards
            if self.high <= 1:
                return None
            self._phase = "bisect"
            return self._step(max(1, self.high // 2), "bisect")
        middle = round(math.sqrt(self.low * self.high))
        if self._narrow_enough(self.low, self.high) or not self.low < middle < self.high:
            self._phase = "confirm"
            return self._step(self.low, "confirm")
        self._phase = "bisect"
        return self._step(middle, "bisect")


def step_passed(overall: Mapping[str, Any], slo_p95_ms: float, max_failure_rate: float = MAX_FAILURE_RATE) -> bool:
    """Whether a step's overall summary met the SLO: successes, p95 within it, failure rate under the cap."""
    p95 = overall.get("p95_ms")
    failure_rate = overall.get("failure_rate") or 0.0
    return bool(overall.get("n")) and p95 is not None and p95 <= slo_p95_ms and failure_rate < max_failure_rate


def capacity(steps: Sequence[Mapping[str, Any]], plan: SearchPlan, passed: Sequence[bool] | None = None) -> Capacity:
    """The bracket from a search's finished steps (in the order run), each step with its kind, p95, CI and n.

    ``low`` is the highest user count that met the SLO every time it was measured below the lowest
    that missed it, ``high`` that lowest miss (None when every step met it: ``low`` is then a lower
    bound). ``confirmed``: the low end met the SLO on its second look. ``passed`` gives each step's
    verdict when the SLO is more than :func:`step_passed` (the open model's late and dropped arrivals).
    """
    search = CapacitySearch(plan)
    expected: Step | None = search.first()
    out: list[CapacityStep] = []
    for i, st in enumerate(steps):
        overall = st.get("overall") or {}
        ok = passed[i] if passed is not None else step_passed(overall, plan.slo_p95_ms, plan.max_failure_rate)
        kind: str = expected.kind if expected is not None and expected.users == st.get("users") else "unplanned"
        out.append(
            {
                "users": int(st.get("users") or 0),
                "kind": kind,
                "passed": ok,
                "p95_ms": overall.get("p95_ms"),
                "p95_ci_ms": overall.get("p95_ci_ms"),
                "n": int(overall.get("n") or 0),
                "failure_rate": overall.get("failure_rate"),
            }
        )
        expected = search.after(int(st.get("users") or 0), ok) if expected is not None else None
    failing = [s["users"] for s in out if not s["passed"]]
    high = min(failing) if failing else None
    below = {s["users"] for s in out if high is None or s["users"] < high}
    held = [u for u in below if all(s["passed"] for s in out if s["users"] == u)]
    low = max(held) if held else None
    return {
        "low": low,
        "high": high,
        "bracket": plan.bracket,
        "within_bracket": low is not None and high is not None and search._narrow_enough(low, high),
        "confirmed": search.confirmed,
        "slo_p95_ms": plan.slo_p95_ms,
        "steps": out,
    }
