"""Writes take turns outside the thread pool, so reads always find a thread.

Route functions run in anyio's thread pool (40 threads). A write waits its turn at the
database inside its thread (for SQLite's one writing connection, or PostgreSQL's row locks and
pool), so a burst of writes can occupy every thread and a read, which would be answered at once,
queues behind them. The gate lets at most WRITE_THREADS writing requests in at a time; the rest
wait here, on the event loop, holding no thread. Uploads are let through (their bodies arrive at
the client's pace) and take their turn only for the insert (:func:`write_turn`).
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

THREADS = 40  # anyio's default thread limiter
WRITE_THREADS = 8  # the rest stay free for reads
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Uploads (see above); publishing and tickets touch only Redis.
_UNGATED_EXACT = frozenset({"/api/v1/files"})
_UNGATED_PREFIXES = ("/api/v1/events/", "/api/v1/stream/")


_turns: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def write_turn() -> asyncio.Semaphore:
    """The turns of the running event loop's writes (``async with write_turn(): ...``)."""
    loop = asyncio.get_running_loop()
    turns = _turns.get(loop)
    if turns is None:
        turns = _turns[loop] = asyncio.Semaphore(WRITE_THREADS)
    return turns


class WriteGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in _WRITES
            or scope["path"] in _UNGATED_EXACT
            or scope["path"].startswith(_UNGATED_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        async with write_turn():
            await self.app(scope, receive, send)
