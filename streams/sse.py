"""The SSE response for hub streams: sse-starlette's ``EventSourceResponse`` with a lean loop.

The parent runs a task group of four tasks per connection (stream, ping, disconnect listener,
shutdown listener). Here the hub writes pre-framed bytes (sse-starlette's ``ServerSentEvent``
framing, built once per event) straight into the connection, pings come from one hub-wide
timer and shutdown from one hub-wide watcher, so a connection costs its request task alone,
waiting for the client to disconnect. Headers, HEAD handling and the wire format are the
parent's; ARCHITECTURE.md has the measurements behind this.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.types import Receive, Scope, Send

from streams.history import Bounds, ResumePlan
from streams.hub import Hub
from streams.subscriber import Subscriber


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover


class HubEventSourceResponse(EventSourceResponse):
    def __init__(
        self,
        hub: Hub,
        sub: Subscriber,
        plans: list[tuple[str, Bounds, ResumePlan]],
        *,
        announce: bool,
        expires_at: float | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            _nothing(),
            headers={"Cache-Control": "no-cache"},
            ping=0,
            sep="\n",
        )
        self.hub, self.sub, self.plans, self.announce = hub, sub, plans, announce
        self.expires_at = expires_at
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub, sub = self.hub, self.sub
        try:
            if scope["method"].upper() == "HEAD":
                await super().__call__(scope, receive, send)
                return
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            sub.send = send
            await hub.catch_up(sub, self.plans, announce=self.announce)
            if self.expires_at is not None:
                delay = max(0.0, self.expires_at - time.time())
                sub.expire_handle = asyncio.get_running_loop().call_later(delay, self._expire)
            while True:
                message: dict[str, Any] = dict(await receive())
                if message["type"] == "http.disconnect":
                    break
        finally:
            hub.release(sub)
            if self.on_close is not None:
                self.on_close()

    def _expire(self) -> None:
        sub = self.sub
        sub.close(
            "auth_expired",
            self.hub.control_frame(sub, "auth_expired", {"reason": "token expired"}),
        )
