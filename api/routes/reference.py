"""Reference for integrators: the API docs pages (no other site needed) and the event schemas.

Swagger UI and ReDoc load their scripts and styles from this server (the files the
``fastapi-offline`` package ships), so /docs works on an isolated network, as the dashboard does.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.staticfiles import StaticFiles

from api.event_schemas import SCHEMA_PATH, events_schema

ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
TITLE = "FinVision Realtime API"

# The pages may load nothing from elsewhere: ReDoc's footer logo, say, would come from its CDN.
# Both pages start their viewer with an inline script.
DOCS_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

docs = APIRouter(include_in_schema=False)
docs.mount("/docs/static", StaticFiles(directory=ASSETS), name="docs-static")


@docs.get("/docs")
def swagger_ui() -> HTMLResponse:
    return _with_headers(
        get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=TITLE,
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
        )
    )


@docs.get("/docs/oauth2-redirect")
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@docs.get("/redoc")
def redoc() -> HTMLResponse:
    return _with_headers(
        get_redoc_html(
            openapi_url="/openapi.json",
            title=TITLE,
            redoc_js_url="/docs/static/redoc.standalone.js",
            redoc_favicon_url="/docs/static/favicon.png",
            with_google_fonts=False,
        )
    )


def _with_headers(response: HTMLResponse) -> HTMLResponse:
    response.headers.update(DOCS_HEADERS)
    return response


schemas = APIRouter(tags=["events"])


@cache
def _events_schema() -> dict[str, Any]:
    return events_schema()


@schemas.get(
    SCHEMA_PATH,
    responses={
        200: {
            "description": "a JSON Schema (draft 2020-12) document",
            "content": {
                "application/schema+json": {"schema": {"type": "object"}},
            },
        }
    },
    response_class=JSONResponse,
)
def get_event_schemas() -> JSONResponse:
    """The event envelope and each event type's ``data``, as JSON Schema."""
    return JSONResponse(_events_schema(), media_type="application/schema+json")
