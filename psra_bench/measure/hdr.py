"""High-resolution latency histograms (HdrHistogram) that merge across load-generator processes.

Locust keeps response times in coarse buckets (1 ms below 100 ms, 10 ms above, no
interpolation); every load test of psra-bench records each request's latency here instead:

* :class:`LatencyHistogram` — one HdrHistogram in **microseconds**, 1 µs to 1 h, 3 significant
  digits (a value is stored within 0.1 % of itself). A percentile is reported as the highest
  value equivalent to the bucket holding it, so it is never below the true sample percentile
  and at most 0.1 % above it. Values above 1 h are clamped to 1 h and counted (``clamped``).
* :class:`HistogramSet` — one histogram per endpoint name plus failure counts; ``overall()`` is
  the merge of all endpoints. It serializes to JSON-safe dicts (histograms as the standard
  base64 "HISTFAAA…" V2 blobs), so worker processes can ship deltas to a master.
* :class:`StageRecorder` — histogram sets per load *stage* (a step of a step load, or the one
  stage of a constant run), excluding requests that complete before the stage's measurement
  window opens (ramp-up and warm-up). Workers send :meth:`StageRecorder.take_delta`, the master
  adds it with :meth:`StageRecorder.add_delta`; :func:`write_recording` / :func:`read_recording`
  store the merged result (a :class:`Recording`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from psra_bench.exceptions import MeasurementError

__all__ = [
    "LOWEST_US",
    "HIGHEST_US",
    "SIGNIFICANT_FIGURES",
    "PERCENTILES",
    "FORMAT",
    "LatencyHistogram",
    "HistogramSet",
    "Stage",
    "StageRecorder",
    "Recording",
    "write_recording",
    "read_recording",
]

#: Smallest distinguishable latency: 1 µs.
LOWEST_US = 1
#: Largest latency tracked (1 hour, in µs); larger values are clamped and counted.
HIGHEST_US = 3_600_000_000
#: Decimal digits of value resolution kept at every magnitude (0.1 % relative error).
SIGNIFICANT_FIGURES = 3
#: The percentiles every summary reports.
PERCENTILES: tuple[float, ...] = (50.0, 95.0, 99.0, 99.9)
#: Identifier of the recording file format written by :func:`write_recording`.
FORMAT = "psra-hdr/1"


def _pkey(q: float) -> str:
    """'p50', 'p95', 'p99', 'p999' — the key of percentile ``q`` in summaries."""
    return "p" + f"{q:g}".replace(".", "")


@cache
def _layout(counts_len: int, half_magnitude: int, unit_magnitude: int) -> tuple[np.ndarray, np.ndarray]:
    """Lowest equivalent value and bucket width of every counts index of an HdrHistogram layout."""
    index = np.arange(counts_len, dtype=np.int64)
    half = 1 << half_magnitude
    bucket = (index >> half_magnitude) - 1
    sub = (index & (half - 1)) + half
    first = bucket < 0
    sub = np.where(first, sub - half, sub)
    bucket = np.where(first, 0, bucket)
    lowest = sub << (bucket + unit_magnitude)
    width = np.left_shift(np.int64(1), bucket + unit_magnitude)
    return lowest, width


class LatencyHistogram:
    """Latencies in µs with 3 significant digits (HdrHistogram); merge, encode, percentiles.

    Statistics are computed with numpy over the counts array (hdrh's own iterators are pure
    Python and take ~0.5 s per histogram); they follow hdrh's definitions exactly.
    """

    __slots__ = ("_h", "clamped")

    def __init__(self, _hist: HdrHistogram | None = None, clamped: int = 0) -> None:
        self._h = _hist if _hist is not None else HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)
        self.clamped = clamped

    @property
    def count(self) -> int:
        """Number of recorded latencies."""
        return int(self._h.get_total_count())

    def __len__(self) -> int:
        return self.count

    def record_us(self, value_us: float, count: int = 1) -> None:
        """Record a latency in microseconds (rounded to the nearest µs; > 1 h is clamped and counted)."""
        if not math.isfinite(value_us) or value_us < 0:
            raise MeasurementError(f"latency {value_us!r} µs cannot be recorded; use a finite value >= 0")
        v = int(round(value_us))
        if v > HIGHEST_US:
            self.clamped += count
            v = HIGHEST_US
        self._h.record_value(v, count)

    def record_ms(self, value_ms: float, count: int = 1) -> None:
        """Record a latency given in milliseconds."""
        self.record_us(value_ms * 1000.0, count)

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        """Add ``other``'s counts to this histogram (in place); return self."""
        if other.count:
            self._h.add(other._h)
        self.clamped += other.clamped
        return self

    def copy(self) -> LatencyHistogram:
        """An independent copy."""
        return LatencyHistogram().merge(self)

    def encode(self) -> str:
        """The histogram as a compressed base64 V2 blob (the format other HdrHistogram ports read)."""
        raw = self._h.encode()
        return raw.decode("ascii") if isinstance(raw, bytes) else str(raw)

    @classmethod
    def decode(cls, blob: str | bytes, clamped: int = 0) -> LatencyHistogram:
        """Rebuild a histogram from :meth:`encode` output."""
        try:
            hist = HdrHistogram.decode(blob.encode("ascii") if isinstance(blob, str) else blob)
        except Exception as e:  # hdrh raises TypeError, zlib.error or its own cookie errors
            raise MeasurementError(f"not an encoded HdrHistogram ({type(e).__name__}: {e})") from e
        if (hist.lowest_trackable_value, hist.significant_figures) != (LOWEST_US, SIGNIFICANT_FIGURES):
            # Re-bucket foreign histograms into our layout so every merge is exact bucket addition.
            out = cls()
            out._h.add(hist)
            out.clamped = clamped
            return out
        return cls(hist, clamped)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h = self._h
        counts = np.ctypeslib.as_array(h.counts)[: h.counts_len].astype(np.int64, copy=False)
        lowest, width = _layout(h.counts_len, h.sub_bucket_half_count_magnitude, h.unit_magnitude)
        return counts, lowest, width

    def _values_at(self, qs: Iterable[float]) -> list[int]:
        qs = list(qs)
        for q in qs:
            if isinstance(q, bool) or not isinstance(q, int | float) or not 0 < q <= 100:
                raise MeasurementError(f"percentile {q!r} is not valid; use a number in (0, 100]")
        total = self.count
        if not total:
            raise MeasurementError("the histogram is empty; no percentile can be read")
        counts, lowest, width = self._arrays()
        cum = np.cumsum(counts)
        out = []
        for q in qs:
            target = max(int(min(q, 100.0) * total / 100 + 0.5), 1)
            i = int(np.searchsorted(cum, target, side="left"))
            out.append(int(lowest[i] + width[i] - 1))
        return out

    def percentile_us(self, q: float) -> int:
        """The q-th percentile (0 < q <= 100) in µs (highest value equivalent to its bucket)."""
        return self._values_at([q])[0]

    def percentile_ms(self, q: float) -> float:
        """The q-th percentile in milliseconds."""
        return self.percentile_us(q) / 1000.0

    def percentile_ci_ms(self, q: float, confidence: float = 0.95) -> tuple[float, float]:
        """A distribution-free CI of the q-th percentile, ms: the recorded values at the order-statistic ranks
        that bracket it with ``confidence`` (binomial ranks; no assumption about the latency distribution)."""
        from scipy.stats import binom

        n = self.count
        if not n:
            raise MeasurementError("the histogram is empty; no percentile can be read")
        p, tail = min(q, 100.0) / 100.0, (1.0 - confidence) / 2.0
        ranks = (max(1, int(binom.ppf(tail, n, p))), min(n, int(binom.ppf(1.0 - tail, n, p)) + 1))
        counts, lowest, width = self._arrays()
        cum = np.cumsum(counts)
        lo, hi = (int(np.searchsorted(cum, r, side="left")) for r in ranks)
        return float(lowest[lo] + width[lo] - 1) / 1000.0, float(lowest[hi] + width[hi] - 1) / 1000.0

    def min_us(self) -> int:
        """Smallest recorded latency (lowest equivalent value of its bucket), µs."""
        if not self.count:
            raise MeasurementError("the histogram is empty; it has no minimum")
        counts, lowest, _ = self._arrays()
        return int(lowest[int(np.flatnonzero(counts)[0])])

    def max_us(self) -> int:
        """Largest recorded latency (highest equivalent value of its bucket), µs."""
        if not self.count:
            raise MeasurementError("the histogram is empty; it has no maximum")
        counts, lowest, width = self._arrays()
        i = int(np.flatnonzero(counts)[-1])
        return int(lowest[i] + width[i] - 1)

    def mean_stdev_us(self) -> tuple[float, float]:
        """Mean and (population) standard deviation in µs, each value at its bucket's midpoint."""
        if not self.count:
            raise MeasurementError("the histogram is empty; it has no mean")
        counts, lowest, width = self._arrays()
        mid = (lowest + (width >> 1)).astype(float)
        c = counts.astype(float)
        mean = float((c * mid).sum() / c.sum())
        return mean, float(math.sqrt(float((c * (mid - mean) ** 2).sum() / c.sum())))

    def summary(self) -> dict[str, Any]:
        """n, p50/p95/p99/p99.9, min, max, mean and stdev in ms (None values when empty)."""
        out: dict[str, Any] = {"n": self.count, "unit": "ms", "clamped": self.clamped}
        keys = [_pkey(q) + "_ms" for q in PERCENTILES]
        if not self.count:
            return out | dict.fromkeys([*keys, "p95_ci_ms", "min_ms", "max_ms", "mean_ms", "stdev_ms"])
        for key, value in zip(keys, self._values_at(PERCENTILES), strict=True):
            out[key] = value / 1000.0
        out["p95_ci_ms"] = list(self.percentile_ci_ms(95.0))
        mean, stdev = self.mean_stdev_us()
        out |= {
            "min_ms": self.min_us() / 1000.0,
            "max_ms": self.max_us() / 1000.0,
            "mean_ms": mean / 1000.0,
            "stdev_ms": stdev / 1000.0,
        }
        return out


