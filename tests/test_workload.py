"""Index advice from a workload: capture from pg_stat_statements, candidates, screening, verification, migration.

The workload needs an index neither the baseline schema nor the spec's 26 has: verdicts of one
status in a recent window, newest first — ``psra_verdicts (status, created_at)``. The tests run on
the session's server pair: the embedded PostgreSQL 18 (pg_stat_statements preloaded, no HypoPG:
screening builds candidates on the owned database) or the configured one (PostgreSQL 15 with
HypoPG when installed; without pg_stat_statements preloaded there, capture's refusal is checked
and the same query is given as a plain SQL file).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from psra_bench.cli import cli
from psra_bench.infra import postgres as db
from psra_bench.settings import Settings
from psra_bench.workload.dbinfo import extension_state, preloaded
from psra_bench.workload.shapes import analyze
from tests.helpers import cli_env

#: The application's query: how many verdicts of one status since a date (psycopg sends $1, $2).
RECENT_BY_STATUS = "SELECT count(*) FROM psra_verdicts WHERE status = %s AND created_at >= %s"
STATUSES = ("qualified", "not_qualified", "insufficient_data")
#: A second query the baseline's idx_psra_verdicts_tenant_id already serves.
BY_TENANT = "SELECT count(*) FROM psra_verdicts WHERE tenant_id = %s"


def run(env: dict[str, str], *args: str) -> Result:
    """``psra-bench args...`` in-process."""
    return CliRunner().invoke(cli, list(args), env=env)


def _application(dsn: str, calls: int) -> None:
    """Run the workload as the application would, with its own values (which capture must not store)."""
    with db.connect(dsn, autocommit=True) as conn:
        (start,) = conn.execute("SELECT max(created_at) - interval '20 days' FROM psra_verdicts").fetchone() or (None,)
        tenants = [r[0] for r in conn.execute("SELECT DISTINCT tenant_id FROM psra_verdicts LIMIT 5").fetchall()]
        for i in range(calls):
            conn.execute("SET application_name = 'psra_wl_secret'")  # a utility statement keeps its constant there
            conn.execute(RECENT_BY_STATUS, (STATUSES[i % 3], start)).fetchall()
            conn.execute(BY_TENANT, (tenants[i % len(tenants)],)).fetchall()


@pytest.fixture(scope="module")
def advice_db(make_seeded_database: Callable[..., str]) -> str:
    """A seeded database psra-bench owns, after the application ran its workload on it."""
    dsn = make_seeded_database(20_000, seed=2, tenants=20)
    with db.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")
        if preloaded(conn, "pg_stat_statements"):
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    _application(dsn, 30)
    return dsn


def _capture_or_sql(env: dict[str, str], dsn: str, tmp_path: Path) -> tuple[Path, str]:
    """The workload file: captured from pg_stat_statements, or (server without it) the query as a .sql file."""
    with db.connect(dsn, autocommit=True) as conn:
        has_pgss = preloaded(conn, "pg_stat_statements")
    out = tmp_path / "workload.json"
    result = run(env, "workload", "capture", "--top", "20", "--min-calls", "5", "--out", str(out))
    if has_pgss:
        assert result.exit_code == 0, result.output
        return out, "pg_stat_statements"
    assert result.exit_code == 2
    assert "shared_preload_libraries" in result.output and result.output.count("\n") == 1, result.output
    sql = tmp_path / "workload.sql"
    sql.write_text(
        "SELECT count(*) FROM psra_verdicts\n WHERE status = $1 AND created_at >= $2;\n"
        "SELECT count(*) FROM psra_verdicts WHERE tenant_id = $1;\n"
    )
    return sql, "sql-file"


def _psql(dsn: str, path: Path) -> None:
    """Apply a migration file as the README says: psql -v ON_ERROR_STOP=1 -f FILE."""
    psql = shutil.which("psql")
    assert psql is not None, "psql is needed to apply the migration pair"
    done = subprocess.run([psql, dsn, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _indexes(dsn: str) -> set[str]:
    with db.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'psra_verdicts'").fetchall()
    return {str(r[0]) for r in rows}


def test_advice_finds_measures_and_migrates(advice_db: str, settings: Settings, tmp_path: Path) -> None:
    """Capture -> screening ranks (status, created_at) first -> measured faster with a CI -> psql applies the pair."""
    env = cli_env(settings, advice_db, home=tmp_path / "home")
    workload, source = _capture_or_sql(env, advice_db, tmp_path)
    if source == "pg_stat_statements":
        doc = json.loads(workload.read_text())
        texts = {q["query"]: q for q in doc["queries"]}
        ours = [q for t, q in texts.items() if "status = $1" in t and "created_at >= $2" in t]
        assert len(ours) == 1 and ours[0]["calls"] >= 30 and ours[0]["mean_ms"] > 0, doc["queries"]
        assert not any(s in workload.read_text() for s in (*STATUSES, "psra_wl_secret")), "capture stored a value"
        assert any("application_name" in s["query"] for s in doc["skipped"]), doc["skipped"]
        assert doc["fingerprint"] and "pg_stats" in doc["values"]
    out = tmp_path / "advice"
    before = _indexes(advice_db)
    result = run(env, "indexes", "advise", "--workload", str(workload), "--verify", "--rounds", "2",
                 "--iterations", "15", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _indexes(advice_db) == before, "screening or verification left an index behind"
    advice = json.loads((out / "advice.json").read_text())
    with db.connect(advice_db, autocommit=True) as conn:
        hypopg = extension_state(conn, "hypopg") == "installed"
    assert advice["path"] == ("hypopg" if hypopg else "build"), advice["path_note"]
    assert "HypoPG" in advice["path_note"]
    adds = [ix for ix in advice["indexes"] if ix["action"] == "add"]
    first = min(adds, key=lambda ix: ix["predicted"]["rank"])
    assert first["predicted"]["rank"] == 1
    assert first["definition"].endswith("USING btree (status, created_at)"), first["definition"]
    assert advice["candidates"][0]["definition"] == first["definition"]
    (qid,) = [q["query_id"] for q in advice["queries"] if "status = $1" in q["query"]]
    measured = first["measured"]["queries"][qid]
    assert measured["speedup"] > 1 and measured["ci"][0] > 1 and measured["p"] < 0.05, measured
    table = advice["predicted_vs_measured"][qid]
    assert table["predicted_speedup"] > 1 and table["measured_speedup"] == measured["speedup"]
    insert = advice["insert"]
    assert insert is not None and insert["ratio"] > 0 and len(insert["ratio_ci"]) == 2
    assert advice["fingerprint"] and advice["queries"][0]["calls"] >= 1
    kept = {ix["name"]: ix["action"] for ix in advice["indexes"] if ix["origin"] == "existing"}
    assert kept["psra_verdicts_pkey"] == "keep" and kept["idx_psra_verdicts_tenant_id"] == "keep"
    # the migration pair applies with psql, and the down file restores the indexes found
    _psql(advice_db, out / "recommended_indexes.up.sql")
    after = _indexes(advice_db)
    assert first["name"] in after
    assert all(ix["name"] not in after for ix in advice["indexes"] if ix["action"] == "drop")
    _psql(advice_db, out / "recommended_indexes.down.sql")
    assert _indexes(advice_db) == before


@pytest.fixture(scope="module")
def team_db(make_team_database: Callable[[], str]) -> str:
    """A database psra-bench does not own: its verdicts and a table of the team's, no claim, no extensions."""
    return make_team_database()


