"""A Python client for FinVision Realtime's event streams, on httpx and httpx-sse.

    from finrt.client import stream

    for event in stream("http://127.0.0.1:8000", ["user:alice"], token=TOKEN):
        print(event.type, event.data)

One or several channels on one connection (``GET /api/v1/stream``). The client keeps the
stream's position (the SSE id, also the id-only frame the server sends first) and reconnects by
itself after a dropped connection, a server restart or a 503, with ``Last-Event-ID``: nothing
is lost and nothing repeats while history reaches back. Frames without data (the position
frame, the empty frames after pings) are not events. ``reset``, ``auth_expired`` and
``access_revoked`` arrive as :class:`Reset`, :class:`AuthExpired` and :class:`AccessRevoked`.
``astream`` is the same for asyncio.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent

from streams.transports import encode_cursor

__all__ = [
    "AccessRevoked",
    "AuthExpired",
    "AuthFailed",
    "Event",
    "Reset",
    "StreamRefused",
    "astream",
    "stream",
]

_PLAIN_ID = re.compile(r"^([0-9]{1,20})-([0-9]{1,20})\Z")
# The server pings every 15 s (FINRT_PING_SECONDS): this long without a byte means the
# connection is dead even if no error says so.
READ_TIMEOUT_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 30.0

Token = str | Callable[[], str]


@dataclass(frozen=True, slots=True)
class Event:
    """One event: the envelope's fields, and ``position`` (what to resume from)."""

    id: str | None  # None on presence events (never stored, no position)
    channel: str
    type: str
    data: Any
    created_at: str
    key: str | None
    position: str

    @classmethod
    def from_sse(cls, sse: ServerSentEvent) -> Event:
        envelope = json.loads(sse.data)
        kind = CONTROL.get(envelope.get("type"), cls)
        if str(envelope.get("type", "")).startswith("presence"):
            kind = Presence
        return kind(
            id=envelope["id"],
            channel=envelope["channel"],
            type=envelope["type"],
            data=envelope.get("data"),
            created_at=envelope.get("created_at", ""),
            key=envelope.get("key"),
            position=sse.id,
        )


@dataclass(frozen=True, slots=True)
class Reset(Event):
    """History no longer reaches the position: refetch your snapshot; events continue."""

    @property
    def reason(self) -> str:
        return str(self.data.get("reason", "")) if isinstance(self.data, dict) else ""


@dataclass(frozen=True, slots=True)
class AuthExpired(Event):
    """The token expired and the server ended the stream. With a token callable the client
    reconnects with a fresh token (from the same position); with a fixed token it stops."""


@dataclass(frozen=True, slots=True)
class Presence(Event):
    """Who has a file open (``presence``, ``presence_join``, ``presence_leave``,
    ``presence_count``): live only, ``id`` None, never in history; it moves no position."""


@dataclass(frozen=True, slots=True)
class AccessRevoked(Event):
    """The user may no longer read ``channel`` (a member removed, a file deleted): the server
    took it off the stream, the client never asks for it again, and the stream goes on with
    the other channels (it ends when none is left)."""

    @property
    def reason(self) -> str:
        return str(self.data.get("reason", "")) if isinstance(self.data, dict) else ""


CONTROL: dict[str, type[Event]] = {
    "reset": Reset,
    "auth_expired": AuthExpired,
    "access_revoked": AccessRevoked,
}


