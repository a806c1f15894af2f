"""Publishing: one atomic round trip appends an event to its channel's capped history and wakes
every live subscriber.

The Lua script runs ``XADD`` (the stream id becomes the event id), builds the envelope around
that id and ``PUBLISH``es it, so history and live delivery can never disagree. On a Redis
Cluster it ``SPUBLISH``es instead: the shard channel shares the history key's hash tag, so the
whole call runs on the shard that owns the channel's slot.

With ``min_replicas_ack`` (FINRT_REDIS_MIN_REPLICAS_ACK), the script and a ``WAIT`` go out in one
pipeline on one connection (WAIT counts the writes of its own connection), and the publish
fails unless that many replicas hold the event in time: the outbox then retries, and the
dedupe token makes the retry return the first id. A dedupe hit still writes (it renews the
token's expiry) so that the retry's WAIT covers the first attempt's writes too.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from typing import Any

import redis
import redis.asyncio as aioredis

from core.settings import get_settings
from streams.channels import check_channel
from streams.connect import async_client, is_cluster_client, sync_client
from streams.envelope import (
    KEY_RE,
    InvalidEvent,
    check_type,
    envelope_tail,
    utc_now_iso,
)
from streams.keys import dedupe_key, history_key, pubsub_channel

# KEYS[1]: history stream; KEYS[2] (optional): dedupe key. ARGV: pub/sub channel, MAXLEN,
# envelope tail, TTL seconds (0: none), dedupe TTL seconds. With a dedupe key, publishing the
# same event twice (an outbox row retried after a crash) returns the first id and does nothing.
# The event that creates the stream carries "g" (its beginning: streams/history.py tells a
# position lost with an earlier stream from one trimmed away by it).
PUBLISH_LUA = """
if KEYS[2] then
  local prev = redis.call('GET', KEYS[2])
  if prev then
    redis.call('EXPIRE', KEYS[2], ARGV[5])
    return prev
  end
end
local id
if redis.call('EXISTS', KEYS[1]) == 1 then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[3])
else
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[3], 'g', '1')
end
redis.call('PUBLISH', ARGV[1], '{"id":"' .. id .. '"' .. ARGV[3])
local ttl = tonumber(ARGV[4])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
if KEYS[2] then redis.call('SET', KEYS[2], id, 'EX', ARGV[5]) end
return id
"""
SHARDED_PUBLISH_LUA = PUBLISH_LUA.replace("'PUBLISH'", "'SPUBLISH'")
DEDUPE_TTL_SECONDS = 7 * 24 * 3600


class PublishCount:
    """Events this process published (each successful publish, a deduplicated repeat
    included): the API's ``/metrics`` reads it, and workers add it to a fleet-wide total."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.value += 1


PUBLISHED = PublishCount()


class ReplicaAckMissing(redis.RedisError):
    """Fewer replicas than FINRT_REDIS_MIN_REPLICAS_ACK confirmed the event in time."""


def _prepare(
    prefix: str,
    channel: str,
    event_type: str,
    data: Any,
    key: str | None,
    maxlen: int,
    ttl: int,
    max_bytes: int,
    dedupe: str | None = None,
) -> tuple[list[str], list[Any]]:
    check_channel(channel)
    check_type(event_type)
    if key is not None and not KEY_RE.match(key):
        raise InvalidEvent("key must be 1-128 of letters, digits and _.:@/-")
    tail = envelope_tail(channel, event_type, data, key, utc_now_iso(), max_bytes)
    keys = [history_key(prefix, channel)]
    if dedupe is not None:
        keys.append(dedupe_key(prefix, channel, dedupe))
    return keys, [pubsub_channel(prefix, channel), maxlen, tail, ttl, DEDUPE_TTL_SECONDS]


class _Base:
    def __init__(
        self,
        client: redis.Redis | aioredis.Redis,
        prefix: str,
        *,
        maxlen: int = 1000,
        ttl_seconds: int = 0,
        max_bytes: int = 64 * 1024,
        min_replicas_ack: int = 0,
        replicas_ack_ms: int = 1000,
    ) -> None:
        self.client = client
        self.sharded = is_cluster_client(client)
        self.lua = SHARDED_PUBLISH_LUA if self.sharded else PUBLISH_LUA
        self._script = client.register_script(self.lua)
        self.prefix, self.maxlen, self.ttl, self.max_bytes = prefix, maxlen, ttl_seconds, max_bytes
        self.min_replicas_ack, self.replicas_ack_ms = min_replicas_ack, replicas_ack_ms

    @classmethod
    def from_settings(cls, client: Any, settings: Any) -> Any:
        """A publisher configured by ``core.settings.Settings``."""
        return cls(
            client,
            settings.redis_prefix,
            maxlen=settings.history_maxlen,
            ttl_seconds=settings.history_ttl_seconds,
            max_bytes=settings.max_event_bytes,
            min_replicas_ack=settings.redis_min_replicas_ack,
            replicas_ack_ms=settings.redis_replicas_ack_ms,
        )

    def _args(
        self, channel: str, event_type: str, data: Any, key: str | None, dedupe: str | None
    ) -> tuple[list[str], list[Any]]:
        return _prepare(
            self.prefix,
            channel,
            event_type,
            data,
            key,
            self.maxlen,
            self.ttl,
            self.max_bytes,
            dedupe,
        )

    def _acked(self, replies: list[Any]) -> Any:
        event_id, replicas = replies
        if isinstance(event_id, Exception):
            raise event_id
        if isinstance(replicas, Exception) or int(replicas) < self.min_replicas_ack:
            raise ReplicaAckMissing(
                f"{replicas} of {self.min_replicas_ack} replicas confirmed the event "
                f"within {self.replicas_ack_ms} ms"
            )
        return event_id


