"""Tests of the pure core: no server, no Redis, no database; each module marks itself ``fast``
(``make test-fast`` runs them in seconds)."""

from __future__ import annotations

import orjson

from streams.envelope import Event


def event(channel: str, seq: int, *, key: str | None = None, type_: str = "metric_update") -> Event:
    """An event as the hub receives it from Redis."""
    doc = {"id": f"1000-{seq}", "channel": channel, "type": type_, "data": {"n": seq}}
    if key is not None:
        doc["key"] = key
    return Event.from_envelope(orjson.dumps(doc))
