"""Seeded synthetic data: tenants, suppliers, LTSDs and ``psra_verdicts`` at any scale, via COPY.

Same seed and scale -> the same rows and the same checksum (a SHA-256 over the generated
columns). The skew is meant to look like a real PSRA service: tenants follow a Zipf-like law
(a few big importers, a long tail), trade routes follow each agreement's parties, statuses and
confidence depend on the rule, ``created_at`` spreads over two years with more recent activity,
and a share of verdicts repeat an earlier input (same ``input_hash``) for duplicate detection.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg.copy import QueuedLibpqWriter

from psra_bench.constants import MAX_TENANTS, MAX_VERDICTS
from psra_bench.db.ownership import require_writable
from psra_bench.db.reference import hs_rows, rules
from psra_bench.exceptions import SeedError

__all__ = [
    "SeedResult",
    "seed_database",
    "verdict_count",
    "copy_text",
    "DEFAULT_END",
    "tenant_ids",
    "EU_MEMBERS",
]

#: The moment the synthetic history ends (fixed, so a seed means the same data on every day).
DEFAULT_END = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
_SPAN_DAYS = 730
_CHUNK = 50_000
_STATUSES = ("qualified", "not_qualified", "insufficient_data")
#: EU member states weighted roughly by trade volume (for the "EU" jurisdiction).
EU_MEMBERS = {
    "DE": 22,
    "NL": 12,
    "FR": 11,
    "IT": 10,
    "BE": 7,
    "ES": 7,
    "PL": 6,
    "IE": 4,
    "AT": 3,
    "SE": 3,
    "CZ": 3,
    "DK": 2,
    "HU": 2,
    "PT": 1,
    "FI": 1,
    "RO": 1,
    "SK": 1,
}
_TENANT_NAMESPACE = uuid.UUID("0e7c5a1e-98a4-4f3c-8a36-7d0d3f1a2b01")


@dataclass(frozen=True)
class SeedResult:
    """What one seeding run wrote, how fast, and the checksum of what it generated."""

    verdicts: int
    tenants: int
    seconds: float
    rows_per_second: float
    checksum: str
    seed: int


def tenant_ids(n: int) -> list[str]:
    """The ids of the ``n`` synthetic tenants (stable: tenant k has the same id in every run)."""
    return [str(uuid.uuid5(_TENANT_NAMESPACE, f"tenant-{k}")) for k in range(n)]


def verdict_count(conn: psycopg.Connection[Any]) -> int:
    """Rows in psra_verdicts."""
    row = conn.execute("SELECT count(*) FROM psra_verdicts").fetchone()
    assert row is not None
    return int(row[0])


def _parties(jurisdictions: list[str]) -> tuple[list[str], np.ndarray]:
    countries: dict[str, float] = {}
    for j in jurisdictions:
        if j == "EU":
            countries.update({c: w / 10 for c, w in EU_MEMBERS.items()})
        else:
            countries[j] = 8.0
    names = list(countries)
    w = np.array([countries[c] for c in names])
    return names, w / w.sum()


def _seed_tenants(conn: psycopg.Connection[Any], n_tenants: int, rng: np.random.Generator) -> None:
    home = ["DE", "FR", "NL", "US", "CA", "MX", "GB", "JP", "IT", "ES"]
    ids = tenant_ids(n_tenants)
    conn.execute("TRUNCATE supplier_declarations, suppliers, tenants CASCADE")
    with conn.cursor().copy("COPY tenants (id, name, country) FROM STDIN") as cp:
        for k, tid in enumerate(ids):
            cp.write_row((tid, f"Tenant {k:04d}", home[int(rng.integers(len(home)))]))
    subs = [s for s in hs_rows() if s.level == 6]
    with conn.cursor().copy("COPY suppliers (id, tenant_id, name, country) FROM STDIN") as cp:
        supplier_rows = []
        for k, tid in enumerate(ids):
            for s in range(3):
                sid = str(uuid.uuid5(_TENANT_NAMESPACE, f"supplier-{k}-{s}"))
                supplier_rows.append(sid)
                cp.write_row((sid, tid, f"Supplier {k:04d}-{s}", home[int(rng.integers(len(home)))]))
    with conn.cursor().copy(
        "COPY supplier_declarations (id, supplier_id, hs_subheading, origin_country, agreement_code,"
        " valid_from, valid_to) FROM STDIN"
    ) as cp:
        for i, sid in enumerate(supplier_rows):
            for d in range(2):
                start = dt.date(2025, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365)))
                cp.write_row(
                    (
                        str(uuid.uuid5(_TENANT_NAMESPACE, f"ltsd-{i}-{d}")),
                        sid,
                        subs[int(rng.integers(len(subs)))].code,
                        home[int(rng.integers(len(home)))],
                        "EU-UK-TCA",
                        start,
                        start + dt.timedelta(days=365),
                    )
                )


#: COPY text format: these characters inside a value must be written as backslash escapes.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(value: str | None) -> str:
    """``value`` as one field of COPY's text format: backslash, tab, newline, CR escaped; None is ``\\N``."""
    return "\\N" if value is None else value.translate(_COPY_ESCAPES)


