"""database events: an UPDATE of financial rows reads only its new rows

Revision ID: 0009
Revises: 0008

Migration 0006's UPDATE trigger asked PostgreSQL for both transition tables and joined them to
find rows that left their file, statement or period. Capturing the old rows and the join cost
an UPDATE about half its speed (far over the spec's 10% budget). Now the statement trigger
reads the new rows only; the rare rows that move are noted by a row trigger that fires only
when an UPDATE sets ``file_id``, ``statement`` or ``period`` to something else (a plain
``SET amount = ...`` never queues it), into a temporary table the statement trigger reads and
drops.
The events stay the same: one ``financial_data_update`` per file and statement type per SQL
statement, the moved rows' old places included.
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION finrt_financial_rows_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT finrt_outside() THEN
    RETURN NULL;
  END IF;
  IF to_regclass('pg_temp.finrt_moved') IS NULL THEN
    EXECUTE 'CREATE TEMP TABLE finrt_moved (file_id bigint, statement text, period text) '
            'ON COMMIT DROP';
  END IF;
  EXECUTE 'INSERT INTO finrt_moved VALUES ($1, $2, $3)'
    USING OLD.file_id, OLD.statement, OLD.period;
  RETURN NULL;
END $$;

-- Fired after the statement's row triggers: the new rows, and the old places of moved ones.
-- The usual case (nothing moved) is static SQL, planned once per session; the table of moved
-- rows is dropped after use, so a session that once moved rows comes back to it.
CREATE OR REPLACE FUNCTION finrt_financial_rows_updated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  IF NOT finrt_outside() THEN
    RETURN NULL;
  END IF;
  IF to_regclass('pg_temp.finrt_moved') IS NULL THEN
    FOR r IN
      SELECT file_id, statement, sum(n)::bigint AS n, count(*) AS periods_total,
             (array_agg(period ORDER BY period))[1:100] AS periods
      FROM (SELECT file_id, statement, period, count(*) AS n FROM finrt_new
            GROUP BY file_id, statement, period) AS by_period
      GROUP BY file_id, statement ORDER BY file_id, statement
    LOOP
      PERFORM finrt_financial_emit(r.file_id, r.statement, r.n, r.periods_total, r.periods);
    END LOOP;
    RETURN NULL;
  END IF;
  FOR r IN EXECUTE
    'SELECT file_id, statement, sum(n)::bigint AS n, count(*) AS periods_total, '
    '       (array_agg(period ORDER BY period))[1:100] AS periods '
    'FROM (SELECT file_id, statement, period, count(*) AS n FROM ('
    '        SELECT file_id, statement, period FROM finrt_new '
    '        UNION ALL SELECT file_id, statement, period FROM finrt_moved) AS c '
    '      GROUP BY file_id, statement, period) AS by_period '
    'GROUP BY file_id, statement ORDER BY file_id, statement'
  LOOP
    PERFORM finrt_financial_emit(r.file_id, r.statement, r.n, r.periods_total, r.periods);
  END LOOP;
  EXECUTE 'DROP TABLE pg_temp.finrt_moved';
  RETURN NULL;
END $$;
"""

TRIGGERS = """
DROP TRIGGER IF EXISTS finrt_financial_rows_upd ON financial_rows;
CREATE TRIGGER finrt_financial_rows_moved AFTER UPDATE OF file_id, statement, period
  ON financial_rows FOR EACH ROW
  WHEN ((OLD.file_id, OLD.statement, OLD.period) IS DISTINCT FROM
        (NEW.file_id, NEW.statement, NEW.period))
  EXECUTE FUNCTION finrt_financial_rows_moved();
CREATE TRIGGER finrt_financial_rows_upd AFTER UPDATE ON financial_rows
  REFERENCING NEW TABLE AS finrt_new
  FOR EACH STATEMENT EXECUTE FUNCTION finrt_financial_rows_updated();
"""

DOWNGRADE = """
DROP TRIGGER IF EXISTS finrt_financial_rows_upd ON financial_rows;
DROP TRIGGER IF EXISTS finrt_financial_rows_moved ON financial_rows;
DROP FUNCTION IF EXISTS finrt_financial_rows_updated();
DROP FUNCTION IF EXISTS finrt_financial_rows_moved();
CREATE TRIGGER finrt_financial_rows_upd AFTER UPDATE ON financial_rows
  REFERENCING OLD TABLE AS finrt_old NEW TABLE AS finrt_new
  FOR EACH STATEMENT EXECUTE FUNCTION finrt_financial_rows_changed();
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.get_bind().exec_driver_sql(FUNCTIONS)
    op.get_bind().exec_driver_sql(TRIGGERS)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.get_bind().exec_driver_sql(DOWNGRADE)
