"""database events: a TRUNCATE from outside the application is refused, not left unannounced

Revision ID: 0014
Revises: 0013

``TRUNCATE`` fires no row or statement triggers of ``DELETE`` and has no transition tables, so
the database-events triggers (migrations 0006 and 0008) never saw it: a ``TRUNCATE
financial_rows`` (or of parameters, notifications, reports, files or members) from psql left
every open dashboard and inbox showing what no longer existed, with figures computed from rows
that were gone. As the ORM hooks refuse a bulk statement they cannot announce, these tables now
refuse a ``TRUNCATE`` from outside the application (``finrt.origin`` not ``'app'``), with a hint:
``DELETE`` announces what it removes; a client that truly wants no events says so with ``SET
finrt.origin = 'app'`` first.
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TABLES = (
    "financial_rows",
    "file_parameters",
    "report_exports",
    "notifications",
    "files",
    "file_members",
)

FUNCTION = r"""
CREATE OR REPLACE FUNCTION finrt_truncate_refused() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF finrt_outside() THEN
    RAISE EXCEPTION USING
      MESSAGE = 'TRUNCATE of ' || TG_TABLE_NAME
                || ' is refused: it would not be announced to open dashboards and inboxes',
      ERRCODE = 'feature_not_supported',
            HINT = 'DELETE FROM ' || TG_TABLE_NAME || ' announces what it removes; '
                   || 'or SET finrt.origin = ''app'' first to truncate without any event';
  END IF;
  RETURN NULL;
END $$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.get_bind().exec_driver_sql(FUNCTION)
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER finrt_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION finrt_truncate_refused()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS finrt_truncate ON {table}")
    op.execute("DROP FUNCTION IF EXISTS finrt_truncate_refused()")
