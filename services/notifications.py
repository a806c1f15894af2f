"""The notification inbox: create, list, count, mark read, mark all read, dismiss, purge.

Plain functions over a caller's session: the caller owns the transaction. Every change enqueues
its event on ``user:{id}`` through the outbox, so it is published only once the change commits.
Seen, archived and snoozed states live in ``services/inbox_states.py``, actions in
``services/notification_actions.py``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Executable, Result, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.notification_types import NOTIFICATION_TYPES
from core.settings import get_settings
from models.notifications import PRIORITIES, Notification, NotificationJoin
from models.outbox import enqueue
from services import engagement
from services.access import ensure_user
from services.preferences import is_critical, muted
from streams.channels import user_channel
from streams.envelope import InvalidEvent, envelope_tail

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
