"""Load tests of the PSRA API: baseline vs indexes vs cache vs both, closed and open model.

:func:`run_load` is the whole flow (the ``psra-bench load`` command and notebook 04 call it).
For each configuration it

1. clones the dataset's database (``CREATE DATABASE … TEMPLATE``), so every configuration
   starts from the same rows and the dataset itself is never changed, then applies or rolls
   back the index migration on the clone and empties the cache namespace;
2. starts ``psra-bench serve`` on a free port of 127.0.0.1 with ``ENABLE_CACHE`` on or off;
3. runs Locust headless (``loadtests/locustfile.py``) as a **step load** — user counts
   ``steps``, each held until ``duration`` seconds have been measured after its ramp-up and a
   settle time — recording every request in µs-resolution histograms (:mod:`psra_bench.measure.hdr`).
   The step with ``users`` users is the headline closed-model measurement; the highest step
   whose p95 meets the SLO (with < 1 % failures) is the number of users supported;
4. runs the open-model driver (:mod:`psra_bench.load.open_model`) at ``arrival_rate``, latency from
   each request's intended start, late and dropped requests counted;
5. samples CPU and memory of PostgreSQL, Redis, the API and the load generator throughout
   (:mod:`psra_bench.measure.procmon`) and cuts the samples to each measured window.

A load generator that used more than ~90 % of a core in a window is flagged: its latencies
include the generator's own delay, so they are marked, not reported as the server's.

The steps live in sibling modules: :mod:`psra_bench.load.api_server` (the server child process),
:mod:`psra_bench.load.generators` (the plan and the generator child processes), :mod:`psra_bench.measure.procmon`
(CPU and memory) and :mod:`psra_bench.load.results` (users supported, the summary table); their
main functions are re-exported here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import psycopg
import redis

from psra_bench.db.ownership import claim, inspect
from psra_bench.exceptions import (
    ConfigError,
    DatabaseConnectionError,
    MeasurementError,
    NotOwnedError,
    ParameterError,
)
from psra_bench.infra import postgres as db
from psra_bench.load.api_server import start_api_server, stop_api_server
from psra_bench.load.capacity import CapacitySearch, SearchPlan, Step, capacity, step_passed
from psra_bench.load.generators import GeneratorProcess, LoadPlan, run_locust, run_open_model
from psra_bench.load.open_model import SATURATION_CORES, check_target_url
from psra_bench.load.params import LoadTestParams
from psra_bench.load.replay import ReplayPlan
from psra_bench.load.results import (
    CONFIGURATIONS,
    MAX_FAILURE_RATE,
    generator_flags,
    overall_table,
    resolve_configurations,
    users_supported,
)
from psra_bench.measure.procmon import ProcessMonitor, postgres_processes, process_tree, redis_processes
from psra_bench.measure.progress import note
from psra_bench.results import Capacity, ConfigurationResult, LoadTestResult, OpenModel, ReplayResult
from psra_bench.settings import LiveSettings, Settings, redact

__all__ = ["CONFIGURATIONS", "run_configuration", "run_load", "run_external_load", "run_log_replay", "log_search_plan"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- configurations


@contextlib.contextmanager
def _cloned_database(settings: LiveSettings, suffix: str, timeout_s: float = 30.0) -> Iterator[str]:
    """A copy of the settings' database (dropped afterwards); retries while the template is in use."""
    from psycopg import errors, sql

    source = settings.db_dsn.rsplit("/", 1)[-1].split("?")[0]
    name = f"{source[:40]}_load_{suffix}"[:63]
    with db.connect(settings.db_dsn, autocommit=True) as conn:
        file_copy = int(conn.execute("SHOW server_version_num").fetchone()[0]) >= 150000  # type: ignore[index]
    admin = db.with_database(settings.db_dsn, "postgres")
    create = sql.SQL("CREATE DATABASE {} TEMPLATE {}" + (" STRATEGY FILE_COPY" if file_copy else "")).format(
        sql.Identifier(name), sql.Identifier(source)
    )
    deadline = time.monotonic() + timeout_s
    with db.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            with db.connect(db.with_database(settings.db_dsn, name), autocommit=True) as leftover:
                if not inspect(leftover).owned:  # a copy of ours carries our marker; anyone else's stays
                    raise NotOwnedError(name, "a database of that name exists and is not a load-test copy of ours")
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        while True:
            try:
                conn.execute(create)
                break
            except errors.ObjectInUse as e:
                if time.monotonic() > deadline:
                    raise MeasurementError(
                        f"database {source!r} stayed in use by other sessions for "
                        f"{timeout_s:g} s, so it could not be copied for the load test"
                    ) from e
                time.sleep(0.5)
    try:
        copy = db.with_database(settings.db_dsn, name)
        with db.connect(copy, autocommit=True) as conn:
            claim(conn, "created")
        yield copy
    finally:
        db.drop_database(admin, name)


