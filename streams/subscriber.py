"""One connection's state in the hub: where it is in each channel and what waits to be written.

How it is written (SSE bytes or WebSocket text frames) is its transport's business
(streams/transports.py).

Kept small on purpose (``__slots__``, no task of its own): a process holds thousands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streams import _drive
from streams.envelope import Event, StreamId
from streams.transports import PING, SSE, Item, Transport, sse_message

# An ASGI send; under uvicorn it is a coroutine function (see _drive).
Send = Callable[[Any], Any]


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
        "expires_at",
        "finished",
        "held",
        "limit",
        "live",
        "on_finish",
        "pending",
        "positions",
        "send",
        "transport",
        "user_id",
        "written",
    )

    def __init__(self, user_id: str, channels: list[str], transport: Transport, limit: int) -> None:
        self.user_id = user_id
        self.transport = transport
        self.limit = limit
        self.positions: dict[str, StreamId] = dict.fromkeys(channels, (0, 0))
        # Per channel, the newest id written (multi-channel cursors stamp each event with it).
        self.written: dict[str, StreamId] | None = dict(self.positions) if transport.multi else None
        self.pending: list[Item] = []
        self.held: list[Event] = []
        self.live = False
        self.draining = False
        self.closing: str | None = None
        self.finished = False
        self.send: Send | None = None
        self.expires_at: float | None = None  # when its token expires (streams/expiry.py)
        self.on_finish: Callable[[Subscriber, str], None] | None = None
        self._task: Any = None

    @property
    def channels(self) -> list[str]:
        return list(self.positions)

    def offer(self, event: Event) -> bool:
        """Queue a live event; True when the connection now has something to flush."""
        if self.closing is not None:
            return False
        position = self.positions.get(event.channel)
        if position is None or event.sid <= position:  # None: the channel was taken away
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
        """A control frame (ping, reset, auth_expired, retry hint, a WebSocket reply) for this
        connection only. Bounded as events are: with ``limit`` items waiting (a client that
        sends frames and reads none of the replies), the queue is conflated and, still full, the
        connection ends as slow rather than the frames piling up in this process."""
        if self.closing is not None:
            return
        if len(self.pending) >= self.limit:
            self._shed()
            if self.closing is not None:
                return
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
        kept: list[Item] = []
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
        send = self.send
        if not closing and len(items) == 1 and self.transport is SSE and type(items[0]) is Event:
            # The usual live delivery: one event on a single-channel stream, whose message
            # every connection shares (``close`` below edits messages, so not when closing).
            coro = send(sse_message(items[0]))
        else:
            messages = self.transport.messages(self, items)
            if closing:
                assert self.closing is not None
                self.transport.close(self.closing, messages)
            coro = send(messages[0]) if len(messages) == 1 else _drive.send_all(send, messages)
        self.draining = True
        self._task = _drive.drive(coro, self._finish if closing else self._sent)

    async def write_now(self, items: list[Item]) -> None:
        """Write from the connection's own task, waiting for the socket (used for catch-up)."""
        assert self.send is not None
        for message in self.transport.messages(self, items):
            await self.send(message)

    def cursor(self) -> str:
        """What this connection's client would send back as Last-Event-ID right now."""
        return self.transport.cursor(self.positions)

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
        if self.on_finish is not None:
            self.on_finish(self, "gone" if error is not None else (self.closing or "closed"))
