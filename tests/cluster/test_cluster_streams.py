"""Streams over a real Redis Cluster: channels on every shard, two API processes, resume, one
sharded subscription connection per primary per process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest
import redis
from redis.crc import key_slot

from core.settings import get_settings
from streams.connect import async_client, sync_client
from streams.keys import pubsub_channel
from streams.publish import AsyncPublisher, Publisher, ReplicaAckMissing
from tests.cluster.cluster_redis import TestCluster
from tests.conftest import REDIS_URL
from tests.support import ApiServer, sse


def cluster_publisher(cluster: TestCluster, **options: int) -> Publisher:
    client = sync_client(cluster.url, socket_timeout=5, socket_connect_timeout=5)
    return Publisher(client, get_settings().redis_prefix, **options)


def files_on_every_shard(
    cluster: TestCluster, make_file: Callable[..., int], owner: str
) -> dict[int, int]:
    """file id -> port of its channel's primary, one file per primary."""
    prefix = get_settings().redis_prefix
    found: dict[int, int] = {}
    while len(found) < 3:
        file_id = make_file(owner)
        port = cluster.owner(pubsub_channel(prefix, f"file:{file_id}"))
        if port not in found.values():
            found[file_id] = port
    return found


def start_cluster_api(
    start_api: Callable[..., ApiServer], cluster: TestCluster, **overrides: str
) -> ApiServer:
    # Celery cannot use the cluster as its broker: the suite's plain Redis is the broker.
    return start_api(redis_url=cluster.url, celery_broker_url=REDIS_URL, **overrides)


def hub_links(cluster: TestCluster, port: int) -> list[dict[str, str]]:
    """The hub connections on the node at ``port`` that hold sharded subscriptions."""
    rows = cluster.node(port).client().client_list()
    return [r for r in rows if r.get("name") == "finrt-hub" and int(r.get("ssub", 0)) > 0]


async def test_channels_on_three_shards_reach_two_processes_once_in_order(
    cluster, start_api, token, user, make_file
):
    files = files_on_every_shard(cluster, make_file, user)
    assert sorted(files.values()) == sorted(cluster.primaries())
    apis = [start_cluster_api(start_api, cluster) for _ in range(2)]
    pub = cluster_publisher(cluster)
    async with contextlib.AsyncExitStack() as stack:
        streams = {}
        for n, api in enumerate(apis):
            for file_id in files:
                url = f"{api.url}/api/v1/stream/files/{file_id}"
                streams[(n, file_id)] = await stack.enter_async_context(sse(url, token(user)))
        sent: dict[int, list[str]] = {f: [] for f in files}
        for i in range(30):
            for file_id in files:
                sent[file_id].append(pub.publish(f"file:{file_id}", "metric_update", {"n": i}))
        for (_, file_id), stream in streams.items():
            got = await stream.events(30, timeout=20)
            assert [e.id for e in got] == sent[file_id]
            assert [e.envelope["data"]["n"] for e in got] == list(range(30))
        for stream in streams.values():
            await stream.no_event(0.5)

        # One sharded subscription connection per primary per process, whatever the channels.
        prefix = get_settings().redis_prefix
        for file_id, port in files.items():
            links = hub_links(cluster, port)
            assert len(links) == 2, links
            node = cluster.node(port).client()
            shard = pubsub_channel(prefix, f"file:{file_id}")
            assert node.execute_command("PUBSUB", "SHARDNUMSUB", shard)[1] == 2
        replicas = [n.port for n in cluster.nodes if n.port not in files.values()]
        assert all(hub_links(cluster, port) == [] for port in replicas)


async def test_resume_by_last_event_id_on_the_cluster(cluster, start_api, token, user, make_file):
    files = files_on_every_shard(cluster, make_file, user)
    api = start_cluster_api(start_api, cluster)
    pub = cluster_publisher(cluster)
    for file_id in files:
        channel = f"file:{file_id}"
        url = f"{api.url}/api/v1/stream/files/{file_id}"
        async with sse(url, token(user)) as stream:
            first = [pub.publish(channel, "metric_update", {"n": i}) for i in range(3)]
            assert [e.id for e in await stream.events(3)] == first
        rest = [pub.publish(channel, "metric_update", {"n": i}) for i in range(3, 9)]
        async with sse(url, token(user), last_event_id=first[-1]) as stream:
            got = await stream.events(6, timeout=15)
            assert [e.id for e in got] == rest
            await stream.no_event(0.3)


@pytest.mark.parametrize("channel", ["file:1", "user:abc"])
def test_a_channel_and_its_history_share_a_slot(channel):
    prefix = get_settings().redis_prefix
    assert key_slot(pubsub_channel(prefix, channel).encode()) == key_slot(
        f"{prefix}:{{{channel}}}:h".encode()
    )


async def test_no_event_reaches_a_stream_of_another_file(
    cluster, start_api, token, user, make_file
):
    files = list(files_on_every_shard(cluster, make_file, user))
    api = start_cluster_api(start_api, cluster)
    pub = cluster_publisher(cluster)
    url = f"{api.url}/api/v1/stream/files/{files[0]}"
    async with sse(url, token(user)) as stream:
        for other in files[1:]:
            pub.publish(f"file:{other}", "metric_update", {"n": -1})
        mine = pub.publish(f"file:{files[0]}", "metric_update", {"n": 0})
        assert (await stream.next_event(timeout=15)).id == mine
        await asyncio.sleep(0.2)
        await stream.no_event(0.3)


