"""``indexes advise``: the whole flow from a workload to advice.json and a migration pair psql applies.

Read the workload; parse each query (skipped with the reason when PostgreSQL's parser rejects
it, it reads no table here, or its placeholders have no column to draw values from); audit the
existing indexes read-only (:func:`psra_bench.latency.catalog.catalog_audit`); propose candidates
(:mod:`.candidates`); screen them (:mod:`.screening`: HypoPG when installed, else real builds on
a database psra-bench owns); decide per index — add (picked by screening), keep (enforces a
constraint, a workload query's plan uses it, or it is scanned), drop (a duplicate, or unused in
the statistics window and in no workload plan) — on the tables the workload reads or writes;
with ``verify``, measure the recommended set against the current one (:mod:`.verify`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from psra_bench.db.ownership import inspect, require_owned
from psra_bench.exceptions import InputError, MeasurementError, NotOwnedError
from psra_bench.infra import postgres as db
from psra_bench.latency.catalog import CatalogAudit, catalog_audit
from psra_bench.settings import LiveSettings
from psra_bench.workload.candidates import Candidate, concurrent, spec_candidates, workload_candidates
from psra_bench.workload.dbinfo import extension_state, public_columns, server_version, table_info
from psra_bench.workload.model import Skipped, Workload
from psra_bench.workload.params import AdviceParams
from psra_bench.workload.screening import BUILD, HYPOPG, Planned, Screening, screen
from psra_bench.workload.shapes import Shape, analyze
from psra_bench.workload.values import NoValues, ValueSource
from psra_bench.workload.verify import Dropped, Verification, verify

__all__ = ["ADD", "KEEP", "DROP", "IndexAdvice", "Advice", "advise", "migration_sql", "write_advice"]

ADD, KEEP, DROP = "add", "keep", "drop"


@dataclass
class IndexAdvice:
    """One index: add, keep or drop, why, what the planner predicted and what was measured."""

    definition: str
    action: str
    reason: str
    name: str
    table: str
    origin: str
    predicted: dict[str, Any] | None = None
    measured: dict[str, Any] | None = None


@dataclass
class Advice:
    """advice.json: the indexes, the queries, the screening path, the predicted-vs-measured table."""

    fingerprint: str
    database: str
    server_version: str
    created_at: str
    workload_source: str
    path: str
    path_note: str
    indexes: list[IndexAdvice]
    queries: list[dict[str, Any]]
    candidates: list[dict[str, Any]]
    predicted_vs_measured: dict[str, dict[str, Any]] | None
    insert: dict[str, Any] | None
    verification: dict[str, Any] | None
    skipped: list[dict[str, Any]]
    stats_window: str
    params: dict[str, Any]
    values: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)


def _path(conn: psycopg.Connection[Any], owned: Callable[[], bool]) -> tuple[str, str]:
    """HYPOPG or BUILD, and the one sentence saying which and why (refuses when neither may run)."""
    name = str(conn.info.dbname)
    state = extension_state(conn, "hypopg")
    if state == "installed":
        return HYPOPG, "HypoPG is installed: candidates were screened as hypothetical indexes (nothing was built)."
    if state == "available" and owned():
        conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
        return HYPOPG, (
            f"HypoPG was created in database {name!r} (psra-bench owns it): candidates were screened as "
            "hypothetical indexes (nothing was built)."
        )
    where = "available but not created in this database" if state == "available" else "not installed on this server"
    if owned():
        return BUILD, (
            f"HypoPG is {where}: screening built each candidate for real, one at a time, on database {name!r}, "
            "which psra-bench owns, and dropped it again."
        )
    raise MeasurementError(
        f"HypoPG is {where} and database {name!r} is not psra-bench's, so screening can neither use hypothetical "
        "indexes nor build candidates; install HypoPG (Debian: postgresql-15-hypopg) and CREATE EXTENSION hypopg, "
        "or run on a copy psra-bench owns"
    )


@dataclass
class _Parsed:
    """The workload's queries as screening takes them."""

    planned: list[Planned] = field(default_factory=list)
    shapes: dict[str, Shape] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    #: Query id -> where each placeholder's replay values come from.
    sources: dict[str, dict[int, str]] = field(default_factory=dict)
    #: Query id -> "planned", "writes only" (an INSERT: weighs in the write penalty) or "skipped".
    status: dict[str, str] = field(default_factory=dict)
    #: Table -> share of the workload's calls that write it.
    write_share: dict[str, float] = field(default_factory=dict)


