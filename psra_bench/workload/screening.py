"""Screening: each candidate's planner cost for each query, weighted by calls; a greedy pick under a size budget.

Two paths, one method. Where HypoPG is installed, a candidate is a hypothetical index
(``hypopg_create_index``): nothing is built and everything runs in one READ ONLY transaction, so
this path may run on any database. Where HypoPG is missing, each candidate is built for real
(plain ``CREATE INDEX``), planned against and dropped — only on a database psra-bench owns; the
caller checks that. Either way a query's cost is the mean plain-EXPLAIN total cost over a few
parameter sets drawn from the column values (:class:`psra_bench.workload.values.ValueSource`).

The greedy step adds the candidate with the largest net gain: the share of the workload's
weighted planner cost (Σ calls × cost) it removes given the indexes picked so far, less its
write penalty — ``write_penalty × (index entry bytes / heap row bytes) × share of the workload's
calls that write its table`` (at least ``min_write_share``), pganalyze's estimate of write
overhead. It stops at ``max_indexes``, at the size budget, or when no net gain reaches ``min_gain``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import psycopg

from psra_bench.latency.catalog import read_only_transaction
from psra_bench.measure.explain import plan_nodes
from psra_bench.workload.candidates import Candidate
from psra_bench.workload.dbinfo import TableInfo
from psra_bench.workload.model import Skipped
from psra_bench.workload.params import AdviceParams
from psra_bench.workload.shapes import Shape

__all__ = ["HYPOPG", "BUILD", "Planned", "Screened", "Screening", "explain_cost", "screen"]

#: The two screening paths.
HYPOPG, BUILD = "hypopg", "build"


@dataclass(frozen=True)
class Planned:
    """A query ready to plan: its shape, its weight (calls) and the parameter sets it is planned with."""

    query_id: str
    query: str
    shape: Shape
    calls: int
    params: tuple[tuple[Any, ...], ...]


@dataclass
class Screened:
    """One candidate's screening: its gains, size, penalty and whether the greedy pick took it."""

    candidate: Candidate
    size_bytes: int | None = None
    #: Share of the workload's weighted cost it removes alone (on the current indexes).
    single_gain: float | None = None
    penalty: float = 0.0
    #: 1-based order of the greedy pick (None: not picked).
    rank: int | None = None
    #: Share it removed at its greedy step (picked candidates only).
    step_gain: float | None = None
    #: Why it could not be planned with (HypoPG refused it, the build failed), else None.
    error: str | None = None


@dataclass
class Screening:
    """What screening found: the path, every candidate, the costs before and with the picked set."""

    path: str
    note: str
    results: list[Screened]
    base_costs: dict[str, float]
    final_costs: dict[str, float]
    #: Query id -> the indexes its current plans use.
    plan_indexes: dict[str, list[str]]
    #: Query id -> the indexes its plans use with the picked set.
    final_plan_indexes: dict[str, list[str]]
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def picked(self) -> list[Screened]:
        """The picked candidates in the greedy order."""
        return sorted((s for s in self.results if s.rank is not None), key=lambda s: s.rank or 0)


def _explain(conn: psycopg.Connection[Any], query: str, params: Sequence[Any]) -> tuple[float, list[str]]:
    """Plain EXPLAIN (FORMAT JSON) of ``query`` with $n parameters: total cost and the indexes used."""
    with psycopg.RawCursor(conn) as cur:
        cur.execute("EXPLAIN (FORMAT JSON) " + query, list(params) if params else None)
        row = cur.fetchone()
    assert row is not None
    doc = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    plan = doc[0]["Plan"]
    names = [str(n["Index Name"]) for n in plan_nodes(plan) if "Index Name" in n]
    return float(plan["Total Cost"]), list(dict.fromkeys(names))


def explain_cost(conn: psycopg.Connection[Any], q: Planned) -> tuple[float, list[str]]:
    """Mean total cost over ``q``'s parameter sets and every index their plans use (a savepoint per query)."""
    costs: list[float] = []
    names: list[str] = []
    with conn.transaction():  # a savepoint when inside the read-only transaction: an error leaves it usable
        for p in q.params or ((),):
            cost, used = _explain(conn, q.query, p)
            costs.append(cost)
            names += used
    return sum(costs) / len(costs), list(dict.fromkeys(names))


class _Hypo:
    """Hypothetical indexes (HypoPG): created in the backend's memory, never on disk."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def add(self, c: Candidate) -> tuple[Any, int]:
        with self.conn.transaction():
            row = self.conn.execute("SELECT indexrelid FROM hypopg_create_index(%s)", (c.definition,)).fetchone()
            assert row is not None
            size = self.conn.execute("SELECT hypopg_relation_size(%s)", (row[0],)).fetchone()
        return row[0], int(size[0]) if size else 0

    def drop(self, handle: Any) -> None:
        self.conn.execute("SELECT hypopg_drop_index(%s)", (handle,))

    def names(self, used: list[str], c: Mapping[Any, Candidate]) -> list[str]:
        """Plan index names with HypoPG's ``<oid>btree_...`` names mapped back to the candidates' names."""
        out = []
        for name in used:
            if name.startswith("<") and ">" in name:
                oid = int(name[1 : name.index(">")])
                out.append(c[oid].name if oid in c else name)
            else:
                out.append(name)
        return out

    def reset(self) -> None:
        self.conn.execute("SELECT hypopg_reset()")


class _Build:
    """Real indexes, built and dropped one at a time (a database psra-bench owns only)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.built: list[str] = []

    def add(self, c: Candidate) -> tuple[Any, int]:
        self.conn.execute(c.definition)
        self.built.append(c.name)
        row = self.conn.execute("SELECT pg_relation_size(to_regclass(%s))", (f"public.{c.name}",)).fetchone()
        return c.name, int(row[0]) if row and row[0] is not None else 0

    def drop(self, handle: Any) -> None:
        self.conn.execute(f'DROP INDEX IF EXISTS public."{handle}"')
        self.built.remove(handle)

    def names(self, used: list[str], c: Mapping[Any, Candidate]) -> list[str]:
        return used

    def reset(self) -> None:
        for name in list(self.built):
            self.drop(name)


