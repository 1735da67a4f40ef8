"""Latency statistics, the interleaved A/B schedule and regression decisions.

Method, stated once so every number in a report can be traced back to it:

* **Unit.** Every latency is in milliseconds, measured per call by the experiments with an
  integer-nanosecond timer (``time.perf_counter_ns``).
* **Percentiles** use numpy's default ``"linear"`` method (Hyndman & Fan type 7): for sorted
  samples ``x[0..n-1]`` the q-th percentile is read at position ``h = (n - 1) * q / 100`` and
  interpolated between ``x[floor(h)]`` and ``x[ceil(h)]``. For 1..100 ms this gives p50 = 50.5,
  p95 = 95.05, p99 = 99.01. The spec's ``sorted(times)[int(n * 0.95)]`` reads ``x[95]`` = 96
  instead; type 7 is smooth, which the bootstrap needs.
* **Confidence intervals** of p50 and p95 are percentile-bootstrap intervals (default 2,000
  resamples, 95 %) from a seeded ``numpy.random.Generator``, so the same samples and seed always
  give the same interval.
* **A/B decisions** need both a practical and a statistical effect: B is "faster" only when
  ``median_A / median_B >= factor`` *and* the two-sided Mann-Whitney U test gives ``p < alpha``;
  "slower" is the mirror image (``median_B / median_A >= factor``); anything else is "no
  significant change". The test assumes independent samples; interleaving rounds (below) keeps
  slow drift of a shared, noisy machine from landing on one side only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final, cast

import numpy as np

from psra_bench.exceptions import MeasurementError, ParameterError
from psra_bench.results import DecisionDict, LatencySummary

__all__ = [
    "FASTER",
    "SLOWER",
    "NO_CHANGE",
    "ORDERS",
    "PERCENTILE_METHOD",
    "LatencyStats",
    "Decision",
    "percentile",
    "bootstrap_percentile_ci",
    "bootstrap_ratio_ci",
    "summarize",
    "ab_schedule",
    "decide",
    "compare_to_previous",
]

#: Verdict: B (or the new run) is faster by at least ``factor`` and significantly so.
FASTER = "faster"
#: Verdict: B (or the new run) is slower by at least ``factor`` and significantly so.
SLOWER = "slower"
#: Verdict: the difference is under ``factor`` or not significant.
NO_CHANGE = "no significant change"
#: Round orders of :func:`ab_schedule`.
ORDERS = ("abba", "alternate", "random")
#: numpy percentile method used everywhere in this module.
PERCENTILE_METHOD: Final = "linear"

_DEFAULT_RESAMPLES = 2000
#: Upper bound on resampled values held in memory at once by the bootstrap (about 32 MB).
_CHUNK_ELEMENTS = 4_000_000

# --------------------------------------------------------------------------- validation


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParameterError(name, value, f"use a whole number >= {minimum}")
    return value


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ParameterError(name, value, "use a number strictly between 0 and 1")
    return float(value)


def _check_factor(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value < math.inf:
        raise ParameterError("factor", value, "use a finite number >= 1 (1.1 means 10 % faster or slower)")
    return float(value)


def _samples(name: str, values: Sequence[float] | np.ndarray, minimum: int = 2) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise MeasurementError(f"{name} must be a list of latencies in ms; got {type(values).__name__}") from e
    if x.ndim != 1:
        raise MeasurementError(f"{name} must be a flat list of latencies in ms; got shape {x.shape}")
    if x.size < minimum:
        raise MeasurementError(f"{name} has {x.size} sample(s); at least {minimum} are needed")
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise MeasurementError(f"{name} contains a negative or non-finite latency; only finite values >= 0 are allowed")
    return x


# --------------------------------------------------------------------------- statistics


def _check_q(q: object) -> None:
    if isinstance(q, bool) or not isinstance(q, int | float) or not 0 <= q <= 100:
        raise ParameterError("q", q, "use a percentile between 0 and 100")


def percentile(samples: Sequence[float] | np.ndarray, q: float) -> float:
    """The q-th percentile (0-100) of ``samples`` with the module's method (numpy 'linear', type 7)."""
    _check_q(q)
    x = _samples("samples", samples, minimum=1)
    return float(np.percentile(x, q, method=PERCENTILE_METHOD))


