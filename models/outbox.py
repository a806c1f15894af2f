"""The outbox: events that belong to a database change leave only after it commits.

A change writes its events as outbox rows in the same transaction (:func:`enqueue`). After the
commit they are published (:func:`flush_outbox`), oldest first per channel. If Redis is down or
the process dies in between, the rows stay unpublished and the periodic sweeper
(:func:`sweep_outbox`) publishes them later. Each row publishes with its own dedupe token, so a
row published twice (a crash between publish and marking) reaches Redis once. A rolled-back
transaction takes its rows with it: nothing is published.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import BigInteger, Index, Integer, String, Text, event, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, UTCDateTime, utcnow
from models.db import session_factory
from streams.envelope import InvalidEvent

log = logging.getLogger("finrt.outbox")

_INFO_KEY = "finrt_outbox_channels"
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
    return row


@event.listens_for(Session, "after_commit")
def _publish_after_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint was released; the commit comes later
        return
    channels: set[str] | None = session.info.pop(_INFO_KEY, None)
    if not channels:
        return
    bind = session.get_bind()
    url = bind.engine.url.render_as_string(hide_password=False)
    try:
        flush_outbox(url, channels)
    except Exception:  # Redis down: the sweeper publishes these rows later
        log.warning("publishing after commit failed; the outbox sweeper will retry", exc_info=True)


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(_INFO_KEY, None)


def _publish_rows(session: Session, rows: list[OutboxEvent]) -> int:
    from streams.publish import default_publisher

    publisher = default_publisher()
    done = 0
    for row in rows:
        row.attempts += 1
        try:
            event_id = publisher.publish(
                row.channel, row.type, orjson.loads(row.data), row.key, dedupe=row.token
            )
        except InvalidEvent as exc:
            # It can never be published (e.g. too large): set it aside, do not block the rest.
            # Never silently: this line, and the row stays (prune_outbox keeps refused rows),
            # counted by /metrics as finrt_outbox_refused_events.
            log.error(
                "outbox row %s (%s on %s) refused for good, not published: %s",
                row.id,
                row.type,
                row.channel,
                exc,
            )
            event_id = REFUSED
        session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id == row.id)
            .values(published_at=utcnow(), event_id=event_id, attempts=row.attempts)
        )
        session.commit()
        done += 1
    return done


def flush_outbox(url: str, channels: set[str] | None = None, *, limit: int = 1000) -> int:
    """Publish unpublished rows (of ``channels``, or all), oldest first; returns how many."""
    with session_factory(url)() as session:
        query = select(OutboxEvent).where(OutboxEvent.published_at.is_(None))
        if channels is not None:
            query = query.where(OutboxEvent.channel.in_(sorted(channels)))
        rows = list(session.scalars(query.order_by(OutboxEvent.id).limit(limit)))
        return _publish_rows(session, rows)


def sweep_outbox(url: str, *, older_than_seconds: float = 5.0, limit: int = 1000) -> int:
    """Publish rows left behind (Redis was down, a process died). Returns how many."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    with session_factory(url)() as session:
        rows = list(
            session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.published_at.is_(None), OutboxEvent.created_at <= cutoff)
                .order_by(OutboxEvent.id)
                .limit(limit)
            )
        )
        return _publish_rows(session, rows)


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
