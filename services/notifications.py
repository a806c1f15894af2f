"""The notification inbox: list, count, mark read, mark all read, dismiss, purge.

Plain functions over a caller's session: the caller owns the transaction. Every change enqueues
its event on ``user:{id}`` through the outbox, so it is published only once the change commits.
Creating one is ``services/notify.py``; seen, archived and snoozed states live in
``services/inbox_states.py``, actions in ``services/notification_actions.py``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Result, delete, func, or_, select, update
from sqlalchemy.orm import Session

from core.notification_types import NOTIFICATION_TYPES
from models.notifications import PRIORITIES, Notification
from models.outbox import enqueue
from services import engagement
from streams.channels import user_channel

MAX_PAGE_SIZE = 100
MAX_ACTIONS = 2
STATUSES = ("unread", "read", "archived", "all")
ACTION_KINDS = ("link", "api")


class NotificationNotFound(LookupError):
    """Not one of this user's notifications: another user's, expired, or not a uuid at all."""


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_public(n: Notification) -> dict[str, Any]:
    """A notification exactly as the REST API and the ``notification`` event show it."""
    return {
        "id": n.id,
        "type": n.type,
        "title": n.title,
        "message": n.message,
        "data": n.data or {},
        "priority": n.priority,
        "is_read": n.is_read,
        "is_dismissed": n.is_dismissed,
        "created_at": iso(n.created_at),
        "read_at": iso(n.read_at),
        "expires_at": iso(n.expires_at),
        "seen_at": iso(n.seen_at),
        "archived_at": iso(n.archived_at),
        "snoozed_until": iso(n.snoozed_until),
        "actions": [public_action(a) for a in n.actions or []],
        "count": n.count or 1,
    }


def public_action(action: dict[str, Any]) -> dict[str, Any]:
    """An action as users see it: what an api action does ("op", "args") stays inside."""
    url = action["url"] if action["kind"] == "link" else None
    return {
        "label": action["label"],
        "kind": action["kind"],
        "url": url,
        "done_at": action.get("done_at"),
    }


def not_expired(now: datetime) -> Any:
    return or_(Notification.expires_at.is_(None), Notification.expires_at > now)


def present(user_id: str, now: datetime | None = None) -> Any:
    """Theirs, not dismissed, not expired, not snoozed: listed under ``status=all``."""
    now = now or datetime.now(UTC)
    return (
        (Notification.user_id == user_id)
        & (Notification.is_dismissed.is_(False))
        & not_expired(now)
        & Notification.snoozed_until.is_(None)
    )


def visible(user_id: str, now: datetime | None = None) -> Any:
    """The default list and every count: present and not archived."""
    return present(user_id, now) & Notification.archived_at.is_(None)


def status_filter(user_id: str, status: str, now: datetime) -> list[Any]:
    if status == "unread":
        return [visible(user_id, now), Notification.is_read.is_(False)]
    if status == "read":
        return [visible(user_id, now), Notification.is_read.is_(True)]
    if status == "archived":
        return [present(user_id, now), Notification.archived_at.is_not(None)]
    if status == "all":
        return [present(user_id, now)]
    raise ValueError(f"status must be one of {', '.join(STATUSES)}")


def _count(session: Session, *where: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(Notification).where(*where)) or 0)


def unread_count(session: Session, user_id: str, now: datetime | None = None) -> int:
    return _count(session, visible(user_id, now), Notification.is_read.is_(False))


def counts(session: Session, user_id: str, now: datetime | None = None) -> dict[str, Any]:
    """The badge's figures: ``{"unseen", "unread", "by_priority"}`` (unread by priority)."""
    now = now or datetime.now(UTC)
    unseen = _count(session, visible(user_id, now), Notification.seen_at.is_(None))
    by_priority = dict.fromkeys(PRIORITIES, 0)
    rows = session.execute(
        select(Notification.priority, func.count())
        .where(visible(user_id, now), Notification.is_read.is_(False))
        .group_by(Notification.priority)
    )
    for priority, count in rows:
        if priority in by_priority:
            by_priority[priority] = int(count)
    return {"unseen": unseen, "unread": sum(by_priority.values()), "by_priority": by_priority}


def with_counts(session: Session, user_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """An inbox-state event's data with the counts that go with it (the badge in every tab)."""
    figures = counts(session, user_id)
    return {**data, "unread_count": figures["unread"], "counts": figures}


def list_notifications(
    session: Session,
    user_id: str,
    *,
    page: int = 1,
    limit: int = 50,
    unread_only: bool = False,
    status: str | None = None,
    type: str | None = None,
    priority: str | None = None,
) -> tuple[list[Notification], int, int]:
    """One page of the inbox, newest first: ``(items, total, unread_count)``.

    ``status`` (unread, read, archived, all; default: every one not archived), ``type`` and
    ``priority`` filter; ``total`` counts what the filter matches.
    """
    if page < 1 or not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"page must be 1 or more and limit 1 to {MAX_PAGE_SIZE}")
    if type is not None and type not in NOTIFICATION_TYPES:
        raise ValueError(f"type must be one of {', '.join(NOTIFICATION_TYPES)}")
    if priority is not None and priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}")
    now = datetime.now(UTC)
    unread = unread_count(session, user_id, now)
    if status is None:
        status = "unread" if unread_only else None
    where = status_filter(user_id, status, now) if status else [visible(user_id, now)]
    if type is not None:
        where.append(Notification.type == type)
    if priority is not None:
        where.append(Notification.priority == priority)
    if status == "unread" and type is None and priority is None:
        total = unread
    else:
        total = _count(session, *where)
    offset = (page - 1) * limit
    if offset >= total:  # also keeps a huge page number away from the database's integers
        return [], total, unread
    # The id breaks ties between equal timestamps, so pages never overlap or skip.
    newest_first = (Notification.created_at.desc(), Notification.id.desc())
    # Page through the covering index alone, then fetch just the page's rows: a deep page
    # skips index entries, not table rows.
    page_ids = (
        select(Notification.id)
        .where(*where)
        .order_by(*newest_first)
        .offset(offset)
        .limit(limit)
        .subquery()
    )
    query = (
        select(Notification)
        .join(page_ids, Notification.id == page_ids.c.id)
        .order_by(*newest_first)
    )
    return list(session.scalars(query)), total, unread


