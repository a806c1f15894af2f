"""Celery beside a cluster: the broker is FINRT_CELERY_BROKER_URL (RabbitMQ here), events go
through the cluster; without a broker URL, a cluster is refused at start in one line."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from kombu.connection import Connection

from domain.sample import rows_csv
from finrt.embedded_redis import free_port
from tests.fixtures_workers import auth, events_until, upload_csv
from tests.support import Received, make_token, sse

AMQP = "amqp://guest:guest@127.0.0.1:5672//"
FINRT = str(Path(sys.executable).parent / "finrt")


def _report_statuses(events: list[Received]) -> list[str]:
    return [e.envelope["data"]["status"] for e in events if e.event == "report_status"]


def _rabbitmq_answers() -> bool:
    try:
        with Connection(AMQP, connect_timeout=2) as conn:  # type: ignore[no-untyped-call]
            conn.connect()
        return True
    except Exception:
        return False


def test_a_cluster_without_a_broker_url_is_one_line_at_start(cluster, env):
    run_env = dict(env, FINRT_REDIS_URL=cluster.url, FINRT_CELERY_BROKER_URL="")
    for command in (["api", "--port", str(free_port())], ["worker"]):
        done = subprocess.run(
            [FINRT, *command], env=run_env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "FINRT_CELERY_BROKER_URL must be set" in lines[0]


async def test_file_processing_and_a_report_with_the_cluster_and_rabbitmq_as_broker(
    cluster, isolated_env, start_worker, start_isolated_api, user
):
    if not _rabbitmq_answers():
        pytest.skip("RabbitMQ does not answer on 127.0.0.1:5672")
    queue = f"finrt-cluster-{uuid.uuid4().hex[:8]}"
    env = isolated_env(redis_url=cluster.url, celery_broker_url=AMQP, celery_queue=queue)
    try:
        start_worker(env)
        api = start_isolated_api(env)
        headers, token = auth(env, user), make_token(env, user)
        async with (
            httpx.AsyncClient(timeout=30) as client,
            sse(f"{api.url}/api/v1/stream/notifications", token) as inbox,
        ):
            response = await upload_csv(client, api.url, headers, rows_csv(200, bad_rows=1))
            assert response.status_code == 202, response.text
            accepted = response.json()
            url = f"{api.url}/api/v1/stream/files/{accepted['file_id']}"
            async with sse(url, token, last_event_id=accepted["last_event_id"]) as stream:
                events = await events_until(
                    stream,
                    lambda seen: len([e for e in seen if e.event == "chart_data_update"]) == 4,
                    timeout=60,
                )
            # A report of it: queued, running, ready on the file's stream; the file downloads.
            async with sse(url, token) as stream:
                r = await client.post(
                    f"{api.url}/api/v1/files/{accepted['file_id']}/reports",
                    json={"format": "csv"},
                    headers=headers,
                )
                assert r.status_code == 202, r.text
                report_id = r.json()["report_id"]
                statuses = await events_until(
                    stream,
                    lambda seen: _report_statuses(seen)[-1:] == ["ready"],
                    timeout=60,
                )
            assert _report_statuses(statuses)[0] == "queued"
            download = await client.get(
                f"{api.url}/api/v1/reports/{report_id}/download", headers=headers
            )
            assert download.status_code == 200 and b"revenue" in download.content.lower()
            notes = await events_until(
                inbox,
                lambda seen: any(
                    e.event == "notification" and e.envelope["data"]["type"] == "file_processed"
                    for e in seen
                ),
                timeout=60,
            )
        assert {e.event for e in events} == {
            "file_processing",
            "financial_data_update",
            "metric_update",
            "chart_data_update",
        }
        final = [e.envelope["data"] for e in events if e.event == "file_processing"][-1]
        assert final["status"] == "processed"
        done = next(e for e in notes if e.event == "notification")
        assert done.envelope["data"]["data"]["rows_ok"] == 199
    finally:
        with Connection(AMQP, connect_timeout=2) as conn:  # type: ignore[no-untyped-call]
            conn.default_channel.queue_delete(queue)
