"""What the advice reads from a server's catalog: columns, extensions, table sizes (read-only queries)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

__all__ = ["TableInfo", "public_columns", "table_info", "extension_state", "preloaded", "server_version"]


@dataclass(frozen=True)
class TableInfo:
    """One table of schema public as the planner sees it."""

    name: str
    rows: float
    heap_bytes: int

    @property
    def row_bytes(self) -> float:
        """Heap bytes per row (8 kB when the table looks empty, so a write penalty stays finite)."""
        return self.heap_bytes / self.rows if self.rows >= 1 else 8192.0


def public_columns(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    """Table name -> column names, for every ordinary or partitioned table of schema public."""
    rows = conn.execute(
        """SELECT c.relname, a.attname FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY c.relname, a.attnum"""
    ).fetchall()
    out: dict[str, list[str]] = {}
    for table, column in rows:
        out.setdefault(str(table), []).append(str(column))
    return out


def table_info(conn: psycopg.Connection[Any], tables: list[str]) -> dict[str, TableInfo]:
    """reltuples and heap size of each named table of schema public."""
    rows = conn.execute(
        """SELECT c.relname, greatest(c.reltuples, 0), pg_relation_size(c.oid)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relname = ANY(%s)""",
        (tables,),
    ).fetchall()
    return {str(r[0]): TableInfo(str(r[0]), float(r[1]), int(r[2])) for r in rows}


def extension_state(conn: psycopg.Connection[Any], name: str) -> str:
    """'installed' (in this database), 'available' (on the server, not created here) or 'missing'."""
    row = conn.execute(
        """SELECT (SELECT count(*) FROM pg_extension WHERE extname = %s),
                  (SELECT count(*) FROM pg_available_extensions WHERE name = %s)""",
        (name, name),
    ).fetchone()
    assert row is not None
    return "installed" if row[0] else "available" if row[1] else "missing"


def preloaded(conn: psycopg.Connection[Any], library: str) -> bool:
    """True when ``library`` is in the server's shared_preload_libraries."""
    row = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    names = [s.strip().strip('"') for s in str(row[0] if row else "").split(",")]
    return library in names


def server_version(conn: psycopg.Connection[Any]) -> str:
    """The server's version string, e.g. '15.14'."""
    row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"
