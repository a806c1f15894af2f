"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from api.deps import StateDep
from core.aio import timed
from models.db import reader_for

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"status": "ready", "checks": {"database": "ok", "redis": "ok"}}]
        }
    )

    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description="each dependency: 'ok' or what is wrong")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a dependency does not answer"}},
)
async def readyz(state: StateDep) -> JSONResponse:
    """200 when the database and Redis answer, else 503 naming what does not."""
    checks: dict[str, str] = {}

    def _db() -> None:
        with reader_for(state.settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await timed(run_in_threadpool(_db), 3)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        await timed(state.redis.ping(), 2)
        checks["redis"] = "ok" if state.hub.connected else "pub/sub link down"
    except Exception as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )
