"""EXPLAIN capture against the real PostgreSQL, and the environment fingerprint (no secrets, stable key)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql

from psra_bench.exceptions import MeasurementError, ParameterError
from psra_bench.infra import postgres as db
from psra_bench.infra.redis_client import redis_info
from psra_bench.measure.explain import explain_analyze, plan_nodes
from psra_bench.measure.fingerprint import (
    PG_SETTINGS,
    describe_settings,
    environment_fingerprint,
    git_state,
    machine_key,
    sanitize,
)
from psra_bench.settings import RedisSettings, Settings

LAPTOP = "847130"  # portable automatic data processing machines


@pytest.fixture(scope="module")
def scratch(make_database: Callable[..., str]) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to a database of this module's own (baseline schema + reference data)."""
    with db.connect(make_database(), autocommit=True) as c:
        yield c


# --------------------------------------------------------------------------- EXPLAIN


def test_explain_code_lookup_uses_the_unique_index(conn: psycopg.Connection[Any]) -> None:
    r = explain_analyze(conn, "SELECT * FROM hs_codes WHERE code = %s", (LAPTOP,))
    assert r.uses_index("idx_hs_codes_code") and not r.seq_scan
    assert r.node_types[0] in ("Index Scan", "Bitmap Heap Scan")
    assert r.analyzed and r.actual_rows == 1
    assert r.execution_ms is not None and r.execution_ms >= 0
    assert r.planning_ms is not None and r.planning_ms >= 0
    assert r.shared_hit is not None and r.shared_read is not None and r.shared_hit + r.shared_read >= 1
    assert LAPTOP in r.plan["Plan"].get("Index Cond", "") or any(
        LAPTOP in str(n.get("Index Cond", "")) for n in plan_nodes(r.plan["Plan"])
    )  # planned with the bound value (server-side binding)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    d = json.loads(json.dumps(r.to_dict()))
    assert d["index_names"] == list(r.index_names) and d["seq_scan"] is False


def test_explain_accepts_composed_sql(conn: psycopg.Connection[Any]) -> None:
    query = sql.SQL("SELECT code FROM {} WHERE code = %(code)s").format(sql.Identifier("hs_codes"))
    r = explain_analyze(conn, query, {"code": LAPTOP})
    assert r.query == 'SELECT code FROM "hs_codes" WHERE code = %(code)s'
    assert r.actual_rows == 1 and r.index_names  # an index answers an equality on a unique column


def test_explain_like_without_trigram_index_is_a_seq_scan_and_with_it_is_not(
    scratch: psycopg.Connection[Any],
) -> None:
    query = "SELECT code FROM hs_codes WHERE description LIKE %s"
    before = explain_analyze(scratch, query, ("%horse%",))
    assert before.seq_scan and before.seq_scan_relations == ("hs_codes",) and before.index_names == ()
    scratch.execute("CREATE INDEX idx_hs_codes_description_trgm ON hs_codes USING gin (description gin_trgm_ops)")
    scratch.execute("ANALYZE hs_codes")
    try:
        after = explain_analyze(scratch, query, ("%horse%",))
        assert after.uses_index("idx_hs_codes_description_trgm") and not after.seq_scan
        assert after.actual_rows == before.actual_rows > 0
    finally:
        scratch.execute("DROP INDEX idx_hs_codes_description_trgm")


def test_explain_of_a_write_is_rolled_back(scratch: psycopg.Connection[Any]) -> None:
    def description() -> str:
        row = scratch.execute("SELECT description FROM hs_codes WHERE code = %s", (LAPTOP,)).fetchone()
        assert row is not None
        return str(row[0])

    original = description()
    r = explain_analyze(scratch, "UPDATE hs_codes SET description = %s WHERE code = %s", ("CHANGED", LAPTOP))
    assert "ModifyTable" in r.node_types and r.uses_index("idx_hs_codes_code")
    assert description() == original


def test_explain_inside_an_open_transaction_uses_a_savepoint(make_database: Callable[..., str]) -> None:
    with db.connect(make_database()) as c:  # not autocommit
        c.execute("DELETE FROM hs_codes WHERE code = %s", ("010121",))
        explain_analyze(c, "DELETE FROM hs_codes WHERE code = %s", ("010129",))
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        codes = {r[0] for r in c.execute("SELECT code FROM hs_codes WHERE code IN ('010121', '010129')")}
        assert codes == {"010129"}  # the caller's delete stays, EXPLAIN's delete is undone
        c.rollback()


