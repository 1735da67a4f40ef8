"""Which databases psra-bench may write into, and the marker that records it.

psra-bench reads any database it is pointed at, but it writes (seeds, truncates, inserts batches,
VACUUMs, builds and drops index sets) only into a database it **owns**. A database is owned when
``psra_bench.ownership`` holds a row naming it, written when psra-bench

- ``created`` it (``CREATE DATABASE`` by psra-bench),
- found it on the ``embedded`` server it runs itself, seeded by an earlier psra-bench (``psra_bench.seed_runs``),
- found it ``empty``: no table of anyone else and no row psra-bench would not have put there, or
- was ``handed-over`` it by the user (``psra-bench handover``, or :func:`hand_over` from code).

The row names the database, so a dump of an owned database restored under another name is not
owned until it is handed over. :func:`require_owned` is the one check every writer calls first;
it refuses in one sentence naming the database and what it holds that psra-bench did not put
there. ``migrate`` (the spec's migration is meant for the team's database) and everything that
only reads never ask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from psra_bench.db.reference import TABLES, hs_rows, rules
from psra_bench.exceptions import NotOwnedError
from psra_bench.infra import postgres as db
from psra_bench.settings import LiveSettings

__all__ = [
    "CLAIMS",
    "Ownership",
    "inspect",
    "ownership",
    "claim",
    "release",
    "require_owned",
    "require_writable",
    "hand_over",
]

#: How a database came to be owned (the ``how`` column of ``psra_bench.ownership``).
CLAIMS = ("created", "embedded", "empty", "handed-over")

_MARKER_DDL = """
CREATE SCHEMA IF NOT EXISTS psra_bench;
CREATE TABLE IF NOT EXISTS psra_bench.ownership (
    database   text PRIMARY KEY,
    how        text NOT NULL CHECK (how IN ('created', 'embedded', 'empty', 'handed-over')),
    claimed_by text NOT NULL DEFAULT current_user,
    claimed_at timestamptz NOT NULL DEFAULT now()
)"""

#: How ``describe`` says each claim.
_CLAIMED = {
    "created": "owned by psra-bench: it created it",
    "embedded": "owned by psra-bench: it seeded it on its own embedded server",
    "empty": "owned by psra-bench: it was empty when psra-bench first wrote",
    "handed-over": "owned by psra-bench: handed over by its user",
}

#: Counting stops here: "more than 1,000,000 rows" is all a refusal needs to say.
_COUNT_CAP = 1_000_000


@dataclass(frozen=True)
class Ownership:
    """Whether psra-bench owns a database, how, and what in it psra-bench did not put there."""

    database: str
    #: The recorded claim (one of :data:`CLAIMS`), or None when the database is not owned yet.
    how: str | None
    #: One phrase per thing psra-bench did not put there, e.g. "psra_verdicts has 500 rows psra-bench did not seed".
    foreign: tuple[str, ...]

    @property
    def owned(self) -> bool:
        """True when the marker names this database."""
        return self.how is not None

    @property
    def claimable(self) -> bool:
        """True when nothing of anyone else is in it, so psra-bench may claim it as ``empty``."""
        return not self.foreign

    def describe(self) -> str:
        """One phrase for ``doctor`` and the read-only audit."""
        if self.how is not None:
            return _CLAIMED[self.how]
        if not self.foreign:
            return "not owned yet; empty, so psra-bench claims it on its first write"
        return "not owned: " + "; ".join(self.foreign)


def _marker(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute("SELECT to_regclass('psra_bench.ownership') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    found = conn.execute("SELECT how FROM psra_bench.ownership WHERE database = current_database()").fetchone()
    return str(found[0]) if found else None


def _seeded_before(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('psra_bench.seed_runs') IS NOT NULL").fetchone()
    return bool(row and row[0] and conn.execute("SELECT 1 FROM psra_bench.seed_runs LIMIT 1").fetchone())


def _count(conn: psycopg.Connection[Any], query: sql.Composed, params: tuple[Any, ...] = ()) -> int:
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0


def _rows(n: int) -> str:
    return f"more than {_COUNT_CAP:,} rows" if n > _COUNT_CAP else f"{n:,} row{'s' if n != 1 else ''}"


def _foreign(conn: psycopg.Connection[Any]) -> tuple[str, ...]:
    """What the database holds that psra-bench did not put there (read-only queries)."""
    out: list[str] = []
    tables = conn.execute(
        """SELECT n.nspname, c.relname, c.relkind
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
             AND NOT c.relispartition
             AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'psra_bench')
             AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
             -- objects an extension installed (pg_stat_statements' views, say) are the extension's
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                             AND d.objid = c.oid AND d.deptype = 'e')
           ORDER BY 1, 2"""
    ).fetchall()
    kinds = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "f": "foreign table"}
    ours = set()
    for schema, name, kind in tables:
        if schema == "public" and name in TABLES and kind in ("r", "p"):
            ours.add(name)
        else:
            out.append(f"{kinds.get(kind, 'relation')} {schema}.{name}")
    capped = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} {} LIMIT %s) AS t")
    for table in TABLES:  # the baseline schema's tables; any other table is someone else's
        if table not in ours:
            continue
        ident = sql.Identifier("public", table)
        if table == "hs_codes":  # the vendored nomenclature is psra-bench's own reference data
            where = sql.SQL("WHERE NOT (code = ANY(%s))")
            n = _count(conn, capped.format(ident, where), ([r.code for r in hs_rows()], _COUNT_CAP + 1))
        elif table == "psra_rules":  # so are the 13 vendored rules
            where = sql.SQL("WHERE NOT (rule_id = ANY(%s))")
            n = _count(conn, capped.format(ident, where), ([r["rule_id"] for r in rules()], _COUNT_CAP + 1))
        else:
            n = _count(conn, capped.format(ident, sql.SQL("")), (_COUNT_CAP + 1,))
        if n:
            what = "psra-bench did not seed" if table not in ("hs_codes", "psra_rules") else "psra-bench did not load"
            out.append(f"{table} has {_rows(n)} {what}")
    return tuple(out)


def inspect(conn: psycopg.Connection[Any]) -> Ownership:
    """The database of ``conn``: its claim (if any) and, when unclaimed, what in it is someone else's."""
    name = str(conn.info.dbname)
    how = _marker(conn)
    return Ownership(name, how, () if how else _foreign(conn))


