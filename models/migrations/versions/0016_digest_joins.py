"""digests: the dedupe keys of the notifications that joined one

Revision ID: 0016
Revises: 0015

A notification that joins a digest is not stored, so its dedupe key was not either: the
producer run again (a retried task, ``finrt notify --dedupe-key`` twice) joined again and
counted twice. Each such key now names the digest it joined.
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_joins",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("notification_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(["notification_id"], ["notifications.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "dedupe_key"),
    )
    op.create_index(
        "ix_notification_joins_notification_id", "notification_joins", ["notification_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_notification_joins_notification_id", table_name="notification_joins")
    op.drop_table("notification_joins")
