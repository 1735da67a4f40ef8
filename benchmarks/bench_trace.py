"""Trace benchmark: a 10-million-read trace imported, simulated and tuned; wall time and peak memory printed.

Run as ``python benchmarks/bench_trace.py [--reads N] [--keep DIR]``. It writes an oracleGeneral
file (24-byte records ``<IQIq>``, zstd-compressed) of ``N`` reads over a day: Zipf(1.1) popularity
over 1,000,000 objects of 200 B - 8 KB. Then, each step timed on its own, with the process's peak
RSS after it (``resource.getrusage``, the high-water mark, so it never goes down):

1. ``trace import``: :func:`psra_bench.trace.formats.import_file` + :func:`~psra_bench.trace.tracefile.write_trace`;
2. :func:`psra_bench.cachesim.imported.load_trace`;
3. :func:`psra_bench.cachesim.ttl_sim.simulate` at the settings' hs_codes TTL (the recorded invalidations' mode);
4. the LRU and LFU miss-ratio curves (:func:`psra_bench.cachesim.memory.miss_ratio_curve`, sampled);
5. optionally (``--tune``) the whole ``trace tune``: the grid swept twice (with and without invalidation).

Nothing here needs a server. The figures depend on the machine and its load: print them, do not assert them.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psra_bench.cachesim.imported import CAPTURED_MODE, load_trace, tune_file  # noqa: E402
from psra_bench.cachesim.memory import miss_ratio_curve  # noqa: E402
from psra_bench.cachesim.params import TraceTuneParams  # noqa: E402
from psra_bench.cachesim.ttl_sim import simulate  # noqa: E402
from psra_bench.settings import Settings  # noqa: E402
from psra_bench.trace.formats import ORACLE_RECORD, import_file  # noqa: E402
from psra_bench.trace.tracefile import write_trace  # noqa: E402

OBJECTS = 1_000_000


def peak_mb() -> float:
    """The process's peak resident set so far, MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step(name: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``, print its wall time and the peak RSS after it."""
    started = time.perf_counter()
    out = fn()
    print(f"{name:<42} {time.perf_counter() - started:8.2f} s   peak RSS {peak_mb():8.0f} MB", flush=True)
    return out


def write_oracle(path: Path, reads: int, seed: int = 7) -> None:
    """``reads`` oracleGeneral records over a day, Zipf(1.1) over OBJECTS objects, zstd-compressed, in chunks."""
    rng = np.random.default_rng(seed)
    popularity = rng.permutation(OBJECTS)
    weights = np.arange(1, OBJECTS + 1, dtype=float) ** -1.1
    cdf = np.cumsum(weights / weights.sum())
    sizes = rng.integers(200, 8192, OBJECTS).astype(np.uint32)
    times = np.sort(rng.integers(0, 86_400, reads)).astype(np.uint32)
    with path.open("wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw) as out:
        for start in range(0, reads, 1_000_000):
            n = min(1_000_000, reads - start)
            obj = popularity[np.minimum(np.searchsorted(cdf, rng.random(n)), OBJECTS - 1)]
            rec = np.zeros(n, dtype=ORACLE_RECORD)
            rec["time"], rec["obj_id"], rec["obj_size"], rec["next_vtime"] = (
                times[start : start + n],
                obj,
                sizes[obj],
                -1,
            )
            out.write(rec.tobytes())


def main() -> None:
    """Generate, import, simulate; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=10_000_000)
    parser.add_argument("--tune", action="store_true", help="also run the whole `trace tune` (slow: 26 passes)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the files in this folder")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="psra-bench-trace-"))
    folder.mkdir(parents=True, exist_ok=True)
    src, dst = folder / "reads.oracleGeneral.zst", folder / "reads.npz"
    print(f"{args.reads:,} reads over {OBJECTS:,} objects; files in {folder}")
    step("generate oracleGeneral (zstd)", lambda: write_oracle(src, args.reads))
    print(f"  {src.stat().st_size / 1e6:.0f} MB compressed")
    base = peak_mb()

    def do_import() -> dict[str, Any]:
        cols, account = import_file(src, "oracle-general", entity="hs_codes")
        return write_trace(dst, cols, account)

    meta = step("import (read, decompress, intern, write)", do_import)
    print(f"  fingerprint {meta['fingerprint'][:16]}, {meta['reads']:,} reads, {dst.stat().st_size / 1e6:.0f} MB")
    trace = step("load_trace", lambda: load_trace(dst))
    ttl = float(Settings().ttl.for_entity("hs_codes"))
    result = step(f"simulate hs_codes at TTL {ttl:g} s", lambda: simulate(trace, {"hs_codes": ttl}, **CAPTURED_MODE))
    row = result["entities"]["hs_codes"]
    print(f"  hit rate {row['hit_rate']:.4f} (n={row['n']:,}), resident {row['memory_bytes'] / 1e6:.0f} MB")
    for policy in ("allkeys-lru", "allkeys-lfu"):
        curve = step(f"miss-ratio curve {policy} (sampled)", lambda p=policy: miss_ratio_curve(trace, p))
        mid = len(curve.sizes_bytes) // 2
        print(f"  rate {curve.rate:.4f}, {curve.reads:,} sampled reads; at {curve.sizes_bytes[mid] / 1e6:.0f} MB "
              f"miss ratio {curve.miss_ratio[mid]:.3f}")  # fmt: skip
    if args.tune:
        del trace  # tune_file loads the file again; the simulation's per-trace caches go with the trace
        gc.collect()
        params = TraceTuneParams.NOTEBOOK.replace(ttl_grid=[60, 600, 3600])
        step("trace tune (3-TTL grid, both sweeps, MRCs)", lambda: tune_file(dst, Settings(), params))
    print(f"peak RSS {peak_mb():.0f} MB (after generating: {base:.0f} MB)")


if __name__ == "__main__":
    main()
