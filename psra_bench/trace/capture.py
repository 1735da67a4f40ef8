"""``MONITOR`` capture of this namespace's cache traffic: time, operation and key per event, never a value.

MONITOR makes the server copy every command it runs to this connection, so the server slows
down while a capture runs (README: 0.58-0.72x the GET throughput of redis-benchmark on a shared
2-core machine, the capture's own parsing included); run it for a bounded time. Lines are
parsed as they arrive (:mod:`psra_bench.trace.monitor`) and mapped to events
(:mod:`psra_bench.trace.keymap`); nothing else of a line is kept. A ``SET``'s value contributes
only its length. Afterwards up to ``memory_usage_keys`` keys are asked
``MEMORY USAGE`` on a second connection (a key already gone keeps the SET length or 0).
The file is our JSON-lines trace format (:mod:`psra_bench.trace.formats`), ending with a
``{"summary": …}`` line of what was dropped.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from psra_bench.exceptions import MeasurementError, ParameterError
from psra_bench.settings import Settings
from psra_bench.trace.keymap import WHOLE_ENTITY, CommandMapper, KeyMap, TraceEvent
from psra_bench.trace.monitor import UnreadableLine, parse_line
from psra_bench.trace.params import TraceCaptureParams

__all__ = ["capture", "monitor_lines"]


def monitor_lines(client: redis.Redis, seconds: float) -> Any:
    """Yield MONITOR lines (text) from ``client``'s server for at most ``seconds``; MeasurementError if refused."""
    conn = client.connection_pool.get_connection()
    try:
        conn.send_command("MONITOR")
        try:
            conn.read_response()
        except redis.exceptions.NoPermissionError as e:
            raise MeasurementError(
                f"the Redis user may not run MONITOR ({str(e).split(':')[0]}); grant it +monitor "
                "(ACL SETUSER <user> +monitor) or capture with a user that has it"
            ) from None
        except redis.exceptions.ResponseError as e:
            raise MeasurementError(f"the Redis server refused MONITOR: {e}") from None
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not conn.can_read(timeout=min(left, 0.2)):
                continue
            reply = conn.read_response()
            yield reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    finally:
        conn.disconnect()  # MONITOR cannot be ended on the connection; close it
        client.connection_pool.release(conn)


def _sample_sizes(client: redis.Redis, keymap: KeyMap, events: list[TraceEvent], limit: int) -> int:
    """MEMORY USAGE of up to ``limit`` distinct keys read; their events get that size. How many were found."""
    wanted = list(dict.fromkeys((e.entity, e.key) for e in events if e.key != WHOLE_ENTITY))[:limit]
    if not wanted:
        return 0
    pipe = client.pipeline(transaction=False)
    for _, key in wanted:
        pipe.memory_usage(keymap.namespace + key, samples=0)
    found = {k: int(v) for k, v in zip(wanted, pipe.execute(raise_on_error=False), strict=True) if isinstance(v, int)}
    for i, ev in enumerate(events):
        size = found.get((ev.entity, ev.key))
        if size is not None:
            events[i] = ev._replace(size=size)
    return len(found)


def capture(
    settings: Settings, out: str | Path, params: TraceCaptureParams, *, stop_on: str | None = None
) -> dict[str, Any]:
    """Capture the configured Redis's traffic of ``settings.cache_namespace`` into ``out``; the summary.

    ``stop_on``: end the capture early when the server runs ``ECHO <stop_on>`` (a script's known end point).
    """
    if settings.redis is None:
        raise ParameterError("REDIS_URL", None, "a Redis to capture (set REDIS_URL or use the embedded one)")
    keymap = KeyMap(settings.cache_namespace)
    mapper = CommandMapper(keymap, db=settings.redis.db)
    client = redis.Redis(**settings.redis.client_kwargs())
    events: list[TraceEvent] = []
    lines = unreadable = 0
    quoted: list[str] = []
    ops: Counter[str] = Counter()
    started = time.monotonic()
    try:
        for line in monitor_lines(client, params.seconds):
            lines += 1
            try:
                parsed = parse_line(line)
            except UnreadableLine:
                unreadable += 1
                quoted = quoted if len(quoted) >= 3 else [*quoted, line[:200]]
                continue
            if stop_on is not None and parsed.command == "echo" and parsed.args == (stop_on,):
                break
            for ev in mapper.feed(parsed):
                events.append(ev)
                ops[ev.op] += 1
        elapsed = time.monotonic() - started
        server = settings.redis.url(with_password=False)
        if not events:
            raise MeasurementError(
                f"the {params.seconds:g}-second capture on {server} saw no read or invalidation of a key of "
                f"namespace {settings.cache_namespace!r} ({lines} commands in all); capture while the API serves "
                "traffic, with PSRA_CACHE_NAMESPACE as the API has it"
            )
        sized = _sample_sizes(client, keymap, events, params.memory_usage_keys) if params.memory_usage_keys else 0
    finally:
        client.close()
    summary = {
        "server": server,
        "namespace": settings.cache_namespace,
        "seconds": round(elapsed, 3),
        "lines": lines,
        "commands": mapper.commands,
        "scripts": mapper.scripts,
        "script_relooks": mapper.script_relooks,
        "unreadable": {"count": unreadable, "first": quoted},
        "events": dict(ops),
        "internal": dict(keymap.internal),
        "unmapped": dict(keymap.unmapped),
        "foreign_keys": keymap.foreign,
        "memory_usage_keys": sized,
    }
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for ev in events:
                row: dict[str, Any] = {"time": ev.time, "entity": ev.entity, "op": ev.op, "key": ev.key}
                if ev.size:
                    row["size"] = ev.size
                f.write(json.dumps(row, separators=(",", ":")) + "\n")
            f.write(json.dumps({"summary": summary}) + "\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return summary
