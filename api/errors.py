"""JSON errors with the right status; one shape everywhere: ``{"detail": "..."}``."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

# For the routes' OpenAPI ``responses`` of every route that takes a body. FastAPI itself
# answers 400 to a body it cannot parse; api/body_guard.py 413 to one over its limit.
UNPARSABLE_BODY: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body could not be parsed (not JSON, or broken multipart)"},
    413: {"description": "the body is over FINRT_MAX_BODY_BYTES; it was not read"},
}
BAD_CHANNEL: dict[int | str, dict[str, Any]] = {
    400: {"description": "not a channel name (user:<id> or file:<id>), or not an event id"}
}


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def forbidden(detail: str) -> HTTPException:
    return HTTPException(403, detail)


def not_found(detail: str) -> HTTPException:
    return HTTPException(404, detail)


def bad_request(detail: str) -> HTTPException:
    return HTTPException(400, detail)
