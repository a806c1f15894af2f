"""Presence on file channels: who has a stream open on a file, the same on every API process.

Each process counts its own connections per (channel, user) in memory and writes the changes
to Redis in batches (one pipeline per flush, one script call per channel), never one call per
connection per interval. Redis holds, per channel, which processes hold which users (see
``_presence_lua``); each process renews one lease for all of its connections, in one call per
renewal interval. A process whose lease runs out (SIGKILL, a frozen host) is cleaned up by
whichever process notices first: one script per channel removes its users and announces each
user that nobody else holds as left, exactly once (the script is atomic and idempotent).

A user's last connection on a process leaves a grace period before it is written: a reload or a
reconnect to another process within it announces nothing. Live changes travel on the channel's
own pub/sub channel (no ``XADD``: they are never stored in history and never push events out of
it) and reach streams as frames without an SSE ``id:`` line, so they do not move a client's
position. Above ``room_limit`` users, joins and leaves fold into one ``presence_count`` per
second per channel, and snapshots list the first ``room_limit`` arrivals plus the count.

Transport-agnostic: the hub hands it (channel, user) pairs and takes ready frames back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.aio import stop_task, timed
from streams import _presence_lua as lua
from streams.connect import is_cluster_client
from streams.envelope import Event
from streams.keys import presence_files_key, presence_key, presence_procs_key, pubsub_channel
from streams.presence_cluster import Call, ClusterBatches
from streams.presence_live import Deliver, LiveFanout, carries_presence, file_id, frames
from streams.subscriber import Subscriber

log = logging.getLogger("finrt.presence")

FLUSH_DELAY = 0.02  # changes within this window go to Redis in one pipeline
RETRY_SECONDS = 1.0
TIMEOUT = 5.0

Errors = (RedisError, OSError, TimeoutError)


def _iso(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Presence:
    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        *,
        grace_seconds: float = 5.0,
        lease_seconds: float = 30.0,
        room_limit: int = 100,
        deliver: Deliver | None = None,
    ) -> None:
        self.client, self.prefix = client, prefix
        self.grace, self.room_limit = grace_seconds, room_limit
        self.live = LiveFanout(deliver, room_limit, self.snapshot)
        # Renewed every quarter lease, valid for half of it: a dead process is noticed at
        # most a quarter later by some process's renewal, so within the lease in all.
        self.interval = lease_seconds / 4
        self.lease_ms = int(lease_seconds * 500)
        self.process = uuid.uuid4().hex[:16]
        # On a cluster, changes go out on the file's shard channel (as events do, see
        # streams/publish.py) and script calls are batched per primary.
        sharded = is_cluster_client(client)
        self._sync = client.register_script(lua.SHARDED_SYNC if sharded else lua.SYNC)
        self._batches = ClusterBatches(client) if sharded else None
        self._snap = client.register_script(lua.SNAPSHOT)
        self._renew_script = client.register_script(lua.RENEW)
        self._forget = client.register_script(lua.FORGET)
        self._local: dict[str, dict[str, int]] = {}  # channel -> user -> connections here
        self._grace: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._dirty: dict[str, set[str]] = {}
        self._full: set[str] = set()  # channels to write whole (after a Redis failure)
        self._files: set[str] = set()  # channels named in this process's files set
        self._written = 0  # flushes done: a snapshot read begun after one includes its changes
        self._reading: dict[str, tuple[int, asyncio.Future[dict[str, Any]]]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._orphans: list[str] = []  # this process's former names, to clean up
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._renew_lock = asyncio.Lock()
        self._registered = False
        self._renewed_at = float("-inf")
        self._stopping = False
        self.stats = {"renewals": 0, "flushes": 0, "reaped": 0}

    @classmethod
    def from_settings(cls, client: aioredis.Redis, settings: Any, **overrides: Any) -> Presence:
        options: dict[str, Any] = {
            "grace_seconds": settings.presence_grace_seconds,
            "lease_seconds": settings.presence_lease_seconds,
            "room_limit": settings.presence_room_limit,
        }
        options.update(overrides)
        return cls(client, settings.redis_prefix, **options)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="presence")

    async def stop(self) -> None:
        """Stop renewing, and let the lease end a grace period from now: clients of this
        process that reconnect elsewhere meanwhile are never announced as gone."""
        self._stopping = True
        for handle in [self._task, self._flushing]:
            await stop_task(handle)
        for timer in self._grace.values():
            timer.cancel()
        self.live.stop()
        if self._registered:
            with contextlib.suppress(*Errors):
                await timed(
                    self._renew_script(
                        keys=[presence_procs_key(self.prefix)],
                        args=[self.process, max(1, int(self.grace * 1000)), "0"],
                    ),
                    2.0,
                )
        if self._batches is not None:
            await self._batches.close()

    def held(self) -> tuple[int, int]:
        """Files with users here, and (file, user) pairs: for the metrics."""
        return len(self._local), sum(len(users) for users in self._local.values())

    # -- the hub's calls (synchronous, cheap) --------------------------------------------------

    def track(self, user_id: str, channel: str) -> None:
        """A stream of ``user_id`` that carries ``channel`` opened on this process."""
        if not carries_presence(channel):
            return
        users = self._local.setdefault(channel, {})
        users[user_id] = users.get(user_id, 0) + 1
        timer = self._grace.pop((channel, user_id), None)
        if timer is not None:
            timer.cancel()
        self._mark(channel, user_id)

    def untrack(self, user_id: str, channel: str) -> None:
        """That stream closed (or left the channel)."""
        users = self._local.get(channel)
        if users is None or not users.get(user_id):
            return
        users[user_id] -= 1
        if users[user_id] > 0:
            self._mark(channel, user_id)
        elif not self._stopping:
            loop = asyncio.get_running_loop()
            self._grace[(channel, user_id)] = loop.call_later(
                self.grace, self._grace_over, channel, user_id
            )

    def _grace_over(self, channel: str, user_id: str) -> None:
        self._grace.pop((channel, user_id), None)
        users = self._local.get(channel)
        if users is not None and users.get(user_id) == 0:
            del users[user_id]
            self._mark(channel, user_id)

    def on_message(self, channel: str, payload: bytes) -> None:
        """A presence change from Redis (the hub's pub/sub link), for the local streams."""
        self.live.on_message(channel, payload)

    def on_reconnect(self) -> None:
        """The hub's pub/sub link came back: changes may have been missed. Write everything
        again, then give every local stream of a file a fresh snapshot."""
        self._full.update(self._local)
        self._schedule()
        self.live.refresh(list(self._local))

    # -- reading -------------------------------------------------------------------------------

    async def settled(self) -> None:
        """Wait until every change made so far is written (or its write failed)."""
        if not self._dirty and not self._full and self._flushing is None:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._schedule()
        with contextlib.suppress(TimeoutError):
            await timed(asyncio.shield(waiter), TIMEOUT)

    async def snapshot(self, channel: str) -> dict[str, Any]:
        """``{file_id, count, users: [{user_id, connections, since}]}``, earliest first.

        Streams opening together on one file share one read (a join storm costs one Redis
        call per flush, not one per viewer), as long as it began after their own arrival was
        written."""
        await self.settled()
        need = self._written
        shared = self._reading.get(channel)
        if shared is not None and shared[0] >= need:
            return await asyncio.shield(shared[1])
        read = asyncio.ensure_future(self._read(channel))
        self._reading[channel] = (need, read)

        def forget(done: asyncio.Future[dict[str, Any]]) -> None:
            if self._reading.get(channel, (0, None))[1] is done:
                del self._reading[channel]
            if not done.cancelled():
                done.exception()  # retrieved: a failure is the callers' to report

        read.add_done_callback(forget)
        return await asyncio.shield(read)

    async def _read(self, channel: str) -> dict[str, Any]:
        keys = [presence_key(self.prefix, channel, "c"), presence_key(self.prefix, channel, "z")]
        raw = await timed(self._snap(keys=keys, args=[self.room_limit]), TIMEOUT)
        users = [
            {
                "user_id": _text(raw[i]),
                "connections": max(0, int(raw[i + 2])),
                "since": _iso(float(raw[i + 1])),
            }
            for i in range(1, len(raw), 3)
        ]
        return {"file_id": file_id(channel), "count": int(raw[0]), "users": users}

    async def greeting(self, sub: Subscriber) -> list[Event | bytes]:
        """The snapshot frames a new stream gets first, one per file it carries."""
        out: list[Event | bytes] = []
        for channel in sub.positions:
            if not carries_presence(channel):
                continue
            try:
                snap = await self.snapshot(channel)
            except Errors as exc:
                log.warning("presence snapshot of %s failed: %s", channel, exc)
                continue
            event_type, envelope = frames(channel, "presence", snap)
            out.append(sub.transport.control(event_type, envelope, None))
        return out

    # -- writing to Redis ----------------------------------------------------------------------

    def _mark(self, channel: str, user_id: str) -> None:
        self._dirty.setdefault(channel, set()).add(user_id)
        self._schedule()

    def _schedule(self) -> None:
        if self._flush_handle is not None or self._flushing is not None or self._stopping:
            return
        loop = asyncio.get_running_loop()
        self._flush_handle = loop.call_later(FLUSH_DELAY, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_handle = None
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        try:
            while self._dirty or self._full or self._waiters:
                ok = await self._flush_once()
                if not ok:
                    await asyncio.sleep(RETRY_SECONDS)
        finally:
            self._flushing = None
            if self._dirty or self._full:
                self._schedule()

    async def _flush_once(self) -> bool:
        dirty, self._dirty = self._dirty, {}
        full, self._full = self._full, set()
        waiters, self._waiters = self._waiters, []
        try:
            if not self._registered or time.monotonic() - self._renewed_at > self.interval:
                await self._renew()
                full |= self._full  # a lost lease asks for everything again
                self._full = set()
            await timed(self._write(dirty, full), TIMEOUT)
            self._written += 1
            self.stats["flushes"] += 1
            return True
        except Errors as exc:
            log.warning("presence write failed (%s); retrying", exc)
            for channel, users in dirty.items():
                self._dirty.setdefault(channel, set()).update(users)
            self._full |= full | set(self._local)  # Redis may have lost anything meanwhile
            return False
        finally:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _write(self, dirty: dict[str, set[str]], full: set[str]) -> None:
        calls, added, emptied = [], [], []
        for channel in set(dirty) | full:
            users = self._local.get(channel, {})
            if channel in full:
                pairs = [(u, n) for u, n in users.items()]
            else:
                pairs = [(u, users.get(u, -1)) for u in dirty[channel]]
            if users and channel not in self._files:
                added.append(channel)  # written first: a crash after it leaves nothing unknown
                self._files.add(channel)
            calls.append(self._sync_call(self.process, channel, pairs, channel in full))
            if not users:
                self._local.pop(channel, None)
                if channel in self._files:
                    emptied.append(channel)
        self._files.difference_update(emptied)
        await self._run_sync(presence_files_key(self.prefix, self.process), calls, added, emptied)

    async def _run_sync(
        self, files: str, calls: list[Call], added: list[str], emptied: list[str]
    ) -> None:
        """The script calls, with this process's files set updated before and after them: one
        pipeline on one Redis; on a cluster, where the set has a slot of its own, separate
        calls around one pipeline per primary (streams/presence_cluster.py)."""
        if self._batches is None:
            pipe = self.client.pipeline(transaction=False)
            if added:
                pipe.sadd(files, *added)
            for keys, args in calls:
                await self._sync(keys=keys, args=args, client=pipe)
            if emptied:
                pipe.srem(files, *emptied)
            results = await pipe.execute(raise_on_error=False)
        else:
            if added:
                await self.client.sadd(files, *added)  # type: ignore[misc]
            results = await self._batches.run(self._sync, calls)
            if emptied:
                await self.client.srem(files, *emptied)  # type: ignore[misc]
        # A refused command (a script error) is logged, not retried: retrying cannot help,
        # and it must not hold back the other files' changes. A lost link raises: retried.
        for result in results:
            if isinstance(result, RedisError):
                log.error("presence script refused: %s", result)

    def _sync_call(
        self, process: str, channel: str, pairs: list[tuple[str, int]], full: bool
    ) -> Call:
        keys = [presence_key(self.prefix, channel, part) for part in ("u", "c", "z")]
        keys.append(presence_key(self.prefix, channel, f"p:{process}"))
        args: list[Any] = [pubsub_channel(self.prefix, channel), "1" if full else "0"]
        for user, n in pairs:
            args += [user, n]
        return keys, args

    # -- the lease and the reaper ----------------------------------------------------------------

    async def _renew(self) -> list[str]:
        """Renew this process's lease (one call for all its connections); returns the
        processes whose lease has run out."""
        async with self._renew_lock:
            procs = presence_procs_key(self.prefix)
            raw = await timed(
                self._renew_script(
                    keys=[procs], args=[self.process, self.lease_ms, int(self._registered)]
                ),
                TIMEOUT,
            )
            if int(raw[0]) == 1:
                # The lease ran out (Redis unreachable, the process frozen): someone may be
                # removing this name's users. Carry on under a new name, write everything.
                log.warning("presence lease of %s ran out; re-registering", self.process)
                self._orphans.append(self.process)
                self.process = uuid.uuid4().hex[:16]
                self._files.clear()
                self._full.update(self._local)
                raw = await timed(
                    self._renew_script(keys=[procs], args=[self.process, self.lease_ms, 0]),
                    TIMEOUT,
                )
            self._registered = True
            self._renewed_at = time.monotonic()
            self.stats["renewals"] += 1
            return [_text(name) for name in raw[1:]]

    async def _run(self) -> None:
        while True:
            try:
                dead = await self._renew()
                if self._full:
                    self._schedule()
                orphans, self._orphans = self._orphans, []
                if orphans:  # write everything under the new name before the old one goes
                    await self.settled()
                for name in orphans + [d for d in dead if d not in orphans]:
                    await self.reap(name)
            except Errors as exc:
                log.warning("presence renewal failed (%s); retrying", exc)
            await asyncio.sleep(self.interval)

    async def reap(self, process: str) -> None:
        """Remove every user of a process whose lease ran out; each user nobody else holds is
        announced as left, once, whichever process gets here first."""
        files = presence_files_key(self.prefix, process)
        channels = [_text(c) for c in await self.client.smembers(files)]  # type: ignore[misc]
        calls = [self._sync_call(process, channel, [], True) for channel in channels]
        await timed(self._run_sync(files, calls, [], []), TIMEOUT)
        await self._forget(keys=[presence_procs_key(self.prefix)], args=[process])
        await self.client.delete(files)
        self.stats["reaped"] += 1
        log.info("presence of stopped process %s removed from %d files", process, len(channels))


__all__ = ["Presence", "carries_presence", "frames"]
