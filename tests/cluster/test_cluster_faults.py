"""The cluster changing under live streams: a slot migrated while publishing, a primary killed.

Publishing goes on at about 100 events/s throughout; a publish that fails (the primary is gone,
the cluster is electing) is retried with its dedupe token, as the outbox does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import redis

from core.settings import get_settings
from streams.keys import pubsub_channel
from streams.publish import Publisher
from tests.cluster.cluster_redis import TestCluster
from tests.cluster.test_cluster_streams import (
    cluster_publisher,
    files_on_every_shard,
    start_cluster_api,
)
from tests.support import ApiServer, Received, sse


class Producer:
    """Publishes ``count`` events per channel, round robin, about ``rate`` per second, in a
    thread; ``returned[channel]`` keeps the ids of the publishes that returned."""

    def __init__(self, pub: Publisher, channels: list[str], count: int, rate: float = 100.0):
        self.pub, self.channels, self.count, self.rate = pub, channels, count, rate
        self.returned: dict[str, list[str]] = {c: [] for c in channels}
        self.retries = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self._publish_all()
        except BaseException as exc:
            self.error = exc

    def _publish_all(self) -> None:
        step = 1 / self.rate
        for i in range(self.count):
            for channel in self.channels:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        event_id = self.pub.publish(
                            channel, "metric_update", {"n": i}, dedupe=f"{channel}-{i}"
                        )
                        break
                    except (redis.RedisError, OSError):
                        self.retries += 1
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
                self.returned[channel].append(event_id)
                time.sleep(step)

    def start(self) -> Producer:
        self.thread.start()
        return self

    async def join(self) -> None:
        await asyncio.to_thread(self.thread.join, 120)
        assert not self.thread.is_alive()
        assert self.error is None, repr(self.error)


def node_id(client: redis.Redis) -> str:
    return str(client.execute_command("CLUSTER", "MYID").decode())  # type: ignore[no-untyped-call]


def migrate_slot(cluster: TestCluster, slot: int, source: int, target: int) -> None:
    """Move ``slot`` with its keys from the primary at ``source`` to the one at ``target``,
    the way ``redis-cli --cluster reshard`` does."""
    src, dst = cluster.node(source).client(), cluster.node(target).client()
    src_id, dst_id = node_id(src), node_id(dst)
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)  # type: ignore[no-untyped-call]
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)  # type: ignore[no-untyped-call]
    while True:
        keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)  # type: ignore[no-untyped-call]
        if not keys:
            break
        src.execute_command(  # type: ignore[no-untyped-call]
            "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys
        )
    others = [cluster.node(p).client() for p in cluster.primaries() if p not in (source, target)]
    for node in (dst, src, *others):
        node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)  # type: ignore[no-untyped-call]


async def collect(stream, want: list[str], timeout: float = 60) -> list[Received]:
    """Events until the last wanted id (or a reset) arrives."""
    got: list[Received] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = await stream.next_event(timeout=max(deadline - time.monotonic(), 0.1))
        got.append(event)
        if event.event == "reset" or (want and event.id == want[-1]):
            break
    return got


async def test_slot_migrated_while_publishing_loses_nothing(
    cluster: TestCluster, start_api: Callable[..., ApiServer], token, user, make_file
):
    files = files_on_every_shard(cluster, make_file, user)
    file_id, source = next(iter(files.items()))
    target = next(p for p in cluster.primaries() if p != source)
    prefix = get_settings().redis_prefix
    shard_channel = pubsub_channel(prefix, f"file:{file_id}")
    slot = int(cluster.node(source).client().cluster("keyslot", shard_channel))
    apis = [start_cluster_api(start_api, cluster) for _ in range(2)]
    channel = f"file:{file_id}"
    async with (
        sse(f"{apis[0].url}/api/v1/stream/files/{file_id}", token(user)) as one,
        sse(f"{apis[1].url}/api/v1/stream/files/{file_id}", token(user)) as two,
    ):
        producer = Producer(cluster_publisher(cluster), [channel], count=300).start()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(migrate_slot, cluster, slot, source, target)
        await producer.join()
        want = producer.returned[channel]
        for stream in (one, two):
            got = await collect(stream, want)
            assert [e.id for e in got] == want
            await stream.no_event(0.5)
        assert cluster.owner(shard_channel) == target
        # The subscriptions followed the slot: both processes' are on the new owner now.
        for port, held in ((target, 2), (source, 0)):
            node = cluster.node(port).client()
            numsub = node.execute_command("PUBSUB", "SHARDNUMSUB", shard_channel)  # type: ignore[no-untyped-call]
            assert numsub[1] == held
    assert all("resubscribed 1 channels" in api.log() for api in apis)
