"""The churn soak's parts: SSE clients that come and go, a producer, and the final count.

Each :class:`ChurnClient` is one browser tab's worth of behaviour, on a raw socket (so it can
hang up cleanly or with a reset, mid-frame, as real networks do): it connects, reads for a
random while, disconnects, waits a little and reconnects with ``Last-Event-ID`` set to the last
id it saw, over and over. It keeps every event id it received per channel; :func:`tally`
compares those with what the producer published after the client's first position.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson

from streams.envelope import StreamId, parse_id
from streams.transports import decode_cursor

Id = StreamId


@dataclass
class ChurnClient:
    name: str
    user: str
    path: str
    channels: list[str]
    auth: str  # "header", "query" or "ticket"
    token: Callable[[], str]
    multi: bool = False
    last: str | None = None  # the SSE id to resume from (a cursor on the multi stream)
    start: dict[str, Id] = field(default_factory=dict)
    received: dict[str, list[Id]] = field(default_factory=dict)
    connections: int = 0
    resets: int = 0
    auth_expired: int = 0
    presence: int = 0  # presence events (no id, never in history: not part of the tally)
    presence_with_id: int = 0  # presence events that carried an id (none may)
    refused: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    tickets: list[str] = field(default_factory=list)

    def newest(self, channel: str) -> Id | None:
        got = self.received.get(channel)
        return got[-1] if got else self.start.get(channel)


async def _ticket(host: str, port: int, token: str) -> tuple[int, str]:
    """``POST /stream/tickets``: the status, and the ticket when there is one."""
    status, payload = await _request(host, port, "POST", "/api/v1/stream/tickets", token)
    if status != 201:
        return status, ""
    return status, str(json.loads(payload)["ticket"])


async def _request(
    host: str, port: int, method: str, path: str, token: str | None
) -> tuple[int, bytes]:
    """A plain HTTP/1.1 request with ``Connection: close``; the status and the whole body."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        writer.write((head + "Content-Length: 0\r\n\r\n").encode())
        raw = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    status_line, _, rest = raw.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), body


async def _blocks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """SSE blocks (without their blank line) from a chunked response body."""
    buf = b""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return
        buf += (await reader.readexactly(size + 2))[:-2]
        while (end := buf.find(b"\n\n")) >= 0:
            block, buf = buf[:end], buf[end + 2 :]
            yield block


