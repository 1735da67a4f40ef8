"""One side of bench_cache's round-trip comparison: read-through hits and misses of *this* psra_bench.

Run by ``benchmarks/bench_cache.py`` with the working directory and ``PYTHONPATH`` of a checkout (this
one, or a ``--variant`` worktree of an earlier commit), so each side measures its own cache code
against the same Redis. It loads the round-trip counter (psra_bench/measure/roundtrips.py) by file
path from the benchmark's checkout, because an earlier checkout may not have it.

Protocol: the settings come from the environment (REDIS_URL, PSRA_CACHE_NAMESPACE); for each line
``N`` on stdin it does N hits and N misses through ``get_or_compute`` (the path the API's lookups
take; the default counter flush every second, as in production) and prints one JSON line: per
operation its latency (ms) and its round trips. ``quit`` (or EOF) ends it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import types
import uuid
from pathlib import Path

from psra_bench.cache import CacheService
from psra_bench.settings import Settings

ROW = {"code": "847130", "description": "Portable automatic data-processing machines", "level": 6}


def _counter_module(path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("_bench_roundtrips", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    """Answer rounds until stdin ends."""
    counter = _counter_module(Path(sys.argv[1]))
    settings = Settings.from_env()
    assert settings.redis is not None, "REDIS_URL must be set"
    client, trips = counter.counting_client(settings.redis.client_kwargs())
    cache = CacheService(settings, client=client)
    import psra_bench

    print(json.dumps({"ready": True, "package": str(Path(psra_bench.__file__).resolve().parent)}), flush=True)
    hot = "hs:code:847130"
    cache.get_or_compute(hot, lambda: ROW)
    clock = time.perf_counter_ns
    for line in sys.stdin:
        if line.strip() in ("", "quit"):
            break
        n = int(line)
        out: dict[str, list[float]] = {"hit_ms": [], "hit_trips": [], "miss_ms": [], "miss_trips": []}
        for i in range(2 * n):
            kind = "hit" if i % 2 == 0 else "miss"  # alternate, so drift lands on both alike
            key = hot if kind == "hit" else f"hs:code:m{uuid.uuid4().hex[:12]}"
            mark, start = trips.sent, clock()
            value = cache.get_or_compute(key, lambda: ROW)
            out[f"{kind}_ms"].append((clock() - start) / 1e6)
            out[f"{kind}_trips"].append(trips.sent - mark)
            assert value == ROW
        print(json.dumps(out), flush=True)
    cache.close()
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
