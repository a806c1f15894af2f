"""New notifications: what producers call (Celery tasks, ``finrt notify``, the services).

``create_notification`` checks a producer's notification (type, priority, actions, and that
its largest event fits FINRT_MAX_EVENT_BYTES), returns the one a ``dedupe_key`` already made,
joins an open digest (``services/digests.py``), stores it archived when the person muted its
type, and enqueues its ``notification`` event through the outbox (published once the caller's
transaction commits). The inbox's reading and changing is ``services/notifications.py``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Executable, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.notification_types import NOTIFICATION_TYPES
from core.settings import get_settings
from models.notifications import PRIORITIES, Notification, NotificationJoin
from models.outbox import enqueue
from services import engagement
from services.access import ensure_user
from services.notifications import (
    ACTION_KINDS,
    MAX_ACTIONS,
    iso,
    rowcount,
    to_public,
    unread_count,
)
from services.preferences import is_critical, muted
from streams.channels import user_channel
from streams.envelope import InvalidEvent, envelope_tail

__all__ = ["check_actions", "check_event_size", "create_notification", "deduplicated"]


def check_actions(actions: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Producers' actions, checked: at most two, each a label and a link url or an api op."""
    actions = list(actions or [])
    if len(actions) > MAX_ACTIONS:
        raise ValueError(f"a notification carries at most {MAX_ACTIONS} actions")
    checked = []
    for action in actions:
        label, kind = action.get("label"), action.get("kind")
        if not isinstance(label, str) or not 1 <= len(label) <= 40:
            raise ValueError("an action's label must be 1 to 40 characters")
        if kind not in ACTION_KINDS:
            raise ValueError(f"an action's kind must be one of {', '.join(ACTION_KINDS)}")
        if kind == "link" and not (isinstance(action.get("url"), str) and action["url"]):
            raise ValueError("a link action needs a url")
        if kind == "api" and not (isinstance(action.get("op"), str) and action["op"]):
            raise ValueError("an api action needs an op")
        checked.append({**action, "done_at": None})
    return checked


# An event's figures (counts, times, a digest's first title) are filled in when it is
# published: the size check counts each at its widest.
_WIDEST = 2**53
_LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
_WIDEST_TITLE = "\U0001f4c8" * 200  # 200 characters of four bytes each


