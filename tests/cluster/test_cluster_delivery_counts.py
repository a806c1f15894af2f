"""Notification deliveries counted once on a Redis Cluster: the claims of two API processes
land on several shards (a set per type), and a notification on streams of both processes, then
replayed on resume, counts once per notification."""

from __future__ import annotations

import uuid

from tests.api.test_delivery_counting import counted, figures
from tests.cluster.test_cluster_streams import cluster_publisher, start_cluster_api
from tests.support import sse

TYPES = ("scheduled_report", "report_ready", "file_processed")
STREAM = "/api/v1/stream/notifications"


async def test_each_notification_counts_once_on_the_cluster(cluster, start_api, token, user):
    a, b = start_cluster_api(start_api, cluster), start_cluster_api(start_api, cluster)
    before = {t: figures([a, b], t) for t in TYPES}
    pub = cluster_publisher(cluster)
    channel = f"user:{user}"
    bearer = token(user)

    def notification(type: str) -> str:  # as services/notifications.py publishes one
        return pub.publish(channel, "notification", {"id": str(uuid.uuid4()), "type": type})

    async with sse(a.url + STREAM, bearer) as on_a, sse(b.url + STREAM, bearer) as on_b:
        live = [notification(t) for t in TYPES]
        for tab in (on_a, on_b):
            assert [e.id for e in await tab.events(3, 15)] == live
    away = notification(TYPES[0])
    async with sse(b.url + STREAM, bearer, last_event_id=live[-1]) as resumed:
        assert (await resumed.next_event(15)).id == away
    async with sse(a.url + STREAM, bearer, last_event_id=live[-1]) as again:
        assert (await again.next_event(15)).id == away

    assert await counted([a, b], before[TYPES[0]], TYPES[0]) == (2, 2)
    for type in TYPES[1:]:
        assert await counted([a, b], before[type], type) == (1, 1)
