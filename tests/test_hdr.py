"""psra_bench.measure.hdr: µs histograms, their accuracy, and merging recordings across processes."""

from __future__ import annotations

import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram

from psra_bench.exceptions import MeasurementError
from psra_bench.measure.hdr import (
    HIGHEST_US,
    HistogramSet,
    LatencyHistogram,
    StageRecorder,
    read_recording,
    write_recording,
)


def _samples(n: int = 20_000, seed: int = 1) -> np.ndarray:
    """Latency-like samples in µs: lognormal around 3 ms with a long tail."""
    return np.random.default_rng(seed).lognormal(8.0, 1.0, n)


def _exact_rank_value(sorted_us: np.ndarray, q: float) -> float:
    """The sample HdrHistogram's percentile definition targets: rank max(1, round(q·n/100))."""
    rank = max(int(q * len(sorted_us) / 100 + 0.5), 1)
    return float(sorted_us[rank - 1])


@pytest.mark.parametrize("q", [50.0, 95.0, 99.0, 99.9])
def test_percentiles_are_within_the_stated_resolution(q: float) -> None:
    values = np.round(_samples())
    h = LatencyHistogram()
    for v in values:
        h.record_us(float(v))
    exact = _exact_rank_value(np.sort(values), q)
    got = h.percentile_us(q)
    # never below the sample, at most one bucket (0.1 % at 3 significant digits) above it
    assert exact <= got <= exact * 1.001 + 1


def test_statistics_match_hdrhistogram_itself() -> None:
    h = LatencyHistogram()
    for v in _samples(5000, seed=3):
        h.record_us(float(v))
    raw: HdrHistogram = h._h
    for q in (1, 50, 90, 99, 99.99, 100):
        assert h.percentile_us(q) == raw.get_value_at_percentile(q)
    mean, stdev = h.mean_stdev_us()
    assert mean == pytest.approx(raw.get_mean_value(), rel=1e-12)
    assert stdev == pytest.approx(raw.get_stddev(), rel=1e-9)
    assert h.max_us() == raw.get_max_value()
    assert h.min_us() == raw.get_min_value()


def test_microsecond_resolution_below_one_millisecond() -> None:
    """What Locust's 1 ms buckets cannot tell apart, the histogram can."""
    a, b = LatencyHistogram(), LatencyHistogram()
    for _ in range(100):
        a.record_ms(0.250)
        b.record_ms(0.750)
    assert a.percentile_ms(50) == pytest.approx(0.250, abs=0.001)
    assert b.percentile_ms(50) == pytest.approx(0.750, abs=0.001)


def test_encode_decode_roundtrip_and_merge() -> None:
    values = _samples(3000, seed=5)
    whole, left, right = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i, v in enumerate(values):
        whole.record_us(float(v))
        (left if i % 2 else right).record_us(float(v))
    merged = LatencyHistogram.decode(left.encode()).merge(LatencyHistogram.decode(right.encode()))
    assert merged.count == whole.count == len(values)
    assert merged.summary() == whole.summary()


def test_empty_histogram_summary_and_errors() -> None:
    h = LatencyHistogram()
    s = h.summary()
    assert s["n"] == 0 and s["p99_ms"] is None and s["max_ms"] is None
    with pytest.raises(MeasurementError, match="empty"):
        h.percentile_ms(50)
    h.record_us(10)
    with pytest.raises(MeasurementError, match="percentile 0"):
        h.percentile_us(0)
    with pytest.raises(MeasurementError, match="-1"):
        h.record_us(-1)
    with pytest.raises(MeasurementError, match="nan"):
        h.record_ms(math.nan)
    with pytest.raises(MeasurementError, match="not an encoded HdrHistogram"):
        LatencyHistogram.decode("not a histogram")


def test_values_above_the_range_are_clamped_and_counted() -> None:
    h = LatencyHistogram()
    h.record_us(HIGHEST_US * 2)
    h.record_us(5)
    assert h.clamped == 1
    assert h.count == 2
    assert h.max_us() >= HIGHEST_US
    back = HistogramSet.from_dict(HistogramSet({"x": h}).to_dict())
    assert back.hists["x"].clamped == 1


def test_histogram_set_counts_failures_and_rates() -> None:
    hs = HistogramSet()
    for _ in range(9):
        hs.record("GET /a", 1000)
    hs.record("GET /a", 50, ok=False)
    hs.record("GET /b", 50, ok=False)
    s = hs.summary(duration_s=2.0)
    assert s["endpoints"]["GET /a"]["n"] == 9
    assert s["endpoints"]["GET /a"]["failure_rate"] == pytest.approx(0.1)
    assert s["endpoints"]["GET /b"]["n"] == 0 and s["endpoints"]["GET /b"]["p50_ms"] is None
    assert s["overall"]["requests"] == 11
    assert s["overall"]["rps"] == pytest.approx(5.5)


def test_stage_recorder_excludes_warmup_and_counts_outside() -> None:
    rec = StageRecorder()
    rec.record("GET /a", 100, True, now=1.0)  # before any stage
    rec.begin_stage(0, measure_from=10.0, users=5, started_at=9.0)
    rec.record("GET /a", 100, True, now=9.5)  # ramp-up: counted as warm-up
    rec.record("GET /a", 200, True, now=10.5)
    rec.begin_stage(1, measure_from=21.0, users=10, started_at=20.0)
    rec.record("GET /a", 300, False, now=21.5)
    rec.end_stage(25.0)
    rec.record("GET /a", 400, True, now=26.0)  # after the end
    rec.flush()
    s0, s1 = rec.ordered()
    assert (s0.histograms.ok, s0.warmup_requests, s0.ended_at) == (1, 1, 20.0)
    assert (s1.histograms.failed, s1.users, s1.ended_at, s1.window_s) == (1, 10, 25.0, 4.0)
    assert rec.outside == 2


def _worker_delta(seed: int) -> tuple[str, list[float]]:
    """Runs in another process: record a stage like a Locust worker and return its JSON delta."""
    rec = StageRecorder()
    rec.begin_stage(0, measure_from=0.0, users=4)
    values = [float(v) for v in _samples(4000, seed=seed)]
    for i, v in enumerate(values):
        rec.record("GET /x" if i % 3 else "POST /y", v, ok=i % 97 != 0, now=1.0)
    return json.dumps(rec.take_delta()), values


def test_recordings_merge_across_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        parts = list(pool.map(_worker_delta, [11, 12, 13]))
    master = StageRecorder()
    master.begin_stage(0, measure_from=0.0, users=12, started_at=0.0)
    reference = HistogramSet()
    for delta, values in parts:
        master.add_delta(json.loads(delta))
        for i, v in enumerate(values):
            reference.record("GET /x" if i % 3 else "POST /y", v, ok=i % 97 != 0)
    master.end_stage(3.0)
    path = write_recording(tmp_path / "rec.json", master.ordered(), {"runner": "test"}, outside_requests=0)
    rec = read_recording(path)
    merged = rec.stages[0].histograms
    assert rec.total_requests() == 3 * 4000
    assert merged.failures == reference.failures
    for name in ("GET /x", "POST /y"):
        assert merged.hists[name].summary() == reference.hists[name].summary()
    assert merged.overall().summary() == reference.overall().summary()
    assert rec.meta == {"runner": "test"}


def test_bad_deltas_and_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MeasurementError, match="delta"):
        StageRecorder().add_delta({"stages": {"x": {}}})
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(MeasurementError, match="not a psra-hdr/1"):
        read_recording(bad)
    with pytest.raises(MeasurementError, match="cannot read"):
        read_recording(tmp_path / "missing.json")
