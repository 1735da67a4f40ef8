"""The index migration: 20 -> 46 -> 20 with the spec's names and types, idempotence, recorded
state, verification, and recovery from a cancelled build and from a killed migration process.

Each test works on databases it creates (``make_database``), so it can apply and roll back freely.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import cli_env

from psra_bench import constants
from psra_bench.db.migrate import (
    MIGRATIONS,
    migrate_down,
    migrate_up,
    migration_indexes,
    migration_lock_key,
    migration_status,
    resolve_migrations,
    verify,
)
from psra_bench.exceptions import DatabaseConnectionError, MigrationError
from psra_bench.infra import postgres as db
from psra_bench.settings import Settings

MIGRATION = "0001_performance_indexes"

#: The spec's 26 new indexes (section 2), in the spec's order: name -> (table, "USING ..." part).
SPEC_INDEXES: dict[str, tuple[str, str]] = {
    # hs_codes (6)
    "idx_hs_codes_description_trgm": ("hs_codes", "gin (description gin_trgm_ops)"),
    "idx_hs_codes_code_description": ("hs_codes", "btree (code, description)"),
    "idx_hs_codes_parent": ("hs_codes", "btree (parent) WHERE (parent IS NOT NULL)"),
    "idx_hs_codes_section_level": ("hs_codes", "btree (section, level) WHERE (section IS NOT NULL)"),
    "idx_hs_codes_version": ("hs_codes", "btree (version)"),
    "idx_hs_codes_chapter_level": ("hs_codes", "btree (chapter, level) WHERE (chapter IS NOT NULL)"),
    # psra_rules (7)
    "idx_psra_rules_agreement_hs_chapter": ("psra_rules", "btree (agreement_code, hs_chapter)"),
    "idx_psra_rules_hs_hierarchy": ("psra_rules", "btree (hs_chapter, hs_heading, hs_subheading)"),
    "idx_psra_rules_effective_dates": ("psra_rules", "btree (effective_from, effective_to)"),
    "idx_psra_rules_active": ("psra_rules", "btree (effective_from) WHERE (effective_to IS NULL)"),
    "idx_psra_rules_priority": ("psra_rules", "btree (priority DESC)"),
    "idx_psra_rules_jurisdictions": ("psra_rules", "gin (jurisdictions)"),
    "idx_psra_rules_payload": ("psra_rules", "gin (payload)"),
    # psra_verdicts (13)
    "idx_psra_verdicts_created_at_desc": ("psra_verdicts", "btree (created_at DESC)"),
    "idx_psra_verdicts_tenant_created": ("psra_verdicts", "btree (tenant_id, created_at DESC)"),
    "idx_psra_verdicts_tenant_status": ("psra_verdicts", "btree (tenant_id, status)"),
    "idx_psra_verdicts_agreement_hs": ("psra_verdicts", "btree (agreement_code, hs_subheading)"),
    "idx_psra_verdicts_trade_route": ("psra_verdicts", "btree (export_country, import_country)"),
    "idx_psra_verdicts_effective_date": ("psra_verdicts", "btree (effective_date)"),
    "idx_psra_verdicts_tenant_effective": ("psra_verdicts", "btree (tenant_id, effective_date DESC)"),
    "idx_psra_verdicts_input_hash": ("psra_verdicts", "btree (input_hash)"),
    "idx_psra_verdicts_citations": ("psra_verdicts", "gin (citations)"),
    "idx_psra_verdicts_reasons": ("psra_verdicts", "gin (reasons)"),
    "idx_psra_verdicts_confidence": ("psra_verdicts", "btree (confidence DESC)"),
    "idx_psra_verdicts_status_confidence": ("psra_verdicts", "btree (status, confidence DESC)"),
    "idx_psra_verdicts_lineage_required": ("psra_verdicts", "btree (lineage_required) WHERE (lineage_required = true)"),
}

#: The spec's "existing indexes preserved" (9 of the baseline's 20).
SPEC_PRESERVED = {
    "idx_hs_codes_chapter", "idx_hs_codes_code", "idx_hs_codes_level",
    "idx_psra_rules_agreement_code", "idx_psra_rules_rule_id",
    "idx_psra_verdicts_evaluation_id", "idx_psra_verdicts_request_id", "idx_psra_verdicts_rule_id",
    "idx_psra_verdicts_tenant_id",
}  # fmt: skip

#: Indexes per table after the migration (46 in all).
MIGRATED_PER_TABLE = {"hs_codes": 10, "psra_rules": 10, "psra_verdicts": 18, "tenants": 1, "suppliers": 2,
                      "supplier_declarations": 2, "erp_outbox": 3}  # fmt: skip


def _indexes(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'").fetchall()
    return {r[0]: r[1] for r in rows}


def _invalid(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        """SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           WHERE NOT (i.indisvalid AND i.indisready) ORDER BY 1"""
    ).fetchall()
    return [r[0] for r in rows]


def _recorded(conn: psycopg.Connection[Any]) -> tuple[str, str] | None:
    row = conn.execute(
        "SELECT state, checksum FROM psra_bench.schema_migrations WHERE name = %s", (MIGRATION,)
    ).fetchone()
    return None if row is None else (row[0], row[1])


@pytest.fixture(scope="module")
def seeded_dsn(make_seeded_database: Callable[..., str]) -> str:
    """A database with 60k verdicts, so index builds on psra_verdicts take a moment."""
    dsn = make_seeded_database(60_000, seed=3)
    return dsn


# --------------------------------------------------------------------------- names


def test_known_migrations_and_their_indexes() -> None:
    assert MIGRATIONS == (MIGRATION,) == (constants.PERFORMANCE_MIGRATION,)
    specs = migration_indexes(MIGRATION)
    assert [s.name for s in specs] == list(SPEC_INDEXES)  # the spec's 26, in its order
    assert [s.table for s in specs] == [t for t, _ in SPEC_INDEXES.values()]
    assert all("CONCURRENTLY" in s.create and s.drop.startswith("DROP INDEX CONCURRENTLY") for s in specs)


def test_resolve_migrations() -> None:
    assert resolve_migrations(None) == [MIGRATION]
    assert resolve_migrations("all") == [MIGRATION]
    assert resolve_migrations(MIGRATION) == [MIGRATION]
    with pytest.raises(MigrationError) as err:
        resolve_migrations("nope")
    message = str(err.value)
    assert err.value.migration == "nope"
    assert "nope" in message and MIGRATION in message  # the bad name and what is allowed
    assert "\n" not in message


# --------------------------------------------------------------------------- the round trip


def test_round_trip_20_46_20(make_database: Callable[..., str]) -> None:
    dsn = make_database()
    with db.connect(dsn, autocommit=True) as conn:
        baseline = _indexes(conn)
        assert db.index_count(conn) == len(baseline) == constants.BASELINE_INDEX_COUNT == 20
        assert SPEC_PRESERVED <= set(baseline)
        assert not set(SPEC_INDEXES) & set(baseline)
        st = migration_status(conn)
        assert (st.state, st.recorded, st.present, st.invalid) == ("not applied", None, [], [])
        assert st.missing == list(SPEC_INDEXES) and st.index_count == 20

        progress: list[tuple[str, str, float]] = []
        up = migrate_up(dsn, progress=lambda kind, name, s: progress.append((kind, name, s)))
        assert up["migration"] == MIGRATION
        assert up["created"] == list(SPEC_INDEXES)
        assert up["repaired"] == [] and up["already"] == []
        assert up["index_count"] == db.index_count(conn) == constants.MIGRATED_INDEX_COUNT == 46
        assert [(k, n) for k, n, _ in progress] == [("create", n) for n in SPEC_INDEXES]
        assert all(s >= 0 for _, _, s in progress) and set(up["seconds"]) == set(SPEC_INDEXES)

        after = _indexes(conn)
        assert set(after) == set(baseline) | set(SPEC_INDEXES)
        assert {n: after[n] for n in baseline} == baseline  # the old 20 are untouched
        for name, (table, using) in SPEC_INDEXES.items():
            assert after[name] == f"CREATE INDEX {name} ON public.{table} USING {using}"
        assert _invalid(conn) == []

        st = migration_status(conn)
        assert (st.state, st.recorded, st.missing, st.invalid) == ("applied", "applied", [], [])
        assert st.present == list(SPEC_INDEXES) and st.index_count == 46
        recorded = _recorded(conn)
        assert recorded is not None and recorded[0] == "applied" and len(recorded[1]) == 16

        # Idempotent: a second up builds nothing.
        again = migrate_up(dsn)
        assert again["created"] == [] and again["repaired"] == []
        assert again["already"] == list(SPEC_INDEXES) and again["index_count"] == 46
        assert _indexes(conn) == after

        dropped: list[str] = []
        down = migrate_down(dsn, progress=lambda kind, name, s: dropped.append(name))
        assert down["dropped"] == list(reversed(SPEC_INDEXES)) == dropped
        assert down["index_count"] == db.index_count(conn) == 20
        assert _indexes(conn) == baseline
        assert _recorded(conn) is None
        st = migration_status(conn)
        assert (st.state, st.recorded) == ("not applied", None)

        # Down again: a no-op.
        assert migrate_down(dsn) == {
            "migration": MIGRATION,
            "dropped": [],
            "kept": [],
            "waited_seconds": 0.0,
            "index_count": 20,
        }
        assert _indexes(conn) == baseline


def test_partial_state_is_reported_and_completed(make_database: Callable[..., str]) -> None:
    dsn = make_database()
    some = ["idx_hs_codes_version", "idx_psra_verdicts_input_hash"]
    with db.connect(dsn, autocommit=True) as conn:
        for spec in migration_indexes():
            if spec.name in some:
                conn.execute(spec.create.encode())
        st = migration_status(conn)
        assert st.state == "partial" and st.present == [n for n in SPEC_INDEXES if n in some]
        assert len(st.missing) == 24 and st.index_count == 22
        up = migrate_up(dsn)
        assert up["already"] == st.present and up["created"] == st.missing and up["index_count"] == 46
        assert migration_status(conn).state == "applied"


def test_verify_tables(make_database: Callable[..., str]) -> None:
    dsn = make_database()
    migrate_up(dsn)
    with db.connect(dsn, autocommit=True) as conn:
        tables = {t.title: t for t in verify(conn)}
    assert list(tables) == [
        "Index count (schema public)",
        "Index size per table",
        "Index usage",
        "Unused indexes (candidates for removal)",
        "Invalid indexes (left by an interrupted CREATE INDEX CONCURRENTLY)",
    ]
    count = tables["Index count (schema public)"]
    assert count.columns == ["schemaname", "index_count"] and count.rows == [("public", 46)]
    sizes = tables["Index size per table"]
    assert sizes.columns[:2] == ["tablename", "num_indexes"]
    assert {r[0]: r[1] for r in sizes.rows} == MIGRATED_PER_TABLE
    usage = tables["Index usage"]
    assert len(usage.rows) == 46 and {r[1] for r in usage.rows} >= set(SPEC_INDEXES)
    unused = tables["Unused indexes (candidates for removal)"]
    assert not any(r[1].endswith("_pkey") for r in unused.rows)
    assert tables["Invalid indexes (left by an interrupted CREATE INDEX CONCURRENTLY)"].rows == []


# --------------------------------------------------------------------------- bad input


def test_up_and_down_refuse_a_database_without_the_schema(make_database: Callable[..., str]) -> None:
    dsn = make_database(schema=False)
    for fn in (migrate_up, migrate_down):
        with pytest.raises(MigrationError) as err:
            fn(dsn)
        assert "schema is missing" in str(err.value) and "seed" in str(err.value)


def test_unreachable_database_names_host_and_port() -> None:
    with pytest.raises(DatabaseConnectionError) as err:
        migrate_up("postgresql://psra:s3cr3t@127.0.0.1:1/psra")
    message = str(err.value)
    assert "127.0.0.1:1" in message and "s3cr3t" not in message
    assert (err.value.host, err.value.port) == ("127.0.0.1", 1)


# --------------------------------------------------------------------------- recovery


@contextlib.contextmanager
def _writers_held(dsn: str, table: str = "psra_verdicts") -> Iterator[None]:
    """Hold a writer's lock on ``table`` in an open transaction until the block ends.

    CREATE INDEX CONCURRENTLY commits the new (INVALID) index's catalog entry first, then waits for
    every transaction holding a write lock on its table. While this block runs, the migration's first
    build on ``table`` therefore stops at a known point, "waiting for writers before build", with its
    INVALID index already in the catalog: no race with how fast the machine builds indexes.
    """
    with db.connect(dsn) as holder:  # not autocommit: the lock lives until the transaction ends
        holder.execute(f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE")
        try:
            yield
        finally:
            holder.rollback()


def _build_waiting_for_writers(conn: psycopg.Connection[Any], table: str = "psra_verdicts") -> tuple[int, str]:
    """(pid, index) of the CREATE INDEX CONCURRENTLY on ``table`` that waits for writers; waits up to 60 s."""
    deadline = time.monotonic() + 60
    while True:
        row = conn.execute(
            """SELECT p.pid, c.relname FROM pg_stat_progress_create_index p JOIN pg_class c ON c.oid = p.index_relid
               WHERE p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND p.relid = %s::regclass AND p.phase = 'waiting for writers before build'""",
            (table,),
        ).fetchone()
        if row is not None:
            return int(row[0]), str(row[1])
        assert time.monotonic() < deadline, f"no CREATE INDEX CONCURRENTLY on {table} reached the writers wait"
        time.sleep(0.01)  # polling for a state, not racing one: the build cannot pass this point while held


@pytest.mark.slow
def test_cancelled_build_leaves_invalid_index_that_up_repairs(seeded_dsn: str) -> None:
    def run(errors: list[BaseException]) -> None:
        try:
            migrate_up(seeded_dsn)
        except BaseException as e:  # handed to the test's thread
            errors.append(e)

    migrate_down(seeded_dsn)
    first_verdicts_index = next(s.name for s in migration_indexes() if s.table == "psra_verdicts")
    with db.connect(seeded_dsn, autocommit=True) as conn:
        errors: list[BaseException] = []
        with _writers_held(seeded_dsn):
            worker = threading.Thread(target=run, args=(errors,), daemon=True)
            worker.start()
            pid, held = _build_waiting_for_writers(conn)
            assert held == first_verdicts_index
            conn.execute("SELECT pg_cancel_backend(%s)", (pid,))
            worker.join(60)
            assert not worker.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], MigrationError), errors
        err = errors[0]
        assert (err.migration, err.index) == (MIGRATION, held)
        assert "cancelled" in str(err) and "migrate up" in str(err)
        invalid = [held]

        st = migration_status(conn)
        assert (st.state, st.recorded, st.invalid) == ("needs repair", "applying", invalid)
        assert st.present == [n for n, (t, _) in SPEC_INDEXES.items() if t != "psra_verdicts"]
        assert _invalid(conn) == invalid
        invalid_table = [t for t in verify(conn) if t.title.startswith("Invalid")][0]
        assert [r[0] for r in invalid_table.rows] == invalid

        up = migrate_up(seeded_dsn)
        assert up["repaired"] == invalid
        assert up["index_count"] == 46
        assert set(up["created"]) | set(up["already"]) | set(up["repaired"]) == set(SPEC_INDEXES)
        assert _invalid(conn) == []
        st = migration_status(conn)
        assert (st.state, st.recorded) == ("applied", "applied")
        assert {n: d for n, d in _indexes(conn).items() if n in SPEC_INDEXES} == {
            n: f"CREATE INDEX {n} ON public.{t} USING {u}" for n, (t, u) in SPEC_INDEXES.items()
        }


_MIGRATE_IN_CHILD = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal, even if our parent ignores it
from psra_bench.db.migrate import migrate_up
migrate_up(sys.argv[1], progress=lambda kind, name, s: print(name, flush=True))
"""


