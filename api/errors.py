"""JSON errors with the right status; one shape everywhere: ``{"detail": "..."}``."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

# For the routes' OpenAPI ``responses``. FastAPI itself answers 400 to a body it cannot parse.
UNPARSABLE_BODY: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body could not be parsed (not JSON, or broken multipart)"}
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
