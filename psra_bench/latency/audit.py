"""The index audit: per index, what the measurements say about it, and keep / drop / review with a reason.

Inputs come from the query-latency experiment (:mod:`psra_bench.latency.experiment`): the
catalog of every index in schema public (:func:`index_catalog`), read with the migration
applied; which measured query patterns used each index (``idx_scan`` deltas around the timed
calls, and the EXPLAIN plans); and each query's before/after decision. The rules, in order:

1. A primary key or unique index is ``keep`` (it enforces a constraint): never ``drop``.
2. An index of the baseline schema (not one of the migration's 26) is ``keep`` when a measured
   pattern uses it, else ``review``: the recommended set keeps all 20 baseline indexes, so
   dropping one is not something this run tested.
3. A migration index that a measured pattern uses in the spec state, where that pattern got
   significantly faster (the factor and Mann-Whitney gates of
   :func:`psra_bench.measure.stats.decide`), is ``keep``.
4. Otherwise it is ``drop`` when its key columns lead another index that stays (same table,
   method and predicate: that one serves the same scans), when its table is tiny (heap at most
   :data:`TINY_TABLE_PAGES` pages: a sequential scan reads it as fast), or when no measured
   pattern uses it; and ``review`` when a pattern uses it without a significant gain.

"Unused" means unused by the patterns measured in this run; the three-way run
(baseline / spec / recommended) then tests whether dropping the others costs any of them speed.
When it does (a query measured slower on the recommended set, whose spec-set plan used an index
the audit left out), that index stays: :func:`final_recommendation` computes the set the report
recommends from the audit and the three-way run, and both the summary
(:mod:`psra_bench.report.summary`) and :func:`recommended_migration` (the SQL that psql runs) use it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import psycopg

from psra_bench.db.migrate import migration_indexes
from psra_bench.exceptions import MeasurementError
from psra_bench.measure.format import p_text, speedup_text
from psra_bench.measure.stats import FASTER, SLOWER
from psra_bench.results import AuditRow

__all__ = [
    "TINY_TABLE_PAGES",
    "REQUIRED_TABLES",
    "KEEP",
    "DROP",
    "REVIEW",
    "require_psra_tables",
    "index_catalog",
    "key_columns",
    "covering_index",
    "audit_indexes",
    "recommended_set",
    "KeptByThreeWay",
    "IndexChoice",
    "FinalRecommendation",
    "final_recommendation",
    "lost_indexes",
    "recommended_migration",
    "write_recommended_migration",
]

#: A table whose heap has at most this many 8 kB pages is "tiny": reading all of it costs about as
#: much as the few index pages an index scan reads (plus its heap visits), so the planner prefers
#: a sequential scan and the index only costs writes.
TINY_TABLE_PAGES = 10
#: The tables the measured queries read; an audit needs all of them.
REQUIRED_TABLES = ("hs_codes", "psra_rules", "psra_verdicts")

KEEP, DROP, REVIEW = "keep", "drop", "review"


def require_psra_tables(conn: psycopg.Connection[Any]) -> None:
    """Raise one MeasurementError sentence naming the PSRA tables this database lacks (or an empty verdicts table)."""
    rows = conn.execute(
        "SELECT t, to_regclass('public.' || t) IS NOT NULL FROM unnest(%s::text[]) AS t", (list(REQUIRED_TABLES),)
    ).fetchall()
    missing = [str(r[0]) for r in rows if not r[1]]
    if missing:
        needed = "" if len(missing) == len(REQUIRED_TABLES) else f" (an audit needs {', '.join(REQUIRED_TABLES)})"
        raise MeasurementError(
            f"database {conn.info.dbname!r} lacks the PSRA table{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}{needed}; run `psra-bench seed` against it first"
        )
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM psra_verdicts)").fetchone()
    if not (row and row[0]):
        raise MeasurementError(
            f"database {conn.info.dbname!r} has an empty psra_verdicts table; run `psra-bench seed` against it first"
        )


_CATALOG_SQL = """
SELECT c.relname AS index, t.relname AS "table", pg_get_indexdef(i.indexrelid) AS definition,
       am.amname AS method, i.indisprimary AS "primary", i.indisunique AS "unique", i.indisvalid AS valid,
       (SELECT min(con.conname) FROM pg_constraint con
        WHERE con.conindid = i.indexrelid AND con.contype IN ('p', 'u', 'x')) AS constraint_name,
       ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) AS k) AS keys,
       pg_get_expr(i.indpred, i.indrelid) AS predicate,
       pg_relation_size(i.indexrelid) AS size_bytes,
       pg_relation_size(t.oid) / current_setting('block_size')::int AS table_pages,
       greatest(t.reltuples, 0)::bigint AS table_rows
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_am am ON am.oid = c.relam
WHERE n.nspname = 'public'
ORDER BY t.relname, c.relname"""


def index_catalog(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every index in schema public: table, definition, method, key columns, predicate, validity, constraint, sizes.

    ``constraint_name`` names the primary key, unique or exclusion constraint the index enforces (else None).
    """
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute(_CATALOG_SQL).fetchall()
    return [dict(r) | {"keys": list(r["keys"]), "size_bytes": int(r["size_bytes"])} for r in rows]