def check_event_size(
    user_id: str,
    type: str,
    title: str,
    message: str,
    data: dict[str, Any] | None,
    actions: list[dict[str, Any]],
    priority: str = "normal",
) -> None:
    """ValueError when an event of the notification would be over FINRT_MAX_EVENT_BYTES: it
    could never be published, so the person would find it in the list but never be told live.

    The event checked is the largest the notification can travel in, built and encoded as it
    is published: a digest's ``notification_updated`` with the counts, every time and figure
    at its widest."""
    stamp = iso(_LATEST)
    probe = Notification(
        id=str(uuid.UUID(int=0)),
        user_id=user_id,
        type=type,
        title=title[:200],
        message=message,
        data={**(data or {}), "first_title": _WIDEST_TITLE},
        priority=priority,
        is_read=False,
        is_dismissed=False,
        created_at=_LATEST,
        read_at=_LATEST,
        expires_at=_LATEST,
        seen_at=_LATEST,
        archived_at=_LATEST,
        snoozed_until=_LATEST,
        actions=[{**a, "done_at": stamp} for a in actions],
        count=_WIDEST,
    )
    figures = {
        "unseen": _WIDEST,
        "unread": _WIDEST,
        "by_priority": dict.fromkeys(PRIORITIES, _WIDEST),
    }
    payload = {**to_public(probe), "unread_count": _WIDEST, "counts": figures}
    limit = get_settings().max_event_bytes
    try:
        envelope_tail(
            user_channel(user_id),
            "notification_updated",
            payload,
            f"digest:{probe.id}",
            stamp or "",
            limit,
        )
    except InvalidEvent as exc:
        raise ValueError(
            f"the notification does not fit in its event (FINRT_MAX_EVENT_BYTES): {exc}"
        ) from None


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
    actions: list[dict[str, Any]] | None = None,
    group: str | None = None,
    digest_title: str | None = None,
) -> Notification:
    """Store a notification and enqueue its ``notification`` event (sent after commit).

    With ``dedupe_key``, creating it again returns the stored one and publishes nothing.
    ``actions``: at most two (see ``services/notification_actions.py`` for the makers).
    ``group``: notifications of this type and group within FINRT_DIGEST_WINDOW_SECONDS of the
    first become one digest (``services/digests.py``); ``digest_title`` is its title, where
    ``{count}`` stands for how many. A type the person muted is stored archived and not
    published (``services/preferences.py``).
    ValueError for a bad type, priority, group or action, or an ``expires_at`` already past.
    """
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise ValueError("expires_at needs a time zone")
        if expires_at <= datetime.now(UTC):
            raise ValueError("expires_at is already past: the notification would never show")
    checked_actions = check_actions(actions)
    check_event_size(user_id, type, title, message, data, checked_actions, priority)
    if type not in NOTIFICATION_TYPES:
        raise ValueError(f"type must be one of {', '.join(NOTIFICATION_TYPES)}")
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}")
    if group is not None and not (isinstance(group, str) and 1 <= len(group) <= 160):
        raise ValueError("a group must be 1 to 160 characters")
    if dedupe_key is not None and not (isinstance(dedupe_key, str) and 1 <= len(dedupe_key) <= 200):
        raise ValueError("a dedupe key must be 1 to 200 characters")
    if dedupe_key is not None:
        existing = deduplicated(session, user_id, dedupe_key)
        if existing is not None:
            return existing
    ensure_user(session, user_id)
    now = datetime.now(UTC)
    is_muted = muted(session, user_id, type)
    # Nothing critical or urgent is merged into a digest: each one stands alone.
    group_key = None
    if group is not None and not is_muted and not is_critical(type) and priority != "urgent":
        # Imported here: services.digests builds on this module's to_public and counts.
        from services import digests

        group_key = f"{type}:{group}"
        joined = digests.join_open(
            session, user_id, group_key, message, data, digest_title, dedupe_key
        )
        if joined is not None:
            return joined
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
            "created_at": now,
            "expires_at": expires_at,
            "dedupe_key": dedupe_key,
            "actions": checked_actions,
            # Muted: kept, but put away on arrival and never published.
            "archived_at": now if is_muted else None,
            "group_key": group_key,
            "count": 1,
            "group_until": _window_end(now) if group_key else None,
            "announced_count": 1,
            "announced_at": now if group_key else None,
        },
    )
    if n is None:  # the same dedupe key, committed concurrently
        assert dedupe_key is not None  # only a dedupe key conflicts
        existing = deduplicated(session, user_id, dedupe_key)
        if existing is None:
            raise RuntimeError(f"dedupe key {dedupe_key!r} conflicted but no row holds it")
        return existing
    if is_muted:
        return n
    engagement.count(session, "created", type)
    payload = to_public(n)
    payload["unread_count"] = unread_count(session, user_id)
    enqueue(session, user_channel(user_id), "notification", payload)
    return n


def deduplicated(
    session: Session, user_id: str, dedupe_key: str, *, fresh: bool = False
) -> Notification | None:
    """The notification a producer's ``dedupe_key`` already made, or the digest it joined
    (which stands for it); None when the key is new. ``fresh``: read past the session's
    identity map (after taking a lock, another transaction's commit must be seen)."""
    options = {"populate_existing": True} if fresh else {}
    made = session.scalar(
        select(Notification)
        .where(Notification.user_id == user_id, Notification.dedupe_key == dedupe_key)
        .execution_options(**options)
    )
    if made is not None:
        return made
    joined = session.get(NotificationJoin, (user_id, dedupe_key), populate_existing=fresh)
    if joined is None:
        return None
    return session.get_one(Notification, joined.notification_id)


def _window_end(now: datetime) -> datetime:
    return now + timedelta(seconds=get_settings().digest_window_seconds)


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
            .execution_options(finrt_events="explicit")
        )
    else:
        statement = (
            sqlite.insert(Notification)
            .values(values)
            .on_conflict_do_nothing(index_elements=conflict)
            .execution_options(finrt_events="explicit")
        )
    if rowcount(session.execute(statement)) == 0:
        return None
    return session.get(Notification, values["id"])
