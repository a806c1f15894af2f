"""A pure ASGI middleware: a request id for every log line and response, and a JSON 500 that
keeps it.

Not ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware pipes every response body
through a task and a zero-size memory stream, which would put a task switch on every write
of every stream and hide the socket's flow control from the hub.
"""

from __future__ import annotations

import logging
import random
import re
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.http_metrics import HttpStats
from core.logs import redact, request_id, request_started

log = logging.getLogger("finrt.api")

# A client's X-Request-ID is kept only when it is short and plain: it goes verbatim into log
# lines and a response header. Anything else (control characters, spaces, a token pasted by
# mistake) is replaced by an id of our own.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")


def new_request_id() -> str:
    """16 hex digits, random (not a secret: only unique; no system call, unlike uuid4)."""
    return f"{random.getrandbits(64):016x}"


def clean_request_id(given: bytes) -> str:
    """The client's request id if it is safe to log, else a new one."""
    text = given.decode("latin-1")
    if _SAFE_ID.match(text) and redact(text) == text and not text.startswith("eyJ"):
        return text
    return new_request_id()


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            return clean_request_id(value)
    return new_request_id()


async def send_json_error(
    send: Send,
    status: int,
    detail: str,
    rid: str | None,
    *,
    bearer_challenge: bool = False,
    close: bool = False,
) -> None:
    """A JSON error response; ``rid=None`` when ``send`` adds the request id itself;
    ``close``: the connection is closed after it (a body left unread is not drained)."""
    body = orjson.dumps({"detail": detail})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if rid is not None:
        headers.append((b"x-request-id", rid.encode("latin-1")))
    if bearer_challenge:
        headers.append((b"www-authenticate", b"Bearer"))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp, stats: HttpStats | None = None) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope)
        token = request_id.set(rid)
        began = time.monotonic()
        began_token = request_started.set(began)
        header = (b"x-request-id", rid.encode("latin-1"))
        stats = self.stats if scope["type"] == "http" else None
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), header]
                if stats is not None:
                    route = getattr(scope.get("route"), "path", None) or "other"
                    stats.observe(
                        scope["method"], route, message["status"], time.monotonic() - began
                    )
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Logged here, while the request id is still set; Starlette's own 500 would be
            # text/plain without the id, and uvicorn's log line would show "[-]".
            log.exception("unhandled error in %s %s", scope.get("method", "WS"), scope["path"])
            if scope["type"] == "http" and not started:
                await send_json_error(send, 500, "internal server error", rid)
        finally:
            request_id.reset(token)
            request_started.reset(began_token)
