"""Job queue benchmark: throughput (jobs/s) and submit→complete latency of psra-bench's queue, and of arq.

Run: ``python benchmarks/bench_jobs.py`` (settings from the environment; JOBS_REDIS_URL, else
REDIS_URL, names the Redis, else the embedded jobs Valkey is started). Method, identical for both systems:

* **Throughput.** W worker processes are started and waited for until registered (idle); then
  N jobs are enqueued (up to 32 in flight) and the run waits until the queue drains. Jobs/s =
  N / (last finish - first start), from the jobs' own timestamps (ms). Repeated R times per W;
  the median and the min–max spread are printed. Workloads: ``noop`` and ``assess`` (one real
  pure assessment, psra_bench.psra.assessment.assess on the vendored rules, through the default
  assessment handler; psra-bench only).
* **Latency.** One warm worker process; jobs are submitted open-loop at a fixed rate; latency =
  finish - enqueue per job (ms resolution), p50 / p99 with n.
* **arq** (https://arq-docs.helpmanual.io/) runs the same no-op workloads against the same Redis
  from its own venv ``.venv-arq`` (created here on first use: arq pins redis<6), through
  benchmarks/arq_peer.py, with arq's default ``poll_delay`` (0.5 s) and a tuned one (0.01 s).
  Our workers are woken by pub/sub; their idle poll interval is the default 0.5 s.

Every Redis key lives under a fresh ``bench-jobs-*:`` namespace, removed (SCAN + UNLINK) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from psra_bench.cache.keys import scan_unlink_nodes
from psra_bench.constants import JOB_QUEUE_PREFIX
from psra_bench.jobs import JobQueue
from psra_bench.settings import Settings

__all__ = ["setup", "main"]

ROOT = Path(__file__).resolve().parent.parent
ARQ_VENV = ROOT / ".venv-arq"
ARQ_PEER = ROOT / "benchmarks" / "arq_peer.py"
HANDLERS = f"{Path(__file__).resolve()}:setup"
#: Per-process concurrency on both sides (arq's max_jobs default is 10).
PER_WORKER_CONCURRENCY = 10


def assessment_request() -> dict[str, Any]:
    """A valid USMCA request for HS 8471.30 with a 10-line bill of materials."""
    bom = [
        {"hs_code": "8473.30", "value": 120, "origin_country": "CN"},
        {"hs_code": "8542.31", "value": 80, "origin_country": "MX"},
    ]
    return {
        "hs_code": "8471.30",
        "bill_of_materials": bom * 5,
        "transaction_value": 5000,
        "agreement_code": "USMCA",
        "origin_country": "MX",
        "destination_country": "US",
        "tenant_id": "6f1c1d55-3f0e-4f0f-9a53-52a1b7c8e001",
    }


def setup(queue: JobQueue) -> None:
    """Worker handlers of this benchmark: ``noop`` and ``assess`` (a real pure assessment)."""
    from psra_bench.jobs import register_default_handlers
    from psra_bench.psra.assessment import assess, default_rules, known_hs_subheadings, verdict_to_dict

    known_hs_subheadings()  # warm the caches outside the measured jobs
    rules = default_rules()

    def run_assessment(payload: dict[str, Any]) -> dict[str, Any]:
        return verdict_to_dict(assess(payload, rules))

    async def noop(payload: dict[str, Any], update_progress: Any) -> None:
        return None

    queue.register_handler("noop", noop)
    register_default_handlers(queue, assessment_fn=run_assessment)


# -- processes ------------------------------------------------------------------------------


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def _our_workers(settings: Settings, n: int) -> list[subprocess.Popen[bytes]]:
    assert settings.redis is not None
    env = dict(
        os.environ,
        REDIS_URL=settings.redis.url(),
        JOBS_REDIS_URL=settings.redis.url(),
        MAX_CONCURRENT_JOBS=str(PER_WORKER_CONCURRENCY * n),
    )
    cmd = [
        sys.executable,
        "-m",
        "psra_bench",
        "worker",
        "--handlers",
        HANDLERS,
        "--concurrency",
        str(PER_WORKER_CONCURRENCY),
        "--namespace",
        settings.cache_namespace,
        "--grace",
        "2",
    ]
    return [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)
    ]


def ensure_arq_venv() -> Path:
    """The Python of ``.venv-arq`` (created with arq installed when missing)."""
    python = ARQ_VENV / "bin" / "python"
    if not python.exists():
        base = shutil.which("python3") or sys.executable
        subprocess.run([base, "-m", "venv", str(ARQ_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "arq"], check=True)
    return python


def _arq_workers(python: Path, url: str, ns: str, n: int, poll_delay: float) -> list[subprocess.Popen[bytes]]:
    cmd = [
        str(python),
        str(ARQ_PEER),
        "worker",
        "--redis-url",
        url,
        "--namespace",
        ns,
        "--max-jobs",
        str(PER_WORKER_CONCURRENCY),
        "--poll-delay",
        str(poll_delay),
    ]
    return [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]


def _wait_ready(check: Any, procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a worker process exited during start-up")
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not become ready")
        time.sleep(0.05)


# -- load generators -------------------------------------------------------------------------


async def our_load(queue: JobQueue, job_type: str, payload: dict[str, Any], jobs: int, rate: float) -> dict[str, Any]:
    """Submit ``jobs`` jobs (open-loop at ``rate``/s, or as fast as 32 in flight allow), wait, return times (ms)."""
    sem = asyncio.Semaphore(32)
    ids: list[str] = []
    t0 = time.perf_counter()

    async def submit(i: int) -> None:
        if rate > 0:
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        async with sem:
            ids.append(await queue.submit(job_type, payload, ttl_seconds=600))

    await asyncio.gather(*(submit(i) for i in range(jobs)))
    enqueue_seconds = time.perf_counter() - t0
    while True:
        h = await queue.health()
        if sum(h["queued_jobs"].values()) == 0 and h["running_jobs"] == 0:
            break
        await asyncio.sleep(0.1)
    async with queue.redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(queue.job_key(job_id), "status", "created_at", "started_at", "completed_at")
        rows = await pipe.execute()
    times = [[int(c), int(s), int(f)] for st, c, s, f in rows if st == "completed"]
    return {
        "system": "psra-bench",
        "jobs": jobs,
        "completed": len(times),
        "enqueue_seconds": enqueue_seconds,
        "times_ms": times,
    }


def arq_load(python: Path, url: str, ns: str, jobs: int, rate: float) -> dict[str, Any]:
    """Run arq_peer.py ``load`` in the arq venv and parse its JSON line."""
    out = subprocess.run(
        [
            str(python),
            str(ARQ_PEER),
            "load",
            "--redis-url",
            url,
            "--namespace",
            ns,
            "--jobs",
            str(jobs),
            "--rate",
            str(rate),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# -- statistics -----------------------------------------------------------------------------


def throughput(run: dict[str, Any]) -> float:
    """Jobs per second between the first start and the last finish."""
    times = run["times_ms"]
    if run["completed"] != run["jobs"]:
        raise RuntimeError(f"{run['system']}: only {run['completed']} of {run['jobs']} jobs completed")
    span = (max(t[2] for t in times) - min(t[1] for t in times)) / 1000.0
    return len(times) / max(span, 0.001)


def latency(run: dict[str, Any]) -> dict[str, float]:
    """p50 / p99 / max of finish - enqueue (ms), with n."""
    lat = sorted(t[2] - t[0] for t in run["times_ms"])
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {"n": len(lat), "p50_ms": q[49], "p99_ms": q[98], "max_ms": float(lat[-1])}


def spread(values: list[float]) -> dict[str, float]:
    """Median and min–max of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


