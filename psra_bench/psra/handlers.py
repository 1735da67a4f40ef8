"""The default job handlers' parts: ``assessment`` (an injected assessment function) and ``bulk_import`` (HS codes).

They are registered in one place, :func:`psra_bench.psra.service.register_default_handlers`.

``bulk_import`` upserts ``{code, description}`` items into ``hs_codes`` in one transaction
(batches of 500, progress after each), deriving level, chapter and parent from the code
(``01`` → level 2, parent ``TOTAL`` as in the vendored table; ``0101`` → level 4, parent
``01``; ``010121`` → level 6, parent ``0101``) and copying ``section`` from the code's chapter
row (NULL when the chapter is unknown). A cancelled or failed import rolls back whole. Just
before its COMMIT the job passes its point of no return (from then on a cancel is refused, so a
job is never CANCELLED with its rows committed); after the commit it always calls the injected
``on_done`` (cache invalidation), even if the job is being stopped, and reports what it returned.
A re-run (its worker died) upserts the same rows again: the import is idempotent.

``assessment`` runs its function in a thread (:func:`run_in_thread`), so a stop waits for it.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from psra_bench.exceptions import DatabaseConnectionError, JobError, JobInputError
from psra_bench.infra.postgres import dsn_host_port
from psra_bench.jobs.models import current_job, run_in_thread, run_to_the_end
from psra_bench.settings import redact

if TYPE_CHECKING:
    from psra_bench.jobs.models import JobHandler, ProgressCallback

__all__ = [
    "HsItem",
    "MAX_BULK_ITEMS",
    "MAX_DESCRIPTION",
    "BULK_BATCH_SIZE",
    "validate_bulk_items",
    "validate_assessment_payload",
    "make_assessment_handler",
    "make_bulk_import_handler",
    "upsert_hs_codes",
    "check_bulk_payload",
]

#: Most items one bulk_import job may carry.
MAX_BULK_ITEMS = 10_000
#: Longest HS description accepted (the vendored table's longest is 255 characters).
MAX_DESCRIPTION = 1000
#: Rows per executemany batch (progress is reported after each).
BULK_BATCH_SIZE = 500

_LEVEL_PARENT = {2: lambda c: "TOTAL", 4: lambda c: c[:2], 6: lambda c: c[:4]}

_UPSERT = """
INSERT INTO hs_codes (code, description, parent, level, section, chapter, updated_at)
VALUES (%(code)s, %(description)s, %(parent)s, %(level)s,
        (SELECT h.section FROM hs_codes h WHERE h.code = %(chapter)s), %(chapter)s, now())
ON CONFLICT (code) DO UPDATE SET
    description = EXCLUDED.description,
    parent = EXCLUDED.parent,
    level = EXCLUDED.level,
    chapter = EXCLUDED.chapter,
    section = COALESCE(EXCLUDED.section, hs_codes.section),
    updated_at = now()
RETURNING (xmax = 0) AS inserted
"""


@dataclass(frozen=True)
class HsItem:
    """One validated bulk-import row with its derived columns."""

    code: str
    description: str
    level: int
    parent: str
    chapter: str

    def params(self) -> dict[str, Any]:
        """Query parameters for the upsert statement."""
        return {
            "code": self.code,
            "description": self.description,
            "parent": self.parent,
            "level": self.level,
            "chapter": self.chapter,
        }


def validate_bulk_items(payload: dict[str, Any]) -> list[HsItem]:
    """The payload's ``items`` as HsItems; JobInputError naming the first bad item (``items[i].code``) otherwise."""
    items = payload.get("items") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items:
        raise JobInputError("items", items, "use a non-empty list of {code, description} objects")
    if len(items) > MAX_BULK_ITEMS:
        raise JobInputError("items", items, f"use at most {MAX_BULK_ITEMS} items per job (got {len(items)})")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise JobInputError(f"items[{i}]", item, "use an object with code and description")
        extra = sorted(str(k) for k in item if k not in ("code", "description"))
        if extra:
            raise JobInputError(f"items[{i}].{extra[0]}", item[extra[0]], "an item has only code and description")
        raw_code, description = item.get("code"), item.get("description")
        code = raw_code.replace(".", "").strip() if isinstance(raw_code, str) else ""
        if not (code.isascii() and code.isdigit() and len(code) in _LEVEL_PARENT):
            raise JobInputError(f"items[{i}].code", raw_code, "use 2, 4 or 6 digits (dots allowed, e.g. 8471.30)")
        if not isinstance(description, str) or not description.strip() or len(description) > MAX_DESCRIPTION:
            raise JobInputError(
                f"items[{i}].description", description, f"use 1 to {MAX_DESCRIPTION} characters of text"
            )
        if "\x00" in description:
            raise JobInputError(f"items[{i}].description", description, "use text without NUL characters")
        out.append(HsItem(code, description.strip(), len(code), _LEVEL_PARENT[len(code)](code), code[:2]))
    return out


