"""Experiment 01: every query of the spec's "Query Performance" table, before vs after the index migration.

Method (what :func:`run_query_latency` does, in order):

1. **Validate** every parameter (:class:`psra_bench.latency.params.QueryLatencyParams`: query
   names, iterations, rounds, ...) before touching anything, then check that the performance
   migration is either fully applied (46 indexes in schema public) or not at all (20); a partial
   state is refused, because it could not be restored.
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

The code follows those steps: :func:`_prepare` makes the frozen
:class:`~psra_bench.latency.rounds.RunPlan`, :func:`_measure_and_restore` runs the rounds
(:mod:`psra_bench.latency.rounds`) and restores the index state, and
:func:`psra_bench.latency.results.build_results` writes the results document.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from psra_bench.db.migrate import migration_indexes, migration_status
from psra_bench.db.ownership import require_owned
from psra_bench.exceptions import MeasurementError, ParameterError
from psra_bench.infra import postgres as db
from psra_bench.latency.audit import require_psra_tables
from psra_bench.latency.params import QueryLatencyParams
from psra_bench.latency.results import EXPERIMENT, build_results
from psra_bench.latency.rounds import Measurements, RunPlan, audit_now, run_rounds, switch, three_way_schedule
from psra_bench.latency.write_cost import vacuum_verdicts
from psra_bench.measure.fingerprint import environment_fingerprint
from psra_bench.results import QueryLatencyResult
from psra_bench.settings import LiveSettings

__all__ = ["EXPERIMENT", "run_query_latency", "three_way_schedule"]

#: The run parameters recorded in the fingerprint (besides the query names).
_FINGERPRINTED = ("iterations", "rounds", "warmup", "seed", "factor", "alpha", "write_batches", "write_batch_rows",
                  "path", "budget_s", "recommend")  # fmt: skip


def _require_clean_state(conn: psycopg.Connection[Any]) -> str:
    status = migration_status(conn)
    if status.state not in ("applied", "not applied"):
        raise MeasurementError(
            f"the performance migration is {status.state!r} in this database (missing {len(status.missing)}, "
            f"invalid {len(status.invalid)}); run `psra-bench migrate up` or `migrate down` first"
        )
    return status.state


def _as_mapping(value: object) -> dict[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    if value is None:
        return {}
    raise ParameterError("dataset", type(value).__name__, "a Dataset, a mapping or None")


def _prepare(settings: LiveSettings, params: QueryLatencyParams) -> RunPlan:
    """The frozen plan of the run: the database's tables, ownership and index state checked before any change."""
    with db.connect(settings.db_dsn, autocommit=True) as conn:
        require_psra_tables(conn)
        require_owned(settings, "measure index sets")  # it builds and drops indexes, inserts and VACUUMs
        initial = _require_clean_state(conn)
        count_before = db.index_count(conn)
        verdicts = conn.execute("SELECT count(*) FROM psra_verdicts").fetchone()
    return RunPlan(
        params=params,
        names=tuple(params.query_names),
        initial_state=initial,
        new=frozenset(s.name for s in migration_indexes()),
        index_count_start=count_before,
        verdicts=int(verdicts[0]) if verdicts else None,
    )


def _measure_and_restore(
    settings: LiveSettings, plan: RunPlan, say: Callable[[str], None]
) -> tuple[Measurements, float | None]:
    """Run every round, then restore the index state the database started in (also after an error or Ctrl-C)."""
    run = Measurements.start(plan)
    vacuum_seconds = None
    try:
        run_rounds(settings, plan, run, say)
    finally:
        with db.connect(settings.db_dsn, autocommit=True) as conn:
            if run.state != plan.first or migration_status(conn).state != plan.initial_state:
                say(f"restoring the migration state ({plan.initial_state}) ...")
                switch(settings.db_dsn, plan.first, run, 0)
            if plan.params.write_batches:
                vacuum_seconds = vacuum_verdicts(conn)
    if run.audit is None:  # two sides only: the audit uses every round
        audit_now(plan, run)
    for row in run.audit or []:  # a run that starts migrated builds all 26 only at its end
        row["build_seconds"] = (run.build_seconds or {}).get(row["index"])
    return run, vacuum_seconds


def run_query_latency(
    settings: LiveSettings,
    params: QueryLatencyParams | None = None,
    *,
    dataset: object = None,
    progress: Callable[[str], None] | None = None,
    **changes: object,
) -> QueryLatencyResult:
    """Measure every query before vs after the migration in interleaved rounds; return JSON-ready results.

    ``params`` (default :attr:`QueryLatencyParams.NOTEBOOK`) with ``changes`` applied, e.g.
    ``run_query_latency(settings, iterations=3, rounds=1)``, are checked before anything connects.
    ``iterations`` timed calls per query per round, ``rounds`` rounds per side (so n = iterations
    × rounds per side); ``recommend`` adds the third side, the recommended set chosen by the index
    audit (:mod:`psra_bench.latency.audit`) after the first baseline and spec rounds;
    ``write_batches`` insert batches of ``write_batch_rows`` rows per round (0 skips the write
    cost); ``path`` is what one timed call covers; ``budget_s`` caps the seconds of one query's
    timed calls per round (None: no cap). ``dataset`` (e.g. a :class:`psra_bench.workbench.Dataset`)
    is only recorded. The database's migration state is restored at the end, whatever happens.
    """
    params = (params or QueryLatencyParams.NOTEBOOK).replace(**changes)
    if not isinstance(settings, LiveSettings):
        raise ParameterError(
            "settings", type(settings).__name__, "LiveSettings with concrete endpoints (ensure_services)"
        )
    dataset_info = _as_mapping(dataset)
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    plan = _prepare(settings, params)
    run, vacuum_seconds = _measure_and_restore(settings, plan, say)
    with db.connect(settings.db_dsn, autocommit=True) as conn:
        final = migration_status(conn).state
        count_after = db.index_count(conn)
        fingerprint = environment_fingerprint(
            settings=settings,
            conn=conn,
            params={"queries": list(plan.names)} | {k: getattr(params, k) for k in _FINGERPRINTED},
            dataset={"scale": plan.verdicts, "database": conn.info.dbname} | dataset_info,
        )
    return build_results(
        plan,
        run,
        final_state=final,
        index_count_end=count_after,
        vacuum_seconds=vacuum_seconds,
        fingerprint=fingerprint,
        elapsed_seconds=time.perf_counter() - started,
    )
