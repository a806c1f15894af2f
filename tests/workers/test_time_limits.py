"""A job that runs past its soft time limit (FINRT_TASK_SOFT_TIME_LIMIT) is interrupted and
ends failed, once, saying so to its owner."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from models import Notification, session_scope
from tests.fixtures_workers import auth, finished, report_of_a_new_file, wait_for


async def test_a_report_past_its_soft_time_limit_fails_saying_so(
    isolated_env, start_isolated_api, start_worker, user
):
    said = "took longer than 1 seconds"
    env = isolated_env(
        report_delay_seconds=30, task_max_retries=0, task_soft_time_limit=1, task_time_limit=60
    )
    start_worker(env)
    api = start_isolated_api(env)
    base, headers, url = api.url, auth(env, user), env["FINRT_DATABASE_URL"]
    async with httpx.AsyncClient(timeout=30) as client:
        report_id = await report_of_a_new_file(client, base, headers, "csv")
        report_url = f"{base}/api/v1/reports/{report_id}"
        report = await wait_for(client, report_url, headers, finished, timeout=25)
    assert report["status"] == "failed"
    assert said in report["error"], report["error"]
    with session_scope(url) as session:
        alerts = list(
            session.scalars(
                select(Notification).where(
                    Notification.user_id == user, Notification.type == "error_alert"
                )
            )
        )
    assert len(alerts) == 1 and said in alerts[0].message, [a.message for a in alerts]
