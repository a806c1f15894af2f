"""One connection's state in the hub: where it is in each channel, what waits to be written,
and how it is written (SSE bytes or WebSocket text frames).

Kept small on purpose (``__slots__``, no task of its own): a process holds thousands.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson
from sse_starlette.event import ServerSentEvent

from streams import _drive
from streams.envelope import Event, InvalidEvent, StreamId, format_id, parse_id

# An ASGI send; under uvicorn it is a coroutine function (see _drive).
Send = Callable[[Any], Any]

SSE, SSE_MULTI, WS = 0, 1, 2
PING = b": ping\n\n"


def sse_frame(event: Event) -> bytes:
    """An event's SSE bytes for a single-channel stream, built once and shared."""
    frame = event.sse
    if frame is None:
        frame = event.sse = ServerSentEvent(
            event.envelope.decode(), event=event.type, id=event.id, sep="\n"
        ).encode()
    return frame


def sse_body(event: Event) -> bytes:
    """The ``event:`` and ``data:`` lines, for streams that prefix their own ``id:``."""
    body = event.sse_body
    if body is None:
        body = event.sse_body = ServerSentEvent(
            event.envelope.decode(), event=event.type, sep="\n"
        ).encode()
    return body


def encode_cursor(positions: dict[str, StreamId]) -> str:
    """The multi-channel stream's SSE id: every channel's position, opaque to clients."""
    raw = orjson.dumps({ch: format_id(sid) for ch, sid in positions.items()})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> dict[str, StreamId]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = orjson.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError
        return {str(ch): parse_id(str(value)) for ch, value in doc.items()}
    except (ValueError, InvalidEvent, orjson.JSONDecodeError) as exc:
        raise InvalidEvent("Last-Event-ID is not a cursor of this stream") from exc


