"""The SSE response for hub streams: sse-starlette's ``EventSourceResponse`` with a lean loop.

The parent runs a task group of four tasks per connection (stream, ping, disconnect listener,
shutdown listener). Here the hub writes pre-framed bytes (sse-starlette's ``ServerSentEvent``
framing, built once per event) straight into the connection, pings come from one hub-wide
timer and shutdown from one hub-wide watcher, so a connection costs its request task alone,
waiting for the client to disconnect. Headers and the wire format are the parent's (the
stream routes take GET only); ARCHITECTURE.md has the measurements behind this.

The parent's constructor is not run per stream: it makes an event, a lock and a header list
for its own loop, about 2 KB per connection and a tenth of an open's time, and the loop here
uses none of them. The headers are the parent's, made once and copied.
"""

from __future__ import annotations

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


_headers: list[tuple[bytes, bytes]] = []


def _stream_headers() -> list[tuple[bytes, bytes]]:
    """A copy of the parent's response headers (made once, inside the event loop, which the
    parent's constructor needs)."""
    if not _headers:
        parent = EventSourceResponse(_nothing(), headers={"Cache-Control": "no-cache"}, ping=0)
        _headers.extend(parent.raw_headers)
    return list(_headers)


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
        # Not the parent's constructor (see the module's docstring): what Response users read.
        self.raw_headers = _stream_headers()
        self.status_code = 200
        self.background = None
        self.hub, self.sub, self.plans, self.announce = hub, sub, plans, announce
        self.expires_at = expires_at
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub, sub = self.hub, self.sub
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            sub.send = send
            await hub.catch_up(sub, self.plans, announce=self.announce)
            # Sent and done with: not kept for the hours the stream may last.
            del self.raw_headers, self.plans
            if self.expires_at is not None:
                hub.expiries.add(sub, self.expires_at)
            while True:
                message: dict[str, Any] = dict(await receive())
                if message["type"] == "http.disconnect":
                    break
        finally:
            hub.release(sub)
            if self.on_close is not None:
                self.on_close()