# -- the runs -------------------------------------------------------------------------------


def _clean(client: redis.Redis, ns: str) -> None:
    scan_unlink_nodes([client], ns + "*")
    scan_unlink_nodes([client], JOB_QUEUE_PREFIX.format(namespace=ns) + "*")  # our queue's keys


def run_ours(
    settings: Settings, workers: int, job_type: str, payload: dict[str, Any], jobs: int, rate: float
) -> dict[str, Any]:
    """One psra-bench run: fresh namespace, ``workers`` warm processes, the load, then SIGTERM."""
    ns = f"{settings.cache_namespace}ours-{uuid.uuid4().hex[:6]}:"
    s = settings.replace(cache_namespace=ns, max_concurrent_jobs=PER_WORKER_CONCURRENCY * workers)
    assert s.redis is not None
    client = redis.Redis(**s.redis.client_kwargs())
    procs = _our_workers(s, workers)
    try:

        def ready() -> bool:
            live = client.zcount(JOB_QUEUE_PREFIX.format(namespace=ns) + "workers", int(time.time() * 1000), "+inf")
            return int(live) >= workers

        _wait_ready(ready, procs)

        async def go() -> dict[str, Any]:
            queue = JobQueue(s)
            setup_names(queue)
            try:
                return await our_load(queue, job_type, payload, jobs, rate)
            finally:
                await queue.close()

        return asyncio.run(go())
    finally:
        _stop(procs)
        _clean(client, ns)
        client.close()


def setup_names(queue: JobQueue) -> None:
    """Register the benchmark's job types on a submitting queue (the handlers run in the workers)."""

    async def unused(payload: dict[str, Any], update_progress: Any) -> None:
        raise AssertionError("jobs run in the worker processes")

    queue.register_handler("noop", unused)
    queue.register_handler("assessment", unused)