@dataclass
class HistogramSet:
    """Latency histograms by endpoint name, with failure counts; mergeable and JSON-serializable."""

    hists: dict[str, LatencyHistogram] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    def record(self, name: str, latency_us: float, ok: bool = True) -> None:
        """Record one request: its latency when it succeeded, a failure count otherwise."""
        if ok:
            hist = self.hists.get(name)
            if hist is None:
                hist = self.hists[name] = LatencyHistogram()
            hist.record_us(latency_us)
        else:
            self.failures[name] = self.failures.get(name, 0) + 1

    def names(self) -> list[str]:
        """Every endpoint with a success or a failure, sorted."""
        return sorted(set(self.hists) | set(self.failures))

    @property
    def ok(self) -> int:
        """Successful requests recorded."""
        return sum(h.count for h in self.hists.values())

    @property
    def failed(self) -> int:
        """Failed requests counted."""
        return sum(self.failures.values())

    def __bool__(self) -> bool:
        return bool(self.ok or self.failed)

    def merge(self, other: HistogramSet) -> HistogramSet:
        """Add ``other`` into this set (in place); return self."""
        for name, hist in other.hists.items():
            mine = self.hists.get(name)
            if mine is None:
                self.hists[name] = hist.copy()
            else:
                mine.merge(hist)
        for name, n in other.failures.items():
            self.failures[name] = self.failures.get(name, 0) + n
        return self

    def overall(self) -> LatencyHistogram:
        """All endpoints merged into one histogram."""
        out = LatencyHistogram()
        for hist in self.hists.values():
            out.merge(hist)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: {name: {"hist": blob | None, "failures": n, "clamped": n}}."""
        return {
            name: {
                "hist": self.hists[name].encode() if name in self.hists else None,
                "failures": self.failures.get(name, 0),
                "clamped": self.hists[name].clamped if name in self.hists else 0,
            }
            for name in self.names()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HistogramSet:
        """Rebuild from :meth:`to_dict` output."""
        out = cls()
        try:
            for name, entry in data.items():
                if entry.get("hist"):
                    out.hists[name] = LatencyHistogram.decode(entry["hist"], int(entry.get("clamped", 0)))
                if int(entry.get("failures", 0)):
                    out.failures[name] = int(entry["failures"])
        except (AttributeError, TypeError, ValueError) as e:
            raise MeasurementError(f"not a histogram set (HistogramSet.to_dict output): {e!r}") from e
        return out

    def summary(self, duration_s: float | None = None) -> dict[str, Any]:
        """Per-endpoint and overall summaries (ms) with n, failures, failure rate and (given a duration) RPS."""

        def one(hist: LatencyHistogram, failed: int) -> dict[str, Any]:
            s = hist.summary()
            total = s["n"] + failed
            s["failures"] = failed
            s["requests"] = total
            s["failure_rate"] = failed / total if total else 0.0
            if duration_s:
                s["rps"] = total / duration_s
            return s

        endpoints = {
            name: one(self.hists.get(name, LatencyHistogram()), self.failures.get(name, 0)) for name in self.names()
        }
        return {"overall": one(self.overall(), self.failed), "endpoints": endpoints}


@dataclass
class Stage:
    """One load stage: its user count, timeline (epoch seconds) and what was recorded in it."""

    index: int
    users: int | None = None
    started_at: float | None = None
    measure_from: float | None = None
    ended_at: float | None = None
    histograms: HistogramSet = field(default_factory=HistogramSet)
    #: Requests that completed before ``measure_from`` (ramp-up, warm-up): counted, not measured.
    warmup_requests: int = 0

    @property
    def window_s(self) -> float | None:
        """Length of the measurement window in seconds (None until the stage has ended)."""
        if self.measure_from is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.measure_from)

    def summary(self) -> dict[str, Any]:
        """This stage's timeline, window and latency summary (RPS over the window)."""
        window = self.window_s
        return {
            "stage": self.index,
            "users": self.users,
            "started_at": self.started_at,
            "measure_from": self.measure_from,
            "ended_at": self.ended_at,
            "window_s": window,
            "warmup_requests": self.warmup_requests,
            **self.histograms.summary(window or None),
        }


