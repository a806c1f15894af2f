"""Cross-origin access for pages of other origins (FINRT_CORS_ORIGINS).

Starlette's CORSMiddleware is pure ASGI (no task per response, no body piping), so it sits
outside everything: the stream front door and FastAPI's routes answer under the same rules, and
a preflight is answered before either sees it. Tokens travel in the Authorization header or the
URL, never in cookies, so credentials are not allowed.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from core.settings import Settings

ALLOWED_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE"]
ALLOWED_HEADERS = ["Authorization", "Content-Type", "Last-Event-ID", "X-Request-ID"]
# What a page's script may read from a response besides the safelisted headers.
EXPOSED_HEADERS = ["X-Request-ID", "Retry-After", "Content-Disposition"]
PREFLIGHT_MAX_AGE_SECONDS = 600


def with_cors(app: ASGIApp, settings: Settings) -> ASGIApp:
    """``app`` answering CORS for FINRT_CORS_ORIGINS; unchanged when none are set (the browser
    then refuses every cross-origin call, as it should)."""
    origins = settings.cors_origin_list
    if not origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=origins,
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        allow_credentials=False,
        max_age=PREFLIGHT_MAX_AGE_SECONDS,
    )
