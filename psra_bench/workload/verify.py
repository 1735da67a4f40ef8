"""Verification: the current index set against the recommended one, measured on a database psra-bench owns.

Like notebook 01 (:mod:`psra_bench.latency.rounds`), the two sides alternate in ABBA rounds
(:func:`psra_bench.measure.stats.ab_schedule`) so slow drift of a shared machine lands on both:
A is the indexes as found, B is them with the picked candidates built and the dropped ones
removed (plain ``CREATE INDEX`` / ``DROP INDEX``: the database is psra-bench's own). Each round
times every captured SELECT with the same parameter sets on both sides (round k of A and of B
draw the same values), then, when ``psra_verdicts`` is among the changed tables, times insert
batches into it in rolled-back transactions (:mod:`psra_bench.latency.write_cost`) and VACUUMs.
Per query: p50/p95/p99 with bootstrap CIs per side and the median speedup with its CI and
Mann-Whitney p (:func:`psra_bench.measure.stats.decide`). The database ends in state A.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg

from psra_bench.infra import postgres as db
from psra_bench.latency.write_cost import (
    load_templates,
    summarize_write_cost,
    time_insert_batch,
    vacuum_verdicts,
    verdict_rows,
)
from psra_bench.measure.stats import ab_schedule, decide, summarize
from psra_bench.workload.candidates import Candidate
from psra_bench.workload.params import AdviceParams
from psra_bench.workload.screening import Planned
from psra_bench.workload.values import ValueSource

__all__ = ["Dropped", "QueryResult", "Verification", "verify"]


@dataclass(frozen=True)
class Dropped:
    """An existing index the recommended set leaves out: its name, table and CREATE statement (to restore it)."""

    name: str
    table: str
    definition: str


@dataclass
class QueryResult:
    """One query's measurement: per side the latency summary, and B against A."""

    query_id: str
    current: dict[str, Any]
    recommended: dict[str, Any]
    decision: dict[str, Any]
    #: median current / median recommended (above 1: the recommended set is faster).
    speedup: float
    speedup_ci: list[float] | None
    p: float | None
    plans: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Verification:
    """What the rounds measured."""

    schedule: tuple[str, ...]
    queries: dict[str, QueryResult]
    insert: dict[str, Any] | None
    insert_note: str
    index_sizes: dict[str, int]
    build_seconds: dict[str, float]
    switch_seconds: list[float]


def _switch(conn: psycopg.Connection[Any], to: str, adds: Sequence[Candidate], drops: Sequence[Dropped],
            build: dict[str, float]) -> float:  # fmt: skip
    """Bring the indexes to side ``to`` ("A" as found, "B" recommended); seconds taken."""
    started = time.perf_counter()
    if to == "B":
        for c in adds:
            t = time.perf_counter()
            conn.execute(c.definition)
            build.setdefault(c.name, time.perf_counter() - t)
        for d in drops:
            conn.execute(f'DROP INDEX IF EXISTS public."{d.name}"')
    else:
        for c in adds:
            conn.execute(f'DROP INDEX IF EXISTS public."{c.name}"')
        for d in drops:
            conn.execute(d.definition)
    return time.perf_counter() - started


def _timed(conn: psycopg.Connection[Any], query: str, sets: Sequence[Sequence[Any]], warmup: int) -> list[float]:
    out = []
    with psycopg.RawCursor(conn) as cur:
        for i, p in enumerate(sets):
            start = time.perf_counter_ns()
            cur.execute(query, list(p) if p else None)
            cur.fetchall()
            if i >= warmup:
                out.append((time.perf_counter_ns() - start) / 1e6)
    return out


def _plan(conn: psycopg.Connection[Any], q: Planned, params: Sequence[Any]) -> list[str]:
    from psra_bench.workload.screening import explain_cost

    one = Planned(q.query_id, q.query, q.shape, q.calls, (tuple(params),))
    return explain_cost(conn, one)[1]


