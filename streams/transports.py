"""How each kind of connection is written: one small object per transport.

The hub and :class:`~streams.subscriber.Subscriber` move events and positions; a transport
turns them into ASGI messages. It frames a batch of events (:meth:`Transport.messages`), a
control event (:meth:`Transport.control`), the stream's first bytes (:meth:`Transport.preamble`)
and its end (:meth:`Transport.close`, :meth:`Transport.farewell`). Nothing else in the hub knows
SSE from WebSocket.

Encode once: an event's bytes for a transport kind are built on first use and kept on the
:class:`~streams.envelope.Event` (``sse``, ``sse_body``; the WebSocket sends the envelope
itself), so a fan-out to thousands of connections frames each event once per kind, not once
per connection. The multi-channel SSE stream adds only its per-connection ``id:`` line.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import orjson
from sse_starlette.event import ServerSentEvent

from streams.envelope import Event, InvalidEvent, StreamId, format_id, parse_id

if TYPE_CHECKING:
    from streams.subscriber import Subscriber

Item = Event | bytes  # an event, or a control frame already framed for its connection
Message = dict[str, Any]  # an ASGI message

PING = b": ping\n\n"


def sse_frame(event: Event) -> bytes:
    """An event's SSE bytes for a single-channel stream, built once and shared."""
    frame = event.sse
    if frame is None:
        frame = event.sse = ServerSentEvent(
            event.envelope.decode(), event=event.type, id=event.id, sep="\n"
        ).encode()
    return frame


def sse_message(event: Event) -> dict[str, Any]:
    """The ASGI message that writes ``event`` alone on a single-channel SSE stream, shared."""
    message = event.sse_message
    if message is None:
        message = event.sse_message = {
            "type": "http.response.body",
            "body": sse_frame(event),
            "more_body": True,
        }
    return message


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


class Transport:
    """The interface, with the single-channel SSE stream's behaviour."""

    label = "sse"  # for metrics
    # True when the client's position is a cursor over all channels: the subscriber then
    # tracks what it wrote per channel (``Subscriber.written``) to stamp each event.
    multi = False
    # Keep-alive frame sent while idle; None when the protocol keeps itself alive.
    ping: bytes | None = PING
    # A connection whose last channel was taken away ends (streams/revocation.py); False when
    # the protocol can subscribe to others on the same connection.
    ends_when_empty = True

    def cursor(self, positions: dict[str, StreamId]) -> str:
        """What the client sends back to resume from ``positions``."""
        return format_id(next(iter(positions.values())))

    def messages(self, sub: Subscriber, items: list[Item]) -> list[Message]:
        """The ASGI messages that write ``items``: one SSE chunk per batch."""
        if not items:
            return []
        return [{"type": "http.response.body", "body": self.chunk(sub, items), "more_body": True}]

    def chunk(self, sub: Subscriber, items: list[Item]) -> bytes:
        return b"".join(sse_frame(i) if isinstance(i, Event) else i for i in items)

    def control(self, event_type: str, envelope: bytes, event_id: str | None) -> bytes:
        """A server-made event for one connection; with ``event_id`` it moves the client's
        position (``reset``), without it leaves it alone (``auth_expired``)."""
        head = b"" if event_id is None else b"id: " + event_id.encode() + b"\n"
        return head + b"event: " + event_type.encode() + b"\ndata: " + envelope + b"\n\n"

    def revoked(self, channel: str, reason: str, envelope: bytes) -> bytes:
        """What tells the client ``channel`` was taken away: the ``access_revoked`` event."""
        return self.control("access_revoked", envelope, None)

    def preamble(self, retry_ms: int, position: str | None) -> bytes | None:
        """The stream's first bytes: the reconnect hint and, for a client that gave no
        position, the position it starts at (so its reconnect misses nothing)."""
        lines = [b"retry: %d\n" % retry_ms]
        if position is not None:
            lines.append(b"id: " + position.encode() + b"\n")
        return b"".join(lines) + b"\n"

    def close(self, reason: str, messages: list[Message]) -> None:
        """Make ``messages`` (possibly empty) end the connection."""
        if messages:
            messages[-1]["more_body"] = False
        else:
            messages.append({"type": "http.response.body", "body": b"", "more_body": False})

    def farewell(self, retry_ms: int) -> bytes | None:
        """The last frame when the server shuts down: reconnect (elsewhere) after ``retry_ms``."""
        return b"retry: %d\n\n" % retry_ms


class MultiSseTransport(Transport):
    """SSE over several channels: each event's id is a cursor over every channel."""

    multi = True

    def cursor(self, positions: dict[str, StreamId]) -> str:
        return encode_cursor(positions)

    def chunk(self, sub: Subscriber, items: list[Item]) -> bytes:
        written = sub.written
        assert written is not None
        parts = []
        for i in items:
            if isinstance(i, Event):
                written[i.channel] = i.sid
                parts.append(b"id: " + encode_cursor(written).encode() + b"\n" + sse_body(i))
            else:
                parts.append(i)
        return b"".join(parts)


class WebSocketTransport(Transport):
    """One text frame per event envelope or reply; the protocol has pings of its own."""

    label = "websocket"
    ping = None
    ends_when_empty = False

    def messages(self, sub: Subscriber, items: list[Item]) -> list[Message]:
        return [
            {"type": "websocket.send", "text": (i.envelope if isinstance(i, Event) else i).decode()}
            for i in items
        ]

    def control(self, event_type: str, envelope: bytes, event_id: str | None) -> bytes:
        return envelope

    def revoked(self, channel: str, reason: str, envelope: bytes) -> bytes:
        """The socket's own word for it: the channel is unsubscribed, with the reason."""
        return orjson.dumps({"type": "unsubscribed", "channel": channel, "reason": reason})

    def preamble(self, retry_ms: int, position: str | None) -> bytes | None:
        return None

    def close(self, reason: str, messages: list[Message]) -> None:
        messages.append(
            {"type": "websocket.close", "code": 4001 if reason == "auth_expired" else 1000}
        )

    def farewell(self, retry_ms: int) -> bytes | None:
        return None


SSE = Transport()
SSE_MULTI = MultiSseTransport()
WEBSOCKET = WebSocketTransport()

__all__ = [
    "PING",
    "SSE",
    "SSE_MULTI",
    "WEBSOCKET",
    "MultiSseTransport",
    "Transport",
    "WebSocketTransport",
    "decode_cursor",
    "encode_cursor",
    "sse_body",
    "sse_frame",
]
