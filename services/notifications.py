"""The notification inbox: create, list, count, mark read, mark all read, dismiss."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.access import ensure_user
from models.notifications import NOTIFICATION_TYPES, PRIORITIES, Notification
from models.outbox import enqueue


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


def visible(user_id: str, now: datetime | None = None) -> Any:
    """The filter for what a user sees: theirs, not dismissed, not expired."""
    now = now or datetime.now(UTC)
    return (
        (Notification.user_id == user_id)
        & (Notification.is_dismissed.is_(False))
        & or_(Notification.expires_at.is_(None), Notification.expires_at > now)
    )


def unread_count(session: Session, user_id: str) -> int:
    query = (
        select(func.count())
        .select_from(Notification)
        .where(visible(user_id), Notification.is_read.is_(False))
    )
    return int(session.scalar(query) or 0)


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
    n = Notification(
        user_id=user_id,
        type=type,
        title=title[:200],
        message=message,
        data=data or {},
        priority=priority,
        expires_at=expires_at,
        dedupe_key=dedupe_key,
        created_at=datetime.now(UTC),
    )
    try:
        with session.begin_nested():
            session.add(n)
    except IntegrityError:  # the same dedupe key, committed concurrently
        existing = session.scalar(
            select(Notification).where(
                Notification.user_id == user_id, Notification.dedupe_key == dedupe_key
            )
        )
        if existing is None:
            raise
        return existing
    payload = to_public(n)
    payload["unread_count"] = unread_count(session, user_id)
    enqueue(session, f"user:{user_id}", "notification", payload)
    return n
