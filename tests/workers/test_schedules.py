"""Scheduled reports: beat's periodic check starts one report per file and period."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from domain.sample import sample_csv
from services.reports import current_period
from tests.fixtures_workers import (
    assert_quiet,
    auth,
    events_until,
    finished,
    upload_csv,
    wait_for,
)
from tests.support import Received, make_token, sse


def _types(events: list[Received]) -> list[str]:
    return [e.envelope["data"]["type"] for e in events if e.event == "notification"]


@pytest.mark.parametrize(
    ("frequency", "when", "period"),
    [
        ("daily", datetime(2026, 11, 25, 23, 59, tzinfo=UTC), "2026-11-25"),
        ("weekly", datetime(2026, 11, 25, 12, 0, tzinfo=UTC), "2026-W48"),
        # ISO weeks: the last days of December may belong to the next year's week 1.
        ("weekly", datetime(2029, 12, 31, 12, 0, tzinfo=UTC), "2030-W01"),
    ],
)
def test_the_current_period_is_the_utc_day_or_iso_week(frequency, when, period):
    assert current_period(frequency, when) == period


async def test_beat_starts_one_scheduled_report_per_period(
    producers_api, celery_worker, worker_env, user, start_worker
):
    base, headers, token = producers_api.url, auth(worker_env, user), make_token(worker_env, user)
    async with (
        httpx.AsyncClient(timeout=30) as client,
        sse(f"{base}/api/v1/stream/notifications", token) as inbox,
    ):
        file_id = (await upload_csv(client, base, headers, sample_csv(4))).json()["file_id"]
        await wait_for(client, f"{base}/api/v1/files/{file_id}", headers, finished)
        put = await client.put(
            f"{base}/api/v1/files/{file_id}/schedule",
            json={"frequency": "daily", "format": "csv"},
            headers=headers,
        )
        assert put.status_code == 200, put.text
        # Beat checks every second here; its other jobs are kept out of the way.
        start_worker(
            worker_env
            | {
                "FINRT_SCHEDULE_CHECK_SECONDS": "1",
                "FINRT_OUTBOX_SWEEP_SECONDS": "3600",
                "FINRT_NOTIFICATION_PURGE_SECONDS": "3600",
                "FINRT_STALE_JOB_CHECK_SECONDS": "3600",
                "FINRT_BEAT_SCHEDULE_FILE": f"{worker_env['FINRT_BEAT_SCHEDULE_FILE']}-{user}",
            },
            beat=True,
        )
        seen = await events_until(inbox, lambda s: "scheduled_report" in _types(s), timeout=30)
        await assert_quiet(inbox, 3)  # three more checks: the period has its report
        reports = await client.get(f"{base}/api/v1/files/{file_id}/reports", headers=headers)
        schedule = await client.get(f"{base}/api/v1/files/{file_id}/schedule", headers=headers)
        removed = await client.put(
            f"{base}/api/v1/files/{file_id}/schedule",
            json={"frequency": None},
            headers=headers,
        )

    assert _types(seen) == ["file_processed", "scheduled_report"]
    notification = [e.envelope["data"] for e in seen if e.event == "notification"][-1]
    today = current_period("daily", datetime.now(UTC))
    assert notification["type"] == "scheduled_report"
    assert notification["data"]["period"] == today
    listed = reports.json()["reports"]
    assert len(listed) == 1 and listed[0]["scheduled"] and listed[0]["status"] == "ready"
    assert listed[0]["format"] == "csv"
    assert notification["data"]["report_id"] == listed[0]["id"]
    assert schedule.json() == {
        "file_id": file_id,
        "frequency": "daily",
        "format": "csv",
        "last_period": today,
        "current_period": today,
    }
    assert removed.json()["frequency"] is None
