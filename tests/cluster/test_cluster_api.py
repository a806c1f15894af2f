"""The rest of what lives in Redis, on a cluster: tickets, publish rate limits, the fleet-wide
stream limit, publishing over HTTP, /metrics."""

from __future__ import annotations

import contextlib

import httpx

from tests.cluster.test_cluster_streams import start_cluster_api
from tests.support import sse


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_tickets_rate_limits_and_http_publishing_on_the_cluster(
    cluster, start_api, token, user
):
    server = start_cluster_api(start_api, cluster, publish_rate="3/minute")
    channel = f"user:{user}"
    service = token(f"{user}-svc", scope="publish")
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        r = await client.post("/api/v1/stream/tickets", headers=_bearer(token(user)))
        assert r.status_code == 201
        ticket = r.json()["ticket"]
        url = f"{server.url}/api/v1/stream/notifications"
        async with sse(url, params={"ticket": ticket}) as stream:
            ids = []
            for n in range(3):
                r = await client.post(
                    f"/api/v1/events/{channel}",
                    json={"type": "price_tick", "data": {"n": n}},
                    headers=_bearer(service),
                )
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
            refused = await client.post(
                f"/api/v1/events/{channel}",
                json={"type": "price_tick", "data": {"n": "refused"}},
                headers=_bearer(service),
            )
            assert refused.status_code == 429
            assert [e.id for e in await stream.events(3, timeout=15)] == ids
            await stream.no_event(0.5)
        # Single use, on the cluster too.
        again = await client.get("/api/v1/stream/notifications", params={"ticket": ticket})
        assert again.status_code == 401
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert "finrt_redis_pubsub_connected 1.0" in metrics.text


async def test_the_stream_limit_counts_across_processes_on_the_cluster(
    cluster, start_api, token, user
):
    one, two = (start_cluster_api(start_api, cluster, max_streams_per_user="3") for _ in range(2))
    path = "/api/v1/stream/notifications"
    async with contextlib.AsyncExitStack() as stack:
        for server in (one, two, two):
            await stack.enter_async_context(sse(server.url + path, token(user)))
        for server in (one, two):
            async with httpx.AsyncClient(timeout=10) as client:
                r = await client.get(server.url + path, headers=_bearer(token(user)))
            assert r.status_code == 429