class StageRecorder:
    """Per-stage histogram sets; requests before a stage's ``measure_from`` count as warm-up only.

    Requests that complete outside every stage (before the first, after the last ended) are only
    counted, in ``outside``, so every request the load generator saw is accounted for.
    """

    def __init__(self) -> None:
        self.current = -1
        self.measure_from = math.inf
        self.stages: dict[int, Stage] = {}
        self.outside = 0
        self._delta: dict[int, Stage] = {}
        self._delta_outside = 0

    def _stage(self, table: dict[int, Stage], index: int) -> Stage:
        st = table.get(index)
        if st is None:
            st = table[index] = Stage(index)
        return st

    def begin_stage(
        self, index: int, measure_from: float, *, users: int | None = None, started_at: float | None = None
    ) -> None:
        """Switch recording to stage ``index``, measuring requests that complete at or after ``measure_from``."""
        if self.current >= 0 and self.current in self.stages and started_at is not None:
            prev = self.stages[self.current]
            prev.ended_at = prev.ended_at if prev.ended_at is not None else started_at
        self.current = index
        self.measure_from = measure_from
        st = self._stage(self.stages, index)
        st.users, st.measure_from = users, measure_from
        st.started_at = started_at if started_at is not None else st.started_at

    def end_stage(self, ended_at: float) -> None:
        """Mark the current stage as ended at ``ended_at`` (later requests are ignored)."""
        if self.current >= 0:
            self._stage(self.stages, self.current).ended_at = ended_at
        self.current = -1
        self.measure_from = math.inf

    def record(self, name: str, latency_us: float, ok: bool, now: float) -> None:
        """Record one request that completed at epoch time ``now`` into the current stage (or as warm-up)."""
        if self.current < 0:
            self._delta_outside += 1
            return
        st = self._stage(self._delta, self.current)
        if now < self.measure_from:
            st.warmup_requests += 1
        else:
            st.histograms.record(name, latency_us, ok)

    def take_delta(self) -> dict[str, Any]:
        """What was recorded since the last call, JSON-safe, and forget it (for a worker's report)."""
        delta, self._delta = self._delta, {}
        outside, self._delta_outside = self._delta_outside, 0
        return {
            "outside": outside,
            "stages": {
                str(i): {"warmup": st.warmup_requests, "endpoints": st.histograms.to_dict()}
                for i, st in delta.items()
                if st.histograms or st.warmup_requests
            },
        }

    def add_delta(self, delta: Mapping[str, Any]) -> None:
        """Merge a delta from :meth:`take_delta` (of this or another process) into the stages."""
        try:
            self.outside += int(delta.get("outside", 0))
            for key, entry in delta.get("stages", {}).items():
                st = self._stage(self.stages, int(key))
                st.warmup_requests += int(entry.get("warmup", 0))
                st.histograms.merge(HistogramSet.from_dict(entry.get("endpoints", {})))
        except (AttributeError, TypeError, ValueError) as e:
            raise MeasurementError(f"not a recorder delta (StageRecorder.take_delta output): {e!r}") from e

    def flush(self) -> None:
        """Move this process's own undelivered recordings into its stages (local, non-distributed runs)."""
        self.add_delta(self.take_delta())

    def ordered(self) -> list[Stage]:
        """The stages in order."""
        return [self.stages[i] for i in sorted(self.stages)]


