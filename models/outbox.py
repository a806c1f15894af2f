"""The outbox: events that belong to a database change leave only after it commits.

A change writes its events as outbox rows in the same transaction (:func:`enqueue`). After the
commit, once the session has given its connection back to the pool, they are published
(:func:`flush_outbox`), oldest first per channel, before the code that committed goes on (so
an API response follows its events). Publishing holds no connection while it talks to Redis.
If Redis is down or the process dies in between, the rows stay unpublished and the periodic
sweeper (:func:`sweep_outbox`) publishes them later. Each row publishes with its own dedupe
token, so a row published twice (a crash between publish and marking, or two processes flushing
one channel) reaches Redis once. A rolled-back transaction takes its rows with it: nothing is
published.
"""

from __future__ import annotations

import logging
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import BigInteger, Index, Integer, Select, String, Text, event, select, update
from sqlalchemy.orm import Mapped, Session, SessionTransaction, mapped_column

from models.base import Base, UTCDateTime, utcnow
from models.db import session_factory
from streams.envelope import InvalidEvent

log = logging.getLogger("finrt.outbox")

_INFO_KEY = "finrt_outbox_channels"
_COMMITTED_KEY = "finrt_outbox_committed"
_ENQUEUED_KEY = "finrt_outbox_enqueued"
REFUSED = "refused"  # event_id of a row that can never be published


