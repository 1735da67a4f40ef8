"""Experiment 01: every query of the spec's "Query Performance" table, before vs after the index migration.

Method (what :func:`run_query_latency` does, in order):

1. **Validate** every parameter (query names, iterations, rounds, ...) before touching anything,
   then check that the performance migration is either fully applied (46 indexes in schema
   public) or not at all (20); a partial state is refused, because it could not be restored.
2. **Parameters** for each query come from the seeded data (:mod:`psra_bench.latency.patterns`,
   which also maps the spec's rows to DAL queries): every call of a round uses a different
   parameter set, and round ``k`` of "before" and round ``k`` of "after" use the same parameter
   lists (a paired workload).
3. **Interleaved rounds, real index states.** "Before" (A) is the baseline schema, "after" (B)
   is the migration applied; the switch is the real :func:`psra_bench.db.migrate.migrate_up` /
   :func:`~psra_bench.db.migrate.migrate_down` (CREATE/DROP INDEX CONCURRENTLY), not a planner
   toggle, so plans, caches and sizes are what production would see. Rounds follow
   :func:`psra_bench.measure.stats.ab_schedule`'s ABBA order (A B B A A B ...), flipped to B A A B when
   the database starts migrated: consecutive rounds of one side share one index state, so
   ``2 * rounds`` rounds cost about ``rounds`` switches. A switch is the expensive part (at 1M
   verdicts, building the 13 verdict indexes takes tens of seconds to minutes); it is recorded.
   Keep ``rounds`` small (default 2: one build, one drop, plus a restore when needed).
4. **Timing.** In each round every query (in a per-round shuffled order) gets ``warmup``
   untimed calls and ``iterations`` timed calls, one at a time (``perf_counter_ns``), on the
   DAL's one-connection pool (psycopg's default server-side prepare after 5 executions, as in
   the app). ``path="query"`` (default) times pool checkout + execute + fetch of the DAL's SQL —
   the part an index can change; ``path="dal"`` times :meth:`PostgresDAL.fetch_all`, which adds
   dict rows and JSON conversion (the same on both sides, several ms for the 100-row queries,
   so it dilutes the ratio). ``budget_s`` caps one query's timed calls in one round (at least 2
   calls run): at 1M verdicts a "before" scan can take seconds, and the cap keeps a run
   bounded; n per side is then smaller for slow queries (recorded, with the capped rounds).
   Per query, before/after samples are summarized (p50/p95/p99, bootstrap CIs) and compared
   with :func:`psra_bench.measure.stats.decide` (factor AND Mann-Whitney; 8 queries are 8 tests, so
   expect one false "significant" in ~2.5 runs at alpha 0.05 when nothing changed — the factor
   gate guards against trivial ones).
5. **Index usage.** Around each query's timed calls the measuring backend's statistics are
   flushed (``pg_stat_force_next_flush()`` on PostgreSQL >= 15; a wait on older servers) and
   ``pg_stat_user_indexes`` is read in a fresh transaction on a second connection; the
   ``idx_scan`` deltas say which index each query really used in each state. One EXPLAIN
   (ANALYZE, BUFFERS) per query per state, with the same parameters on both sides, shows the plan
   (a custom plan: the timed calls may run a generic prepared plan; the scan deltas cover both).
6. **Write cost**, in the same rounds: insert batches into ``psra_verdicts`` with 20 vs 46
   indexes (:mod:`psra_bench.latency.write_cost`), rolled back, then a VACUUM after each round
   (the dead rows sit where the recent-verdict and dashboard queries read: left there, they
   would make every later round slower) and one at the end.
7. **Restore** the migration state the database started in (also after an error or Ctrl-C).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from psra_bench.db.dal import QUERIES, PostgresDAL
from psra_bench.db.migrate import migrate_down, migrate_subset, migrate_up, migration_indexes, migration_status
from psra_bench.db.ownership import require_owned
from psra_bench.exceptions import MeasurementError, ParameterError
from psra_bench.infra import postgres as db
from psra_bench.latency.audit import audit_indexes, index_catalog, recommended_set, require_psra_tables
from psra_bench.latency.patterns import (
    QUERY_PATTERNS,
    TIMING_PATHS,
    Params,
    QueryPattern,
    check_run_params,
    generate_params,
    load_param_source,
    resolve_queries,
)
from psra_bench.latency.tables import latency_table
from psra_bench.latency.write_cost import (
    flush_stats,
    index_sizes,
    index_snapshot,
    index_stats_delta,
    load_templates,
    server_version_num,
    summarize_write_cost,
    table_sizes,
    throughput,
    time_insert_batch,
    vacuum_verdicts,
    verdict_rows,
)
from psra_bench.measure.explain import explain_analyze
from psra_bench.measure.fingerprint import environment_fingerprint
from psra_bench.measure.stats import SLOWER, ab_schedule, decide, summarize
from psra_bench.results import QueryLatencyResult
from psra_bench.settings import LiveSettings

__all__ = ["EXPERIMENT", "run_query_latency"]

#: Name of the results file (``<output_dir>/01_query_latency.json``) and of the plots' prefix.
EXPERIMENT = "01_query_latency"


# ----------------------------------------------------------------------------- the experiment


@dataclass
class _Run:
    """Mutable state of one run: samples, scans, plans, switches."""

    names: list[str]
    samples: dict[str, dict[str, list[float]]]
    scans: dict[str, dict[str, Counter[str]]]
    tuples: dict[str, dict[str, Counter[str]]]
    round_medians: dict[str, list[float]]
    plans: dict[str, dict[str, Any]]
    write_ms: dict[str, list[float]]
    switches: list[dict[str, Any]]
    path: str = "query"
    budget_s: float | None = None
    capped: dict[str, Counter[str]] = dataclasses.field(default_factory=dict)
    sizes: list[dict[str, Any]] | None = None
    table_sizes: dict[str, int] | None = None
    build_seconds: dict[str, float] | None = None
    catalog: list[dict[str, Any]] | None = None
    #: The audit that chose the recommended set (C), made once the first A and B rounds ran.
    audit: list[dict[str, Any]] | None = None
    audit_n: dict[str, int] | None = None
    #: The side whose index state the database is in now.
    state: str = "A"
    #: Seconds of the VACUUM after each round's insert batches (every round starts from a clean table).
    vacuum_seconds: list[float] = dataclasses.field(default_factory=list)
    factor: float = 1.1
    alpha: float = 0.05
    seed: int = 0

    @property
    def recommended(self) -> list[str]:
        """The migration indexes of side C (empty until the audit ran)."""
        return recommended_set(self.audit or [])

    @classmethod
    def empty(cls, names: list[str], path: str) -> _Run:
        """Empty containers for ``names``."""
        sides = ("A", "B", "C")
        return cls(
            names,
            {q: {s: [] for s in sides} for q in names},
            {q: {s: Counter() for s in sides} for q in names},
            {q: {s: Counter() for s in sides} for q in names},
            {q: [] for q in names},
            {q: {} for q in names},
            {s: [] for s in sides},
            [],
            path,
        )


#: The index state of each side: A = baseline, B = spec (migration applied), C = recommended set.
_ACTIONS = {"A": "down", "B": "up", "C": "subset"}


def _switch(dsn: str, side: str, run: _Run, round_no: int, keep: Sequence[str] = ()) -> None:
    started = time.perf_counter()
    if side == "B":
        result = migrate_up(dsn)
    elif side == "C":
        result = migrate_subset(dsn, keep)
    else:
        result = migrate_down(dsn)
    run.switches.append(
        {
            "round": round_no,
            "action": _ACTIONS[side],
            "seconds": time.perf_counter() - started,
            "index_count": result["index_count"],
        }
    )
    if side == "B" and run.build_seconds is None and len(result.get("created", ())) == len(migration_indexes()):
        run.build_seconds = dict(result["seconds"])


def three_way_schedule(rounds: int, first: str = "A") -> tuple[str, ...]:
    """``rounds`` rounds of each side, X Y C C Y X X Y C ...: every side has the same mean position.

    X is the side the database is in (``first``), Y the other of A/B; the first X and Y rounds
    come before any C round, because the recommended set C is chosen from them.
    """
    if first not in ("A", "B"):
        raise ParameterError("first", first, 'use "A" or "B"')
    other = "B" if first == "A" else "A"
    block = (first, other, "C")
    out: list[str] = []
    for i in range(rounds):
        out.extend(block if i % 2 == 0 else reversed(block))
    return tuple(out)


def _caller(dal: PostgresDAL, name: str, path: str) -> Callable[[Params], object]:
    """One call of query ``name`` along ``path`` (see :data:`TIMING_PATHS`)."""
    if path == "dal":
        return lambda p: dal.fetch_all(name, p)
    sql = QUERIES[name]

    def call(p: Params) -> object:
        with dal.pool.connection() as conn:
            return conn.execute(sql, p).fetchall()

    return call


def _timed_calls(call: Callable[[Params], object], params: Sequence[Params], budget_s: float | None) -> list[float]:
    """Latency (ms) of ``call(p)`` for each ``p`` in turn, stopping once ``budget_s`` is spent (>= 2 calls)."""
    out: list[float] = []
    deadline = None if budget_s is None else time.perf_counter_ns() + int(budget_s * 1e9)
    for p in params:
        start = time.perf_counter_ns()
        call(p)
        end = time.perf_counter_ns()
        out.append((end - start) / 1e6)
        if deadline is not None and end >= deadline and len(out) >= 2:
            break
    return out


def _measure_query(
    dal: PostgresDAL,
    observer: psycopg.Connection[Any],
    version_num: int,
    name: str,
    params: list[Params],
    warmup: int,
    side: str,
    run: _Run,
) -> None:
    it: Iterator[Params] = iter(params)
    call = _caller(dal, name, run.path)
    for _ in range(warmup):
        call(next(it))
    with dal.pool.connection() as measured:
        flush_stats(measured, version_num)
    before = index_snapshot(observer)
    times = _timed_calls(call, params[warmup:], run.budget_s)
    with dal.pool.connection() as measured:
        flush_stats(measured, version_num)
        for index, (scans, tuples) in index_stats_delta(index_snapshot(observer), before).items():
            run.scans[name][side][index] += scans
            run.tuples[name][side][index] += tuples
        if side not in run.plans[name]:  # one plan per state, same parameters on both sides
            run.plans[name][side] = explain_analyze(measured, QUERIES[name], params[warmup]).to_dict()
    run.samples[name][side].extend(times)
    run.round_medians[name].append(float(np.median(times)))
    run.capped[name][side] += len(times) < len(params) - warmup


def _plan_indexes(run: _Run, query: str, side: str) -> list[str]:
    return list((run.plans[query].get(side) or {}).get("index_names", ()))


def _audit_now(run: _Run) -> None:
    """Audit every index from the rounds measured so far; the recommended set (side C) is its keep list."""
    decisions = {
        q: decide(run.samples[q]["A"], run.samples[q]["B"], run.factor, run.alpha, seed=run.seed).to_dict()
        for q in run.names
    }
    sides = {"A": "before", "B": "after"}
    run.audit = audit_indexes(
        run.catalog or [],
        new={s.name for s in migration_indexes()},
        usage={q: {sides[k]: dict(run.scans[q][k]) for k in sides} for q in run.names},
        plans={q: {sides[k]: _plan_indexes(run, q, k) for k in sides} for q in run.names},
        decisions=decisions,
        build_seconds=run.build_seconds,
    )
    run.audit_n = {q: len(run.samples[q]["A"]) for q in run.names}


def _run_rounds(
    settings: LiveSettings,
    run: _Run,
    schedule: Sequence[str],
    *,
    iterations: int,
    warmup: int,
    seed: int,
    write_batches: int,
    write_batch_rows: int,
    progress: Callable[[str], None],
) -> None:
    dsn = settings.db_dsn
    pool = db.create_pool(settings, min_size=1, max_size=1)
    labels = {"A": "baseline (20 indexes)", "B": "spec (migration applied)", "C": "recommended set"}
    try:
        with db.connect(dsn, autocommit=True) as observer:
            version_num = server_version_num(observer)
            source = load_param_source(observer)
            templates = load_templates(observer) if write_batches else []
            dal = PostgresDAL(pool)
            write_rng = np.random.default_rng([seed, 9999])
            slots = {"A": 0, "B": 0, "C": 0}
            for round_no, side in enumerate(schedule, 1):
                if side == "C" and run.audit is None:
                    _audit_now(run)
                    progress(f"audit after the first baseline and spec rounds: keep {len(run.recommended)} of 26")
                if side != run.state:
                    progress(f"round {round_no}/{len(schedule)}: {labels[side]}: migrate {_ACTIONS[side]} ...")
                    _switch(dsn, side, run, round_no, run.recommended)
                    run.state = side
                if side == "B" and run.sizes is None:
                    run.sizes, run.table_sizes = index_sizes(observer), table_sizes(observer)
                    run.catalog = index_catalog(observer)
                slot = slots[side]
                slots[side] += 1
                # The same parameter lists for round k of every side (a paired workload).
                order = np.random.default_rng([seed, 7777, slot]).permutation(len(run.names))
                progress(f"round {round_no}/{len(schedule)}: {labels[side]}, {len(run.names)} queries × {iterations}")
                for k in order:
                    name = run.names[int(k)]
                    params = generate_params(name, source, warmup + iterations, seed, slot)
                    _measure_query(dal, observer, version_num, name, params, warmup, side, run)
                if write_batches:
                    with pool.connection() as conn:
                        time_insert_batch(
                            conn, verdict_rows(templates, write_batch_rows, write_rng, source.data_end)
                        )  # warmup, untimed
                        for _ in range(write_batches):
                            rows = verdict_rows(templates, write_batch_rows, write_rng, source.data_end)
                            run.write_ms[side].append(time_insert_batch(conn, rows))
                    # The rolled-back rows sit at the right edge of the time indexes, where the recent-verdict
                    # and dashboard queries read: left there, every later round would read more dead rows.
                    run.vacuum_seconds.append(vacuum_verdicts(observer))
    finally:
        pool.close()


def _require_clean_state(conn: psycopg.Connection[Any]) -> str:
    status = migration_status(conn)
    if status.state not in ("applied", "not applied"):
        raise MeasurementError(
            f"the performance migration is {status.state!r} in this database (missing {len(status.missing)}, "
            f"invalid {len(status.invalid)}); run `psra-bench migrate up` or `migrate down` first"
        )
    return status.state


def _query_result(
    pattern: QueryPattern, run: _Run, schedule: str, seed: int, factor: float, alpha: float
) -> dict[str, Any]:
    a, b = run.samples[pattern.name]["A"], run.samples[pattern.name]["B"]
    before, after = summarize(a, seed=seed), summarize(b, seed=seed)
    decision = decide(a, b, factor, alpha, seed=seed)
    plans = {"before": run.plans[pattern.name].get("A"), "after": run.plans[pattern.name].get("B")}
    shapes = [(p["node_types"], p["index_names"]) if p else None for p in plans.values()]
    return {
        "name": pattern.name,
        "label": pattern.label,
        "spec_row": pattern.spec_row,
        "dal_query": pattern.name,
        "dal_method": pattern.dal_method,
        "sql": " ".join(pattern.sql.split()),
        "spec": dataclasses.asdict(pattern.spec),
        "before": before.to_dict(),
        "after": after.to_dict(),
        "decision": decision.to_dict(),
        "improvement_pct": decision.improvement_pct,
        "p95_improvement_pct": (before.p95 - after.p95) / before.p95 * 100 if before.p95 else None,
        "speedup": decision.speedup,
        "verdict": decision.verdict,
        "round_medians": {"schedule": schedule, "p50_ms": run.round_medians[pattern.name]},
        "capped_rounds": {"before": run.capped[pattern.name]["A"], "after": run.capped[pattern.name]["B"]},
        "plans": plans,
        # A verdict without a plan change comes from the system around the query (cache, load), not its plan.
        "plan_changed": shapes[0] != shapes[1],
        "index_scans": {"before": dict(run.scans[pattern.name]["A"]), "after": dict(run.scans[pattern.name]["B"])},
        "index_tuples_read": {
            "before": dict(run.tuples[pattern.name]["A"]),
            "after": dict(run.tuples[pattern.name]["B"]),
        },
    }


def _index_usage(run: _Run, new: set[str]) -> list[dict[str, Any]]:
    sizes = {s["index"]: s for s in run.sizes or []}
    out = []
    for name, info in sizes.items():
        row: dict[str, Any] = {
            "index": name,
            "table": info["table"],
            "size_bytes": info["size_bytes"],
            "new": name in new,
        }
        for key, side in (("before", "A"), ("after", "B"), ("recommended", "C")):
            row[f"scans_{key}"] = sum(run.scans[q][side][name] for q in run.names)
            row[f"tuples_read_{key}"] = sum(run.tuples[q][side][name] for q in run.names)
            row[f"used_by_{key}"] = [q for q in run.names if run.scans[q][side][name]]
        out.append(row)
    return out


def _sizes_summary(run: _Run, new: set[str]) -> dict[str, Any]:
    sizes = run.sizes or []
    by_table: dict[str, dict[str, int]] = {}
    for s in sizes:
        t = by_table.setdefault(s["table"], {"indexes": 0, "new_indexes": 0, "index_bytes": 0, "new_index_bytes": 0})
        t["indexes"] += 1
        t["index_bytes"] += s["size_bytes"]
        if s["index"] in new:
            t["new_indexes"] += 1
            t["new_index_bytes"] += s["size_bytes"]
        t["table_bytes"] = (run.table_sizes or {}).get(s["table"], 0)
    return {
        "index_count_after": len(sizes),
        "index_count_before": len([s for s in sizes if s["index"] not in new]),
        "baseline_index_bytes": sum(s["size_bytes"] for s in sizes if s["index"] not in new),
        "new_index_bytes": sum(s["size_bytes"] for s in sizes if s["index"] in new),
        "by_table": by_table,
        "build_seconds": run.build_seconds,
    }


def _three_way(run: _Run, new: set[str], rows_per_batch: int) -> dict[str, Any] | None:
    """Baseline / spec / recommended per query, for writes and for size; the recommended-vs-spec verdicts."""
    if not any(run.samples[q]["C"] for q in run.names):
        return None
    seed, factor, alpha = run.seed, run.factor, run.alpha
    keep = set(run.recommended)
    queries = {}
    for q in run.names:
        a, b, c = (run.samples[q][k] for k in "ABC")
        vs_spec = decide(b, c, factor, alpha, seed=seed)
        queries[q] = {
            "baseline": summarize(a, seed=seed).to_dict(),
            "spec": summarize(b, seed=seed).to_dict(),
            "recommended": summarize(c, seed=seed).to_dict(),
            "recommended_vs_spec": vs_spec.to_dict(),
            "recommended_vs_baseline": decide(a, c, factor, alpha, seed=seed).to_dict(),
            # As fast: not significantly and materially slower than the spec set (the factor gate).
            "as_fast_as_spec": vs_spec.verdict != SLOWER,
            "plan_recommended": (run.plans[q].get("C") or {}).get("index_names"),
        }
    sizes = run.sizes or []
    write = None
    if all(run.write_ms[k] for k in "ABC"):
        per_side = {}
        for key, side in (("baseline", "A"), ("spec", "B"), ("recommended", "C")):
            stats = summarize(run.write_ms[side], seed=seed).to_dict()
            per_side[key] = {"batch_ms": stats, **throughput(rows_per_batch, run.write_ms[side], stats)}
        write_vs_spec = decide(run.write_ms["B"], run.write_ms["C"], factor, alpha, seed=seed).to_dict()
        write = per_side | {
            "rows_per_batch": rows_per_batch,
            "batches": {k: len(run.write_ms[s]) for k, s in (("baseline", "A"), ("spec", "B"), ("recommended", "C"))},
            # batch time recommended / spec: below 1 means the recommended set inserts faster
            "recommended_vs_spec": write_vs_spec,
        }
    baseline_bytes = sum(x["size_bytes"] for x in sizes if x["index"] not in new)
    return {
        "indexes": sorted(keep),
        "decided_from": {
            "rounds": "the first baseline and the first spec round",
            "n_per_side": run.audit_n,
        },
        "queries": queries,
        "all_as_fast": all(v["as_fast_as_spec"] for v in queries.values()),
        "write": write,
        "sizes": {
            "index_count": {
                "baseline": len([x for x in sizes if x["index"] not in new]),
                "spec": len(sizes),
                "recommended": len([x for x in sizes if x["index"] not in new or x["index"] in keep]),
            },
            "index_bytes": {
                "baseline": baseline_bytes,
                "spec": sum(x["size_bytes"] for x in sizes),
                "recommended": baseline_bytes + sum(x["size_bytes"] for x in sizes if x["index"] in keep),
            },
        },
    }


def _as_mapping(value: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    if value is None:
        return {}
    raise ParameterError("dataset", type(value).__name__, "a Dataset, a mapping or None")


def run_query_latency(
    settings: LiveSettings,
    *,
    queries: str | Sequence[str] | None = None,
    iterations: int = 30,
    rounds: int = 2,
    warmup: int = 3,
    seed: int = 0,
    factor: float = 1.1,
    alpha: float = 0.05,
    write_batches: int = 10,
    write_batch_rows: int = 200,
    path: str = "query",
    budget_s: float | None = None,
    recommend: bool = True,
    dataset: Any = None,
    progress: Callable[[str], None] | None = None,
) -> QueryLatencyResult:
    """Measure every query before vs after the migration in interleaved rounds; return JSON-ready results.

    ``iterations`` timed calls per query per round, ``rounds`` rounds per side (so n = iterations
    × rounds per side); ``recommend`` adds the third side, the recommended set chosen by the index
    audit (:mod:`psra_bench.latency.audit`) after the first baseline and spec rounds;
    ``write_batches`` insert batches of ``write_batch_rows`` rows per round
    (0 skips the write cost); ``path`` is what one timed call covers (:data:`TIMING_PATHS`);
    ``budget_s`` caps the seconds of one query's timed calls per round (None: no cap).
    ``dataset`` (e.g. a :class:`psra_bench.workbench.Dataset`) is only recorded. The database's
    migration state is restored at the end, whatever happens.
    """
    names = resolve_queries(queries)
    check_run_params(
        iterations=iterations,
        rounds=rounds,
        warmup=warmup,
        seed=seed,
        factor=factor,
        alpha=alpha,
        write_batches=write_batches,
        write_batch_rows=write_batch_rows,
        path=path,
        budget_s=budget_s,
    )
    if not isinstance(recommend, bool):
        raise ParameterError("recommend", recommend, "True (measure the recommended set as a third side) or False")
    if not isinstance(settings, LiveSettings):
        raise ParameterError(
            "settings", type(settings).__name__, "LiveSettings with concrete endpoints (ensure_services)"
        )
    dataset_info = _as_mapping(dataset)
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    new = {s.name for s in migration_indexes()}
    with db.connect(settings.db_dsn, autocommit=True) as conn:
        require_psra_tables(conn)
        require_owned(settings, "measure index sets")  # it builds and drops indexes, inserts and VACUUMs
        initial = _require_clean_state(conn)
        count_before = db.index_count(conn)
        verdicts = conn.execute("SELECT count(*) FROM psra_verdicts").fetchone()
    # Start with the side the database is already in: ABBA (or XYCCYX with the third side), flipped when migrated.
    first = "B" if initial == "applied" else "A"
    if recommend:
        schedule = three_way_schedule(rounds, first)
    else:
        schedule = ab_schedule(rounds, "abba", seed=seed)
        if first == "B":
            schedule = tuple("B" if s == "A" else "A" for s in schedule)
    run = _Run.empty(names, path)
    run.budget_s = None if budget_s is None else float(budget_s)
    run.capped = {q: Counter() for q in names}
    run.state, run.factor, run.alpha, run.seed = first, factor, alpha, seed
    vacuum_seconds = None
    try:
        _run_rounds(
            settings,
            run,
            schedule,
            iterations=iterations,
            warmup=warmup,
            seed=seed,
            write_batches=write_batches,
            write_batch_rows=write_batch_rows,
            progress=say,
        )
    finally:
        with db.connect(settings.db_dsn, autocommit=True) as conn:
            if run.state != first or migration_status(conn).state != initial:
                say(f"restoring the migration state ({initial}) ...")
                _switch(settings.db_dsn, first, run, 0)
                run.state = first
            if write_batches:
                vacuum_seconds = vacuum_verdicts(conn)
    if run.audit is None:  # two sides only: the audit uses every round
        _audit_now(run)
    for row in run.audit or []:  # a run that starts migrated builds all 26 only at its end
        row["build_seconds"] = (run.build_seconds or {}).get(row["index"])
    with db.connect(settings.db_dsn, autocommit=True) as conn:
        final = migration_status(conn).state
        count_after = db.index_count(conn)
        fingerprint = environment_fingerprint(
            settings=settings,
            conn=conn,
            params={
                "queries": names,
                "iterations": iterations,
                "rounds": rounds,
                "warmup": warmup,
                "seed": seed,
                "factor": factor,
                "alpha": alpha,
                "write_batches": write_batches,
                "write_batch_rows": write_batch_rows,
                "path": path,
                "budget_s": budget_s,
                "recommend": recommend,
            },
            dataset={"scale": int(verdicts[0]) if verdicts else None, "database": conn.info.dbname} | dataset_info,
        )
    sched = "".join(schedule)
    baseline_count = count_before - len(new) if initial == "applied" else count_before
    results: QueryLatencyResult = {
        "experiment": EXPERIMENT,
        "method": {
            "sides": {
                "before": "A: baseline schema (20 indexes)",
                "after": "B: migration applied (46 indexes)",
                **({"recommended": "C: baseline + the audit's keep indexes"} if recommend else {}),
            },
            "schedule": sched,
            "iterations_per_round": iterations,
            "rounds_per_side": rounds,
            "max_n_per_side": iterations * rounds,  # fewer for a query whose rounds hit budget_s
            "warmup_per_round": warmup,
            "factor": factor,
            "alpha": alpha,
            "path": path,
            "budget_s": budget_s,
            "timing": TIMING_PATHS[path] + "; one call at a time, perf_counter_ns; params vary per call, "
            "paired across sides",
            "statistics": "p50/p95/p99 numpy 'linear'; 95 % percentile-bootstrap CIs; verdict = ratio of "
            "medians ≥ factor AND two-sided Mann-Whitney p < alpha",
            "index_usage": "idx_scan deltas of pg_stat_user_indexes around the timed calls "
            "(pg_stat_force_next_flush on PostgreSQL ≥ 15)",
        },
        "queries": {q: _query_result(QUERY_PATTERNS[q], run, sched, seed, factor, alpha) for q in names},
        "index_usage": _index_usage(run, new),
        "catalog": run.catalog or [],
        "audit": run.audit or [],
        "recommended": _three_way(run, new, write_batch_rows),
        "sizes": _sizes_summary(run, new),
        "migration": {
            "initial_state": initial,
            "final_state": final,
            "restored": final == initial,
            "index_count_start": count_before,
            "index_count_end": count_after,
            "switches": run.switches,
        },
        "write_cost": summarize_write_cost(
            run.write_ms["A"],
            run.write_ms["B"],
            write_batch_rows,
            index_counts=(baseline_count, baseline_count + len(new)),
            seed=seed,
            factor=factor,
            alpha=alpha,
        )
        if write_batches
        else None,
        "vacuum_seconds": vacuum_seconds,
        "round_vacuum_seconds": run.vacuum_seconds,
        "fingerprint": fingerprint,
        "elapsed_seconds": time.perf_counter() - started,
        "table": [],
    }
    results["table"] = latency_table(results)
    return results
