"""database events: a statement's financial summaries are one INSERT, its wake-ups inside it

Revision ID: 0011
Revises: 0010

Migration 0010's trigger statement grouped the rows into a CTE, inserted the outbox rows from it
in a second, data-modifying CTE, and read the CTE again (with a sort for ``DISTINCT``) to send
one ``NOTIFY`` per file: three sorts, a materialised CTE and two scans of it for what is, in the
usual case, one summary. Now it is one ``INSERT ... SELECT``: the periods grouped (a hash
aggregate over the transition table, as before), then the summaries in (file, statement)
order (PostgreSQL 15 groups them with a sorted aggregate, since ``array_agg`` is ordered, and
evaluates volatile calls such as ``pg_notify`` after any sort for ``ORDER BY``), each inserted
with its payload built as before and its file's ``pg_notify`` called on the way. PostgreSQL drops a notification that repeats one already sent in the
transaction, so the wake-ups are the same: one per file, in file order, delivered at commit.
Measured with bench/db_events.py (docs/performance.md, 2026-12-03, eight runs of each): the
server's extra CPU time for a 500-row UPDATE of amount about half a point lower (medians 12.8%
against 13.4% with 0010); most of what is left is the transition table, the grouping and the
outbox row, which 0011 does not change.

The events stay the same: one ``financial_data_update`` per file and statement type per SQL
statement, the same payload text (built by the same ``jsonb_build_object``), the same
(file, statement) order, the moved rows' old places included, the same ``{"recalc": file}``
notifications in the same order.
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# The summaries of the rows in ``{rows}`` (a query of file_id, statement, period), written to the
# outbox in (file, statement) order. ``attempts`` is 0; the CASE only carries the file's
# pg_notify (which returns void, never NULL), evaluated per summary in that order.
SUMMARIES = """
    INSERT INTO outbox (token, channel, type, data, key, created_at, attempts)
    SELECT replace(gen_random_uuid()::text, '-', ''), 'file:' || file_id,
           'financial_data_update',
           jsonb_build_object(
             'file_id', file_id, 'statement_id', statement,
             'updated_at', to_char(clock_timestamp() AT TIME ZONE 'UTC',
                                   'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
             'rows', sum(n)::bigint,
             'periods', to_jsonb((array_agg(period ORDER BY period))[1:100]),
             'periods_total', count(*), 'source', 'database')::text,
           NULL, clock_timestamp(),
           CASE WHEN pg_notify('finrt_outbox', json_build_object('recalc', file_id)::text) IS NULL
                THEN 0 ELSE 0 END
    FROM (SELECT file_id, statement, period, count(*) AS n FROM ({rows}) AS changed
          GROUP BY file_id, statement, period) AS by_period
    GROUP BY file_id, statement ORDER BY file_id, statement"""

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
    return SUMMARIES.format(rows=rows).strip() + ";"


def _dynamic(rows: str) -> str:
    """The same as a string literal for EXECUTE (finrt_moved exists only now and then)."""
    sql = SUMMARIES.format(rows=rows).strip()
    return "EXECUTE " + "'" + sql.replace("'", "''") + "';"


FUNCTIONS = rf"""
-- Each branch names only the transition tables its trigger has (a missing one fails at plan
-- time, even unreached).
CREATE OR REPLACE FUNCTION finrt_financial_rows_changed() RETURNS trigger LANGUAGE plpgsql AS $$
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

# Migration 0010's statement, as it was (what the downgrade restores).
SUMMARIES_0010 = """
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


def _static_0010(rows: str) -> str:
    return SUMMARIES_0010.format(rows=rows, woken="INTO woken").strip() + ";"


def _dynamic_0010(rows: str) -> str:
    sql = SUMMARIES_0010.format(rows=rows, woken="").strip()
    return "EXECUTE " + "'" + sql.replace("'", "''") + "' INTO woken;"


DOWNGRADE = rf"""
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
    {_static_0010(NEW_ROWS)}
  ELSIF TG_OP = 'DELETE' THEN
    {_static_0010(OLD_ROWS)}
  ELSE
    {_static_0010(NEW_AND_LEFT)}
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
    {_static_0010(NEW_ROWS)}
    RETURN NULL;
  END IF;
  {_dynamic_0010(NEW_AND_MOVED)}
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
