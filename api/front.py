"""The front door: stream requests go straight to the hub; everything else to FastAPI.

Opening a stream through FastAPI costs a dozen middleware and routing layers and dependency
solving, and each layer's frame lives as long as the stream does (hours, thousands of times
over). The three SSE endpoints are therefore served here, with the very functions their FastAPI
routes use (authentication, access checks, positions, the hub); the routes stay for OpenAPI
and for HEAD. ARCHITECTURE.md has the measurements.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl

from fastapi import FastAPI, HTTPException
from redis.exceptions import RedisError
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from api.deps import authenticate_stream
from api.middleware import request_id_of, send_json_error
from api.routes.streams import file_channels, many_channels, open_stream
from api.state import AppState
from core.logs import request_id
from streams.hub import HubUnavailable

log = logging.getLogger("finrt.api")

_FILE = re.compile(r"^/api/v1/stream/files/([^/]+)/?\Z")
_LIMITS = {"access_token": 4096, "ticket": 64, "last_event_id": 4096}


class StreamFrontDoor:
    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or not scope["path"].startswith("/api/v1/stream")
        ):
            await self.app(scope, receive, send)
            return
        path = scope["path"].rstrip("/")
        match = _FILE.match(scope["path"])
        if path not in ("/api/v1/stream", "/api/v1/stream/notifications") and match is None:
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope)
        token = request_id.set(rid)
        try:
            try:
                response = await self._open(scope, path, match)
            except HTTPException as exc:
                response = JSONResponse(
                    {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
                )
            except (RedisError, HubUnavailable) as exc:
                # e.g. redeeming a ?ticket= while Redis is down: retry later, not a 500.
                log.warning("stream not opened, Redis unreachable: %r", exc)
                response = JSONResponse(
                    {"detail": "Redis is unreachable; try again shortly"},
                    status_code=503,
                    headers={"Retry-After": "2"},
                )
            except Exception:
                log.exception("unhandled error opening %s", scope["path"])
                await send_json_error(send, 500, "internal server error", rid)
                return
            response.raw_headers.append((b"x-request-id", rid.encode("latin-1")))
            await response(scope, receive, send)
        finally:
            request_id.reset(token)

    async def _open(self, scope: Scope, path: str, match: re.Match[str] | None) -> Response:
        state: AppState = self.app.state.finrt
        query: dict[str, str] = {}
        channels: list[str] = []
        for name, value in parse_qsl(scope["query_string"].decode("latin-1")):
            if name == "channel":
                channels.append(value)
            elif name in _LIMITS:
                if len(value) > _LIMITS[name]:
                    raise HTTPException(422, f"{name} is too long")
                query[name] = value
        headers = dict(scope["headers"])
        bearer = None
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if authorization[:7].lower() == "bearer ":
            bearer = authorization[7:].strip()
        last = (
            headers.get(b"last-event-id", b"").decode("latin-1").strip()
            or query.get("last_event_id", "").strip()
        )
        if len(last) > 4096:
            raise HTTPException(422, "Last-Event-ID is too long")
        principal = await authenticate_stream(
            state, bearer, query.get("access_token"), query.get("ticket")
        )
        if match is not None:
            names = file_channels(match.group(1))
        elif path == "/api/v1/stream":
            names = many_channels(channels, state.settings.max_channels_per_stream)
        else:
            names = [f"user:{principal.user_id}"]
        return await open_stream(
            state, principal, names, last or None, multi=path == "/api/v1/stream"
        )
