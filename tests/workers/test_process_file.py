"""process_file on a real worker: progress, data, metric and chart events, notifications."""

from __future__ import annotations

from typing import Any

import httpx

from domain.csv_import import parse_csv
from domain.metrics import CHART_NAMES, METRIC_NAMES
from domain.sample import rows_csv
from streams.envelope import parse_id
from tests.fixtures_workers import (
    assert_quiet,
    auth,
    events_until,
    finished,
    upload_csv,
    wait_for,
)
from tests.support import Received, make_token, sse


def _notifications(events: list[Received]) -> dict[str, dict[str, Any]]:
    return {
        e.envelope["data"]["type"]: e.envelope["data"] for e in events if e.event == "notification"
    }


async def test_upload_of_1000_rows_with_3_bad_streams_everything_and_notifies_the_owner(
    producers_api, celery_worker, worker_env, user
):
    base, headers, token = producers_api.url, auth(worker_env, user), make_token(worker_env, user)
    data = rows_csv(1000, bad_rows=3)
    bad_lines = [e.line for e in parse_csv(data).errors]
    assert len(bad_lines) == 3
    async with (
        httpx.AsyncClient(timeout=30) as client,
        sse(f"{base}/api/v1/stream/notifications", token) as inbox,
    ):
        response = await upload_csv(client, base, headers, data, "big.csv")
        assert response.status_code == 202, response.text
        accepted = response.json()
        file_id, job_id = accepted["file_id"], accepted["job_id"]
        url = f"{base}/api/v1/stream/files/{file_id}"
        # The position from the upload response: nothing the worker published is missed.
        async with sse(url, token, last_event_id=accepted["last_event_id"]) as stream:
            events = await events_until(
                stream, lambda seen: len([e for e in seen if e.event == "chart_data_update"]) == 4
            )
            await assert_quiet(stream, 0.5)
        user_events = await events_until(
            inbox,
            lambda seen: {"file_processed", "data_quality_issue"} <= set(_notifications(seen)),
        )
        dashboard = await client.get(f"{base}/api/v1/files/{file_id}/dashboard", headers=headers)
        detail = (await client.get(f"{base}/api/v1/files/{file_id}", headers=headers)).json()
        listed = (await client.get(f"{base}/api/v1/files", headers=headers)).json()

    progress = [e.envelope["data"] for e in events if e.event == "file_processing"]
    assert progress[0]["status"] == "processing"
    assert {"status": "processing", "processed": 1000, "total": 1000, "percent": 100} in progress
    assert progress[-1] == {"status": "processed", "processed": 1000, "total": 1000, "percent": 100}
    assert [p["percent"] for p in progress] == sorted(p["percent"] for p in progress)
    summary = next(e.envelope["data"] for e in events if e.event == "financial_data_update")
    assert (summary["rows_total"], summary["rows_ok"], summary["rows_bad"]) == (1000, 997, 3)
    assert summary["periods"][0] == "2026-01" and summary["currency"] == "USD"
    metrics = {e.envelope["key"]: e.envelope["data"] for e in events if e.event == "metric_update"}
    charts = {
        e.envelope["key"]: e.envelope["data"] for e in events if e.event == "chart_data_update"
    }
    assert set(metrics) == set(METRIC_NAMES) and set(charts) == set(CHART_NAMES)
    order = [e.event for e in events]
    assert order.index("financial_data_update") < order.index("metric_update")
    assert {e.event for e in events} == {
        "file_processing",
        "financial_data_update",
        "metric_update",
        "chart_data_update",
    }

    found = _notifications(user_events)
    assert found["file_processed"]["data"]["rows_ok"] == 997
    issue = found["data_quality_issue"]
    assert [i["line"] for i in issue["data"]["issues"]] == bad_lines
    for line in bad_lines:
        assert f"line {line}:" in issue["message"]
    jobs = [e.envelope["data"] for e in user_events if e.event == "job_progress"]
    assert jobs and all(j["job_id"] == job_id for j in jobs)
    assert jobs[-1]["status"] == "processed"

    # The snapshot matches the last metric and chart events.
    snapshot = dashboard.json()
    for name, card in metrics.items():  # the spec's names, beside the dashboard's
        assert (card.pop("metric_id"), card.pop("metric_type")) == (name, card["unit"])
    for chart in charts.values():
        assert chart.pop("chart_type") == "line"
        values = chart.pop("chart_data")
        assert values["labels"] == [p["period"] for p in chart["points"]]
        assert values["values"] == [p["value"] for p in chart["points"]]
    assert snapshot["metrics"] == [metrics[name] for name in METRIC_NAMES]
    assert not any(chart.pop("truncated") for chart in charts.values())
    assert all(chart.pop("points_total") == len(chart["points"]) for chart in charts.values())
    assert snapshot["charts"] == [charts[name] for name in CHART_NAMES]
    assert parse_id(snapshot["last_event_id"]) >= parse_id(events[-1].envelope["id"])
    assert detail["status"] == "processed" and detail["role"] == "owner"
    assert (detail["rows_total"], detail["rows_ok"], detail["rows_bad"]) == (1000, 997, 3)
    assert listed["files"][0]["id"] == file_id


async def test_a_file_without_one_valid_row_fails_with_an_error_alert(
    producers_api, celery_worker, worker_env, user
):
    base, headers, token = producers_api.url, auth(worker_env, user), make_token(worker_env, user)
    async with (
        httpx.AsyncClient(timeout=30) as client,
        sse(f"{base}/api/v1/stream/notifications", token) as inbox,
    ):
        response = await upload_csv(client, base, headers, rows_csv(4, bad_rows=4))
        file_id = response.json()["file_id"]
        body = await wait_for(client, f"{base}/api/v1/files/{file_id}", headers, finished)
        seen = await events_until(inbox, lambda s: "error_alert" in _notifications(s))
        await assert_quiet(inbox, 0.5)
    assert body["status"] == "failed"
    assert body["error"] == "none of the 4 data rows is valid"
    assert (body["rows_total"], body["rows_ok"], body["rows_bad"]) == (4, 0, 4)
    alert = _notifications(seen)["error_alert"]
    assert alert["priority"] == "high" and len(alert["data"]["issues"]) == 4
    assert "file_processed" not in _notifications(seen)
    jobs = [e.envelope["data"] for e in seen if e.event == "job_progress"]
    assert jobs[-1]["status"] == "failed"