def ownership(settings: LiveSettings) -> Ownership:
    """:func:`inspect` on the settings' database (read-only)."""
    with db.connect(settings.db_dsn, autocommit=True) as conn:
        return inspect(conn)


def claim(conn: psycopg.Connection[Any], how: str) -> None:
    """Record that psra-bench owns the database of ``conn`` (``how``: one of :data:`CLAIMS`)."""
    if how not in CLAIMS:
        raise ValueError(f"how={how!r}: use one of {', '.join(CLAIMS)}")
    name = str(conn.info.dbname)
    try:
        with conn.transaction():
            conn.execute(_MARKER_DDL)
            conn.execute(
                "INSERT INTO psra_bench.ownership (database, how) VALUES (%s, %s) ON CONFLICT (database) DO NOTHING",
                (name, how),
            )
    except psycopg.errors.InsufficientPrivilege as e:
        user = conn.info.user
        raise NotOwnedError(
            name,
            f"user {user!r} may not write to it ({e.diag.message_primary or 'permission denied'})",
            remedy="connect as a user who may create schema psra_bench there",
        ) from None
    except psycopg.errors.ReadOnlySqlTransaction:
        raise NotOwnedError(
            name, "the server only allows reads", remedy="point it at a primary, not a standby"
        ) from None


def release(conn: psycopg.Connection[Any]) -> bool:
    """Forget psra-bench's claim on the database of ``conn``; True if there was one."""
    if _marker(conn) is None:
        return False
    conn.execute("DELETE FROM psra_bench.ownership WHERE database = current_database()")
    return True


def require_owned(settings: LiveSettings, action: str) -> Ownership:
    """Return the ownership of the settings' database, claiming it when allowed; else refuse in one sentence.

    Allowed claims: a database psra-bench seeded on its own embedded server before it kept the
    marker, or one that holds nothing of anyone else. ``action`` says what was about to happen
    ("seed", "psra-bench report", …) for the refusal. Nothing is written when it refuses.
    """
    with db.connect(settings.db_dsn, autocommit=True) as conn:
        if settings.embedded_db and not _marker(conn) and _seeded_before(conn):
            # psra-bench seeded it on the server it runs itself, before it kept this marker
            claim(conn, "embedded")
            return Ownership(str(conn.info.dbname), "embedded", ())
        return require_writable(conn, action)


def require_writable(conn: psycopg.Connection[Any], action: str) -> Ownership:
    """Like :func:`require_owned` on an open connection (no embedded-server rule): owned, or empty and claimed now."""
    found = inspect(conn)
    if found.owned:
        return found
    if found.claimable:
        claim(conn, "empty")
        return Ownership(found.database, "empty", ())
    raise NotOwnedError(
        found.database, "it holds what psra-bench did not put there (" + "; ".join(found.foreign) + ")", action=action
    )


def hand_over(dsn: str, *, accept_foreign: bool = False, confirm: str = "accept_foreign=True") -> Ownership:
    """The user hands the database of ``dsn`` to psra-bench: later commands may overwrite what it holds.

    A database already owned stays as it is. One that holds data of someone else's is handed over
    only with ``accept_foreign``; otherwise one sentence lists that data and names ``confirm``, the
    caller's way of saying yes (``--yes`` on the command line).
    """
    with db.connect(dsn, autocommit=True) as conn:
        found = inspect(conn)
        if found.owned:
            return found
        if found.foreign and not accept_foreign:
            raise NotOwnedError(
                found.database,
                "it holds " + "; ".join(found.foreign) + ", which seed, report, the notebooks and the audit may "
                "overwrite or drop",
                remedy=f"pass {confirm} to hand it over anyway",
            )
        claim(conn, "handed-over")
        return Ownership(found.database, "handed-over", found.foreign)
