"""Request limits, enforced before any route parses a body: its size (413) and its JSON nesting depth (422).

:class:`BodyLimits` is a pure ASGI middleware. A ``Content-Length`` over the limit is refused
before a byte of the body is read; a body without one (chunked) is counted while it streams and
refused as soon as it passes the limit. The body (at most ``max_bytes``, so buffering it is cheap)
is then checked for UTF-8 (RFC 8259) and for nesting deeper than :data:`MAX_JSON_DEPTH` without
parsing it — no recursion, so ``[[[[…]]]]`` cannot exhaust the JSON parser's stack — and replayed to the app.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["BodyLimits", "MAX_JSON_DEPTH", "json_depth_exceeds"]

#: The deepest nesting of arrays and objects a JSON body may have.
MAX_JSON_DEPTH = 32

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: A JSON string literal (unrolled loop: linear time); what is inside one is not structure.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the arrays and objects of ``body`` nest deeper than ``limit`` (brackets inside strings ignored)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = 0
    for char in brackets:
        if char in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth = max(depth - 1, 0)
    return False


def _content_length(scope: Scope) -> int | None:
    """The declared body size: ``Content-Length`` (None when unreadable), 0 when neither it nor chunking is given."""
    chunked = False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
        if name == b"transfer-encoding":
            chunked = True
    return None if chunked else 0


class BodyLimits:
    """ASGI middleware: a body over ``max_bytes`` is a 413, one nested deeper than ``max_depth`` a 422."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    def _too_large(self, size: str) -> dict[str, Any]:
        detail = f"the request body is {size}; at most {self.max_bytes:,} bytes are allowed (PSRA_MAX_BODY_BYTES)"
        return {"detail": detail, "field": "body"}

    def _malformed(self, body: bytes) -> str | None:
        """Why ``body`` cannot be this API's JSON before it is parsed (not UTF-8, nested too deep), or None."""
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as e:
            return f"the body is not UTF-8 text (byte {e.start}); send JSON encoded as UTF-8"
        if json_depth_exceeds(body, self.max_depth):
            return f"the JSON nests deeper than {self.max_depth} levels; at most {self.max_depth} are allowed"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == 0:  # no body (a GET): nothing to count, check or replay
            await self.app(scope, receive, send)
            return
        if declared is not None and declared > self.max_bytes:
            await _reply(send, 413, self._too_large(f"{declared:,} bytes (Content-Length)"))
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _reply(send, 413, self._too_large(f"over {self.max_bytes:,} bytes"))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        problem = self._malformed(body)
        if problem is not None:
            detail = f"body: {problem}"
            await _reply(
                send, 422, {"detail": detail, "field": "body", "errors": [{"field": "body", "message": detail}]}
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reply(send: Send, status: int, content: dict[str, Any]) -> None:
    payload = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))  # the rest of the body is not read
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