def _plan_queries(workload: Workload, columns: dict[str, list[str]], source: ValueSource, p: AdviceParams) -> _Parsed:
    """Parse each query, draw its planning parameters; INSERTs only count as writes; the rest is skipped with why."""
    out = _Parsed()
    planned, shapes, skipped, sources = out.planned, out.shapes, out.skipped, out.sources
    writes: dict[str, int] = {}
    total = 0
    for q in workload.queries:
        out.status[q.query_id] = "skipped"
        try:
            shape = analyze(q.query, columns)
        except InputError as e:
            skipped.append(Skipped(q.query, f"PostgreSQL's parser rejects it: {e}", q.query_id))
            continue
        if not shape.tables:
            skipped.append(Skipped(q.query, "reads or writes no table of schema public of this database", q.query_id))
            continue
        total += q.calls
        if shape.writes:
            writes[shape.writes] = writes.get(shape.writes, 0) + q.calls
        if shape.kind == "insert":  # the planner's cost of an INSERT does not depend on indexes: its calls weigh
            out.status[q.query_id] = "writes only"
            continue
        try:
            sets = source.draw(q.query_id, shape, p.plan_samples)
            sources[q.query_id] = source.sources(shape)
        except (NoValues, psycopg.Error) as e:
            skipped.append(Skipped(q.query, f"no replay values: {e}", q.query_id))
            continue
        shapes[q.query_id] = shape
        planned.append(Planned(q.query_id, q.query, shape, q.calls, tuple(tuple(s) for s in sets)))
        out.status[q.query_id] = "planned"
    out.write_share = {t: n / total for t, n in writes.items()} if total else {}
    return out


def _existing(audit: CatalogAudit, tables: set[str], s: Screening, p: AdviceParams) -> list[IndexAdvice]:
    """keep / drop for each existing index of the workload's tables."""
    dup = {d.index: d.covered_by for d in audit.duplicates}
    used: dict[str, list[str]] = {}
    for plans in (s.plan_indexes, s.final_plan_indexes):
        for qid, names in plans.items():
            for n in names:
                used.setdefault(n, [])
                if qid not in used[n]:
                    used[n].append(qid)
    out = []
    for ix in audit.indexes:
        if ix.table not in tables:
            continue
        if ix.kind:
            action, reason = KEEP, f"{ix.kind}: enforces a constraint, never dropped"
        elif ix.name in dup:
            action, reason = DROP, f"duplicate: its key columns lead {dup[ix.name]}, which serves the same scans"
        elif ix.name in used:
            action, reason = KEEP, f"the plan of query {', '.join(used[ix.name][:3])} uses it"
        elif ix.idx_scan <= p.unused_scans:
            action, reason = (
                DROP,
                (
                    f"unused: idx_scan = {ix.idx_scan} (at most {p.unused_scans}), no workload query's plan uses it; "
                    + audit.window.describe()
                ),
            )
        else:
            action, reason = KEEP, f"idx_scan = {ix.idx_scan}: scanned by statements outside the workload"
        out.append(IndexAdvice(ix.definition, action, reason, ix.name, ix.table, "existing"))
    return out


def _candidates(shapes: dict[str, Shape], audit: CatalogAudit) -> list[Candidate]:
    tables = {t for sh in shapes.values() for t in sh.tables}
    mine = workload_candidates(shapes, audit.indexes)
    seen = {(c.table, c.compare_keys) for c in mine}
    spec = [c for c in spec_candidates(tables, audit.indexes) if (c.table, c.compare_keys) not in seen or c.predicate]
    return mine + spec


def _predicted(s: Screening, name: str) -> dict[str, Any] | None:
    for r in s.results:
        if r.candidate.name == name and r.rank is not None:
            qids = [q for q, names in s.final_plan_indexes.items() if name in names]
            return {
                "rank": r.rank,
                "gain_share": r.step_gain,
                "single_gain_share": r.single_gain,
                "write_penalty": r.penalty,
                "size_bytes": r.size_bytes,
                "queries": {q: _cost_pair(s, q) for q in qids},
            }
    return None


def _cost_pair(s: Screening, qid: str) -> dict[str, Any]:
    before, after = s.base_costs[qid], s.final_costs[qid]
    return {"cost_before": before, "cost_after": after, "speedup": before / after if after > 0 else None}


