"""Recorded traffic: read an access log (nginx/Apache combined, JSON lines, HAR) and template it against this API.

:func:`read_log` turns a log into a :class:`RecordedLog`: every request whose method and path match
one of this API's routes (taken from the FastAPI app's own OpenAPI description, never a copy) with
its recorded time, endpoint template (``GET /api/hs/{code}``), the path to send (only the query
parameters the route declares are kept, so a token in a query string is dropped) and its tenant;
the requests for routes this API does not have, by path (query strings cut) and count; and the
lines that did not parse (counted, the first three quoted with query strings and credentials cut).
Its request mix (template -> share) and arrival curve (requests per second per 10-second bucket of
recorded time) are what :mod:`psra_bench.load.replay` replays and compares against.

A combined-format timestamp has whole seconds: the requests of one second are spread evenly over
it. Authorization headers and cookies are never read.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from psra_bench.exceptions import ParameterError

__all__ = [
    "LOG_FORMATS",
    "BUCKET_S",
    "Route",
    "RecordedRequest",
    "RecordedLog",
    "api_routes",
    "match_route",
    "read_log",
]

#: The access-log formats ``--format`` accepts.
LOG_FORMATS = ("combined", "jsonl", "har")
#: Width of one bucket of the arrival curve, in seconds of recorded time.
BUCKET_S = 10.0
#: Lines that did not parse which are quoted (the rest are only counted).
QUOTED_LINES = 3
#: Routes that are never replayed, and why: they rewrite shared data or need a body the log does not hold.
NOT_REPLAYED = {"POST /api/jobs/bulk-import/submit": "rewrites the shared HS table; its items are not in the log"}

_COMBINED = re.compile(
    r'^(?P<host>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>[A-Z]+) (?P<target>\S+)(?: HTTP/[\d.]+)?" '
    r"(?P<status>\d{3}) (?:\d+|-)"
)
_TENANT_HEADER = "x-tenant-id"
#: A word naming a credential: a quoted line is cut before the word holding it (the value may come on either side).
_CREDENTIAL = re.compile(r"(?i)\S*(authori[sz]ation|bearer|token|passw|secret|api[_-]?key|cookie|session)")
#: A long run of token characters (a key, a JWT, a hash): cut from quoted lines too.
_OPAQUE = re.compile(r"[A-Za-z0-9_.~+/=-]{24,}")


@dataclass(frozen=True)
class Route:
    """One operation of this API: method, path template, its query parameters and who may call it."""

    method: str
    template: str
    query: tuple[str, ...]
    #: The operator token is required (not merely optional) on this route.
    operator: bool
    has_body: bool
    #: The route reads the caller's tenant from X-Tenant-ID.
    tenant_header: bool = False

    @property
    def name(self) -> str:
        """``METHOD /path/{param}``: the endpoint name shares and latencies are keyed by."""
        return f"{self.method} {self.template}"

    @property
    def segments(self) -> tuple[str, ...]:
        """The template's path segments."""
        return tuple(self.template.strip("/").split("/"))


@cache
def api_routes() -> tuple[Route, ...]:
    """This API's operations, read from the FastAPI app's OpenAPI description (nothing is started)."""
    from psra_bench.api.app import create_app
    from psra_bench.settings import LiveSettings

    # An app is only built here, never served: its settings name no server it would reach. The placeholder
    # operator token makes the app describe which routes need the operator.
    app = create_app(LiveSettings(db_dsn="postgresql://routes@127.0.0.1/routes", admin_token="x" * 32))
    routes: list[Route] = []
    for template, operations in app.openapi()["paths"].items():
        for method, op in operations.items():
            params = op.get("parameters", [])
            security = op.get("security") or []
            routes.append(
                Route(
                    method=method.upper(),
                    template=template,
                    query=tuple(p["name"] for p in params if p.get("in") == "query"),
                    operator=bool(security) and {} not in security,
                    has_body="requestBody" in op,
                    tenant_header=any(p.get("in") == "header" and p["name"].lower() == _TENANT_HEADER for p in params),
                )
            )
    return tuple(routes)


def match_route(method: str, path: str, routes: tuple[Route, ...] | None = None) -> tuple[Route, dict[str, str]] | None:
    """The route ``method path`` (no query string) is a request for, and its path parameters; None when none is.

    Like the app's router a literal segment wins over a parameter (``/api/hs/search`` before ``/api/hs/{code}``).
    """
    parts = tuple(path.strip("/").split("/"))
    best: tuple[int, Route, dict[str, str]] | None = None
    for route in routes if routes is not None else api_routes():
        if route.method != method or len(route.segments) != len(parts):
            continue
        values: dict[str, str] = {}
        literal = 0
        for seg, part in zip(route.segments, parts, strict=True):
            if seg.startswith("{") and seg.endswith("}"):
                if not part:
                    break
                values[seg[1:-1]] = part
            elif seg == part:
                literal += 1
            else:
                break
        else:
            if best is None or literal > best[0]:
                best = (literal, route, values)
    return (best[1], best[2]) if best else None


