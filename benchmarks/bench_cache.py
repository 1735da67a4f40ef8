"""Cache benchmark: what a hit costs, and what invalidating 100k keys does to other clients.

Run as ``python benchmarks/bench_cache.py`` (settings from the environment; the embedded
servers are started when none are configured). Three measurements, each printed with n and spread:

1. **Hit latency.** One HS code read three ways, interleaved round by round so drift of a noisy
   machine lands on every side alike: through ``get_cached_hs_code`` (key building, breaker,
   counters, JSON decoding), a raw redis-py ``GET`` of the same physical key (also with
   ``json.loads``, to separate the service's overhead from decoding), and the uncached
   lookup in PostgreSQL (``PostgresDAL.hs_code_by_code`` and a plain psycopg SELECT). Goal: the
   cached hit's p50 at most 1.5x the raw GET's.
2. **Invalidation under load.** 100,000 keys deleted by SCAN + UNLINK (``delete_pattern``) and,
   for comparison only, by the original's KEYS + one DEL, while a separate process GETs another
   key in a loop; its p50/p99/max during each sweep are compared with its idle baseline. Only
   this script uses KEYS, on its own namespace.

3. **Round trips per read-through hit and miss** (``get_or_compute``, the path of the API's HS and
   rule lookups, with the counters flushed every second as in production): counted on the client's
   connections (a pipeline is one) and timed, for this checkout and for each ``--variant
   LABEL=PATH`` (a worktree of an earlier commit), each in its own process
   (benchmarks/cache_side.py) against the same Redis, in ABAB rounds. Goal: a hit 1, a miss ≤ 4.

A scratch database (schema + reference data) and a fresh Redis namespace are created and removed.
``--only round-trips`` runs the third measurement alone.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.synchronize
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis

from psra_bench.cache import CacheService
from psra_bench.db.dal import PostgresDAL
from psra_bench.db.reference import load_reference_data
from psra_bench.infra import postgres as db
from psra_bench.infra.embedded import ensure_services
from psra_bench.measure.stats import LatencyStats, bootstrap_ratio_ci, summarize
from psra_bench.settings import Settings

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent

CODE = "847130"
ROUNDS = 20
PER_ROUND = 500
SWEEP_KEYS = 100_000
SWEEP_REPEATS = 3


def _fmt(name: str, s: LatencyStats) -> str:
    return (
        f"  {name:<34} p50 {s.p50:8.4f} ms [95% CI {s.p50_ci[0]:.4f}-{s.p50_ci[1]:.4f}]  "
        f"p99 {s.p99:8.4f} ms  mean {s.mean:.4f} ± {s.stdev:.4f} (sd)  max {s.max:8.3f}  n={s.n}"
    )


def _timed(func: Callable[[], object], count: int, out: list[float]) -> None:
    clock = time.perf_counter_ns
    for _ in range(count):
        start = clock()
        func()
        out.append((clock() - start) / 1e6)


def hit_latency(settings: Settings, cache: CacheService) -> None:
    """Interleaved rounds: cached hit vs raw GET vs the database."""
    assert settings.redis is not None and settings.db_dsn is not None
    pool = db.create_pool(settings, min_size=1, max_size=2)
    raw = redis.Redis(**settings.redis.client_kwargs())
    try:
        dal = PostgresDAL(pool)
        row = dal.hs_code_by_code(CODE)
        assert row is not None
        cache.cache_hs_code(CODE, row)
        physical = cache.physical(f"hs:code:{CODE}")
        assert cache.get_cached_hs_code(CODE) == row and raw.get(physical) is not None
        with db.connect(settings.db_dsn, autocommit=True) as conn:
            sql = "SELECT code, description, parent, level, section, chapter, version FROM hs_codes WHERE code = %s"
            sides: dict[str, Callable[[], object]] = {
                "get_cached_hs_code (hit)": lambda: cache.get_cached_hs_code(CODE),
                "raw redis-py GET": lambda: raw.get(physical),
                "raw GET + json.loads": lambda: json.loads(raw.get(physical)),
                "PostgresDAL.hs_code_by_code": lambda: dal.hs_code_by_code(CODE),
                "plain psycopg SELECT": lambda: conn.execute(sql, (CODE,)).fetchone(),
            }
            samples: dict[str, list[float]] = {name: [] for name in sides}
            for func in sides.values():  # warm-up: connections, prepared plans, code paths
                _timed(func, 200, [])
            names = list(sides)
            for r in range(ROUNDS):
                order = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
                for name in order:
                    _timed(sides[name], PER_ROUND, samples[name])
        stats = {name: summarize(values) for name, values in samples.items()}
        print(f"\n1. Hit latency of hs:code:{CODE} ({ROUNDS} interleaved rounds x {PER_ROUND} calls per side)")
        for name, s in stats.items():
            print(_fmt(name, s))
        cached, plain = samples["get_cached_hs_code (hit)"], samples["raw redis-py GET"]
        lo, hi = bootstrap_ratio_ci(plain, cached)
        p50_ratio = stats["get_cached_hs_code (hit)"].p50 / stats["raw redis-py GET"].p50
        p99_ratio = stats["get_cached_hs_code (hit)"].p99 / stats["raw redis-py GET"].p99
        verdict = "meets" if p50_ratio <= 1.5 else "MISSES"
        print(
            f"  cached hit / raw GET: p50 ratio {p50_ratio:.3f} (95% CI {lo:.3f}-{hi:.3f}), "
            f"p99 ratio {p99_ratio:.3f} -> {verdict} the 1.5x goal"
        )
        decoded = stats["get_cached_hs_code (hit)"].p50 / stats["raw GET + json.loads"].p50
        print(f"  cached hit / (raw GET + json.loads): p50 ratio {decoded:.3f} (the service's own overhead)")
        db_ratio = stats["PostgresDAL.hs_code_by_code"].p50 / stats["get_cached_hs_code (hit)"].p50
        print(f"  uncached DAL lookup / cached hit: p50 ratio {db_ratio:.1f}")
        own = cache.stats()["entities"]["hs_codes"]["hit_latency"]
        print(
            f"  the service's own hit counter: count {own['count']}, reservoir n={own['n']}, "
            f"p50 {own['p50_ms']} ms, p99 {own['p99_ms']} ms (Redis round trip only)"
        )
    finally:
        raw.close()
        pool.close()


def _probe(
    redis_kwargs: dict[str, Any],
    key: str,
    ready: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
    out: Any,
) -> None:
    """In another process: GET ``key`` in a loop, recording (monotonic start ns, latency ns)."""
    client = redis.Redis(**(redis_kwargs | {"socket_timeout": 30}))
    starts: list[int] = []
    lats: list[int] = []
    client.get(key)
    ready.set()
    clock = time.monotonic_ns
    while not stop.is_set():
        t0 = clock()
        client.get(key)
        starts.append(t0)
        lats.append(clock() - t0)
    client.close()
    out.send((starts, lats))
    out.close()


def _fill(client: redis.Redis, namespace: str, count: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.set(f"{namespace}hs:code:{i:07d}", '{"code":"x","description":"bench"}', ex=3600)
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()


def _sweep_once(settings: Settings, cache: CacheService, client: redis.Redis, method: str) -> dict[str, Any]:
    assert settings.redis is not None
    _fill(client, cache.namespace, SWEEP_KEYS)
    probe_key = cache.physical("probe")
    client.set(probe_key, "x", ex=3600)
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_probe, args=(settings.redis.client_kwargs(), probe_key, ready, stop, send))
    proc.start()
    ready.wait(30)
    time.sleep(1.0)  # idle baseline
    began = time.monotonic_ns()
    if method == "SCAN+UNLINK":
        deleted = cache.delete_pattern("hs:*")
    else:
        found = client.keys(cache.physical("hs:*"))  # comparison only: the original's way
        deleted = int(client.delete(*found)) if found else 0
    ended = time.monotonic_ns()
    time.sleep(0.3)
    stop.set()
    starts, lats = receive.recv()
    proc.join(30)
    t = np.array(starts, dtype=np.int64)
    lat = np.array(lats, dtype=np.float64) / 1e6
    base = lat[(t < began - 50_000_000)]
    during = lat[(t + (lat * 1e6).astype(np.int64) >= began) & (t <= ended)]
    return {"deleted": deleted, "seconds": (ended - began) / 1e9, "baseline": base, "during": during}


def invalidation_under_load(settings: Settings, cache: CacheService) -> None:
    """100k keys, SCAN+UNLINK vs KEYS+DEL, alternating, while another process measures GET latency."""
    assert settings.redis is not None
    client = redis.Redis(**(settings.redis.client_kwargs() | {"socket_timeout": 60}))
    results: dict[str, list[dict[str, Any]]] = {"SCAN+UNLINK": [], "KEYS+DEL": []}
    cache.invalidate_hs_codes()  # part 1's entry: every sweep starts from exactly SWEEP_KEYS keys
    try:
        for r in range(SWEEP_REPEATS):
            for method in ("SCAN+UNLINK", "KEYS+DEL") if r % 2 == 0 else ("KEYS+DEL", "SCAN+UNLINK"):
                results[method].append(_sweep_once(settings, cache, client, method))
    finally:
        client.close()
    print(
        f"\n2. Invalidating {SWEEP_KEYS:,} keys while another process GETs one key in a loop "
        f"({SWEEP_REPEATS} alternating repeats each)"
    )
    for method, runs in results.items():
        secs = np.array([run["seconds"] for run in runs])
        print(
            f"  {method}: deleted {[run['deleted'] for run in runs]} keys; wall time "
            f"{secs.mean():.3f} s mean, min {secs.min():.3f}, max {secs.max():.3f} (n={len(runs)} sweeps)"
        )
        during = np.concatenate([run["during"] for run in runs])
        base = np.concatenate([run["baseline"] for run in runs])
        for label, x in (("other client's GET, idle", base), ("other client's GET, during sweep", during)):
            if x.size >= 2:
                print(_fmt(label, summarize(x, resamples=500)))
            else:
                print(f"  {label}: n={x.size} (too few samples)")
        worst = [float(run["during"].max()) if run["during"].size else float("nan") for run in runs]
        print(f"  worst GET during each sweep: {', '.join(f'{w:.2f}' for w in worst)} ms")


def _side(label: str, checkout: Path, settings: Settings) -> subprocess.Popen[str]:
    assert settings.redis is not None
    env = {**os.environ, "PYTHONPATH": str(checkout), "REDIS_URL": settings.redis.url(),
           "PSRA_CACHE_NAMESPACE": f"{settings.cache_namespace}{label}:"}  # fmt: skip
    for name in ("REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB"):
        env.pop(name, None)
    side = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "cache_side.py"), str(ROOT / "psra_bench/measure/roundtrips.py")],
        cwd=checkout, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert side.stdout is not None
    hello = json.loads(side.stdout.readline())
    if Path(hello["package"]) != (checkout / "psra_bench").resolve():
        raise SystemExit(f"variant {label}: python imports psra_bench from {hello['package']}, not from {checkout}")
    return side


def _ask(side: subprocess.Popen[str], n: int) -> dict[str, list[float]]:
    assert side.stdin is not None and side.stdout is not None
    side.stdin.write(f"{n}\n")
    side.stdin.flush()
    answer: dict[str, list[float]] = json.loads(side.stdout.readline())
    return answer


def round_trips(settings: Settings, variants: list[tuple[str, Path]], rounds: int, per_round: int) -> None:
    """Round trips and latency per hit and per miss, this checkout beside each variant, ABAB."""
    each = f"{per_round} hits + {per_round} misses"
    print(f"\n3. Round trips per read-through hit and miss ({rounds} ABAB rounds of {each} per side)")
    sides = [("this", ROOT), *variants]
    procs = {label: _side(label, path, settings) for label, path in sides}
    samples: dict[str, dict[str, list[float]]] = {label: {} for label, _ in sides}
    try:
        for r in range(rounds):
            order = sides if r % 2 == 0 else sides[::-1]
            for label, _ in order:
                for name, values in _ask(procs[label], per_round).items():
                    samples[label].setdefault(name, []).extend(values)
    finally:
        for proc in procs.values():
            assert proc.stdin is not None
            proc.stdin.write("quit\n")
            proc.stdin.close()
            proc.wait(timeout=30)
    for label, _ in sides:
        print(f"  {label}:")
        for kind in ("hit", "miss"):
            trips = np.array(samples[label][f"{kind}_trips"])
            print(f"    round trips per {kind}: mean {trips.mean():.3f}, min {trips.min():.0f}, max {trips.max():.0f} "
                  f"(n={trips.size})")  # fmt: skip
            print(_fmt(f"{kind} latency", summarize(np.array(samples[label][f"{kind}_ms"]), resamples=500)))
    for label, _ in variants:
        for kind in ("hit", "miss"):
            ours, theirs = np.array(samples["this"][f"{kind}_ms"]), np.array(samples[label][f"{kind}_ms"])
            ratio = float(np.median(theirs) / np.median(ours))
            low, high = bootstrap_ratio_ci(ours, theirs, resamples=500)
            print(f"  {kind} p50, {label} / this: {ratio:.2f}x [95% CI {low:.2f}-{high:.2f}]")


def _variant(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    checkout = Path(path).expanduser().resolve()
    if not sep or not label.isidentifier() or not (checkout / "psra_bench" / "__init__.py").is_file():
        raise SystemExit(f"--variant {text!r} is not valid: use LABEL=PATH, PATH a psra-bench checkout")
    return label, checkout


def main(argv: list[str] | None = None) -> int:
    """Create a scratch database and namespace, run the measurements, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", default=[], help="LABEL=PATH: an earlier checkout's cache")
    parser.add_argument("--only", choices=["all", "round-trips"], default="all")
    parser.add_argument("--rounds", type=int, default=6, help="ABAB rounds of the round-trip comparison (>= 1)")
    parser.add_argument("--per-round", type=int, default=500, help="hits and misses per side and round (>= 1)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.per_round < 1:
        parser.error(f"--rounds {args.rounds} and --per-round {args.per_round}: each must be a whole number >= 1")
    variants = [_variant(v) for v in args.variant]
    base = ensure_services(Settings.from_env())
    assert base.db_dsn is not None and base.redis is not None
    name = f"psra_bench_cache_{uuid.uuid4().hex[:8]}"
    dsn = db.create_database(base.db_dsn, name)
    settings = base.replace(db_dsn=dsn, cache_namespace=f"{base.cache_namespace}bench-cache-{uuid.uuid4().hex[:8]}:")
    cache = CacheService(settings)
    try:
        with db.connect(dsn) as conn:
            db.apply_schema(conn)
            load_reference_data(conn)
            conn.commit()
        print(
            f"bench_cache: redis {settings.redis!r}, namespace {settings.cache_namespace!r}, "
            f"python {sys.version.split()[0]}, redis-py {redis.__version__}"
        )
        if args.only == "all":
            hit_latency(settings, cache)
            invalidation_under_load(settings, cache)
        round_trips(settings, variants, args.rounds, args.per_round)
    finally:
        cache.delete_pattern("*")
        cache.reset_stats()
        cache.close()
        db.drop_database(base.db_dsn, name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