def _measured(v: Verification, name: str) -> dict[str, Any]:
    qs = {}
    for qid, r in v.queries.items():
        if name in r.plans.get("current", []) or name in r.plans.get("recommended", []):
            qs[qid] = {"speedup": r.speedup, "ci": r.speedup_ci, "p": r.p, "verdict": r.decision["verdict"]}
    return {"queries": qs, "size_bytes": v.index_sizes.get(name), "build_seconds": v.build_seconds.get(name)}


def _predicted_vs_measured(s: Screening, v: Verification) -> dict[str, dict[str, Any]]:
    """Per measured query: the planner's predicted speedup beside the measured one (with its CI and p)."""
    out = {}
    for qid, r in v.queries.items():
        pair = _cost_pair(s, qid)
        out[qid] = {
            "predicted_speedup": pair["speedup"],
            "cost_before": pair["cost_before"],
            "cost_after": pair["cost_after"],
            "measured_speedup": r.speedup,
            "ci": r.speedup_ci,
            "p": r.p,
            "verdict": r.decision["verdict"],
            "current_p50_ms": r.current["p50"],
            "recommended_p50_ms": r.recommended["p50"],
        }
    return out


def _query_rows(workload: Workload, s: Screening, v: Verification | None, parsed: _Parsed) -> list[dict[str, Any]]:
    """The captured queries with calls and times, their replay value sources, predicted and measured figures."""
    queries = []
    for q in workload.queries:
        row: dict[str, Any] = {"query_id": q.query_id, "query": q.query, "calls": q.calls, "total_ms": q.total_ms,
                               "mean_ms": q.mean_ms, "rows": q.rows, "params": parsed.sources.get(q.query_id),
                               "status": parsed.status.get(q.query_id, "skipped")}  # fmt: skip
        if q.query_id in s.base_costs:
            row["predicted"] = _cost_pair(s, q.query_id)
        if v is not None and q.query_id in v.queries:
            r = v.queries[q.query_id]
            row["measured"] = {"current": r.current, "recommended": r.recommended, "speedup": r.speedup,
                               "ci": r.speedup_ci, "p": r.p, "plans": r.plans}  # fmt: skip
        queries.append(row)
    return queries