@pytest.mark.slow
def test_killed_migration_process_is_completed_by_the_next_up(seeded_dsn: str) -> None:
    migrate_down(seeded_dsn)
    before_verdicts = [n for n, (t, _) in SPEC_INDEXES.items() if t != "psra_verdicts"]
    with db.connect(seeded_dsn, autocommit=True) as conn:
        with _writers_held(seeded_dsn):
            with subprocess.Popen(
                [sys.executable, "-c", _MIGRATE_IN_CHILD, seeded_dsn],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ) as child:
                pid, held = _build_waiting_for_writers(conn)  # mid-way: every index before the verdicts' is built
                child.kill()  # kill -9 while its backend waits inside the first verdicts build
                child.wait(60)
        # Released: the orphaned backend finishes the statement it was running, then notices its client is gone.
        deadline = time.monotonic() + 60
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() != (0,):
            assert time.monotonic() < deadline, "the killed migration's backend did not end"
            time.sleep(0.05)
        st = migration_status(conn)
        assert (st.state, st.recorded, st.invalid) == ("partial", "applying", [])
        assert st.present == [*before_verdicts, held]

        up = migrate_up(seeded_dsn)
        assert up["already"] == st.present and up["created"] == st.missing and up["repaired"] == []
        assert up["index_count"] == db.index_count(conn) == 46
        assert migration_status(conn).state == "applied" and _invalid(conn) == []