class StreamRefused(Exception):
    """The server refused the stream for good (400, 403, 404, 422): retrying cannot help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


class AuthFailed(StreamRefused):
    """401: the token is missing, bad or expired."""


@dataclass
class _Session:
    """What both loops share: the request, the position, and what each answer means."""

    channels: list[str]
    token: Token
    position: str | None
    backoff: float = 0.0
    retry_ms: int = 1000
    ended: bool = field(default=False)

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("name at least one channel")
        # A plain event id is a position on one channel; the stream speaks in cursors.
        plain = _PLAIN_ID.match(self.position or "")
        if plain and len(self.channels) == 1:
            ident = (int(plain.group(1)), int(plain.group(2)))
            self.position = encode_cursor({self.channels[0]: ident})

    def request(self) -> tuple[dict[str, Any], dict[str, str]]:
        token = self.token() if callable(self.token) else self.token
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if self.position:
            headers["Last-Event-ID"] = self.position
        return {"channel": self.channels}, headers

    def refused(self, status: int, body: bytes) -> StreamRefused | None:
        """None for answers worth retrying (429, 5xx), else the error to raise."""
        if status == 429 or status >= 500:
            return None
        try:
            detail = str(json.loads(body).get("detail", ""))
        except (ValueError, AttributeError):
            detail = body[:200].decode(errors="replace")
        return (AuthFailed if status == 401 else StreamRefused)(status, detail)

    def frame(self, sse: ServerSentEvent) -> Event | None:
        """The event in ``sse``, if any; positions and retry hints are kept either way."""
        if sse.retry is not None:
            self.retry_ms = sse.retry
        if sse.id:
            self.position = sse.id
        if not sse.data:
            return None  # the position frame, or the blank frame after a ping
        self.backoff = 0.0
        event = Event.from_sse(sse)
        if isinstance(event, AuthExpired) and not callable(self.token):
            self.ended = True
        if isinstance(event, AccessRevoked):
            self.channels = [c for c in self.channels if c != event.channel]
            self.ended = not self.channels
        return event

    def wait(self) -> float:
        """Seconds before the next attempt: the server's hint first, then growing."""
        delay = max(self.retry_ms / 1000, self.backoff)
        self.backoff = min(MAX_BACKOFF_SECONDS, max(0.5, self.backoff * 2))
        return delay


def _timeout(read: float) -> httpx.Timeout:
    return httpx.Timeout(10.0, read=read)


def stream(
    base_url: str,
    channels: Sequence[str],
    token: Token,
    *,
    last_event_id: str | None = None,
    read_timeout: float = READ_TIMEOUT_SECONDS,
    client: httpx.Client | None = None,
) -> Generator[Event, None, None]:
    """Events of ``channels`` from ``last_event_id`` (an event id, or an earlier event's
    ``position``) on, for ever, reconnecting as needed. Stop by breaking out of the loop."""
    session = _Session(list(channels), token, last_event_id)
    own = client is None
    http = client or httpx.Client(base_url=base_url, timeout=_timeout(read_timeout))
    try:
        while not session.ended:
            params, headers = session.request()
            try:
                with http.stream("GET", "/api/v1/stream", params=params, headers=headers) as r:
                    if r.status_code != 200:
                        error = session.refused(r.status_code, r.read())
                        if error is not None:
                            raise error
                    else:
                        for sse in EventSource(r).iter_sse():
                            event = session.frame(sse)
                            if event is not None:
                                yield event
                            if session.ended:
                                return
            except (httpx.TransportError, httpx.StreamError):
                pass  # dropped or refused connection: resume below
            time.sleep(session.wait())
    finally:
        if own:
            http.close()


async def astream(
    base_url: str,
    channels: Sequence[str],
    token: Token,
    *,
    last_event_id: str | None = None,
    read_timeout: float = READ_TIMEOUT_SECONDS,
    client: httpx.AsyncClient | None = None,
) -> AsyncGenerator[Event, None]:
    """:func:`stream` for asyncio: ``async for event in astream(...)``."""
    session = _Session(list(channels), token, last_event_id)
    own = client is None
    http = client or httpx.AsyncClient(base_url=base_url, timeout=_timeout(read_timeout))
    try:
        while not session.ended:
            params, headers = session.request()
            try:
                async with http.stream(
                    "GET", "/api/v1/stream", params=params, headers=headers
                ) as r:
                    if r.status_code != 200:
                        error = session.refused(r.status_code, await r.aread())
                        if error is not None:
                            raise error
                    else:
                        async for sse in EventSource(r).aiter_sse():
                            event = session.frame(sse)
                            if event is not None:
                                yield event
                            if session.ended:
                                return
            except (httpx.TransportError, httpx.StreamError):
                pass
            await asyncio.sleep(session.wait())
    finally:
        if own:
            await http.aclose()
