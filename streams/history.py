"""Reading a channel's history (its capped Redis Stream) and deciding how a client resumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from streams.batching import TurnBatcher, eval_batch, per_key_scripts
from streams.envelope import Event, StreamId, format_id, join_envelope, parse_id
from streams.keys import history_key

PAGE = 500


def event_from_entry(entry_id: bytes | str, fields: dict[Any, Any]) -> Event:
    event_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    tail = fields.get(b"e", fields.get("e", b""))
    if isinstance(tail, str):
        tail = tail.encode()
    return Event.from_envelope(join_envelope(event_id, tail))


# A channel's stream always holds at least one entry: the first subscriber to a channel that has
# none creates it with a marker entry (field "m", not an event, never delivered). So every
# position a client is ever given is a real stream id, and a stream that vanished (a Redis
# without persistence restarted, or the idle TTL passed) is told apart from one never used.
# The entry that creates a stream is marked (that marker, or a first event's field "g", see
# streams/publish.py): while the stream's first entry is still marked, nothing was ever trimmed
# from it, so a position older than it was lost with an earlier stream, not trimmed (the 4th
# value returned, ``whole``).
BOUNDS_LUA, BOUNDS_BATCH_LUA = per_key_scripts(
    """
local function one(key, maxlen, ttl)
  local existed = redis.call('EXISTS', key)
  if existed == 0 then
    redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'm', '1')
    if tonumber(ttl) > 0 then redis.call('EXPIRE', key, ttl) end
  end
  local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  local whole, fields = 0, first[1][2]
  for j = 1, #fields, 2 do
    if fields[j] == 'm' or fields[j] == 'g' then whole = 1 end
  end
  return {existed, first[1][1], last[1][1], whole}
end
""",
    shared=2,
)


@dataclass(frozen=True, slots=True)
class Bounds:
    """What a channel's history holds: its oldest and newest ids, whether it existed before
    this read (if not, it was just created with a marker), and whether it still holds the entry
    it began with (``whole``: nothing was ever trimmed from it)."""

    existed: bool
    first: StreamId
    head: StreamId
    whole: bool = False


class HistoryReader:
    """History reads for one Redis and key prefix."""

    def __init__(
        self, client: aioredis.Redis, prefix: str, *, maxlen: int, ttl_seconds: int
    ) -> None:
        self.client, self.prefix, self.maxlen, self.ttl = client, prefix, maxlen, ttl_seconds
        self._bounds = client.register_script(BOUNDS_LUA)
        self._bounds_batch = client.register_script(BOUNDS_BATCH_LUA)
        # Lookups of streams opening together go to Redis as one pipeline (streams/batching.py).
        self._batch: TurnBatcher[str, Bounds] = TurnBatcher(self._bounds_of)

    async def bounds(self, channel: str) -> Bounds:
        return await self._batch.call(channel)

    async def _bounds_of(self, channels: list[str]) -> list[Bounds | BaseException]:
        keys = [history_key(self.prefix, c) for c in channels]
        replies = await eval_batch(
            self.client, self._bounds_batch, self._bounds, keys, [self.maxlen, self.ttl]
        )
        out: list[Bounds | BaseException] = []
        for reply in replies:
            if isinstance(reply, BaseException):
                out.append(reply)
            else:
                existed, first, head, whole = reply
                out.append(
                    Bounds(
                        bool(existed),
                        parse_id(_decode(first)),
                        parse_id(_decode(head)),
                        bool(whole),
                    )
                )
        return out

    async def read_page(self, channel: str, after: StreamId, count: int = PAGE) -> Page:
        """The next ``count`` entries after ``after``, markers dropped, oldest first."""
        entries: list[tuple[Any, dict[Any, Any]]] = await self.client.xrange(
            history_key(self.prefix, channel), f"({format_id(after)}", "+", count=count
        )  # type: ignore[assignment]
        last = parse_id(_decode(entries[-1][0])) if entries else after
        events = [event_from_entry(eid, f) for eid, f in entries if b"e" in f or "e" in f]
        return Page(events, last, len(entries) == count)

    async def read_latest(self, channel: str, count: int) -> list[Event]:
        """The newest ``count`` events, oldest first."""
        entries: list[tuple[Any, dict[Any, Any]]] = await self.client.xrevrange(
            history_key(self.prefix, channel), "+", "-", count=count
        )  # type: ignore[assignment]
        return [event_from_entry(i, f) for i, f in reversed(entries) if b"e" in f or "e" in f]

    async def read_range(
        self, channel: str, after: StreamId, until: StreamId, *, page: int = PAGE
    ) -> list[Event]:
        """Every event with ``after < id <= until``, oldest first."""
        out: list[Event] = []
        cursor = after
        while cursor < until:
            got = await self.read_page(channel, cursor, page)
            out.extend(e for e in got.events if e.sid <= until)
            if not got.more:
                break
            cursor = got.last
        return out


@dataclass(frozen=True, slots=True)
class Page:
    events: list[Event]
    last: StreamId  # the last entry id read (markers included): where the next page starts
    more: bool


# Why a client is told to refetch its snapshot (a ``reset`` event's ``reason``).
LOST, TRIMMED, UNKNOWN = "history_lost", "history_trimmed", "unknown_position"
RESET_REASONS = (LOST, TRIMMED, UNKNOWN)
# The position before a channel's first event: a client that has seen nothing of it yet.
BEGINNING: StreamId = (0, 0)


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """``reset``: why the client must refetch its snapshot (None: no reset). ``replay``: read
    history after ``position`` before going live. ``position``: the id the client is at."""

    reset: str | None
    replay: bool
    position: StreamId


def plan_resume(last: StreamId | None, bounds: Bounds) -> ResumePlan:
    """How a client that last saw ``last`` catches up, given what history still holds.

    History reaches back far enough only when ``last`` lies within [first, head]. Anything
    else (trimmed, lost with a non-persistent Redis, or an id from nowhere) is a ``reset``:
    the client refetches its snapshot and continues from the newest event. Never a silent gap.
    A position older than a stream that still holds its beginning was lost with an earlier
    stream (a Redis restarted without persistence, the idle TTL), even if events were
    published since: ``history_lost``; older than a trimmed stream: ``history_trimmed``.

    ``BEGINNING`` (``0-0``, the id before every event) asks for the channel from its first
    event: everything history holds when it still holds its beginning (``whole``, or just
    created: nothing yet), else ``history_trimmed``.
    """
    head = bounds.head
    if last is None:
        return ResumePlan(None, False, head)
    if last == BEGINNING:
        if not bounds.existed:  # created by this read: nothing to replay
            return ResumePlan(None, False, head)
        if not bounds.whole:
            return ResumePlan(TRIMMED, False, head)
        return ResumePlan(None, True, last)
    if not bounds.existed:
        return ResumePlan(LOST, False, head)
    if last < bounds.first:
        return ResumePlan(LOST if bounds.whole else TRIMMED, False, head)
    if last > head:
        return ResumePlan(UNKNOWN, False, head)
    return ResumePlan(None, last < head, last)


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
