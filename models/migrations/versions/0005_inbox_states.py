"""inbox states: seen, archived, snoozed, actions, announced expiry

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 11:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

import models.base

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("seen_at", models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("archived_at", models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("snoozed_until", models.base.UTCDateTime(timezone=True), nullable=True)
        )
        # Existing rows have no actions: an empty list, so readers never meet NULL.
        batch_op.add_column(
            sa.Column("actions", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch_op.add_column(
            sa.Column("expiry_announced_at", models.base.UTCDateTime(timezone=True), nullable=True)
        )
        # The list and count indexes gain the new columns, so they keep covering the queries.
        batch_op.drop_index("ix_notifications_inbox")
        batch_op.drop_index("ix_notifications_unread")
        batch_op.create_index(
            "ix_notifications_inbox",
            [
                "user_id",
                "is_dismissed",
                "created_at",
                "id",
                "expires_at",
                "archived_at",
                "snoozed_until",
                "seen_at",
            ],
            unique=False,
        )
        batch_op.create_index(
            "ix_notifications_unread",
            [
                "user_id",
                "is_read",
                "is_dismissed",
                "created_at",
                "id",
                "expires_at",
                "archived_at",
                "snoozed_until",
                "priority",
            ],
            unique=False,
        )
        batch_op.create_index(
            "ix_notifications_snoozed_until",
            ["snoozed_until"],
            unique=False,
            sqlite_where=sa.text("snoozed_until IS NOT NULL"),
            postgresql_where=sa.text("snoozed_until IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_notifications_expiry_unannounced",
            ["expires_at"],
            unique=False,
            sqlite_where=sa.text("expires_at IS NOT NULL AND expiry_announced_at IS NULL"),
            postgresql_where=sa.text("expires_at IS NOT NULL AND expiry_announced_at IS NULL"),
        )
    # Notifications that expired before this revision need no announcement.
    op.execute(
        "UPDATE notifications SET expiry_announced_at = expires_at "
        "WHERE expires_at IS NOT NULL AND expires_at <= CURRENT_TIMESTAMP"
    )


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_expiry_unannounced")
        batch_op.drop_index("ix_notifications_snoozed_until")
        batch_op.drop_index("ix_notifications_unread")
        batch_op.drop_index("ix_notifications_inbox")
        batch_op.create_index(
            "ix_notifications_inbox",
            ["user_id", "is_dismissed", "created_at", "id", "expires_at"],
            unique=False,
        )
        batch_op.create_index(
            "ix_notifications_unread",
            ["user_id", "is_read", "is_dismissed", "created_at", "id", "expires_at"],
            unique=False,
        )
        batch_op.drop_column("expiry_announced_at")
        batch_op.drop_column("actions")
        batch_op.drop_column("snoozed_until")
        batch_op.drop_column("archived_at")
        batch_op.drop_column("seen_at")
