"""file uploads: how many times their processing was started

Revision ID: 0017
Revises: 0016

A file whose processing stopped its worker process each time (out of memory, killed) was
handed to the next one at once, and again, forever: it stayed ``processing`` and held a
worker. Each start is now counted, as a report's already are (``report_exports.attempts``),
so that the job ends ``failed`` once it has been tried as often as a job may be.
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("file_uploads") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("file_uploads") as batch:
        batch.drop_column("attempts")
