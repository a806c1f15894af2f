"""Presence events on their way to streams: frames without an id, big rooms folded into counts.

A presence change arrives once per process (on the file's pub/sub channel, first byte ``P``) and
becomes one frame per transport, shared by every local stream of the file. Above the room
limit, joins and leaves become one ``presence_count`` per file per second at most (the last
change always goes out): a join storm costs each client about one event a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from redis.exceptions import RedisError

from streams.envelope import utc_now_iso

log = logging.getLogger("finrt.presence")

MARK = b"P"  # first byte of a presence message on a channel's pub/sub channel (events: "{")
TYPES = frozenset({"presence", "presence_join", "presence_leave", "presence_count"})
FOLD_SECONDS = 1.0  # big rooms: at most one presence_count per channel per this long

# channel, SSE frame, WebSocket frame, a user whose own streams skip it (their own join)
# (channel, event type, envelope, a user whose own streams skip it)
Deliver = Callable[[str, str, bytes, str | None], None]
Snapshot = Callable[[str], Awaitable[dict[str, Any]]]


def carries_presence(channel: str) -> bool:
    return channel.startswith("file:")


def file_id(channel: str) -> int | str:
    raw = channel[5:]
    return int(raw) if raw.isascii() and raw.isdigit() else raw


def frames(channel: str, event_type: str, data: dict[str, Any]) -> tuple[str, bytes]:
    """The event's type and envelope (``id`` null: it moves no position); each connection's
    transport frames it (streams/transports.py ``control``), once per transport kind."""
    envelope = orjson.dumps(
        {
            "id": None,
            "channel": channel,
            "type": event_type,
            "data": data,
            "created_at": utc_now_iso(),
        }
    )
    return event_type, envelope


class _Room:
    """A channel above the room limit: its latest count and when one was last sent."""

    __slots__ = ("count", "sent_at", "timer")

    def __init__(self) -> None:
        self.count = 0
        self.sent_at = 0.0
        self.timer: asyncio.TimerHandle | None = None


class LiveFanout:
    def __init__(self, deliver: Deliver | None, room_limit: int, snapshot: Snapshot) -> None:
        self.deliver, self.room_limit, self.snapshot = deliver, room_limit, snapshot
        self._rooms: dict[str, _Room] = {}
        self._broadcasts: set[asyncio.Task[None]] = set()  # held: the loop keeps weak refs only

    def on_message(self, channel: str, payload: bytes) -> None:
        """A presence change published by some process (the payload after ``MARK``):
        ``{"j": [joined], "l": [left], "n": count}``."""
        if self.deliver is None:
            return
        try:
            doc = orjson.loads(payload)
            count = int(doc["n"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("dropped a malformed presence message on %s", channel)
            return
        room = self._rooms.get(channel)
        if count > self.room_limit:
            if room is None:
                room = self._rooms[channel] = _Room()
            room.count = count
            self._send_count(channel, room)
            return
        if room is not None:  # back to a small room: its list is unknown to clients
            if room.timer is not None:
                room.timer.cancel()
            del self._rooms[channel]
            self.refresh([channel])
            return
        fid = file_id(channel)
        # Lua's cjson writes an empty list as {}: only lists hold users.
        joined, left = doc.get("j"), doc.get("l")
        for user in joined if isinstance(joined, list) else []:
            data = {"file_id": fid, "user_id": user, "count": count}
            self.deliver(channel, *frames(channel, "presence_join", data), user)
        for user in left if isinstance(left, list) else []:
            data = {"file_id": fid, "user_id": user, "count": count}
            self.deliver(channel, *frames(channel, "presence_leave", data), None)

    def _send_count(self, channel: str, room: _Room) -> None:
        if room.timer is not None:
            return  # the pending one will carry the latest count
        wait = room.sent_at + FOLD_SECONDS - time.monotonic()
        if wait > 0:
            room.timer = asyncio.get_running_loop().call_later(wait, self._count_due, channel)
            return
        room.sent_at = time.monotonic()
        if self.deliver is not None:
            data = {"file_id": file_id(channel), "count": room.count}
            self.deliver(channel, *frames(channel, "presence_count", data), None)

    def _count_due(self, channel: str) -> None:
        room = self._rooms.get(channel)
        if room is not None:
            room.timer = None
            self._send_count(channel, room)

    def refresh(self, channels: list[str]) -> None:
        """Give every local stream of these files a fresh snapshot (in the background)."""
        task = asyncio.get_running_loop().create_task(self._broadcast(channels))
        self._broadcasts.add(task)
        task.add_done_callback(self._broadcast_done)

    def _broadcast_done(self, task: asyncio.Task[None]) -> None:
        self._broadcasts.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("presence snapshots failed", exc_info=exc)

    async def _broadcast(self, channels: list[str]) -> None:
        for channel in channels:
            try:
                snap = await self.snapshot(channel)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("presence snapshot of %s failed: %s", channel, exc)
                continue
            if self.deliver is not None:
                self.deliver(channel, *frames(channel, "presence", snap), None)

    def stop(self) -> None:
        for task in self._broadcasts:
            task.cancel()
        for room in self._rooms.values():
            if room.timer is not None:
                room.timer.cancel()
        self._rooms.clear()


__all__ = ["MARK", "TYPES", "Deliver", "LiveFanout", "carries_presence", "file_id", "frames"]
