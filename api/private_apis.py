"""Every use of a library's private API, in one place.

Each is here because the public API costs what the hot path cannot pay or does not exist; each
has a test (tests/fast/test_private_apis.py) that fails when the library changes it, so an
upgrade breaks a test here rather than streams in production.
"""

from __future__ import annotations

from sse_starlette.sse import EventSourceResponse
from starlette.types import Send
from starlette.websockets import WebSocket


def raw_websocket_send(ws: WebSocket) -> Send:
    """The socket's ASGI ``send`` itself. The hub writes every frame of a WebSocket (events
    and replies) through it, in one order, stepping it without a task (streams/_drive.py);
    Starlette's public ``WebSocket.send`` adds a state check per frame and is only used for
    accept and close. Starlette keeps the send as ``WebSocket._send``."""
    send: Send = ws._send
    return send


async def wait_for_exit_signal() -> None:
    """Return once uvicorn is told to exit (SIGTERM, SIGINT), as sse-starlette observes it:
    one process-wide watcher shared with sse-starlette's own streams (no public API waits for
    it; ``AppStatus.should_exit`` alone is a flag to poll, and misses the fallback path that
    reads uvicorn's own flag)."""
    await EventSourceResponse._listen_for_exit_signal()


__all__ = ["raw_websocket_send", "wait_for_exit_signal"]
