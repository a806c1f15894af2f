"""The uvicorn floor: the least any uvicorn-served stream can cost, for ``make bench``'s open rows.

A bare ASGI app (no FastAPI, no Redis, no database) under the same uvicorn as our API (uvloop,
httptools). A stream request is answered the way ours is: the HS256 token of the
``Authorization`` header verified with PyJWT (our token library), then a 200 with the SSE
headers and a ``retry:`` block, and the connection held open until the client leaves. Nothing
is ever published. Whatever ours costs above this, on the same client and CPU, is ours; what
this costs is the price of the stack (Python, uvicorn, one process).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import jwt

SECRET = os.environ.get("FINRT_JWT_SECRET", "")
RETRY = f"retry: {int(os.environ.get('FINRT_RETRY_MS', '2000'))}\n\n".encode()
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


async def app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
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
    if not isinstance(claims.get("sub"), str):
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b"no subject"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": RETRY, "more_body": True})
    while (await receive())["type"] != "http.disconnect":
        pass
