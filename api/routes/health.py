"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import StateDep
from models.db import reader_for

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> JSONResponse:
    """200 when the database and Redis answer, else 503 naming what does not."""
    checks: dict[str, str] = {}

    def _db() -> None:
        with reader_for(state.settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(run_in_threadpool(_db), 3)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        await asyncio.wait_for(state.redis.ping(), 2)
        checks["redis"] = "ok" if state.hub.connected else "pub/sub link down"
    except Exception as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )
