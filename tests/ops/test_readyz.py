"""``/readyz``: 503 naming what is unreachable (Redis, the database), 200 once it is back;
``/healthz`` and ``/metrics`` answer meanwhile."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from finrt.embedded_redis import EmbeddedRedis, free_port
from tests.ops.metrics_support import scrape, value
from tests.support import BIN, ROOT, ApiServer

pytestmark = pytest.mark.timeout(90)


def _ready(server: ApiServer, want: int, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{server.url}/readyz", timeout=5)
            body = response.json()
            if response.status_code == want:
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"/readyz never answered {want}; last: {body}")


def test_readyz_is_503_while_redis_is_stopped_and_200_when_it_returns(start_api):
    redis_server = EmbeddedRedis().start()
    try:
        api = start_api(redis_url=redis_server.url)
        assert _ready(api, 200)["checks"] == {"database": "ok", "redis": "ok"}
        redis_server.stop()
        body = _ready(api, 503)
        assert body["status"] == "unavailable"
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["redis"] != "ok"
        assert httpx.get(f"{api.url}/healthz", timeout=5).status_code == 200
        down = scrape(api.url)
        assert value(down, "finrt_redis_pubsub_connected") == 0
        assert value(down, "finrt_task_metrics_up") == 0
        redis_server = EmbeddedRedis(port=redis_server.port).start()
        assert _ready(api, 200)["status"] == "ready"
        assert value(scrape(api.url), "finrt_redis_reconnects_total") >= 1
    finally:
        redis_server.stop()


def test_readyz_is_503_while_the_database_is_unreachable(env, tmp_root):
    server_env = dict(env)
    server_env["FINRT_DATABASE_URL"] = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    server = ApiServer(server_env, tmp_root, name="nodb")
    with open(server.log_path, "ab") as log:
        server.process = subprocess.Popen(
            [str(BIN / "finrt"), "api", "--port", str(server.port)],
            env=server_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
        )
    try:
        body = _ready(server, 503, timeout=20)
        assert body["checks"]["database"].startswith("unreachable")
        assert body["checks"]["redis"] == "ok"
    finally:
        server.stop()
