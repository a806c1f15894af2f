"""Digests: a burst of notifications of one group becomes one notification that counts them.

A producer names a group (``create_notification(..., group=...)``; the group key is
``<type>:<group>``). The first notification of a burst is created and published at once, as any
other. Those of the same person and group that follow within FINRT_DIGEST_WINDOW_SECONDS of
the first join it instead: its ``count`` grows, its title becomes the producer's
``digest_title`` ("{count} data-quality issues in fy2025.csv"), its message and data become the
newest one's, and it is unread and unseen again. The tabs hear of it through
``notification_updated`` events (never a second ``notification``, so never a second toast),
at most one per digest per :data:`UPDATE_SECONDS`: a join within that time of the last
announcement is announced by the inbox tick (:func:`announce_pending`), so the last count
arrives within about a second. Critical types and urgent notifications are never digested.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.notifications import Notification, NotificationJoin
from models.outbox import enqueue
from services.access import lock_user
from services.announce_changes import announced_by_caller
from services.notifications import present, to_public, with_counts
from services.notify import deduplicated
from streams.channels import user_channel

# At most one notification_updated per digest per this many seconds.
UPDATE_SECONDS = 1.0
# The inbox tick announces at most this many digests; the next tick takes the rest.
TICK_BATCH = 500
DEFAULT_TITLE = "{count} notifications: {title}"


_PLACES_RE = re.compile(r"\{\{|\}\}|\{count\}|\{title\}")


def literal(text: str) -> str:
    """``text`` as it should read in a digest title: its braces doubled, so that a file named
    ``{count}.csv`` keeps its name (see :func:`digest_title`)."""
    return text.replace("{", "{{").replace("}", "}}")


def digest_title(template: str | None, count: int, first_title: str) -> str:
    """The title for ``count``: ``{count}`` and ``{title}`` replaced in one pass, ``{{`` and
    ``}}`` read as one brace, every other character as it is. Not str.format: titles carry
    user text, and text put in a template goes through :func:`literal`."""
    values = {"{{": "{", "}}": "}", "{count}": str(count), "{title}": first_title}
    return _PLACES_RE.sub(lambda m: values[m.group()], template or DEFAULT_TITLE)[:200]


def join_open(
    session: Session,
    user_id: str,
    group_key: str,
    message: str,
    data: dict[str, Any] | None,
    template: str | None,
    dedupe_key: str | None = None,
) -> Notification | None:
    """Add one to the group's open digest and return it; None when no window is open (the
    caller then creates the first of a new burst). A ``dedupe_key`` that already joined a
    digest returns that digest and adds nothing (the producer ran again)."""
    now = datetime.now(UTC)
    # One person's digests change one at a time: two producers of one burst running together
    # then join one digest instead of opening two. (SQLite serialises writers anyway.)
    lock_user(session, user_id)
    if dedupe_key is not None:
        # Looked for again under the lock: a run of the same producer may have just made it.
        made = deduplicated(session, user_id, dedupe_key, fresh=True)
        if made is not None:
            return made
    n = session.scalar(
        select(Notification)
        .where(
            present(user_id, now),
            Notification.archived_at.is_(None),
            Notification.group_key == group_key,
            Notification.group_until > now,
        )
        .order_by(Notification.created_at.desc())
        .limit(1)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if n is None:
        return None
    if dedupe_key is not None:
        session.add(NotificationJoin(user_id=user_id, dedupe_key=dedupe_key, notification_id=n.id))
    first_title = (n.data or {}).get("first_title", n.title)
    n.count = (n.count or 1) + 1
    n.title = digest_title(template, n.count, first_title)
    n.message = message
    n.data = {**(data or {}), "first_title": first_title}
    n.is_read, n.read_at, n.seen_at = False, None, None
    announced_by_caller(session, n.id)  # now, or by the inbox tick within UPDATE_SECONDS
    session.flush()
    if n.announced_at is None or now - n.announced_at >= timedelta(seconds=UPDATE_SECONDS):
        announce(session, n, now)
    return n


def announce(session: Session, n: Notification, now: datetime) -> None:
    """Enqueue ``notification_updated`` with the digest as it stands and the counts."""
    n.announced_count, n.announced_at = n.count, now
    payload = with_counts(session, n.user_id, to_public(n))
    # The key lets a slow client's buffer keep only the newest update of this digest.
    enqueue(session, user_channel(n.user_id), "notification_updated", payload, key=f"digest:{n.id}")


def announce_pending(session: Session, *, now: datetime | None = None) -> int:
    """The inbox tick: announce every digest whose count grew since its last announcement
    more than :data:`UPDATE_SECONDS` ago. Returns how many were announced."""
    now = now or datetime.now(UTC)
    due = session.scalars(
        select(Notification)
        .where(
            Notification.group_key.is_not(None),
            Notification.announced_count < Notification.count,
            Notification.announced_at <= now - timedelta(seconds=UPDATE_SECONDS),
        )
        .order_by(Notification.announced_at)
        .limit(TICK_BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    for n in due:
        announce(session, n, now)
    return len(due)
