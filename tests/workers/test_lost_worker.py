"""A job whose worker process dies each time it runs (out of memory, killed): it is handed on
as often as a job may be tried (FINRT_TASK_MAX_RETRIES + 1), then ends failed with one
error_alert, instead of going back to "running" on the next worker for ever."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

import httpx
import psutil
from sqlalchemy import select

from models import File, FileUpload, Notification, ReportExport, session_scope
from tests.fixtures_workers import (
    WorkerProcess,
    auth,
    report_of_a_new_file,
    upload_csv,
)

ATTEMPTS = 2  # FINRT_TASK_MAX_RETRIES=1
FINISHED = ("processed", "ready", "failed")


async def _kill_every_run(
    worker: WorkerProcess, state: Callable[[], tuple[str, object]], timeout: float = 60.0
) -> tuple[str, int]:
    """SIGKILL the worker's pool process (as the kernel's OOM killer does) in every run of
    the job until the job ends; the worker's main process lives on. ``state()`` gives the
    job's status and a name of its run in progress (None when none is). Returns the final
    status and how many runs were killed."""
    assert worker.process is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    killed: list[object] = []
    while True:
        status, run = state()
        if status in FINISHED:
            return status, len(killed)
        assert loop.time() < deadline, f"still {status} after {len(killed)} runs killed"
        if run is None or run in killed:
            await asyncio.sleep(0.05)
            continue
        for child in psutil.Process(worker.process.pid).children():
            os.kill(child.pid, signal.SIGKILL)
        killed.append(run)


async def test_a_report_that_loses_its_worker_each_time_ends_failed_once(
    isolated_env, start_isolated_api, start_worker, user
):
    # The delay keeps each run busy long enough to be killed in the middle.
    env = isolated_env(report_delay_seconds=60, task_max_retries=ATTEMPTS - 1)
    worker = start_worker(env)
    api = start_isolated_api(env)
    base, headers, url = api.url, auth(env, user), env["FINRT_DATABASE_URL"]
    async with httpx.AsyncClient(timeout=30) as client:
        report_id = await report_of_a_new_file(client, base, headers)

        def state() -> tuple[str, object]:
            # Each start counts itself in the report's attempts.
            with session_scope(url) as session:
                report = session.get(ReportExport, report_id)
                assert report is not None
                running = report.status == "running"
                return report.status, report.attempts if running else None

        final, killed = await _kill_every_run(worker, state)
        status = (await client.get(f"{base}/api/v1/reports/{report_id}", headers=headers)).json()

    assert (final, killed) == ("failed", ATTEMPTS)
    assert status["status"] == "failed"
    assert f"started {ATTEMPTS} times" in status["error"]
    with session_scope(url) as session:
        stored = list(session.scalars(select(Notification).where(Notification.user_id == user)))
        report = session.get(ReportExport, report_id)
        assert report is not None
        attempts = report.attempts
    assert sorted(n.type for n in stored) == ["error_alert", "file_processed"]
    assert attempts == ATTEMPTS


async def test_a_file_that_loses_its_worker_each_time_ends_failed_once(
    isolated_env, start_isolated_api, start_worker, user
):
    # Enough rows that each run is still parsing or storing them when it is killed.
    rows = 100_000
    env = isolated_env(
        task_max_retries=ATTEMPTS - 1, upload_max_rows=rows, upload_max_bytes=10_000_000
    )
    worker = start_worker(env)
    api = start_isolated_api(env)
    base, headers, url = api.url, auth(env, user), env["FINRT_DATABASE_URL"]
    body = "period,statement,line_item,amount,currency\n" + "".join(
        f"2026-{m % 12 + 1:02d},income,revenue,{m}.25,USD\n" for m in range(rows)
    )
    async with httpx.AsyncClient(timeout=60) as client:
        accepted = await upload_csv(client, base, headers, body.encode())
        assert accepted.status_code == 202, accepted.text
        file_id = accepted.json()["file_id"]

        def state() -> tuple[str, object]:
            # Each start stamps the file's updated_at.
            with session_scope(url) as session:
                file = session.get(File, file_id)
                assert file is not None
                processing = file.status == "processing"
                return file.status, file.updated_at if processing else None

        final, killed = await _kill_every_run(worker, state)
        status = (await client.get(f"{base}/api/v1/files/{file_id}", headers=headers)).json()

    assert (final, killed) == ("failed", ATTEMPTS)
    assert status["status"] == "failed"
    assert f"started {ATTEMPTS} times" in status["error"]
    with session_scope(url) as session:
        stored = list(session.scalars(select(Notification).where(Notification.user_id == user)))
        upload = session.get(FileUpload, file_id)
        assert upload is not None
        attempts = upload.attempts
    assert [n.type for n in stored] == ["error_alert"]
    assert attempts == ATTEMPTS
