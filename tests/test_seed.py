"""The seeder: same seed -> same rows, refuse/force/append, realistic skew, indexes kept intact,
and a killed seed leaves the previous data untouched (it is one transaction).
"""

from __future__ import annotations

import copy
import datetime as dt
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from psra_bench.db.migrate import migrate_up
from psra_bench.db.reference import rules
from psra_bench.db.seed import DEFAULT_END, EU_MEMBERS, copy_text, seed_database, tenant_ids, verdict_count
from psra_bench.exceptions import PsraBenchError, SeedError
from psra_bench.infra import postgres as db

N = 20_000
STATUSES = {"qualified", "not_qualified", "insufficient_data"}


def _md5(conn: psycopg.Connection[Any], table: str = "psra_verdicts", ids: list[Any] | None = None) -> str:
    """md5 over every column of every row; for the side tables minus created_at (a DEFAULT now())."""
    row_text = "t::text" if table == "psra_verdicts" else "(to_jsonb(t) - 'created_at')::text"
    where = " WHERE id = ANY(%s)" if ids is not None else ""
    query = f"SELECT md5(string_agg({row_text}, '' ORDER BY id)) FROM {table} t{where}"
    row = conn.execute(query.encode(), (ids,) if ids is not None else None).fetchone()
    assert row is not None
    return str(row[0])


def _content(conn: psycopg.Connection[Any]) -> dict[str, str]:
    return {t: _md5(conn, t) for t in ("psra_verdicts", "tenants", "suppliers", "supplier_declarations")}