class Subscriber:
    """A connection subscribed to one or more channels.

    ``positions`` holds, per channel, the newest id queued for this connection: events at or
    below it are duplicates (a resume overlapping live delivery) and are skipped. While
    ``live`` is False the connection is catching up from history and live events wait in
    ``held``.
    """

    __slots__ = (
        "_task",
        "closing",
        "draining",
        "expire_handle",
        "finished",
        "held",
        "kind",
        "limit",
        "live",
        "on_finish",
        "pending",
        "positions",
        "send",
        "user_id",
        "written",
    )

    def __init__(self, user_id: str, channels: list[str], kind: int, limit: int) -> None:
        self.user_id = user_id
        self.kind = kind
        self.limit = limit
        self.positions: dict[str, StreamId] = dict.fromkeys(channels, (0, 0))
        self.written: dict[str, StreamId] | None = (
            dict(self.positions) if kind == SSE_MULTI else None
        )
        self.pending: list[Event | bytes] = []
        self.held: list[Event] = []
        self.live = False
        self.draining = False
        self.closing: str | None = None
        self.finished = False
        self.send: Send | None = None
        self.expire_handle: Any = None
        self.on_finish: Callable[[Subscriber, str], None] | None = None
        self._task: Any = None

    @property
    def channels(self) -> list[str]:
        return list(self.positions)

    def offer(self, event: Event) -> bool:
        """Queue a live event; True when the connection now has something to flush."""
        if self.closing is not None:
            return False
        if event.sid <= self.positions[event.channel]:
            return False
        if not self.live:
            self.held.append(event)
            if len(self.held) > self.limit:
                self.close("slow")
            return False
        self.positions[event.channel] = event.sid
        self.pending.append(event)
        if len(self.pending) >= self.limit:
            self._shed()
        return True

    def queue_raw(self, data: bytes) -> None:
        """A control frame (ping, reset, auth_expired, retry hint) for this connection only."""
        if self.closing is None:
            self.pending.append(data)

    def go_live(self) -> None:
        """End of catch-up: queue what arrived meanwhile (minus what history covered)."""
        held, self.held = self.held, []
        self.live = True
        for event in held:
            self.offer(event)

    def _shed(self) -> None:
        # Conflation: a newer event with the same key supersedes an older one.
        seen: set[tuple[str, str]] = set()
        kept: list[Event | bytes] = []
        for item in reversed(self.pending):
            if isinstance(item, Event) and item.key is not None:
                mark = (item.channel, item.key)
                if mark in seen:
                    continue
                seen.add(mark)
            elif item is PING:
                continue
            kept.append(item)
        kept.reverse()
        self.pending = kept
        if len(kept) >= self.limit:
            self.close("slow")

    def close(self, reason: str, final: bytes | None = None) -> None:
        """End the stream: drop what is queued (a reconnect resumes from history), write
        ``final`` and finish. A slow client's reconnect picks up where its last write ended."""
        if self.closing is not None:
            return
        self.closing = reason
        if reason == "slow":
            self.pending = []
        if final is not None:
            self.pending.append(final)
        if self.expire_handle is not None:
            self.expire_handle.cancel()
        self.flush()

    # -- writing -------------------------------------------------------------------------

    def flush(self) -> None:
        if self.draining or self.finished or self.send is None or not self.live:
            if self.closing is not None and self.send is None and not self.finished:
                self._finish(None)
            return
        items = self.pending
        closing = self.closing is not None
        if not items and not closing:
            return
        self.pending = []
        messages = self.messages(items)
        if closing:
            if self.kind == WS:
                code = 4001 if self.closing == "auth_expired" else 1000
                messages.append({"type": "websocket.close", "code": code})
            elif messages:
                messages[-1]["more_body"] = False
            else:
                messages.append({"type": "http.response.body", "body": b"", "more_body": False})
        send = self.send
        coro = send(messages[0]) if len(messages) == 1 else _drive.send_all(send, messages)
        self.draining = True
        self._task = _drive.drive(coro, self._finish if closing else self._sent)

    def messages(self, items: list[Event | bytes]) -> list[dict[str, Any]]:
        """The ASGI messages that write ``items``: one SSE chunk, or one frame per event."""
        if self.kind == WS:
            return [
                {
                    "type": "websocket.send",
                    "text": (i.envelope if isinstance(i, Event) else i).decode(),
                }
                for i in items
                if i is not PING
            ]
        if not items:
            return []
        return [{"type": "http.response.body", "body": self._sse_chunk(items), "more_body": True}]

    async def write_now(self, items: list[Event | bytes]) -> None:
        """Write from the connection's own task, waiting for the socket (used for catch-up)."""
        assert self.send is not None
        for message in self.messages(items):
            await self.send(message)

    def _sse_chunk(self, items: list[Event | bytes]) -> bytes:
        if self.kind == SSE:
            return b"".join(sse_frame(i) if isinstance(i, Event) else i for i in items)
        written = self.written
        assert written is not None
        parts = []
        for i in items:
            if isinstance(i, Event):
                written[i.channel] = i.sid
                parts.append(b"id: " + encode_cursor(written).encode() + b"\n" + sse_body(i))
            else:
                parts.append(i)
        return b"".join(parts)

    def cursor(self) -> str:
        """What this connection's client would send back as Last-Event-ID right now."""
        if self.kind == SSE_MULTI:
            return encode_cursor(self.positions)
        return format_id(next(iter(self.positions.values())))

    def _sent(self, error: BaseException | None) -> None:
        self.draining = False
        self._task = None
        if error is not None:
            self._finish(error)
        elif self.pending or self.closing is not None:
            self.flush()

    def _finish(self, error: BaseException | None) -> None:
        self.draining = False
        if self.finished:
            return
        self.finished = True
        self.pending = []
        if self.expire_handle is not None:
            self.expire_handle.cancel()
        if self.on_finish is not None:
            self.on_finish(self, "gone" if error is not None else (self.closing or "closed"))
