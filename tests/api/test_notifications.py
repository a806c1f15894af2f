"""The notification inbox against a real server: REST calls, live events on ``user:{id}``,
and ``finrt notify``."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from models import Notification, session_scope
from services.notifications import mark_read, purge_expired
from services.notify import create_notification
from tests.support import BIN, ROOT, sse


async def test_a_notification_reaches_its_users_stream_and_nobody_elses(
    stream_url, token, notify, inbox
):
    alice, bob = f"a{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    async with sse(stream_url, token(alice)) as a, sse(stream_url, token(bob)) as b:
        nid = notify(alice, "Q3 report ready", priority="high", data={"report_id": 7})
        got = await a.next_event(5)
        assert got.event == "notification"
        envelope = got.envelope
        assert envelope["channel"] == f"user:{alice}"
        page = await inbox(alice).page()
        assert [n["id"] for n in page["notifications"]] == [nid]
        # The event's data is the notification exactly as the REST API shows it, plus the count.
        assert envelope["data"] == {**page["notifications"][0], "unread_count": 1}
        assert envelope["data"]["data"] == {"report_id": 7}
        await b.no_event(0.5)
    bobs = await inbox(bob).page()
    assert bobs["notifications"] == [] and bobs["total"] == 0 and bobs["unread_count"] == 0
    assert await inbox(bob).unread_count() == 0
    assert (await inbox(bob).read(nid)).status_code == 404


async def test_marking_one_read_in_one_tab_updates_the_other(
    stream_url, token, notify, inbox, user
):
    async with sse(stream_url, token(user)) as tab1, sse(stream_url, token(user)) as tab2:
        first, _second = notify(user, "first"), notify(user, "second")
        for tab in (tab1, tab2):
            assert [e.event for e in await tab.events(2, 5)] == ["notification"] * 2

        response = await inbox(user).read(first)
        assert response.status_code == 200
        body = response.json()
        assert body["id"] == first and body["is_read"] is True and body["unread_count"] == 1
        for tab in (tab1, tab2):
            got = await tab.next_event(5)
            assert got.event == "notification_read"
            assert got.envelope["data"] == {
                "id": first,
                "read_at": body["read_at"],
                "unread_count": 1,
            }

        again = await inbox(user).read(first)
        assert again.status_code == 200
        assert again.json()["read_at"] == body["read_at"] and again.json()["unread_count"] == 1
        await tab2.no_event(0.5)
    assert await inbox(user).unread_count() == 1


async def test_dismissing_in_one_tab_updates_the_other(stream_url, token, notify, inbox, user):
    async with sse(stream_url, token(user)) as tab1, sse(stream_url, token(user)) as tab2:
        keep, hide = notify(user, "keep"), notify(user, "hide")
        for tab in (tab1, tab2):
            await tab.events(2, 5)

        response = await inbox(user).dismiss(hide)
        assert response.status_code == 200
        assert response.json()["is_dismissed"] is True and response.json()["unread_count"] == 1
        got = await tab2.next_event(5)
        assert got.event == "notification_dismissed"
        assert got.envelope["data"] == {"id": hide, "unread_count": 1}

        assert (await inbox(user).dismiss(hide)).status_code == 200
        await tab2.no_event(0.5)
    page = await inbox(user).page()
    assert [n["id"] for n in page["notifications"]] == [keep]
    assert page["total"] == 1 and page["unread_count"] == 1


async def test_mark_all_read_in_one_tab_updates_the_other(stream_url, token, notify, inbox, user):
    async with sse(stream_url, token(user)) as tab1, sse(stream_url, token(user)) as tab2:
        for i in range(3):
            notify(user, f"n{i}")
        for tab in (tab1, tab2):
            await tab.events(3, 5)

        response = await inbox(user).read_all()
        assert response.status_code == 200
        assert response.json() == {"marked": 3, "unread_count": 0}
        for tab in (tab1, tab2):
            got = await tab.next_event(5)
            assert got.event == "notifications_read_all"
            assert got.envelope["data"] == {"count": 3, "unread_count": 0}

        again = await inbox(user).read_all()
        assert again.json() == {"marked": 0, "unread_count": 0}
        await tab2.no_event(0.5)
    page = await inbox(user).page()
    assert page["total"] == 3 and page["unread_count"] == 0
    assert all(n["is_read"] and n["read_at"] for n in page["notifications"])


async def test_the_same_dedupe_key_stores_one_row_and_publishes_one_event(
    stream_url, token, notify, inbox, user
):
    async with sse(stream_url, token(user)) as stream:
        first = notify(user, "Report 42 ready", dedupe_key="report_ready:42")
        again = notify(user, "Report 42 ready", dedupe_key="report_ready:42")
        assert again == first
        got = await stream.next_event(5)
        assert got.event == "notification" and got.envelope["data"]["id"] == first
        await stream.no_event(0.5)
    history = await inbox(user).history()
    assert [(e["type"], e["data"]["id"]) for e in history] == [("notification", first)]
    assert (await inbox(user).page())["total"] == 1


async def test_a_rolled_back_transaction_publishes_nothing(stream_url, token, notify, inbox, user):
    async with sse(stream_url, token(user)) as stream:
        with pytest.raises(RuntimeError), session_scope() as session:
            create_notification(session, user, "error_alert", "lost", "rolled back")
            raise RuntimeError("the task failed after creating it")
        await stream.no_event(1.0)
        assert await inbox(user).history() == []
        assert (await inbox(user).page())["total"] == 0
        # The stream was live all along: a committed one arrives.
        kept = notify(user, "kept")
        assert (await stream.next_event(5)).envelope["data"]["id"] == kept


async def test_120_notifications_page_newest_first(inbox, user):
    with session_scope() as session:
        ids = [
            create_notification(session, user, "system_update", f"n{i}", "m").id for i in range(120)
        ]
    with session_scope() as session:
        for nid in ids[:30]:
            mark_read(session, user, nid)
    me = inbox(user)

    pages = [await me.page(page=p, limit=50) for p in (1, 2, 3, 4)]
    assert [len(p["notifications"]) for p in pages] == [50, 50, 20, 0]
    for number, page in enumerate(pages, start=1):
        assert page["total"] == 120 and page["unread_count"] == 90
        assert page["page"] == number and page["limit"] == 50
    listed = [n["id"] for p in pages for n in p["notifications"]]
    assert listed == ids[::-1]
    created = [n["created_at"] for p in pages for n in p["notifications"]]
    assert created == sorted(created, reverse=True)

    unread = await me.page(unread_only="true", limit=100)
    assert unread["total"] == 90 and unread["unread_count"] == 90
    assert [n["id"] for n in unread["notifications"]] == ids[:29:-1]
    assert not any(n["is_read"] for n in unread["notifications"])
    assert (await me.page())["limit"] == 50
    assert await me.unread_count() == 90


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": -1},
        {"limit": "ten"},
        {"page": 0},
        {"page": -3},
        {"unread_only": "maybe"},
    ],
)
async def test_bad_paging_parameters_are_refused(inbox, user, params):
    response = await inbox(user).get("/api/v1/notifications", **params)
    assert response.status_code == 422
    assert response.json()["detail"]


async def test_another_users_notification_or_a_non_uuid_is_404_and_changes_nothing(
    notify, inbox, user
):
    mine = notify(user)
    before = await inbox(user).history()
    stranger = inbox(f"s{uuid.uuid4().hex[:8]}")
    for path in (f"{mine}/read", f"{mine}/dismiss", "not-a-uuid/read", "12/dismiss"):
        response = await stranger.post(f"/api/v1/notifications/{path}")
        assert response.status_code == 404, path
        assert response.json() == {"detail": "no such notification"}
    for path in ("not-a-uuid/read", f"{uuid.uuid4()}/dismiss"):
        assert (await inbox(user).post(f"/api/v1/notifications/{path}")).status_code == 404
    page = await inbox(user).page()
    assert page["notifications"][0]["is_read"] is False
    assert page["notifications"][0]["is_dismissed"] is False
    assert page["unread_count"] == 1
    assert await inbox(user).history() == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/notifications"),
        ("GET", "/api/v1/notifications/unread-count"),
        ("POST", "/api/v1/notifications/mark-all-read"),
        ("POST", f"/api/v1/notifications/{uuid.uuid4()}/read"),
        ("POST", f"/api/v1/notifications/{uuid.uuid4()}/dismiss"),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-jwt"])
async def test_without_a_valid_token_every_call_is_401(api, method, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=api.url) as client:
        response = await client.request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"]


async def test_expired_notifications_vanish_at_once_and_purge_deletes_them(notify, inbox, user):
    expires_at = datetime.now(UTC) + timedelta(seconds=2)
    short = notify(user, "flash sale", type="system_update", expires_at=expires_at)
    lasting = notify(user, "stays")
    page = await inbox(user).page()
    assert page["total"] == 2 and page["unread_count"] == 2
    short_public = next(n for n in page["notifications"] if n["id"] == short)
    assert short_public["expires_at"] == expires_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.05)
    page = await inbox(user).page()
    assert [n["id"] for n in page["notifications"]] == [lasting]
    assert page["total"] == 1 and page["unread_count"] == 1
    assert await inbox(user).unread_count() == 1
    assert (await inbox(user).read(short)).status_code == 404

    with session_scope() as session:
        assert purge_expired(session) >= 1
    with session_scope() as session:
        assert session.get(Notification, short) is None
        assert session.get(Notification, lasting) is not None


async def _finrt(env, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "finrt"),
        *args,
        env=env,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_finrt_notify_creates_one_and_prints_its_id(env, stream_url, token, inbox, user):
    args = ["notify", user, "--type", "system_update", "--title", "Maintenance"]
    args += ["--message", "Tonight 22:00 UTC", "--priority", "urgent", "--dedupe-key", "m-1"]
    async with sse(stream_url, token(user)) as stream:
        code, out, err = await _finrt(env, *args)
        assert code == 0, err
        nid = out.strip()
        assert str(uuid.UUID(nid)) == nid
        got = await stream.next_event(5)
        assert got.event == "notification"
        data = got.envelope["data"]
        assert (data["id"], data["type"], data["priority"]) == (nid, "system_update", "urgent")
        assert (data["title"], data["message"]) == ("Maintenance", "Tonight 22:00 UTC")

        code, again, _ = await _finrt(env, *args)
        assert code == 0 and again.strip() == nid
        await stream.no_event(0.3)
    assert [n["id"] for n in (await inbox(user).page())["notifications"]] == [nid]


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--type", "party_invite", "type must be one of report_ready, file_processed"),
        ("--priority", "asap", "priority must be one of low, normal, high, urgent"),
    ],
)
async def test_finrt_notify_refuses_a_bad_type_or_priority(
    env, inbox, user, option, value, expected
):
    args = {"--type": "system_update", "--priority": "normal", option: value}
    code, out, err = await _finrt(
        env,
        "notify",
        user,
        "--title",
        "t",
        "--message",
        "m",
        *[x for kv in args.items() for x in kv],
    )
    assert code == 2
    assert out == ""
    assert expected in err and err.startswith("error: ")
    assert "Traceback" not in err
    assert (await inbox(user).page())["total"] == 0


async def test_a_notification_too_large_for_its_event_is_refused_and_one_just_under_arrives(
    stream_url, token, notify, inbox, user
):
    """A notification whose ``notification`` event could never be published (over
    FINRT_MAX_EVENT_BYTES) is refused to its producer, and nothing is stored: it used to be
    stored and listed but never delivered live (no toast), with only a line in the log."""
    from core.settings import get_settings

    limit = get_settings().max_event_bytes
    with pytest.raises(ValueError, match="FINRT_MAX_EVENT_BYTES"):
        notify(user, "too long", type="system_update", message="x" * limit)
    with pytest.raises(ValueError, match="FINRT_MAX_EVENT_BYTES"):
        notify(user, "too much data", type="system_update", data={"rows": ["é" * 100] * 400})
    assert (await inbox(user).page())["total"] == 0
    async with sse(stream_url, token(user)) as tab:
        nid = notify(user, "long", type="system_update", message="y" * (limit - 4096))
        got = await tab.next_event(5)
    assert (got.event, got.envelope["data"]["id"]) == ("notification", nid)


async def test_a_small_event_limit_still_lets_a_short_notification_through(
    env, stream_url, token, inbox, user
):
    """The size check builds the largest event the notification can travel in and measures
    it: it used to allow a fixed 2,048 bytes for everything around the text, so an operator's
    FINRT_MAX_EVENT_BYTES of 2048 refused every notification, however short."""
    small = {**env, "FINRT_MAX_EVENT_BYTES": "2048"}
    args = ["notify", user, "--type", "system_update", "--title", "Maintenance"]
    async with sse(stream_url, token(user)) as stream:
        code, out, err = await _finrt(small, *args, "--message", "Tonight 22:00 UTC")
        assert code == 0, err
        got = await stream.next_event(5)
        assert (got.event, got.envelope["data"]["id"]) == ("notification", out.strip())
        code, _, err = await _finrt(small, *args, "--message", "x" * 1500)
        assert code == 2
        assert "does not fit in its event (FINRT_MAX_EVENT_BYTES)" in err
        assert "the limit is 2048" in err
        await stream.no_event(0.3)
    assert [n["id"] for n in (await inbox(user).page())["notifications"]] == [out.strip()]


@pytest.mark.parametrize("key", ["", "k" * 201])
def test_a_dedupe_key_outside_1_to_200_characters_is_refused_on_every_database(user, key):
    """SQLite stored a 201-character key, PostgreSQL failed with "value too long" (which
    ``finrt notify`` reported as an unreachable database, and a task would retry)."""
    with pytest.raises(ValueError, match="dedupe key must be 1 to 200 characters"):
        with session_scope() as session:
            create_notification(session, user, "report_ready", "t", "m", dedupe_key=key)
    with session_scope() as session:
        assert session.query(Notification).filter(Notification.user_id == user).count() == 0
