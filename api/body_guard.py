"""A pure ASGI middleware (see api/middleware.py why not BaseHTTPMiddleware): no request body
is read before its sender is known, nor beyond its limit.

FastAPI reads and parses a body before it resolves the dependencies that check the token, so
without this an anonymous client could make the process parse a 200 MB JSON body before its
401. Here, for a request that carries a body:

- under ``/api/`` the bearer token is checked first: ``401`` and the body is never parsed;
- a ``Content-Length`` over the limit gets ``413`` at once, unparsed (the connection is closed
  when it announces more than 16 MiB, else the body is drained);
- a body sent without a length (chunked) is counted as it streams and refused with ``413`` as
  soon as it passes the limit.

The limit is ``FINRT_MAX_BODY_BYTES``, except for uploads (``POST /api/v1/files``): their own
limit, ``FINRT_UPLOAD_MAX_BYTES``, plus room for the multipart framing.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import principal_from_token
from api.middleware import send_json_error
from api.routes.files import UPLOAD_OVERHEAD_BYTES
from api.state import AppState

UPLOAD_PATH = "/api/v1/files"
# A refused body up to this size is read and thrown away (uvicorn does, on a kept-alive
# connection), so that a client sending all of it before reading still gets the answer; a
# larger or unbounded one closes the connection after the answer (uvicorn honours the header).
DRAIN_MAX_BYTES = 16 * 1024 * 1024
CLOSE = {"Connection": "close"}


def body_limit(state: AppState, method: str, path: str) -> int:
    s = state.settings
    if method == "POST" and path.rstrip("/") == UPLOAD_PATH:
        return s.upload_max_bytes + UPLOAD_OVERHEAD_BYTES
    return s.max_body_bytes


class BodyGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if not chunked and declared in (None, b"0"):
            await self.app(scope, receive, send)  # no body: nothing to guard
            return
        state: AppState = scope["app"].state.finrt
        length = int(declared) if declared is not None and declared.isdigit() else None
        close = chunked or length is None or length > DRAIN_MAX_BYTES
        if scope["path"].startswith("/api/"):
            refusal = await _unauthenticated(state, headers.get(b"authorization", b""))
            if refusal is not None:
                await send_json_error(send, 401, refusal, None, bearer_challenge=True, close=close)
                return
        limit = body_limit(state, scope["method"], scope["path"])
        if length is not None and length > limit:
            await send_json_error(send, 413, _too_large(limit), None, close=close)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException: FastAPI passes it on as it is (a 413), where any other
                    # error while reading the body would become its generic 400.
                    raise HTTPException(413, _too_large(limit), headers=CLOSE)
            return message

        await self.app(scope, counted, send)


def _too_large(limit: int) -> str:
    return f"the request body is too large; the limit is {limit} bytes"


async def _unauthenticated(state: AppState, authorization: bytes) -> str | None:
    """Why the bearer token is refused, or None when it is good."""
    text = authorization.decode("latin-1")
    if text[:7].lower() != "bearer ":
        return "missing bearer token"
    try:
        await principal_from_token(state, text[7:].strip())
    except HTTPException as exc:
        return str(exc.detail)
    return None