def _index_defs(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'").fetchall()
    return {r[0]: r[1] for r in rows}


def _no_invalid_indexes(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_index WHERE NOT (indisvalid AND indisready)").fetchone()
    return row == (0,)


@pytest.fixture(scope="module")
def seeded(make_database: Callable[..., str]) -> tuple[str, Any]:
    """A database with N verdicts from seed 7 (read-only for the tests that use it)."""
    dsn = make_database()
    with db.connect(dsn, autocommit=True) as conn:
        written: list[int] = []
        result = seed_database(conn, N, seed=7, progress=written.append)
    assert sum(written) == N
    return dsn, result


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_rows_other_seed_other_rows(seeded: tuple[str, Any], make_database: Callable[..., str]) -> None:
    dsn_a, result_a = seeded
    assert (result_a.verdicts, result_a.tenants, result_a.seed) == (N, 200, 7)
    assert len(result_a.checksum) == 16 and result_a.rows_per_second > 0
    dsn_b = make_database()
    with db.connect(dsn_a, autocommit=True) as a, db.connect(dsn_b, autocommit=True) as b:
        content_a = _content(a)
        result_b = seed_database(b, N, seed=7)
        assert result_b.checksum == result_a.checksum
        assert _content(b) == content_a  # byte-for-byte the same rows in every seeded table

        other = seed_database(b, N, seed=8, mode="force")
        assert other.checksum != result_a.checksum
        content_8 = _content(b)
        assert content_8["psra_verdicts"] != content_a["psra_verdicts"]
        assert verdict_count(b) == N

        # --force replaces everything: reseeding seed 7 gives exactly the fresh seed-7 database.
        seed_database(b, N, seed=7, mode="force")
        assert _content(b) == content_a

        runs = b.execute("SELECT seed, verdicts, checksum FROM psra_bench.seed_runs ORDER BY id").fetchall()
        assert runs == [(7, N, result_a.checksum), (8, N, other.checksum), (7, N, result_a.checksum)]


def test_refuses_when_verdicts_exist(seeded: tuple[str, Any]) -> None:
    dsn, _ = seeded
    with db.connect(dsn, autocommit=True) as conn:
        before = _content(conn)
        with pytest.raises(SeedError) as err:
            seed_database(conn, 10, seed=1)
        message = str(err.value)
        assert "20,000" in message and "--force" in message and "--append" in message
        assert "\n" not in message
        assert _content(conn) == before


def test_append_adds_rows_and_keeps_the_old_ones(make_database: Callable[..., str]) -> None:
    dsn = make_database()
    with db.connect(dsn, autocommit=True) as conn:
        seed_database(conn, 5_000, seed=1)
        old_ids = [r[0] for r in conn.execute("SELECT id FROM psra_verdicts").fetchall()]
        old_rows = _md5(conn, ids=old_ids)
        tenants = _md5(conn, "tenants")
        indexes = _index_defs(conn)
        seed_database(conn, 3_000, seed=2, mode="append")
        assert verdict_count(conn) == 8_000
        assert _md5(conn, ids=old_ids) == old_rows
        assert _md5(conn, "tenants") == tenants
        assert _index_defs(conn) == indexes and len(indexes) == 20


def test_append_with_the_same_seed_is_not_a_crash(make_database: Callable[..., str]) -> None:
    """`seed --append` twice with the default seed: either more rows, or one clear SeedError."""
    dsn = make_database()
    with db.connect(dsn, autocommit=True) as conn:
        seed_database(conn, 1_000, seed=42)
        try:
            seed_database(conn, 1_000, seed=42, mode="append")
        except PsraBenchError as e:
            assert isinstance(e, SeedError) and "--seed" in str(e)
            assert verdict_count(conn) == 1_000
        else:
            assert verdict_count(conn) == 2_000


# --------------------------------------------------------------------------- shape of the data


def test_skew_looks_like_a_real_service(seeded: tuple[str, Any]) -> None:
    dsn, _ = seeded
    with db.connect(dsn, autocommit=True) as conn:
        per_tenant = dict(conn.execute("SELECT tenant_id::text, count(*) FROM psra_verdicts GROUP BY 1").fetchall())
        assert set(per_tenant) <= set(tenant_ids(200))
        counts = [per_tenant.get(t, 0) for t in tenant_ids(200)]
        assert max(counts) > 20 * statistics.median(counts)  # a few big importers, a long tail
        assert max(counts) == counts[0]  # tenant 0 is the biggest

        statuses = dict(conn.execute("SELECT status, count(*) FROM psra_verdicts GROUP BY 1").fetchall())
        assert set(statuses) == STATUSES
        assert max(statuses, key=statuses.__getitem__) == "qualified"

        oldest, newest = conn.execute("SELECT min(created_at), max(created_at) FROM psra_verdicts").fetchone() or (
            None,
            None,
        )
        assert oldest is not None and newest is not None
        assert DEFAULT_END - dt.timedelta(days=730) <= oldest < newest <= DEFAULT_END
        assert (newest - oldest).days >= 700  # about two years
        halves = conn.execute(
            "SELECT count(*) FILTER (WHERE created_at >= %(mid)s), count(*) FILTER (WHERE created_at < %(mid)s)"
            " FROM psra_verdicts",
            {"mid": DEFAULT_END - dt.timedelta(days=365)},
        ).fetchone()
        assert halves is not None and halves[0] > halves[1]  # more recent activity

        repeated = conn.execute(
            "SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM psra_verdicts"
            " GROUP BY tenant_id, input_hash HAVING count(*) > 1) d"
        ).fetchone()
        assert repeated is not None and repeated[0] > 0
        assert repeated[1] > 0.05 * N  # a real share of duplicate inputs

        assert conn.execute("SELECT count(*) FROM psra_verdicts WHERE export_country = import_country").fetchone() == (
            0,
        )
        assert conn.execute(
            "SELECT count(*) FROM psra_verdicts WHERE effective_date <> (created_at AT TIME ZONE 'UTC')::date"
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM psra_verdicts v LEFT JOIN hs_codes h ON h.code = v.hs_subheading AND h.level = 6"
            " WHERE h.code IS NULL"
        ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM tenants").fetchone() == (200,)

        by_rule = {r["rule_id"]: r for r in rules()}
        combos = conn.execute(
            "SELECT DISTINCT rule_id, agreement_code, hs_subheading, export_country, import_country FROM psra_verdicts"
        ).fetchall()
        for rule_id, agreement, code, exporter, importer in combos:
            rule = by_rule[rule_id]
            assert agreement == rule["agreement_code"]
            assert code.startswith(rule.get("hs_subheading") or rule.get("hs_heading") or rule["hs_chapter"])
            parties = {c for j in rule["jurisdictions"] for c in (EU_MEMBERS if j == "EU" else [j])}
            assert {exporter, importer} <= parties, (rule_id, exporter, importer)


def test_seeding_keeps_the_index_set(make_database: Callable[..., str]) -> None:
    dsn = make_database()
    with db.connect(dsn, autocommit=True) as conn:
        baseline = _index_defs(conn)
        assert len(baseline) == 20
        seed_database(conn, 2_000, seed=5)
        assert _index_defs(conn) == baseline
        migrate_up(dsn)
        migrated = _index_defs(conn)
        assert len(migrated) == 46
        seed_database(conn, 2_000, seed=6, mode="force")
        assert _index_defs(conn) == migrated
        assert _no_invalid_indexes(conn)
        pk = conn.execute(
            "SELECT conname, contype FROM pg_constraint WHERE conrelid = 'psra_verdicts'::regclass AND contype <> 'n'"
        ).fetchall()
        assert pk == [("psra_verdicts_pkey", "p")]
        seed_database(conn, 500, seed=9, mode="append")
        assert _index_defs(conn) == migrated and verdict_count(conn) == 2_500


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"verdicts": -1}, "-1"),
        ({"verdicts": 1.5}, "1.5"),
        ({"verdicts": "10"}, "'10'"),
        ({"verdicts": 100_000_001}, "100000001"),
        ({"verdicts": 10, "tenants": 0}, "0"),
        ({"verdicts": 10, "tenants": 100_001}, "100001"),
        ({"verdicts": 10, "mode": "replace"}, "'replace'"),
    ],
)
def test_invalid_arguments(seeded: tuple[str, Any], kwargs: dict[str, Any], shown: str) -> None:
    dsn, _ = seeded
    with db.connect(dsn, autocommit=True) as conn:
        before = verdict_count(conn)
        with pytest.raises(SeedError) as err:
            seed_database(conn, **kwargs)
        message = str(err.value)
        assert shown in message and "not valid" in message and "\n" not in message
        assert verdict_count(conn) == before