def _delete_namespace(settings: Settings, namespace: str) -> int:
    """UNLINK every key of ``namespace`` (SCAN, never KEYS): the cache's, and the job queue's on the jobs server.

    A non-empty namespace is required. The queue's keys start with its hash tag
    (``{<namespace>jobs}:``, constants.JOB_QUEUE_PREFIX), not with the namespace.
    """
    from psra_bench.constants import JOB_QUEUE_PREFIX
    from psra_bench.infra.redis_client import create_redis

    if not namespace:
        raise ParameterError("namespace", namespace, "a non-empty Redis key prefix")
    escape = functools.partial(re.sub, r"([*?\[\]\\])", r"\\\1")
    targets = [(settings.redis, escape(namespace) + "*")]
    if settings.jobs_redis is not None and not settings.jobs_redis_cluster:
        targets.append((settings.jobs_redis, escape(JOB_QUEUE_PREFIX.format(namespace=namespace)) + "*"))
    deleted = 0
    for server, match in targets:
        client = create_redis(server)  # type: ignore[arg-type]
        try:
            batch: list[Any] = []
            for key in client.scan_iter(match=match, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += int(client.unlink(*batch))
                    batch.clear()
            if batch:
                deleted += int(client.unlink(*batch))
        finally:
            client.close()
    return deleted


def _cache_stats(settings: Settings) -> dict[str, Any] | None:
    """Hit/miss counters the API process flushed to its namespace (None when unavailable)."""
    try:
        from psra_bench.cache.service import CacheService

        cache = CacheService(settings)
        try:
            stats = cache.cluster_stats()
        finally:
            cache.close()
        return stats
    except Exception:  # best effort: a cache module error must not lose the load test
        return None


def _phase(resources: dict[str, Any], requests_per_s: float | None) -> dict[str, Any]:
    """A window's resources, generator flags and CPU milliseconds per request of each group."""
    per_request = {
        name: (g["cpu_cores"] * 1000.0 / requests_per_s if requests_per_s else None)
        for name, g in resources.get("groups", {}).items()
    }
    return {"resources": resources, "generator": generator_flags(resources), "cpu_ms_per_request": per_request}


def _serve_and_load(
    cfg: Settings, plan: LoadPlan, out: Path, lap: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any], int | None, ProcessMonitor]:
    """Start the API, run the step load and the open model under the process monitor, stop the API."""
    generator = GeneratorProcess()
    server = start_api_server(cfg, out / "server.log")
    lap("server_start")
    monitor = ProcessMonitor(
        {
            "postgres": postgres_processes(cfg),
            "redis": redis_processes(cfg),
            "api": lambda: process_tree(server.pid),
            "generator": lambda: process_tree(generator.pid),
        },
        pss_groups=("postgres",),
    )
    monitor.start()
    try:
        token = server.admin_token
        closed = run_locust(
            server.base_url, plan, out, stop_p95_ms=plan.slo_p95_ms * 3, generator=generator, admin_token=token
        )
        lap("closed_model")
        opened = run_open_model(server.base_url, plan, out, generator=generator, admin_token=token)
        lap("open_model")
        if plan.open_search:
            opened["capacity"] = _open_capacity(server.base_url, plan, out, generator, token)
            lap("open_search")
    finally:
        monitor.stop()
        exit_code = stop_api_server(server)
        lap("server_stop")
    return closed, opened, exit_code, monitor


