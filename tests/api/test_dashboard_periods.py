"""``GET /files/{id}/dashboard?period=month|quarter|year`` and the ``position`` that
``GET /events/{channel}`` names (where a browser client starts a channel it has no position for)."""

from __future__ import annotations

import httpx
import pytest

import streams
from domain.sample import sample_csv
from tests.processed_files import processed_file
from tests.support import make_token


@pytest.fixture
def headers(env, user) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(env, user)}"}


def test_the_dashboard_by_month_quarter_and_year(api, user, headers):
    file_id = processed_file(user, sample_csv(periods=8))  # 2026-01 .. 2026-08
    url = f"{api.url}/api/v1/files/{file_id}/dashboard"
    default = httpx.get(url, headers=headers).json()
    month = httpx.get(url, params={"period": "month"}, headers=headers).json()
    assert default == month
    assert month["period"] == "month"
    revenue: dict[str, list[dict[str, str]]] = {}
    for period in ("month", "quarter", "year"):
        body = httpx.get(url, params={"period": period}, headers=headers).json()
        assert body["period"] == period
        assert body["last_event_id"] == month["last_event_id"]
        chart = next(c for c in body["charts"] if c["name"] == "revenue")
        revenue[period] = chart["points"]
    assert [p["period"] for p in revenue["quarter"]] == ["2026-Q1", "2026-Q2", "2026-Q3"]
    assert [p["period"] for p in revenue["year"]] == ["2026"]
    months = [float(p["value"]) for p in revenue["month"]]
    assert float(revenue["quarter"][0]["value"]) == pytest.approx(sum(months[:3]), abs=0.02)
    assert float(revenue["year"][0]["value"]) == pytest.approx(sum(months), abs=0.05)


@pytest.mark.parametrize("period", ["week", "", "MONTH", "monthly"])
def test_another_period_is_422(api, user, make_file, headers, period):
    file_id = make_file(user)
    response = httpx.get(
        f"{api.url}/api/v1/files/{file_id}/dashboard", params={"period": period}, headers=headers
    )
    assert response.status_code == 422
    assert "month" in response.text


def test_a_file_not_processed_yet_has_empty_figures_in_every_period(api, user, make_file, headers):
    file_id = make_file(user)
    body = httpx.get(
        f"{api.url}/api/v1/files/{file_id}/dashboard", params={"period": "year"}, headers=headers
    ).json()
    assert (body["metrics"], body["charts"], body["period"]) == ([], [], "year")


def test_events_name_the_position_to_start_from(api, user, headers):
    channel = f"user:{user}"
    url = f"{api.url}/api/v1/events/{channel}"
    empty = httpx.get(url, params={"limit": 1}, headers=headers).json()
    assert empty["events"] == []
    assert empty["position"]  # a real id even before the first event
    first = streams.publish(channel, "notification_read", {"unread_count": 0})
    body = httpx.get(url, params={"limit": 1}, headers=headers).json()
    assert body["position"] == first
    after = httpx.get(url, params={"after": empty["position"]}, headers=headers).json()
    assert [e["id"] for e in after["events"]] == [first]
    assert after["position"] == first