class OutboxEvent(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unpublished", "published_at", "channel", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    token: Mapped[str] = mapped_column(String(32), default=lambda: uuid.uuid4().hex, unique=True)
    channel: Mapped[str] = mapped_column(String(80))
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[str] = mapped_column(Text)
    key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    event_id: Mapped[str | None] = mapped_column(String(41), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


def enqueue(
    session: Session,
    channel: str,
    type: str,
    data: Any,
    key: str | None = None,
) -> OutboxEvent:
    """Add an event to ``session``'s transaction; it is published once the commit succeeds."""
    row = OutboxEvent(
        token=uuid.uuid4().hex,
        channel=channel,
        type=type,
        data=orjson.dumps(data).decode(),
        key=key,
    )
    session.add(row)
    channels: set[str] = session.info.setdefault(_INFO_KEY, set())
    channels.add(channel)
    done: set[tuple[str, str, str | None]] = session.info.setdefault(_ENQUEUED_KEY, set())
    done.add((channel, type, key))
    return row


def enqueued(session: Session) -> set[tuple[str, str, str | None]]:
    """``(channel, type, key)`` of the events enqueued in the session's transaction so far
    (models/change_events.py publishes a change only if none of these covers it)."""
    found: set[tuple[str, str, str | None]] = session.info.get(_ENQUEUED_KEY, set())
    return found


@event.listens_for(Session, "after_commit")
def _remember_commit(session: Session) -> None:
    # The session still holds its connection here: publishing now would check out a second
    # one while holding the first, and enough concurrent commits deadlock the pool on itself.
    # Note the channels; they are published once the connection is back in the pool.
    if session.in_nested_transaction():  # a savepoint was released; the commit comes later
        return
    session.info.pop(_ENQUEUED_KEY, None)
    channels: set[str] | None = session.info.pop(_INFO_KEY, None)
    if channels:
        url = session.get_bind().engine.url.render_as_string(hide_password=False)
        committed: dict[str, set[str]] = session.info.setdefault(_COMMITTED_KEY, {})
        committed.setdefault(url, set()).update(channels)


@event.listens_for(Session, "after_transaction_end")
def _publish_after_release(session: Session, transaction: SessionTransaction) -> None:
    # Fired after the root transaction returned its connection to the pool.
    if transaction.parent is not None or transaction.nested:
        return
    committed: dict[str, set[str]] | None = session.info.pop(_COMMITTED_KEY, None)
    for url, channels in (committed or {}).items():
        try:
            flush_outbox(url, channels)
        except Exception:  # Redis down: the sweeper publishes these rows later
            log.warning(
                "publishing after commit failed; the outbox sweeper will retry", exc_info=True
            )


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(_INFO_KEY, None)
        session.info.pop(_ENQUEUED_KEY, None)


@dataclass(frozen=True, slots=True)
class _Row:
    """An outbox row as read, detached from any session or connection."""

    id: int
    token: str
    channel: str
    type: str
    data: str
    key: str | None
    attempts: int


# Flushes of one channel in one process take turns (striped locks: bounded memory, taken in
# order so two flushes never wait on each other). Concurrent commits to a channel then cost one
# read and one publish round each instead of all of them publishing every row: the first
# flush publishes the others' rows too, and theirs find nothing left.
_STRIPES = [threading.Lock() for _ in range(64)]


@contextmanager
def _channel_turn(channels: set[str] | None) -> Iterator[None]:
    if channels is None:
        yield
        return
    stripes = sorted({zlib.crc32(c.encode()) % len(_STRIPES) for c in channels})
    with ExitStack() as stack:
        for index in stripes:
            stack.enter_context(_STRIPES[index])
        yield


def _read_unpublished(url: str, query: Select[OutboxEvent]) -> list[_Row]:
    """A short read-only transaction; no connection is held while publishing."""
    with session_factory(url, read_only=True)() as session:
        return [
            _Row(r.id, r.token, r.channel, r.type, r.data, r.key, r.attempts)
            for r in session.scalars(query)
        ]


# Called with the rows (channel, type, data) about to be published; if it raises, none are.
BeforePublish = Callable[[list[tuple[str, str, str]]], None]


def _publish_rows(url: str, rows: list[_Row], before_publish: BeforePublish | None = None) -> int:
    """Publish ``rows`` in order, then mark those done in one short write transaction (also
    when Redis fails partway, before the error is raised)."""
    from streams.publish import default_publisher

    if before_publish is not None and rows:
        before_publish([(row.channel, row.type, row.data) for row in rows])

    publisher = default_publisher()
    done: list[dict[str, Any]] = []
    try:
        for row in rows:
            try:
                event_id = publisher.publish(
                    row.channel, row.type, orjson.loads(row.data), row.key, dedupe=row.token
                )
            except InvalidEvent as exc:
                # It can never be published (e.g. too large): set it aside, do not block the
                # rest. Never silently: this line, and the row stays (prune_outbox keeps refused
                # rows), counted by /metrics as finrt_outbox_refused_events.
                log.error(
                    "outbox row %s (%s on %s) refused for good, not published: %s",
                    row.id,
                    row.type,
                    row.channel,
                    exc,
                )
                event_id = REFUSED
            done.append(
                {
                    "id": row.id,
                    "published_at": utcnow(),
                    "event_id": event_id,
                    "attempts": row.attempts + 1,
                }
            )
    finally:
        if done:
            with session_factory(url)() as session:
                session.execute(update(OutboxEvent), done)
                session.commit()
    return len(done)


def flush_outbox(
    url: str,
    channels: set[str] | None = None,
    *,
    limit: int = 1000,
    before_publish: BeforePublish | None = None,
) -> int:
    """Publish unpublished rows (of ``channels``, or all), oldest first; returns how many."""
    query = select(OutboxEvent).where(OutboxEvent.published_at.is_(None))
    if channels is not None:
        query = query.where(OutboxEvent.channel.in_(sorted(channels)))
    with _channel_turn(channels):
        rows = _read_unpublished(url, query.order_by(OutboxEvent.id).limit(limit))
        return _publish_rows(url, rows, before_publish)


def sweep_outbox(
    url: str,
    *,
    older_than_seconds: float = 5.0,
    limit: int = 1000,
    before_publish: BeforePublish | None = None,
) -> int:
    """Publish rows left behind (Redis was down, a process died). Returns how many."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    query = (
        select(OutboxEvent)
        .where(OutboxEvent.published_at.is_(None), OutboxEvent.created_at <= cutoff)
        .order_by(OutboxEvent.id)
        .limit(limit)
    )
    return _publish_rows(url, _read_unpublished(url, query), before_publish)


def count_refused(url: str) -> int:
    """Rows that could never be published (kept for an operator to look at)."""
    from sqlalchemy import func

    with session_factory(url)() as session:
        found = session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.event_id == REFUSED)
        )
        return int(found or 0)


def prune_outbox(url: str, *, older_than: timedelta = timedelta(days=1)) -> int:
    """Delete published rows older than ``older_than``; refused rows are kept."""
    from sqlalchemy import delete, or_

    with session_factory(url)() as session:
        result = session.execute(
            delete(OutboxEvent).where(
                OutboxEvent.published_at.is_not(None),
                OutboxEvent.published_at < utcnow() - older_than,
                or_(OutboxEvent.event_id.is_(None), OutboxEvent.event_id != REFUSED),
            )
        )
        session.commit()
        return int(getattr(result, "rowcount", 0) or 0)