#: The open model's SLO besides p95: late or dropped arrivals at most this share of those scheduled.
OPEN_MAX_MISSED = 0.01


def _open_capacity(
    base_url: str, plan: LoadPlan, out: Path, generator: GeneratorProcess, token: str | None
) -> Capacity:
    """The highest arrival rate (req/s) whose p95 from intended start met the SLO with ≤ 1 % late or dropped."""
    grid = tuple(sorted({max(1, round(plan.arrival_rate * f)) for f in (1, 2, 4, 8)}))
    search_plan = SearchPlan(grid, grid[0], plan.slo_p95_ms, plan.duration_s, max(2.0, plan.duration_s / 2))
    search = CapacitySearch(search_plan)
    runs: list[dict[str, Any]] = []
    verdicts: list[bool] = []
    step: Step | None = search.first()
    while step is not None:
        rate_plan = dataclasses.replace(plan, arrival_rate=float(step.users), duration_s=step.measure_s)
        note("load steps", f"open model at {step.users} req/s ({step.kind})", done=len(runs), total=len(grid) + 5)
        r = run_open_model(base_url, rate_plan, out / f"open-{len(runs)}", generator=generator, admin_token=token)
        overall = r["latency"]["overall"]
        missed = (r["late"] + r["dropped"]) / max(1, r["scheduled"])
        ok = step_passed(overall, plan.slo_p95_ms) and missed <= OPEN_MAX_MISSED
        runs.append({"users": step.users, "overall": overall})
        verdicts.append(ok)
        step = search.after(step.users, ok)
    return capacity(runs, search_plan, passed=verdicts)


@contextlib.contextmanager
def _migrated_template(settings: LiveSettings, needed: bool) -> Iterator[LiveSettings | None]:
    """A copy of the dataset with the index migration applied, for the configurations with indexes to clone.

    Building the 26 indexes on a million verdicts takes about 10 s; a file copy of a migrated
    database takes under a second, so they are built once per load test, not once per configuration.
    Dropped at the end; None when no configuration needs it.
    """
    from psra_bench.db.migrate import migrate_up

    if not needed:
        yield None
        return
    with _cloned_database(settings, "indexed") as dsn:
        migrate_up(dsn)
        yield settings.replace(db_dsn=dsn)


@contextlib.contextmanager
def _configured_copy(
    settings: LiveSettings,
    name: str,
    namespace: str,
    *,
    source: LiveSettings | None = None,
    suffix: str | None = None,
    lap: Callable[[str], None] = lambda _: None,
) -> Iterator[tuple[LiveSettings, dict[str, Any]]]:
    """A copy of the dataset (or of ``source``) set up as configuration ``name``: its settings and its migration.

    The copy is migrated up or down and the cache switched as :data:`CONFIGURATIONS` says; the cache
    ``namespace`` is emptied before and after; the copy (named after ``suffix``, default ``name``) is dropped.
    """
    from psra_bench.db.migrate import migrate_down, migrate_up

    indexes, cache = CONFIGURATIONS[name]
    with _cloned_database(source or settings, suffix or name) as dsn:
        lap("clone_database")
        cfg = settings.replace(db_dsn=dsn, enable_cache=cache, cache_namespace=namespace)
        migration = migrate_up(dsn) if indexes else migrate_down(dsn)
        _delete_namespace(cfg, namespace)
        lap("migration")
        try:
            yield cfg, migration
        finally:
            _delete_namespace(cfg, namespace)


