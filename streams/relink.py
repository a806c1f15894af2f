"""The hub's Redis link: keep one pub/sub connection, resubscribe after a reconnect, and fill
each channel's gap from history (what was published while the link was down).

Part of :class:`streams.hub.Hub` (a base class of it, for size: one concern per module); it
works on the hub's channels and delivers through the hub's own fan-out.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from streams._pubsub import Backoff, SubscriberProtocol, encode_command, open_subscriber
from streams.history import plan_resume
from streams.keys import channel_from_pubsub, pubsub_channel
from streams.shards import ShardLink

if TYPE_CHECKING:
    from streams.envelope import Event, StreamId
    from streams.history import HistoryReader
    from streams.hub import Stats, _Channel
    from streams.presence import Presence
    from streams.subscriber import Subscriber

log = logging.getLogger("finrt.hub")


class RedisLink(ShardLink):
    # The hub's state and fan-out this part works with (defined by Hub).
    redis_url: str
    redis_health_seconds: float
    presence: Presence | None
    replicas_acked: bool
    prefix: str
    history: HistoryReader
    stats: Stats
    _channels: dict[str, _Channel]
    _conn: SubscriberProtocol | None
    _connected: asyncio.Event
    _tasks: list[asyncio.Task[None]]
    _stopping: bool
    _to_subscribe: list[str]  # channels to subscribe at the end of this loop turn

    @property
    def connected(self) -> bool:
        """Whether the pub/sub link to Redis is up."""
        return self._connected.is_set()

    def _on_message(self, name: bytes, payload: bytes) -> None:
        raise NotImplementedError

    def _on_batch_end(self) -> None:
        raise NotImplementedError

    def _deliver(self, ch: _Channel, event: Event) -> None:
        raise NotImplementedError

    def _schedule_flush(self) -> None:
        raise NotImplementedError

    def reset(self, sub: Subscriber, channel: str, reason: str, position: StreamId) -> None:
        raise NotImplementedError

    def _link_subscribe(self, name: str) -> None:
        """Subscribe one more channel on the live link (its confirmation readies it).

        The channels wanted in one loop turn go out as one SUBSCRIBE at its end: a storm of
        streams opening costs one command per turn, not one per stream.
        """
        if not self._to_subscribe:
            asyncio.get_running_loop().call_soon(self._send_subscribes)
        self._to_subscribe.append(name)

    def _send_subscribes(self) -> None:
        names, self._to_subscribe = self._to_subscribe, []
        names = [n for n in dict.fromkeys(names) if n in self._channels]
        if not names:
            return
        if self.sharded:
            for name in names:
                self._shard_subscribe(name)
        elif self._conn is not None and self.connected:
            for name in names:
                self._channels[name].pending_subs += 1
            self._conn.write(
                encode_command("SUBSCRIBE", *(pubsub_channel(self.prefix, n) for n in names))
            )

    def _link_unsubscribe(self, names: list[str]) -> None:
        if self.sharded:
            self._shard_unsubscribe(names)
        elif self._conn is not None and self.connected:
            self._conn.write(
                encode_command("UNSUBSCRIBE", *(pubsub_channel(self.prefix, n) for n in names))
            )

    def _link_close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._shards_close()

    def _on_confirm(self, kind: bytes, name: bytes) -> None:
        if kind != b"subscribe":
            return
        ch = self._channels.get(channel_from_pubsub(self.prefix, name.decode()))
        if ch is None:
            return
        ch.pending_subs -= 1
        if ch.pending_subs <= 0:
            ch.pending_subs = 0
            if not ch.ready.done():
                ch.ready.set_result(None)

    async def _keep_connected(self) -> None:
        if self.sharded:
            return await self._keep_shards()
        backoff = Backoff()
        first = True
        while not self._stopping:
            try:
                conn = await open_subscriber(
                    self.redis_url,
                    self._on_message,
                    self._on_confirm,
                    self._on_batch_end,
                    health_seconds=self.redis_health_seconds,
                )
            except (OSError, ConnectionError, TimeoutError, ValueError) as exc:
                delay = backoff.next()
                log.warning("Redis pub/sub connect failed (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            self._conn = conn
            if not first:
                self.stats.reconnects += 1
                log.info("Redis pub/sub reconnected; filling gaps from history")
            await self._resubscribe_all(conn, refill=not first)
            if not first and self.presence is not None:
                self.presence.on_reconnect()
            first = False
            self._connected.set()
            await conn.lost
            self._connected.clear()
            self._conn = None
            if conn.unresponsive:
                self.stats.unresponsive += 1
            if not self._stopping:
                log.warning("Redis pub/sub connection lost; reconnecting")
                for ch in self._channels.values():
                    if ch.ready.done():
                        ch.ready = asyncio.get_running_loop().create_future()
                    ch.pending_subs = 0
                    ch.head = None  # Redis may come back without its history
                if conn.refused is None:
                    backoff.reset()
                else:
                    # Redis answers but refuses our command (an ACL without the channels):
                    # reconnecting at once would only be refused again, in a tight loop.
                    delay = backoff.next()
                    log.error(
                        "Redis refused the pub/sub link's command (%s); retrying in %.2fs",
                        conn.refused,
                        delay,
                    )
                    await asyncio.sleep(delay)

    async def _resubscribe_all(self, conn: SubscriberProtocol, refill: bool) -> None:
        names = list(self._channels)
        if not names:
            return
        for name in names:
            ch = self._channels[name]
            ch.pending_subs += 1
            ch.filling = refill
        conn.write(encode_command("SUBSCRIBE", *(pubsub_channel(self.prefix, n) for n in names)))
        if refill:
            self._background(self._refill(names))

    async def _refill(self, names: list[str]) -> None:
        """After a reconnect: deliver what was published while the link was down."""
        for name in names:
            ch = self._channels.get(name)
            if ch is None or not ch.filling:
                continue
            try:
                await ch.ready
                await self._refill_channel(name, ch)
            except Exception:
                log.exception("refilling %s from history failed", name)
            finally:
                ch.filling = False
                held, ch.held = ch.held, []
                for event in held:
                    self._deliver(ch, event)
                self._schedule_flush()

    async def _refill_channel(self, name: str, ch: _Channel) -> None:
        live = [sub.positions[name] for sub in ch.subscribers if sub.live]
        if not live:
            return
        start = min(live)
        bounds = await self.history.bounds(name)
        if start > bounds.head and bounds.existed and self.replicas_acked:
            # After a failover with replica-acknowledged publishing, what the clients saw
            # beyond the promoted replica's head were publishes that never returned (their
            # WAIT failed; the producer retries them): nothing acknowledged is missing.
            return
        plan = plan_resume(start, bounds)
        if plan.reset is not None:
            ch.last = plan.position
            for sub in list(ch.subscribers):
                if sub.live:
                    self.reset(sub, name, plan.reset, plan.position)
            return
        events = await self.history.read_range(name, start, bounds.head)
        for event in events:
            self._deliver(ch, event)
