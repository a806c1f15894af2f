"""Presence script calls on a Redis Cluster: batched per primary, each call on one slot.

A presence write touches many files at once (a flush, a full rewrite, a reaped process), and
each file's keys live in that file's hash tag, so on one slot. The cluster client refuses
``EVALSHA`` in its pipelines, so the calls are grouped here by the primary that owns each
file's slot and sent as one plain pipeline per primary, all primaries at once. Such a pipeline
loads the script on its node when the node lacks it (a promoted replica does). A reply that
says the slot is elsewhere (``MOVED``, ``ASK``, a cluster that is down) or a lost node makes the
batch fail after the slot map is read again: the caller retries the whole write, which is
harmless since every call sets absolute values.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

Call = tuple[list[str], list[Any]]  # keys (all in one hash tag), args

_ELSEWHERE = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")


class SlotMoved(RedisError):
    """A presence call reached a node that no longer owns its slot; retried after a resync."""


class ClusterBatches:
    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster  # a redis.asyncio.RedisCluster
        self._nodes: dict[str, aioredis.Redis] = {}

    def _node_client(self, node: Any) -> aioredis.Redis:
        client = self._nodes.get(node.name)
        if client is None:
            kwargs = self.cluster.connection_kwargs
            client = self._nodes[node.name] = aioredis.Redis(
                host=node.host,
                port=node.port,
                username=kwargs.get("username"),
                password=kwargs.get("password"),
                socket_connect_timeout=3,
                socket_timeout=10,
            )
        return client

    async def run(self, script: AsyncScript, calls: list[Call]) -> list[Any]:
        """Every call's reply, in order (a refused call's reply is its error)."""
        if not calls:
            return []
        await self.cluster.initialize()  # the slot map (a no-op once read)
        groups: dict[str, tuple[Any, list[int]]] = {}
        for i, (keys, _) in enumerate(calls):
            node = self.cluster.get_node_from_key(keys[0])
            groups.setdefault(node.name, (node, []))[1].append(i)
        replies: list[Any] = [None] * len(calls)

        async def one(node: Any, indexes: list[int]) -> None:
            client = self._node_client(node)
            pipe = client.pipeline(transaction=False)
            for i in indexes:
                keys, args = calls[i]
                await script(keys=keys, args=args, client=pipe)
            try:
                results = await pipe.execute(raise_on_error=False)
            except (RedisError, OSError):
                await self._forget(node.name)
                raise
            for i, result in zip(indexes, results, strict=True):
                replies[i] = result

        try:
            await asyncio.gather(*(one(node, idx) for node, idx in groups.values()))
        except (RedisError, OSError):
            await self._resync()
            raise
        if any(isinstance(r, ResponseError) and str(r).startswith(_ELSEWHERE) for r in replies):
            await self._resync()
            raise SlotMoved("a presence slot moved; the slot map was read again")
        return replies

    async def _resync(self) -> None:
        with contextlib.suppress(Exception):
            await self.cluster.nodes_manager.initialize()

    async def _forget(self, name: str) -> None:
        client = self._nodes.pop(name, None)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def close(self) -> None:
        for name in list(self._nodes):
            await self._forget(name)