def test_a_publish_needing_more_replicas_than_hold_it_fails(cluster):
    """FINRT_REDIS_MIN_REPLICAS_ACK=1 succeeds (each primary has one replica); asking for two
    fails after the wait, so the outbox retries it; the retry's dedupe token returns one id."""
    one = cluster_publisher(cluster, min_replicas_ack=1, replicas_ack_ms=200)
    event_id = one.publish("user:acked", "job_progress", {"n": 1}, dedupe="t1")
    assert one.publish("user:acked", "job_progress", {"n": 1}, dedupe="t1") == event_id
    two = cluster_publisher(cluster, min_replicas_ack=2, replicas_ack_ms=200)
    with pytest.raises(ReplicaAckMissing):
        two.publish("user:acked", "job_progress", {"n": 2}, dedupe="t2")


async def test_the_api_publisher_waits_for_replicas_too(cluster):
    prefix = get_settings().redis_prefix
    client = async_client(cluster.url)
    try:
        one = AsyncPublisher(client, prefix, min_replicas_ack=1, replicas_ack_ms=500)
        first = await one.publish("user:async-acked", "job_progress", {"n": 1}, dedupe="a1")
        again = await one.publish("user:async-acked", "job_progress", {"n": 1}, dedupe="a1")
        assert again == first
        two = AsyncPublisher(client, prefix, min_replicas_ack=2, replicas_ack_ms=200)
        with pytest.raises(ReplicaAckMissing):
            await two.publish("user:async-acked", "job_progress", {"n": 2})
    finally:
        await client.aclose()


def test_a_single_redis_without_replicas_refuses_acknowledged_publishing():
    """FINRT_REDIS_MIN_REPLICAS_ACK on a Redis that has no replica: every publish fails."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        pub = Publisher(client, get_settings().redis_prefix, min_replicas_ack=1, replicas_ack_ms=50)
        with pytest.raises(ReplicaAckMissing):
            pub.publish("user:unacked", "job_progress", {"n": 1})
    finally:
        client.close()


async def test_channels_of_many_slots_subscribed_at_once_go_live(
    cluster, start_api, token, user, make_file
):
    """Regression: the hub sent a primary's channels as one SSUBSCRIBE, which Redis refuses
    (CROSSSLOT) when they lie in different slots; the hub took the error for a lost node and
    dropped and reopened its connections in a tight loop, and the channels never went live.
    A fresh process's first stream with channels of many slots places them all at once."""
    files = [make_file(user) for _ in range(15)]
    channels = [f"user:{user}", *(f"file:{f}" for f in files)]
    prefix = get_settings().redis_prefix
    slots = {key_slot(pubsub_channel(prefix, c).encode()) for c in channels}
    owners = {cluster.owner(pubsub_channel(prefix, c)) for c in channels}
    assert len(slots) > len(owners)  # some primary holds channels of several slots
    api = start_cluster_api(start_api, cluster)
    pub = cluster_publisher(cluster)
    url = f"{api.url}/api/v1/stream"
    async with sse(url, token(user), params=[("channel", c) for c in channels]) as stream:
        await asyncio.sleep(1.0)  # the subscriptions are placed
        sent = {pub.publish(c, "metric_update", {"c": c}) for c in channels}
        got = await stream.events(len(channels), timeout=15)
        assert {e.envelope["id"] for e in got} == sent
    assert "lost; resubscribing" not in api.log()


def test_a_subscription_the_cluster_refuses_is_retried_with_backoff_and_logged(
    cluster: TestCluster, start_api: Callable[..., ApiServer], token, user
) -> None:
    """A node that refuses the hub's SSUBSCRIBE (an ACL user without channel permissions:
    NOPERM) is retried with a growing pause and its answer logged, not resubscribed at once
    in a tight loop."""
    import time

    import httpx

    name = f"nochannels{user[-6:]}"
    nodes = [node.client() for node in cluster.live()]
    try:
        for node in nodes:
            node.acl_setuser(
                name,
                enabled=True,
                passwords=["+pw"],
                keys=["*"],
                commands=["+@all"],
                reset_channels=True,
            )
        url = cluster.url.replace("redis+cluster://", f"redis+cluster://{name}:pw@", 1)
        api = start_api(redis_url=url, celery_broker_url=REDIS_URL)
        headers = {"Authorization": f"Bearer {token(user)}"}
        deadline = time.monotonic() + 3
        with contextlib.suppress(httpx.HTTPError):  # the stream cannot go live
            with httpx.stream(
                "GET", f"{api.url}/api/v1/stream/notifications", headers=headers, timeout=3
            ) as response:
                for _ in response.iter_lines():
                    if time.monotonic() > deadline:
                        break
        log = api.log()
        assert "NOPERM" in log, log[-2000:]
        assert log.count("refused the pub/sub link's command") < 20, log[-2000:]
    finally:
        for node in nodes:
            node.acl_deluser(name)
            node.close()
