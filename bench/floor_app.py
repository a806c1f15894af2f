"""The uvicorn floor: the least any uvicorn-served stream can cost, for ``make bench``'s open and
delivery rows.

A bare ASGI app (no FastAPI, no database, nothing of ours but the helper that steps a ``send``)
under the same uvicorn as our API (uvloop, httptools). A stream request is answered the way ours
is: the HS256 token of the ``Authorization`` header verified with PyJWT (our token library),
then a 200 with the SSE headers and a ``retry:`` block, and the connection held open until the
client leaves.

Deliveries (with ``BENCH_FLOOR_DELIVER=1``, for the delivery rows; the open rows run without,
so an open there is only the token and the headers): one pattern subscription to ``<prefix>:*``
on the Redis of ``FINRT_REDIS_URL``, made at start-up (so an open costs no Redis command), reads
the envelopes our publisher sends; each is parsed once (``id`` and ``type``) and framed once as
``id:``/``event:``/``data:``; the frames read together are written together, with one call of
uvicorn's own ``send`` per stream, stepped by hand without a task unless the socket's buffer is
full (as ours does). No history, no resume, no leases, no limits, no ping: whatever ours costs
above this, on the same client, publisher and CPU, is ours; what this costs is the price of the
stack (Python, uvicorn, redis-py, one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import jwt
import orjson
import redis.asyncio as aioredis

from streams._drive import drive

SECRET = os.environ.get("FINRT_JWT_SECRET", "")
DELIVER = os.environ.get("BENCH_FLOOR_DELIVER") == "1"
REDIS_URL = os.environ.get("FINRT_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("FINRT_REDIS_PREFIX", "finrt")
RETRY = f"retry: {int(os.environ.get('FINRT_RETRY_MS', '2000'))}\n\n".encode()
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

# Redis channel name -> the ``send`` of every stream open on it.
STREAMS: dict[bytes, set[Send]] = {}
_pending: set[asyncio.Task[None]] = set()


def _write(send: Send, message: Message) -> None:
    """Run ``send(message)`` as the hub does (streams/_drive.py): stepped at once, handed to a
    task only if it waits for the socket to drain; a client that left is simply skipped."""
    task = drive(send(message), _ignore)  # type: ignore[arg-type]
    if task is not None:
        _pending.add(task)
        task.add_done_callback(_pending.discard)


def _ignore(_error: BaseException | None) -> None:
    return None


async def _deliver() -> None:
    """Read every envelope published under the prefix and write it to its channel's streams.

    Envelopes that arrive together (one read from Redis) are written together: each channel's
    frames are joined and written with one ``send`` per stream once the reader has nothing more
    buffered, as any server must do to keep up at 100,000 deliveries a second."""
    loop = asyncio.get_running_loop()
    pending: dict[bytes, list[bytes]] = {}

    def flush() -> None:
        batches = list(pending.items())
        pending.clear()
        for channel, frames in batches:
            sends = STREAMS.get(channel)
            if not sends:
                continue
            body = {"type": "http.response.body", "body": b"".join(frames), "more_body": True}
            for send in list(sends):
                _write(send, body)

    client = aioredis.Redis.from_url(REDIS_URL, health_check_interval=30)
    pubsub = client.pubsub()
    await pubsub.psubscribe(f"{PREFIX}:*")
    try:
        async for message in pubsub.listen():
            if message["type"] != "pmessage" or message["channel"] not in STREAMS:
                continue
            raw: bytes = message["data"]
            envelope = orjson.loads(raw)
            frame = b"id: %s\nevent: %s\ndata: %s\n\n" % (
                envelope["id"].encode(),
                envelope["type"].encode(),
                raw,
            )
            if not pending:
                loop.call_soon(flush)
            pending.setdefault(message["channel"], []).append(frame)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


async def app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Send,
) -> None:
    if scope["type"] == "lifespan":
        reader: asyncio.Task[None] | None = None
        while (await receive())["type"] != "lifespan.shutdown":
            if DELIVER:
                reader = asyncio.get_running_loop().create_task(_deliver())
            await send({"type": "lifespan.startup.complete"})
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    token = b""
    for name, value in scope["headers"]:
        if name == b"authorization":
            token = value.removeprefix(b"Bearer ").strip()
    try:
        claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    except jwt.PyJWTError:
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b"invalid token"})
        return
    sub = claims.get("sub")
    if not isinstance(sub, str):
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b"no subject"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": RETRY, "more_body": True})
    if not DELIVER:
        while (await receive())["type"] != "http.disconnect":
            pass
        return
    channel = f"{PREFIX}:{{user:{sub}}}".encode()
    sends = STREAMS.setdefault(channel, set())
    sends.add(send)
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    finally:
        sends.discard(send)
        if not sends:
            STREAMS.pop(channel, None)
