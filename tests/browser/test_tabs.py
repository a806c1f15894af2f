"""Tabs of one browser share one stream (Web Locks leader, BroadcastChannel), shown on the
dashboard page itself; and the page's period selector."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from domain.sample import sample_csv
from tests.browser.client_harness import wait_streams
from tests.browser.conftest import COUNT_EVENT_SOURCES, Dashboard
from tests.browser.test_live_dashboard import publish_metric
from tests.processed_files import processed_file
from tests.support import make_token

pytestmark = pytest.mark.browser


@pytest.fixture
def contexts(browser: Any) -> Iterator[Any]:
    made: list[Any] = []

    def _new() -> Any:
        context = browser.new_context(viewport={"width": 1000, "height": 700}, locale="en-US")
        made.append(context)
        return context

    yield _new
    for context in made:
        context.close()


def open_tab(
    context: Any, server: Any, token: str, file_id: int, output_dir: Any, *, record: bool = False
) -> Dashboard:
    page = context.new_page()
    page.add_init_script(COUNT_EVENT_SOURCES)
    if record:
        page.add_init_script("globalThis.FINRT_CONFIG = {recordEvents: true};")
    dashboard = Dashboard(page, server, output_dir)
    page.goto(f"{server.url}/?token={token}#file={file_id}")
    return dashboard


def roles(tabs: list[Dashboard]) -> list[str]:
    return [str(t.page.evaluate("() => window.finrt.stats.role")) for t in tabs]


def logged(tab: Dashboard, channel: str) -> list[str]:
    ids: list[str] = tab.page.evaluate(
        "ch => (window.finrt.stats.log || []).filter(([c]) => c === ch).map(([, id]) => id)",
        channel,
    )
    return ids


def test_ten_tabs_on_three_files_hold_one_stream_and_a_fetch_still_answers(
    start_api, env, user, make_file, contexts, output_dir
):
    server = start_api()
    files = [make_file(user, name=f"f{i}.csv") for i in range(3)]
    token = make_token(env, user)
    context = contexts()
    tabs = [open_tab(context, server, token, files[i % 3], output_dir) for i in range(10)]
    for tab in tabs:
        tab.wait_connected(timeout=30)
    for i, tab in enumerate(tabs):
        tab.wait_streaming(f"file:{files[i % 3]}", timeout=30)
    assert sorted(roles(tabs)) == ["follower"] * 9 + ["leader"]
    assert wait_streams(server.url, 1) == 1

    # Six connections per origin is all a browser allows: with one stream, the rest is free.
    status = tabs[9].page.evaluate(
        """async (token) => {
            const answer = fetch('/api/v1/files', {headers: {Authorization: `Bearer ${token}`}});
            const late = new Promise((resolve) => setTimeout(() => resolve('no answer'), 10000));
            return Promise.race([answer.then((r) => r.status), late]);
        }""",
        token,
    )
    assert status == 200

    for i, file_id in enumerate(files):
        publish_metric(file_id, "revenue", "money", f"{i + 1}0.00")
    for i, tab in enumerate(tabs):
        tab.wait_card("revenue", f"{i % 3 + 1}0.00", timeout=30)
    assert wait_streams(server.url, 1) == 1
    tabs[9].screenshot("tenth-tab")
    assert sum(tab.event_sources()["open"] for tab in tabs) == 1  # the leader's, only
    for tab in tabs:
        tab.assert_no_errors()


def test_closing_the_leader_at_20_events_a_second_loses_and_doubles_nothing(
    start_api, env, user, make_file, contexts, output_dir
):
    server = start_api()
    files = [make_file(user, name=f"f{i}.csv") for i in range(3)]
    token = make_token(env, user)
    context = contexts()
    tabs = [
        open_tab(context, server, token, files[i % 3], output_dir, record=True) for i in range(6)
    ]
    for i, tab in enumerate(tabs):
        tab.wait_streaming(f"file:{files[i % 3]}", timeout=30)
    leader = roles(tabs).index("leader")

    published: dict[int, list[str]] = {f: [] for f in files}
    stop = threading.Event()

    def publish() -> None:
        n = 0
        while not stop.is_set():
            file_id = files[n % 3]
            published[file_id].append(publish_metric(file_id, "revenue", "money", f"{n}.00"))
            n += 1
            time.sleep(0.05)  # 20 events a second

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        time.sleep(2)
        tabs[leader].page.close()
        time.sleep(3)
    finally:
        stop.set()
        publisher.join()
    rest = [t for i, t in enumerate(tabs) if i != leader]
    assert roles(rest).count("leader") == 1
    assert wait_streams(server.url, 1) == 1

    for tab in rest:
        file_id = int(tab.page.evaluate("() => location.hash.match(/file=(\\d+)/)[1]"))
        expected = published[file_id]
        tab.wait_for(
            "([ch, last]) => (window.finrt.stats.log || []).some(([c, id]) => c === ch && id === last)",
            [f"file:{file_id}", expected[-1]],
            timeout=30,
        )
        # Every tab was live before the first event: it has every one, once, in order.
        assert logged(tab, f"file:{file_id}") == expected
        tab.assert_no_errors()


def test_another_browser_has_its_own_leader(start_api, env, user, make_file, contexts, output_dir):
    server = start_api()
    file_id = make_file(user)
    token = make_token(env, user)
    first, second = contexts(), contexts()
    tabs_a = [open_tab(first, server, token, file_id, output_dir) for _ in range(2)]
    tabs_b = [open_tab(second, server, token, file_id, output_dir) for _ in range(2)]
    for tab in tabs_a + tabs_b:
        tab.wait_streaming(f"file:{file_id}", timeout=30)
    assert sorted(roles(tabs_a)) == ["follower", "leader"]
    assert sorted(roles(tabs_b)) == ["follower", "leader"]
    assert wait_streams(server.url, 2) == 2
    publish_metric(file_id, "revenue", "money", "3.00")
    for tab in tabs_a + tabs_b:
        tab.wait_card("revenue", "3.00")


def test_without_broadcast_channel_each_tab_keeps_its_own_stream(
    start_api, env, user, make_file, contexts, output_dir
):
    server = start_api()
    file_id = make_file(user)
    token = make_token(env, user)
    context = contexts()
    context.add_init_script("delete globalThis.BroadcastChannel;")
    tabs = [open_tab(context, server, token, file_id, output_dir) for _ in range(2)]
    for tab in tabs:
        tab.wait_streaming(f"file:{file_id}", timeout=30)
    assert roles(tabs) == ["solo", "solo"]
    assert wait_streams(server.url, 2) == 2
    publish_metric(file_id, "revenue", "money", "4.00")
    for tab in tabs:
        tab.wait_card("revenue", "4.00")
        tab.assert_no_errors()


def test_the_period_switch_changes_the_figures_and_they_stay_live(api, env, user, open_dashboard):
    file_id = processed_file(user, sample_csv(periods=8))
    token = make_token(env, user)
    headers = {"Authorization": f"Bearer {token}"}

    def snapshot(period: str) -> dict[str, str]:
        body = httpx.get(
            f"{api.url}/api/v1/files/{file_id}/dashboard",
            params={"period": period},
            headers=headers,
        ).json()
        return {m["name"]: m["value"] for m in body["metrics"] if m["value"] is not None}

    d = open_dashboard(api, user, token=token)
    page = d.page
    month = snapshot("month")
    d.wait_card("revenue", month["revenue"])
    page.select_option("#period-select", "quarter")
    quarter = snapshot("quarter")
    assert quarter["revenue"] != month["revenue"]
    for name, value in quarter.items():
        d.wait_card(name, value)
    assert "period=quarter" in page.evaluate("() => location.hash")
    assert "Q3" in d.card_texts()["revenue"]

    response = httpx.put(
        f"{api.url}/api/v1/files/{file_id}/parameters/tax_rate",
        json={"value": "0.4"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    changed = snapshot("quarter")
    assert changed["net_income"] != quarter["net_income"]
    d.wait_card("net_income", changed["net_income"])

    page.select_option("#period-select", "year")
    for name, value in snapshot("year").items():
        d.wait_card(name, value)
    d.screenshot("yearly")
    d.assert_no_errors()
