"""Verdict storage: the rules an assessment loads, the row a verdict becomes, assess-and-store."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from psra_bench.exceptions import InputError
from psra_bench.psra import rules as orr
from psra_bench.psra.assessment import (
    UNMATCHED_RULE_ID,
    AssessmentInput,
    AssessmentRequest,
    KnownHsCodes,
    Verdict,
    assess,
    parse_request,
    request_to_dict,
    verdict_to_dict,
)

__all__ = ["load_rules", "verdict_row", "store_verdict", "assess_and_store"]


_RULE_COLUMNS = """rule_id, version, agreement_code, agreement_name, title, hs_chapter, hs_heading, hs_subheading,
    jurisdictions, effective_from, effective_to, priority, supersedes, payload"""
_RULES_BY_AGREEMENT = f"SELECT {_RULE_COLUMNS} FROM psra_rules WHERE agreement_code = %(agreement_code)s"
_RULES_BY_RULE = (
    f"SELECT {_RULE_COLUMNS} FROM psra_rules WHERE agreement_code = "
    "(SELECT agreement_code FROM psra_rules WHERE rule_id = %(rule_id)s)"
)
_VERDICT_COLUMNS = """id evaluation_id request_id rule_id tenant_id status confidence citations reasons notes
    ledger_reference input_payload input_hash processing_time_ms rules_evaluated agreement_code hs_subheading
    effective_date export_country import_country lineage_required decided_at created_at updated_at""".split()
_INSERT_VERDICT = (
    f"INSERT INTO psra_verdicts ({', '.join(_VERDICT_COLUMNS)}) VALUES ("
    + ", ".join(f"%({c})s" for c in _VERDICT_COLUMNS)
    + ")"
)
#: A verdict is stored once per evaluation_id: the baseline's unique index
#: idx_psra_verdicts_evaluation_id is the key, so no index is added (the counts stay 20 / 46). A
#: job's verdict has an evaluation_id derived from the job id, so a re-run after a crash adds nothing.
_INSERT_VERDICT_ONCE = _INSERT_VERDICT + " ON CONFLICT (evaluation_id) DO NOTHING"


_KNOWN_AGREEMENTS = "SELECT DISTINCT agreement_code FROM psra_rules ORDER BY 1"


def _rules_query(agreement_code: str | None, rule_id: str | None) -> tuple[str, dict[str, Any]]:
    if agreement_code:
        return _RULES_BY_AGREEMENT, {"agreement_code": agreement_code.upper()}
    if rule_id:
        return _RULES_BY_RULE, {"rule_id": rule_id.upper()}
    raise InputError("agreement_code", agreement_code, "an agreement code such as CETA (or a rule_id)")


def _no_rules_error(agreement_code: str | None, rule_id: str | None, known: Sequence[str]) -> InputError:
    if agreement_code:
        return InputError("agreement_code", agreement_code, "one of " + ", ".join(known))
    return InputError("rule_id", rule_id, "the id of a rule in psra_rules")


def load_rules(
    conn: psycopg.Connection[Any], *, agreement_code: str | None = None, rule_id: str | None = None
) -> tuple[orr.Rule, ...]:
    """All rules of an agreement (or of ``rule_id``'s agreement) from psra_rules, compiled; one query."""
    query, params = _rules_query(agreement_code, rule_id)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, params).fetchall()
        if not rows:
            known = [r["agreement_code"] for r in cur.execute(_KNOWN_AGREEMENTS).fetchall()]
            raise _no_rules_error(agreement_code, rule_id, known)
    return orr.compile_rules(rows)