@dataclass
class Recording:
    """A latency recording read back from disk: stages, requests outside every stage, metadata."""

    stages: list[Stage]
    outside_requests: int
    meta: dict[str, Any]

    def total_requests(self) -> int:
        """Every request the recording saw: measured, failed, warm-up and outside any stage."""
        return self.outside_requests + sum(
            st.histograms.ok + st.histograms.failed + st.warmup_requests for st in self.stages
        )


def write_recording(
    path: str | Path, stages: Iterable[Stage], meta: Mapping[str, Any] | None = None, *, outside_requests: int = 0
) -> Path:
    """Write stages (histograms encoded) to ``path`` as JSON, atomically; return the path."""
    doc = {
        "format": FORMAT,
        "unit": "us",
        "lowest_us": LOWEST_US,
        "highest_us": HIGHEST_US,
        "significant_figures": SIGNIFICANT_FIGURES,
        "meta": dict(meta or {}),
        "outside_requests": outside_requests,
        "stages": [
            {
                "stage": st.index,
                "users": st.users,
                "started_at": st.started_at,
                "measure_from": st.measure_from,
                "ended_at": st.ended_at,
                "warmup_requests": st.warmup_requests,
                "endpoints": st.histograms.to_dict(),
            }
            for st in stages
        ],
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_recording(path: str | Path) -> Recording:
    """Read a file written by :func:`write_recording`."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise MeasurementError(f"cannot read the latency recording {str(path)!r}: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise MeasurementError(f"{str(path)!r} is not a {FORMAT} latency recording")
    stages = [
        Stage(
            int(s["stage"]),
            s.get("users"),
            s.get("started_at"),
            s.get("measure_from"),
            s.get("ended_at"),
            HistogramSet.from_dict(s.get("endpoints", {})),
            int(s.get("warmup_requests", 0)),
        )
        for s in doc.get("stages", [])
    ]
    return Recording(stages, int(doc.get("outside_requests", 0)), dict(doc.get("meta") or {}))