class _Generator:
    """Vectorized verdict rows for one seed; ``chunk(n)`` returns COPY text and feeds the checksum."""

    def __init__(
        self,
        seed: int | list[int],
        n_tenants: int,
        end: dt.datetime,
        duplicate_share: float,
        rule_set: Sequence[Mapping[str, Any]],
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.end_us = int(end.timestamp() * 1_000_000)
        self.tenants = np.array(tenant_ids(n_tenants))
        ranks = np.arange(1, n_tenants + 1)
        zipf = 1.0 / ranks**1.1
        self.tenant_p = zipf / zipf.sum()
        self.rules = list(rule_set)
        self.rule_p = np.array([3.0 if r["effective_to"] is None else 0.5 for r in self.rules])
        self.rule_p /= self.rule_p.sum()
        self.duplicate_share = duplicate_share
        subs = [r for r in hs_rows() if r.level == 6]
        self.rule_codes = []
        self.rule_parties = []
        self.rule_json: list[tuple[str, str, str, str]] = []
        for r in self.rules:
            prefix = r.get("hs_subheading") or r.get("hs_heading") or r["hs_chapter"]
            codes = [s.code for s in subs if s.code.startswith(prefix)]
            self.rule_codes.append(np.array([copy_text(c) for c in codes]))
            names, p = _parties(r["jurisdictions"])
            self.rule_parties.append(([copy_text(c) for c in names], np.cumsum(p)))
            payload = r["payload"]
            cites = [{"rule_id": r["rule_id"], "clause": c} for c in payload["decision"]["citations"]]
            first = payload["decision"]["disqualification_reasons"][0]
            reasons = [{"code": first["code"], "severity": first["severity"]}]
            # Every text a row carries comes from these per-rule values: escaped for COPY once, here.
            self.rule_json.append(
                (
                    copy_text(json.dumps(cites, ensure_ascii=False)),
                    copy_text(json.dumps(reasons, ensure_ascii=False)),
                    copy_text(payload["audit"]["ledger_reference"]),
                    "t" if payload["audit"]["lineage_required"] else "f",
                )
            )
        self.hasher = hashlib.sha256()
        # A pool of popular inputs that many verdicts repeat (same tenant, rule, route, product).
        self.pool: tuple[np.ndarray, ...] | None = None

    def _uuids(self, n: int) -> list[str]:
        raw = self.rng.bytes(16 * n)
        hx = raw.hex()
        return [hx[i : i + 32] for i in range(0, 32 * n, 32)]

    def chunk(self, n: int) -> str:
        """The next ``n`` verdict rows as COPY text (tab-separated, one row per line)."""
        rng = self.rng
        tenant_idx = rng.choice(len(self.tenants), size=n, p=self.tenant_p)
        rule_idx = rng.choice(len(self.rules), size=n, p=self.rule_p)
        status_u = rng.random(n)
        status_idx = np.where(status_u < 0.62, 0, np.where(status_u < 0.92, 1, 2))
        conf = np.where(
            status_idx == 0, rng.beta(8, 2, n), np.where(status_idx == 1, rng.beta(6, 3, n), rng.beta(2, 5, n))
        )
        age_us = (_SPAN_DAYS * 86_400_000_000 * rng.random(n) ** 1.6).astype(np.int64)
        created = (self.end_us - age_us).astype("datetime64[us]")
        processing_ms = rng.lognormal(3.5, 0.6, n).astype(np.int64)
        rules_eval = rng.integers(1, 5, n)
        dup = rng.random(n) < self.duplicate_share
        pick_code = rng.random(n)
        pick_route = rng.random((n, 2))
        id_bytes = rng.bytes(48 * n)
        hash_bytes = rng.bytes(32 * n)
        for arr in (
            tenant_idx,
            rule_idx,
            status_idx,
            conf,
            age_us,
            processing_ms,
            rules_eval,
            dup,
            pick_code,
            pick_route,
        ):
            self.hasher.update(np.ascontiguousarray(arr).tobytes())
        self.hasher.update(id_bytes)
        self.hasher.update(hash_bytes)

        tenant = self.tenants[tenant_idx]
        code = np.empty(n, dtype=object)
        exp = np.empty(n, dtype=object)
        imp = np.empty(n, dtype=object)
        for r in range(len(self.rules)):
            rows = np.nonzero(rule_idx == r)[0]
            if not len(rows):
                continue
            codes = self.rule_codes[r]
            code[rows] = codes[(pick_code[rows] * len(codes)).astype(np.int64)]
            names, cum = self.rule_parties[r]
            e = np.minimum(np.searchsorted(cum, pick_route[rows, 0]), len(names) - 1)
            m = np.minimum(np.searchsorted(cum, pick_route[rows, 1]), len(names) - 1)
            m = np.where(m == e, (m + 1) % len(names), m)
            exp[rows] = np.asarray(names, dtype=object)[e]
            imp[rows] = np.asarray(names, dtype=object)[m]
        hx = hash_bytes.hex()
        input_hash = np.array([hx[i : i + 64] for i in range(0, 64 * n, 64)], dtype=object)

        # Popular inputs: the first chunk lends rows to a pool that later duplicates copy.
        if self.pool is None:
            originals = np.nonzero(~dup)[0][: min(5000, max(1, n // 7))]
            self.pool = (
                tenant[originals],
                rule_idx[originals],
                code[originals],
                exp[originals],
                imp[originals],
                input_hash[originals],
            )
        dups = np.nonzero(dup)[0]
        if len(dups):
            src = (pick_code[dups] * len(self.pool[0])).astype(np.int64)
            tenant = tenant.astype(object)
            for target, pooled in zip((tenant, rule_idx, code, exp, imp, input_hash), self.pool, strict=True):
                target[dups] = pooled[src]

        ih = id_bytes.hex()
        ids = [ih[i : i + 32] for i in range(0, 96 * n, 96)]
        evals = [ih[i + 32 : i + 64] for i in range(0, 96 * n, 96)]
        reqs = [ih[i + 64 : i + 96] for i in range(0, 96 * n, 96)]
        ts = np.char.add(np.datetime_as_string(created, unit="us"), "+00").tolist()
        day = np.datetime_as_string(created, unit="D").tolist()
        rule_cols = [np.asarray(c, dtype=object)[rule_idx] for c in zip(*self.rule_json, strict=True)]
        rule_id = np.asarray([copy_text(r["rule_id"]) for r in self.rules], dtype=object)[rule_idx]
        agreement = np.asarray([copy_text(r["agreement_code"]) for r in self.rules], dtype=object)[rule_idx]
        status = np.asarray(_STATUSES, dtype=object)[status_idx]
        reason = np.where(status_idx == 0, "[]", rule_cols[1])
        cols = [
            ids,
            evals,
            reqs,
            rule_id.tolist(),
            tenant.tolist(),
            status.tolist(),
            [f"{c:.4f}" for c in conf.tolist()],
            rule_cols[0].tolist(),
            reason.tolist(),
            input_hash.tolist(),
            processing_ms.astype(str).tolist(),
            rules_eval.astype(str).tolist(),
            agreement.tolist(),
            code.tolist(),
            day,
            exp.tolist(),
            imp.tolist(),
            rule_cols[3].tolist(),
            rule_cols[2].tolist(),
            ts,
            ts,
            ts,
        ]
        return "\n".join(map("\t".join, zip(*cols, strict=True))) + "\n"


def _drop_verdict_indexes(conn: psycopg.Connection[Any]) -> list[str]:
    """Drop every index of psra_verdicts; return the statements that recreate them exactly."""
    rows = conn.execute(
        """SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), c.conname, c.contype
           FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
           WHERE i.indrelid = 'psra_verdicts'::regclass ORDER BY i.indexrelid"""
    ).fetchall()
    rebuild = []
    for name, indexdef, conname, contype in rows:
        if contype == "p":
            conn.execute(f'ALTER TABLE psra_verdicts DROP CONSTRAINT "{conname}"'.encode())
            rebuild.append(f'ALTER TABLE psra_verdicts ADD CONSTRAINT "{conname}" PRIMARY KEY (id)')
        else:
            conn.execute(f"DROP INDEX {name}".encode())
            rebuild.append(indexdef)
    return rebuild


_COPY_VERDICTS = (
    "COPY psra_verdicts (id, evaluation_id, request_id, rule_id, tenant_id, status, confidence, citations,"
    " reasons, input_hash, processing_time_ms, rules_evaluated, agreement_code, hs_subheading, effective_date,"
    " export_country, import_country, lineage_required, ledger_reference, decided_at, created_at, updated_at)"
    " FROM STDIN"
)


def _check_seed_args(verdicts: Any, tenants: Any, mode: Any = "refuse") -> None:
    """Refuse a bad seed request in one sentence before anything touches a server."""
    if isinstance(verdicts, bool) or not isinstance(verdicts, int) or not 0 <= verdicts <= MAX_VERDICTS:
        raise SeedError(f"--verdicts={verdicts!r} is not valid: use a whole number from 0 to {MAX_VERDICTS:,}.")
    if isinstance(tenants, bool) or not isinstance(tenants, int) or not 1 <= tenants <= MAX_TENANTS:
        raise SeedError(f"--tenants={tenants!r} is not valid: use a whole number from 1 to {MAX_TENANTS:,}.")
    if mode not in ("refuse", "force", "append"):
        raise SeedError(f"seed mode {mode!r} is not valid: use refuse, force or append.")


def seed_database(
    conn: psycopg.Connection[Any],
    verdicts: int,
    *,
    seed: int = 42,
    tenants: int = 200,
    mode: str = "refuse",
    end: dt.datetime = DEFAULT_END,
    duplicate_share: float = 0.12,
    progress: Callable[[int], None] | None = None,
    rule_set: Sequence[Mapping[str, Any]] | None = None,
) -> SeedResult:
    """Write ``verdicts`` synthetic verdicts (and the tenants) with COPY; return rows/s and checksum.

    ``mode`` says what to do when psra_verdicts already has rows: ``refuse`` (raise SeedError,
    nothing is touched), ``force`` (truncate and reseed) or ``append`` (add more rows).
    ``rule_set``: the rules the verdicts cite (default: the 13 vendored ones, as in psra_rules).
    """
    _check_seed_args(verdicts, tenants, mode)
    require_writable(conn, "seed")  # a database of someone else's is refused before a row is written
    existing = verdict_count(conn)
    if existing and mode == "refuse":
        raise SeedError(
            f"psra_verdicts already holds {existing:,} rows; pass --force to replace them or --append to add more."
        )
    started = time.perf_counter()
    fresh = mode == "force" or not existing
    # Appending continues the data with a stream of its own (still a function of seed and the
    # row count it starts from), so it never repeats the ids of the rows already there.
    gen = _Generator(seed if fresh else [seed, existing], tenants, end, duplicate_share, rule_set or rules())
    with conn.transaction():
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        rebuild: list[str] = []
        if fresh:
            # Bulk-load the classic way: drop the table's indexes, COPY, rebuild them. It is one
            # transaction, so a killed seed rolls back to the old rows *and* the old indexes.
            rebuild = _drop_verdict_indexes(conn)
            conn.execute("TRUNCATE psra_verdicts")
            _seed_tenants(conn, tenants, np.random.default_rng(seed + 1))
        done = 0
        statement = _COPY_VERDICTS + (" WITH (FREEZE)" if fresh else "")
        with conn.cursor().copy(statement, writer=QueuedLibpqWriter(conn.cursor())) as cp:
            while done < verdicts:
                n = min(_CHUNK, verdicts - done)
                cp.write(gen.chunk(n))
                done += n
                if progress:
                    progress(n)
        for statement in rebuild:
            conn.execute(statement.encode())
        conn.execute(
            "INSERT INTO psra_bench.seed_runs (seed, verdicts, checksum) VALUES (%s, %s, %s)",
            (seed, verdicts, gen.hasher.hexdigest()[:16]),
        )
    conn.execute("ANALYZE psra_verdicts")
    seconds = time.perf_counter() - started
    return SeedResult(
        verdicts, tenants, seconds, verdicts / seconds if seconds else 0.0, gen.hasher.hexdigest()[:16], seed
    )
