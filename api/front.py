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

import uuid

from fastapi import FastAPI, HTTPException
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from api.routes.streams import open_stream
from api.stream_request import parse_stream_request, stream_kind
from core.logs import request_id


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
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")[:64]
        rid = given or uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        try:
            try:
                parsed = parse_stream_request(scope)
                assert parsed is not None
                response = await open_stream(self.app.state.finrt, parsed)
            except HTTPException as exc:
                response = JSONResponse(
                    {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
                )
            response.raw_headers.append((b"x-request-id", rid.encode("latin-1")))
            await response(scope, receive, send)
        finally:
            request_id.reset(token)
