"""The notification inbox: create, list, count, mark read, mark all read, dismiss, purge.

Plain functions over a caller's session: the caller owns the transaction. Every change enqueues
its event on ``user:{id}`` through the outbox, so it is published only once the change commits.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Executable, Result, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models.notifications import NOTIFICATION_TYPES, PRIORITIES, Notification
from models.outbox import enqueue
from services.access import ensure_user
from streams.channels import user_channel

MAX_PAGE_SIZE = 100


class NotificationNotFound(LookupError):
    """Not one of this user's notifications: another user's, expired, or not a uuid at all."""


def _iso(value: datetime | None) -> str | None:
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
        "created_at": _iso(n.created_at),
        "read_at": _iso(n.read_at),
        "expires_at": _iso(n.expires_at),
    }


def _not_expired(now: datetime) -> Any:
    return or_(Notification.expires_at.is_(None), Notification.expires_at > now)


def visible(user_id: str, now: datetime | None = None) -> Any:
    """The filter for what a user sees: theirs, not dismissed, not expired."""
    now = now or datetime.now(UTC)
    return (
        (Notification.user_id == user_id)
        & (Notification.is_dismissed.is_(False))
        & _not_expired(now)
    )


def _count(session: Session, *where: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(Notification).where(*where)) or 0)


def unread_count(session: Session, user_id: str, now: datetime | None = None) -> int:
    return _count(session, visible(user_id, now), Notification.is_read.is_(False))


def create_notification(
    session: Session,
    user_id: str,
    type: str,
    title: str,
    message: str,
    *,
    data: dict[str, Any] | None = None,
    priority: str = "normal",
    expires_at: datetime | None = None,
    dedupe_key: str | None = None,
) -> Notification:
    """Store a notification and enqueue its ``notification`` event (sent after commit).

    With ``dedupe_key``, creating it again returns the stored one and publishes nothing.
    """
    if type not in NOTIFICATION_TYPES:
        raise ValueError(f"type must be one of {', '.join(NOTIFICATION_TYPES)}")
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}")
    if dedupe_key is not None:
        existing = session.scalar(
            select(Notification).where(
                Notification.user_id == user_id, Notification.dedupe_key == dedupe_key
            )
        )
        if existing is not None:
            return existing
    ensure_user(session, user_id)
    n = _insert_unless_duplicate(
        session,
        {
            "id": str(uuid.uuid4()),
            "user_id": user_id,
            "type": type,
            "title": title[:200],
            "message": message,
            "data": data or {},
            "priority": priority,
            "is_read": False,
            "is_dismissed": False,
            "created_at": datetime.now(UTC),
            "expires_at": expires_at,
            "dedupe_key": dedupe_key,
        },
    )
    if n is None:  # the same dedupe key, committed concurrently
        existing = session.scalar(
            select(Notification).where(
                Notification.user_id == user_id, Notification.dedupe_key == dedupe_key
            )
        )
        if existing is None:
            raise RuntimeError(f"dedupe key {dedupe_key!r} conflicted but no row holds it")
        return existing
    payload = to_public(n)
    payload["unread_count"] = unread_count(session, user_id)
    enqueue(session, user_channel(user_id), "notification", payload)
    return n


def _insert_unless_duplicate(session: Session, values: dict[str, Any]) -> Notification | None:
    """INSERT ... ON CONFLICT (user_id, dedupe_key) DO NOTHING; the new row, or None.

    Not a savepoint and IntegrityError: under pysqlite a SAVEPOINT opened before the
    transaction's first write commits on release, so a later rollback would keep the row.
    """
    conflict = ["user_id", "dedupe_key"]
    statement: Executable
    if session.get_bind().dialect.name == "postgresql":
        statement = (
            postgresql.insert(Notification)
            .values(values)
            .on_conflict_do_nothing(index_elements=conflict)
        )
    else:
        statement = (
            sqlite.insert(Notification)
            .values(values)
            .on_conflict_do_nothing(index_elements=conflict)
        )
    if _rowcount(session.execute(statement)) == 0:
        return None
    return session.get(Notification, values["id"])


def list_notifications(
    session: Session,
    user_id: str,
    *,
    page: int = 1,
    limit: int = 50,
    unread_only: bool = False,
) -> tuple[list[Notification], int, int]:
    """One page of the inbox, newest first: ``(items, total, unread_count)``.

    ``total`` counts what the filter matches (so with ``unread_only`` it is the unread count).
    """
    if page < 1 or not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"page must be 1 or more and limit 1 to {MAX_PAGE_SIZE}")
    now = datetime.now(UTC)
    unread = unread_count(session, user_id, now)
    where = [visible(user_id, now)]
    if unread_only:
        where.append(Notification.is_read.is_(False))
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


def _parse_id(notification_id: str) -> str:
    try:
        return str(uuid.UUID(notification_id))
    except (TypeError, ValueError):
        raise NotificationNotFound("no such notification") from None


def _owned(user_id: str, notification_id: str, now: datetime) -> Any:
    return (
        (Notification.id == notification_id) & (Notification.user_id == user_id) & _not_expired(now)
    )


def _rowcount(result: Result[Any]) -> int:
    return int(cast(CursorResult[Any], result).rowcount or 0)


def _change_one(
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
    nid = _parse_id(notification_id)
    result = session.execute(
        update(Notification)
        .where(_owned(user_id, nid, now), unchanged)
        .values(values)
        .execution_options(synchronize_session=False)
    )
    n = session.scalar(
        select(Notification)
        .where(_owned(user_id, nid, now))
        .execution_options(populate_existing=True)
    )
    if n is None:
        raise NotificationNotFound("no such notification")
    return n, _rowcount(result) > 0


def mark_read(session: Session, user_id: str, notification_id: str) -> tuple[Notification, int]:
    """Mark one notification read: ``(notification, unread_count)``.

    Already read: nothing changes and nothing is published. Raises NotificationNotFound.
    """
    now = datetime.now(UTC)
    n, changed = _change_one(
        session,
        user_id,
        notification_id,
        now,
        Notification.is_read.is_(False),
        {"is_read": True, "read_at": now},
    )
    count = unread_count(session, user_id, now)
    if changed:
        data = {"id": n.id, "read_at": _iso(n.read_at), "unread_count": count}
        enqueue(session, user_channel(user_id), "notification_read", data)
    return n, count


def dismiss(session: Session, user_id: str, notification_id: str) -> tuple[Notification, int]:
    """Hide one notification: ``(notification, unread_count)``.

    Already dismissed: nothing changes and nothing is published. Raises NotificationNotFound.
    """
    now = datetime.now(UTC)
    n, changed = _change_one(
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


def mark_all_read(session: Session, user_id: str) -> tuple[int, int]:
    """Mark every visible unread notification read: ``(how many, unread_count)``.

    Nothing to mark: nothing is published.
    """
    now = datetime.now(UTC)
    result = session.execute(
        update(Notification)
        .where(visible(user_id, now), Notification.is_read.is_(False))
        .values(is_read=True, read_at=now)
        .execution_options(synchronize_session="evaluate")
    )
    marked = _rowcount(result)
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
        .execution_options(synchronize_session="evaluate")
    )
    return _rowcount(result)
