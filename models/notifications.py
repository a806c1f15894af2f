"""Notifications: one user's inbox."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow

PRIORITIES = ("low", "normal", "high", "urgent")


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("user_id", "dedupe_key", name="uq_notifications_user_dedupe"),
        # Inbox pages (newest first, id breaking ties) and the total: the equality columns,
        # then the sort order, then expires_at so the expiry filter and count(*) never
        # visit the table.
        # The inbox states (archived, snoozed, seen) come last: filters read from the index.
        Index(
            "ix_notifications_inbox",
            "user_id",
            "is_dismissed",
            "created_at",
            "id",
            "expires_at",
            "archived_at",
            "snoozed_until",
            "seen_at",
        ),
        # The unread badge, unread-only pages, mark-all-read and the unread counts by
        # priority, covered the same way.
        Index(
            "ix_notifications_unread",
            "user_id",
            "is_read",
            "is_dismissed",
            "created_at",
            "id",
            "expires_at",
            "archived_at",
            "snoozed_until",
            "priority",
        ),
        # Snoozes due to wake (the beat tick); only snoozed rows are indexed.
        Index(
            "ix_notifications_snoozed_until",
            "snoozed_until",
            sqlite_where=text("snoozed_until IS NOT NULL"),
            postgresql_where=text("snoozed_until IS NOT NULL"),
        ),
        # Expiries not yet announced to the user's tabs (the beat tick).
        Index(
            "ix_notifications_expiry_unannounced",
            "expires_at",
            sqlite_where=text("expires_at IS NOT NULL AND expiry_announced_at IS NULL"),
            postgresql_where=text("expires_at IS NOT NULL AND expiry_announced_at IS NULL"),
        ),
        # The open digest of a group (services/digests.py): only grouped rows are indexed.
        Index(
            "ix_notifications_digest",
            "user_id",
            "group_key",
            "group_until",
            sqlite_where=text("group_key IS NOT NULL"),
            postgresql_where=text("group_key IS NOT NULL"),
        ),
        # purge_expired; most notifications never expire, so only those that do are indexed.
        Index(
            "ix_notifications_expires_at",
            "expires_at",
            sqlite_where=text("expires_at IS NOT NULL"),
            postgresql_where=text("expires_at IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    priority: Mapped[str] = mapped_column(String(8), default="normal")
    is_read: Mapped[bool] = mapped_column(Boolean, default=False)
    is_dismissed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Producers pass a dedupe key (e.g. "report_ready:42") so a retried task notifies once.
    dedupe_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Inbox states (CONTRACT 9): seen when a list showing it was opened, archived when put
    # away (reversible, unlike dismissed), hidden until ``snoozed_until`` when snoozed.
    seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    snoozed_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Up to two actions: {"label", "kind": "link"|"api", "url"?, "op"?, "args"?, "done_at"};
    # "op" and "args" (what an api action does) stay on the server.
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # When the tabs were told it expired (notification_expired), so they are told once.
    expiry_announced_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Digests (services/digests.py): the producer's group ("<type>:<group>"), how many
    # notifications this one stands for, until when more join it, and the count last announced
    # to the tabs (the inbox tick announces the rest).
    group_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    count: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    group_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    announced_count: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    announced_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class NotificationPreference(Base):
    """One person's choice for one type; no row: everything on (the default)."""

    __tablename__ = "notification_preferences"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    type: Mapped[str] = mapped_column(String(32), primary_key=True)
    inbox: Mapped[bool] = mapped_column(Boolean, default=True)
    toast: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class NotificationJoin(Base):
    """A producer's dedupe key that joined a digest instead of making a notification: run again
    (a retried task), it finds the digest here and does not count again."""

    __tablename__ = "notification_joins"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    notification_id: Mapped[str] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE"), index=True
    )
