"""The dashboard page: ``GET /`` and its static files under ``/static`` (no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# Everything the page loads comes from this origin: no CDN, no inline script or style. The
# first URL carries the token (``?token=``), so no Referer may ever repeat it.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class PageFiles(StaticFiles):
    """Static files revalidated on every load (ETag, 304), so an upgrade never mixes modules
    of two versions from the browser's heuristic cache."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        # Python's table calls ".ts" an MPEG transport stream; the client's declarations are
        # TypeScript.
        if path.endswith(".d.ts") and response.status_code == 200:
            response.headers["Content-Type"] = "application/typescript; charset=utf-8"
        return response


router = APIRouter(include_in_schema=False)
router.mount("/static", PageFiles(directory=STATIC_DIR), name="static")


@router.get("/", response_class=FileResponse)
def page() -> FileResponse:
    """The live dashboard page."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)
