"""The read-only index audit (psra_bench.latency.catalog) on fresh databases: findings, EXPLAIN usage, no writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from psra_bench.exceptions import MeasurementError
from psra_bench.infra import postgres as db
from psra_bench.latency.catalog import OWNERSHIP_NOTE, CatalogAudit, catalog_audit, read_only_transaction
from psra_bench.latency.patterns import QUERY_PATTERNS, generate_params, load_param_source
from psra_bench.measure.explain import explain_analyze

#: Created by the test: an exact copy of a baseline index (the copy is the duplicate: its name sorts
#: last), an index nothing reads, and one whose keys lead with the unique idx_hs_codes_code's.
DUPLICATE = "zz_test_dup_rule_id"
UNUSED = "zz_test_unused_processing_time"
WIDER_THAN_UNIQUE = "zz_test_code_description"


@pytest.fixture(scope="module")
def seeded(make_seeded_database: Callable[..., str]) -> str:
    """A database with the schema, the reference data, 500 verdicts and the three test indexes."""
    dsn = make_seeded_database(500, seed=1, tenants=4)
    with db.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE INDEX {DUPLICATE} ON psra_verdicts (rule_id)")
        conn.execute(f"CREATE INDEX {UNUSED} ON psra_verdicts (processing_time_ms)")
        conn.execute(f"CREATE INDEX {WIDER_THAN_UNIQUE} ON hs_codes (code, description)")
    return dsn


def _state(conn: psycopg.Connection[Any]) -> tuple[list[tuple[Any, ...]], dict[str, int]]:
    """Every index definition and the row count of every table: what a write would change."""
    indexes = conn.execute(
        "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes ORDER BY 1, 2, 3"
    ).fetchall()
    tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
    counts = {}
    for t in tables:
        row = conn.execute(sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(t))).fetchone()
        assert row is not None
        counts[t] = int(row[0])
    return indexes, counts


@pytest.fixture(scope="module")
def audited(seeded: str) -> tuple[CatalogAudit, tuple[Any, Any], tuple[Any, Any]]:
    """The audit of the seeded database, with the database's state before and after it."""
    with db.connect(seeded, autocommit=True) as conn:
        before = _state(conn)
        audit = catalog_audit(conn, seed=3)
        after = _state(conn)
    return audit, before, after


def test_duplicates_and_unused_indexes_are_flagged_and_constraints_are_not(
    audited: tuple[CatalogAudit, Any, Any],
) -> None:
    audit = audited[0]
    by_name = {ix.name: ix for ix in audit.indexes}
    dups = {d.index: d.covered_by for d in audit.duplicates}
    assert dups[DUPLICATE] == "idx_psra_verdicts_rule_id"  # of two identical ones, the later name
    assert "idx_psra_verdicts_rule_id" not in dups
    assert "idx_hs_codes_code" not in dups  # a unique index is never the redundant one
    unused = {ix.name for ix in audit.unused}
    assert UNUSED in unused and UNUSED not in dups and by_name[UNUSED].idx_scan == 0
    for ix in audit.indexes:
        if ix.primary or ix.unique:
            assert ix.name not in unused and ix.name not in dups and ix.kind in ("primary key", "unique")
    assert by_name["psra_verdicts_pkey"].kind == "primary key" and by_name["psra_verdicts_pkey"].constraint
    assert by_name[UNUSED].method == "btree" and by_name[UNUSED].size_bytes > 0
    assert "processing_time_ms" in by_name[UNUSED].definition
    assert audit.read_only and audit.database.startswith("psra_test_")