def run_arq(
    python: Path, settings: Settings, workers: int, jobs: int, rate: float, poll_delay: float
) -> dict[str, Any]:
    """One arq run: fresh namespace, ``workers`` warm arq processes, the load, then SIGTERM."""
    assert settings.redis is not None
    ns = f"{settings.cache_namespace}arq-{uuid.uuid4().hex[:6]}:"
    client = redis.Redis(**settings.redis.client_kwargs())
    procs = _arq_workers(python, settings.redis.url(), ns, workers, poll_delay)
    try:
        _wait_ready(lambda: sum(1 for _ in client.scan_iter(match=ns + "arq:ready:*")) >= workers, procs)
        return arq_load(python, settings.redis.url(), ns, jobs, rate)
    finally:
        _stop(procs)
        _clean(client, ns)
        client.close()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and optionally save as JSON) the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per throughput run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts")
    parser.add_argument("--latency-jobs", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0, help="jobs/s submitted in the latency runs")
    parser.add_argument("--skip-arq", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    worker_counts = [int(x) for x in args.workers.split(",")]

    settings = Settings.from_env()
    # Both queues run on the job store: JOBS_REDIS_URL, else REDIS_URL, else the embedded jobs
    # Valkey (noeviction, append-only file everysec), so the comparison shares one server.
    store = settings.jobs_redis or settings.redis
    if store is None:
        from psra_bench.infra.embedded import start_jobs_valkey

        store = start_jobs_valkey(settings.home)
    settings = settings.replace(redis=store, jobs_redis=store)
    settings = settings.replace(cache_namespace=f"{settings.cache_namespace}bench-jobs-{uuid.uuid4().hex[:6]}:")
    assert settings.redis is not None
    python = None if args.skip_arq else ensure_arq_venv()
    info = redis.Redis(**settings.redis.client_kwargs()).info("server")
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "redis": info.get("valkey_version") or info.get("redis_version"),
            "redis_url": settings.redis.url(with_password=False),
            "load_average_at_start": os.getloadavg(),
        },
        "method": {
            "jobs_per_run": args.jobs,
            "repeats": args.repeats,
            "per_worker_concurrency": PER_WORKER_CONCURRENCY,
            "latency_jobs": args.latency_jobs,
            "latency_rate_per_s": args.rate,
        },
        "throughput": [],
        "latency": [],
    }
    print(f"# job queue benchmark on {results['machine']}")
    print(f"# {args.jobs} jobs per run, {args.repeats} runs per row; jobs/s median [min–max]")
    systems: list[tuple[str, str, Any]] = [
        ("psra-bench", "noop", lambda w, n, r: run_ours(settings, w, "noop", {}, n, r)),
        ("psra-bench", "assess", lambda w, n, r: run_ours(settings, w, "assessment", assessment_request(), n, r)),
    ]
    if python is not None:
        systems += [
            ("arq poll_delay=0.5", "noop", lambda w, n, r: run_arq(python, settings, w, n, r, 0.5)),
            ("arq poll_delay=0.01", "noop", lambda w, n, r: run_arq(python, settings, w, n, r, 0.01)),
        ]
    # Interleaved (W, repeat, system) so the machine's noise spreads over all systems alike.
    samples: dict[tuple[str, str, int], list[float]] = {}
    for w in worker_counts:
        for _ in range(args.repeats):
            for name, workload, fn in systems:
                samples.setdefault((name, workload, w), []).append(throughput(fn(w, args.jobs, 0.0)))
    for name, workload, _fn in systems:
        for w in worker_counts:
            row = {"system": name, "workload": workload, "workers": w, "jobs_per_s": spread(samples[name, workload, w])}
            results["throughput"].append(row)
            sp = row["jobs_per_s"]
            print(f"{name:22} {workload:7} W={w}  {sp['median']:8.0f} jobs/s  [{sp['min']:.0f}–{sp['max']:.0f}]")
    for name, workload, fn in systems:
        lat = latency(fn(1, args.latency_jobs, args.rate))
        results["latency"].append({"system": name, "workload": workload, "workers": 1, **lat})
        print(
            f"{name:22} {workload:7} latency @ {args.rate:.0f}/s: p50 {lat['p50_ms']:.1f} ms, "
            f"p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.0f} ms (n={lat['n']})"
        )
    if python is not None:
        ours = {
            r["workers"]: r["jobs_per_s"]["median"]
            for r in results["throughput"]
            if r["system"] == "psra-bench" and r["workload"] == "noop"
        }
        for r in results["throughput"]:
            if r["system"].startswith("arq"):
                ratio = ours[r["workers"]] / r["jobs_per_s"]["median"]
                r["psra_bench_over_arq"] = ratio
                print(f"no-op throughput psra-bench / {r['system']}, W={r['workers']}: {ratio:.2f}x")
    results["machine"]["load_average_at_end"] = os.getloadavg()
    print(
        f"# load average (1, 5, 15 min): start {results['machine']['load_average_at_start']}, "
        f"end {results['machine']['load_average_at_end']}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
