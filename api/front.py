"""The front door: stream requests go straight to the hub; everything else to FastAPI.

Opening a stream through FastAPI costs a dozen middleware and routing layers and dependency
solving, and each layer's frame lives as long as the stream does (hours, thousands of times
over). The three SSE endpoints are therefore served here, with the very functions their FastAPI
routes use (the request parser in api/stream_request.py, authentication, access checks,
positions, the hub); the routes stay for OpenAPI and for the app run without this door
(``create_app()`` alone). Other methods (HEAD: 405) go on to FastAPI. ARCHITECTURE.md has the
measurements.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException
from redis.exceptions import RedisError
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from api.middleware import request_id_of, send_json_error
from api.routes.streams import open_stream
from api.stream_request import parse_stream_request, stream_kind
from core.logs import request_id
from streams.hub import HubUnavailable

log = logging.getLogger("finrt.api")


class StreamFrontDoor:
    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or stream_kind(scope["path"]) is None
        ):
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope)
        token = request_id.set(rid)
        try:
            try:
                parsed = parse_stream_request(scope)
                assert parsed is not None
                response = await open_stream(self.app.state.finrt, parsed)
                del parsed  # not held for the stream's lifetime by this frame
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