# --------------------------------------------------------------------------- a killed seed


_SEED_IN_CHILD = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal, even if our parent ignores it
from psra_bench.infra import postgres as db
from psra_bench.db.seed import seed_database
with db.connect(sys.argv[1], autocommit=True) as conn:
    seed_database(conn, 3_000_000, seed=11, mode="force", progress=lambda n: print(n, flush=True))
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_killed_seed_leaves_the_old_data(make_database: Callable[..., str], sig: signal.Signals) -> None:
    dsn = make_database()
    with db.connect(dsn, autocommit=True) as conn:
        seed_database(conn, 5_000, seed=1)
        migrate_up(dsn)
        before = _content(conn)
        indexes = _index_defs(conn)
        runs = conn.execute("SELECT count(*) FROM psra_bench.seed_runs").fetchone()
    with subprocess.Popen(
        [sys.executable, "-c", _SEED_IN_CHILD, dsn], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as child:
        assert child.stdout is not None
        first = child.stdout.readline()  # the first chunk went out: the old rows are already truncated
        child.send_signal(sig)
        assert child.wait(timeout=60) != 0
    assert first.strip().isdigit()
    with db.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, "the killed seed's backend did not go away"
            time.sleep(0.05)
        assert verdict_count(conn) == 5_000
        assert _content(conn) == before
        assert _index_defs(conn) == indexes and len(indexes) == 46
        assert _no_invalid_indexes(conn)
        assert conn.execute("SELECT count(*) FROM psra_bench.seed_runs").fetchone() == runs
        # And the next seed works normally.
        seed_database(conn, 1_000, seed=12, mode="force")
        assert verdict_count(conn) == 1_000 and _index_defs(conn) == indexes


# --------------------------------------------------------------------------- text that needs escaping


#: Every character COPY's text format treats specially, plus quotes and non-ASCII.
_NASTY = "Art. 4 – \"wholly obtained\" \\ back\\slash, tab\there, new\nline, cr\rhere, é ü 中 ✓ 'quoted' \\N"


def _nasty_rules() -> list[dict[str, Any]]:
    """The vendored rules with awkward text in every field that ends up in a verdict row."""
    out = []
    for k, rule in enumerate(rules()):
        r = copy.deepcopy(rule)
        r["rule_id"] = f'R{k}\t"é"\\\n–'
        r["agreement_code"] = f"A{k}\\é\r'"
        r["payload"]["decision"]["citations"] = [_NASTY, f"clause {k}: ½ \\u00e9 literally"]
        first = r["payload"]["decision"]["disqualification_reasons"][0]
        first["code"] = f'CODE_{k} "x"\t–'
        first["severity"] = "högh\\"
        r["payload"]["audit"]["ledger_reference"] = None if k % 2 else f'ledger://ü/{k}\n"l"\\'
        out.append(r)
    return out


def test_text_with_quotes_backslashes_tabs_newlines_and_non_ascii_round_trips(
    make_database: Callable[..., str],
) -> None:
    nasty = _nasty_rules()
    by_id = {r["rule_id"]: r for r in nasty}
    dsn = make_database()
    with db.connect(dsn, autocommit=True) as conn:
        seed_database(conn, 3_000, seed=4, rule_set=nasty)
        rows = conn.execute(
            "SELECT rule_id, agreement_code, citations, reasons, ledger_reference, status FROM psra_verdicts"
        ).fetchall()
    assert len(rows) == 3_000
    seen = set()
    for rule_id, agreement, citations, reasons, ledger, status in rows:
        rule = by_id[rule_id]  # exactly the generated text, byte for byte
        seen.add(rule_id)
        assert agreement == rule["agreement_code"]
        decision = rule["payload"]["decision"]
        assert citations == [{"rule_id": rule_id, "clause": c} for c in decision["citations"]]
        first = decision["disqualification_reasons"][0]
        expected_reasons = [] if status == "qualified" else [{"code": first["code"], "severity": first["severity"]}]
        assert reasons == expected_reasons
        assert ledger == rule["payload"]["audit"]["ledger_reference"]
    assert len(seen) > 5 and any(r[4] is None for r in rows) and any(r[4] is not None for r in rows)


def test_copy_text_escapes_what_copy_needs() -> None:
    assert copy_text('a\\b\tc\nd\re "é" –') == 'a\\\\b\\tc\\nd\\re "é" –'
    assert copy_text(None) == "\\N" and copy_text("\\N") == "\\\\N"
