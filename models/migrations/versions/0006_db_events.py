"""database events: PostgreSQL triggers that write changes made from outside into the outbox

Revision ID: 0006
Revises: 0005

Writes made by the application set ``finrt.origin = 'app'`` on their connection (models/db.py)
and publish their own, richer events through the outbox; every other client (psql, another
service) leaves it unset, and these triggers record its changes: one ``financial_data_update``
per file, statement and SQL statement (transition tables, so a 100,000-row UPDATE gives a few
events, not 100,000), a ``parameter_update`` per parameter row and a ``report_status`` per
report row. Each also wakes the relay (``NOTIFY finrt_outbox``); changes to financial rows and
parameters ask it for a recalculation of the file. SQLite has no triggers of ours: there the
application is the only writer.
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION finrt_outside() RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT coalesce(current_setting('finrt.origin', true), '') <> 'app'
$$;

CREATE OR REPLACE FUNCTION finrt_now() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE OR REPLACE FUNCTION finrt_emit(
  p_channel text, p_type text, p_data jsonb, p_key text, p_recalc bigint
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO outbox (token, channel, type, data, key, created_at, attempts)
  VALUES (replace(gen_random_uuid()::text, '-', ''), p_channel, p_type, p_data::text, p_key,
          clock_timestamp(), 0);
  -- Delivered at commit only (nothing for a rolled-back change), once per distinct payload.
  PERFORM pg_notify('finrt_outbox', json_build_object('recalc', p_recalc)::text);
END $$;

CREATE OR REPLACE FUNCTION finrt_financial_emit(
  p_file bigint, p_statement text, p_rows bigint, p_periods_total bigint, p_periods text[]
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM finrt_emit(
    'file:' || p_file, 'financial_data_update',
    jsonb_build_object(
      'file_id', p_file, 'statement_id', p_statement, 'updated_at', finrt_now(),
      'rows', p_rows, 'periods', to_jsonb(p_periods), 'periods_total', p_periods_total,
      'source', 'database'),
    NULL, p_file);
END $$;

-- One event per file and statement type of each SQL statement, with the rows it touched and
-- the periods (grouped by period first: hashing, not sorting, the statement's rows). Each
-- branch names only the transition tables its trigger has (a missing one fails at plan time,
-- even unreached).
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

CREATE OR REPLACE FUNCTION finrt_parameter_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  cur record;
  prev text;
BEGIN
  IF NOT finrt_outside() THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'DELETE' THEN
    cur := OLD;
  ELSE
    cur := NEW;
  END IF;
  prev := CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.value END;
  PERFORM finrt_emit(
    'file:' || cur.file_id, 'parameter_update',
    jsonb_build_object(
      'file_id', cur.file_id, 'name', cur.name, 'parameter_id', cur.name,
      'value', CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE cur.value END, 'previous', prev,
      'updated_by', cur.updated_by, 'updated_at', finrt_now(), 'source', 'database'),
    'parameter:' || cur.name, cur.file_id);
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION finrt_report_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  data jsonb;
BEGIN
  IF NOT finrt_outside() OR NEW.status IS NOT DISTINCT FROM OLD.status THEN
    RETURN NULL;
  END IF;
  data := jsonb_build_object(
    'report_id', NEW.id, 'file_id', NEW.file_id, 'format', NEW.format, 'status', NEW.status,
    'percent', CASE WHEN NEW.status IN ('ready', 'failed') THEN 100 ELSE 0 END,
    'scheduled', NEW.schedule_key IS NOT NULL,
    'download_url', CASE WHEN NEW.status = 'ready'
                         THEN '/api/v1/reports/' || NEW.id || '/download' END,
    'error', NEW.error, 'source', 'database');
  PERFORM finrt_emit('file:' || NEW.file_id, 'report_status', data, 'report:' || NEW.id, NULL);
  PERFORM finrt_emit('user:' || NEW.requested_by, 'report_status', data, 'report:' || NEW.id,
                     NULL);
  RETURN NULL;
END $$;
"""

TRIGGERS = """
CREATE TRIGGER finrt_financial_rows_ins AFTER INSERT ON financial_rows
  REFERENCING NEW TABLE AS finrt_new
  FOR EACH STATEMENT EXECUTE FUNCTION finrt_financial_rows_changed();
CREATE TRIGGER finrt_financial_rows_upd AFTER UPDATE ON financial_rows
  REFERENCING OLD TABLE AS finrt_old NEW TABLE AS finrt_new
  FOR EACH STATEMENT EXECUTE FUNCTION finrt_financial_rows_changed();
CREATE TRIGGER finrt_financial_rows_del AFTER DELETE ON financial_rows
  REFERENCING OLD TABLE AS finrt_old
  FOR EACH STATEMENT EXECUTE FUNCTION finrt_financial_rows_changed();
CREATE TRIGGER finrt_parameters AFTER INSERT OR UPDATE OR DELETE ON file_parameters
  FOR EACH ROW EXECUTE FUNCTION finrt_parameter_changed();
CREATE TRIGGER finrt_reports AFTER UPDATE ON report_exports
  FOR EACH ROW EXECUTE FUNCTION finrt_report_changed();
"""

DROP = """
DROP TRIGGER IF EXISTS finrt_financial_rows_ins ON financial_rows;
DROP TRIGGER IF EXISTS finrt_financial_rows_upd ON financial_rows;
DROP TRIGGER IF EXISTS finrt_financial_rows_del ON financial_rows;
DROP TRIGGER IF EXISTS finrt_parameters ON file_parameters;
DROP TRIGGER IF EXISTS finrt_reports ON report_exports;
DROP FUNCTION IF EXISTS finrt_financial_rows_changed();
DROP FUNCTION IF EXISTS finrt_parameter_changed();
DROP FUNCTION IF EXISTS finrt_report_changed();
DROP FUNCTION IF EXISTS finrt_financial_emit(bigint, text, bigint, bigint, text[]);
DROP FUNCTION IF EXISTS finrt_emit(text, text, jsonb, text, bigint);
DROP FUNCTION IF EXISTS finrt_now();
DROP FUNCTION IF EXISTS finrt_outside();
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Driver SQL: text() would take ":MI" in a format string for a bind parameter.
    op.get_bind().exec_driver_sql(FUNCTIONS)
    op.get_bind().exec_driver_sql(TRIGGERS)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.get_bind().exec_driver_sql(DROP)