def test_explain_without_analyze_only_plans(scratch: psycopg.Connection[Any]) -> None:
    r = explain_analyze(scratch, "SELECT * FROM hs_codes WHERE code = %s", (LAPTOP,), analyze=False)
    assert not r.analyzed and r.execution_ms is None and r.shared_hit is None and r.actual_rows is None
    assert r.planning_ms is None and r.total_cost > 0 and r.uses_index("idx_hs_codes_code")


def test_explain_reports_bad_input_in_one_sentence(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(MeasurementError, match=r"EXPLAIN of 'SELECT nope FROM hs_codes' failed: .*nope"):
        explain_analyze(conn, "SELECT nope FROM hs_codes")
    assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is still usable
    with pytest.raises(ParameterError, match="EXPLAIN is added here"):
        explain_analyze(conn, "explain SELECT 1")
    with pytest.raises(ParameterError, match="non-empty"):
        explain_analyze(conn, "  ")
    with pytest.raises(ParameterError, match="query='int'"):
        explain_analyze(conn, 42)  # type: ignore[arg-type]


def test_plan_nodes_walks_depth_first() -> None:
    plan = {
        "Node Type": "Hash Join",
        "Plans": [
            {"Node Type": "Seq Scan", "Relation Name": "a"},
            {"Node Type": "Hash", "Plans": [{"Node Type": "Index Scan", "Index Name": "ix_b"}]},
        ],
    }
    assert [n["Node Type"] for n in plan_nodes(plan)] == ["Hash Join", "Seq Scan", "Hash", "Index Scan"]


# --------------------------------------------------------------------------- fingerprint

DB_SECRET = "s3cr3t-Pw-db"
REDIS_SECRET = "r3dis-Pw-x"
KV_SECRET = "kv-Pw-42"


def _secret_settings() -> Settings:
    """Settings naming unreachable hosts: describing them must not try to connect."""
    return Settings(
        db_dsn=f"postgresql://bench:{DB_SECRET}@db.invalid:5433/psra",
        redis=RedisSettings.from_url(f"redis://:{REDIS_SECRET}@cache.invalid:6390/3"),
    )


def test_fingerprint_never_contains_passwords() -> None:
    params = {
        "dsn": f"postgresql://bench:{DB_SECRET}@db.invalid:5433/psra",
        "redis_password": REDIS_SECRET,
        "nested": {"conninfo": f"host=x password={KV_SECRET}", "urls": [f"redis://u:{REDIS_SECRET}@h:1/0"]},
        "settings": _secret_settings(),
        "bypass_cache": True,
    }
    fp = environment_fingerprint(settings=_secret_settings(), params=params, dataset={"scale": 100, "seed": 7})
    text = json.dumps(fp)
    for secret in (DB_SECRET, REDIS_SECRET, KV_SECRET):
        assert secret not in text
    assert fp["settings"]["db"] == {"embedded": False, "host": "db.invalid", "port": 5433, "dbname": "psra"}
    assert fp["settings"]["redis"]["host"] == "cache.invalid" and fp["settings"]["redis"]["port"] == 6390
    assert fp["params"]["redis_password"] == "***" and fp["params"]["bypass_cache"] is True
    assert fp["dataset"] == {"scale": 100, "seed": 7}
    assert fp["postgres"] is None and fp["redis"] is None


def test_describe_settings_handles_keyword_dsns_and_embedded_servers() -> None:
    kv = describe_settings(Settings(db_dsn=f"host=db.invalid port=6000 dbname=x password={KV_SECRET}"))
    assert kv["db"] == {"embedded": False, "host": "db.invalid", "port": 6000, "dbname": "x"}
    assert kv["redis"] == {"embedded": True}
    assert describe_settings(Settings())["db"] == {"embedded": True}


def test_sanitize_known_answers() -> None:
    assert sanitize({"password": "x", "dbPassword": "y", "token_file": None, "passes": 3}) == {
        "password": "***",
        "dbPassword": "***",
        "token_file": None,
        "passes": 3,
    }
    assert sanitize((Path("/a"), {1})) == ["/a", [1]]
    assert sanitize("redis://:pw@h:1/0") == "redis://:***@h:1/0"


def test_fingerprint_reads_the_servers_it_is_given(
    settings: Settings, conn: psycopg.Connection[Any], redis_client: redis.Redis
) -> None:
    fp = environment_fingerprint(settings=settings, conn=conn, redis_client=redis_client, params={"iterations": 100})
    json.dumps(fp)
    version = db.server_version(conn)
    assert fp["postgres"]["version"] == version
    assert fp["postgres"]["major_version"] == int(version.split(".")[0])
    assert set(fp["postgres"]["settings"]) == set(PG_SETTINGS)
    assert fp["postgres"]["settings"]["jit"] in ("on", "off")
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    info = redis_info(redis_client)
    assert fp["redis"]["version"] == info["version"] and fp["redis"]["maxmemory_policy"] == info["maxmemory_policy"]
    assert fp["machine"]["cpu_count"] >= 1 and fp["machine"]["ram_bytes"] > 0
    assert fp["packages"]["numpy"] and fp["packages"]["psycopg"]
    assert fp["params"] == {"iterations": 100}
    assert fp["machine_key"] == machine_key(fp)


def test_postgres_info_leaves_a_non_autocommit_connection_idle(settings: Settings) -> None:
    assert settings.db_dsn is not None
    with db.connect(settings.db_dsn) as c:
        fp = environment_fingerprint(conn=c)
        assert fp["postgres"]["major_version"] >= 12
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_machine_key_is_stable_and_depends_only_on_comparability() -> None:
    fp = environment_fingerprint(dataset={"scale": 1000, "seed": 1})
    fp["postgres"] = {"major_version": 18, "version": "18.1"}
    fp["redis"] = {"server": "valkey", "version": "9.0.1"}
    key = machine_key(fp)
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    assert machine_key(json.loads(json.dumps(fp))) == key
    assert (
        machine_key(
            environment_fingerprint(dataset={"scale": 1000}) | {"postgres": fp["postgres"], "redis": fp["redis"]}
        )
        == key
    )

    def changed(path: tuple[str, ...], value: object) -> str:
        other = copy.deepcopy(fp)
        target = other
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        return machine_key(other)

    # Not part of comparability: hostname, time, packages, git, parameters, seed, patch versions.
    assert changed(("machine", "hostname"), "elsewhere") == key
    assert changed(("captured_at",), "1999-01-01T00:00:00+00:00") == key
    assert changed(("packages", "numpy"), "0.0.1") == key
    assert changed(("git",), {"commit": "0" * 40, "dirty": True}) == key
    assert changed(("params",), {"iterations": 5}) == key
    assert changed(("dataset", "seed"), 99) == key
    assert changed(("postgres", "version"), "18.9") == key
    assert changed(("redis", "version"), "9.0.7") == key
    assert changed(("machine", "ram_bytes"), fp["machine"]["ram_bytes"] + 50 * 2**20) == key
    # Part of it: hardware, OS, server major versions, dataset scale.
    assert changed(("machine", "cpu_usable"), 64) != key
    assert changed(("machine", "cpu_model"), "Another CPU") != key
    assert changed(("machine", "ram_bytes"), fp["machine"]["ram_bytes"] + 4 * 2**30) != key
    assert changed(("machine", "os", "distro_version"), "0.1") != key
    assert changed(("postgres", "major_version"), 15) != key
    assert changed(("redis", "version"), "8.0.1") != key
    assert changed(("dataset", "scale"), 10) != key


def _git_cmd(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_git_state_reads_commit_and_dirty_flag(tmp_path: Path) -> None:
    assert git_state(tmp_path) is None  # not a repository: tolerated
    _git_cmd(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    _git_cmd(tmp_path, "add", "a.txt")
    _git_cmd(tmp_path, "commit", "-q", "-m", "first")
    state = git_state(tmp_path)
    assert state is not None
    assert state["commit"] == _git_cmd(tmp_path, "rev-parse", "HEAD") and state["dirty"] is False
    (tmp_path / "a.txt").write_text("two\n")
    assert git_state(tmp_path)["dirty"] is True  # type: ignore[index]
