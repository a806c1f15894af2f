"""Naive baseline: the tutorial SSE design the benchmark compares our API against.

Every client gets its OWN redis.asyncio pub/sub subscription to its channel and every message
is forwarded as one sse-starlette event. Same endpoint, auth (HS256 JWT, ``sub`` -> channel
``user:<sub>``), Redis channel name (``<prefix>:{user:<sub>}``) and SSE framing as our API:
a ``retry:`` block first, then ``id:`` / ``event:`` / ``data: <envelope json>`` per event.

Run: ``uvicorn bench.baseline_app:app`` with FINRT_REDIS_URL, FINRT_REDIS_PREFIX and
FINRT_JWT_SECRET set. No history, no resume, no backpressure handling: that is the point.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import jwt
import redis.asyncio as aioredis
from fastapi import FastAPI, Header, HTTPException
from sse_starlette import EventSourceResponse

REDIS_URL = os.environ.get("FINRT_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("FINRT_REDIS_PREFIX", "finrt")
SECRET = os.environ.get("FINRT_JWT_SECRET", "")
RETRY_MS = int(os.environ.get("FINRT_RETRY_MS", "2000"))
# redis-py 8's default pool stops at 100 connections, i.e. 100 concurrent streams.
MAX_CONNECTIONS = int(os.environ.get("BENCH_BASELINE_MAX_CONNECTIONS", "200000"))

pool = aioredis.ConnectionPool.from_url(
    REDIS_URL, max_connections=MAX_CONNECTIONS, decode_responses=True
)
redis = aioredis.Redis(connection_pool=pool)
app = FastAPI(title="naive SSE baseline")


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


@app.get("/api/v1/stream/notifications")
async def notifications(authorization: str = Header(default="")) -> EventSourceResponse:
    token = authorization.removeprefix("Bearer ").strip()
    try:
        claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    except jwt.PyJWTError as exc:
        raise HTTPException(status_code=401, detail="invalid token") from exc
    channel = f"user:{claims['sub']}"
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"{PREFIX}:{{{channel}}}")

    async def events() -> AsyncIterator[dict[str, Any]]:
        try:
            yield {"retry": RETRY_MS}
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                raw = message["data"]
                envelope = json.loads(raw)
                yield {"id": envelope["id"], "event": envelope["type"], "data": raw}
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    return EventSourceResponse(events(), sep="\n", ping=15)
