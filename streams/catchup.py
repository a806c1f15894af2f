"""Catching up: where a stream that joins starts in each of its channels, and bringing it to
live (resets, then history page by page, then what was held for it meanwhile).

Part of :class:`streams.hub.Hub` (a base class of it, for size: one concern per module), as
streams/relink.py is; it works on the hub's channels and writes through each subscriber.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streams.envelope import StreamId, control_envelope, format_id
from streams.history import PAGE, Bounds, ResumePlan, plan_resume
from streams.relink import RedisLink

if TYPE_CHECKING:
    from streams.delivery_counts import DeliveryCounter
    from streams.subscriber import Subscriber


class CatchUp(RedisLink):
    # The hub's state this part works with (defined by Hub).
    retry_ms: int
    delivery_counter: DeliveryCounter

    def mark(self, sub: Subscriber) -> None:
        raise NotImplementedError

    async def prepare(
        self, sub: Subscriber, last: dict[str, StreamId | None]
    ) -> list[tuple[str, Bounds, ResumePlan]]:
        """Fix where a joined subscriber starts in each channel, before anything is sent to it.

        Done before the response headers go out, so that every event published after the
        client sees its stream open has an id above the position it starts from.
        """
        plans = []
        for name in list(sub.positions):
            ch = self._channels.get(name)
            known = max(ch.last or (0, 0), ch.head or (0, 0)) if ch is not None else (0, 0)
            if last.get(name) is None and known > (0, 0) and self.connected:
                # A live channel: every event up to ``known`` was published before this stream
                # joined or already went out live; every later one reaches it live. So it can
                # start there without a Redis round trip.
                position = known
                sub.positions[name] = position
                if sub.written is not None:
                    sub.written[name] = position
                plans.append(
                    (name, Bounds(True, position, position), ResumePlan(None, False, position))
                )
                continue
            bounds = await self.history.bounds(name)
            if ch is not None and ch.ready.done() and (ch.head is None or bounds.head > ch.head):
                ch.head = bounds.head
            plan = plan_resume(last.get(name), bounds)
            sub.positions[name] = plan.position
            if sub.written is not None:
                sub.written[name] = plan.position
            plans.append((name, bounds, plan))
        return plans

    async def catch_up(
        self,
        sub: Subscriber,
        plans: list[tuple[str, Bounds, ResumePlan]],
        *,
        announce: bool = False,
    ) -> None:
        """Bring a prepared subscriber to live: resets, then history page by page (awaiting
        the socket), then what was held meanwhile minus duplicates. First comes the transport's
        preamble (SSE: the retry hint and, with ``announce``, the starting position, so that a
        client that gave none can reconnect without missing anything)."""
        assert sub.send is not None
        preamble = sub.transport.preamble(self.retry_ms, sub.cursor() if announce else None)
        if preamble is not None:
            await sub.write_now([preamble])
        if self.presence is not None:  # who is on each file, before any event
            await sub.write_now(await self.presence.greeting(sub))
        for name, bounds, plan in plans:
            if plan.reset is not None:
                self.stats.resets[plan.reset] += 1
                await sub.write_now([self._reset_frame(sub, name, plan.reset)])
            if not plan.replay:
                continue
            self.stats.resumes += 1
            after = plan.position
            while after < bounds.head and name in sub.positions:  # not if taken away meanwhile
                page = await self.history.read_page(name, after, PAGE)
                events = [e for e in page.events if e.sid <= bounds.head]
                if events:
                    sub.positions[name] = events[-1].sid
                    await sub.write_now(list(events))
                    self.stats.deliveries += len(events)
                    for event in events:  # delivered on this connection: counted once
                        if event.type == "notification":
                            self.delivery_counter.note(event)
                if not page.more:
                    break
                after = page.last
        sub.go_live()
        self.mark(sub)

    def _reset_frame(self, sub: Subscriber, channel: str, reason: str) -> bytes:
        cursor = sub.cursor()
        envelope = control_envelope(
            "reset",
            channel,
            cursor,
            {"reason": reason, "position": format_id(sub.positions[channel])},
        )
        return sub.transport.control("reset", envelope, cursor)

    def control_frame(self, sub: Subscriber, event_type: str, data: dict[str, Any]) -> bytes:
        """A control event for one connection that leaves its position unchanged."""
        channels = list(sub.positions)
        envelope = control_envelope(
            event_type, channels[0] if len(channels) == 1 else None, sub.cursor(), data
        )
        return sub.transport.control(event_type, envelope, None)

    def reset(self, sub: Subscriber, channel: str, reason: str, position: StreamId) -> None:
        sub.positions[channel] = position
        if sub.written is not None:
            sub.written[channel] = position
        self.stats.resets[reason] += 1
        sub.queue_raw(self._reset_frame(sub, channel, reason))
        self.mark(sub)
