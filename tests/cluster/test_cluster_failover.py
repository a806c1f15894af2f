"""``kill -9`` of a primary while publishing: the hub resubscribes on the promoted replica and
fills the gap. With FINRT_REDIS_MIN_REPLICAS_ACK every event whose publish returned reaches
each client exactly once; without it, each client gets everything or a ``reset``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from core.settings import get_settings
from streams.keys import pubsub_channel
from tests.cluster.cluster_redis import TestCluster
from tests.cluster.test_cluster_faults import Producer, collect
from tests.cluster.test_cluster_streams import (
    cluster_publisher,
    files_on_every_shard,
    start_cluster_api,
)
from tests.support import ApiServer, sse


def _wait_promoted(cluster: TestCluster, key: str, dead: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if cluster.owner(key) != dead:
                return
        time.sleep(0.2)
    raise AssertionError("no replica was promoted")


async def _kill_a_primary_while_publishing(
    cluster: TestCluster,
    start_api: Callable[..., ApiServer],
    token: Callable[..., str],
    user: str,
    make_file: Callable[..., int],
    ack: int,
) -> dict[tuple[int, int], tuple[list[str], list[str]]]:
    """Per (process, file): the ids whose publish returned and the ids the stream got."""
    files = files_on_every_shard(cluster, make_file, user)
    victim_file, victim = next(iter(files.items()))
    apis = [
        start_cluster_api(start_api, cluster, redis_min_replicas_ack=str(ack)) for _ in range(2)
    ]
    channels = [f"file:{f}" for f in files]
    victim_shard = pubsub_channel(get_settings().redis_prefix, f"file:{victim_file}")
    outcome: dict[tuple[int, int], tuple[list[str], list[str]]] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            streams = {}
            for n, api in enumerate(apis):
                for file_id in files:
                    url = f"{api.url}/api/v1/stream/files/{file_id}"
                    streams[(n, file_id)] = await stack.enter_async_context(sse(url, token(user)))
            pub = cluster_publisher(cluster, min_replicas_ack=ack)
            producer = Producer(pub, channels, count=150).start()
            await asyncio.sleep(1.0)
            at_kill = sum(len(ids) for ids in producer.returned.values())
            cluster.node(victim).kill()
            await asyncio.to_thread(_wait_promoted, cluster, victim_shard, victim)
            # Back as a replica of the promoted one: until then, a publish that needs a replica
            # to confirm it cannot succeed on that shard (it fails, and is retried).
            cluster.node(victim).start()
            await producer.join()
            # The kill came while events were being published. (Whether the producer sees an
            # error depends on how fast the replica is promoted: redis-py's cluster client
            # retries a lost node itself, with backoff, before it gives up.)
            assert 0 < at_kill < producer.count * len(channels)
            for (n, file_id), stream in streams.items():
                want = producer.returned[f"file:{file_id}"]
                got = await collect(stream, want, timeout=60)
                outcome[(n, file_id)] = (
                    want,
                    [(e.id or "") if e.event != "reset" else "reset" for e in got],
                )
        assert cluster.owner(victim_shard) != victim
    finally:
        if cluster.node(victim) not in cluster.live():
            cluster.node(victim).start()
        cluster.wait_ok()
    return outcome


async def test_kill_a_primary_without_replica_ack_gives_everything_or_a_reset(
    cluster, start_api, token, user, make_file
):
    outcome = await _kill_a_primary_while_publishing(
        cluster, start_api, token, user, make_file, ack=0
    )
    for want, got in outcome.values():
        if "reset" in got:
            continue  # told: the client refetches its snapshot
        assert got == want


async def test_kill_a_primary_with_replica_ack_delivers_every_returned_event_once(
    cluster, start_api, token, user, make_file
):
    outcome = await _kill_a_primary_while_publishing(
        cluster, start_api, token, user, make_file, ack=1
    )
    for want, got in outcome.values():
        assert "reset" not in got
        # A publish whose WAIT failed may have reached clients before its retry did (under a
        # new id); every publish that returned arrives exactly once, in order.
        assert [i for i in got if i in set(want)] == want