async def connect_once(
    client: ChurnClient, host: str, port: int, read_for: float, abort: bool
) -> bool:
    """One connection: open, read for ``read_for`` seconds (or until the server ends it), hang
    up. Returns False when the server ended the stream or refused it."""
    token = client.token()
    params: list[tuple[str, str]] = (
        [("channel", c) for c in client.channels] if client.multi else []
    )
    headers = {"Host": f"{host}:{port}", "Accept": "text/event-stream"}
    if client.auth == "header":
        headers["Authorization"] = f"Bearer {token}"
    elif client.auth == "query":
        params.append(("access_token", token))
    else:
        status, ticket = await _ticket(host, port, token)
        if status != 201:
            client.refused[status] = client.refused.get(status, 0) + 1
            return False
        client.tickets.append(ticket)
        params.append(("ticket", ticket))
    if client.last is not None:
        headers["Last-Event-ID"] = client.last
    target = client.path + ("?" + urlencode(params) if params else "")
    request = f"GET {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    reader, writer = await asyncio.open_connection(host, port)
    client.connections += 1
    ended = False
    try:
        writer.write((request + "\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            client.refused[status] = client.refused.get(status, 0) + 1
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(read_for):
                async for block in _blocks(reader):
                    if _take(client, block) == "auth_expired":
                        break
                ended = True
        return not ended
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        client.errors.append(f"{type(exc).__name__}: {exc}")
        return False
    finally:
        if abort:
            writer.transport.abort()  # a reset, as a dropped network gives
        else:
            writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _take(client: ChurnClient, block: bytes) -> str | None:
    """Apply one SSE block to the client's state; returns the event type, if any."""
    sse_id: str | None = None
    event = "message"
    data: bytes | None = None
    for line in block.split(b"\n"):
        if line.startswith(b"id: "):
            sse_id = line[4:].decode()
        elif line.startswith(b"event: "):
            event = line[7:].decode()
        elif line.startswith(b"data: "):
            data = line[6:]
    if data is None:
        if sse_id is not None and client.last is None:
            # The position a first connection starts at (an id without data).
            client.last = sse_id
            if client.multi:
                client.start = dict(decode_cursor(sse_id))
            else:
                client.start = {client.channels[0]: parse_id(sse_id)}
        return None
    envelope: dict[str, Any] = orjson.loads(data)
    if event.startswith("presence"):
        client.presence += 1
        if sse_id is not None or envelope["id"] is not None:
            client.presence_with_id += 1
        return event
    if event == "auth_expired":
        client.auth_expired += 1
        return event
    if event == "reset":
        client.resets += 1
    else:
        client.received.setdefault(envelope["channel"], []).append(parse_id(envelope["id"]))
    if sse_id is not None:
        client.last = sse_id
    return event


async def churn(
    client: ChurnClient,
    host: str,
    ports: list[int],
    until: float,
    rng: random.Random,
    max_read: float,
) -> None:
    """Connect (to any of ``ports``, as behind a load balancer), read, hang up and reconnect
    at random until ``until`` (monotonic)."""
    while time.monotonic() < until:
        read_for = min(rng.uniform(0.2, max_read), max(0.0, until - time.monotonic()))
        port = rng.choice(ports)
        ok = await connect_once(client, host, port, read_for, abort=rng.random() < 0.3)
        await asyncio.sleep(rng.uniform(0.0, 0.3) if ok else rng.uniform(0.2, 0.6))


async def catch_up(
    client: ChurnClient, host: str, port: int, targets: dict[str, Id], deadline: float
) -> None:
    """After the producer stopped: reconnect until every channel's last event is in."""
    while time.monotonic() < deadline:
        missing = [
            c for c in client.channels if c in targets and (client.newest(c) or (0, 0)) < targets[c]
        ]
        if not missing:
            return
        await connect_once(client, host, port, 2.0, abort=False)


@dataclass
class Tally:
    events_expected: int = 0
    events_received: int = 0
    lost: int = 0
    duplicates: int = 0
    reorders: int = 0
    unexpected: int = 0
    without_start: int = 0


def tally(clients: list[ChurnClient], published: dict[str, list[Id]]) -> Tally:
    """Every client against what was published on its channels after its first position."""
    out = Tally()
    for client in clients:
        for channel in client.channels:
            start = client.start.get(channel)
            got = client.received.get(channel, [])
            if start is None:
                out.without_start += 1
                continue
            expected = [i for i in published.get(channel, []) if i > start]
            want, have = set(expected), set(got)
            out.events_expected += len(expected)
            out.events_received += len(got)
            out.lost += len(want - have)
            out.unexpected += len(have - want)
            out.duplicates += len(got) - len(have)
            out.reorders += sum(1 for a, b in itertools.pairwise(got) if b < a)
    return out


def notification_delivery(
    clients: list[ChurnClient], published: dict[str, list[Id]]
) -> tuple[int, int]:
    """``(delivered, due)``: the notifications published on each user channel after that
    user's first connection, and how many of them reached at least one of the user's clients
    (live, or on resuming after a drop or token expiry)."""
    starts: dict[str, Id] = {}
    got: dict[str, set[Id]] = {}
    for client in clients:
        for channel, start in client.start.items():
            if not channel.startswith("user:"):
                continue
            starts[channel] = min(start, starts.get(channel, start))
            got.setdefault(channel, set()).update(client.received.get(channel, []))
    delivered = due = 0
    for channel, start in starts.items():
        expected = [i for i in published.get(channel, []) if i > start]
        due += len(expected)
        delivered += sum(1 for i in expected if i in got[channel])
    return delivered, due


def produce(rate: float, seconds: float, channels: list[str]) -> None:
    """The producer process: ``rate`` events a second for ``seconds``, round the channels at
    random, with ``streams.publish``; prints ``channel id`` per event."""
    import streams

    rng = random.Random(7)
    started = time.monotonic()
    n = 0
    while (now := time.monotonic()) - started < seconds:
        due = started + n / rate
        if due > now:
            time.sleep(due - now)
        channel = rng.choice(channels)
        data: dict[str, Any] = {"seq": n, "t": time.time_ns()}
        if channel.startswith("file:"):
            kind = "metric_update"
        else:  # notifications, as the hub counts them (finrt_notifications_delivered_total)
            kind, data["type"] = "notification", "report_ready"
        event_id = streams.publish(channel, kind, data)
        sys.stdout.write(f"{channel} {event_id}\n")
        n += 1
    sys.stdout.flush()


if __name__ == "__main__":
    doc = json.loads(sys.stdin.read())
    produce(float(doc["rate"]), float(doc["seconds"]), list(doc["channels"]))