def parse_id(notification_id: str) -> str:
    try:
        return str(uuid.UUID(notification_id))
    except (TypeError, ValueError):
        raise NotificationNotFound("no such notification") from None


def owned(user_id: str, notification_id: str, now: datetime) -> Any:
    return (
        (Notification.id == notification_id) & (Notification.user_id == user_id) & not_expired(now)
    )


def rowcount(result: Result[Any]) -> int:
    return int(cast(CursorResult[Any], result).rowcount or 0)


def change_one(
    session: Session,
    user_id: str,
    notification_id: str,
    now: datetime,
    unchanged: Any,
    values: dict[str, Any],
) -> tuple[Notification, bool]:
    """Apply ``values`` to one of the user's notifications where ``unchanged`` still holds;
    returns it and whether it changed.

    One conditional UPDATE rather than read-then-write: of two concurrent calls only one
    changes the row (and so only one publishes); the other finds it done.
    """
    nid = parse_id(notification_id)
    result = session.execute(
        update(Notification)
        .where(owned(user_id, nid, now), unchanged)
        .values(values)
        .execution_options(synchronize_session=False, finrt_events="explicit")
    )
    n = session.scalar(
        select(Notification)
        .where(owned(user_id, nid, now))
        .execution_options(populate_existing=True)
    )
    if n is None:
        raise NotificationNotFound("no such notification")
    return n, rowcount(result) > 0


def mark_read(session: Session, user_id: str, notification_id: str) -> tuple[Notification, int]:
    """Mark one notification read: ``(notification, unread_count)``.

    Already read: nothing changes and nothing is published. Raises NotificationNotFound.
    """
    now = datetime.now(UTC)
    n, changed = change_one(
        session,
        user_id,
        notification_id,
        now,
        Notification.is_read.is_(False),
        {"is_read": True, "read_at": now},
    )
    count = unread_count(session, user_id, now)
    if changed:
        engagement.count(session, "read", n.type)
        data = {"id": n.id, "read_at": iso(n.read_at), "unread_count": count}
        enqueue(session, user_channel(user_id), "notification_read", data)
    return n, count


def dismiss(session: Session, user_id: str, notification_id: str) -> tuple[Notification, int]:
    """Hide one notification: ``(notification, unread_count)``.

    Already dismissed: nothing changes and nothing is published. Raises NotificationNotFound.
    """
    now = datetime.now(UTC)
    n, changed = change_one(
        session,
        user_id,
        notification_id,
        now,
        Notification.is_dismissed.is_(False),
        {"is_dismissed": True},
    )
    count = unread_count(session, user_id, now)
    if changed:
        data = {"id": n.id, "unread_count": count}
        enqueue(session, user_channel(user_id), "notification_dismissed", data)
    return n, count


def lock_in_order(session: Session, *where: Any) -> list[str]:
    """The matching rows' ids, locked in id order (PostgreSQL; SQLite locks the database):
    two bulk changes running together then queue instead of deadlocking."""
    query = select(Notification.id).where(*where).order_by(Notification.id).with_for_update()
    return list(session.scalars(query))


def mark_all_read(session: Session, user_id: str) -> tuple[int, int]:
    """Mark every visible unread notification read: ``(how many, unread_count)``.

    Nothing to mark: nothing is published.
    """
    now = datetime.now(UTC)
    ids = lock_in_order(session, visible(user_id, now), Notification.is_read.is_(False))
    if not ids:
        return 0, unread_count(session, user_id, now)
    read_types = list(
        session.scalars(
            update(Notification)
            .where(Notification.id.in_(ids), Notification.is_read.is_(False))
            .values(is_read=True, read_at=now)
            .returning(Notification.type)
            .execution_options(synchronize_session="evaluate", finrt_events="explicit")
        )
    )
    marked = len(read_types)
    engagement.count_types(session, "read", read_types)
    # Counted, not assumed 0: one created concurrently may already be committed and unread.
    count = unread_count(session, user_id, now)
    if marked:
        data = {"count": marked, "unread_count": count}
        enqueue(session, user_channel(user_id), "notifications_read_all", data)
    return marked, count


def purge_expired(session: Session, *, now: datetime | None = None) -> int:
    """Delete expired notifications for good (lists and counts skip them already).

    Returns how many were deleted.
    """
    now = now or datetime.now(UTC)
    result = session.execute(
        delete(Notification)
        .where(Notification.expires_at <= now)
        # Their expiry was announced (notification_expired): the purge itself is not news.
        .execution_options(synchronize_session="evaluate", finrt_events="explicit")
    )
    return rowcount(result)
