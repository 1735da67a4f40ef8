"""Statistics, benchmark loop, interleaved A/B runner and decisions: known answers, no wall-clock asserts.

Timing logic is checked with a fake clock (each call advances it by a known number of
nanoseconds), so every latency in those tests is exact; real-timer tests check only structure.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from psra_bench.exceptions import MeasurementError, ParameterError
from psra_bench.measure.stats import (
    FASTER,
    NO_CHANGE,
    SLOWER,
    LatencyStats,
    ab_schedule,
    bootstrap_percentile_ci,
    bootstrap_ratio_ci,
    compare_to_previous,
    decide,
    percentile,
    summarize,
)

ONE_TO_HUNDRED = [float(v) for v in range(1, 101)]


class FakeClock:
    """A nanosecond clock that only moves when a fake workload calls :meth:`advance`."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += int(round(ms * 1e6))

    def workload(self, durations_ms: Iterator[float]) -> Callable[[], None]:
        return lambda: self.advance(next(durations_ms))


# --------------------------------------------------------------------------- percentiles


@pytest.mark.parametrize(
    ("samples", "q", "expected"),
    [
        (ONE_TO_HUNDRED, 50, 50.5),
        (ONE_TO_HUNDRED, 95, 95.05),
        (ONE_TO_HUNDRED, 99, 99.01),
        ([3.0, 1.0, 2.0, 5.0, 4.0], 50, 3.0),
        ([3.0, 1.0, 2.0, 5.0, 4.0], 95, 4.8),  # h = 4 * 0.95 = 3.8 -> 4 + 0.8 * (5 - 4)
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([7.0], 95, 7.0),
    ],
)
def test_percentile_known_answers(samples: list[float], q: float, expected: float) -> None:
    assert percentile(samples, q) == pytest.approx(expected, abs=1e-12)


def test_percentile_rejects_bad_q_and_bad_samples() -> None:
    with pytest.raises(ParameterError, match="q=101"):
        percentile([1.0, 2.0], 101)
    with pytest.raises(MeasurementError, match="negative or non-finite"):
        percentile([1.0, float("nan")], 50)
    with pytest.raises(MeasurementError, match="0 sample"):
        percentile([], 50)


def test_summarize_known_answers() -> None:
    s = summarize(list(reversed(ONE_TO_HUNDRED)))
    assert (s.n, s.min, s.max, s.mean) == (100, 1.0, 100.0, 50.5)
    assert s.stdev == pytest.approx(statistics.stdev(ONE_TO_HUNDRED))
    assert (s.p50, s.p95, s.p99) == pytest.approx((50.5, 95.05, 99.01))
    assert s.median == s.p50
    assert s.p50_ci[0] < s.p50 < s.p50_ci[1]
    assert s.p95_ci[0] < s.p95 <= s.p95_ci[1]
    assert s.p50_ci[1] - s.p50_ci[0] < 30  # a real interval, not the whole range
    assert s.samples_ms[0] == 100.0  # measurement order kept


def test_summarize_is_reproducible_and_seeded() -> None:
    x = np.random.default_rng(3).lognormal(0, 0.6, 150)
    assert summarize(x, seed=5) == summarize(x, seed=5)
    assert summarize(x, seed=5).p50_ci != summarize(x, seed=6).p50_ci