def _resampled_percentiles(x: np.ndarray, qs: Sequence[float], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Percentiles ``qs`` of ``resamples`` bootstrap resamples of ``x``: shape (len(qs), resamples)."""
    n = x.size
    out = np.empty((len(qs), resamples))
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(k, n))
        out[:, start : start + k] = np.percentile(x[idx], qs, axis=1, method=PERCENTILE_METHOD)
    return out


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_percentile_ci(
    samples: Sequence[float] | np.ndarray,
    qs: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = _DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[tuple[float, float]]:
    """Percentile-bootstrap confidence interval of each percentile in ``qs``, reproducible via ``seed``."""
    x = _samples("samples", samples)
    _check_fraction("confidence", confidence)
    _check_int("resamples", resamples, 100)
    for q in qs:
        _check_q(q)
    boot = _resampled_percentiles(x, list(qs), resamples, np.random.default_rng(seed))
    return [_interval(row, confidence) for row in boot]


def bootstrap_ratio_ci(
    a_samples: Sequence[float] | np.ndarray,
    b_samples: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = _DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap CI of median(B) / median(A), resampling each side independently (seeded)."""
    a = _samples("a_samples", a_samples)
    b = _samples("b_samples", b_samples)
    _check_fraction("confidence", confidence)
    _check_int("resamples", resamples, 100)
    rng = np.random.default_rng(seed)
    med_a = _resampled_percentiles(a, [50], resamples, rng)[0]
    med_b = _resampled_percentiles(b, [50], resamples, rng)[0]
    with np.errstate(divide="ignore", invalid="ignore"):  # a resampled median of 0 gives inf, kept as such
        return _interval(med_b / med_a, confidence)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one latency sample, in ms: the spec's figures plus p50, n and bootstrap CIs."""

    n: int
    mean: float
    stdev: float
    min: float
    max: float
    p50: float
    p95: float
    p99: float
    p50_ci: tuple[float, float]
    p95_ci: tuple[float, float]
    confidence: float = 0.95
    resamples: int = _DEFAULT_RESAMPLES
    seed: int = 0
    #: The raw samples in measurement order (kept so later runs can be tested against them).
    samples_ms: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @property
    def median(self) -> float:
        """The median latency (same as ``p50``)."""
        return self.p50

    def to_dict(self, *, include_samples: bool = True) -> LatencySummary:
        """A JSON-friendly dict; raw samples included unless ``include_samples=False``."""
        d: dict[str, Any] = {"unit": "ms", "percentile_method": PERCENTILE_METHOD}
        for f in fields(self):
            value = getattr(self, f.name)
            d[f.name] = list(value) if isinstance(value, tuple) else value
        if not include_samples:
            del d["samples_ms"]
        return cast("LatencySummary", d)  # every field of the dataclass, tuples as lists

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyStats:
        """Rebuild from :meth:`to_dict` output (samples optional)."""
        try:
            return cls(
                n=int(d["n"]),
                **{k: float(d[k]) for k in ("mean", "stdev", "min", "max", "p50", "p95", "p99")},
                p50_ci=(float(d["p50_ci"][0]), float(d["p50_ci"][1])),
                p95_ci=(float(d["p95_ci"][0]), float(d["p95_ci"][1])),
                confidence=float(d.get("confidence", 0.95)),
                resamples=int(d.get("resamples", _DEFAULT_RESAMPLES)),
                seed=int(d.get("seed", 0)),
                samples_ms=tuple(float(v) for v in d.get("samples_ms") or ()),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise MeasurementError(f"not a latency summary (LatencyStats.to_dict output): {e!r}") from e


def summarize(
    samples_ms: Sequence[float] | np.ndarray,
    *,
    seed: int = 0,
    resamples: int = _DEFAULT_RESAMPLES,
    confidence: float = 0.95,
) -> LatencyStats:
    """Summarize latencies (ms) measured elsewhere: mean, sample stdev, extremes, p50/p95/p99, CIs."""
    x = _samples("samples_ms", samples_ms)
    p50, p95, p99 = (float(v) for v in np.percentile(x, [50, 95, 99], method=PERCENTILE_METHOD))
    ci50, ci95 = bootstrap_percentile_ci(x, [50, 95], confidence=confidence, resamples=resamples, seed=seed)
    return LatencyStats(
        n=int(x.size),
        mean=float(x.mean()),
        stdev=float(x.std(ddof=1)),
        min=float(x.min()),
        max=float(x.max()),
        p50=p50,
        p95=p95,
        p99=p99,
        p50_ci=ci50,
        p95_ci=ci95,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        samples_ms=tuple(float(v) for v in x),
    )


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    """Whether B differs from A: ratio of medians, its CI, the test's p-value and the verdict."""

    verdict: str
    median_a: float
    median_b: float
    #: median_B / median_A (below 1 means B is faster).
    ratio: float
    ratio_ci: tuple[float, float] | None
    p_value: float | None
    factor: float
    alpha: float
    n_a: int
    n_b: int
    #: "mann-whitney" (from samples) or "ci-overlap" (from summaries only).
    method: str

    @property
    def speedup(self) -> float:
        """median_A / median_B (above 1 means B is faster)."""
        return self.median_a / self.median_b

    @property
    def improvement_pct(self) -> float:
        """The spec's improvement, (A - B) / A in percent of A's median."""
        return (self.median_a - self.median_b) / self.median_a * 100

    @property
    def is_regression(self) -> bool:
        """True when B (the new run) is significantly and materially slower than A."""
        return self.verdict == SLOWER

    def to_dict(self) -> DecisionDict:
        """A JSON-friendly dict with the derived speedup and improvement."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["ratio_ci"] = list(self.ratio_ci) if self.ratio_ci is not None else None
        return cast("DecisionDict", d | {"speedup": self.speedup, "improvement_pct": self.improvement_pct})


def _verdict(median_a: float, median_b: float, significant: bool, factor: float) -> str:
    if significant and median_a / median_b >= factor:
        return FASTER
    if significant and median_b / median_a >= factor:
        return SLOWER
    return NO_CHANGE


def _positive_median(name: str, value: float) -> float:
    if value <= 0:
        raise MeasurementError(
            f"the median of {name} is {value} ms; a ratio needs positive latencies (use a finer timer)"
        )
    return value


def decide(
    a_samples: Sequence[float] | np.ndarray,
    b_samples: Sequence[float] | np.ndarray,
    factor: float = 1.1,
    alpha: float = 0.05,
    *,
    seed: int = 0,
    resamples: int = _DEFAULT_RESAMPLES,
) -> Decision:
    """Compare latencies of B to A: ratio gate (``factor``) AND two-sided Mann-Whitney U (``p < alpha``)."""
    a = _samples("a_samples", a_samples)
    b = _samples("b_samples", b_samples)
    factor = _check_factor(factor)
    alpha = _check_fraction("alpha", alpha)
    med_a = _positive_median("A", float(np.median(a)))
    med_b = _positive_median("B", float(np.median(b)))
    if np.all(a == a[0]) and np.all(b == a[0]):
        p_value = 1.0  # all values tied: the test's variance is 0, and there is no difference
    else:
        from scipy.stats import mannwhitneyu  # imported here: scipy.stats adds ~1 s to every CLI start

        p_value = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return Decision(
        verdict=_verdict(med_a, med_b, p_value < alpha, factor),
        median_a=med_a,
        median_b=med_b,
        ratio=med_b / med_a,
        ratio_ci=bootstrap_ratio_ci(a, b, resamples=resamples, seed=seed),
        p_value=p_value,
        factor=factor,
        alpha=alpha,
        n_a=int(a.size),
        n_b=int(b.size),
        method="mann-whitney",
    )


def _as_summary(name: str, run: Mapping[str, Any] | LatencyStats) -> dict[str, Any]:
    if isinstance(run, LatencyStats):
        return dict(run.to_dict())
    if not isinstance(run, Mapping):
        raise MeasurementError(f"{name} must be a LatencyStats or its to_dict() output; got {type(run).__name__}")
    return dict(run)


def compare_to_previous(
    prev: Mapping[str, Any] | LatencyStats,
    new: Mapping[str, Any] | LatencyStats,
    factor: float = 1.1,
    alpha: float = 0.05,
    *,
    seed: int = 0,
) -> Decision:
    """Compare a new run to a previous one (A = previous, B = new; verdict "slower" is a regression).

    With raw samples on both sides (``samples_ms``, as :meth:`LatencyStats.to_dict` stores them)
    this is :func:`decide`. With summaries only, significance is "the two p50 confidence
    intervals do not overlap" — conservative (for equal spreads, non-overlap of two 95 %
    intervals means roughly p < 0.006), ``alpha`` is not used and ``p_value`` is None; the
    ``factor`` gate still applies.
    """
    p, q = _as_summary("prev", prev), _as_summary("new", new)
    if p.get("samples_ms") and q.get("samples_ms"):
        return decide(p["samples_ms"], q["samples_ms"], factor, alpha, seed=seed)
    factor = _check_factor(factor)
    alpha = _check_fraction("alpha", alpha)
    try:
        med_a, med_b = float(p["p50"]), float(q["p50"])
        (a_lo, a_hi), (b_lo, b_hi) = (float(v) for v in p["p50_ci"]), (float(v) for v in q["p50_ci"])
        n_a, n_b = int(p["n"]), int(q["n"])
    except (KeyError, TypeError, ValueError) as e:
        raise MeasurementError(f"a run summary needs n, p50 and p50_ci (or samples_ms); missing or bad: {e}") from e
    _positive_median("prev", med_a)
    _positive_median("new", med_b)
    separated = a_hi < b_lo or b_hi < a_lo
    return Decision(
        verdict=_verdict(med_a, med_b, separated, factor),
        median_a=med_a,
        median_b=med_b,
        ratio=med_b / med_a,
        ratio_ci=None,
        p_value=None,
        factor=factor,
        alpha=alpha,
        n_a=n_a,
        n_b=n_b,
        method="ci-overlap",
    )


# --------------------------------------------------------------------------- A/B runner


def ab_schedule(rounds: int, order: str = "abba", *, seed: int = 0) -> tuple[str, ...]:
    """The order of ``2 * rounds`` rounds: 'abba' (AB BA AB BA ...), 'alternate' (AB AB ...) or 'random'.

    Every order is made of pairs holding one A and one B round. 'abba' cancels a linear drift
    over each block of four rounds (A and B have the same mean position); 'alternate' leaves A
    half a pair earlier on average; 'random' shuffles each pair with ``seed``.
    """
    _check_int("rounds", rounds, 1)
    if order not in ORDERS:
        raise ParameterError("order", order, "use one of " + ", ".join(ORDERS))
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for i in range(rounds):
        if order == "abba":
            flip = i % 2 == 1
        elif order == "random":
            flip = bool(rng.integers(0, 2))
        else:
            flip = False
        out.extend(("B", "A") if flip else ("A", "B"))
    return tuple(out)
