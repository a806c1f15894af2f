"""``GET /metrics``: the stream series move as events flow; task outcomes and durations come
from real workers through Redis."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import httpx
import pytest
import websockets

from domain.sample import sample_csv
from tests.fixtures_workers import WorkerProcess, auth, finished, upload_csv, wait_for
from tests.ops.metrics_support import scrape, value
from tests.support import BIN, ROOT, publish_from_subprocess, sse

pytestmark = pytest.mark.timeout(90)


async def _until(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def _open(samples, transport: str, kind: str) -> float:
    return value(samples, "finrt_connections_open", transport=transport, channel_kind=kind)


async def test_stream_series_move_as_events_flow(start_api, env, token, user, make_file):
    api = start_api()  # a process of the test's own: its counters count this test only
    before = scrape(api.url)
    assert value(before, "finrt_redis_pubsub_connected") == 1
    assert _open(before, "sse", "user") == 0
    channel = f"user:{user}"
    url = f"{api.url}/api/v1/stream/notifications"
    async with sse(url, token(user)) as stream:
        ids = publish_from_subprocess(env, channel, "job_progress", [{"n": i} for i in range(5)])
        assert [e.id for e in await stream.events(5)] == ids
        during = scrape(api.url)
    assert _open(during, "sse", "user") == 1
    assert value(during, "finrt_channels_subscribed") >= 1
    assert value(during, "finrt_events_received_total") >= 5
    assert value(during, "finrt_events_delivered_total") >= 5
    assert value(during, "finrt_flushes_total") >= 1
    lag_count = value(during, "finrt_delivery_lag_seconds_count")
    assert lag_count >= 1
    assert value(during, "finrt_delivery_lag_seconds_bucket", le="+Inf") == lag_count
    assert 0 <= value(during, "finrt_delivery_lag_seconds_sum") < 5 * lag_count

    # A resume from history counts, and the closed stream is no longer open.
    async with sse(url, token(user), last_event_id=ids[1]) as stream:
        assert [e.id for e in await stream.events(3)] == ids[2:]
    after = await _until(lambda: s if _open(s := scrape(api.url), "sse", "user") == 0 else None)
    assert value(after, "finrt_resumes_total") >= 1
    assert value(after, "finrt_events_delivered_total") >= 8
    assert value(after, "finrt_resets_total", reason="history_lost") == 0

    # Events this process publishes are counted (those a script published, above, are not).
    assert value(after, "finrt_events_published_total") == 0
    service = {"Authorization": f"Bearer {token(f'{user}-svc', scope='publish')}"}
    async with httpx.AsyncClient(timeout=10) as client:
        for n in range(3):
            r = await client.post(
                f"{api.url}/api/v1/events/{channel}",
                headers=service,
                json={"type": "price_tick", "data": {"n": n}},
            )
            assert r.status_code == 202, r.text
    assert value(scrape(api.url), "finrt_events_published_total") == 3

    # A position from before the channel's history began (Redis restarted without persistence,
    # or a client's stale id) is a reset, counted by its reason.
    async with sse(url, token(user), last_event_id="1-0") as stream:
        reset = await stream.events(1)
    assert reset[0].event == "reset" and reset[0].envelope["data"]["reason"] == "history_lost"
    reasons = await _until(
        lambda: (
            s if value(s := scrape(api.url), "finrt_resets_total", reason="history_lost") else None
        )
    )
    assert value(reasons, "finrt_resets_total", reason="history_lost") == 1
    assert value(reasons, "finrt_resets_total", reason="history_trimmed") == 0
    assert value(reasons, "finrt_resets_total", reason="unknown_position") == 0

    # A position beyond the newest event (a failover to a replica that lacked it) too.
    async with sse(url, token(user), last_event_id="9999999999999-0") as stream:
        reset = await stream.events(1)
    assert reset[0].envelope["data"]["reason"] == "unknown_position"
    beyond = await _until(
        lambda: (
            s
            if value(s := scrape(api.url), "finrt_resets_total", reason="unknown_position")
            else None
        )
    )
    assert value(beyond, "finrt_resets_total", reason="unknown_position") == 1
    assert value(beyond, "finrt_resets_total", reason="history_lost") == 1


async def test_websocket_and_file_connections_are_counted_by_kind(
    start_api, token, user, make_file
):
    api = start_api()
    file_id = make_file(user)
    ws_url = api.url.replace("http", "ws") + f"/api/v1/ws?access_token={token(user)}"
    async with websockets.connect(ws_url) as ws:
        await _until(lambda: _open(scrape(api.url), "websocket", "none") == 1)
        await ws.send(json.dumps({"type": "subscribe", "channel": f"file:{file_id}"}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        assert json.loads(await ws.recv())["type"] == "presence"  # who is on the file
        assert _open(scrape(api.url), "websocket", "file") == 1
        await ws.send(json.dumps({"type": "subscribe", "channel": f"user:{user}"}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        samples = scrape(api.url)
        assert _open(samples, "websocket", "mixed") == 1
        assert _open(samples, "websocket", "file") == 0


def _start_worker_with_metrics(env: dict[str, str], tmp_root) -> WorkerProcess:
    """A real worker that also loads ``workers.metrics`` (``--include``: the app's own import
    list may not name it yet)."""
    worker = WorkerProcess(env, tmp_root, "metrics-worker")
    with open(worker.log_path, "ab") as log:
        worker.process = subprocess.Popen(
            [
                str(BIN / "finrt"),
                "worker",
                "-n",
                worker.nodename,
                "--pool",
                "prefork",
                "-c",
                "1",
                "--include",
                "workers.metrics",
                "--without-mingle",
                "--without-gossip",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
            start_new_session=True,
        )
    try:
        worker.wait_ready(45)
    except BaseException:
        worker.stop()
        raise
    return worker


async def test_task_outcomes_and_durations_reach_every_api_process(
    isolated_env, start_isolated_api, tmp_root, user
):
    env = isolated_env()
    api = start_isolated_api(env)
    worker = _start_worker_with_metrics(env, tmp_root)
    try:
        headers = auth(env, user)
        async with httpx.AsyncClient(timeout=30) as client:
            r = await upload_csv(client, api.url, headers, sample_csv(4))
            assert r.status_code == 202, r.text
            file_id = r.json()["file_id"]
            body = await wait_for(client, f"{api.url}/api/v1/files/{file_id}", headers, finished)
            assert body["status"] == "processed"
        task = "finrt.process_file"

        def counted():
            s = scrape(api.url)
            timed = value(s, "finrt_task_duration_seconds_count", task=task)
            return (
                s if timed and value(s, "finrt_tasks_total", task=task, outcome="success") else None
            )

        samples = await _until(counted, timeout=15)
    finally:
        worker.stop()
    assert value(samples, "finrt_task_metrics_up") == 1
    assert value(samples, "finrt_tasks_total", task=task, outcome="success") == 1
    assert value(samples, "finrt_tasks_total", task=task, outcome="failure") == 0
    # What the task published (progress, the file's and its owner's events after its commit)
    # is counted in Redis for the fleet; the API process itself published none of it.
    assert value(samples, "finrt_task_events_published_total") >= 3
    count = value(samples, "finrt_task_duration_seconds_count", task=task)
    assert value(samples, "finrt_task_duration_seconds_bucket", task=task, le="+Inf") == count
    assert 0 < value(samples, "finrt_task_duration_seconds_sum", task=task) < 60


async def test_build_info_and_http_request_series(api):
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        for _ in range(3):
            assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/api/v1/files/12345")).status_code == 401
    samples = scrape(api.url)
    info = [labels for (name, labels) in samples if name == "finrt_build_info"]
    assert len(info) == 1 and dict(info[0])["version"]
    assert (
        value(samples, "finrt_http_requests_total", method="GET", route="/healthz", status="200")
        >= 3
    )
    assert (
        value(
            samples,
            "finrt_http_requests_total",
            method="GET",
            route="/api/v1/files/{file_id}",
            status="401",
        )
        >= 1
    )
    assert (
        value(samples, "finrt_http_request_duration_seconds_count", method="GET", route="/healthz")
        >= 3
    )


async def test_the_start_up_heap_is_left_out_of_garbage_collection(api):
    """A full collection walks only what the process allocated after start-up (the imported
    framework code is frozen), which keeps the pauses of a process with many streams short."""
    frozen = value(scrape(api.url), "finrt_gc_frozen_objects")
    assert frozen > 50_000, frozen
