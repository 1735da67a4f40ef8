"""Reference data: the vendored HS 2022 nomenclature and the 13 product-specific rules.

Both ship inside the package (``psra_bench/data``) and load with :func:`load_reference_data`.
"""

from __future__ import annotations

import csv
import json
import uuid
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

__all__ = [
    "HsRow",
    "hs_rows",
    "hs_sections",
    "rules",
    "load_reference_data",
    "prepare_database",
    "table_counts",
    "TABLES",
    "existing_table_counts",
    "RULE_NAMESPACE",
]

#: uuid5 namespace so a rule's primary key is the same in every database.
RULE_NAMESPACE = uuid.UUID("6f1c1d55-3f0e-4f0f-9a53-52a1b7c8e001")


@dataclass(frozen=True)
class HsRow:
    """One row of the HS 2022 table."""

    code: str
    description: str
    parent: str | None
    level: int
    section: str | None

    @property
    def chapter(self) -> str | None:
        """First two digits for chapters, headings and subheadings; None for the TOTAL row."""
        return self.code[:2] if self.code[:2].isdigit() else None


def _data_text(name: str) -> str:
    return resources.files("psra_bench").joinpath("data", name).read_text(encoding="utf-8-sig")


@cache
def hs_rows() -> tuple[HsRow, ...]:
    """The 6,940 rows of the vendored HS 2022 nomenclature, in file order."""
    reader = csv.DictReader(_data_text("harmonized-system.csv").splitlines())
    return tuple(
        HsRow(
            code=r["hscode"],
            description=r["description"],
            parent=r["parent"] or None,
            level=int(r["level"]),
            section=r["section"] or None,
        )
        for r in reader
    )


@cache
def hs_sections() -> dict[str, str]:
    """Section numeral (I..XXI) -> name."""
    return {r["section"]: r["name"] for r in csv.DictReader(_data_text("hs-sections.csv").splitlines())}


@cache
def rules() -> tuple[dict[str, Any], ...]:
    """The 13 product-specific rules of ``data/rules.json`` (metadata columns + ``payload``)."""
    return tuple(json.loads(_data_text("rules.json")))


def load_reference_data(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Replace hs_codes and psra_rules with the vendored data; return row counts per table."""
    with conn.transaction():
        conn.execute("TRUNCATE hs_codes RESTART IDENTITY")
        with conn.cursor().copy(
            "COPY hs_codes (code, description, parent, level, section, chapter) FROM STDIN"
        ) as copy:
            for r in hs_rows():
                copy.write_row((r.code, r.description, r.parent, r.level, r.section, r.chapter))
        conn.execute("DELETE FROM psra_rules")
        with conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO psra_rules (id, rule_id, version, agreement_code, agreement_name, title,
                       hs_chapter, hs_heading, hs_subheading, jurisdictions, effective_from, effective_to,
                       priority, supersedes, payload)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                [
                    (
                        uuid.uuid5(RULE_NAMESPACE, r["rule_id"]),
                        r["rule_id"],
                        r.get("version", 1),
                        r["agreement_code"],
                        r["agreement_name"],
                        r["title"],
                        r["hs_chapter"],
                        r.get("hs_heading"),
                        r.get("hs_subheading"),
                        r["jurisdictions"],
                        r["effective_from"],
                        r.get("effective_to"),
                        r.get("priority", 0),
                        r.get("supersedes", []),
                        Jsonb(r["payload"]),
                    )
                    for r in rules()
                ],
            )
    return {"hs_codes": len(hs_rows()), "psra_rules": len(rules())}


def prepare_database(conn: psycopg.Connection[Any], *, owned: bool = False) -> dict[str, int]:
    """Apply the baseline schema and load the reference data if it is missing; return table counts.

    The schema is additive (``CREATE … IF NOT EXISTS``). Loading the reference data replaces
    hs_codes and psra_rules, so on a database psra-bench does not own (``owned=False``: ``migrate``
    and ``serve`` pointed at a team's database) it happens only while both tables are empty.
    """
    from psra_bench.infra import postgres as db

    db.apply_schema(conn)
    hs = conn.execute("SELECT count(*) FROM hs_codes").fetchone()
    rl = conn.execute("SELECT count(*) FROM psra_rules").fetchone()
    incomplete = not hs or not rl or hs[0] < len(hs_rows()) or rl[0] != len(rules())
    if incomplete and (owned or (hs and rl and hs[0] == 0 and rl[0] == 0)):
        load_reference_data(conn)
    if not conn.autocommit:
        conn.commit()
    return table_counts(conn)


#: The baseline schema's tables, in the order ``doctor`` lists them.
TABLES = ("hs_codes", "psra_rules", "psra_verdicts", "tenants", "suppliers", "supplier_declarations", "erp_outbox")


def table_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Row counts of the PSRA tables (exact counts; cheap at the scales psra-bench uses); 0 for a missing one."""
    return {table: n or 0 for table, n in existing_table_counts(conn).items()}


def existing_table_counts(conn: psycopg.Connection[Any]) -> dict[str, int | None]:
    """Row counts of the PSRA tables, read only: None for a table the database does not have."""
    out: dict[str, int | None] = {}
    for table in TABLES:
        present = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{table}",)).fetchone()
        row = conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone() if present and present[0] else None
        out[table] = int(row[0]) if row else None
    return out
