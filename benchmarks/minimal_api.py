"""The peer of benchmarks/bench_api.py: the least a FastAPI app can do to answer the three cached lookups.

It reads the very keys ``psra-bench serve`` writes (same Redis, same namespace) with
``redis.asyncio`` in async routes and returns the decoded JSON, so the difference between the two
is our API's own work: validation, the cache service, the DAL, serialization. Run by the benchmark
as ``python -m uvicorn minimal_api:app --app-dir benchmarks`` with the same uvicorn options as
``psra-bench serve``. Settings: ``REDIS_URL`` and ``PSRA_CACHE_NAMESPACE`` from the environment.

* ``GET /api/hs/{code}``: GET ``hs:code:{6 digits}``.
* ``GET /api/rules/{rule_id}``: GET ``rule:id:{RULE_ID}``.
* ``POST /api/assessments``: parse the JSON body and GET the spec's key
  ``assessment:{rule}:{hs}:{origin}:{dest}`` that answered this product and route before in this
  process — one cache read, as our API makes on a hit; the first time it finds the key by GETting
  the agreement's rule list (``rules:agreement:{code}``) and MGETting its chapter's keys. It
  returns the cached verdict. (It validates nothing, computes no verdict and checks no input
  hash: a lower bound.)
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import redis.asyncio
from fastapi import FastAPI, HTTPException, Request

NAMESPACE = os.environ.get("PSRA_CACHE_NAMESPACE", "psra:")
client = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])
app = FastAPI(title="minimal peer of the PSRA API")
#: The assessment key that answered each (agreement, product, origin, destination) in this process.
_known: dict[tuple[str, str, str, str], str] = {}


def _digits(code: str) -> str:
    return re.sub(r"[^0-9]", "", code)


@app.get("/health")
async def health() -> dict[str, str]:
    await client.ping()
    return {"status": "ok"}


@app.get("/api/hs/{code}")
async def hs_code(code: str) -> Any:
    raw = await client.get(f"{NAMESPACE}hs:code:{_digits(code)}")
    if raw is None:
        raise HTTPException(404, "not cached")
    return json.loads(raw)


@app.get("/api/rules/{rule_id}")
async def rule(rule_id: str) -> Any:
    raw = await client.get(f"{NAMESPACE}rule:id:{rule_id.upper()}")
    if raw is None:
        raise HTTPException(404, "not cached")
    return json.loads(raw)


@app.post("/api/assessments")
async def assessment(request: Request) -> Any:
    body = await request.json()
    hs = _digits(str(body["hs_code"]))
    origin, dest = str(body["origin_country"]).upper(), str(body["destination_country"]).upper()
    route = (str(body["agreement_code"]).upper(), hs, origin, dest)
    if route in _known:
        raw = await client.get(_known[route])
        if raw is not None:
            return {**json.loads(raw)["verdict"], "cached": True}
    rules_raw = await client.get(f"{NAMESPACE}rules:agreement:{str(body['agreement_code']).upper()}")
    if rules_raw is None:
        raise HTTPException(404, "rules not cached")
    chapter = [r for r in json.loads(rules_raw) if r.get("hs_chapter") == hs[:2]]
    if not chapter:
        raise HTTPException(404, "no rule for the chapter")
    candidates = [f"{NAMESPACE}assessment:{r['rule_id']}:{hs}:{origin}:{dest}" for r in chapter]
    found = [(k, v) for k, v in zip(candidates, await client.mget(candidates), strict=True) if v]
    if not found:
        raise HTTPException(404, "assessment not cached")
    _known[route] = found[0][0]
    return {**json.loads(found[0][1])["verdict"], "cached": True}
