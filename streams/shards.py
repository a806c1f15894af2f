"""The hub's link to a Redis Cluster: one sharded pub/sub connection per primary that owns a
followed channel, each channel routed by its slot.

A channel's live events are ``SPUBLISH``ed on the shard that owns its slot, so the hub
``SSUBSCRIBE``s each channel on that shard's primary, over one connection per primary (not per
channel, not per client). The cluster changes under it in three ways, all handled the same way,
by a *resync*: the slot map is read again (``CLUSTER SLOTS``, from any node that answers) and
every channel whose owner changed or whose connection is gone is subscribed again on its owner,
its gap filled from history exactly as after a single Redis' reconnect (streams/relink.py):

- a slot migrates: Redis sends ``sunsubscribe`` for the channels of that slot;
- a subscription reaches a node that does not own the slot: ``-MOVED`` reply;
- a primary fails: its connection drops (or stops answering PINGs); a replica is promoted.

A connection that no longer carries any channel is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.crc import key_slot

from streams._pubsub import Backoff, SubscriberProtocol, encode_command, open_subscriber
from streams.connect import cluster_seeds, is_cluster
from streams.keys import channel_from_pubsub, pubsub_channel

if TYPE_CHECKING:
    from streams.hub import Stats, _Channel
    from streams.presence import Presence

log = logging.getLogger("finrt.hub")

Slots = list[tuple[int, int, str]]  # first slot, last slot, "host:port" of the primary


class ShardLink:
    # The hub's state this part works with (defined by Hub and RedisLink).
    redis_url: str
    redis_health_seconds: float
    prefix: str
    presence: Presence | None
    stats: Stats
    _channels: dict[str, _Channel]
    _connected: asyncio.Event
    _tasks: list[asyncio.Task[None]]
    _stopping: bool

    def _on_message(self, name: bytes, payload: bytes) -> None:
        raise NotImplementedError

    def _on_batch_end(self) -> None:
        raise NotImplementedError

    def _on_confirm(self, kind: bytes, name: bytes) -> None:
        raise NotImplementedError

    async def _refill(self, names: list[str]) -> None:
        raise NotImplementedError

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` until it ends or the hub stops. Tasks that have ended are let go here:
        a process whose Redis link comes and goes for months keeps no trail of them."""
        self._tasks = [task for task in self._tasks if not task.done()]
        self._tasks.append(asyncio.create_task(work))

    def _shards_init(self) -> None:
        self.sharded = is_cluster(self.redis_url)
        self._slots: Slots = []
        self._shard_conns: dict[str, SubscriberProtocol] = {}
        self._shard_of: dict[str, str] = {}  # channel -> node it is subscribed on
        self._stale: set[str] = set()  # channels whose subscription Redis ended
        self._resync = asyncio.Event()
        self._refused = Backoff()  # before resubscribing after a node refused our command

    # -- routing --------------------------------------------------------------------------------

    def _owner(self, name: str) -> str | None:
        slot = key_slot(pubsub_channel(self.prefix, name).encode())
        for first, last, addr in self._slots:
            if first <= slot <= last:
                return addr
        return None

    async def _read_slots(self) -> Slots:
        """The slot map, from the first node that answers (seeds, then nodes known so far)."""
        seeds, user, password = cluster_seeds(self.redis_url)
        known = [tuple(a.rsplit(":", 1)) for a in {addr for _, _, addr in self._slots}]
        candidates = [*seeds, *((h, int(p)) for h, p in known)]
        last_error: Exception | None = None
        for host, port in candidates:
            client = aioredis.Redis(
                host=host,
                port=port,
                username=user,
                password=password,
                socket_connect_timeout=1,
                socket_timeout=2,
            )
            try:
                rows = await client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
                info = await client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
            except (OSError, aioredis.RedisError) as exc:
                last_error = exc
                continue
            finally:
                await client.aclose()
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text:
                last_error = ConnectionError(f"cluster state not ok at {host}:{port}")
                continue
            slots: Slots = []
            for row in rows:
                node_host = row[2][0].decode() if isinstance(row[2][0], bytes) else row[2][0]
                slots.append((int(row[0]), int(row[1]), f"{node_host or host}:{int(row[2][1])}"))
            return sorted(slots)
        raise ConnectionError(f"no cluster node answered: {last_error}")

    # -- the loop -------------------------------------------------------------------------------

    async def _keep_shards(self) -> None:
        delay = 0.05
        while not self._stopping:
            try:
                self._slots = await self._read_slots()
                await self._place_all()
            except (OSError, ConnectionError, TimeoutError, ValueError) as exc:
                log.warning("Redis Cluster resync failed (%s); retrying in %.2fs", exc, delay)
                self._connected.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            self._connected.set()
            await self._resync.wait()
            self._resync.clear()

    async def _place_all(self) -> None:
        """Subscribe every followed channel on its owner's connection where it is not yet."""
        moved: list[str] = []
        by_owner: dict[str, list[str]] = {}
        for name, ch in list(self._channels.items()):
            owner = self._owner(name)
            if owner is None:
                raise ConnectionError(f"no primary owns the slot of {name}")
            current = self._shard_of.get(name)
            if current == owner and name not in self._stale and owner in self._shard_conns:
                continue
            if current is not None:  # it was live elsewhere: fill its gap afterwards
                moved.append(name)
                ch.filling = True
                self._unready(ch)
            by_owner.setdefault(owner, []).append(name)
        for owner, names in by_owner.items():
            conn = await self._conn_to(owner)
            for name in names:
                self._shard_of[name] = owner
                self._stale.discard(name)
                self._channels[name].pending_subs += 1
            conn.write(self._by_slot("SSUBSCRIBE", names))
        if moved:
            self.stats.reconnects += 1
            log.info("resubscribed %d channels on the cluster; filling gaps", len(moved))
            self._background(self._refill(moved))
            if self.presence is not None:  # changes published meanwhile may be lost
                self.presence.on_reconnect()
        self._close_unused()

    def _unready(self, ch: _Channel) -> None:
        if ch.ready.done():
            ch.ready = asyncio.get_running_loop().create_future()
        ch.pending_subs = 0

    async def _conn_to(self, addr: str) -> SubscriberProtocol:
        conn = self._shard_conns.get(addr)
        if conn is not None and not conn.lost.done():
            return conn
        host, port = addr.rsplit(":", 1)
        _, user, password = cluster_seeds(self.redis_url)
        auth = f"{user or ''}:{password}@" if password else ""
        conn = await open_subscriber(
            f"redis://{auth}{host}:{port}",
            self._on_message,
            lambda kind, name: self._on_shard_confirm(addr, kind, name),
            self._on_batch_end,
            client_name="finrt-hub",
            health_seconds=self.redis_health_seconds,
        )
        conn.on_error = self._on_shard_error
        self._shard_conns[addr] = conn
        self._background(self._watch(addr, conn))
        return conn

    async def _watch(self, addr: str, conn: SubscriberProtocol) -> None:
        await conn.lost
        if self._shard_conns.get(addr) is conn:
            del self._shard_conns[addr]
        if conn.unresponsive:
            self.stats.unresponsive += 1
        if self._stopping:
            return
        if conn.refused is not None:
            # The node answers but refuses our command (an ACL without the channels):
            # resubscribing at once would only be refused again, in a tight loop.
            delay = self._refused.next()
            log.error(
                "Redis Cluster node %s refused the pub/sub link's command (%s); retrying in %.2fs",
                addr,
                conn.refused,
                delay,
            )
            await asyncio.sleep(delay)
            if self._stopping:
                return
        else:
            self._refused.reset()
        lost = [n for n, a in self._shard_of.items() if a == addr]
        if lost:
            log.warning("Redis Cluster node %s lost; resubscribing %d channels", addr, len(lost))
            self._connected.clear()
            for name in lost:
                ch = self._channels.get(name)
                if ch is not None:
                    self._unready(ch)
                    ch.filling = True
                    ch.head = None  # the promoted replica may lack the newest entries
        self._resync.set()

    def _on_shard_confirm(self, addr: str, kind: bytes, name: bytes) -> None:
        if kind != b"sunsubscribe":
            self._on_confirm(kind, name)
            return
        channel = channel_from_pubsub(self.prefix, name.decode())
        ch = self._channels.get(channel)
        if ch is None or self._shard_of.get(channel) != addr:
            return  # our own unsubscribe of an idle channel
        # Redis ended it: the slot moved to another primary.
        self._stale.add(channel)
        ch.filling = True
        self._unready(ch)
        self._resync.set()

    def _on_shard_error(self, text: str) -> bool:
        if text.startswith(("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")):
            slot = int(text.split()[1]) if text.startswith(("MOVED", "ASK")) else None
            for name in self._channels:
                if slot is None or key_slot(pubsub_channel(self.prefix, name).encode()) == slot:
                    self._stale.add(name)
            self._resync.set()
            return True
        return False

    # -- the hub's calls ------------------------------------------------------------------------

    def _shard_subscribe(self, name: str) -> None:
        owner = self._owner(name)
        conn = self._shard_conns.get(owner) if owner else None
        if owner is None or conn is None or conn.lost.done():
            self._resync.set()  # the loop opens the connection and subscribes
            return
        self._shard_of[name] = owner
        self._channels[name].pending_subs += 1
        conn.write(encode_command("SSUBSCRIBE", pubsub_channel(self.prefix, name)))

    def _shard_unsubscribe(self, names: list[str]) -> None:
        by_addr: dict[str, list[str]] = {}
        for name in names:
            addr = self._shard_of.pop(name, None)
            self._stale.discard(name)
            if addr is not None:
                by_addr.setdefault(addr, []).append(name)
        for addr, group in by_addr.items():
            conn = self._shard_conns.get(addr)
            if conn is not None:
                conn.write(self._by_slot("SUNSUBSCRIBE", group))
        self._close_unused()

    def _by_slot(self, command: str, names: list[str]) -> bytes:
        """``command`` for ``names``, one per slot: Redis refuses (CROSSSLOT) an SSUBSCRIBE or
        SUNSUBSCRIBE whose channels lie in different slots, even on the primary owning both."""
        groups: dict[int, list[str]] = {}
        for name in names:
            shard_channel = pubsub_channel(self.prefix, name)
            groups.setdefault(key_slot(shard_channel.encode()), []).append(shard_channel)
        return b"".join(encode_command(command, *group) for group in groups.values())

    def _close_unused(self) -> None:
        used = set(self._shard_of.values())
        for addr in [a for a in self._shard_conns if a not in used]:
            self._shard_conns.pop(addr).close()

    def _shards_close(self) -> None:
        for conn in self._shard_conns.values():
            conn.close()
        self._shard_conns.clear()
