"""Experiment 01's rounds: the frozen run plan, the measurements it fills, and the timed, interleaved rounds.

:class:`RunPlan` is everything a run is configured with, complete and frozen before the first
round (its parameters, query names, schedule, the index state it starts from);
:class:`Measurements` is what the rounds collect, filled round by round. :func:`run_rounds`
switches the index state with the real migration and times every query in each round (the
method is described in :mod:`psra_bench.latency.experiment`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg

from psra_bench.db.dal import QUERIES, PostgresDAL
from psra_bench.db.migrate import migrate_down, migrate_subset, migrate_up, migration_indexes
from psra_bench.exceptions import ParameterError
from psra_bench.infra import postgres as db
from psra_bench.latency.audit import audit_indexes, index_catalog, recommended_set
from psra_bench.latency.params import QueryLatencyParams
from psra_bench.latency.patterns import Params, generate_params, load_param_source
from psra_bench.latency.write_cost import (
    flush_stats,
    index_sizes,
    index_snapshot,
    index_stats_delta,
    load_templates,
    server_version_num,
    table_sizes,
    time_insert_batch,
    vacuum_verdicts,
    verdict_rows,
)
from psra_bench.measure.explain import explain_analyze
from psra_bench.measure.progress import note
from psra_bench.measure.stats import ab_schedule, decide
from psra_bench.results import AuditRow
from psra_bench.settings import LiveSettings

__all__ = ["RunPlan", "Measurements", "SIDES", "ACTIONS", "three_way_schedule", "switch", "run_rounds", "audit_now"]

#: The three sides: A = baseline, B = spec (migration applied), C = the recommended set.
SIDES = ("A", "B", "C")
#: The index state of each side, as the migration action that makes it.
ACTIONS = {"A": "down", "B": "up", "C": "subset"}
_LABELS = {"A": "baseline (20 indexes)", "B": "spec (migration applied)", "C": "recommended set"}


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


@dataclass(frozen=True)
class RunPlan:
    """A run's whole configuration, complete before the first round: nothing here changes while it measures."""

    params: QueryLatencyParams
    names: tuple[str, ...]
    #: The migration state the database started in ("applied" or "not applied"), restored at the end.
    initial_state: str
    #: The migration's index names.
    new: frozenset[str]
    index_count_start: int
    #: Rows in psra_verdicts when the run started.
    verdicts: int | None

    @property
    def first(self) -> str:
        """The side the database starts in (and is restored to): B when migrated, else A."""
        return "B" if self.initial_state == "applied" else "A"

    @property
    def schedule(self) -> tuple[str, ...]:
        """The order of the rounds: ABBA (flipped when migrated), or X Y C C Y X with the third side."""
        p = self.params
        if p.recommend:
            return three_way_schedule(p.rounds, self.first)
        schedule = ab_schedule(p.rounds, "abba", seed=p.seed)
        return tuple("B" if s == "A" else "A" for s in schedule) if self.first == "B" else schedule


@dataclass
class Measurements:
    """What the rounds collect, per query and side (mutable: filled round by round)."""

    names: tuple[str, ...]
    #: The side whose index state the database is in now.
    state: str
    samples: dict[str, dict[str, list[float]]]
    scans: dict[str, dict[str, Counter[str]]]
    tuples: dict[str, dict[str, Counter[str]]]
    round_medians: dict[str, list[float]]
    plans: dict[str, dict[str, Any]]
    capped: dict[str, Counter[str]]
    write_ms: dict[str, list[float]]
    switches: list[dict[str, Any]] = field(default_factory=list)
    #: Seconds of the VACUUM after each round's insert batches (every round starts from a clean table).
    vacuum_seconds: list[float] = field(default_factory=list)
    sizes: list[dict[str, Any]] | None = None
    table_sizes: dict[str, int] | None = None
    build_seconds: dict[str, float] | None = None
    catalog: list[dict[str, Any]] | None = None
    #: The audit that chose the recommended set (C), made once the first A and B rounds ran.
    audit: list[AuditRow] | None = None
    audit_n: dict[str, int] | None = None

    @classmethod
    def start(cls, plan: RunPlan) -> Measurements:
        """Empty containers for every query and side of ``plan``; the database is in ``plan.first``'s state."""
        names = plan.names
        return cls(
            names=names,
            state=plan.first,
            samples={q: {s: [] for s in SIDES} for q in names},
            scans={q: {s: Counter() for s in SIDES} for q in names},
            tuples={q: {s: Counter() for s in SIDES} for q in names},
            round_medians={q: [] for q in names},
            plans={q: {} for q in names},
            capped={q: Counter() for q in names},
            write_ms={s: [] for s in SIDES},
        )

    @property
    def recommended(self) -> list[str]:
        """The migration indexes of side C (empty until the audit ran)."""
        return recommended_set(self.audit or [])