def run_configuration(
    settings: LiveSettings,
    name: str,
    plan: LoadPlan,
    output_dir: str | Path,
    namespace: str,
    source: LiveSettings | None = None,
) -> ConfigurationResult:
    """One configuration end to end on a clone of the dataset: migrate, serve, step load, open model.

    ``source``: the database to clone instead of the settings' (a migrated copy, see ``run_load``).
    """
    if name not in CONFIGURATIONS:
        raise ParameterError("configurations", name, "one of " + ", ".join(CONFIGURATIONS))
    indexes, cache = CONFIGURATIONS[name]
    out = Path(output_dir) / name
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(what: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[what] = round(now - clock, 3)
        clock = now

    with _configured_copy(settings, name, namespace, source=source, lap=lap) as (cfg, migration):
        closed, opened, exit_code, monitor = _serve_and_load(cfg, plan, out, lap)
        with db.connect(cfg.db_dsn, autocommit=True) as conn:
            index_count = db.index_count(conn)
        stats = _cache_stats(cfg) if cache else None
    for st in closed["steps"]:
        st |= _phase(monitor.window(st["measure_from"] or 0, st["ended_at"] or 0), st["overall"].get("rps"))
    opened |= _phase(monitor.window(opened["measure_from"], opened["ended_at"]), opened["completed_rps"])
    opened.pop("histograms", None)
    headline = next((s for s in closed["steps"] if s["users"] == plan.users), None)
    return {
        "name": name,
        "indexes": indexes,
        "cache": cache,
        "index_count": index_count,
        "migration": {k: migration.get(k) for k in ("created", "dropped", "already") if k in migration},
        "cache_namespace": namespace,
        "server_exit_code": exit_code,
        "closed": headline,
        "steps": closed["steps"],
        "users_supported": users_supported(closed["steps"], plan.slo_p95_ms),
        "capacity": capacity(closed["steps"], plan.search_plan) if plan.search else None,
        "locust": {
            k: closed[k]
            for k in (
                "exit_code",
                "locust_requests",
                "locust_failures",
                "recorded_requests",
                "accounted",
                "outside_requests",
                "step_s",
                "plan_steps",
                "files",
            )
        },
        "open": cast(OpenModel, opened),  # the open-model process's JSON summary, with this window's resources
        "cache_stats": stats,
        "timings_s": timings,
    }


def _env_accepts(namespace: str) -> bool:
    try:
        Settings.from_env({"PSRA_CACHE_NAMESPACE": namespace})
    except ConfigError:
        return False
    return True


def _namespace_for(settings: Settings) -> str:
    """The cache namespace of the load test's API servers: ``<namespace>load-<id>:`` under the settings' own.

    The API server reads its namespace from PSRA_CACHE_NAMESPACE; when that variable does not
    accept the nested name, the settings' namespace itself is used (and emptied before each
    configuration, as every configuration starts with a cold cache).
    """
    base = settings.cache_namespace
    nested = f"{base}load-{uuid.uuid4().hex[:8]}:"
    if _env_accepts(nested):
        return nested
    if base and _env_accepts(base):
        return base
    raise ParameterError(
        "cache_namespace",
        base,
        "a namespace PSRA_CACHE_NAMESPACE accepts (letters, digits, "
        "'_', '.', '-', one trailing ':'), because the API server reads it from there",
    )


def _fingerprint(settings: LiveSettings, params: dict[str, Any], dataset: Any) -> dict[str, Any] | None:
    """The environment fingerprint of the run (None when a server cannot be described)."""
    import dataclasses

    from psra_bench.infra.redis_client import create_redis
    from psra_bench.measure.fingerprint import environment_fingerprint

    client = create_redis(settings)
    try:
        with db.connect(settings.db_dsn, autocommit=True) as conn:
            is_instance = dataclasses.is_dataclass(dataset) and not isinstance(dataset, type)
            data = dataclasses.asdict(dataset) if is_instance else dataset
            return environment_fingerprint(
                settings=settings, conn=conn, redis_client=client, params=params, dataset=data
            )
    except (psycopg.Error, redis.RedisError, DatabaseConnectionError, OSError) as e:
        # a server gone at the end must not cost the measured run; any other error is a bug and propagates
        log.warning("no environment fingerprint for this load run (%s: %s)", type(e).__name__, redact(str(e)))
        return None
    finally:
        client.close()


def run_load(
    settings: LiveSettings,
    params: LoadTestParams | None = None,
    *,
    dataset: object = None,
    **options: Any,
) -> LoadTestResult:
    """Load-test every configuration (baseline/indexes/cache/both) and save ``04_load_test.json``.

    ``params`` (default :attr:`LoadTestParams.NOTEBOOK`) with the ``options`` that are its fields
    applied (``users=…``, ``configurations=["cache"]``, ``output_dir=…``; checked before any work);
    the other ``options`` go to :meth:`LoadPlan.make` (steps, settle_s, think_s, processes, tenants,
    open_max_in_flight, request_timeout_s). ``seed`` also seeds the request mix; ``quick`` uses two
    steps (users, 2 × users). Steps above ``users`` stop early once one has a p95 over 3 × the SLO.
    The dataset database is only read (each configuration runs on a copy of it); ``dataset`` (a
    workbench.Dataset) is recorded in the fingerprint.
    """
    from psra_bench.workbench import save_results

    fields = {k: v for k, v in options.items() if k in LoadTestParams.model_fields}
    plan_options = {k: v for k, v in options.items() if k not in fields}
    params = (params or LoadTestParams.NOTEBOOK).replace(**fields)
    users, spawn_rate, duration, arrival_rate = params.users, params.spawn_rate, params.duration, params.arrival_rate
    configurations, slo_p95_ms, quick = params.configurations, params.slo_p95_ms, params.quick
    output_dir = params.output_dir
    plan = LoadPlan.make(
        users=users,
        spawn_rate=spawn_rate,
        duration=duration,
        arrival_rate=arrival_rate,
        slo_p95_ms=slo_p95_ms,
        quick=quick,
        seed=params.seed,
        open_search=params.open_search,
        **plan_options,
    )
    names = resolve_configurations(configurations)
    namespace = _namespace_for(settings)
    out = Path(output_dir) / "04_load_test"
    started = time.time()
    results: dict[str, ConfigurationResult] = {}
    with _migrated_template(settings, any(CONFIGURATIONS[n][0] for n in names)) as migrated:
        for i, name in enumerate(names):
            steps = f"a capacity search on {len(plan.steps)} grid steps" if plan.search else f"{len(plan.steps)} steps"
            what = f"{steps} (up to {plan.step_s:g} s each), then {plan.duration_s:g} s open model"
            note("load test", f"configuration {name} ({i + 1} of {len(names)}): {what}", done=i, total=len(names))
            source = migrated if CONFIGURATIONS[name][0] else None
            results[name] = run_configuration(settings, name, plan, out, namespace, source)
    note("load test", "every configuration measured", done=len(names), total=len(names))
    doc: LoadTestResult = {
        "parameters": {
            "users": users,
            "spawn_rate": spawn_rate,
            "duration_s": duration,
            "arrival_rate": arrival_rate,
            "configurations": names,
            "slo_p95_ms": slo_p95_ms,
            "quick": quick,
            "steps": list(plan.steps),
            "step_s": plan.step_s,
            "search": plan.search,
            "short_step_s": plan.search_plan.short_s,
            "settle_s": plan.settle_s,
            "think_s": list(plan.think_s),
            "processes": plan.processes,
            "tenants": plan.tenants,
            "seed": plan.seed,
            "open_max_in_flight": plan.open_max_in_flight,
            "max_failure_rate": MAX_FAILURE_RATE,
            "saturation_cores": SATURATION_CORES,
        },
        "configurations": results,
        "table": overall_table(results),
        "started_at": started,
        "seconds": time.time() - started,
        "fingerprint": _fingerprint(settings, {"users": users, "configurations": names}, dataset),
        "method": (
            "latency: HdrHistogram per request (µs, 3 significant digits), percentiles are the highest value "
            "of the bucket holding them; closed model = Locust step load, headline = the step with `users` "
            "users measured after ramp-up and settle; open model = constant arrival rate, latency from "
            "intended start; CPU = psutil CPU seconds / window (cores), memory = RSS (PSS for PostgreSQL)"
        ),
    }
    save_results(output_dir, "04_load_test", doc)
    return doc


def run_external_load(
    url: str,
    *,
    users: int,
    spawn_rate: float,
    duration: float,
    slo_p95_ms: float,
    output_dir: str | Path,
    quick: bool,
    admin_token: str | None = None,
    **plan_options: Any,
) -> dict[str, Any]:
    """The Locust step load against an API this tool did not start (``psra-bench load --url``).

    Nothing is migrated, seeded or cloned: ``url`` serves whatever it serves (its tenants must be
    the seeded ones for tenant requests to find rows). Per step: p50/p95/p99 with n, failures and
    the load generator's CPU (flagged above 0.9 of a core); then users supported at the SLO. The
    open model is not run: it only sends traffic to this machine. Saved as ``04_load_external.json``
    with the URL's password, if any, redacted.
    """
    from psra_bench.workbench import save_results

    url = check_target_url(url)
    plan = LoadPlan.make(
        users=users,
        spawn_rate=spawn_rate,
        duration=duration,
        arrival_rate=1.0,
        slo_p95_ms=slo_p95_ms,
        quick=quick,
        **plan_options,
    )
    out = Path(output_dir) / "04_load_external"
    generator = GeneratorProcess()
    monitor = ProcessMonitor({"generator": lambda: process_tree(generator.pid)})
    started = time.time()
    monitor.start()
    try:
        closed = run_locust(
            url, plan, out, stop_p95_ms=slo_p95_ms * 3, generator=generator, admin_token=admin_token, remote=True
        )
    finally:
        monitor.stop()
    for st in closed["steps"]:
        st |= _phase(monitor.window(st["measure_from"] or 0, st["ended_at"] or 0), st["overall"].get("rps"))
    doc = {
        "url": redact(url),
        "parameters": {
            "users": users,
            "spawn_rate": spawn_rate,
            "duration_s": duration,
            "slo_p95_ms": slo_p95_ms,
            "quick": quick,
            "steps": list(plan.steps),
            "step_s": plan.step_s,
            "think_s": list(plan.think_s),
            "processes": plan.processes,
            "tenants": plan.tenants,
            "seed": plan.seed,
            "saturation_cores": SATURATION_CORES,
        },
        "steps": closed["steps"],
        "users_supported": users_supported(closed["steps"], slo_p95_ms),
        "capacity": capacity(closed["steps"], plan.search_plan) if plan.search else None,
        "locust": {k: closed[k] for k in ("exit_code", "locust_requests", "locust_failures", "recorded_requests")},
        "started_at": started,
        "seconds": time.time() - started,
    }
    save_results(output_dir, "04_load_external", doc)
    return doc


def log_search_plan(params: LoadTestParams) -> LoadPlan:
    """The capacity search at a log's mix, set by notebook 04's users (headline), spawn rate, duration and SLO."""
    return LoadPlan.make(
        users=params.users, spawn_rate=params.spawn_rate, duration=params.duration, arrival_rate=params.arrival_rate,
        slo_p95_ms=params.slo_p95_ms, seed=params.seed, search=True,
    )  # fmt: skip


def run_log_replay(
    settings: LiveSettings,
    plan: ReplayPlan,
    output_dir: str | Path,
    *,
    load: LoadTestParams | None = None,
    configuration: str = "both",
) -> ReplayResult:
    """Replay a recorded log against one configuration on a copy of the dataset, then search its capacity there.

    The copy is migrated (or not) and the cache switched as ``configuration`` says, like a load
    test's configuration, so the dataset itself is only read. With ``load`` (notebook 04's
    parameters) the replay is followed by a capacity search at the log's own mix on the same API:
    its users, spawn rate, seconds per step and SLO. Saved as ``04_load_replay.json``.
    """
    from psra_bench.load.replay import run_replay

    if configuration not in CONFIGURATIONS:
        raise ParameterError("configuration", configuration, "one of " + ", ".join(CONFIGURATIONS))
    search = log_search_plan(load) if load is not None else None
    with _configured_copy(settings, configuration, _namespace_for(settings), suffix="replay") as (cfg, _):
        return run_replay(plan, output_dir, settings=cfg, capacity=search, configuration=configuration)