def verdict_row(verdict: Verdict, request: AssessmentInput) -> dict[str, Any]:
    """Column -> value of the ``psra_verdicts`` row of ``verdict`` (jsonb columns wrapped in Jsonb)."""
    if verdict.tenant_id is None:
        raise InputError("tenant_id", None, "a tenant UUID: a verdict without a tenant is not stored")
    now = dt.datetime.now(dt.UTC)
    return {
        "id": uuid.uuid4(),
        "evaluation_id": verdict.evaluation_id,
        "request_id": verdict.request_id,
        "rule_id": verdict.rule_id or UNMATCHED_RULE_ID,
        "tenant_id": verdict.tenant_id,
        "status": verdict.status,
        "confidence": verdict.confidence,
        "citations": Jsonb([c.model_dump(mode="json") for c in verdict.citations]),
        "reasons": Jsonb(verdict_to_dict(verdict)["reasons"]),
        "notes": None,
        "ledger_reference": verdict.ledger_reference,
        "input_payload": Jsonb(request_to_dict(request)),
        "input_hash": verdict.input_hash,
        "processing_time_ms": round(verdict.processing_time_ms),
        "rules_evaluated": verdict.rules_evaluated,
        "agreement_code": verdict.agreement_code,
        "hs_subheading": verdict.hs_code,
        "effective_date": verdict.assessment_date,
        "export_country": verdict.origin_country,
        "import_country": verdict.destination_country,
        "lineage_required": verdict.lineage_required,
        "decided_at": verdict.decided_at,
        "created_at": now,
        "updated_at": now,
    }


def store_verdict(conn: psycopg.Connection[Any], verdict: Verdict, request: AssessmentInput) -> bool:
    """INSERT ``verdict`` into psra_verdicts on ``conn`` unless its evaluation_id is stored already.

    Returns True when a row was added (the caller owns the transaction).
    """
    return conn.execute(_INSERT_VERDICT_ONCE, verdict_row(verdict, request)).rowcount == 1


async def store_verdict_async(conn: psycopg.AsyncConnection[Any], verdict: Verdict, request: AssessmentInput) -> bool:
    """:func:`store_verdict` on an asyncio connection (the API's synchronous assessment route)."""
    return (await conn.execute(_INSERT_VERDICT_ONCE, verdict_row(verdict, request))).rowcount == 1


def _timed(verdict: Verdict, started: float) -> Verdict:
    return verdict.model_copy(update={"processing_time_ms": (time.perf_counter() - started) * 1000.0})


def _store(
    conn: psycopg.Connection[Any],
    req: AssessmentRequest,
    started: float,
    known: KnownHsCodes,
    request_id: uuid.UUID | None,
    rules: Iterable[orr.Rule | Mapping[str, Any]] | None,
) -> Verdict:
    # A caller's open transaction stays the caller's; otherwise this call commits its own row.
    owns = conn.autocommit or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    loaded = load_rules(conn, agreement_code=req.agreement_code, rule_id=req.rule_id) if rules is None else rules
    verdict = _timed(assess(req, loaded, known, request_id=request_id), started)
    with conn.transaction():
        conn.execute(_INSERT_VERDICT, verdict_row(verdict, req))
    if owns and not conn.autocommit:
        conn.commit()
    return verdict


def assess_and_store(
    conn_or_pool: psycopg.Connection[Any] | ConnectionPool,
    request: AssessmentRequest | Mapping[str, Any],
    *,
    known_hs_codes: KnownHsCodes = None,
    request_id: uuid.UUID | None = None,
    rules: Iterable[orr.Rule | Mapping[str, Any]] | None = None,
) -> Verdict:
    """Load the agreement's rules (unless ``rules`` is given), assess, INSERT into psra_verdicts; return the verdict.

    The row is committed, except on a connection already inside a transaction: that stays the caller's.
    Bad input raises InputError before anything is written.
    """
    started = time.perf_counter()
    req = parse_request(request)
    if isinstance(conn_or_pool, ConnectionPool):
        with conn_or_pool.connection() as conn:
            return _store(conn, req, started, known_hs_codes, request_id, rules)
    return _store(conn_or_pool, req, started, known_hs_codes, request_id, rules)