def test_pattern_usage_comes_from_plain_explain(seeded: str, audited: tuple[CatalogAudit, Any, Any]) -> None:
    audit = audited[0]
    assert [p.name for p in audit.patterns] == list(QUERY_PATTERNS)
    assert all(p.skipped is None for p in audit.patterns), [p.skipped for p in audit.patterns]
    assert {p.name: p.tables for p in audit.patterns}["trade_route_report"] == ("psra_verdicts",)
    used = {ix.name: set(ix.used_by) for ix in audit.indexes}
    for p in audit.patterns:
        assert p.node_types and p.total_cost is not None
        for name in p.index_names:
            assert p.name in used[name]
    for name, patterns in used.items():
        for q in patterns:
            assert name in next(p for p in audit.patterns if p.name == q).index_names
    # With sequential scans priced out, the same EXPLAIN must name an index: the audit reads what the planner says.
    with db.connect(seeded, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        forced = catalog_audit(conn, seed=3)
        params = generate_params("tenant_verdict_history", load_param_source(conn), 1, 3)[0]  # what the audit drew
        plan = explain_analyze(conn, QUERY_PATTERNS["tenant_verdict_history"].sql, params, analyze=False)
    history = next(p for p in forced.patterns if p.name == "tenant_verdict_history")
    assert "idx_psra_verdicts_tenant_id" in history.index_names and history.index_names == plan.index_names
    assert {ix.name for ix in forced.indexes if history.name in ix.used_by} == set(history.index_names)


def test_the_audit_writes_nothing(seeded: str, audited: tuple[CatalogAudit, Any, Any]) -> None:
    _, before, after = audited
    assert before == after  # pg_indexes and every table's row count
    with db.connect(seeded, autocommit=True) as conn:
        with read_only_transaction(conn):  # the transaction catalog_audit runs in refuses a write
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("CREATE INDEX zz_test_never ON psra_verdicts (confidence)")
        with read_only_transaction(conn):
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("DELETE FROM psra_verdicts")
        # ... and leaves the caller's session as it was: outside a transaction, not read-only
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        row = conn.execute("SHOW transaction_read_only").fetchone()
        assert row is not None and row[0] == "off"
        assert _state(conn) == before


def test_a_connection_inside_a_transaction_is_refused(seeded: str) -> None:
    with db.connect(seeded) as conn:  # not autocommit: the SELECT opens a transaction
        conn.execute("SELECT 1")
        with pytest.raises(MeasurementError, match="outside any transaction"):
            catalog_audit(conn)


def test_tables_and_json(audited: tuple[CatalogAudit, Any, Any]) -> None:
    audit = audited[0]
    catalog, plans, findings = audit.tables()
    assert len(catalog.rows) == len(audit.indexes) and "read-only audit" in catalog.title
    assert "idx_scan counts scans since" in catalog.note
    assert len(plans.rows) == len(QUERY_PATTERNS) and "no ANALYZE" in plans.title
    assert findings.note == OWNERSHIP_NOTE and "needs a database psra-bench owns" in findings.note
    assert OWNERSHIP_NOTE.count(".") == 1 and OWNERSHIP_NOTE.endswith(".")
    kinds = {(r[0], r[2]) for r in findings.rows}
    assert ("unused", UNUSED) in kinds and ("duplicate", DUPLICATE) in kinds
    row = next(r for r in catalog.rows if r[1] == DUPLICATE)
    assert "duplicate of idx_psra_verdicts_rule_id" in row[-1]
    assert all(t.text() for t in (catalog, plans, findings))
    data = json.loads(json.dumps(audit.to_dict()))
    assert UNUSED in data["unused"] and data["read_only"] is True and data["note"] == OWNERSHIP_NOTE
    assert {d["index"] for d in data["duplicates"]} >= {DUPLICATE}
    assert data["window"]["server_started"] and data["window"]["description"] == audit.window.describe()


def test_patterns_on_missing_or_empty_tables_are_skipped_with_the_reason(make_database: Callable[..., str]) -> None:
    bare = make_database(schema=False)
    with db.connect(bare, autocommit=True) as conn:
        audit = catalog_audit(conn)
    assert audit.indexes == () and audit.duplicates == ()
    assert all(p.skipped and "does not exist" in p.skipped for p in audit.patterns)
    empty = make_database()  # schema + reference data, no verdicts
    with db.connect(empty, autocommit=True) as conn:
        audit = catalog_audit(conn)
    skipped = {p.name: p.skipped for p in audit.patterns}
    assert skipped["hs_search"] is None and skipped["rules_by_agreement_chapter"] is None
    assert skipped["recent_verdicts"] is not None and "psra_verdicts is empty" in skipped["recent_verdicts"]
