"""Seed speed, and every DAL read query's latency without and with the index migration, in one run.

    python benchmarks/bench_queries.py --verdicts 1000000

Method:

* Servers come from the environment (PSRA_DB_DSN / REDIS_URL) or are the embedded ones
  (``ensure_services``). A scratch database ``psra_benchq_<random>`` is created, given the schema
  and reference data, seeded with ``--verdicts`` rows (rows/s printed) and dropped at the end
  (``--keep`` keeps it).
* Parameters come from the seeded data: tenants, trade routes, input hashes and effective dates
  from a stable pseudo-random sample of verdicts (ordered by their random ``id``, so busy tenants
  and routes appear as often as they are used), HS codes and search words from the HS table,
  agreements/chapters and rule ids from the rules. Each query cycles through its own fixed list
  of parameters; every round restarts the list, so both index states see the same workload.
* Rounds run in the order A B B A (A = the baseline's 20 indexes, B = the migration's 46), so
  the migration is built once and dropped once, and slow drift of a shared machine lands on
  both sides. Index state changes are the real ``migrate_up`` / ``migrate_down``.
* In each round every query gets ``--warmup`` untimed calls, then the queries are timed
  round-robin (one call of each in turn, so all of them share the machine's bursts of load), up
  to ``--iterations`` calls per query; a query drops out of the round once its calls took
  ``--round-seconds`` (after at least 5). Calls run one at a time on a one-connection pool. A
  ``SELECT 1`` control runs in every turn too: its ratio is the noise floor between rounds.
  ``--path query`` (default) times pool checkout + execute + fetch of the DAL's SQL;
  ``--path dal`` times ``PostgresDAL.fetch_all`` (adds dict rows and JSON conversion).
* Sub-millisecond queries whose plan does not change (the rules and HS code lookups) show the
  machine's noise, not the indexes: compare their ratios with the control's before reading them.
* p50/p95 are numpy "linear" percentiles (``psra_bench.measure.stats.summarize``). ``ratio`` is
  p50 without / p50 with (above 1: the migration made the query faster); the interval is the
  bootstrap 95 % CI of that ratio and the verdict is ``psra_bench.measure.stats.decide`` (ratio
  >= 1.1 AND Mann-Whitney p < 0.05).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from psra_bench.db.dal import QUERIES, PostgresDAL, escape_like
from psra_bench.db.migrate import migrate_down, migrate_up
from psra_bench.db.reference import hs_rows, prepare_database, rules
from psra_bench.db.seed import DEFAULT_END, seed_database
from psra_bench.exceptions import PsraBenchError
from psra_bench.infra import postgres as db
from psra_bench.infra.embedded import ensure_services
from psra_bench.settings import Settings
from psra_bench.table import Table

try:  # the shared statistics module; plain numpy percentiles when it is not there
    from psra_bench.measure.stats import decide, summarize
except ImportError:  # pragma: no cover
    decide = summarize = None  # type: ignore[assignment]

#: The DAL queries that read, in the order of the table.
READ_QUERIES = (
    "hs_search",
    "rules_by_agreement_chapter",
    "recent_verdicts",
    "tenant_verdict_history",
    "trade_route_analysis",
    "duplicate_assessment",
    "tenant_dashboard",
    "trade_route_report",
    "hs_code_by_code",
    "rule_by_id",
)
#: A statement no index can change, timed in every round the same way: its ratio shows the drift
#: between rounds (a shared, noisy machine), i.e. the noise floor of every other ratio.
CONTROL = "control: SELECT 1"
Params = dict[str, Any]


def build_params(conn: Any, count: int, seed: int) -> dict[str, list[Params]]:
    """``count`` parameter sets per query, drawn from the seeded data (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    sample = conn.execute(
        "SELECT tenant_id, export_country, import_country, input_hash, effective_date"
        " FROM psra_verdicts ORDER BY id LIMIT %s",
        (count,),
    ).fetchall()
    if not sample:
        raise SystemExit("no verdicts to draw parameters from (use --verdicts > 0)")
    sample = [sample[i % len(sample)] for i in range(count)]
    words = sorted({w.lower() for r in hs_rows() for w in re.findall(r"[A-Za-z]{5,}", r.description)})
    codes = [r.code for r in hs_rows() if r.level in (4, 6)]
    pairs = sorted({(r["agreement_code"], r["hs_chapter"]) for r in rules()})
    rule_ids = [r["rule_id"] for r in rules()]

    def pick(values: list[Any]) -> Any:
        return values[int(rng.integers(len(values)))]

    return {
        "hs_search": [{"pattern": f"%{escape_like(pick(words))}%", "limit": 20} for _ in range(count)],
        "rules_by_agreement_chapter": [
            dict(zip(("agreement_code", "chapter"), pick(pairs), strict=True)) for _ in range(count)
        ],
        "recent_verdicts": [{"limit": 100} for _ in range(count)],
        "tenant_verdict_history": [{"tenant_id": s[0], "limit": 100} for s in sample],
        "trade_route_analysis": [{"export_country": s[1], "import_country": s[2]} for s in sample],
        "duplicate_assessment": [{"input_hash": s[3], "tenant_id": s[0]} for s in sample],
        "tenant_dashboard": [{"tenant_id": s[0], "since": DEFAULT_END - dt.timedelta(days=30)} for s in sample],
        "trade_route_report": [
            {"tenant_id": s[0], "date_from": s[4] - dt.timedelta(days=90), "date_to": s[4], "limit": 50} for s in sample
        ],
        "hs_code_by_code": [{"code": pick(codes)} for _ in range(count)],
        "rule_by_id": [{"rule_id": pick(rule_ids)} for _ in range(count)],
    }


def make_call(dal: PostgresDAL, name: str, path: str) -> Callable[[Params], object]:
    """One call of query ``name``: the raw SQL on the pool (``query``) or the DAL's fetch_all (``dal``)."""
    if path == "dal" and name != CONTROL:
        return lambda params: dal.fetch_all(name, params)
    sql = "SELECT 1" if name == CONTROL else QUERIES[name]

    def call(params: Params) -> object:
        with dal.pool.connection() as conn:
            return conn.execute(sql, params).fetchall()

    return call


def time_round(
    calls: dict[str, Callable[[Params], object]],
    params: dict[str, list[Params]],
    iterations: int,
    warmup: int,
    budget_s: float,
) -> dict[str, list[float]]:
    """One round: warm every query up, then time them round-robin, one call each in turn (ms).

    Round-robin puts every query (and the control) under the same bursts of load from the rest of
    the machine. A query drops out once its own calls took ``budget_s`` (after at least 5 calls).
    """
    for name, call in calls.items():
        for i in range(warmup):
            call(params[name][i % len(params[name])])
    out: dict[str, list[float]] = {name: [] for name in calls}
    spent = dict.fromkeys(calls, 0.0)
    for i in range(iterations):
        active = [name for name in calls if i < 5 or spent[name] < budget_s]
        if not active:
            break
        for name in active:
            ps = params[name]
            t0 = time.perf_counter_ns()
            calls[name](ps[i % len(ps)])
            ms = (time.perf_counter_ns() - t0) / 1e6
            out[name].append(ms)
            spent[name] += ms / 1000
    return out


def index_names(conn: Any, name: str, params: Params) -> str:
    """The indexes the plan of ``name`` uses with ``params`` (``-`` when none)."""
    row = conn.execute(b"EXPLAIN (FORMAT JSON) " + QUERIES[name].encode(), params).fetchone()
    found: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if "Index Name" in node and node["Index Name"] not in found:
            found.append(node["Index Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(row[0][0]["Plan"])
    return ", ".join(found) or "-"


def _stats(samples: list[float]) -> dict[str, float]:
    if summarize is not None:
        s = summarize(samples)
        return {"n": s.n, "p50": s.p50, "p95": s.p95}
    x = np.asarray(samples)
    return {"n": int(x.size), "p50": float(np.percentile(x, 50)), "p95": float(np.percentile(x, 95))}


def _compare(a: list[float], b: list[float]) -> tuple[str, str]:
    if decide is None:
        return "-", "-"
    d = decide(a, b)
    ci = d.ratio_ci  # of median(B) / median(A); invert for A / B
    interval = f"{1 / ci[1]:.2f}-{1 / ci[0]:.2f}" if ci and ci[0] > 0 else "-"
    return interval, d.verdict


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print seed speed and the latency table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--verdicts", type=int, default=1_000_000, help="verdicts to seed (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=42, help="data and parameter seed (default 42)")
    ap.add_argument("--tenants", type=int, default=200, help="tenants (default 200)")
    ap.add_argument("--iterations", type=int, default=100, help="timed calls per query per round (default 100)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed calls per query per round (default 5)")
    ap.add_argument("--round-seconds", type=float, default=8.0, help="time per query per round (default 8)")
    ap.add_argument("--path", choices=("query", "dal"), default="query", help="what one timed call covers")
    ap.add_argument("--json", type=Path, help="also write the raw samples and summaries here")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = ap.parse_args(argv)
    if args.iterations < 5 or args.warmup < 0 or args.round_seconds <= 0 or args.verdicts < 1:
        ap.error("need --iterations >= 5, --warmup >= 0, --round-seconds > 0 and --verdicts >= 1")

    try:
        settings = ensure_services(Settings.from_env())
    except PsraBenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    assert settings.db_dsn is not None
    name = f"psra_benchq_{uuid.uuid4().hex[:8]}"
    dsn = db.create_database(settings.db_dsn, name)
    print(f"scratch database {name} on {db.dsn_host_port(dsn)[0]}:{db.dsn_host_port(dsn)[1]}", flush=True)
    pool = None
    try:
        with db.connect(dsn, autocommit=True) as conn:
            prepare_database(conn)
            print(f"PostgreSQL {db.server_version(conn)}; seeding {args.verdicts:,} verdicts ...", flush=True)
            seeded = seed_database(conn, args.verdicts, seed=args.seed, tenants=args.tenants)
            print(
                f"seed: {seeded.verdicts:,} rows in {seeded.seconds:.1f} s = {seeded.rows_per_second:,.0f} rows/s "
                f"(checksum {seeded.checksum})",
                flush=True,
            )
            params = build_params(conn, 200, args.seed)
            size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('psra_verdicts'))").fetchone()
            print(f"psra_verdicts: {size[0] if size else '?'} with the baseline indexes", flush=True)

        pool = db.create_pool(settings.replace(db_dsn=dsn), min_size=1, max_size=1)
        dal = PostgresDAL(pool)
        names = (CONTROL, *READ_QUERIES)
        params[CONTROL] = [{}]
        calls = {q: make_call(dal, q, args.path) for q in names}
        samples: dict[str, dict[str, list[float]]] = {q: {"A": [], "B": []} for q in names}
        plans: dict[str, dict[str, str]] = {q: {} for q in names}
        switches: list[str] = []
        state = "A"
        for label in ("A", "B", "B", "A"):
            if label != state:
                t0 = time.perf_counter()
                result = migrate_up(dsn) if label == "B" else migrate_down(dsn)
                switches.append(
                    f"{'migrate up' if label == 'B' else 'migrate down'} {time.perf_counter() - t0:.1f} s "
                    f"-> {result['index_count']} indexes"
                )
                print(switches[-1], flush=True)
                state = label
            timed = time_round(calls, params, args.iterations, args.warmup, args.round_seconds)
            for q in names:
                samples[q][label] += timed[q]
                if q != CONTROL and label not in plans[q]:
                    with pool.connection() as conn:
                        plans[q][label] = index_names(conn, q, params[q][0])
            load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
            print(f"round {label} done (load average {load} on {os.cpu_count()} CPUs)", flush=True)

        rows, out = [], {}
        for q in names:
            a, b = _stats(samples[q]["A"]), _stats(samples[q]["B"])
            interval, verdict = _compare(samples[q]["A"], samples[q]["B"])
            ratio = a["p50"] / b["p50"] if b["p50"] > 0 else float("nan")
            rows.append(
                [
                    q,
                    str(a["n"]),
                    f"{a['p50']:.3f}",
                    f"{a['p95']:.3f}",
                    str(b["n"]),
                    f"{b['p50']:.3f}",
                    f"{b['p95']:.3f}",
                    f"{ratio:.2f}x",
                    interval,
                    verdict,
                    plans[q].get("B", "-"),
                ]
            )
            out[q] = {
                "without": a,
                "with": b,
                "ratio": ratio,
                "ratio_ci": interval,
                "verdict": verdict,
                "indexes_without": plans[q].get("A"),
                "indexes_with": plans[q].get("B"),
                "samples_ms": samples[q],
            }
        print()
        print(
            f"{args.verdicts:,} verdicts, seed {args.seed}; rounds A B B A; path={args.path}; "
            f"latencies in ms (A = without, 20 indexes; B = with the migration, 46)"
        )
        print(
            Table.of(
                [
                    "query",
                    "n A",
                    "p50 A",
                    "p95 A",
                    "n B",
                    "p50 B",
                    "p95 B",
                    "ratio A/B",
                    "95% CI",
                    "verdict",
                    "indexes used with the migration",
                ],
                rows,
            ).text()
        )
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "verdicts": args.verdicts,
                        "seed": args.seed,
                        "rows_per_second": seeded.rows_per_second,
                        "switches": switches,
                        "path": args.path,
                        "queries": out,
                    },
                    indent=1,
                    default=str,
                )
            )
        return 0
    finally:
        if pool is not None:
            pool.close()
        if not args.keep:
            db.drop_database(settings.db_dsn, name)


if __name__ == "__main__":
    sys.exit(main())
