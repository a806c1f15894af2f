"""Notification writes on a Redis Cluster: their engagement counters go to the cluster."""

from __future__ import annotations

import subprocess

import httpx

from core.settings import get_settings
from services.engagement import parse
from streams.connect import sync_client
from streams.keys import engagement_key
from tests.cluster.test_cluster_streams import start_cluster_api
from tests.conftest import REDIS_URL
from tests.support import BIN


def test_notification_writes_succeed_and_count_on_the_cluster(cluster, start_api, token, user, env):
    """Regression: the counters' client was made with ``redis.Redis.from_url``, which refuses a
    ``redis+cluster://`` URL; raised after the commit, that failed every notification write:
    ``finrt notify`` said error, mark-all-read was 500, and so were the worker's tasks."""
    api = start_cluster_api(start_api, cluster)
    cli_env = {**env, "FINRT_REDIS_URL": cluster.url, "FINRT_CELERY_BROKER_URL": REDIS_URL}
    args = ["notify", user, "--type", "system_update", "--title", "Hi", "--message", "m"]
    result = subprocess.run(
        [str(BIN / "finrt"), *args], env=cli_env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and "error" not in result.stderr, result.stderr
    bearer = {"Authorization": f"Bearer {token(user)}"}
    r = httpx.post(f"{api.url}/api/v1/notifications/mark-all-read", headers=bearer)
    assert r.status_code == 200, r.text
    client = sync_client(cluster.url)
    try:
        raw: dict[bytes, bytes] = client.hgetall(engagement_key(get_settings().redis_prefix))  # type: ignore[assignment]
        counts = parse(raw)
    finally:
        client.close()
    assert counts[("created", "system_update")] >= 1
    assert counts[("read", "system_update")] >= 1
    assert "Traceback" not in api.log()
