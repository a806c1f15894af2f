"""The event envelope and the rules for event types and event ids (channel names:
:mod:`streams.channels`).

Envelope (identical on SSE, WebSocket, history and CLI output)::

    {"id": "...", "channel": "file:7", "type": "metric_update", "data": {...},
     "created_at": "2026-11-25T17:40:12.123456Z", "key": "revenue"}

``id`` is the Redis Stream id (``<ms>-<seq>``): unique and strictly increasing per channel.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
KEY_RE = re.compile(r"^[A-Za-z0-9_.:@/-]{1,128}\Z")
ID_RE = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}\Z")

# Control events are produced by the server for one connection; they are never stored.
CONTROL_TYPES = frozenset({"reset", "auth_expired"})

StreamId = tuple[int, int]
ZERO_ID: StreamId = (0, 0)


class InvalidEvent(ValueError):
    """A channel, type, key, id or payload that the contract does not allow."""


NOT_FINITE = "data must not hold NaN, Infinity or numbers beyond a double (e.g. 1e999)"


def check_finite(value: Any) -> None:
    """Refuse a float that is not finite anywhere in ``value``: JSON has no such number
    (Python's parser takes ``NaN``, ``Infinity`` and ``1e999``; orjson would write ``null``)."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidEvent(NOT_FINITE)
        elif isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list | tuple):
            todo.extend(item)


def check_type(event_type: str) -> str:
    if not TYPE_RE.match(event_type) or event_type in CONTROL_TYPES:
        raise InvalidEvent("type must be 1-64 of a-z, 0-9, _ (starting with a letter)")
    return event_type


def parse_id(value: str) -> StreamId:
    """``"1764096000000-3"`` -> ``(1764096000000, 3)``; raises InvalidEvent otherwise."""
    if not ID_RE.match(value):
        raise InvalidEvent(f"not an event id: {value[:40]!r}")
    ms, _, seq = value.partition("-")
    return int(ms), int(seq)


def format_id(value: StreamId) -> str:
    return f"{value[0]}-{value[1]}"


def utc_now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def envelope_tail(
    channel: str, event_type: str, data: Any, key: str | None, created_at: str, max_bytes: int
) -> bytes:
    """The envelope without its id: everything after ``{"id":"..."`` up to the closing brace.

    The id is only known once Redis appends the event, so the publish script prepends it.
    ``data`` is a JSON object, as every reader of an envelope takes it (``{...}``).
    """
    if not isinstance(data, dict):
        raise InvalidEvent(
            f"data must be a JSON object ({{...}}), not {_json_kind(data)}: "
            'wrap a value in one, for example {"value": ...}'
        )
    body: dict[str, Any] = {
        "channel": channel,
        "type": event_type,
        "data": data,
        "created_at": created_at,
    }
    if key is not None:
        body["key"] = key
    try:
        encoded = orjson.dumps(body)
    except TypeError as exc:
        raise InvalidEvent(f"data is not JSON-serialisable: {exc}") from exc
    if b"null" in encoded:  # a float that is not finite is written as null: look for one
        check_finite(data)
    if len(encoded) > max_bytes:
        raise InvalidEvent(f"event is {len(encoded)} bytes; the limit is {max_bytes}")
    return b"," + encoded[1:]


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def join_envelope(event_id: str, tail: bytes) -> bytes:
    return b'{"id":"' + event_id.encode() + b'"' + tail


@dataclass(slots=True, eq=False)
class Event:
    """One stored or live event: its id parts, routing fields and its envelope bytes.

    ``sse`` and ``sse_body`` are filled on first use and shared by every connection.
    """

    id: str
    sid: StreamId
    channel: str
    type: str
    key: str | None
    envelope: bytes
    sse: bytes | None = field(default=None)
    sse_body: bytes | None = field(default=None)
    # The ASGI message writing this event alone on a single-channel SSE stream, made on first
    # use and shared by every such connection (uvicorn only reads it).
    sse_message: dict[str, Any] | None = field(default=None)
    # Kept unparsed: the hub parses it only for the one event per flush it samples for lag.
    created_at: str = ""

    @classmethod
    def from_envelope(cls, envelope: bytes) -> Event:
        doc = orjson.loads(envelope)
        event_id = doc["id"]
        return cls(
            event_id,
            parse_id(event_id),
            doc["channel"],
            doc["type"],
            doc.get("key"),
            envelope,
            created_at=doc.get("created_at", ""),
        )

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = orjson.loads(self.envelope)
        return result


def control_envelope(
    event_type: str, channel: str | None, event_id: str, data: dict[str, Any]
) -> bytes:
    """A server-made event for one connection (``reset``, ``auth_expired``): never stored."""
    return orjson.dumps(
        {
            "id": event_id,
            "channel": channel,
            "type": event_type,
            "data": data,
            "created_at": utc_now_iso(),
        }
    )
