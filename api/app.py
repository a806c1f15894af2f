"""The FastAPI application factory (``uvicorn --factory api.app:create_app``)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from starlette.types import ASGIApp

from api import ws
from api.auth import TokenVerifier
from api.body_guard import BodyGuardMiddleware
from api.cors import with_cors
from api.front import StreamFrontDoor
from api.http_metrics import HttpStats
from api.limits import RateLimits
from api.middleware import RequestIdMiddleware
from api.openapi import install as install_openapi
from api.openapi import operation_id
from api.private_apis import wait_for_exit_signal
from api.routes import (
    events,
    files,
    health,
    inbox,
    metrics,
    notifications,
    page,
    preferences,
    presence,
    reference,
    reports,
    streams,
)
from api.state import AppState
from api.write_gate import WriteGate
from core.aio import stop_task
from core.settings import Settings, get_settings
from streams.connect import async_client, is_cluster
from streams.hub import Hub, HubUnavailable
from streams.presence import Presence
from streams.publish import AsyncPublisher

log = logging.getLogger("finrt.api")

# Most commands connections one API process keeps to a (non-cluster) Redis.
REDIS_POOL_SIZE = 64
# A pooled command connection that died without a word (a restarted Redis, a dropped NAT
# entry) is replaced instead of failing a request: a call that meets the closed connection is
# sent once more on a new one, and one idle this long is PINGed before its next use.
REDIS_HEALTH_CHECK_SECONDS = 30
REDIS_RETRY = {"retry": Retry(NoBackoff(), 1), "retry_on_error": [RedisConnectionError]}

# Sent to every open stream when the process stops: reconnect soon (to another process).
SHUTDOWN_RETRY_MS = 250


def build_state(settings: Settings) -> AppState:
    client: aioredis.Redis
    if is_cluster(settings.redis_url):
        client = async_client(
            settings.redis_url,
            max_connections=200,
            socket_connect_timeout=3,
            socket_timeout=10,
            health_check_interval=REDIS_HEALTH_CHECK_SECONDS,
        )
    else:
        # A blocking pool: under a burst of stream opens, wait for a connection rather than fail.
        # Opens share round trips (streams/batching.py), so a storm needs only a few; the cap is
        # a bound, not a target. Named per process, so CLIENT LIST tells whose they are.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=REDIS_POOL_SIZE,
            client_name=f"finrt-api:{os.getpid()}",
            timeout=10,
            socket_connect_timeout=3,
            socket_timeout=10,
            health_check_interval=REDIS_HEALTH_CHECK_SECONDS,
            **REDIS_RETRY,
        )
        client = aioredis.Redis(connection_pool=pool)
    hub = Hub.from_settings(client, settings)
    hub.presence = Presence.from_settings(client, settings, deliver=hub.broadcast_raw)
    publisher: AsyncPublisher = AsyncPublisher.from_settings(client, settings)
    limits = RateLimits(client, settings)
    state = AppState(settings, client, hub, publisher, limits, TokenVerifier(settings))
    hub.on_revoke = state.access.forget_channel  # streams/revocation.py
    return state


async def _close_streams_on_exit(state: AppState) -> None:
    """On SIGTERM (uvicorn's exit signal, as sse-starlette observes it) end every stream with
    a short retry hint, so clients reconnect to another process at once and uvicorn's graceful
    shutdown is not held up by open streams."""
    await wait_for_exit_signal()
    log.info("shutting down: closing %d open streams", state.hub.open_streams)
    await state.hub.stop(retry_ms=SHUTDOWN_RETRY_MS)


# The cyclic garbage collector, tuned for a process holding thousands of streams. With the
# interpreter's defaults (700, 10, 10) every full collection walks the whole heap: the ~170,000
# objects of the imported code and those of every open connection, 100-200 ms with a couple of
# thousand streams, and it comes round again each time the heap grows by a quarter, as it does
# all through an open storm. After start-up that start-up heap is frozen (never walked again)
# and a collection starts after 10,000 net allocations instead of 700 (docs/performance.md has
# the effect on open storms). Garbage without cycles is freed at once by reference counting.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    """Freeze what start-up allocated and raise the first collection threshold."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


REDIS_DOWN = "Redis is unreachable; try again shortly"


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    """Any route that meets a Redis outage answers 503 (retry later), never 500."""
    log.warning("%s %s: Redis unreachable: %r", request.method, request.url.path, exc)
    return JSONResponse({"detail": REDIS_DOWN}, status_code=503, headers={"Retry-After": "2"})


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, with the JSON written in ASCII: its errors echo the input, and a lone
    surrogate (``"\\ud800"`` in a JSON body is valid JSON) cannot be encoded as UTF-8, which
    turned the 422 into a 500."""
    assert isinstance(exc, RequestValidationError)
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = build_state(settings)
        app.state.finrt = state
        await state.hub.start()
        if state.hub.presence is not None:
            await state.hub.presence.start()
        watcher = asyncio.create_task(_close_streams_on_exit(state))
        tune_gc()
        try:
            yield
        finally:
            await stop_task(watcher)
            await state.hub.stop()
            if state.hub.presence is not None:
                await state.hub.presence.stop()
            await state.redis.aclose()

    app = FastAPI(
        title="FinVision Realtime",
        version="0.1.0",
        description="Live dashboard events and notifications over Server-Sent Events.",
        lifespan=lifespan,
        # Served from the package by api/routes/reference.py (no CDN).
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    install_openapi(app)

    app.state.http_stats = HttpStats()
    # Innermost first: a write waits for its turn (api/write_gate.py) only once the body guard
    # let it through; the request id middleware is outermost, so every refusal carries the id.
    app.add_middleware(WriteGate)
    app.add_middleware(BodyGuardMiddleware)
    app.add_middleware(RequestIdMiddleware, stats=app.state.http_stats)
    app.add_exception_handler(RedisError, _redis_down)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HubUnavailable, _redis_down)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(streams.router)
    app.include_router(events.router)
    app.include_router(preferences.router)
    app.include_router(notifications.router)
    app.include_router(inbox.router)
    app.include_router(files.router)
    app.include_router(presence.router)
    app.include_router(reports.router)
    app.include_router(ws.router)
    app.include_router(page.router)
    app.include_router(reference.docs)
    app.include_router(reference.schemas)
    return app


def create_asgi() -> ASGIApp:
    """What ``finrt api`` serves: the app behind the stream front door (api/front.py), both
    behind the CORS layer (api/cors.py)."""
    settings = get_settings()
    return with_cors(StreamFrontDoor(create_app(settings)), settings)