def key_columns(index: Mapping[str, Any]) -> list[str]:
    """An :func:`index_catalog` row's key columns as compared for duplicates (ASC/DESC dropped for a btree).

    A btree scans both ways, so ASC/DESC do not matter; expressions are compared as their text.
    """

    def key(column: str) -> str:
        col = " ".join(column.split())
        return col.removesuffix(" DESC") if index["method"] == "btree" else col

    return [key(k) for k in index["keys"]]


def covering_index(index: Mapping[str, Any], others: Sequence[Mapping[str, Any]]) -> str | None:
    """Another index whose key columns start with all of ``index``'s (same table, method, predicate), or None.

    Rows are those of :func:`index_catalog`; key columns are compared by :func:`key_columns`.
    """
    mine = key_columns(index)
    for other in others:
        if other["index"] == index["index"] or other["table"] != index["table"]:
            continue
        if other["method"] != index["method"] or other["predicate"] != index["predicate"]:
            continue
        theirs = key_columns(other)
        if len(theirs) >= len(mine) and theirs[: len(mine)] == mine:
            return str(other["index"])
    return None


def _gain(decision: Mapping[str, Any]) -> str:
    return f"{speedup_text(decision.get('ratio'), decision.get('ratio_ci'))}, p {p_text(decision.get('p_value'))}"