@pytest.mark.slow
def test_ctrl_c_during_a_build_is_reported_and_repaired(seeded_dsn: str) -> None:
    """Ctrl-C in `migrate up`: psycopg cancels the running build, the next status shows it, the next up fixes it."""
    migrate_down(seeded_dsn)
    with db.connect(seeded_dsn, autocommit=True) as conn:
        with _writers_held(seeded_dsn):
            with subprocess.Popen(
                [sys.executable, "-c", _MIGRATE_IN_CHILD, seeded_dsn],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            ) as child:
                _, held = _build_waiting_for_writers(conn)
                child.send_signal(signal.SIGINT)
                _, stderr = child.communicate(timeout=60)
        assert child.returncode != 0 and "KeyboardInterrupt" in stderr
        st = migration_status(conn)
        assert (st.state, st.recorded, st.invalid) == ("needs repair", "applying", [held])
        assert _invalid(conn) == [held]

        up = migrate_up(seeded_dsn)
        assert up["repaired"] == [held] and up["index_count"] == 46
        assert migration_status(conn).state == "applied" and _invalid(conn) == []


# --------------------------------------------------------------------------- concurrency and ownership


def _start_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "psra_bench", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _until_waiting(child: subprocess.Popen[str]) -> list[str]:
    """Read the child's stderr up to its "waiting for another `migrate` run" line (it blocks there)."""
    assert child.stderr is not None
    lines = []
    while True:
        line = child.stderr.readline()
        assert line, f"the child ended before waiting: {lines}"
        lines.append(line)
        if "waiting for another `migrate` run" in line:
            return lines


