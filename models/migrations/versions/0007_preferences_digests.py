"""notification preferences and digests

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 12:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

import models.base

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_preferences",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("inbox", sa.Boolean(), nullable=False),
        sa.Column("toast", sa.Boolean(), nullable=False),
        sa.Column("updated_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "type"),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("group_key", sa.String(length=200), nullable=True))
        batch_op.add_column(
            sa.Column("count", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
        batch_op.add_column(
            sa.Column("group_until", models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("announced_count", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
        batch_op.add_column(
            sa.Column("announced_at", models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_notifications_digest",
            ["user_id", "group_key", "group_until"],
            unique=False,
            sqlite_where=sa.text("group_key IS NOT NULL"),
            postgresql_where=sa.text("group_key IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_digest")
        batch_op.drop_column("announced_at")
        batch_op.drop_column("announced_count")
        batch_op.drop_column("group_until")
        batch_op.drop_column("count")
        batch_op.drop_column("group_key")
    op.drop_table("notification_preferences")