def verify(
    dsn: str,
    queries: Sequence[Planned],
    adds: Sequence[Candidate],
    drops: Sequence[Dropped],
    p: AdviceParams,
    progress: Callable[[str], None] = lambda _: None,
) -> Verification:
    """Measure ``queries`` (SELECTs) on the current and the recommended index set, interleaved; restore the current."""
    schedule = ab_schedule(p.rounds, "abba", seed=p.seed)
    samples: dict[str, dict[str, list[float]]] = {q.query_id: {"A": [], "B": []} for q in queries}
    plans: dict[str, dict[str, list[str]]] = {q.query_id: {} for q in queries}
    writes: dict[str, list[float]] = {"A": [], "B": []}
    build: dict[str, float] = {}
    switches: list[float] = []
    sizes: dict[str, int] = {}
    changed = {c.table for c in adds} | {d.table for d in drops}
    state = "A"
    with db.connect(dsn, autocommit=True) as ddl, db.connect(dsn, autocommit=True) as conn:
        source = ValueSource(conn, p)
        has_verdicts = "psra_verdicts" in changed and p.write_batches > 0
        templates = load_templates(conn) if has_verdicts else []
        start_row = conn.execute("SELECT max(created_at) FROM psra_verdicts").fetchone() if has_verdicts else None
        rng = np.random.default_rng([p.seed, 4242])
        count = ddl.execute(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'psra_verdicts'"
        )
        verdict_indexes = int((count.fetchone() or (0,))[0])
        slots = {"A": 0, "B": 0}
        try:
            for round_no, side in enumerate(schedule, 1):
                if side != state:
                    switches.append(_switch(ddl, side, adds, drops, build))
                    state = side
                    if side == "B" and not sizes:
                        for c in adds:
                            row = ddl.execute("SELECT pg_relation_size(to_regclass(%s))", (f"public.{c.name}",))
                            sizes[c.name] = int((row.fetchone() or (0,))[0] or 0)
                slot = slots[side]
                slots[side] += 1
                progress(
                    f"verification round {round_no}/{len(schedule)}: {'current' if side == 'A' else 'recommended'}"
                )
                order = np.random.default_rng([p.seed, 77, slot]).permutation(len(queries))
                for k in order:
                    q = queries[int(k)]
                    sets = source.draw(q.query_id, q.shape, p.warmup + p.iterations, slot)
                    samples[q.query_id][side].extend(_timed(conn, q.query, sets, p.warmup))
                    if side not in plans[q.query_id]:
                        plans[q.query_id][side] = _plan(conn, q, sets[0])
                if has_verdicts and start_row and start_row[0] is not None:
                    time_insert_batch(conn, verdict_rows(templates, p.write_batch_rows, rng, start_row[0]))  # warmup
                    for _ in range(p.write_batches):
                        rows = verdict_rows(templates, p.write_batch_rows, rng, start_row[0])
                        writes[side].append(time_insert_batch(conn, rows))
                    vacuum_verdicts(conn)
        finally:
            if state != "A":
                switches.append(_switch(ddl, "A", adds, drops, build))
    results = {}
    for q in queries:
        a, b = samples[q.query_id]["A"], samples[q.query_id]["B"]
        d = decide(a, b, p.factor, p.alpha, seed=p.seed).to_dict()
        ci = d.get("ratio_ci")
        results[q.query_id] = QueryResult(
            query_id=q.query_id,
            current=dict(summarize(a, seed=p.seed).to_dict(include_samples=False)),
            recommended=dict(summarize(b, seed=p.seed).to_dict(include_samples=False)),
            decision=dict(d),
            speedup=float(d["speedup"]),
            speedup_ci=None if not ci else [1.0 / ci[1], 1.0 / ci[0]],
            p=d.get("p_value"),
            plans={"current": plans[q.query_id].get("A", []), "recommended": plans[q.query_id].get("B", [])},
        )
    insert = None
    if writes["A"] and writes["B"]:
        delta = sum(c.table == "psra_verdicts" for c in adds) - sum(d.table == "psra_verdicts" for d in drops)
        insert = dict(
            summarize_write_cost(
                writes["A"],
                writes["B"],
                p.write_batch_rows,
                index_counts=(verdict_indexes, verdict_indexes + delta),
                seed=p.seed,
            )
        )
        note = (
            f"{p.write_batches} batches of {p.write_batch_rows} rows per round into psra_verdicts, rolled back; "
            "ratio = median batch time recommended / current"
        )
    elif "psra_verdicts" not in changed:
        note = "the insert cost is measured on psra_verdicts only, and the recommendation changes no index of it"
    else:
        note = "insert batches were turned off (write_batches 0)"
    return Verification(schedule, results, insert, note, sizes, build, switches)
