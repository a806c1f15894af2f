"""JSON errors with the right status; one shape everywhere: ``{"detail": "..."}``."""

from __future__ import annotations

from fastapi import HTTPException


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def forbidden(detail: str) -> HTTPException:
    return HTTPException(403, detail)


def not_found(detail: str) -> HTTPException:
    return HTTPException(404, detail)


def bad_request(detail: str) -> HTTPException:
    return HTTPException(400, detail)