def _penalty(c: Candidate, size: int, tables: Mapping[str, TableInfo], write_share: Mapping[str, float],
             p: AdviceParams) -> float:  # fmt: skip
    info = tables.get(c.table)
    if info is None:
        return 0.0
    entry = size / max(info.rows, 1.0)
    return p.write_penalty * (entry / info.row_bytes) * max(p.min_write_share, write_share.get(c.table, 0.0))


def screen(
    conn: psycopg.Connection[Any],
    path: str,
    note: str,
    queries: Sequence[Planned],
    candidates: Sequence[Candidate],
    tables: Mapping[str, TableInfo],
    write_share: Mapping[str, float],
    p: AdviceParams,
    progress: Callable[[str], None] = lambda _: None,
) -> Screening:
    """Screen ``candidates`` for ``queries`` along ``path`` (HYPOPG or BUILD); the caller checked ownership for BUILD.

    ``write_share`` is each table's share of the workload's calls that write it (INSERT, UPDATE, DELETE).
    ``conn`` is an autocommit connection. The database is left as found: hypothetical indexes are
    reset, built ones dropped (also when something fails).
    """
    ctx: AbstractContextManager[Any] = read_only_transaction(conn) if path == HYPOPG else nullcontext()
    with ctx:
        engine: _Hypo | _Build = _Hypo(conn) if path == HYPOPG else _Build(conn)
        try:
            return _greedy(conn, engine, path, note, queries, candidates, tables, write_share, p, progress)
        finally:
            engine.reset()


def _greedy(
    conn: psycopg.Connection[Any],
    engine: _Hypo | _Build,
    path: str,
    note: str,
    queries: Sequence[Planned],
    candidates: Sequence[Candidate],
    tables: Mapping[str, TableInfo],
    write_share: Mapping[str, float],
    p: AdviceParams,
    progress: Callable[[str], None],
) -> Screening:
    skipped: list[Skipped] = []
    base: dict[str, float] = {}
    plan_ix: dict[str, list[str]] = {}
    live: list[Planned] = []
    for q in queries:
        try:
            base[q.query_id], plan_ix[q.query_id] = explain_cost(conn, q)
            live.append(q)
        except psycopg.Error as e:
            reason = (e.diag.message_primary or str(e)).splitlines()[0]
            skipped.append(Skipped(q.query, f"EXPLAIN failed: {reason}", q.query_id))
    weight = {q.query_id: float(q.calls) for q in live}
    total0 = sum(weight[q] * c for q, c in base.items()) or 1.0
    results = [Screened(c) for c in candidates]
    current = dict(base)
    final_ix = dict(plan_ix)
    handles: dict[Any, Candidate] = {}
    used_bytes = 0
    pool = results
    for step in range(1, p.max_indexes + 1):
        progress(f"screening ({path}) step {step}: {len(pool)} candidates")
        best: tuple[float, Screened, dict[str, float], dict[str, list[str]]] | None = None
        for s in pool:
            if s.rank is not None or s.error is not None:
                continue
            on_table = [q for q in live if s.candidate.table in q.shape.tables]
            if not on_table:
                s.single_gain = s.single_gain if s.single_gain is not None else 0.0
                continue
            try:
                handle, size = engine.add(s.candidate)
            except psycopg.Error as e:
                s.error = (e.diag.message_primary or str(e)).splitlines()[0]
                continue
            try:
                handles[handle] = s.candidate
                costs, used = {}, {}
                for q in on_table:
                    costs[q.query_id], names = explain_cost(conn, q)
                    used[q.query_id] = engine.names(names, handles)
            finally:
                engine.drop(handle)
            s.size_bytes = size
            s.penalty = _penalty(s.candidate, size, tables, write_share, p)
            gain = sum(weight[qid] * (current[qid] - c) for qid, c in costs.items()) / total0
            if step == 1:
                s.single_gain = gain
            net = gain - s.penalty
            fits = used_bytes + size <= p.budget_mb * 1e6
            if fits and net >= p.min_gain and (best is None or net > best[0]):
                best = (net, s, costs, used)
        if step == 1:  # later steps look at the best single candidates only
            ranked = sorted(results, key=lambda s: -(s.single_gain or 0.0))
            pool = ranked[: p.max_candidates]
        if best is None:
            break
        _, chosen, costs, used = best
        handle, _ = engine.add(chosen.candidate)  # kept for the next steps
        handles[handle] = chosen.candidate
        chosen.rank = step
        chosen.step_gain = best[0] + chosen.penalty
        used_bytes += chosen.size_bytes or 0
        current.update(costs)
        final_ix.update(used)
    return Screening(path, note, results, base, current, plan_ix, final_ix, skipped)