def audit_indexes(
    catalog: Sequence[Mapping[str, Any]],
    *,
    new: Collection[str],
    usage: Mapping[str, Mapping[str, Mapping[str, int]]],
    plans: Mapping[str, Mapping[str, Sequence[str]]],
    decisions: Mapping[str, Mapping[str, Any]],
    build_seconds: Mapping[str, float] | None = None,
    tiny_pages: int = TINY_TABLE_PAGES,
) -> list[AuditRow]:
    """One row per index of ``catalog`` with its evidence and recommendation (rules: module docstring).

    ``usage[query][side][index]`` is the idx_scan delta of the timed calls (side "before" =
    baseline, "after" = spec state); ``plans[query][side]`` the indexes its EXPLAIN plan named;
    ``decisions[query]`` its before/after :meth:`Decision.to_dict`.
    """
    new = set(new)
    queries = list(decisions)

    def used_by(index: str, sides: Sequence[str]) -> list[str]:
        return [
            q
            for q in queries
            if any(usage.get(q, {}).get(s, {}).get(index, 0) > 0 or index in plans.get(q, {}).get(s, ()) for s in sides)
        ]

    rows: list[dict[str, Any]] = []
    for ix in catalog:
        name = str(ix["index"])
        is_new = name in new
        users = used_by(name, ("after",) if is_new else ("before", "after"))
        # A gain is credited to a migration index only: a baseline index was there on both sides.
        gains = [q for q in users if is_new and decisions[q].get("verdict") == FASTER]
        rows.append(
            {
                "index": name,
                "table": ix["table"],
                "new": is_new,
                "definition": ix["definition"],
                "method": ix["method"],
                "size_bytes": ix["size_bytes"],
                "build_seconds": (build_seconds or {}).get(name),
                "used_by": users,
                "gains": {q: _gain(decisions[q]) for q in users},
                "scans_spec": sum(usage.get(q, {}).get("after", {}).get(name, 0) for q in queries),
                "scans_baseline": sum(usage.get(q, {}).get("before", {}).get(name, 0) for q in queries),
                "constraint": "primary key" if ix["primary"] else "unique" if ix["unique"] else None,
                "table_pages": int(ix["table_pages"]),
                "table_rows": int(ix["table_rows"]),
                "tiny_table": int(ix["table_pages"]) <= tiny_pages,
                "duplicate_of": None,
                "recommendation": None,
                "reason": None,
                "_significant": gains,
            }
        )
    # First what stays for a measured reason; then duplicates are judged against what stays.
    for r in rows:
        if r["constraint"]:
            r["recommendation"], r["reason"] = KEEP, f"{r['constraint']}: enforces a constraint, never dropped"
        elif r["_significant"]:
            q = r["_significant"][0]
            more = f" (and {len(r['_significant']) - 1} more)" if len(r["_significant"]) > 1 else ""
            r["recommendation"], r["reason"] = KEEP, f"used by {q}{more}, which got faster: {r['gains'][q]}"
        elif not r["new"] and r["used_by"]:
            r["recommendation"], r["reason"] = KEEP, f"baseline index used by {', '.join(r['used_by'])}"
    staying = [ix for ix, r in zip(catalog, rows, strict=True) if r["recommendation"] == KEEP or not r["new"]]
    for ix, r in zip(catalog, rows, strict=True):
        r["duplicate_of"] = None if r["constraint"] else covering_index(ix, staying)
        if r["recommendation"]:
            continue
        tiny = f"{r['table']} is tiny ({r['table_rows']:,} rows in {r['table_pages']} pages ≤ {tiny_pages})"
        if not r["new"]:
            why = (
                f"its columns lead {r['duplicate_of']}, which covers it"
                if r["duplicate_of"]
                else f"not used by the {len(queries)} measured patterns"
            )
            r["recommendation"], r["reason"] = REVIEW, f"baseline index, {why}; dropping it was not tested here"
        elif r["duplicate_of"]:
            r["recommendation"], r["reason"] = DROP, f"its columns lead {r['duplicate_of']}, which stays and covers it"
        elif r["tiny_table"]:
            r["recommendation"], r["reason"] = DROP, f"{tiny}: a sequential scan reads it as fast"
        elif not r["used_by"]:
            r["recommendation"], r["reason"] = DROP, f"not used by any of the {len(queries)} measured patterns"
        else:
            q = r["used_by"][0]
            slower = decisions[q].get("verdict") == SLOWER
            how = "which got slower with the migration" if slower else "without a significant gain"
            r["recommendation"], r["reason"] = REVIEW, f"used by {q}, {how} ({r['gains'][q]})"
    for r in rows:
        del r["_significant"]
    return cast("list[AuditRow]", rows)  # every row now has its recommendation and reason


def recommended_set(audit: Sequence[Mapping[str, Any]]) -> list[str]:
    """The migration's indexes the audit keeps (the recommended set is the baseline plus these)."""
    return [str(r["index"]) for r in audit if r["new"] and r["recommendation"] == KEEP]


