"""Inbox states beyond read and dismissed: seen, archived, snoozed, and announced expiry.

Seen: a list showing the notification was opened (the badge counts the unseen). Archived: put
away, listed under ``status=archived`` and brought back by unarchive (dismissed, in contrast,
is gone from every list for good). Snoozed: hidden from lists and counts until
``snoozed_until``; the beat tick (:func:`wake_due`) brings it back as new, once. Each change
enqueues its event on ``user:{id}`` through the outbox, with the counts that go with it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from models.notifications import Notification
from models.outbox import enqueue
from services import engagement
from services.notifications import (
    NotificationNotFound,
    change_one,
    counts,
    iso,
    lock_in_order,
    not_expired,
    owned,
    parse_id,
    present,
    rowcount,
    to_public,
    visible,
    with_counts,
)
from streams.channels import user_channel

# Bulk changes publish their ids in events of at most this many (events have a size limit).
IDS_PER_EVENT = 200
MAX_SNOOZE_SECONDS = timedelta(days=90).total_seconds()
# One tick handles at most this many wakes or expiries; the next tick takes the rest.
TICK_BATCH = 500


class SnoozeOutOfBounds(ValueError):
    """A snooze time too soon, too far, or without a time zone."""


def mark_seen(session: Session, user_id: str, up_to: str) -> tuple[int, dict[str, Any]]:
    """Mark seen every listed notification up to ``up_to`` (it and older ones, in list order):
    ``(how many, counts)``. Nothing newly seen: nothing is published."""
    now = datetime.now(UTC)
    nid = parse_id(up_to)
    anchor = session.execute(
        select(Notification.created_at, Notification.id).where(owned(user_id, nid, now))
    ).first()
    if anchor is None:
        raise NotificationNotFound("no such notification")
    created_at, anchor_id = anchor
    older_or_same = or_(
        Notification.created_at < created_at,
        and_(Notification.created_at == created_at, Notification.id <= anchor_id),
    )
    ids = lock_in_order(
        session, present(user_id, now), Notification.seen_at.is_(None), older_or_same
    )
    marked = 0
    if ids:
        seen_types = list(
            session.scalars(
                update(Notification)
                .where(Notification.id.in_(ids), Notification.seen_at.is_(None))
                .values(seen_at=now)
                .returning(Notification.type)
                .execution_options(synchronize_session=False, finrt_events="explicit")
            )
        )
        marked = len(seen_types)
        engagement.count_types(session, "seen", seen_types)
    figures = counts(session, user_id, now)
    if marked:
        data = with_counts(session, user_id, {"up_to": nid, "seen_at": iso(now), "count": marked})
        enqueue(session, user_channel(user_id), "notifications_seen", data)
    return marked, figures


def archive(
    session: Session, user_id: str, notification_id: str
) -> tuple[Notification, dict[str, Any]]:
    """Put one away (again is fine: nothing changes, nothing is published)."""
    now = datetime.now(UTC)
    n, changed = change_one(
        session,
        user_id,
        notification_id,
        now,
        Notification.archived_at.is_(None) & Notification.is_dismissed.is_(False),
        {"archived_at": now},
    )
    figures = counts(session, user_id, now)
    if changed:
        engagement.count(session, "archived", n.type)
        data = {"id": n.id, "ids": [n.id], "archived_at": iso(n.archived_at)}
        enqueue(
            session,
            user_channel(user_id),
            "notification_archived",
            with_counts(session, user_id, data),
        )
    return n, figures


def unarchive(
    session: Session, user_id: str, notification_id: str
) -> tuple[Notification, dict[str, Any]]:
    """Bring one back to the list; its event carries the whole notification (a tab that never
    had it can show it)."""
    now = datetime.now(UTC)
    n, changed = change_one(
        session,
        user_id,
        notification_id,
        now,
        Notification.archived_at.is_not(None) & Notification.is_dismissed.is_(False),
        {"archived_at": None},
    )
    figures = counts(session, user_id, now)
    if changed:
        data = with_counts(session, user_id, to_public(n))
        enqueue(session, user_channel(user_id), "notification_unarchived", data)
    return n, figures


def archive_read(session: Session, user_id: str) -> tuple[int, dict[str, Any]]:
    """Archive every listed notification already read: ``(how many, counts)``."""
    now = datetime.now(UTC)
    ids = lock_in_order(session, visible(user_id, now), Notification.is_read.is_(True))
    if ids:
        rows = session.execute(
            update(Notification)
            .where(Notification.id.in_(ids), Notification.archived_at.is_(None))
            .values(archived_at=now)
            .returning(Notification.id, Notification.type)
            .execution_options(synchronize_session=False, finrt_events="explicit")
        ).all()
        ids = [row[0] for row in rows]
        engagement.count_types(session, "archived", [row[1] for row in rows])
    figures = counts(session, user_id, now)
    for start in range(0, len(ids), IDS_PER_EVENT):
        chunk = ids[start : start + IDS_PER_EVENT]
        data = with_counts(session, user_id, {"ids": chunk, "archived_at": iso(now)})
        enqueue(session, user_channel(user_id), "notification_archived", data)
    return len(ids), figures


def check_snooze(until: datetime, now: datetime, min_seconds: float, max_seconds: float) -> None:
    if until.tzinfo is None:
        raise SnoozeOutOfBounds("until needs a time zone offset (for example Z or +01:00)")
    ahead = (until - now).total_seconds()
    if ahead < min_seconds:
        raise SnoozeOutOfBounds(f"until must be at least {min_seconds:g} seconds from now")
    if ahead > max_seconds:
        days = max_seconds / 86400
        raise SnoozeOutOfBounds(f"until must be at most {days:g} days from now")


def snooze(
    session: Session,
    user_id: str,
    notification_id: str,
    until: datetime,
    *,
    min_seconds: float,
    max_seconds: float = MAX_SNOOZE_SECONDS,
) -> tuple[Notification, dict[str, Any]]:
    """Hide one until ``until`` (SnoozeOutOfBounds outside the bounds); snoozing again moves
    the time."""
    now = datetime.now(UTC)
    check_snooze(until, now, min_seconds, max_seconds)
    until = until.astimezone(UTC)
    n, changed = change_one(
        session,
        user_id,
        notification_id,
        now,
        or_(Notification.snoozed_until.is_(None), Notification.snoozed_until != until)
        & Notification.is_dismissed.is_(False),
        {"snoozed_until": until},
    )
    figures = counts(session, user_id, now)
    if changed:
        data = {"id": n.id, "snoozed_until": iso(n.snoozed_until)}
        enqueue(
            session,
            user_channel(user_id),
            "notification_snoozed",
            with_counts(session, user_id, data),
        )
    return n, figures


def wake_due(session: Session, now: datetime | None = None) -> list[str]:
    """Bring back every snoozed notification whose time has come, as new (unseen, unread,
    not archived), each with a ``notification`` event flagged ``woken_from_snooze``.

    Once: each row changes in a conditional UPDATE on the time it was snoozed to, so of two
    ticks running together only one wakes it (and publishes).
    """
    now = now or datetime.now(UTC)
    due = list(
        session.execute(
            select(Notification.id, Notification.user_id, Notification.snoozed_until)
            # A dismissed one is gone for good, an expired one has vanished: neither wakes.
            .where(
                Notification.snoozed_until <= now,
                Notification.is_dismissed.is_(False),
                not_expired(now),
            )
            .order_by(Notification.snoozed_until)
            .limit(TICK_BATCH)
        )
    )
    woken = []
    for nid, user_id, until in due:
        result = session.execute(
            update(Notification)
            .where(
                Notification.id == nid,
                Notification.snoozed_until == until,
                Notification.is_dismissed.is_(False),
                not_expired(now),
            )
            .values(snoozed_until=None, seen_at=None, is_read=False, read_at=None, archived_at=None)
            .execution_options(synchronize_session=False, finrt_events="explicit")
        )
        if rowcount(result) == 0:
            continue
        n = session.get(Notification, nid, populate_existing=True)
        if n is None:
            continue
        data = {**to_public(n), "woken_from_snooze": True}
        data["unread_count"] = counts(session, user_id, now)["unread"]
        enqueue(session, user_channel(user_id), "notification", data)
        woken.append(nid)
    return woken


def announce_expired(session: Session, now: datetime | None = None) -> list[str]:
    """Tell the tabs of every notification that has expired since the last tick
    (``notification_expired``, once each); returns their ids."""
    now = now or datetime.now(UTC)
    due = list(
        session.execute(
            select(Notification.id, Notification.user_id)
            .where(Notification.expires_at <= now, Notification.expiry_announced_at.is_(None))
            .order_by(Notification.expires_at)
            .limit(TICK_BATCH)
        )
    )
    announced = []
    for nid, user_id in due:
        result = session.execute(
            update(Notification)
            .where(Notification.id == nid, Notification.expiry_announced_at.is_(None))
            .values(expiry_announced_at=now)
            .execution_options(synchronize_session=False, finrt_events="explicit")
        )
        if rowcount(result) == 0:
            continue
        data = with_counts(session, user_id, {"id": nid})
        enqueue(session, user_channel(user_id), "notification_expired", data)
        announced.append(nid)
    return announced
