"""files: on SQLite, a deleted file's id is never given to a new file

Revision ID: 0018
Revises: 0017

A file's id names its channel (``file:{id}``), whose history, presence and cached grants live
in Redis. SQLite gives a new row the highest id in the table plus one, so after the newest
file was deleted (from outside the API: ``sqlite3``, a script) the next upload got its id, and
its owner could replay the deleted file's events from history. ``AUTOINCREMENT`` makes SQLite
remember the highest id ever given (``sqlite_sequence``). SQLite cannot add it to a table, so
the table is rebuilt (with foreign keys off for the migration: see env.py; the rebuild keeps
every id, so the rows that refer to files are untouched). PostgreSQL's identity never hands
out an id twice already: nothing to do there.
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "files", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ):
        pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "files", recreate="always", table_kwargs={"sqlite_autoincrement": False}
    ):
        pass
