"""The hub: one Redis subscription connection per process, fanned out to every local stream.

Path of a live event: Redis pub/sub -> :class:`SubscriberProtocol` (all messages of one socket
read) -> :meth:`Hub._on_message` (parse once, route by channel, skip duplicates) ->
:meth:`Subscriber.offer` (queue a reference) -> one flush per batch that writes each dirty
connection's queue as one chunk. Under load the flush waits a little (never more than
``coalesce_ms``) so that one write carries many events: per connection, the kernel ``write`` is
the cost that dominates fan-out.

The hub knows nothing of SSE or WebSocket: each connection's transport (streams/transports.py)
frames what it is given. Where a joining stream starts and how it is brought to live is in
streams/catchup.py; reconnecting to Redis and filling the gaps it left in streams/relink.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from core.aio import stop_task, timed
from streams._pubsub import SubscriberProtocol
from streams.catchup import CatchUp
from streams.delivery_counts import DeliveryCounter
from streams.envelope import Event, StreamId
from streams.expiry import Expiries
from streams.history import RESET_REASONS, HistoryReader
from streams.keys import channel_from_pubsub
from streams.leases import StreamLeases
from streams.metrics import DeliveryLag
from streams.revocation import ACCESS_EVENTS, Revocation
from streams.subscriber import Subscriber
from streams.transports import Transport

if TYPE_CHECKING:
    from streams.presence import Presence

log = logging.getLogger("finrt.hub")


class HubUnavailable(RuntimeError):
    """Redis cannot be reached: streams cannot start."""


class TooManyStreams(RuntimeError):
    """The user already has the maximum number of open streams on this process."""


class _Channel:
    __slots__ = (
        "filling",
        "head",
        "held",
        "idle_since",
        "last",
        "pending_subs",
        "ready",
        "subscribers",
    )

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.pending_subs = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last: StreamId | None = None  # newest id delivered live on this channel
        self.head: StreamId | None = None  # newest id seen in history while subscribed
        self.filling = False  # a reconnect is filling this channel's gap from history
        self.held: list[Event] = []
        self.idle_since: float | None = None


class Stats:
    """Counters read by the metrics endpoint; plain ints so the hot path stays cheap."""

    __slots__ = (
        "closed",
        "deliveries",
        "events_in",
        "flushes",
        "reconnects",
        "resets",
        "resumes",
        "slow_closed",
        "unresponsive",
    )

    def __init__(self) -> None:
        self.events_in = self.deliveries = self.flushes = 0
        self.slow_closed = self.resumes = self.reconnects = self.closed = 0
        # by reason (streams.history.RESET_REASONS): a restart's resets are not a trimmed one's
        self.resets: dict[str, int] = dict.fromkeys(RESET_REASONS, 0)
        self.unresponsive = 0  # links dropped for not answering a PING in time


class Hub(CatchUp, Revocation):
    def __init__(
        self,
        redis_url: str,
        prefix: str,
        client: aioredis.Redis,
        *,
        history_maxlen: int = 1000,
        history_ttl_seconds: int = 0,
        client_buffer: int = 1000,
        ping_seconds: float = 15.0,
        retry_ms: int = 2000,
        coalesce_ms: float = 20.0,
        max_streams_per_user: int = 20,
        linger_seconds: float = 5.0,
        redis_health_seconds: float = 5.0,
        replicas_acked: bool = False,
        stream_lease_seconds: float = 0.0,
    ) -> None:
        self.redis_url, self.prefix, self.client = redis_url, prefix, client
        self.history = HistoryReader(
            client, prefix, maxlen=history_maxlen, ttl_seconds=history_ttl_seconds
        )
        self.client_buffer = client_buffer
        self.ping_seconds = ping_seconds
        self.retry_ms = retry_ms
        self.max_coalesce = coalesce_ms / 1000
        self.max_streams_per_user = max_streams_per_user
        self.linger = linger_seconds
        self.redis_health_seconds = redis_health_seconds
        # Publishers wait for replicas (FINRT_REDIS_MIN_REPLICAS_ACK): see RedisLink._refill.
        self.replicas_acked = replicas_acked
        # With a lease time, the stream limit counts across every process (streams/leases.py).
        self.leases = (
            StreamLeases(
                client, prefix, limit=max_streams_per_user, lease_seconds=stream_lease_seconds
            )
            if stream_lease_seconds > 0
            else None
        )
        self._leased: dict[Subscriber, str] = {}
        self.expiries = Expiries(self._expire)
        self._finished = self._on_finish
        self.stats = Stats()
        self.lag = DeliveryLag()
        self._channels: dict[str, _Channel] = {}
        self._per_user: defaultdict[str, int] = defaultdict(int)
        self._subscribers: set[Subscriber] = set()
        self._dirty: set[Subscriber] = set()
        self._flush_handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self._last_flush_end = 0.0
        self._last_flush_cost = 0.0
        self._conn: SubscriberProtocol | None = None
        self._to_subscribe: list[str] = []
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        # Who is on which file (streams/presence.py); None: no presence (benchmarks, tools).
        self.presence: Presence | None = None
        # Notifications written to a stream (live or replayed), claimed in Redis once per tick
        # so that each counts once in the fleet however many streams and processes it reached.
        self.delivery_counter = DeliveryCounter(client, prefix)
        self._shards_init()

    @classmethod
    def from_settings(cls, client: aioredis.Redis, settings: Any, **overrides: Any) -> Hub:
        """A hub configured by ``core.settings.Settings`` (keyword arguments override)."""
        options: dict[str, Any] = {
            "history_maxlen": settings.history_maxlen,
            "history_ttl_seconds": settings.history_ttl_seconds,
            "client_buffer": settings.client_buffer,
            "ping_seconds": settings.ping_seconds,
            "retry_ms": settings.retry_ms,
            "coalesce_ms": settings.coalesce_ms,
            "max_streams_per_user": settings.max_streams_per_user,
            "redis_health_seconds": settings.redis_health_seconds,
            "replicas_acked": settings.redis_min_replicas_ack > 0,
            "stream_lease_seconds": settings.stream_lease_seconds,
        }
        options.update(overrides)
        return cls(settings.redis_url, settings.redis_prefix, client, **options)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._keep_connected(), name="hub-redis"),
            asyncio.create_task(self._tick(), name="hub-tick"),
        ]

    async def stop(self, retry_ms: int | None = None) -> None:
        """Close every stream and the Redis link; with ``retry_ms``, each stream's last frame
        asks its client to reconnect after that long (where its transport can say so)."""
        self._stopping = True
        with contextlib.suppress(Exception):  # this process's last deliveries, if Redis answers
            await self.save_delivery_counts()
        for sub in list(self._subscribers):
            final = None if retry_ms is None else sub.transport.farewell(retry_ms)
            sub.close("shutdown", final)
        self.expiries.close()
        while self._tasks:  # those started meanwhile too
            await stop_task(self._tasks.pop(0))
        self._link_close()
        if self.leases is not None:
            await self.leases.stop()

    @property
    def open_streams(self) -> int:
        return len(self._subscribers)

    def subscribers(self) -> list[Subscriber]:
        """The open streams (a copy: for metrics and operators, not the hot path)."""
        return list(self._subscribers)

    @property
    def subscribed_channels(self) -> int:
        return len(self._channels)

    # -- joining and leaving ------------------------------------------------------------------

    def new_subscriber(self, user_id: str, channels: list[str], transport: Transport) -> Subscriber:
        """Register a connection (counts against the user's stream limit)."""
        if self._per_user[user_id] >= self.max_streams_per_user:
            raise TooManyStreams(
                f"at most {self.max_streams_per_user} open streams per user on this server"
            )
        sub = Subscriber(user_id, channels, transport, self.client_buffer)
        sub.on_finish = self._finished  # one bound method for all, not one per stream
        self._per_user[user_id] += 1
        self._subscribers.add(sub)
        return sub

    async def admit(self, sub: Subscriber) -> None:
        """Count ``sub`` against its user's fleet-wide stream limit (TooManyStreams if full)."""
        if self.leases is None:
            return
        lease = await self.leases.acquire(sub.user_id)
        if lease is None:
            raise TooManyStreams(
                f"at most {self.max_streams_per_user} open streams per user (all servers)"
            )
        if sub.finished:  # released while we waited
            self.leases.release(sub.user_id, lease)
        else:
            self._leased[sub] = lease

    async def join(self, sub: Subscriber, channels: list[str], timeout: float = 5.0) -> None:
        """Subscribe ``sub`` to ``channels`` once their live Redis subscription stands.

        ``sub`` joins each channel's fan-out only after that, so anything it is offered from
        then on was published after the subscription was live, and history covers the rest.
        """
        waits = []
        for name in channels:
            ch = self._channels.get(name)
            if ch is None:
                ch = self._channels[name] = _Channel()
                self._subscribe(name, ch)
            ch.idle_since = None
            waits.append(ch.ready)
        pending = [w for w in waits if not w.done()]
        if pending:
            try:
                await timed(asyncio.shield(asyncio.gather(*pending)), timeout)
            except TimeoutError as exc:
                now = time.monotonic()
                for name in channels:  # let the idle sweep drop what nobody uses
                    ch = self._channels.get(name)
                    if ch is not None and not ch.subscribers:
                        ch.idle_since = now
                raise HubUnavailable("Redis is not reachable") from exc
        for name in channels:
            sub.positions.setdefault(name, (0, 0))
            if sub.written is not None:
                sub.written.setdefault(name, (0, 0))
            ch = self._channels.get(name)
            if ch is None:  # unsubscribed meanwhile (idle); subscribe again
                return await self.join(sub, channels, timeout)
            if sub not in ch.subscribers:
                ch.subscribers.add(sub)
                if self.presence is not None:
                    self.presence.track(sub.user_id, name)
            ch.idle_since = None

    def leave(self, sub: Subscriber, channels: list[str] | None = None) -> None:
        names = list(sub.positions) if channels is None else channels
        now = time.monotonic()
        for name in names:
            ch = self._channels.get(name)
            if ch is not None:
                if sub in ch.subscribers:
                    ch.subscribers.discard(sub)
                    if self.presence is not None:
                        self.presence.untrack(sub.user_id, name)
                if not ch.subscribers:
                    ch.idle_since = now
            if channels is not None:
                sub.positions.pop(name, None)

    def release(self, sub: Subscriber) -> None:
        """The connection is gone: forget it everywhere."""
        sub.finished = True
        lease = self._leased.pop(sub, None)
        if lease is not None and self.leases is not None:
            self.leases.release(sub.user_id, lease)
        if sub in self._subscribers:
            self._subscribers.discard(sub)
            self._per_user[sub.user_id] -= 1
            if self._per_user[sub.user_id] <= 0:
                del self._per_user[sub.user_id]
        self.leave(sub)
        self._dirty.discard(sub)
        self.expiries.discard(sub)

    def _expire(self, sub: Subscriber) -> None:
        """``sub``'s token expired (streams/expiry.py): it is told so and closed."""
        if not sub.finished:
            sub.close(
                "auth_expired", self.control_frame(sub, "auth_expired", {"reason": "token expired"})
            )

    def _on_finish(self, sub: Subscriber, reason: str) -> None:
        if reason == "slow":
            self.stats.slow_closed += 1
            log.info("closed a stream of %s that fell %d events behind", sub.user_id, sub.limit)
        self.stats.closed += 1
        # Later, not now: this may run inside _deliver's loop over the channel's subscribers.
        asyncio.get_running_loop().call_soon(self.release, sub)

    def _subscribe(self, name: str, ch: _Channel) -> None:
        if ch.ready.done():
            ch.ready = asyncio.get_running_loop().create_future()
        self._link_subscribe(name)

    # -- live delivery --------------------------------------------------------------------------

    def _on_message(self, name: bytes, payload: bytes) -> None:
        if payload[:1] == b"P":  # presence (streams/presence.py): live only, never stored
            if self.presence is not None:
                self.presence.on_message(
                    channel_from_pubsub(self.prefix, name.decode()), payload[1:]
                )
            return
        try:
            event = Event.from_envelope(payload)
        except Exception:
            log.warning("dropped a malformed message on %r", name[:80])
            return
        self.stats.events_in += 1
        ch = self._channels.get(event.channel)
        if ch is None:
            return
        if ch.filling:
            ch.held.append(event)
            return
        self._deliver(ch, event)

    def _deliver(self, ch: _Channel, event: Event) -> None:
        if ch.last is not None and event.sid <= ch.last:
            return
        ch.last = event.sid
        dirty = self._dirty
        if event.type in ACCESS_EVENTS:  # members changed, file deleted: streams/revocation.py
            dirty.update(self.deliver_access_event(ch.subscribers, event))
            return
        for sub in ch.subscribers:
            if sub.offer(event):
                dirty.add(sub)
        if event.type == "notification" and ch.subscribers:
            self.delivery_counter.note(event)

    async def save_delivery_counts(self) -> None:
        """Claim the notifications delivered since the last call and add the first deliveries
        to the fleet's Redis counters (streams/delivery_counts.py); on failure they wait."""
        await self.delivery_counter.save()

    def broadcast_raw(
        self, channel: str, event_type: str, envelope: bytes, skip_user: str | None = None
    ) -> None:
        """An event for every stream on ``channel`` that leaves positions alone (presence),
        framed once per transport kind."""
        ch = self._channels.get(channel)
        if ch is None:
            return
        framed: dict[Transport, bytes] = {}
        for sub in ch.subscribers:
            if sub.user_id != skip_user:
                frame = framed.get(sub.transport)
                if frame is None:
                    frame = framed[sub.transport] = sub.transport.control(
                        event_type, envelope, None
                    )
                sub.queue_raw(frame)
                self._dirty.add(sub)
        self._schedule_flush()

    def mark(self, sub: Subscriber) -> None:
        self._dirty.add(sub)
        self._schedule_flush()

    def _on_batch_end(self) -> None:
        if self._dirty:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is not None:
            return
        loop = asyncio.get_running_loop()
        # The window opens only when flushing is costly: wait at most as long as the last flush
        # took (so writes use at most about half the time), capped at coalesce_ms.
        delay = min(self._last_flush_cost, self.max_coalesce)
        due = self._last_flush_end + delay
        if due <= loop.time():
            self._flush_handle = loop.call_soon(self._flush)
        else:
            self._flush_handle = loop.call_at(due, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        loop = asyncio.get_running_loop()
        started = loop.time()
        dirty, self._dirty = self._dirty, set()
        delivered = 0
        sample: Event | None = None
        for sub in dirty:
            pending = sub.pending
            # One lag sample per flush (its oldest event), not one per event: keeps it cheap.
            if sample is None and pending and not sub.draining and type(pending[0]) is Event:
                sample = pending[0]
            delivered += len(pending)
            sub.flush()
        if sample is not None:
            self.lag.observe_event(sample)
        self.stats.deliveries += delivered
        self.stats.flushes += 1
        end = loop.time()
        self._last_flush_end = end
        self._last_flush_cost = end - started

    async def _tick(self) -> None:
        """Once per ping interval: keep-alive comments, and unsubscribe channels left idle."""
        interval = min(self.ping_seconds, self.linger)
        next_ping = time.monotonic() + self.ping_seconds
        while True:
            await asyncio.sleep(interval)
            # Shielded: stop() cancelling the tick mid-claim must not lose the claimed counts.
            await asyncio.shield(self.save_delivery_counts())
            now = time.monotonic()
            if now >= next_ping:
                next_ping = now + self.ping_seconds
                for sub in self._subscribers:
                    ping = sub.transport.ping
                    if ping is not None and sub.live and not sub.pending:
                        sub.queue_raw(ping)
                        self._dirty.add(sub)
                self._schedule_flush()
            idle = [
                n
                for n, ch in self._channels.items()
                if not ch.subscribers
                and ch.idle_since is not None
                and now - ch.idle_since >= self.linger
            ]
            if idle:
                for n in idle:
                    del self._channels[n]
                self._link_unsubscribe(idle)


__all__ = ["Hub", "HubUnavailable", "TooManyStreams"]