@dataclass(frozen=True)
class KeptByThreeWay:
    """A migration index the audit left out but the three-way run showed a query needs."""

    index: str
    #: The queries measured slower on the recommended set whose spec-set plan used the index.
    queries: tuple[str, ...]
    #: Each of those queries' recommended-vs-spec speedup with its CI and p-value ("0.67× [0.64–0.70], p < 0.001").
    slowdowns: tuple[str, ...]


@dataclass(frozen=True)
class IndexChoice:
    """The final word on one migration index: kept or dropped, and why."""

    index: str
    keep: bool
    #: The audit's recommendation (keep / drop / review) before the three-way run.
    audit: str
    reason: str


@dataclass(frozen=True)
class FinalRecommendation:
    """The index set the report recommends: the audit's keep list plus what the three-way run showed is needed."""

    #: One choice per migration index of the audit, in the audit's order.
    choices: tuple[IndexChoice, ...]
    #: The audit's keep list: the set the three-way run measured as its third side.
    measured: tuple[str, ...]
    #: Indexes outside ``measured`` kept because a query got slower without them.
    kept_by_three_way: tuple[KeptByThreeWay, ...]

    @property
    def keep(self) -> tuple[str, ...]:
        """The migration indexes of the recommended set (baseline indexes are always in it)."""
        return tuple(c.index for c in self.choices if c.keep)

    @property
    def left_out(self) -> tuple[str, ...]:
        """The migration indexes the recommended set drops."""
        return tuple(c.index for c in self.choices if not c.keep)

    def needed_by(self, query: str) -> tuple[str, ...]:
        """The indexes kept because ``query`` measured slower without them."""
        return tuple(k.index for k in self.kept_by_three_way if query in k.queries)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {
            "keep": list(self.keep),
            "left_out": list(self.left_out),
            "measured": list(self.measured),
            "kept_by_three_way": [
                {"index": k.index, "queries": list(k.queries), "slowdowns": list(k.slowdowns)}
                for k in self.kept_by_three_way
            ],
            "choices": [{"index": c.index, "keep": c.keep, "audit": c.audit, "reason": c.reason} for c in self.choices],
        }


AuditOrResults = Mapping[str, Any] | Sequence[Mapping[str, Any]]


def _spec_plan(results: Mapping[str, Any], query: str) -> set[str]:
    """The indexes ``query``'s EXPLAIN plan named on the spec set (empty when no plan was captured)."""
    queries = results.get("queries")
    row = queries.get(query) if isinstance(queries, Mapping) else None
    plans = row.get("plans") if isinstance(row, Mapping) else None
    after = plans.get("after") if isinstance(plans, Mapping) else None
    names = after.get("index_names") if isinstance(after, Mapping) else None
    return set(names or ())


def lost_indexes(results: Mapping[str, Any], query: str) -> list[str]:
    """Indexes ``query``'s plan used on the spec set but not on the measured recommended set (any index)."""
    three_way = results.get("recommended")
    if not isinstance(three_way, Mapping) or query not in three_way["queries"]:
        return []
    return sorted(_spec_plan(results, query) - set(three_way["queries"][query].get("plan_recommended") or ()))


