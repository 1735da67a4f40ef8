"""A realistic recorded log for the replay tests, written in nginx combined format, JSON lines and HAR.

The same traffic in each format: a varying rate per 10-second bucket over 60 s of recorded time,
a mix of this API's routes with real HS codes, rule ids, agreements and the seeded tenants, a few
requests for routes this API does not have, a few lines that are not log lines, and requests that
carry credentials (an Authorization header, a token in the query string) that must never be stored.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from psra_bench.db.reference import hs_rows, rules
from psra_bench.db.seed import tenant_ids

#: Requests per second of recorded time in each 10-second bucket.
RATES: Sequence[float] = (4, 9, 13, 6, 11, 5)
#: The recorded log starts here (a whole second, so every format has the same buckets).
START = dt.datetime(2026, 12, 1, 9, 30, 0, tzinfo=dt.UTC)
#: A credential the log carries, which no output may contain.
SECRET = "hunter2-s3cr3t-token"
GARBAGE = (
    f"Authorization: Bearer {SECRET} (a header pasted into the log)",
    '{"time": "yesterday", "method": 1',
    "\x00\x01 binary junk ~~~",
    "GET / HTTP",
    "--",
)
UNKNOWN = ("GET /wp-login.php", "GET /api/v2/products/8471", "POST /api/hs/8471.30", "GET /healthz")


@dataclass(frozen=True)
class Logged:
    """One recorded request."""

    offset_s: float
    method: str
    target: str
    status: int
    duration_ms: float
    tenant: str | None
    name: str | None  # the endpoint template, None for a route this API does not have


def _requests(rng: random.Random) -> dict[str, tuple[int, Callable[[str], tuple[str, str, str, int]]]]:
    """Request kind -> (weight, tenant -> (method, target, endpoint template, status))."""
    codes = [r.code for r in hs_rows() if r.level in (4, 6)][:400]
    rule_ids = [r["rule_id"] for r in rules()]
    agreements = sorted({r["agreement_code"] for r in rules()})
    words = ("horses", "cotton", "steel", "engines", "plastics", "coffee")
    report = "/trade-route-report?date_from=2026-01-01&date_to=2026-06-30"
    tid = "GET /api/tenants/{tenant_id}"
    return {
        "hs": (30, lambda t: ("GET", f"/api/hs/{rng.choice(codes)}", "GET /api/hs/{code}", 200)),
        "search": (10, lambda t: ("GET", f"/api/hs/search?q={rng.choice(words)}&limit=20", "GET /api/hs/search", 200)),
        "rules": (8, lambda t: ("GET", f"/api/rules?agreement={rng.choice(agreements)}", "GET /api/rules", 200)),
        "rule": (8, lambda t: ("GET", f"/api/rules/{rng.choice(rule_ids)}", "GET /api/rules/{rule_id}", 200)),
        "assess": (9, lambda t: ("POST", "/api/assessments", "POST /api/assessments", 200)),
        "history": (8, lambda t: ("GET", f"/api/tenants/{t}/verdicts?limit=50", f"{tid}/verdicts", 200)),
        "dashboard": (8, lambda t: ("GET", f"/api/tenants/{t}/dashboard?days=30", f"{tid}/dashboard", 200)),
        "report": (4, lambda t: ("GET", f"/api/tenants/{t}{report}", f"{tid}/trade-route-report", 200)),
        "recent": (3, lambda t: ("GET", "/api/verdicts/recent?limit=100", "GET /api/verdicts/recent", 200)),
        "route": (3, lambda t: ("GET", "/api/trade-routes/CN/DE",
                                "GET /api/trade-routes/{export_country}/{import_country}", 200)),
        "dup": (3, lambda t: ("GET", f"/api/tenants/{t}/duplicates/{rng.getrandbits(256):064x}",
                             "GET /api/tenants/{tenant_id}/duplicates/{input_hash}", 200)),
        "submit": (2, lambda t: ("POST", "/api/jobs/assessment/submit", "POST /api/jobs/assessment/submit", 202)),
        "status": (2, lambda t: ("GET", f"/api/jobs/{uuid.UUID(int=rng.getrandbits(128))}/status",
                                "GET /api/jobs/{job_id}/status", 200)),
        "agreements": (2, lambda t: ("GET", "/api/agreements", "GET /api/agreements", 200)),
    }  # fmt: skip


def traffic(seed: int = 5) -> list[Logged]:
    """The recorded requests, in time order."""
    rng = random.Random(seed)
    tenants = tenant_ids(200)[:30]
    kinds = _requests(rng)
    names, weights = list(kinds), [w for w, _ in kinds.values()]
    out: list[Logged] = []
    for bucket, rate in enumerate(RATES):
        for off in sorted(bucket * 10 + rng.uniform(0, 10) for _ in range(int(rate * 10))):
            off = 0.0 if not out else off
            t = rng.choice(tenants)
            kind = rng.choices(names, weights)[0]
            if rng.random() < 0.03:
                method, path = rng.choice(UNKNOWN).split(" ")
                out.append(Logged(off, method, path, 404, 1.0, None, None))
                continue
            method, target, name, status = kinds[kind][1](t)
            if kind == "search" and rng.random() < 0.2:
                target += f"&token={SECRET}"  # a credential in a query string: dropped, never stored
            out.append(Logged(off, method, target, status, rng.uniform(2, 40), t, name))
    return out


def _when(off: float) -> dt.datetime:
    return START + dt.timedelta(seconds=off)


def write_combined(path: Path, log: Sequence[Logged]) -> Path:
    """nginx combined format (whole-second timestamps), garbage lines mixed in."""
    lines = []
    for i, r in enumerate(log):
        stamp = _when(r.offset_s).strftime("%d/%b/%Y:%H:%M:%S +0000")
        lines.append(
            f'10.0.{i % 7}.{i % 250} - - [{stamp}] "{r.method} {r.target} HTTP/1.1" {r.status} {100 + i % 900} '
            f'"-" "python-httpx/0.27"'
        )
        if i % 97 == 13 and i // 97 < len(GARBAGE):
            lines.append(GARBAGE[i // 97])
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jsonl(path: Path, log: Sequence[Logged]) -> Path:
    """JSON lines {time, method, path, status, duration, tenant} (ISO times with ms), garbage lines mixed in."""
    lines = []
    for i, r in enumerate(log):
        doc = {"time": _when(r.offset_s).isoformat(timespec="milliseconds"), "method": r.method, "path": r.target,
               "status": r.status, "duration": round(r.duration_ms, 2)}  # fmt: skip
        if r.tenant:
            doc["tenant"] = r.tenant
        if i % 50 == 7:
            doc["authorization"] = f"Bearer {SECRET}"
        lines.append(json.dumps(doc))
        if i % 97 == 13 and i // 97 < len(GARBAGE):
            lines.append(GARBAGE[i // 97])
    path.write_text("\n".join(lines) + "\n")
    return path


def write_har(path: Path, log: Sequence[Logged]) -> Path:
    """A HAR file with one entry per request (Authorization headers on some); three entries without a request."""
    entries: list[object] = []
    for i, r in enumerate(log):
        headers = [{"name": "Accept", "value": "application/json"}]
        if r.tenant:
            headers.append({"name": "X-Tenant-ID", "value": r.tenant})
        if i % 40 == 3:
            headers.append({"name": "Authorization", "value": f"Bearer {SECRET}"})
        entries.append({
            "startedDateTime": _when(r.offset_s).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "time": round(r.duration_ms, 2),
            "request": {"method": r.method, "url": f"https://psra.example.com{r.target}", "httpVersion": "HTTP/1.1",
                        "headers": headers, "queryString": [], "cookies": [], "headersSize": -1, "bodySize": 0},
            "response": {"status": r.status, "statusText": "", "httpVersion": "HTTP/1.1", "headers": [],
                         "cookies": [], "content": {"size": 0, "mimeType": "application/json"}, "redirectURL": "",
                         "headersSize": -1, "bodySize": -1},
            "cache": {}, "timings": {"send": 0, "wait": round(r.duration_ms, 2), "receive": 0},
        })  # fmt: skip
        if i % 97 == 13 and i // 97 < 3:
            entries.append({"startedDateTime": "garbage", "note": "no request"})
    doc = {"log": {"version": "1.2", "creator": {"name": "test", "version": "1"}, "entries": entries}}
    path.write_text(json.dumps(doc))
    return path


WRITERS = {"combined": write_combined, "jsonl": write_jsonl, "har": write_har}