def switch(dsn: str, side: str, run: Measurements, round_no: int, keep: Sequence[str] = ()) -> None:
    """Bring the database to ``side``'s index state with the real migration; record the switch."""
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
            "action": ACTIONS[side],
            "seconds": time.perf_counter() - started,
            "index_count": result["index_count"],
        }
    )
    if side == "B" and run.build_seconds is None and len(result.get("created", ())) == len(migration_indexes()):
        run.build_seconds = dict(result["seconds"])
    run.state = side


def _caller(dal: PostgresDAL, name: str, path: str) -> Callable[[Params], object]:
    """One call of query ``name`` along ``path`` (see :data:`psra_bench.latency.patterns.TIMING_PATHS`)."""
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
    plan: RunPlan,
    side: str,
    run: Measurements,
) -> None:
    warmup = plan.params.warmup
    it: Iterator[Params] = iter(params)
    call = _caller(dal, name, plan.params.path)
    for _ in range(warmup):
        call(next(it))
    with dal.pool.connection() as measured:
        flush_stats(measured, version_num)
    before = index_snapshot(observer)
    times = _timed_calls(call, params[warmup:], plan.params.budget_s)
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


def _plan_indexes(run: Measurements, query: str, side: str) -> list[str]:
    return list((run.plans[query].get(side) or {}).get("index_names", ()))


def audit_now(plan: RunPlan, run: Measurements) -> None:
    """Audit every index from the rounds measured so far; the recommended set (side C) is its keep list."""
    p = plan.params
    decisions = {
        q: decide(run.samples[q]["A"], run.samples[q]["B"], p.factor, p.alpha, seed=p.seed).to_dict() for q in run.names
    }
    sides = {"A": "before", "B": "after"}
    run.audit = audit_indexes(
        run.catalog or [],
        new=set(plan.new),
        usage={q: {sides[k]: dict(run.scans[q][k]) for k in sides} for q in run.names},
        plans={q: {sides[k]: _plan_indexes(run, q, k) for k in sides} for q in run.names},
        decisions=decisions,
        build_seconds=run.build_seconds,
    )
    run.audit_n = {q: len(run.samples[q]["A"]) for q in run.names}


def run_rounds(settings: LiveSettings, plan: RunPlan, run: Measurements, progress: Callable[[str], None]) -> None:
    """Every round of ``plan.schedule``: switch the index state, time every query, time the insert batches."""
    p = plan.params
    dsn = settings.db_dsn
    schedule = plan.schedule
    pool = db.create_pool(settings, min_size=1, max_size=1)
    try:
        with db.connect(dsn, autocommit=True) as observer:
            version_num = server_version_num(observer)
            source = load_param_source(observer)
            templates = load_templates(observer) if p.write_batches else []
            dal = PostgresDAL(pool)
            write_rng = np.random.default_rng([p.seed, 9999])
            slots = {"A": 0, "B": 0, "C": 0}
            for round_no, side in enumerate(schedule, 1):
                if side == "C" and run.audit is None:
                    audit_now(plan, run)
                    progress(f"audit after the first baseline and spec rounds: keep {len(run.recommended)} of 26")
                if side != run.state:
                    progress(f"round {round_no}/{len(schedule)}: {_LABELS[side]}: migrate {ACTIONS[side]} ...")
                    switch(dsn, side, run, round_no, run.recommended)
                if side == "B" and run.sizes is None:
                    run.sizes, run.table_sizes = index_sizes(observer), table_sizes(observer)
                    run.catalog = index_catalog(observer)
                slot = slots[side]
                slots[side] += 1
                # The same parameter lists for round k of every side (a paired workload).
                order = np.random.default_rng([p.seed, 7777, slot]).permutation(len(run.names))
                progress(
                    f"round {round_no}/{len(schedule)}: {_LABELS[side]}, {len(run.names)} queries × {p.iterations}"
                )
                note("query latency", f"round {round_no}: {_LABELS[side]}", done=round_no - 1, total=len(schedule))
                for k in order:
                    name = run.names[int(k)]
                    params = generate_params(name, source, p.warmup + p.iterations, p.seed, slot)
                    _measure_query(dal, observer, version_num, name, params, plan, side, run)
                if p.write_batches:
                    with pool.connection() as conn:
                        time_insert_batch(
                            conn, verdict_rows(templates, p.write_batch_rows, write_rng, source.data_end)
                        )  # warmup, untimed
                        for _ in range(p.write_batches):
                            rows = verdict_rows(templates, p.write_batch_rows, write_rng, source.data_end)
                            run.write_ms[side].append(time_insert_batch(conn, rows))
                    # The rolled-back rows sit at the right edge of the time indexes, where the recent-verdict
                    # and dashboard queries read: left there, every later round would read more dead rows.
                    run.vacuum_seconds.append(vacuum_verdicts(observer))
        note("query latency", "all rounds measured", done=len(schedule), total=len(schedule))
    finally:
        pool.close()