def final_recommendation(results: AuditOrResults) -> FinalRecommendation:
    """The recommended set from the audit and the three-way run: what the summary advises and the SQL applies.

    ``results`` are the query-latency results (or the report's ``query_latency`` section): ``audit``,
    ``queries`` (their spec-set plans) and ``recommended`` (the three-way run, None when not measured);
    or the audit rows alone. A migration index the audit left out stays when a query measured slower
    on the recommended set than on the spec's and its spec-set plan used that index.
    """
    data: Mapping[str, Any] = results if isinstance(results, Mapping) else {"audit": list(results)}
    audit = [r for r in data["audit"] if r["new"]]
    measured = tuple(recommended_set(audit))
    three_way = data.get("recommended")
    slower = (
        {q: v["recommended_vs_spec"] for q, v in three_way["queries"].items() if not v["as_fast_as_spec"]}
        if isinstance(three_way, Mapping)
        else {}
    )
    outside = {str(r["index"]) for r in audit} - set(measured)
    needed: dict[str, list[str]] = {}
    for q in slower:
        for ix in lost_indexes(data, q):
            if ix in outside:  # a baseline or kept index missing from a plan was not dropped
                needed.setdefault(ix, []).append(q)
    kept = tuple(
        KeptByThreeWay(ix, tuple(qs), tuple(_gain(slower[q]) for q in qs)) for ix, qs in sorted(needed.items())
    )
    why = {k.index: k for k in kept}
    choices = []
    for r in audit:
        name, said = str(r["index"]), str(r["recommendation"])
        reason = str(r.get("reason", ""))
        if name in why:
            k = why[name]
            runs = "; ".join(f"{q} {s}" for q, s in zip(k.queries, k.slowdowns, strict=True))
            reason = f"without it the three-way run measured {runs} (recommended vs spec); audit: {said}, {reason}"
        choices.append(IndexChoice(name, name in measured or name in why, said, reason))
    return FinalRecommendation(tuple(choices), measured, kept)


def recommended_migration(results: AuditOrResults, *, run_id: str = "") -> tuple[str, str]:
    """(up, down) SQL of :func:`final_recommendation`'s set, one CONCURRENTLY statement per line, runnable with psql.

    ``up`` brings a database with the baseline (20) or the spec's set (46) to the recommended set:
    it creates the kept migration indexes that are missing and drops the others. ``down`` returns
    it to the baseline, as the spec migration's down does.
    """
    final = final_recommendation(results)
    choices = {c.index: c for c in final.choices}
    specs = [s for s in migration_indexes() if s.name in choices]
    if not specs:
        raise MeasurementError("the audit has none of the migration's indexes: nothing to write")
    keep = set(final.keep)
    extra = f" ({len(final.kept_by_three_way)} of them kept by the three-way run)" if final.kept_by_three_way else ""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        f"-- The recommended index set of psra-bench run {run_id or '(unnamed)'}, written {when}.",
        f"-- Baseline (20 indexes) plus {len(keep)} of the migration's {len(specs)}{extra}; each statement runs on its",
        "-- own (CONCURRENTLY cannot run in a transaction):",
    ]
    up = head + [
        '--   psql "$PSRA_DB_DSN" -v ON_ERROR_STOP=1 -f recommended_indexes.up.sql',
        "-- From the baseline or from the spec's 46 indexes alike: missing kept indexes are built, the rest dropped.",
        "",
    ]
    for s in specs:
        if s.name in keep:
            up += [f"-- keep: {choices[s.name].reason}", s.create + ";"]
    for s in specs:
        if s.name not in keep:
            c = choices[s.name]
            up += [f"-- {c.audit}: {c.reason}", s.drop + ";"]
    down = head + [
        '--   psql "$PSRA_DB_DSN" -v ON_ERROR_STOP=1 -f recommended_indexes.down.sql',
        "-- Back to the baseline: drops the kept indexes again.",
        "",
    ]
    down += [s.drop + ";" for s in reversed(specs) if s.name in keep]
    return "\n".join(up) + "\n", "\n".join(down) + "\n"


def write_recommended_migration(out_dir: str | Path, results: AuditOrResults, *, run_id: str = "") -> tuple[Path, Path]:
    """Write ``recommended_indexes.up.sql`` and ``.down.sql`` of :func:`final_recommendation` into ``out_dir``.

    Pass the whole query-latency ``results`` so the SQL keeps what the three-way run showed is
    needed; the audit rows alone give the audit's keep list. Returns the two paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    up, down = recommended_migration(results, run_id=run_id)
    paths = (out / "recommended_indexes.up.sql", out / "recommended_indexes.down.sql")
    for path, text in zip(paths, (up, down), strict=True):
        tmp = path.with_suffix(".sql.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths
