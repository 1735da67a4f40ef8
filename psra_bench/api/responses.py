"""The read routes' JSON answer: bytes from orjson, sent as they are.

A route that returns a dict has FastAPI validate it against the return annotation and serialize
it again; the PSRA read routes return JSON-ready dicts already (the DAL's rows, the cache's values),
so they return :class:`JsonBytes` instead. ``benchmarks/bench_api.py`` measures the difference.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse

__all__ = ["JsonBytes"]


class JsonBytes(JSONResponse):
    """A JSON response rendered by orjson (``application/json``; dicts, lists, str, numbers, None)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
