"""A pure ASGI middleware: a request id for every log line and response.

Not ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware pipes every response body
through a task and a zero-size memory stream, which would put a task switch on every write
of every stream and hide the socket's flow control from the hub.
"""

from __future__ import annotations

import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.http_metrics import HttpStats
from core.logs import request_id, request_started


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp, stats: HttpStats | None = None) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                rid = value.decode("latin-1")[:64]
                break
        rid = rid or uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        began = time.monotonic()
        started = request_started.set(began)
        header = (b"x-request-id", rid.encode("latin-1"))
        stats = self.stats if scope["type"] == "http" else None

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
                if stats is not None:
                    route = getattr(scope.get("route"), "path", None) or "other"
                    stats.observe(
                        scope["method"], route, message["status"], time.monotonic() - began
                    )
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
            request_started.reset(started)