def _one_sentence(result: Result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    return result.output


def test_bad_input_is_one_sentence(team_db: str, settings: Settings, tmp_path: Path) -> None:
    """--verify on a database psra-bench does not own; no HypoPG to screen it read-only; a bad workload file."""
    env = cli_env(settings, team_db, home=tmp_path / "home")
    sql = tmp_path / "w.sql"
    sql.write_text("SELECT count(*) FROM psra_verdicts WHERE status = $1;\n")
    out = tmp_path / "out"
    refused = _one_sentence(run(env, "indexes", "advise", "--workload", str(sql), "--verify", "--out", str(out)))
    assert "will not write into database" in refused and "--verify" in refused
    assert not (out / "advice.json").exists()
    with db.connect(team_db, autocommit=True) as conn:
        hypopg = extension_state(conn, "hypopg")
    result = run(env, "indexes", "advise", "--workload", str(sql), "--out", str(out))
    if hypopg == "installed":  # another run created it here: screening is read-only, so it may advise
        assert result.exit_code == 0, result.output
    else:
        sentence = _one_sentence(result)
        assert "HypoPG is" in sentence and "not psra-bench's" in sentence, sentence
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    assert "workload file whose format" in _one_sentence(
        run(env, "indexes", "advise", "--workload", str(bad), "--out", str(out))
    )


def test_pg_stat_statements_missing_or_empty(make_database: Callable[..., str], settings: Settings,
                                             tmp_path: Path) -> None:  # fmt: skip
    """Capture says how to enable pg_stat_statements, or that it holds nothing of this database yet."""
    dsn = make_database()
    env = cli_env(settings, dsn, home=tmp_path / "home")
    # its schema and reference data were loaded by statements, but none was called a million times
    result = run(env, "workload", "capture", "--min-calls", "1000000", "--out", str(tmp_path / "w.json"))
    sentence = _one_sentence(result)
    with db.connect(dsn, autocommit=True) as conn:
        loaded = preloaded(conn, "pg_stat_statements")
    if loaded:  # psra-bench may claim the fresh database, so it created the extension
        assert "holds no statement" in sentence and "--min-calls" in sentence, sentence
    else:
        assert "shared_preload_libraries" in sentence and "CREATE EXTENSION pg_stat_statements" in sentence
        if settings.embedded_db:  # psra-bench's own server, started before it preloaded the library
            from psra_bench.exceptions import MeasurementError
            from psra_bench.workload.capture import capture
            from psra_bench.workload.params import CaptureParams

            with db.connect(dsn, autocommit=True) as conn, pytest.raises(MeasurementError, match="services down"):
                capture(conn, CaptureParams.NOTEBOOK, embedded=True)


def test_unparsable_and_unplannable_queries_are_listed(advice_db: str, settings: Settings, tmp_path: Path) -> None:
    """A query the parser rejects and one EXPLAIN rejects are skipped with the reason; the rest is advised."""
    from psra_bench.workload.advise import advise
    from psra_bench.workload.model import Workload, WorkloadQuery, query_id
    from psra_bench.workload.params import AdviceParams

    good = "SELECT count(*) FROM psra_verdicts WHERE status = $1 AND created_at >= $2"
    unplannable = "SELECT no_such_column FROM psra_verdicts WHERE status = $1"
    queries = (
        WorkloadQuery(query_id(good), good, 10, 5.0, 0.5, 10),
        WorkloadQuery(query_id(unplannable), unplannable, 3, 1.0, 0.3, 0),
        WorkloadQuery("f00", "SELEC count(*) FRO psra_verdicts", 2, 1.0, 0.5, 2),
    )
    live: Any = settings.replace(db_dsn=advice_db)
    advice = advise(live, Workload("pg_stat_statements", "x", "now", queries), AdviceParams.QUICK)
    reasons = {s["query_id"]: s["reason"] for s in advice.skipped}
    assert "parser rejects" in reasons["f00"] and "syntax error" in reasons["f00"]
    assert (
        reasons[query_id(unplannable)].startswith("EXPLAIN failed: column")
        and "no_such_column" in reasons[query_id(unplannable)]
    )
    assert advice.indexes[0].action == "add" and advice.indexes[0].measured is None
    status = {q["query_id"]: q["status"] for q in advice.queries}
    assert status == {query_id(good): "planned", query_id(unplannable): "skipped", "f00": "skipped"}


def test_shapes_read_columns_with_postgres_parser() -> None:
    """WHERE, JOIN and ORDER BY columns through aliases; placeholders bound to columns, LIMIT and OFFSET."""
    columns = {"psra_verdicts": ["id", "tenant_id", "status", "created_at"], "tenants": ["id", "name"]}
    shape = analyze(
        "SELECT v.id FROM psra_verdicts v JOIN tenants t ON t.id = v.tenant_id "
        "WHERE v.status IN ($1, $2) AND created_at >= $3::timestamptz AND t.name <> '$9' "
        "ORDER BY v.created_at DESC LIMIT $4 OFFSET $5",
        columns,
    )
    uses = {(u.table, u.column, u.clause, u.how) for u in shape.uses}
    assert ("psra_verdicts", "tenant_id", "join", "eq") in uses and ("tenants", "id", "join", "eq") in uses
    assert ("psra_verdicts", "status", "where", "eq") in uses and (
        "psra_verdicts",
        "created_at",
        "where",
        "range",
    ) in uses
    assert ("psra_verdicts", "created_at", "order", "desc") in uses
    assert shape.placeholders == {1, 2, 3, 4, 5}  # '$9' is a string, not a placeholder
    assert [shape.bindings[n].role for n in (1, 3, 4, 5)] == ["column", "column", "limit", "offset"]
    assert shape.bindings[3].column == "created_at" and shape.unbound() == []


def test_capture_from_a_postgres_log(advice_db: str, server_settings: Settings, settings: Settings,
                                     tmp_path: Path) -> None:  # fmt: skip
    """--log reads statements logged with log_min_duration_statement = 0: shapes and times, never the values."""
    log = server_settings.home / "postgres" / "pgdata" / "server.log"
    if not server_settings.embedded_db or not log.is_file():
        pytest.skip("the configured server's log file is not known to the test (the embedded server's is)")
    with db.connect(advice_db, autocommit=True) as conn:
        conn.execute("SET log_min_duration_statement = 0")
        (start,) = conn.execute("SELECT min(created_at) FROM psra_verdicts").fetchone() or (None,)
        for i in range(6):
            conn.execute(RECENT_BY_STATUS, (STATUSES[i % 3], start)).fetchall()
        conn.execute("SELECT count(*) FROM psra_verdicts WHERE status = 'qualified' AND confidence > 0.5").fetchall()
    env = cli_env(settings, advice_db, home=tmp_path / "home")
    out = tmp_path / "w.json"
    result = run(env, "workload", "capture", "--log", str(log), "--min-calls", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    text = out.read_text()
    doc = json.loads(text)
    assert doc["source"] == "log"
    ours = [q for q in doc["queries"] if "status = $1 AND created_at >= $2" in q["query"]]
    assert ours and ours[0]["calls"] >= 6 and ours[0]["total_ms"] > 0
    literal = [q for q in doc["queries"] if "confidence > $2" in q["query"]]
    assert literal, "a statement's constants are replaced by placeholders"
    assert not any(s in text for s in STATUSES) and "0.5" not in text.replace("0.5 ms", "")


def test_writes_weigh_and_updates_bind_their_set_values() -> None:
    """An UPDATE's SET placeholders draw values of the column they set; an INSERT names the table it writes."""
    columns = {"psra_verdicts": ["id", "status", "notes"]}
    update = analyze("UPDATE psra_verdicts SET status = $1, notes = $2 WHERE id = $3", columns)
    assert update.kind == "update" and update.writes == "psra_verdicts" and update.unbound() == []
    assert [update.bindings[n].column for n in (1, 2, 3)] == ["status", "notes", "id"]
    insert = analyze("INSERT INTO psra_verdicts (id, status) VALUES ($1, $2)", columns)
    assert insert.kind == "insert" and insert.writes == "psra_verdicts" and insert.uses == []


def test_write_penalty_and_size_budget_hold_an_index_back(advice_db: str, settings: Settings) -> None:
    """The same read query: picked alone, not picked when writes to its table dominate or the budget is too small."""
    from psra_bench.workload.advise import advise
    from psra_bench.workload.model import Workload, WorkloadQuery, query_id
    from psra_bench.workload.params import AdviceParams

    read = "SELECT count(*) FROM psra_verdicts WHERE status = $1 AND created_at >= $2"
    write = "INSERT INTO psra_verdicts (id, status) VALUES ($1, $2)"
    live: Any = settings.replace(db_dsn=advice_db)

    def added(writes: int, **params: Any) -> list[str]:
        queries = [WorkloadQuery(query_id(read), read, 100, 50.0, 0.5, 100)]
        if writes:
            queries.append(WorkloadQuery(query_id(write), write, writes, 10.0, 0.01, writes))
        advice = advise(live, Workload("sql-file", None, "now", tuple(queries)), AdviceParams.QUICK.replace(**params))
        status = {q["query_id"]: q["status"] for q in advice.queries}
        assert status[query_id(read)] == "planned" and (not writes or status[query_id(write)] == "writes only")
        return [ix.name for ix in advice.indexes if ix.action == "add"]

    assert added(0) == ["idx_psra_verdicts_status_created_at"]
    assert added(100_000, write_penalty=50.0) == []
    assert added(0, budget_mb=0.01) == []