@dataclass(frozen=True)
class RecordedRequest:
    """One logged request to this API: when (epoch s), what (template), the path to send, its tenant."""

    t: float
    name: str
    method: str
    #: Path with only the query parameters the route declares (percent-encoded).
    path: str
    status: int | None
    duration_ms: float | None
    tenant: str | None
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class RecordedLog:
    """What a log says about traffic to this API: its requests, the others by path, and the lines that did not parse."""

    format: str
    requests: list[RecordedRequest]
    unmatched: Counter[str]
    skipped: Counter[str]
    unparsed: int
    unparsed_examples: list[str]
    lines: int
    #: Epoch time of the log's first request (to any route): recorded time 0.
    start: float

    @property
    def span_s(self) -> float:
        """Recorded seconds from the log's first request to the last request to this API."""
        return self.requests[-1].t - self.start

    def offsets(self) -> list[float]:
        """Each request's recorded time (seconds after the log's first request), ascending."""
        return [r.t - self.start for r in self.requests]

    def counts(self) -> Counter[str]:
        """Requests per endpoint template."""
        return Counter(r.name for r in self.requests)

    def shares(self) -> dict[str, float]:
        """Endpoint template -> share of the requests to this API's routes."""
        return shares(self.counts())

    def buckets(self) -> int:
        """Buckets of :data:`BUCKET_S` recorded seconds the log spans."""
        return int(self.span_s // BUCKET_S) + 1

    def rate(self) -> list[float]:
        """Requests per second of recorded time, per bucket of :data:`BUCKET_S` seconds."""
        per = Counter(int(off // BUCKET_S) for off in self.offsets())
        return [per.get(b, 0) / BUCKET_S for b in range(self.buckets())]

    def parameter_values(self) -> dict[str, Counter[str]]:
        """Parameter name -> the log's own values with their counts (codes, rule ids, tenants, ...)."""
        out: dict[str, Counter[str]] = {}
        for r in self.requests:
            for k, v in r.params.items():
                out.setdefault(k, Counter())[v] += 1
            if r.tenant:
                out.setdefault("tenant", Counter())[r.tenant] += 1
        return out

    def summary(self) -> dict[str, Any]:
        """What was read: lines, requests to this API, others by path, lines that did not parse."""
        return {
            "format": self.format,
            "lines": self.lines,
            "requests": len(self.requests),
            "span_s": self.span_s,
            "unmatched": dict(self.unmatched.most_common()),
            "skipped": {name: {"count": n, "reason": NOT_REPLAYED[name]} for name, n in self.skipped.items()},
            "unparsed": {"count": self.unparsed, "first": self.unparsed_examples},
        }


def shares(counts: Counter[str]) -> dict[str, float]:
    """Counts -> shares of their total (sorted by name)."""
    total = sum(counts.values())
    return {k: counts[k] / total for k in sorted(counts)} if total else {}


# ----------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Line:
    """One parsed log entry before templating."""

    t: float
    method: str
    target: str
    status: int | None
    duration_ms: float | None
    tenant: str | None
    #: Whole-second timestamp (combined format): spread within its second later.
    coarse: bool = False


def _quote(raw: str) -> str:
    """A line fit to quote: query strings, long opaque strings and all from a credential's name on cut; ≤ 120 chars."""
    text = _OPAQUE.sub("…", re.sub(r"\?\S*", "?…", raw.strip()))
    found = _CREDENTIAL.search(text)
    if found:
        text = text[: found.start()] + "[credential cut]"
    return text[:117] + "…" if len(text) > 120 else text


def _epoch(value: Any) -> float:
    """An ISO 8601 time (``Z`` or offset; no zone means UTC) or epoch seconds/milliseconds, as epoch seconds."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, int | float):
        seconds = float(value) / (1000.0 if value > 1e11 else 1.0)
        if not math.isfinite(seconds):
            raise ValueError("not a finite time")
        return seconds
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()


def _combined(line: str) -> _Line:
    m = _COMBINED.match(line)
    if not m:
        raise ValueError("not in combined format")
    t = dt.datetime.strptime(m["time"], "%d/%b/%Y:%H:%M:%S %z").timestamp()
    return _Line(t, m["method"], m["target"], int(m["status"]), None, None, coarse=True)


def _jsonl(line: str) -> _Line:
    doc = json.loads(line)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    headers = (
        {str(k).lower(): v for k, v in (doc.get("headers") or {}).items()}
        if isinstance(doc.get("headers"), dict)
        else {}
    )
    tenant = doc.get("tenant") or doc.get("tenant_id") or doc.get("x_tenant_id") or headers.get(_TENANT_HEADER)
    duration = doc.get("duration")
    return _Line(
        _epoch(doc["time"]),
        str(doc["method"]).upper(),
        str(doc["path"]),
        int(doc["status"]) if doc.get("status") is not None else None,
        float(duration) if isinstance(duration, int | float) and not isinstance(duration, bool) else None,
        str(tenant) if tenant else None,
    )


def _har_entry(entry: Any) -> _Line:
    req, resp = entry["request"], entry.get("response") or {}
    tenant = next(
        (h.get("value") for h in req.get("headers", []) if str(h.get("name", "")).lower() == _TENANT_HEADER), None
    )
    status = resp.get("status")
    duration = entry.get("time")
    return _Line(
        _epoch(entry["startedDateTime"]),
        str(req["method"]).upper(),
        str(req["url"]),
        int(status) if isinstance(status, int) and status > 0 else None,
        float(duration) if isinstance(duration, int | float) and duration >= 0 else None,
        str(tenant) if tenant else None,
    )


def _entries(text: str, fmt: str, source: str) -> Iterator[tuple[str, _Line | None]]:
    """(raw text, parsed entry or None) of every entry of the log."""
    if fmt == "har":
        try:
            doc = json.loads(text)
            entries = doc["log"]["entries"]
            if not isinstance(entries, list):
                raise TypeError("entries is not a list")
        except (ValueError, KeyError, TypeError) as e:
            raise ParameterError(
                "--from-log", source, f"a HAR file (JSON with log.entries) for --format har ({type(e).__name__})"
            ) from None
        for entry in entries:
            try:
                yield "", _har_entry(entry)
            except (KeyError, TypeError, ValueError, AttributeError):
                yield json.dumps(entry)[:200] if isinstance(entry, dict | list) else str(entry), None
        return
    parse = _combined if fmt == "combined" else _jsonl
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            yield line, parse(line)
        except (KeyError, TypeError, ValueError, OverflowError):
            yield line, None


def _spread(lines: list[_Line]) -> list[_Line]:
    """Requests sharing a whole-second timestamp spread evenly over that second (in log order)."""
    per_second = Counter(e.t for e in lines if e.coarse)
    seen: Counter[float] = Counter()
    out = []
    for e in lines:
        if e.coarse:
            k = seen[e.t]
            seen[e.t] += 1
            e = _Line(e.t + k / per_second[e.t], e.method, e.target, e.status, e.duration_ms, e.tenant)
        out.append(e)
    return out


def _template(entry: _Line, routes: tuple[Route, ...]) -> tuple[RecordedRequest | None, str]:
    """The recorded request (None when no route matches) and the path without its query string."""
    parts = urlsplit(entry.target)
    path = parts.path or "/"
    found = match_route(entry.method, path, routes)
    if found is None:
        return None, path
    route, values = found
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k in route.query]
    send = quote(path, safe="/:@-._~!$&'()*+,;=%") + (f"?{urlencode(kept)}" if kept else "")
    params = {k: v for k, v in values.items()} | dict(kept)
    tenant = entry.tenant or values.get("tenant_id")
    return RecordedRequest(
        entry.t, route.name, route.method, send, entry.status, entry.duration_ms, tenant, params
    ), path


def read_log(path: str | Path, fmt: str) -> RecordedLog:
    """Parse the log at ``path`` in format ``fmt``; one ParameterError sentence when nothing in it is replayable."""
    if fmt not in LOG_FORMATS:
        raise ParameterError("--format", fmt, "one of " + ", ".join(LOG_FORMATS))
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ParameterError("--from-log", source, f"a readable file ({e.strerror or type(e).__name__})") from None
    if not text.strip():
        raise ParameterError("--from-log", source, "a log with at least one request (this file is empty)")
    routes = api_routes()
    parsed: list[_Line] = []
    unparsed, lines = 0, 0
    examples: list[str] = []
    for raw, entry in _entries(text, fmt, source):
        lines += 1
        if entry is None:
            unparsed += 1
            if len(examples) < QUOTED_LINES:
                examples.append(_quote(raw))
        else:
            parsed.append(entry)
    requests: list[RecordedRequest] = []
    unmatched: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    ordered = sorted(_spread(parsed), key=lambda e: e.t)
    for entry in ordered:
        rec, bare = _template(entry, routes)
        if rec is None:
            unmatched[f"{entry.method} {bare}"] += 1
        elif rec.name in NOT_REPLAYED:
            skipped[rec.name] += 1
        else:
            requests.append(rec)
    if not requests:
        what = (
            f"{len(parsed)} parsed requests, none to a route of this API"
            if parsed
            else f"none of its {lines} entries parsed as --format {fmt}"
        )
        raise ParameterError("--from-log", source, f"a log with requests to this API's routes ({what})")
    return RecordedLog(fmt, requests, unmatched, skipped, unparsed, examples, lines, ordered[0].t)