@contextlib.contextmanager
def _lock_held(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """Hold the migration's advisory lock from a connection of the test's own until the block ends."""
    with db.connect(dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (migration_lock_key(MIGRATION),))
        yield holder
        holder.execute("SELECT pg_advisory_unlock(%s)", (migration_lock_key(MIGRATION),))


def _owned(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute(
        "SELECT index_name, origin FROM psra_bench.migration_indexes WHERE migration = %s", (MIGRATION,)
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def _consistent(conn: psycopg.Connection[Any]) -> str:
    """The database is either fully migrated or fully rolled back, and the bookkeeping says so; returns which."""
    assert _invalid(conn) == []
    names = set(_indexes(conn))
    if _recorded(conn) is None:
        assert not names & set(SPEC_INDEXES) and _owned(conn) == {} and db.index_count(conn) == 20
        return "not applied"
    assert _recorded(conn) == ("applied", _recorded(conn)[1])  # type: ignore[index]
    assert set(SPEC_INDEXES) <= names and db.index_count(conn) == 46
    assert _owned(conn) == dict.fromkeys(SPEC_INDEXES, "created")
    return "applied"


def test_lock_key_is_fixed_per_migration() -> None:
    key = migration_lock_key(MIGRATION)
    assert key == migration_lock_key(MIGRATION) != migration_lock_key("another")
    assert -(2**63) <= key < 2**63


def test_a_run_waits_for_the_lock_and_does_nothing_meanwhile(make_database: Callable[..., str]) -> None:
    dsn = make_database()
    waiting = threading.Event()
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def progress(kind: str, name: str, seconds: float) -> None:
        if kind == "wait":
            waiting.set()

    def run() -> None:
        try:
            results.append(migrate_up(dsn, progress=progress))
        except BaseException as e:  # handed to the test's thread
            errors.append(e)

    with db.connect(dsn, autocommit=True) as conn:
        with _lock_held(dsn):
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            assert waiting.wait(60), errors
            # It cannot pass the lock while we hold it: nothing is built, nothing recorded.
            assert worker.is_alive()
            assert db.index_count(conn) == 20 and _recorded(conn) is None
        worker.join(120)
        assert not worker.is_alive() and errors == []
        (up,) = results
        assert up["waited_seconds"] > 0 and up["created"] == list(SPEC_INDEXES)
        assert _consistent(conn) == "applied"

        with _lock_held(dsn):
            down_results: list[dict[str, Any]] = []
            waiting.clear()
            worker = threading.Thread(
                target=lambda: down_results.append(migrate_down(dsn, progress=progress)), daemon=True
            )
            worker.start()
            assert waiting.wait(60)
            assert db.index_count(conn) == 46
        worker.join(120)
        (down,) = down_results
        assert down["waited_seconds"] > 0 and down["dropped"] == list(reversed(SPEC_INDEXES))
        assert _consistent(conn) == "not applied"


@pytest.mark.slow
def test_two_cli_ups_at_once_both_succeed(
    make_database: Callable[..., str], settings: Settings, tmp_path: Path
) -> None:
    """The second `migrate up` arrives while the first is inside a build; it waits, then finds the work done."""
    dsn = make_database()
    env = cli_env(settings, dsn, tmp_path)
    with db.connect(dsn, autocommit=True) as conn:
        with _writers_held(dsn):
            first = _start_cli(env, "migrate", "up")
            _, held = _build_waiting_for_writers(conn)  # the first run holds the lock, mid-way through a build
            second = _start_cli(env, "migrate", "up")
            _until_waiting(second)
        out_first, err_first = first.communicate(timeout=120)
        out_second, err_second = second.communicate(timeout=120)
        assert (first.returncode, second.returncode) == (0, 0), (err_first, err_second)
        assert out_first.splitlines() == [
            f"{MIGRATION}: created 26, repaired 0, already present 0; 46 indexes in schema public"
        ]
        lines = out_second.splitlines()
        assert lines[0] == f"{MIGRATION}: created 0, repaired 0, already present 26; 46 indexes in schema public"
        assert len(lines) == 2 and re.fullmatch(
            r"  waited \d+\.\d s for another `migrate` run on this database", lines[1]
        )
        assert "Traceback" not in err_first + err_second and "create" not in err_second
        assert _consistent(conn) == "applied"


@pytest.mark.slow
def test_cli_up_racing_down_ends_consistent(
    make_database: Callable[..., str], settings: Settings, tmp_path: Path
) -> None:
    dsn = make_database()
    env = cli_env(settings, dsn, tmp_path)
    with db.connect(dsn, autocommit=True) as conn:
        for setup in ("not applied", "applied"):
            if setup == "applied":
                migrate_up(dsn)
            with _lock_held(dsn):  # both start, both wait: then they go in whatever order the server picks
                up = _start_cli(env, "migrate", "up")
                down = _start_cli(env, "migrate", "down")
                _until_waiting(up)
                _until_waiting(down)
            out_up, err_up = up.communicate(timeout=120)
            out_down, err_down = down.communicate(timeout=120)
            assert (up.returncode, down.returncode) == (0, 0), (err_up, err_down)
            assert "Traceback" not in err_up + err_down
            final = _consistent(conn)
            # Whoever went last decides the end state, and its own output says what it did.
            if final == "applied":
                assert "created 26" in out_up or "already present 26" in out_up
            else:
                assert f"{MIGRATION}: dropped 26;" in out_down


def test_down_keeps_indexes_that_were_there_before_up(make_database: Callable[..., str]) -> None:
    dsn = make_database()
    before = ["idx_hs_codes_version", "idx_psra_verdicts_input_hash"]
    with db.connect(dsn, autocommit=True) as conn:
        for spec in migration_indexes():
            if spec.name in before:
                conn.execute(spec.create.encode())
        defs = {n: d for n, d in _indexes(conn).items() if n in before}
        assert migration_status(conn).preexisting == before
        for _ in range(2):  # and again: a second round trip still knows they are not the migration's
            up = migrate_up(dsn)
            assert up["already"] == up["preexisting"] == before and len(up["created"]) == 24
            assert _owned(conn) == {n: "preexisting" if n in before else "created" for n in SPEC_INDEXES}
            st = migration_status(conn)
            assert (st.state, st.preexisting) == ("applied", before)
            down = migrate_down(dsn)
            assert down["kept"] == before and down["dropped"] == [n for n in reversed(SPEC_INDEXES) if n not in before]
            assert {n: d for n, d in _indexes(conn).items() if n in SPEC_INDEXES} == defs
            assert db.index_count(conn) == 22 and _recorded(conn) is None and _owned(conn) == {}


def test_an_index_with_another_definition_is_a_conflict(make_database: Callable[..., str]) -> None:
    dsn = make_database()
    foreign = "CREATE INDEX idx_hs_codes_version ON public.hs_codes USING btree (code)"
    with db.connect(dsn, autocommit=True) as conn:
        conn.execute(foreign.encode())
        with pytest.raises(MigrationError) as err:
            migrate_up(dsn)
        message = str(err.value)
        assert err.value.index == "idx_hs_codes_version" and "\n" not in message
        assert foreign in message and "CREATE INDEX idx_hs_codes_version ON hs_codes (version)" in message
        assert db.index_count(conn) == 21 and _recorded(conn) is None  # nothing applied
        st = migration_status(conn)
        assert (st.state, st.conflicts) == ("conflict", ["idx_hs_codes_version"])
        assert "idx_hs_codes_version" not in st.present
        down = migrate_down(dsn)  # not the migration's: left alone
        assert down["dropped"] == [] and down["kept"] == ["idx_hs_codes_version"]
        assert _indexes(conn)["idx_hs_codes_version"] == foreign

        # One of the migration's own indexes replaced by another definition: down refuses to drop it.
        conn.execute(b"DROP INDEX idx_hs_codes_version")
        migrate_up(dsn)
        conn.execute(b"DROP INDEX idx_psra_rules_priority")
        conn.execute(b"CREATE INDEX idx_psra_rules_priority ON psra_rules (priority)")
        with pytest.raises(MigrationError) as err:
            migrate_down(dsn)
        assert err.value.index == "idx_psra_rules_priority" and "(priority DESC)" in str(err.value)
        assert db.index_count(conn) == 46 and _recorded(conn) == ("applied", _recorded(conn)[1])  # type: ignore[index]


def test_an_index_another_connection_is_building_is_not_dropped(make_database: Callable[..., str]) -> None:
    dsn = make_database()
    spec = next(s for s in migration_indexes() if s.table == "psra_verdicts")
    errors: list[BaseException] = []

    def build() -> None:
        try:
            with db.connect(dsn, autocommit=True) as other:
                other.execute(spec.create.encode())
        except BaseException as e:  # handed to the test's thread
            errors.append(e)

    with db.connect(dsn, autocommit=True) as conn:
        with _writers_held(dsn):
            builder = threading.Thread(target=build, daemon=True)
            builder.start()
            pid, held = _build_waiting_for_writers(conn)  # INVALID in the catalog, being built
            assert held == spec.name and _invalid(conn) == [spec.name]
            st = migration_status(conn)
            assert (st.state, st.building, st.invalid) == ("building", [spec.name], [])
            with pytest.raises(MigrationError) as err:
                migrate_up(dsn)
            assert err.value.index == spec.name and f"pid {pid}" in str(err.value)
            assert _invalid(conn) == [spec.name]  # still there, still being built
        builder.join(60)
        assert not builder.is_alive() and errors == []
        up = migrate_up(dsn)
        assert spec.name in up["already"] and spec.name in up["preexisting"]
        assert migration_status(conn).state == "applied"


def test_a_migration_recorded_before_ownership_was_tracked_still_rolls_back(make_database: Callable[..., str]) -> None:
    dsn = make_database()
    migrate_up(dsn)
    with db.connect(dsn, autocommit=True) as conn:
        conn.execute(b"DROP TABLE psra_bench.migration_indexes")  # as an older psra-bench left it
        assert migration_status(conn).preexisting == []
        down = migrate_down(dsn)
        assert down["dropped"] == list(reversed(SPEC_INDEXES)) and down["kept"] == []
        assert _consistent(conn) == "not applied"
