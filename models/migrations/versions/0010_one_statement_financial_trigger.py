"""database events: a statement's financial summaries are written by one SQL statement

Revision ID: 0010
Revises: 0009

The statement triggers of financial rows (migrations 0006 and 0009) looped over their summaries
and called ``finrt_financial_emit`` for each, which called ``finrt_emit``, which inserted the
outbox row and notified: three PL/pgSQL calls and as many SQL statements per summary, and
``finrt_now()`` (an SQL function the planner cannot inline, since it reads the clock), whose
body PostgreSQL parses and plans again in every transaction. Measured on a 500-row statement
(track_functions, 2026-12-03): about 0.4-0.6 ms of trigger time, 0.06-0.1 ms of it in
``finrt_now()`` alone.

Now each trigger runs one statement: the summaries (grouped as before), inserted into the
outbox in (file, statement) order with the timestamp written inline, and one ``NOTIFY`` per
file, in file order. The events stay the same: one ``financial_data_update`` per file and
statement type per SQL statement, the same payload (built by the same ``jsonb_build_object``),
the moved rows' old places included, the same ``{"recalc": file}`` notifications in the same
order.
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# The summaries of the rows in ``{rows}`` (a query of file_id, statement, period), written to the
# outbox; {woken} receives the number of files notified.
SUMMARIES = """
    WITH summary AS (
      SELECT file_id, statement, sum(n)::bigint AS n, count(*) AS periods_total,
             (array_agg(period ORDER BY period))[1:100] AS periods
      FROM (SELECT file_id, statement, period, count(*) AS n FROM ({rows}) AS changed
            GROUP BY file_id, statement, period) AS by_period
      GROUP BY file_id, statement
    ), written AS (
      INSERT INTO outbox (token, channel, type, data, key, created_at, attempts)
      SELECT replace(gen_random_uuid()::text, '-', ''), 'file:' || file_id,
             'financial_data_update',
             jsonb_build_object(
               'file_id', file_id, 'statement_id', statement,
               'updated_at', to_char(clock_timestamp() AT TIME ZONE 'UTC',
                                     'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'rows', n, 'periods', to_jsonb(periods), 'periods_total', periods_total,
               'source', 'database')::text,
             NULL, clock_timestamp(), 0
      FROM summary ORDER BY file_id, statement
    )
    SELECT count(pg_notify('finrt_outbox', json_build_object('recalc', file_id)::text))
    {woken} FROM (SELECT DISTINCT file_id FROM summary ORDER BY file_id) AS files"""

NEW_ROWS = "SELECT file_id, statement, period FROM finrt_new"
OLD_ROWS = "SELECT file_id, statement, period FROM finrt_old"
# Migration 0006's UPDATE (what 0009's downgrade restores): the new rows and the old ones that
# left their file, statement or period.
NEW_AND_LEFT = """SELECT file_id, statement, period FROM finrt_new
            UNION ALL
            SELECT o.file_id, o.statement, o.period
            FROM finrt_old AS o JOIN finrt_new AS w ON w.id = o.id
            WHERE (o.file_id, o.statement, o.period)
                  IS DISTINCT FROM (w.file_id, w.statement, w.period)"""
NEW_AND_MOVED = (
    "SELECT file_id, statement, period FROM finrt_new "
    "UNION ALL SELECT file_id, statement, period FROM finrt_moved"
)


def _static(rows: str) -> str:
    return SUMMARIES.format(rows=rows, woken="INTO woken").strip() + ";"


def _dynamic(rows: str) -> str:
    """The same as a string literal for EXECUTE (finrt_moved exists only now and then)."""
    sql = SUMMARIES.format(rows=rows, woken="").strip()
    return "EXECUTE " + "'" + sql.replace("'", "''") + "' INTO woken;"


FUNCTIONS = rf"""
-- Each branch names only the transition tables its trigger has (a missing one fails at plan
-- time, even unreached).
CREATE OR REPLACE FUNCTION finrt_financial_rows_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  woken bigint;
BEGIN
  IF NOT finrt_outside() THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'INSERT' THEN
    {_static(NEW_ROWS)}
  ELSIF TG_OP = 'DELETE' THEN
    {_static(OLD_ROWS)}
  ELSE
    {_static(NEW_AND_LEFT)}
  END IF;
  RETURN NULL;
END $$;

-- Fired after the statement's row triggers: the new rows, and the old places of moved ones.
-- The usual case (nothing moved) is static SQL, planned once per session; the table of moved
-- rows is dropped after use, so a session that once moved rows comes back to it.
CREATE OR REPLACE FUNCTION finrt_financial_rows_updated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  woken bigint;
BEGIN
  IF NOT finrt_outside() THEN
    RETURN NULL;
  END IF;
  IF to_regclass('pg_temp.finrt_moved') IS NULL THEN
    {_static(NEW_ROWS)}
    RETURN NULL;
  END IF;
  {_dynamic(NEW_AND_MOVED)}
  EXECUTE 'DROP TABLE pg_temp.finrt_moved';
  RETURN NULL;
END $$;
"""

# Migrations 0006 and 0009's bodies, as they were.
DOWNGRADE = r"""
CREATE OR REPLACE FUNCTION finrt_financial_rows_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  IF NOT finrt_outside() THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'INSERT' THEN
    FOR r IN
      SELECT file_id, statement, sum(n)::bigint AS n, count(*) AS periods_total,
             (array_agg(period ORDER BY period))[1:100] AS periods
      FROM (SELECT file_id, statement, period, count(*) AS n
            FROM (SELECT file_id, statement, period FROM finrt_new) AS changed
            GROUP BY file_id, statement, period) AS by_period
      GROUP BY file_id, statement ORDER BY file_id, statement
    LOOP
      PERFORM finrt_financial_emit(r.file_id, r.statement, r.n, r.periods_total, r.periods);
    END LOOP;
  ELSIF TG_OP = 'DELETE' THEN
    FOR r IN
      SELECT file_id, statement, sum(n)::bigint AS n, count(*) AS periods_total,
             (array_agg(period ORDER BY period))[1:100] AS periods
      FROM (SELECT file_id, statement, period, count(*) AS n
            FROM (SELECT file_id, statement, period FROM finrt_old) AS changed
            GROUP BY file_id, statement, period) AS by_period
      GROUP BY file_id, statement ORDER BY file_id, statement
    LOOP
      PERFORM finrt_financial_emit(r.file_id, r.statement, r.n, r.periods_total, r.periods);
    END LOOP;
  ELSE
    -- The new rows, and the old ones that left their file, statement or period.
    FOR r IN
      SELECT file_id, statement, sum(n)::bigint AS n, count(*) AS periods_total,
             (array_agg(period ORDER BY period))[1:100] AS periods
      FROM (SELECT file_id, statement, period, count(*) AS n
            FROM (SELECT file_id, statement, period FROM finrt_new
            UNION ALL
            SELECT o.file_id, o.statement, o.period
            FROM finrt_old AS o JOIN finrt_new AS w ON w.id = o.id
            WHERE (o.file_id, o.statement, o.period)
                  IS DISTINCT FROM (w.file_id, w.statement, w.period)) AS changed
            GROUP BY file_id, statement, period) AS by_period
      GROUP BY file_id, statement ORDER BY file_id, statement
    LOOP
      PERFORM finrt_financial_emit(r.file_id, r.statement, r.n, r.periods_total, r.periods);
    END LOOP;
  END IF;
  RETURN NULL;
END $$;

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


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Driver SQL: text() would take ":MI" in a format string for a bind parameter.
    op.get_bind().exec_driver_sql(FUNCTIONS)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.get_bind().exec_driver_sql(DOWNGRADE)