def test_summarize_rejects_bad_samples() -> None:
    with pytest.raises(MeasurementError, match="1 sample"):
        summarize([1.0])
    with pytest.raises(MeasurementError, match="negative"):
        summarize([1.0, -2.0])
    with pytest.raises(MeasurementError, match="flat list"):
        summarize([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ParameterError, match="resamples=10"):
        summarize([1.0, 2.0], resamples=10)
    with pytest.raises(ParameterError, match="confidence=1.5"):
        summarize([1.0, 2.0], confidence=1.5)


def test_to_dict_is_json_and_round_trips() -> None:
    s = summarize([4.0, 1.0, 3.0, 2.0, 8.0])
    d = json.loads(json.dumps(s.to_dict()))
    assert d["n"] == 5 and d["unit"] == "ms" and d["percentile_method"] == "linear"
    assert d["p50_ci"] == list(s.p50_ci) and d["p95_ci"] == list(s.p95_ci)
    assert d["samples_ms"] == [4.0, 1.0, 3.0, 2.0, 8.0]
    back = LatencyStats.from_dict(d)
    assert back == s and back.samples_ms == s.samples_ms
    assert "samples_ms" not in s.to_dict(include_samples=False)
    with pytest.raises(MeasurementError, match="not a latency summary"):
        LatencyStats.from_dict({"n": 3})


def test_bootstrap_ci_of_median_covers_true_median() -> None:
    """95 % percentile-bootstrap CIs of the median of 200 lognormal samples cover the truth ~95 % of the time."""
    rng = np.random.default_rng(20240501)
    mu, sigma, trials = 1.0, 0.5, 200
    true_median = float(np.exp(mu))
    covered = 0
    for t in range(trials):
        x = rng.lognormal(mu, sigma, 200)
        ((lo, hi),) = bootstrap_percentile_ci(x, [50], resamples=1000, seed=t)
        covered += lo <= true_median <= hi
    assert 0.90 <= covered / trials <= 0.99


def test_bootstrap_ratio_ci_brackets_true_ratio() -> None:
    rng = np.random.default_rng(8)
    a = rng.lognormal(np.log(10), 0.3, 400)
    b = rng.lognormal(np.log(5), 0.3, 400)
    lo, hi = bootstrap_ratio_ci(a, b, seed=1)
    assert lo < 0.5 < hi and hi - lo < 0.2
    assert bootstrap_ratio_ci(a, b, seed=1) == (lo, hi)


# --------------------------------------------------------------------------- A/B runner


def test_ab_schedule_orders() -> None:
    assert "".join(ab_schedule(4)) == "ABBAABBA"
    assert "".join(ab_schedule(3, "abba")) == "ABBAAB"
    assert "".join(ab_schedule(3, "alternate")) == "ABABAB"
    rnd = ab_schedule(40, "random", seed=7)
    assert rnd == ab_schedule(40, "random", seed=7)
    pairs = ["".join(rnd[i : i + 2]) for i in range(0, 80, 2)]
    assert set(pairs) == {"AB", "BA"}
    # ABBA: A and B sit at the same mean position, so a linear drift cancels.
    positions = {side: [i for i, s in enumerate(ab_schedule(8)) if s == side] for side in "AB"}
    assert np.mean(positions["A"]) == np.mean(positions["B"])
    with pytest.raises(ParameterError, match="order='zigzag'"):
        ab_schedule(4, "zigzag")
    with pytest.raises(ParameterError, match="rounds=0"):
        ab_schedule(0)


# --------------------------------------------------------------------------- decisions


def _lognormal(median: float, n: int, seed: int, sigma: float = 0.25) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(np.log(median), sigma, n)


def test_decide_clearly_separated_samples() -> None:
    slow, fast = _lognormal(10, 100, 1), _lognormal(4, 100, 2)
    assert decide(slow, fast).verdict == FASTER
    d = decide(fast, slow)
    assert d.verdict == SLOWER and d.is_regression
    assert d.method == "mann-whitney" and d.n_a == d.n_b == 100
    assert d.improvement_pct == pytest.approx((d.median_a - d.median_b) / d.median_a * 100)


def test_decide_identical_samples_is_no_change() -> None:
    a = _lognormal(5, 200, 3)
    d = decide(a, np.random.default_rng(4).permutation(a))
    assert d.verdict == NO_CHANGE and d.p_value == pytest.approx(1.0) and d.ratio == 1.0
    tied = decide([2.0] * 5, [2.0] * 5)
    assert tied.verdict == NO_CHANGE and tied.p_value == 1.0


def test_decide_same_distribution_rarely_flags() -> None:
    flagged = sum(
        decide(_lognormal(5, 100, 2 * i, sigma=0.8), _lognormal(5, 100, 2 * i + 1, sigma=0.8), factor=1.0).verdict
        != NO_CHANGE
        for i in range(40)
    )
    assert flagged <= 6  # alpha = 5 %: about 2 of 40 expected


def test_decide_big_ratio_with_tiny_n_is_not_significant() -> None:
    d = decide([10.0, 11.0, 12.0], [1.0, 1.1, 1.2])
    assert d.speedup == pytest.approx(10)
    assert d.p_value == pytest.approx(0.1)  # the smallest exact two-sided p for 3 vs 3
    assert d.verdict == NO_CHANGE


def test_decide_significant_but_small_ratio_is_gated_by_factor() -> None:
    a = _lognormal(10, 3000, 5, sigma=0.1)
    b = _lognormal(9.5, 3000, 6, sigma=0.1)  # 5 % faster, very significant
    d = decide(a, b, factor=1.1)
    assert d.p_value is not None and d.p_value < 1e-6
    assert d.verdict == NO_CHANGE
    assert decide(a, b, factor=1.03).verdict == FASTER
    assert decide(a, b, factor=1.07).verdict == NO_CHANGE
    assert decide(b, a, factor=1.03).verdict == SLOWER


def test_decide_rejects_bad_input() -> None:
    with pytest.raises(ParameterError, match="factor=0.5"):
        decide([1.0, 2.0], [1.0, 2.0], factor=0.5)
    with pytest.raises(ParameterError, match="alpha=1"):
        decide([1.0, 2.0], [1.0, 2.0], alpha=1)
    with pytest.raises(MeasurementError, match="median of A is 0"):
        decide([0.0, 0.0, 1.0], [1.0, 2.0])
    with pytest.raises(MeasurementError, match="b_samples has 1 sample"):
        decide([1.0, 2.0], [1.0])


def _run(median: float, seed: int, n: int = 300) -> dict[str, object]:
    return json.loads(json.dumps(summarize(_lognormal(median, n, seed)).to_dict()))


def _without_samples(run: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in run.items() if k != "samples_ms"}


def test_compare_to_previous_flags_a_slowed_run_from_samples_and_from_summaries() -> None:
    prev, slowed = _run(8, 1), _run(12, 2)  # 50 % slower
    d = compare_to_previous(prev, slowed)
    assert d.verdict == SLOWER and d.is_regression and d.method == "mann-whitney"
    s = compare_to_previous(_without_samples(prev), _without_samples(slowed))
    assert s.verdict == SLOWER and s.method == "ci-overlap" and s.p_value is None
    assert s.ratio == pytest.approx(slowed["p50"] / prev["p50"])  # type: ignore[operator]
    assert compare_to_previous(slowed, prev).verdict == FASTER


def test_compare_to_previous_same_distribution_is_no_change() -> None:
    prev, again = _run(8, 3), _run(8, 4)
    assert compare_to_previous(prev, again).verdict == NO_CHANGE
    assert compare_to_previous(_without_samples(prev), _without_samples(again)).verdict == NO_CHANGE
    # A 50 % slowdown is under a factor of 2: not a regression at that threshold.
    assert compare_to_previous(prev, _run(12, 5), factor=2.0).verdict == NO_CHANGE


def test_compare_to_previous_accepts_stats_objects_and_rejects_bad_summaries() -> None:
    prev, new = summarize(_lognormal(8, 200, 6)), summarize(_lognormal(16, 200, 7))
    assert compare_to_previous(prev, new).verdict == SLOWER
    with pytest.raises(MeasurementError, match="p50_ci"):
        compare_to_previous({"n": 3, "p50": 1.0}, {"n": 3, "p50": 2.0})
    with pytest.raises(MeasurementError, match="prev must be"):
        compare_to_previous([1.0, 2.0], new)  # type: ignore[arg-type]


def test_one_formatting_module_writes_every_figure_one_way() -> None:
    from psra_bench.measure import format as f

    assert f.interval([1.234, 5.678]) == "[1.23–5.68]" and f.interval(None) == "–"
    assert f.percent_ci([0.801, 0.902]) == "[80.1–90.2 %]" and f.percent(0.853) == "85.3 %"
    assert f.speedup_text(0.5, [0.4, 0.625]) == "2.00× [1.60–2.50×]" and f.times_ci(1.35, [1.2, 1.5]) == (
        "1.35× [1.20–1.50×]"
    )
    assert f.speedup_text(1 / 320) == "320×" and f.p_text(1e-9) == "< 0.001" and f.p_text(0.04321) == "0.043"
    assert (f.ms(0.05234), f.ms(12.345), f.ms(None)) == ("0.052", "12.35", "–")
    assert f.ms_ci(0.05234, [0.05, 0.055]) == "0.052 [0.050–0.055]"
    assert (f.mb(2**20), f.mb(1.5 * 2**30), f.mb_number(16384)) == ("1.00 MB", "1,536.00 MB", "0.02")
    assert (f.number(1234), f.number(1.5), f.number(True), f.number(float("nan"))) == ("1,234", "1.50", "yes", "–")
