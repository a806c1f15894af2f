"""The inbox service against the test database, its events read back from Redis."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from models import Notification, OutboxEvent, session_scope
from services.access import ensure_user
from services.notifications import (
    NotificationNotFound,
    dismiss,
    list_notifications,
    mark_all_read,
    mark_read,
    purge_expired,
    unread_count,
)
from services.notify import create_notification


def _in_threads(n: int, work: Callable[[], object]) -> list[object]:
    """Run ``work`` in ``n`` threads released at once; returns what each returned."""
    start = threading.Barrier(n)
    results: list[object] = []

    def run() -> None:
        start.wait()
        results.append(work())

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == n
    return results


def test_create_publishes_the_notification_with_the_unread_count(notify, stored_events, user):
    first = notify(user, "one", priority="urgent", data={"file_id": 3})
    second = notify(user, "two")
    events = stored_events(user)
    assert [e["type"] for e in events] == ["notification", "notification"]
    assert [e["data"]["id"] for e in events] == [first, second]
    assert [e["data"]["unread_count"] for e in events] == [1, 2]
    data = events[0]["data"]
    assert (data["priority"], data["data"], data["is_read"]) == ("urgent", {"file_id": 3}, False)
    assert data["created_at"].endswith("Z") and data["read_at"] is None


@pytest.mark.parametrize("dedupe_key", [None, "report_ready:9"])
def test_rollback_after_create_keeps_no_row_and_publishes_nothing(stored_events, user, dedupe_key):
    """Regression: under pysqlite a savepoint opened before the first write committed on
    release, so the row survived its transaction's rollback (without its event)."""
    with session_scope() as session:
        ensure_user(session, user)  # so that the notification is the transaction's first write
    with pytest.raises(RuntimeError), session_scope() as session:
        create_notification(session, user, "report_ready", "t", "m", dedupe_key=dedupe_key)
        raise RuntimeError("the task failed afterwards")
    with session_scope() as session:
        assert session.scalar(select(func.count()).where(Notification.user_id == user)) == 0
        outbox = select(func.count()).where(OutboxEvent.channel == f"user:{user}")
        assert session.scalar(outbox) == 0
    assert stored_events(user) == []


def test_concurrent_creates_with_one_dedupe_key_store_one_and_publish_once(stored_events, user):
    def create() -> str:
        with session_scope() as session:
            return create_notification(
                session, user, "file_processed", "done", "m", dedupe_key="file:1"
            ).id

    ids = _in_threads(4, create)
    assert len(set(ids)) == 1
    assert [e["data"]["id"] for e in stored_events(user)] == [ids[0]]


def test_mark_read_twice_changes_and_publishes_once(notify, stored_events, user):
    nid, _other = notify(user, "a"), notify(user, "b")
    with session_scope() as session:
        n, count = mark_read(session, user, nid)
        read_at = n.read_at
        assert n.is_read and read_at is not None and count == 1
    with session_scope() as session:
        n, count = mark_read(session, user, nid.upper())
        assert n.read_at == read_at and count == 1
    events = stored_events(user)
    assert [e["type"] for e in events] == ["notification"] * 2 + ["notification_read"]
    assert events[-1]["data"] == {
        "id": nid,
        "read_at": read_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "unread_count": 1,
    }


def test_concurrent_mark_read_publishes_once(notify, stored_events, user):
    nid = notify(user)

    def read() -> int:
        with session_scope() as session:
            return mark_read(session, user, nid)[1]

    assert _in_threads(4, read) == [0, 0, 0, 0]
    assert [e["type"] for e in stored_events(user)].count("notification_read") == 1


@pytest.mark.parametrize("change", [mark_read, dismiss])
def test_another_users_or_a_non_uuid_id_is_not_found_and_changes_nothing(
    notify, stored_events, user, change
):
    nid = notify(user)
    for who, ident in [
        ("someone-else", nid),
        (user, "nope"),
        (user, ""),
        (user, str(uuid.uuid4())),
    ]:
        with pytest.raises(NotificationNotFound), session_scope() as session:
            change(session, who, ident)
    with session_scope() as session:
        n = session.get(Notification, nid)
        assert n is not None and not n.is_read and not n.is_dismissed
    assert [e["type"] for e in stored_events(user)] == ["notification"]


def test_dismiss_hides_it_from_list_and_count_and_publishes_once(notify, stored_events, user):
    keep, hide = notify(user, "keep"), notify(user, "hide")
    for _ in range(2):
        with session_scope() as session:
            n, count = dismiss(session, user, hide)
            assert n.is_dismissed and count == 1
    with session_scope() as session:
        items, total, unread = list_notifications(session, user)
        assert [n.id for n in items] == [keep] and (total, unread) == (1, 1)
    events = stored_events(user)
    assert [e["type"] for e in events].count("notification_dismissed") == 1
    assert events[-1]["data"] == {"id": hide, "unread_count": 1}


def test_mark_all_read_marks_only_the_users_visible_unread_ones(notify, stored_events, user):
    unread = [notify(user, f"u{i}") for i in range(3)]
    already = notify(user, "read")
    hidden = notify(user, "dismissed")
    # Measured from here: creating one already expired is refused.
    soon = datetime.now(UTC) + timedelta(seconds=1)
    expiring = notify(user, "expiring", expires_at=soon)
    stranger = notify("someone-else-" + user, "not yours")
    with session_scope() as session:
        mark_read(session, user, already)
        dismiss(session, user, hidden)
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.01)

    with session_scope() as session:
        assert mark_all_read(session, user) == (3, 0)
    with session_scope() as session:
        assert mark_all_read(session, user) == (0, 0)
        assert all(session.get(Notification, i).is_read for i in unread)  # type: ignore[union-attr]
        for untouched in (hidden, expiring, stranger):
            assert session.get(Notification, untouched).is_read is False  # type: ignore[union-attr]
    read_all = [e for e in stored_events(user) if e["type"] == "notifications_read_all"]
    assert [e["data"] for e in read_all] == [{"count": 3, "unread_count": 0}]


def test_paging_past_the_end_is_empty_but_counted(notify, user):
    for i in range(3):
        notify(user, f"n{i}")
    with session_scope() as session:
        assert list_notifications(session, user, page=2, limit=2)[1:] == (3, 3)
        assert len(list_notifications(session, user, page=2, limit=2)[0]) == 1
        assert list_notifications(session, user, page=10**12, limit=100) == ([], 3, 3)


@pytest.mark.parametrize(("page", "limit"), [(0, 50), (1, 0), (1, 101), (-1, 10)])
def test_list_refuses_a_bad_page_or_limit(user, page, limit):
    with pytest.raises(ValueError), session_scope() as session:
        list_notifications(session, user, page=page, limit=limit)


def test_expired_ones_vanish_at_once_and_purge_deletes_only_them(notify, user):
    now = datetime.now(UTC)
    gone = notify(user, "expired", expires_at=now + timedelta(minutes=5))
    later = notify(user, "expires later", expires_at=now + timedelta(days=1))
    lasting = notify(user, "never expires")
    with session_scope() as session:
        assert unread_count(session, user) == 3
        assert unread_count(session, user, now + timedelta(minutes=5)) == 2

    with session_scope() as session:
        assert purge_expired(session, now=now + timedelta(minutes=10)) >= 1
    with session_scope() as session:
        assert session.get(Notification, gone) is None
        assert session.get(Notification, later) is not None
        assert session.get(Notification, lasting) is not None
        items, total, _ = list_notifications(session, user)
        assert {n.id for n in items} == {later, lasting} and total == 2
