"""Inbox states against a real server: counts, seen, archive, list filters and snooze, each
change an event on ``user:{id}``; bad input is a 422 that says why and changes nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from models import session_scope
from services.inbox_states import wake_due
from tests.support import sse

NOTIFICATIONS = "/api/v1/notifications"


async def post(me: Any, path: str, body: Any = None) -> Any:
    return await me.client.post(f"{NOTIFICATIONS}{path}", json=body, headers=me.headers)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


async def test_counts_follow_priority_and_seen_marks_up_to_one_in_both_tabs(
    stream_url, token, notify, inbox, user
):
    me = inbox(user)
    async with sse(stream_url, token(user)) as tab1, sse(stream_url, token(user)) as tab2:
        old = notify(user, "old", priority="low")
        middle = notify(user, "middle", priority="urgent")
        new = notify(user, "new", priority="urgent")
        for tab in (tab1, tab2):
            await tab.events(3, 5)
        counts = (await me.get(f"{NOTIFICATIONS}/counts")).json()
        assert counts == {
            "unseen": 3,
            "unread": 3,
            "by_priority": {"low": 1, "normal": 0, "high": 0, "urgent": 2},
        }

        response = await post(me, "/seen", {"up_to": middle})
        assert response.status_code == 200, response.text
        assert response.json()["marked"] == 2
        assert response.json()["counts"]["unseen"] == 1
        for tab in (tab1, tab2):
            got = await tab.next_event(5)
            assert got.event == "notifications_seen"
            data = got.envelope["data"]
            assert (data["up_to"], data["count"], data["counts"]["unseen"]) == (middle, 2, 1)
            assert data["unread_count"] == 3

        again = await post(me, "/seen", {"up_to": middle})
        assert again.json()["marked"] == 0
        await tab2.no_event(0.5)
    page = await me.page()
    seen = {n["id"]: n["seen_at"] is not None for n in page["notifications"]}
    assert seen == {old: True, middle: True, new: False}
    # Seen is not read.
    assert page["unread_count"] == 3


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, "Field required"),
        ({}, "Field required"),
        ({"up_to": 7}, "string"),
        ({"up_to": "x" * 65}, "at most 64"),
        ({"up_to": "a", "extra": 1}, "Extra inputs"),
    ],
)
async def test_seen_refuses_a_bad_body_with_422(notify, inbox, user, body, expected):
    notify(user)
    response = await post(inbox(user), "/seen", body)
    assert response.status_code == 422
    assert expected in str(response.json()["detail"])
    assert (await inbox(user).get(f"{NOTIFICATIONS}/counts")).json()["unseen"] == 1


@pytest.mark.parametrize(
    ("path", "method", "raw"),
    [
        ("/seen", "POST", b'{"up_to": "\\ud800"}'),
        ("/preferences", "PUT", b'{"inbox": "\\udfff"}'),
    ],
)
async def test_a_lone_surrogate_in_a_body_is_a_422_not_a_500(
    notify, inbox, user, path, method, raw
):
    """Valid JSON (an escaped lone surrogate), an invalid value: the 422 echoes it, in ASCII."""
    notify(user)
    me = inbox(user)
    headers = {**me.headers, "Content-Type": "application/json"}
    response = await me.client.request(
        method, f"{NOTIFICATIONS}{path}", content=raw, headers=headers
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"], response.text
    assert (await me.client.get(f"{NOTIFICATIONS}/counts", headers=me.headers)).json()[
        "unseen"
    ] == 1


async def test_archive_leaves_the_list_and_the_other_tab_and_unarchive_brings_it_back(
    stream_url, token, notify, inbox, user
):
    me = inbox(user)
    async with sse(stream_url, token(user)) as tab1, sse(stream_url, token(user)) as tab2:
        keep, away = notify(user, "keep"), notify(user, "away", priority="high")
        for tab in (tab1, tab2):
            await tab.events(2, 5)

        response = await post(me, f"/{away}/archive")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["archived_at"] and body["unread_count"] == 1
        assert body["counts"]["by_priority"]["high"] == 0
        for tab in (tab1, tab2):
            got = await tab.next_event(5)
            assert got.event == "notification_archived"
            assert got.envelope["data"]["ids"] == [away]
            assert got.envelope["data"]["unread_count"] == 1
        assert (await post(me, f"/{away}/archive")).status_code == 200
        await tab2.no_event(0.5)

        assert [n["id"] for n in (await me.page())["notifications"]] == [keep]
        archived = await me.page(status="archived")
        assert [n["id"] for n in archived["notifications"]] == [away]
        assert {n["id"] for n in (await me.page(status="all"))["notifications"]} == {keep, away}

        response = await post(me, f"/{away}/unarchive")
        assert response.status_code == 200
        assert response.json()["archived_at"] is None and response.json()["unread_count"] == 2
        got = await tab2.next_event(5)
        assert got.event == "notification_unarchived"
        assert got.envelope["data"]["id"] == away and got.envelope["data"]["title"] == "away"
        assert (await post(me, f"/{away}/unarchive")).status_code == 200
        await tab2.no_event(0.5)
    assert (await me.page())["total"] == 2


async def test_archive_read_puts_away_only_the_read_ones(notify, inbox, user, stored_events):
    me = inbox(user)
    ids = [notify(user, f"n{i}") for i in range(4)]
    for nid in ids[:3]:
        assert (await me.read(nid)).status_code == 200
    response = await post(me, "/archive-read")
    assert response.status_code == 200
    assert response.json()["archived"] == 3 and response.json()["counts"]["unread"] == 1
    assert [n["id"] for n in (await me.page())["notifications"]] == [ids[3]]
    assert (await me.page(status="read"))["total"] == 0
    assert (await me.page(status="archived"))["total"] == 3
    archived = [e for e in stored_events(user) if e["type"] == "notification_archived"]
    assert len(archived) == 1 and set(archived[0]["data"]["ids"]) == set(ids[:3])
    assert (await post(me, "/archive-read")).json()["archived"] == 0


async def test_the_list_filters_by_status_type_and_priority(notify, inbox, user):
    me = inbox(user)
    report = notify(user, "report", type="report_ready", priority="normal")
    alert = notify(user, "alert", type="error_alert", priority="urgent")
    update = notify(user, "update", type="system_update", priority="low")
    await me.read(update)

    async def ids(**params: Any) -> set[str]:
        page = await me.page(**params)
        assert page["total"] == len(page["notifications"])
        return {n["id"] for n in page["notifications"]}

    assert await ids(status="unread") == {report, alert}
    assert await ids(status="read") == {update}
    assert await ids(type="error_alert") == {alert}
    assert await ids(priority="low") == {update}
    assert await ids(status="unread", priority="urgent") == {alert}
    assert await ids(status="archived") == set()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "snoozed"}, "'unread', 'read', 'archived' or 'all'"),
        ({"type": "party"}, "report_ready"),
        ({"priority": "asap"}, "'low', 'normal', 'high' or 'urgent'"),
    ],
)
async def test_a_bad_filter_is_422_with_the_choices(inbox, user, params, expected):
    response = await inbox(user).get(NOTIFICATIONS, **params)
    assert response.status_code == 422
    assert expected in str(response.json()["detail"])


async def test_others_notifications_are_404_on_every_new_route(notify, inbox, user, stored_events):
    mine = notify(user)
    before = stored_events(user)
    stranger = inbox(f"s{uuid.uuid4().hex[:8]}")
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    calls = [
        ("/seen", {"up_to": mine}),
        ("/seen", {"up_to": "not-a-uuid"}),
        (f"/{mine}/archive", None),
        (f"/{mine}/unarchive", None),
        (f"/{mine}/snooze", {"until": until}),
        (f"/{mine}/actions/0", None),
        ("/12/archive", None),
    ]
    for path, body in calls:
        response = await post(stranger, path, body)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "no such notification"}
    assert stored_events(user) == before
    page = await inbox(user).page()
    assert page["notifications"][0]["archived_at"] is None
    assert page["notifications"][0]["seen_at"] is None


def _in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, "Field required"),
        ({"until": "tomorrow"}, "datetime"),
        ({"until": 1796408330}, "ISO 8601"),
        ({"until": "1796411930"}, "ISO 8601"),
        ({"until": "2026-12-07T09:00:00"}, "timezone"),
        ({"until": "later", "x": 1}, "Extra inputs"),
        ("soon", "dictionary"),
    ],
)
async def test_a_bad_snooze_body_is_422(notify, inbox, user, body, expected):
    nid = notify(user)
    response = await post(inbox(user), f"/{nid}/snooze", body)
    assert response.status_code == 422
    assert expected in str(response.json()["detail"])
    assert (await inbox(user).page())["total"] == 1


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-60, "at least 60 seconds from now"),
        (10, "at least 60 seconds from now"),
        (91 * 86400, "at most 90 days from now"),
    ],
)
async def test_a_snooze_out_of_bounds_is_422_and_changes_nothing(
    notify, inbox, user, stored_events, seconds, expected
):
    nid = notify(user)
    before = stored_events(user)
    response = await post(inbox(user), f"/{nid}/snooze", {"until": _in(seconds)})
    assert response.status_code == 422
    assert response.json() == {"detail": f"until must be {expected}"}
    assert stored_events(user) == before
    assert (await inbox(user).page())["notifications"][0]["snoozed_until"] is None


async def test_a_snoozed_one_leaves_lists_and_counts_and_wakes_once_as_new(
    stream_url, token, notify, inbox, user
):
    me = inbox(user)
    async with sse(stream_url, token(user)) as tab1, sse(stream_url, token(user)) as tab2:
        stays = notify(user, "stays")
        nid = notify(user, "remind me", priority="high")
        for tab in (tab1, tab2):
            await tab.events(2, 5)
        await me.read(nid)
        await post(me, "/seen", {"up_to": nid})
        for tab in (tab1, tab2):
            await tab.events(2, 5)

        until = datetime.now(UTC) + timedelta(hours=1, minutes=30)
        response = await post(me, f"/{nid}/snooze", {"until": until.isoformat()})
        assert response.status_code == 200, response.text
        assert response.json()["snoozed_until"] == until.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for tab in (tab1, tab2):
            got = await tab.next_event(5)
            assert got.event == "notification_snoozed" and got.envelope["data"]["id"] == nid
        for status in (None, "all", "archived", "read"):
            params = {"status": status} if status else {}
            assert nid not in {n["id"] for n in (await me.page(**params))["notifications"]}
        counts = (await me.get(f"{NOTIFICATIONS}/counts")).json()
        # "stays" is older, so seen with it, but not read.
        assert (counts["unread"], counts["unseen"]) == (1, 0)

        with session_scope() as session:
            assert wake_due(session, until - timedelta(seconds=1)) == []
        with session_scope() as session:
            assert wake_due(session, until + timedelta(seconds=1)) == [nid]
        with session_scope() as session:
            assert wake_due(session, until + timedelta(seconds=2)) == []
        for tab in (tab1, tab2):
            got = await tab.next_event(5)
            assert got.event == "notification"
            data = got.envelope["data"]
            assert data["id"] == nid and data["woken_from_snooze"] is True
            assert (data["is_read"], data["seen_at"], data["snoozed_until"]) == (False, None, None)
            assert data["unread_count"] == 2
        await tab2.no_event(0.5)
    page = await me.page()
    assert {n["id"] for n in page["notifications"]} == {stays, nid}
    assert page["unread_count"] == 2


async def test_a_dismissed_or_expired_one_never_comes_back(notify, inbox, user, stored_events):
    """Dismiss is for good, expiry too: no snooze, unarchive or wake-up brings either back."""
    me = inbox(user)
    gone = notify(user, "binned", priority="urgent")
    archived = notify(user, "archived then binned")
    snoozed = notify(user, "snoozed then binned")
    soon = datetime.now(UTC) + timedelta(hours=1)
    assert (await post(me, f"/{archived}/archive")).status_code == 200
    assert (await post(me, f"/{snoozed}/snooze", {"until": soon.isoformat()})).status_code == 200
    for nid in (gone, archived, snoozed):
        assert (await post(me, f"/{nid}/dismiss")).status_code == 200
    # Snoozed past its expiry: it has vanished by the time the snooze ends.
    expiring = notify(user, "expires", expires_at=datetime.now(UTC) + timedelta(minutes=30))
    assert (await post(me, f"/{expiring}/snooze", {"until": soon.isoformat()})).status_code == 200
    before = stored_events(user)
    snooze = await post(me, f"/{gone}/snooze", {"until": soon.isoformat()})
    unarchive = await post(me, f"/{archived}/unarchive")
    with session_scope() as session:
        woken = wake_due(session, soon + timedelta(seconds=1))
    assert snooze.status_code == 200 and snooze.json()["snoozed_until"] is None
    assert unarchive.status_code == 200 and unarchive.json()["archived_at"] is not None
    assert woken == []
    assert stored_events(user) == before, "nothing changed: nothing published"
    page = await me.page(status="all")
    assert not {gone, archived, snoozed, expiring} & {n["id"] for n in page["notifications"]}


async def test_many_concurrent_writes_change_once_and_publish_once(
    notify, inbox, user, stored_events
):
    me = inbox(user)
    ids = [notify(user, f"n{i}") for i in range(3)]
    until = _in(3600)
    calls = (
        [post(me, f"/{ids[0]}/archive") for _ in range(15)]
        + [post(me, "/seen", {"up_to": ids[2]}) for _ in range(15)]
        + [post(me, f"/{ids[1]}/snooze", {"until": until}) for _ in range(15)]
    )
    responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200] * len(calls)
    # 2 when the snooze came first (a snoozed one is not listed, so not seen).
    assert sum(r.json()["marked"] for r in responses[15:30]) in (2, 3)
    kinds = types(stored_events(user))
    assert kinds.count("notification_archived") == 1
    assert kinds.count("notifications_seen") >= 1
    assert kinds.count("notification_snoozed") == 1
    counts = (await me.get(f"{NOTIFICATIONS}/counts")).json()
    assert counts == {
        "unseen": 0,
        "unread": 1,
        "by_priority": {"low": 0, "normal": 1, "high": 0, "urgent": 0},
    }


async def test_concurrent_archive_read_and_unarchive_never_fail(notify, inbox, user, stored_events):
    me = inbox(user)
    ids = [notify(user, f"n{i}") for i in range(6)]
    for nid in ids[:4]:
        await me.read(nid)
    calls = [post(me, "/archive-read") for _ in range(10)]
    calls += [post(me, f"/{nid}/unarchive") for nid in ids[:4] for _ in range(2)]
    calls += [post(me, "/seen", {"up_to": ids[-1]}) for _ in range(5)]
    responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200] * len(calls)
    listed = {n["id"] for n in (await me.page())["notifications"]}
    archived = {n["id"] for n in (await me.page(status="archived"))["notifications"]}
    assert listed | archived == set(ids) and not listed & archived
    assert archived <= set(ids[:4])  # only read ones are archived
    # However they interleaved, the events tell each change once: archived minus unarchived
    # is 1 for what ends archived, 0 for the rest.
    events = stored_events(user)
    for nid in ids:
        ups = sum(nid in e["data"]["ids"] for e in events if e["type"] == "notification_archived")
        downs = sum(
            e["data"]["id"] == nid for e in events if e["type"] == "notification_unarchived"
        )
        assert ups - downs == (1 if nid in archived else 0), nid
    assert (await me.get(f"{NOTIFICATIONS}/counts")).json()["unseen"] == 0
