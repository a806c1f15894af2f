"""The page's one event connection: server restarts, the polling fallback, tabs in sync."""

from __future__ import annotations

from typing import Any

import pytest

import streams
from models import session_scope
from services.notify import create_notification
from tests.browser.test_live_dashboard import publish_metric

pytestmark = pytest.mark.browser

STREAM_URL = "**/api/v1/stream?**"


def record_streams(page: Any) -> list[str]:
    """Records every stream request the page makes."""
    opened: list[str] = []
    page.on("request", lambda r: opened.append(r.url) if "/api/v1/stream?" in r.url else None)
    return opened


def test_restart_reconnects_by_itself_and_loses_nothing(
    start_api, user, make_file, open_dashboard, notify
):
    server = start_api()
    file_id = make_file(user)
    d = open_dashboard(server, user)
    page = d.page
    opened = record_streams(page)
    publish_metric(file_id, "revenue", "money", "1.00")
    d.wait_card("revenue", "1.00")

    server.stop()
    d.wait_state("reconnecting")
    assert "attempt" in d.connection_text()
    # Published while no server runs: the page must still get all of it.
    publish_metric(file_id, "revenue", "money", "2.00")
    publish_metric(file_id, "net_income", "money", "3.00")
    notify(
        user,
        "Overnight batch failed",
        type="error_alert",
        message="Retry scheduled.",
        priority="high",
    )
    d.screenshot("reconnecting")

    server.start()
    d.wait_connected(timeout=40)
    d.wait_card("revenue", "2.00")
    d.wait_card("net_income", "3.00")
    d.wait_badge(1)
    page.wait_for_selector(".toast--high")
    assert not page.is_visible("#banner")
    assert d.event_sources()["max"] == 1
    d.screenshot("reconnected")
    # Every reconnect asked for a fresh ticket and carried the position.
    assert len(opened) >= 1
    assert all("ticket=" in url and "last_event_id=" in url for url in opened)
    assert len({url.split("ticket=")[1].split("&")[0] for url in opened}) == len(opened)


def test_polling_takes_over_when_the_stream_keeps_failing_and_hands_back(
    api, user, make_file, open_dashboard, notify
):
    file_id = make_file(user)
    publish_metric(file_id, "revenue", "money", "7.00")

    def refuse_streams(page: Any) -> None:
        page.route(STREAM_URL, lambda route: route.abort())

    d = open_dashboard(
        api,
        user,
        route=refuse_streams,
        connected=False,
        config={"backoffBaseMs": 100, "pollMs": 300, "probeMs": 1500},
    )
    page = d.page
    d.wait_state("polling", timeout=20)
    assert "polling" in d.connection_text()
    publish_metric(file_id, "revenue", "money", "8.00")
    d.wait_card("revenue", "8.00")
    notify(
        user,
        "Quota almost used",
        type="system_update",
        message="90% of storage used.",
        priority="high",
    )
    d.wait_badge(1)
    page.wait_for_selector(".toast--high")
    d.screenshot("polling")

    seen = d.stats["byType"].get("metric_update", 0)
    page.unroute(STREAM_URL)
    d.wait_connected(timeout=20)  # the next probe finds the stream working again
    publish_metric(file_id, "revenue", "money", "9.00")
    d.wait_card("revenue", "9.00")
    page.wait_for_timeout(200)
    # Nothing polling applied came again over the stream.
    assert d.stats["byType"]["metric_update"] == seen + 1


def test_tabs_keep_their_counts_in_sync(api, user, open_dashboard):
    first = open_dashboard(api, user)
    second = open_dashboard(api, user, context=first.page.context)  # two tabs of one browser
    with session_scope() as session:  # one transaction: 101 events published on commit
        ids = [
            create_notification(
                session, user, "report_ready", f"Report {i}", f"Report {i} is ready"
            ).id
            for i in range(101)
        ]
    first.wait_badge(101)
    second.wait_badge(101)
    assert second.page.inner_text("#bell-badge") == "99+"

    # The tab in front gets animation frames at full rate; the other one, like a background
    # tab, about once a second (its badge follows all the same).
    first.page.bring_to_front()
    first.page.click("#bell")  # the badge counts the unseen: opening the bell sees them all
    second.wait_badge(0)
    second.wait_unread(101)
    first.page.click(f'.note[data-id="{ids[-1]}"] [data-action=read]')
    second.wait_unread(100)
    first.page.click(f'.note[data-id="{ids[-2]}"] [data-action=dismiss]')
    second.wait_unread(99)
    assert second.page.is_hidden("#bell-badge")
    second.page.bring_to_front()
    second.page.click("#bell")
    assert not second.page.query_selector(f'.note[data-id="{ids[-2]}"]')
    assert "unread" not in (second.page.get_attribute(f'.note[data-id="{ids[-1]}"]', "class") or "")

    first.page.bring_to_front()
    first.page.click("#mark-all-read")
    second.wait_unread(0)
    first.wait_unread(0)
    assert second.page.is_hidden("#bell-badge")
    assert second.page.query_selector_all(".note.unread") == []
    first.screenshot("first-tab")
    second.screenshot("second-tab")


def test_one_event_connection_per_tab_across_file_switches(api, user, make_file, open_dashboard):
    older, newer = make_file(user, name="older.csv"), make_file(user, name="newer.csv")
    d = open_dashboard(api, user)
    page = d.page
    assert page.input_value("#file-select") == str(newer)
    page.select_option("#file-select", str(older))
    d.wait_streaming(f"file:{older}")
    streams.publish(
        f"file:{newer}", "metric_update", {"name": "revenue", "value": "5.00"}, key="revenue"
    )
    publish_metric(older, "revenue", "money", "6.00")
    d.wait_card("revenue", "6.00")
    assert d.card_values() == {"revenue": "6.00"}  # the other file's event is not shown
    page.select_option("#file-select", str(newer))
    d.wait_streaming(f"file:{newer}")
    publish_metric(newer, "revenue", "money", "7.00")
    d.wait_card("revenue", "7.00")
    counts = d.event_sources()
    assert counts["open"] == 1
    assert counts["max"] == 1, counts
    assert counts["made"] == 3, counts
    d.screenshot("switched")