def _redirected(reply: Any) -> bool:
    """A MOVED or ASK reply: redis-py parses them into AskError/MovedError, whose text no
    longer starts with the word (it is only "slot host:port")."""
    if isinstance(reply, redis.exceptions.AskError):  # MovedError too
        return True
    return isinstance(reply, redis.ResponseError) and str(reply).startswith(("MOVED", "ASK"))


def _as_str(event_id: Any) -> str:
    return event_id.decode() if isinstance(event_id, bytes) else str(event_id)


class Publisher(_Base):
    """Blocking publisher, for Celery tasks, scripts and the CLI."""

    def publish(
        self,
        channel: str,
        event_type: str,
        data: Any,
        key: str | None = None,
        *,
        dedupe: str | None = None,
    ) -> str:
        """Publish; with ``dedupe``, a second publish of the same token returns the first id."""
        event_id = self._publish(channel, event_type, data, key, dedupe)
        PUBLISHED.add()
        return event_id

    def _publish(
        self, channel: str, event_type: str, data: Any, key: str | None, dedupe: str | None
    ) -> str:
        keys, args = self._args(channel, event_type, data, key, dedupe)
        if not self.min_replicas_ack:
            return _as_str(self._script(keys=keys, args=args))
        node = self._node_client(keys[0])
        pipe = node.pipeline(transaction=False)
        pipe.eval(self.lua, len(keys), *keys, *args)
        pipe.execute_command("WAIT", self.min_replicas_ack, self.replicas_ack_ms)  # type: ignore[no-untyped-call]
        try:
            replies = pipe.execute(raise_on_error=False)
            if _redirected(replies[0]):
                raise replies[0]
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            if self.sharded:  # the slot moved or its primary failed: read the map again
                with contextlib.suppress(Exception):
                    self.client.nodes_manager.initialize()  # type: ignore[union-attr]
            raise
        return _as_str(self._acked(replies))

    def _node_client(self, key: str) -> redis.Redis:
        """The plain client of the node that owns ``key`` (itself on a single Redis)."""
        if not self.sharded:
            return self.client  # type: ignore[return-value]
        cluster: Any = self.client
        node = cluster.get_node_from_key(key)
        conn: redis.Redis = node.redis_connection or cluster.get_redis_connection(node)
        return conn


class AsyncPublisher(_Base):
    """The async twin of :class:`Publisher`, for the API process."""

    async def publish(
        self,
        channel: str,
        event_type: str,
        data: Any,
        key: str | None = None,
        *,
        dedupe: str | None = None,
    ) -> str:
        event_id = await self._publish(channel, event_type, data, key, dedupe)
        PUBLISHED.add()
        return event_id

    async def _publish(
        self, channel: str, event_type: str, data: Any, key: str | None, dedupe: str | None
    ) -> str:
        keys, args = self._args(channel, event_type, data, key, dedupe)
        if not self.min_replicas_ack:
            return _as_str(await self._script(keys=keys, args=args))
        client = await self._node_client(keys[0])
        try:
            async with client.pipeline(transaction=False) as pipe:
                pipe.eval(self.lua, len(keys), *keys, *args)
                pipe.execute_command("WAIT", self.min_replicas_ack, self.replicas_ack_ms)
                replies = await pipe.execute(raise_on_error=False)
            if _redirected(replies[0]):
                raise replies[0]
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            if self.sharded:  # the slot moved or its primary failed: read the map again
                with contextlib.suppress(Exception):
                    await self.client.nodes_manager.initialize()  # type: ignore[union-attr]
            raise
        return _as_str(self._acked(replies))

    async def _node_client(self, key: str) -> aioredis.Redis:
        """A plain client of the node that owns ``key`` (the client itself on a single
        Redis): one per node, kept, so that WAIT runs on the connection of the write."""
        if not self.sharded:
            return self.client  # type: ignore[return-value]
        cluster: Any = self.client
        await cluster.initialize()  # the slot map (a no-op once read)
        node = cluster.get_node_from_key(key)
        clients: dict[str, aioredis.Redis] = self.__dict__.setdefault("_nodes", {})
        found = clients.get(node.name)
        if found is None:
            found = clients[node.name] = aioredis.Redis(
                host=node.host,
                port=node.port,
                username=cluster.connection_kwargs.get("username"),
                password=cluster.connection_kwargs.get("password"),
                socket_connect_timeout=5,
            )
        return found


_sync_lock = threading.Lock()
_sync_default: Publisher | None = None
_async_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncPublisher] = (
    weakref.WeakKeyDictionary()
)


def default_publisher() -> Publisher:
    """The process's blocking publisher, built from settings on first use."""
    global _sync_default
    with _sync_lock:
        if _sync_default is None:
            s = get_settings()
            client = sync_client(
                s.redis_url, socket_timeout=5, socket_connect_timeout=5, retry_on_timeout=True
            )
            _sync_default = Publisher.from_settings(client, s)
        return _sync_default


def default_async_publisher() -> AsyncPublisher:
    """The running event loop's async publisher (redis.asyncio clients belong to one loop)."""
    loop = asyncio.get_running_loop()
    pub = _async_defaults.get(loop)
    if pub is None:
        s = get_settings()
        client = async_client(s.redis_url, socket_connect_timeout=5)
        pub = AsyncPublisher.from_settings(client, s)
        _async_defaults[loop] = pub
    return pub


def publish(channel: str, type: str, data: Any, key: str | None = None) -> str:
    """Publish one event and return its id (blocking)."""
    return default_publisher().publish(channel, type, data, key)


async def apublish(channel: str, type: str, data: Any, key: str | None = None) -> str:
    """Publish one event and return its id."""
    return await default_async_publisher().publish(channel, type, data, key)
