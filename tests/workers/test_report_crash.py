"""A worker SIGKILLed in the middle of a report: the next worker builds it again, and the user
gets one notification and one finished file."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pypdf
from sqlalchemy import select

from domain.sample import sample_csv
from models import Notification, ReportExport, session_scope
from tests.fixtures_workers import (
    assert_quiet,
    auth,
    events_until,
    finished,
    upload_csv,
    wait_for,
)
from tests.support import make_token, sse


async def test_a_report_killed_mid_build_is_redone_once_by_the_next_worker(
    isolated_env, start_isolated_api, start_worker, user
):
    # A short visibility timeout so the broker hands the unacknowledged task on quickly; the
    # first worker sleeps a minute before building, so it is surely killed mid-task.
    env = isolated_env(celery_visibility_timeout=4, report_delay_seconds=60)
    first = start_worker(env, wait=False)
    api = start_isolated_api(env)
    first.wait_ready()
    base, headers, token = api.url, auth(env, user), make_token(env, user)
    async with (
        httpx.AsyncClient(timeout=30) as client,
        sse(f"{base}/api/v1/stream/notifications", token) as inbox,
    ):
        file_id = (await upload_csv(client, base, headers, sample_csv(4))).json()["file_id"]
        await wait_for(client, f"{base}/api/v1/files/{file_id}", headers, finished)
        response = await client.post(
            f"{base}/api/v1/files/{file_id}/reports", json={"format": "pdf"}, headers=headers
        )
        report_id = response.json()["report_id"]
        await events_until(
            inbox,
            lambda seen: any(
                e.event == "report_status" and e.envelope["data"]["status"] == "running"
                for e in seen
            ),
        )
        first.kill()
        start_worker(env | {"FINRT_REPORT_DELAY_SECONDS": "0"})
        status = await wait_for(
            client, f"{base}/api/v1/reports/{report_id}", headers, finished, timeout=40
        )
        seen = await events_until(inbox, lambda s: any(e.event == "notification" for e in s))
        # Longer than the visibility timeout: a second delivery would have shown by now.
        await assert_quiet(inbox, 6)
        download = await client.get(f"{base}/api/v1/reports/{report_id}/download", headers=headers)

    assert status["status"] == "ready"
    notifications = [e.envelope["data"] for e in seen if e.event == "notification"]
    assert [n["type"] for n in notifications] == ["report_ready"]
    with session_scope(env["FINRT_DATABASE_URL"]) as session:
        stored = list(session.scalars(select(Notification).where(Notification.user_id == user)))
        report = session.get(ReportExport, report_id)
        assert report is not None
        attempts = report.attempts
    assert sorted(n.type for n in stored) == ["file_processed", "report_ready"]
    assert attempts == 2
    files = sorted(p.name for p in Path(env["FINRT_REPORTS_DIR"]).iterdir())
    assert files == [f"report-{report_id}.pdf"]
    assert len(pypdf.PdfReader(io.BytesIO(download.content)).pages) >= 1
