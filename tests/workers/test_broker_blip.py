"""Redis goes away while a worker is in the middle of a task and comes back: the worker waits
for it (as the README says), finishes the task and takes new ones; it does not exit. And a
worker that does stop on an error says so in its exit status."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import httpx

from domain.sample import sample_csv
from finrt.embedded_redis import EmbeddedRedis
from tests.fixtures_workers import auth, finished, upload_csv, wait_for
from tests.support import BIN, ROOT


async def _until_running(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while (await client.get(url, headers=headers)).json()["status"] != "running":
        assert time.monotonic() < deadline, "the report never started"
        await asyncio.sleep(0.05)


async def test_a_worker_whose_redis_dies_mid_task_finishes_it_and_takes_the_next(
    isolated_env, start_isolated_api, start_worker, user
):
    server = EmbeddedRedis().start()
    try:
        # The report task sleeps before it builds, so Redis dies while it is surely in flight
        # (taken from the queue, not yet acknowledged); two pool processes, so the worker is
        # also waiting for the next task on the connection that dies.
        env = isolated_env(redis_url=server.url, report_delay_seconds=4)
        worker = start_worker(env, wait=False, pool=2)
        api = start_isolated_api(env)
        worker.wait_ready()
        base, headers = api.url, auth(env, user)
        async with httpx.AsyncClient(timeout=30) as client:
            file_id = (await upload_csv(client, base, headers, sample_csv(4))).json()["file_id"]
            await wait_for(client, f"{base}/api/v1/files/{file_id}", headers, finished)
            response = await client.post(
                f"{base}/api/v1/files/{file_id}/reports", json={"format": "csv"}, headers=headers
            )
            assert response.status_code == 202, response.text
            report_url = f"{base}/api/v1/reports/{response.json()['report_id']}"
            await _until_running(client, report_url, headers)

            assert server.process is not None
            server.process.kill()  # dies without a word
            server.process.wait()
            await asyncio.sleep(5)
            server.start()  # the same port, empty

            report = await wait_for(client, report_url, headers, finished, timeout=60)
            assert worker.process is not None
            assert worker.process.poll() is None, worker.log()
            # The worker consumes again: a new upload is processed.
            again = (await upload_csv(client, base, headers, sample_csv(3))).json()["file_id"]
            processed = await wait_for(
                client, f"{base}/api/v1/files/{again}", headers, finished, timeout=60
            )
        assert report["status"] == "ready", report
        assert processed["status"] == "processed", processed
        assert "Unrecoverable error" not in worker.log()
    finally:
        server.stop()


def test_a_worker_that_cannot_start_exits_with_a_failure_status(env, tmp_path: Path):
    # Its pid file names a live process (this one): Celery refuses to start a second worker.
    pidfile = tmp_path / "worker.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    done = subprocess.run(
        [str(BIN / "finrt"), "worker", "--no-relay", "--pidfile", str(pidfile)],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0, (done.stdout, done.stderr)
    assert "already exists" in done.stdout + done.stderr
