"""The library internals api/private_apis.py relies on: these fail when an upgrade changes them."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from sse_starlette.sse import AppStatus
from starlette.websockets import WebSocket
from uvicorn.server import Server

from api.private_apis import raw_websocket_send, wait_for_exit_signal


async def test_raw_websocket_send_is_the_asgi_send_itself():
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    ws = WebSocket({"type": "websocket", "path": "/", "headers": []}, receive, send)
    raw = raw_websocket_send(ws)
    assert raw is send  # not a wrapper: no per-frame state check, steppable by _drive
    await raw({"type": "websocket.send", "text": "x"})
    assert sent == [{"type": "websocket.send", "text": "x"}]


async def test_the_exit_signal_wait_returns_when_uvicorn_is_told_to_exit():
    # sse-starlette hooks uvicorn's exit handler; the wait ends when it fires.
    assert Server.handle_exit is AppStatus.handle_exit
    waiter = asyncio.ensure_future(wait_for_exit_signal())
    try:
        await asyncio.sleep(0.2)
        assert not waiter.done()
        AppStatus.should_exit = True
        await asyncio.wait_for(waiter, 10)
    finally:
        AppStatus.should_exit = False
        waiter.cancel()