def advise(
    settings: LiveSettings,
    workload: Workload,
    p: AdviceParams,
    *,
    verify_set: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> Advice:
    """Advise indexes for ``workload`` on the settings' database; with ``verify_set``, measure them (owned db only)."""
    dsn = settings.db_dsn
    if verify_set:
        require_owned(settings, "indexes advise --verify")  # one sentence, before anything else ran
    with db.connect(dsn, autocommit=True) as conn:
        audit = catalog_audit(conn, seed=p.seed)
        columns = public_columns(conn)
        source = ValueSource(conn, p)
        parsed = _plan_queries(workload, columns, source, p)
        planned, shapes, skipped = parsed.planned, parsed.shapes, parsed.skipped
        if not planned:
            raise MeasurementError(
                f"none of the workload's {len(workload.queries)} queries can be planned on database "
                f"{conn.info.dbname!r} (" + "; ".join(s.reason for s in skipped[:3]) + ")"
            )

        def owned() -> bool:
            if inspect(conn).owned:
                return True
            try:
                require_owned(settings, "indexes advise (screening by building candidates)")
            except NotOwnedError:
                return False
            return True

        path, note = _path(conn, owned)
        tables = sorted({t for sh in shapes.values() for t in sh.tables})
        info = table_info(conn, tables)
        candidates = _candidates(shapes, audit)
        progress(f"{len(planned)} queries, {len(candidates)} candidates; {note}")
        s = screen(conn, path, note, planned, candidates, info, parsed.write_share, p, progress)
        version = server_version(conn)
    skipped += s.skipped
    parsed.status.update({x.query_id: "skipped" for x in s.skipped if x.query_id})
    existing = _existing(audit, set(tables), s, p)
    adds = [r.candidate for r in s.picked]
    drops = [Dropped(e.name, e.table, e.definition) for e in existing if e.action == DROP]
    v: Verification | None = None
    if verify_set:
        bad = {x.query_id for x in s.skipped if x.query_id}
        selects = [q for q in planned if q.shape.kind == "select" and q.query_id not in bad]
        for q in planned:
            if q.shape.kind != "select":
                skipped.append(Skipped(q.query, "not replayed: only SELECTs are timed (writes: the insert batches)",
                                       q.query_id))  # fmt: skip
        if selects:
            v = verify(dsn, selects, adds, drops, p, progress)
    indexes = [
        IndexAdvice(
            c.definition,
            ADD,
            f"screening pick {r.rank}: removes {100 * (r.step_gain or 0):.1f} % of the workload's weighted planner "
            f"cost ({'hypothetical index' if path == HYPOPG else 'built and planned on this database'})",
            c.name,
            c.table,
            c.origin,
            predicted=_predicted(s, c.name),
        )
        for r in s.picked
        for c in (r.candidate,)
    ] + existing
    if v is not None:
        for ix in indexes:
            ix.measured = _measured(v, ix.name)
    pvm = None if v is None else _predicted_vs_measured(s, v)
    queries = _query_rows(workload, s, v, parsed)
    ranked = sorted(s.results, key=lambda r: -(r.single_gain or 0.0))
    return Advice(
        fingerprint=workload.fingerprint,
        database=audit.database,
        server_version=version,
        created_at=dt.datetime.now(dt.UTC).isoformat(),
        workload_source=workload.source,
        path=path,
        path_note=note,
        indexes=indexes,
        queries=queries,
        candidates=[
            {
                "definition": r.candidate.definition,
                "origin": r.candidate.origin,
                "single_gain_share": r.single_gain,
                "size_bytes": r.size_bytes,
                "write_penalty": r.penalty,
                "rank": r.rank,
                "error": r.error,
            }
            for r in ranked
        ],  # fmt: skip
        predicted_vs_measured=pvm,
        insert=v.insert if v is not None else None,
        verification=None
        if v is None
        else {
            "schedule": "".join(v.schedule),
            "insert_note": v.insert_note,
            "switch_seconds": v.switch_seconds,
            "rounds": p.rounds,
            "iterations": p.iterations,
        },  # fmt: skip
        skipped=[asdict(x) for x in skipped],
        stats_window=audit.window.describe(),
        params=p.values(),
        values=workload.values,
    )


def migration_sql(advice: Advice) -> tuple[str, str]:
    """(up, down) SQL: CREATE/DROP INDEX CONCURRENTLY, one statement per line, for ``psql -v ON_ERROR_STOP=1 -f``."""
    adds = [ix for ix in advice.indexes if ix.action == ADD]
    drops = [ix for ix in advice.indexes if ix.action == DROP]
    head = [
        f"-- psra-bench index advice for workload {advice.fingerprint} on database {advice.database}, "
        f"{advice.created_at[:16].replace('T', ' ')} UTC.",
        f"-- {len(adds)} to add, {len(drops)} to drop; CONCURRENTLY cannot run in a transaction, so each statement",
        "-- runs on its own:",
    ]
    up = head + ['--   psql "$PSRA_DB_DSN" -v ON_ERROR_STOP=1 -f recommended_indexes.up.sql', ""]
    for ix in adds:
        up += [f"-- add: {ix.reason}", concurrent(ix.definition) + ";"]
    for ix in drops:
        up += [f"-- drop: {ix.reason}", f'DROP INDEX CONCURRENTLY IF EXISTS public."{ix.name}";']
    if not adds and not drops:
        up.append("-- nothing to change")
    down = head + ['--   psql "$PSRA_DB_DSN" -v ON_ERROR_STOP=1 -f recommended_indexes.down.sql', ""]
    down += [f'DROP INDEX CONCURRENTLY IF EXISTS public."{ix.name}";' for ix in reversed(adds)]
    down += [concurrent(ix.definition) + ";" for ix in drops]
    if not adds and not drops:
        down.append("-- nothing to change")
    return "\n".join(up) + "\n", "\n".join(down) + "\n"


def write_advice(out_dir: str | Path, advice: Advice) -> list[Path]:
    """Write advice.json and recommended_indexes.up.sql / .down.sql into ``out_dir`` atomically; their paths."""
    from psra_bench.workbench import save_results

    out = Path(out_dir)
    paths = [save_results(out, "advice", advice.to_dict())]
    up, down = migration_sql(advice)
    for name, text in (("recommended_indexes.up.sql", up), ("recommended_indexes.down.sql", down)):
        target = out / name
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(target)
        paths.append(target)
    return paths
