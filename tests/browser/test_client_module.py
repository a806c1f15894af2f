"""The browser client ``/static/finrt.js`` in Chromium, used by a bare page as any app would:
events by type, status, pause and resume, reset, auth_expired, polling, and the React example
of docs/browser-client.md rendered with the vendored React."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

import streams
from domain.sample import sample_csv
from tests.browser.client_harness import js, open_harness, serve_harness, wait_streams
from tests.browser.test_live_dashboard import metric, publish_metric
from tests.processed_files import processed_file
from tests.support import make_token

pytestmark = pytest.mark.browser


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    made = browser.new_context()
    yield made
    made.close()


def wait(page: Any, script: str, arg: Any = None, timeout: float = 20.0) -> Any:
    try:
        return page.wait_for_function(script, arg=arg, timeout=timeout * 1000).json_value()
    except Exception:
        text = page.evaluate("() => document.body.innerText")
        raise AssertionError(
            f"{script} ({arg!r}) never held; page: {text!r}; errors: "
            f"{getattr(page, 'harness_errors', None)}"
        ) from None


def file_ids(page: Any, channel: str) -> list[str]:
    ids: list[str] = page.evaluate(
        "ch => window.log.filter(e => e.channel === ch && e.type !== 'reset').map(e => e.id)",
        channel,
    )
    return ids


def test_the_module_and_its_declarations_are_served(api):
    module = httpx.get(f"{api.url}/static/finrt.js")
    assert module.status_code == 200
    assert "javascript" in module.headers["content-type"]
    assert "export function connect" in module.text
    for part in ("finrt-source.js", "finrt-tab.js", "finrt-share.js"):
        assert httpx.get(f"{api.url}/static/{part}").status_code == 200, part
    types = httpx.get(f"{api.url}/static/finrt.d.ts")
    assert types.status_code == 200
    assert types.headers["content-type"].startswith("application/typescript")
    assert "export function connect(options: ConnectOptions): Connection;" in types.text


def test_events_by_type_in_order_and_pause_resume_loses_nothing(api, env, user, make_file, context):
    file_id = make_file(user)
    channel = f"file:{file_id}"
    before = publish_metric(file_id, "revenue", "money", "1.00")
    page = open_harness(context, serve_harness(context, api.url))
    page.evaluate(
        f"() => window.start({{channels: [{js(channel)}], token: {js(make_token(env, user))},"
        f" positions: {{{js(channel)}: {js(before)}}}}})"
    )
    wait(page, "() => window.conn.status === 'live'")
    assert page.evaluate("() => window.conn.role") == "leader"

    sent = [publish_metric(file_id, "revenue", "money", f"{i}.00") for i in range(2, 6)]
    sent.append(streams.publish(channel, "parameter_update", {"name": "tax_rate"}))
    wait(page, "n => window.log.length >= n", len(sent))
    assert file_ids(page, channel) == sent  # after the given position only, in order
    assert page.evaluate("() => window.byType") == sent[:-1]

    page.evaluate("() => window.conn.pause()")
    wait(page, "() => window.conn.status === 'paused'")
    while_paused = [publish_metric(file_id, "revenue", "money", f"{i}.00") for i in range(6, 9)]
    page.wait_for_timeout(500)
    assert file_ids(page, channel) == sent  # nothing while paused
    page.evaluate("() => window.conn.resume()")
    wait(page, "() => window.conn.status === 'live'")
    after = publish_metric(file_id, "revenue", "money", "9.00")
    wait(page, "n => window.log.length >= n", len(sent) + 4)
    page.wait_for_timeout(300)
    assert file_ids(page, channel) == sent + while_paused + [after]

    page.evaluate("() => window.conn.close()")
    states = [s for s, _ in page.evaluate("() => window.statuses")]
    assert states[0] == "connecting"
    assert "live" in states and "paused" in states
    assert states[-1] == "closed"
    assert not page.harness_errors


def test_a_channel_without_position_starts_at_its_newest_event_then_says_so(
    api, env, user, context
):
    channel = f"user:{user}"
    old = streams.publish(channel, "notification_read", {"unread_count": 3})
    page = open_harness(context, serve_harness(context, api.url))
    page.evaluate(
        f"() => window.start({{channels: [{js(channel)}], token: {js(make_token(env, user))}}})"
    )
    wait(page, "() => window.conn.status === 'live'")
    assert page.evaluate("() => window.resets") == [[channel, "start"]]
    assert page.evaluate("() => window.conn.positions")[channel] == old
    new = streams.publish(channel, "notification_read", {"unread_count": 2})
    wait(page, "() => window.log.length >= 1")
    page.wait_for_timeout(300)
    assert [e["id"] for e in page.evaluate("() => window.log")] == [new]


def test_a_reset_reaches_the_refetch_hook(api, env, user, make_file, context):
    file_id = make_file(user)
    channel = f"file:{file_id}"
    publish_metric(file_id, "revenue", "money", "1.00")  # the channel has history
    page = open_harness(context, serve_harness(context, api.url))
    page.evaluate(
        f"() => window.start({{channels: [{js(channel)}], token: {js(make_token(env, user))},"
        f" positions: {{{js(channel)}: '1-0'}}}})"
    )
    wait(page, "() => window.resets.length >= 1")
    # The channel holds its whole history and began after 1-0: lost before it, not trimmed.
    assert page.evaluate("() => window.resets") == [[channel, "history_lost"]]
    assert page.evaluate("() => window.log[0].type") == "reset"
    later = publish_metric(file_id, "revenue", "money", "2.00")
    wait(page, "id => window.log.some(e => e.id === id)", later)


def test_auth_expired_asks_the_refresh_hook_and_carries_on(api, env, user, make_file, context):
    file_id = make_file(user)
    channel = f"file:{file_id}"
    start = publish_metric(file_id, "revenue", "money", "1.00")
    page = open_harness(context, serve_harness(context, api.url))
    page.evaluate(f"() => window.nextToken = {js(make_token(env, user, 3600))}")
    page.evaluate(
        f"() => window.start({{channels: [{js(channel)}], token: {js(make_token(env, user, 3))},"
        f" positions: {{{js(channel)}: {js(start)}}}, refresh: true}})"
    )
    wait(page, "() => window.conn.status === 'live'")
    wait(page, "() => window.log.some(e => e.type === 'auth_expired')", timeout=30)
    wait(page, "() => window.refreshCalls >= 1", timeout=30)
    later = publish_metric(file_id, "revenue", "money", "2.00")
    wait(page, "id => window.log.some(e => e.id === id)", later, timeout=30)
    assert page.evaluate("() => window.expired") == 0
    assert page.evaluate("() => window.conn.status") == "live"


def test_auth_expired_without_refresh_closes(api, env, user, make_file, context):
    file_id = make_file(user)
    channel = f"file:{file_id}"
    page = open_harness(context, serve_harness(context, api.url))
    page.evaluate(
        f"() => window.start({{channels: [{js(channel)}], token: {js(make_token(env, user, 3))}}})"
    )
    wait(page, "() => window.conn.status === 'live'")
    wait(page, "() => window.expired === 1", timeout=30)
    assert page.evaluate("() => window.conn.status") == "closed"
    assert page.evaluate("() => window.log.at(-1).type") == "auth_expired"


def test_polling_when_streams_are_refused(api, env, user, make_file, context):
    file_id = make_file(user)
    channel = f"file:{file_id}"
    start = publish_metric(file_id, "revenue", "money", "1.00")
    context.route("**/api/v1/stream?**", lambda route: route.abort())
    page = open_harness(context, serve_harness(context, api.url))
    timing = {"backoffBaseMs": 100, "pollMs": 300, "probeMs": 60000}
    page.evaluate(
        f"() => window.start({{channels: [{js(channel)}], token: {js(make_token(env, user))},"
        f" positions: {{{js(channel)}: {js(start)}}}, timing: {js(timing)}}})"
    )
    wait(page, "() => window.conn.status === 'polling'")
    sent = [publish_metric(file_id, "revenue", "money", f"{i}.00") for i in range(2, 5)]
    wait(page, "n => window.log.length >= n", len(sent))
    assert file_ids(page, channel) == sent


@pytest.mark.parametrize("positioned", [True, False], ids=["with-positions", "without"])
def test_a_channel_the_api_refuses_is_dropped_and_the_others_go_on(
    api, env, user, make_file, context, positioned
):
    """An app asks for a file its user may no longer read (removed while the page was closed):
    the stream and polling are refused (403) for it. The client drops that channel with an
    `access_revoked`, instead of retrying it for ever with everything else held up."""
    theirs = f"file:{make_file(f'{user}-owner')}"
    mine = f"user:{user}"
    first = streams.publish(mine, "notification_read", {"unread_count": 1})
    options: dict[str, Any] = {
        "channels": [mine, theirs],
        "token": make_token(env, user),
        "timing": {"backoffBaseMs": 100, "pollMs": 300, "probeMs": 1500},
    }
    if positioned:
        options["positions"] = {mine: first, theirs: "1-0"}
    page = open_harness(context, serve_harness(context, api.url))
    page.evaluate(f"() => window.start({js(options)})")
    wait(
        page, "ch => window.log.some(e => e.type === 'access_revoked' && e.channel === ch)", theirs
    )
    revoked = page.evaluate("() => window.log.find(e => e.type === 'access_revoked')")
    assert revoked["data"]["channel"] == theirs and "member" in revoked["data"]["reason"]
    wait(page, "() => window.conn.status === 'live'")  # the stream, without the file
    later = streams.publish(mine, "notification_read", {"unread_count": 0})
    wait(page, "id => window.log.some(e => e.id === id)", later)
    assert page.evaluate("() => window.log.filter(e => e.type === 'access_revoked').length") == 1


def test_the_react_example_renders_live_figures_by_period(api, env, user, context):
    file_id = processed_file(user, sample_csv(periods=8))
    token = make_token(env, user)
    usage = (
        example_usage()
        .replace("fileId: 7", f"fileId: {file_id}")
        .replace("(root)", '(document.getElementById("root"))')
    )
    module = (
        'import { NotificationProvider, useNotifications, useRealtimeDashboard } from "/__harness/example.js";\n'
        f"const token = {js(token)};\nconst h = React.createElement;\n{usage}"
    )
    page = open_harness(context, serve_harness(context, api.url, react=True, module=module))
    headers = {"Authorization": f"Bearer {token}"}

    def snapshot(period: str) -> dict[str, str]:
        body = httpx.get(
            f"{api.url}/api/v1/files/{file_id}/dashboard",
            params={"period": period},
            headers=headers,
        ).json()
        # As the example prints them: JavaScript writes a missing value as "null".
        return {
            m["name"]: f"{m['label']} {m['period']}: {'null' if m['value'] is None else m['value']}"
            for m in body["metrics"]
        }

    def shown() -> str:
        text: str = page.inner_text("#root")
        return text

    month = snapshot("month")
    wait(page, "t => document.body.innerText.includes(t)", month["revenue"])
    unread = httpx.get(f"{api.url}/api/v1/notifications", headers=headers).json()["unread_count"]
    wait(page, "t => document.body.innerText.includes(t)", f"live, {unread} unread")

    # Live: a monthly metric event and a notification.
    streams.publish(
        f"file:{file_id}",
        "metric_update",
        metric("revenue", "money", "4242.00", period="2026-08"),
        key="revenue",
    )
    wait(page, "() => document.body.innerText.includes('Revenue 2026-08: 4242.00')")
    note = {"id": "n1", "title": "Hi", "unread_count": unread + 1}
    streams.publish(f"user:{user}", "notification", note)
    wait(page, "t => document.body.innerText.includes(t)", f"live, {unread + 1} unread")

    page.select_option("select", "quarter")
    quarter = snapshot("quarter")
    assert quarter["revenue"] != month["revenue"]
    for text in quarter.values():
        wait(page, "t => document.body.innerText.includes(t)", text)

    # Still live by quarter: a parameter changes the figures through the real route.
    response = httpx.put(
        f"{api.url}/api/v1/files/{file_id}/parameters/tax_rate",
        json={"value": "0.5"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    changed = snapshot("quarter")
    assert changed["net_income"] != quarter["net_income"]
    wait(page, "t => document.body.innerText.includes(t)", changed["net_income"])
    assert "2026-Q" in shown()
    assert Decimal(changed["net_income"].rsplit(" ", 1)[1]) > 0
    assert not page.harness_errors


def example_usage() -> str:
    from tests.browser.client_harness import example

    return example("react-usage")


def test_a_follower_catches_up_from_history_and_pauses_on_its_own(
    start_api, env, user, make_file, context
):
    server = start_api()
    file_id = make_file(user)
    channel = f"file:{file_id}"
    token = make_token(env, user)
    start = publish_metric(file_id, "revenue", "money", "0.00")
    url = serve_harness(context, server.url)
    options = f"{{channels: [{js(channel)}], token: {js(token)}, positions: {{{js(channel)}: {js(start)}}}}}"
    first = open_harness(context, url)
    first.evaluate(f"() => window.start({options})")
    wait(first, "() => window.conn.status === 'live'")
    early = [publish_metric(file_id, "revenue", "money", f"{i}.00") for i in range(1, 4)]
    wait(first, "n => window.log.length >= n", len(early))

    # Joins with an older position than the leader's stream: history fills the gap.
    second = open_harness(context, url)
    second.evaluate(f"() => window.start({options})")
    wait(second, "() => window.conn.status === 'live'")
    assert [
        first.evaluate("() => window.conn.role"),
        second.evaluate("() => window.conn.role"),
    ] == [
        "leader",
        "follower",
    ]
    wait(second, "n => window.log.length >= n", len(early))
    assert file_ids(second, channel) == early

    second.evaluate("() => window.conn.pause()")
    wait(second, "() => window.conn.status === 'paused'")
    assert first.evaluate("() => window.conn.status") == "live"
    later = [publish_metric(file_id, "revenue", "money", f"{i}.00") for i in range(4, 7)]
    wait(first, "n => window.log.length >= n", len(early) + len(later))
    assert file_ids(second, channel) == early
    second.evaluate("() => window.conn.resume()")
    last = publish_metric(file_id, "revenue", "money", "7.00")
    wait(second, "n => window.log.length >= n", len(early) + len(later) + 1)
    wait(first, "n => window.log.length >= n", len(early) + len(later) + 1)
    second.wait_for_timeout(300)
    assert file_ids(second, channel) == early + later + [last]
    assert file_ids(first, channel) == early + later + [last]
    assert wait_streams(server.url, 1) == 1
    assert not first.harness_errors and not second.harness_errors


def test_a_ticket_alone_connects_a_tab_of_its_own(api, env, user, make_file, context):
    file_id = make_file(user)
    channel = f"file:{file_id}"
    start = publish_metric(file_id, "revenue", "money", "1.00")
    headers = {"Authorization": f"Bearer {make_token(env, user)}"}
    ticket = httpx.post(f"{api.url}/api/v1/stream/tickets", headers=headers).json()["ticket"]
    page = open_harness(context, serve_harness(context, api.url))
    page.evaluate(
        f"() => window.start({{channels: [{js(channel)}], ticket: {js(ticket)},"
        f" positions: {{{js(channel)}: {js(start)}}}}})"
    )
    wait(page, "() => window.conn.status === 'live'")
    assert page.evaluate("() => window.conn.role") == "solo"  # no token: no user to share with
    sent = [publish_metric(file_id, "revenue", "money", f"{i}.00") for i in range(2, 4)]
    wait(page, "n => window.log.length >= n", len(sent))
    assert file_ids(page, channel) == sent


def test_a_leader_told_it_freezes_steps_down_and_nothing_is_lost_or_doubled(
    start_api, env, user, make_file, context
):
    server = start_api()
    file_id = make_file(user)
    channel = f"file:{file_id}"
    start = publish_metric(file_id, "revenue", "money", "0.00")
    url = serve_harness(context, server.url)
    options = (
        f"{{channels: [{js(channel)}], token: {js(make_token(env, user))},"
        f" positions: {{{js(channel)}: {js(start)}}}}}"
    )
    first = open_harness(context, url)
    first.evaluate(f"() => window.start({options})")
    wait(first, "() => window.conn.role === 'leader' && window.conn.status === 'live'")
    second = open_harness(context, url)
    second.evaluate(f"() => window.start({options})")
    wait(second, "() => window.conn.status === 'live'")

    # Chrome sends `freeze` before it freezes a background tab (the Page Lifecycle API); headless
    # Chromium does not freeze pages, so the test sends the event the browser would.
    first.evaluate("() => document.dispatchEvent(new Event('freeze'))")
    wait(second, "() => window.conn.role === 'leader' && window.conn.status === 'live'")
    sent = [publish_metric(file_id, "revenue", "money", f"{i}.00") for i in range(1, 4)]
    wait(second, "n => window.log.length >= n", len(sent))
    assert wait_streams(server.url, 1) == 1

    first.evaluate("() => document.dispatchEvent(new Event('resume'))")
    sent.append(publish_metric(file_id, "revenue", "money", "4.00"))
    wait(first, "n => window.log.length >= n", len(sent))
    second.wait_for_timeout(300)
    assert file_ids(first, channel) == sent
    assert file_ids(second, channel) == sent
    assert first.evaluate("() => window.conn.role") == "follower"


def test_a_client_started_without_positions_gets_the_presence_snapshot(
    api, env, user, make_file, context
):
    file_id = make_file(user)
    channel = f"file:{file_id}"
    page = open_harness(context, serve_harness(context, api.url))
    page.evaluate(
        f"() => window.start({{channels: [{js(channel)}], token: {js(make_token(env, user))}}})"
    )
    wait(page, "() => window.presence.some(e => e.type === 'presence')")
    snapshot = page.evaluate("() => window.presence.find(e => e.type === 'presence').data")
    assert snapshot["file_id"] == file_id and snapshot["count"] == 1, snapshot
