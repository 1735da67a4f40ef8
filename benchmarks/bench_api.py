"""API benchmark: ``psra-bench serve`` against a minimal FastAPI + redis.asyncio app, side by side.

Run: ``python benchmarks/bench_api.py`` (settings from the environment, else the embedded servers;
a 20,000-verdict dataset in the database ``psra_bench_api_bench``). Method:

* **Servers.** Each side is a uvicorn process on 127.0.0.1 with the same options (log level
  warning, no access log, uvicorn's ``auto`` loop and HTTP parser): our API as
  ``python -m psra_bench serve --no-job-workers`` and the peer, benchmarks/minimal_api.py, which
  reads the same cache keys with redis.asyncio in async routes. ``--variant LABEL=PATH`` adds our
  API from another checkout (run in PATH with ``PYTHONPATH=PATH``: a worktree of an earlier
  commit; the benchmark checks that python imports psra_bench from there), so the effect
  of each change is measured in the same run; options ``workers=N``, ``loop=asyncio|uvloop``,
  ``http=h11|httptools`` (``LABEL=PATH,loop=asyncio,http=h11``) start it with ``--workers N`` or
  that loop and parser (benchmarks/serve_with.py), so a step's effect has its own row.
  All servers stay up for the whole run; an idle one uses no CPU.
* **Lookups.** The cached HS lookup ``GET /api/hs/8471.30``, the cached rule ``GET
  /api/rules/{id}`` and the cached synchronous assessment ``POST /api/assessments`` (a hit: the
  verdict was stored and cached by a priming call). Every answer must be a 200.
* **Throughput** at concurrency c = 1, 8, 32: closed loop for ``--seconds`` per round, with wrk
  (Debian's package; one thread, keep-alive) when it is installed, else the asyncio client
  below. Rounds are ABAB (the order flips every round) so the machine's drift spreads over all
  sides alike; each cell prints the median [min–max] of ``--rounds`` rounds, and each ratio is
  the median [min–max] of the per-round ratios against the minimal app.
* **Latency at a fixed rate** (``--rate`` requests/s, open model: latency from each request's
  intended start, so queueing counts): the asyncio client on 16 keep-alive connections; p50 /
  p99 with n, pooled over the rounds.
* **CPU.** The load generator's CPU (wrk's rusage, or this process's own for the asyncio
  client) and the server's (its process tree, psutil) in cores: ``cpu seconds / wall seconds``.
  A generator above 0.9 of a core is flagged: then it, not the server, may be the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = "minimal"
SATURATED_CORES = 0.9
FIXED_RATE_CONNECTIONS = 16


# -- servers ---------------------------------------------------------------------------------


@dataclass
class Side:
    """One server under test."""

    label: str
    command: list[str]
    env: dict[str, str]
    health: str
    port: int
    #: Working directory: a variant's checkout (``python -m`` puts the cwd first on sys.path).
    cwd: Path = ROOT
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """CPU seconds of the server's process tree so far."""
        assert self.process is not None
        total = 0.0
        try:
            root = psutil.Process(self.process.pid)
            for p in [root, *root.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
        return total


_TAKEN: set[int] = set()


def _free_port() -> int:
    """A free port no other side of this run was given (none is bound until the servers start)."""
    from psra_bench.load.api_server import free_port

    while (port := free_port()) in _TAKEN:
        pass
    _TAKEN.add(port)
    return port


def our_side(label: str, checkout: Path, settings: Any, options: dict[str, str]) -> Side:
    """``psra-bench serve`` from ``checkout``; options: workers=N, loop=…, http=… (then through serve_with.py)."""
    from psra_bench.load.api_server import server_env

    env = server_env(settings) | {"PYTHONPATH": str(checkout)}
    port = _free_port()
    if "loop" in options or "http" in options:
        launcher = [
            str(ROOT / "benchmarks" / "serve_with.py"),
            options.get("loop", "auto"),
            options.get("http", "auto"),
        ]
    else:
        launcher = ["-m", "psra_bench"]
    cmd = [sys.executable, *launcher, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-job-workers"]
    if "workers" in options:
        cmd += ["--workers", options["workers"]]
    found = subprocess.run(
        [sys.executable, "-c", "import psra_bench; print(psra_bench.__file__)"],
        env=env, cwd=checkout, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not Path(found).resolve().is_relative_to(checkout.resolve()):
        raise SystemExit(f"variant {label}: python imports psra_bench from {found}, not from {checkout}")
    return Side(label, cmd, env, "/api/jobs/health", port, cwd=checkout)


def minimal_side(settings: Any) -> Side:
    port = _free_port()
    env = {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "REDIS_URL": settings.redis.url(with_password=True),
        "PSRA_CACHE_NAMESPACE": settings.cache_namespace,
    }
    cmd = [sys.executable, "-m", "uvicorn", "minimal_api:app", "--app-dir", str(ROOT / "benchmarks"),
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    return Side(MINIMAL, cmd, env, "/health", port)


def start(side: Side, logdir: Path, timeout_s: float = 60.0) -> None:
    side.log = logdir / f"{side.label}.log"
    with open(side.log, "wb") as fh:
        side.process = subprocess.Popen(
            side.command, env=side.env, stdout=fh, stderr=subprocess.STDOUT, cwd=side.cwd, start_new_session=True
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if side.process.poll() is not None:
            tail = side.log.read_text()[-2000:]
            raise SystemExit(f"server {side.label} exited with {side.process.returncode}: {tail}")
        try:
            with urllib.request.urlopen(side.url + side.health, timeout=2) as r:
                if json.loads(r.read()).get("status") == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server {side.label} did not become healthy in {timeout_s:g} s")


def stop(side: Side) -> None:
    from psra_bench.load.api_server import stop_process_group

    if side.process is not None:
        stop_process_group(side.process, 10.0)


# -- requests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lookup:
    """One request, as wrk and the asyncio client send it."""

    name: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""

    def raw(self, host: str) -> bytes:
        head = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        if self.body:
            head.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + self.body


def lookups() -> list[Lookup]:
    """The three cached lookups on seeded data (a real rule and an assessable product of the load mix)."""
    from psra_bench.db.seed import tenant_ids
    from psra_bench.load.request_mix import Workload

    tenant = tenant_ids(1)[0]
    workload = Workload(tenants=1, seed=42, products=3)
    product = {**workload.products.items[0], "tenant_id": tenant}
    rule_id = workload.rules[0]["rule_id"]
    return [
        Lookup("hs", "GET", "/api/hs/8471.30", {}),
        Lookup("rule", "GET", f"/api/rules/{rule_id}", {}),
        Lookup(
            "assessment",
            "POST",
            "/api/assessments",
            {"Content-Type": "application/json", "X-Tenant-ID": tenant},
            json.dumps(product).encode(),
        ),
    ]


def call(side: Side, lk: Lookup) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(side.url + lk.path, data=lk.body or None, method=lk.method, headers=lk.headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {"detail": e.read().decode(errors="replace")}


# -- load generators -------------------------------------------------------------------------


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    writer.write(raw)
    status = int((await reader.readline()).split(b" ", 2)[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _closed_loop(url: str, lk: Lookup, concurrency: int, seconds: float) -> dict[str, Any]:
    host = url.split("//", 1)[1]
    h, p = host.split(":")
    raw = lk.raw(host)
    latencies: list[float] = []
    bad = 0
    end = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal bad
        reader, writer = await asyncio.open_connection(h, int(p))
        try:
            while (t := time.perf_counter()) < end:
                if await _exchange(reader, writer, raw) != 200:
                    bad += 1
                latencies.append(time.perf_counter() - t)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / wall,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
        "non_200": bad,
        "wall_s": wall,
    }


def asyncio_closed_loop(url: str, lk: Lookup, concurrency: int, seconds: float) -> dict[str, Any]:
    """Throughput with the asyncio client; the generator CPU is this process's own."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    out = asyncio.run(_closed_loop(url, lk, concurrency, seconds))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out | {"generator_cores": cpu / out["wall_s"]}


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _wrk_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk_closed_loop(url: str, lk: Lookup, concurrency: int, seconds: float, wrk: str) -> dict[str, Any]:
    """Throughput with wrk (one thread); the generator CPU is wrk's rusage."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f"wrk.method = {json.dumps(lk.method)}\n")
        if lk.body:
            script.write(f"wrk.body = {json.dumps(lk.body.decode())}\n")
        for k, v in lk.headers.items():
            script.write(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n")
    try:
        duration = f"-d{max(1, round(seconds))}s"  # wrk takes whole seconds
        cmd = [wrk, "-t1", f"-c{concurrency}", duration, "--latency", "-s", script.name, url + lk.path]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        text = proc.stdout.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
    finally:
        os.unlink(script.name)
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed ({proc.returncode}): {text}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", text, re.M))
    non_200 = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return {
        "requests": requests,
        "rps": rps,
        "p50_ms": _wrk_ms(pct["50"]),
        "p99_ms": _wrk_ms(pct["99"]),
        "non_200": int(non_200.group(1)) if non_200 else 0,
        "socket_errors": errors.group(1) if errors else None,
        "wall_s": wall,
        "generator_cores": (usage.ru_utime + usage.ru_stime) / wall,
    }


async def _fixed_rate(url: str, lk: Lookup, rate: float, seconds: float) -> dict[str, Any]:
    host = url.split("//", 1)[1]
    h, p = host.split(":")
    raw = lk.raw(host)
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(FIXED_RATE_CONNECTIONS):
        idle.put_nowait(await asyncio.open_connection(h, int(p)))
    latencies: list[float] = []
    bad = 0
    t0 = time.perf_counter() + 0.05
    n = int(rate * seconds)

    async def arrival(i: int) -> None:
        nonlocal bad
        intended = t0 + i / rate
        await asyncio.sleep(max(0.0, intended - time.perf_counter()))
        conn = await idle.get()
        try:
            if await _exchange(*conn, raw) != 200:
                bad += 1
        finally:
            idle.put_nowait(conn)
        latencies.append(time.perf_counter() - intended)

    await asyncio.gather(*(arrival(i) for i in range(n)))
    while not idle.empty():
        idle.get_nowait()[1].close()
    return {"latencies_s": latencies, "non_200": bad}


# -- the run ---------------------------------------------------------------------------------


def _median_range(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{statistics.median(values):,.0f} [{min(values):,.0f}–{max(values):,.0f}]"


def _ratio_range(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}× [{min(values):.2f}–{max(values):.2f}]"


def _pct(sorted_s: list[float], q: float) -> float:
    return 1000 * sorted_s[min(len(sorted_s) - 1, int(len(sorted_s) * q))]


_OPTIONS = {"workers": r"[1-9]\d?", "loop": r"auto|asyncio|uvloop", "http": r"auto|h11|httptools"}


def parse_variant(text: str) -> tuple[str, Path, dict[str, str]]:
    """``LABEL=PATH[,workers=N][,loop=asyncio|uvloop][,http=h11|httptools]``."""
    allowed = "LABEL=PATH[,workers=N][,loop=auto|asyncio|uvloop][,http=auto|h11|httptools] with LABEL not 'minimal'"
    label, _, rest = text.partition("=")
    path, *opts = rest.split(",")
    if not label or not re.fullmatch(r"[A-Za-z0-9_.+-]+", label) or label == MINIMAL or not path:
        raise SystemExit(f"--variant {text!r} is not valid: use {allowed}")
    if not (Path(path) / "psra_bench" / "__init__.py").exists():
        raise SystemExit(f"--variant {text!r}: {path} is not a psra-bench checkout (no psra_bench/__init__.py)")
    options: dict[str, str] = {}
    for opt in opts:
        key, _, value = opt.partition("=")
        if key not in _OPTIONS or not re.fullmatch(_OPTIONS[key], value):
            raise SystemExit(f"--variant {text!r}: option {opt!r} is not valid: use {allowed}")
        options[key] = value
    return label, Path(path).resolve(), options


def prime(ours: list[Side], minimal: Side, chosen: list[Lookup]) -> None:
    """Fill the cache through our API (the second call must be a hit) and check the minimal app answers."""
    for lk in chosen:
        for side in ours:
            for _ in range(2):
                status, body = call(side, lk)
                if status != 200:
                    raise SystemExit(f"priming {lk.name} on {side.label}: HTTP {status} {body}")
            if lk.name == "assessment" and not body.get("cached"):
                raise SystemExit(f"{side.label}: the second assessment was not a cache hit: {body}")
        status, body = call(minimal, lk)
        if status != 200:
            raise SystemExit(f"the minimal app cannot answer {lk.name}: HTTP {status} {body}")


def throughput_cell(
    sides: list[Side], lk: Lookup, c: int, rounds: int, seconds: float, wrk: str | None
) -> dict[str, list[dict[str, Any]]]:
    """``rounds`` ABAB rounds of closed-loop throughput at concurrency ``c``, per side."""
    cell: dict[str, list[dict[str, Any]]] = {s.label: [] for s in sides}
    for r in range(rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            cpu0, t0 = side.cpu_seconds(), time.perf_counter()
            if wrk:
                m = wrk_closed_loop(side.url, lk, c, seconds, wrk)
            else:
                m = asyncio_closed_loop(side.url, lk, c, seconds)
            m["server_cores"] = (side.cpu_seconds() - cpu0) / (time.perf_counter() - t0)
            if m["non_200"] or m.get("socket_errors"):
                raise SystemExit(
                    f"{side.label} {lk.name} c={c}: {m['non_200']} non-200 answers ({m.get('socket_errors')})"
                )
            cell[side.label].append(m)
    return cell


def fixed_rate_rows(sides: list[Side], lk: Lookup, rounds: int, rate: float, seconds: float) -> list[dict[str, Any]]:
    """p50 / p99 at ``rate`` requests/s per side, pooled over ABAB rounds (printed too)."""
    pooled: dict[str, list[float]] = {s.label: [] for s in sides}
    for r in range(rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            out = asyncio.run(_fixed_rate(side.url, lk, rate, seconds))
            if out["non_200"]:
                raise SystemExit(f"{side.label} {lk.name} at {rate:g}/s: {out['non_200']} non-200 answers")
            pooled[side.label] += out["latencies_s"]
    print(f"\n{lk.name} at {rate:g} req/s (open model, {FIXED_RATE_CONNECTIONS} connections):")
    rows = []
    for label, lat in pooled.items():
        lat.sort()
        row = {"lookup": lk.name, "side": label, "rate": rate, "n": len(lat), "p50_ms": _pct(lat, 0.50),
               "p99_ms": _pct(lat, 0.99)}  # fmt: skip
        rows.append(row)
        print(f"  {label:>12}: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms (n={row['n']})")
    return rows


def check_args(args: argparse.Namespace) -> list[int]:
    """Every flag checked before a server starts: one sentence naming the flag and what is allowed."""
    whole = {"--rounds": args.rounds, "--verdicts": args.verdicts}
    for flag, value in whole.items():
        if value < 1:
            raise SystemExit(f"{flag} {value}: use a whole number >= 1")
    for flag, value in {"--seconds": args.seconds, "--rate": args.rate, "--rate-seconds": args.rate_seconds}.items():
        if not math.isfinite(value) or value <= 0:
            raise SystemExit(f"{flag} {value:g}: use a number > 0")
    try:
        concurrencies = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        concurrencies = []
    if not concurrencies or min(concurrencies) < 1:
        raise SystemExit(f"--concurrency {args.concurrency!r}: use comma-separated whole numbers >= 1, e.g. 1,8,32")
    return concurrencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="ABAB rounds per cell")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per throughput measurement")
    parser.add_argument("--concurrency", default="1,8,32", help="closed-loop connection counts")
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s of the fixed-rate latency runs")
    parser.add_argument("--rate-seconds", type=float, default=5.0, help="seconds per fixed-rate run")
    parser.add_argument("--lookups", default="hs,rule,assessment", help="which lookups (hs, rule, assessment)")
    parser.add_argument(
        "--variant", action="append", default=[], help="LABEL=PATH[,workers=N][,loop=…][,http=…]: another API build"
    )
    parser.add_argument("--api", default="", help="options of this checkout's API, as a variant's: workers=2,loop=…")
    parser.add_argument("--client", choices=["auto", "wrk", "asyncio"], default="auto")
    parser.add_argument("--verdicts", type=int, default=20_000, help="dataset scale")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    concurrencies = check_args(args)
    wrk = shutil.which("wrk") if args.client != "asyncio" else None
    if args.client == "wrk" and wrk is None:
        raise SystemExit("--client wrk: wrk is not installed (Debian: apt-get install wrk)")
    wanted = args.lookups.split(",")
    all_lookups = {lk.name: lk for lk in lookups()}
    for name in wanted:
        if name not in all_lookups:
            raise SystemExit(f"--lookups {args.lookups!r}: {name!r} is not one of hs, rule, assessment")
    chosen = [all_lookups[n] for n in wanted]

    from psra_bench.workbench import ensure_dataset, notebook_settings

    settings = notebook_settings("psra_bench_api_bench")
    ensure_dataset(settings, args.verdicts, 42)
    settings = settings.replace(cache_namespace=f"{settings.cache_namespace}bench-api-{uuid.uuid4().hex[:6]}:")
    variants = [parse_variant(f"api={ROOT}" + (f",{args.api}" if args.api else ""))]
    variants += [parse_variant(v) for v in args.variant]
    sides = [our_side(label, path, settings, opts) for label, path, opts in variants]
    sides.append(minimal_side(settings))
    logdir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
            "generator": f"wrk ({wrk})" if wrk else "asyncio client",
        },
        "method": vars(args) | {"json": str(args.json) if args.json else None},
        "throughput": [],
        "fixed_rate": [],
    }
    print(f"# API benchmark: {results['machine']}")
    print(f"# {args.rounds} ABAB rounds of {args.seconds:g} s per cell; req/s median [min–max]; servers: "
          + ", ".join(s.label for s in sides))  # fmt: skip
    try:
        for side in sides:
            start(side, logdir)
        prime([s for s in sides if s.label != MINIMAL], sides[-1], chosen)
        for lk in chosen:
            for c in concurrencies:
                cell = throughput_cell(sides, lk, c, args.rounds, args.seconds, wrk)
                _print_cell(lk.name, c, cell)
                results["throughput"].append({"lookup": lk.name, "concurrency": c, "rounds": cell})
        for lk in chosen:
            results["fixed_rate"] += fixed_rate_rows(sides, lk, args.rounds, args.rate, args.rate_seconds)
    finally:
        for side in sides:
            stop(side)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _print_cell(name: str, c: int, cell: dict[str, list[dict[str, Any]]]) -> None:
    base = [m["rps"] for m in cell[MINIMAL]]
    print(f"\n{name}, c={c}:")
    for label, rows in cell.items():
        rps = [m["rps"] for m in rows]
        gen = max(m["generator_cores"] for m in rows)
        srv = statistics.median(m["server_cores"] for m in rows)
        flag = "  GENERATOR SATURATED" if gen > SATURATED_CORES else ""
        ratio = "" if label == MINIMAL else "  ratio " + _ratio_range([a / b for a, b in zip(rps, base, strict=True)])
        p50 = statistics.median(m["p50_ms"] for m in rows)
        p99 = statistics.median(m["p99_ms"] for m in rows)
        print(f"  {label:>12}: {_median_range(rps)} req/s (n={len(rows)}){ratio}; p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
              f"server {srv:.2f} cores, generator ≤ {gen:.2f} cores{flag}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