_COUNTRY = re.compile(r"[A-Za-z]{2}")


def validate_assessment_payload(payload: dict[str, Any]) -> None:
    """Check an assessment payload's shape (hs_code, origin_country, destination_country, optional rule_id)."""
    hs = payload.get("hs_code")
    digits = hs.replace(".", "").strip() if isinstance(hs, str) else ""
    if not (digits.isascii() and digits.isdigit() and 2 <= len(digits) <= 10):
        raise JobInputError("hs_code", hs, "use 2 to 10 digits (dots allowed, e.g. 8471.30)")
    for name in ("origin_country", "destination_country"):
        value = payload.get(name)
        if not isinstance(value, str) or not _COUNTRY.fullmatch(value):
            raise JobInputError(name, value, "use a two-letter country code such as MX")
    rule_id = payload.get("rule_id")
    if rule_id is not None and (not isinstance(rule_id, str) or not 0 < len(rule_id) <= 32):
        raise JobInputError("rule_id", rule_id, "use a rule id of 1-32 characters, or leave it out")


def make_assessment_handler(assessment_fn: Callable[[dict[str, Any]], Any]) -> JobHandler:
    """A handler that validates the payload and runs ``assessment_fn(payload)`` (sync functions run in a thread)."""

    async def assessment(payload: dict[str, Any], update_progress: ProgressCallback) -> Any:
        validate_assessment_payload(payload)
        await update_progress(10, "Running assessment...")
        if inspect.iscoroutinefunction(assessment_fn):
            result = await assessment_fn(payload)
        else:
            result = await run_in_thread(assessment_fn, payload)
            if inspect.isawaitable(result):
                result = await result
        await update_progress(100, "Assessment complete")
        return result

    return assessment


async def upsert_hs_codes(
    conn: psycopg.AsyncConnection[Any],
    items: list[HsItem],
    progress: ProgressCallback | None = None,
    batch_size: int = BULK_BATCH_SIZE,
    before_commit: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, int]:
    """Upsert ``items`` in batches inside one transaction; return counts of inserted and updated rows.

    ``before_commit`` is awaited after the last batch, inside the transaction: if it raises, the
    transaction rolls back (a job's point of no return, refused because a cancel came first).
    """
    inserted = updated = 0
    total = len(items)
    async with conn.transaction():
        async with conn.cursor() as cur:
            for start in range(0, total, batch_size):
                batch = items[start : start + batch_size]
                await cur.executemany(_UPSERT, [it.params() for it in batch], returning=True)
                while True:
                    row = await cur.fetchone()
                    if row is not None and row[0]:
                        inserted += 1
                    elif row is not None:
                        updated += 1
                    if not cur.nextset():
                        break
                if progress is not None:
                    done = start + len(batch)
                    await progress(5 + (90 * done) // total, f"upserted {done} of {total} HS codes")
        if before_commit is not None:
            await before_commit()
    return {"inserted": inserted, "updated": updated}


def make_bulk_import_handler(
    dsn: str | None,
    *,
    on_done: Callable[[], Awaitable[int] | int] | None = None,
    batch_size: int = BULK_BATCH_SIZE,
) -> JobHandler:
    """A handler that upserts the payload's HS code items into ``dsn``'s hs_codes, then calls ``on_done``."""

    async def bulk_import(payload: dict[str, Any], update_progress: ProgressCallback) -> dict[str, Any]:
        items = validate_bulk_items(payload)
        if dsn is None:
            raise JobError("bulk_import needs a database: settings.db_dsn is not set (call ensure_services first).")
        await update_progress(5, f"importing {len(items)} HS codes")
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, connect_timeout=10)
        except psycopg.OperationalError as e:
            host, port = dsn_host_port(dsn)
            reason = redact(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
            raise DatabaseConnectionError("PostgreSQL", host, port, reason) from None
        job = current_job()
        async with conn:
            counts = await upsert_hs_codes(
                conn, items, update_progress, batch_size, job.point_of_no_return if job is not None else None
            )
        invalidated: int | None = None
        if on_done is not None:
            # Committed: the invalidation runs whatever happens to the job now (the cache must not
            # serve the old descriptions), and a plain function (a sync client) runs in a thread.
            invalidated = await run_to_the_end(_invalidate(on_done))
        await update_progress(100, f"imported {len(items)} HS codes")
        return {"imported": len(items), **counts, "invalidated": invalidated}

    return bulk_import


async def _invalidate(on_done: Callable[[], Awaitable[int] | int]) -> int:
    outcome = on_done() if inspect.iscoroutinefunction(on_done) else await asyncio.to_thread(on_done)
    return int(await outcome) if inspect.isawaitable(outcome) else int(outcome)


def check_bulk_payload(payload: dict[str, Any]) -> None:
    """Submit-time check of a bulk_import payload (the PayloadValidator form of validate_bulk_items)."""
    validate_bulk_items(payload)
