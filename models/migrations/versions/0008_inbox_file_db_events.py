"""database events for notifications, files and file members written from outside

Revision ID: 0008
Revises: 0007

The same rule as migration 0006: writes made by the application (``finrt.origin = 'app'``)
publish through their own outbox rows (the services, or the ORM hooks of
services/announce_changes.py); every other client's changes are recorded here, in the
writer's transaction, with the payloads the services give:

- ``notifications``: a row added (not dismissed, archived or snoozed: those are put away on
  arrival) gives ``notification`` with ``unread_count``; a row changed gives
  ``notification_dismissed``, ``notification_read``, ``notification_archived``,
  ``notification_unarchived`` or else ``notification_updated`` (bookkeeping columns alone give
  nothing); a row deleted gives ``notification_dismissed``. Each with the person's counts.
- ``files``: a status changed gives ``file_processing``; a row deleted gives ``file_deleted``.
- ``file_members``: one ``file_members`` per file and SQL statement (transition tables), with
  the file's members after it.
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION finrt_iso(ts timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- The badge's figures, as services/notifications.py counts them (listed: not dismissed,
-- expired, snoozed or archived).
CREATE OR REPLACE FUNCTION finrt_counts(p_user text) RETURNS jsonb LANGUAGE sql STABLE AS $$
  WITH listed AS (
    SELECT is_read, seen_at, priority FROM notifications
    WHERE user_id = p_user AND NOT is_dismissed AND (expires_at IS NULL OR expires_at > now())
      AND snoozed_until IS NULL AND archived_at IS NULL
  )
  SELECT jsonb_build_object(
    'unseen', (SELECT count(*) FROM listed WHERE seen_at IS NULL),
    'unread', (SELECT count(*) FROM listed WHERE NOT is_read),
    'by_priority', jsonb_build_object(
      'low', (SELECT count(*) FROM listed WHERE NOT is_read AND priority = 'low'),
      'normal', (SELECT count(*) FROM listed WHERE NOT is_read AND priority = 'normal'),
      'high', (SELECT count(*) FROM listed WHERE NOT is_read AND priority = 'high'),
      'urgent', (SELECT count(*) FROM listed WHERE NOT is_read AND priority = 'urgent')))
$$;

CREATE OR REPLACE FUNCTION finrt_with_counts(p_user text, p_data jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT p_data || jsonb_build_object('unread_count', c -> 'unread', 'counts', c)
  FROM finrt_counts(p_user) AS c
$$;

-- A notification as the REST API shows it (services/notifications.py to_public): an
-- action's "op" and "args" stay inside.
CREATE OR REPLACE FUNCTION finrt_notification_public(n notifications) RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'id', n.id, 'type', n.type, 'title', n.title, 'message', n.message,
    'data', coalesce(nullif(n.data::jsonb, 'null'::jsonb), '{}'::jsonb),
    'priority', n.priority, 'is_read', n.is_read, 'is_dismissed', n.is_dismissed,
    'created_at', finrt_iso(n.created_at), 'read_at', finrt_iso(n.read_at),
    'expires_at', finrt_iso(n.expires_at), 'seen_at', finrt_iso(n.seen_at),
    'archived_at', finrt_iso(n.archived_at), 'snoozed_until', finrt_iso(n.snoozed_until),
    'actions', coalesce((
      SELECT jsonb_agg(jsonb_build_object(
               'label', a -> 'label', 'kind', a -> 'kind',
               'url', CASE WHEN a ->> 'kind' = 'link' THEN a -> 'url' END,
               'done_at', a -> 'done_at') ORDER BY ord)
      FROM jsonb_array_elements(coalesce(nullif(n.actions::jsonb, 'null'::jsonb), '[]'::jsonb))
           WITH ORDINALITY AS t(a, ord)), '[]'::jsonb),
    'count', coalesce(n.count, 1))
$$;

CREATE OR REPLACE FUNCTION finrt_notification_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  channel text;
BEGIN
  IF NOT finrt_outside() THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'INSERT' THEN
    IF NEW.is_dismissed OR NEW.archived_at IS NOT NULL OR NEW.snoozed_until IS NOT NULL THEN
      RETURN NULL;
    END IF;
    PERFORM finrt_emit('user:' || NEW.user_id, 'notification',
      finrt_notification_public(NEW)
        || jsonb_build_object('unread_count', finrt_counts(NEW.user_id) -> 'unread'),
      NULL, NULL);
    RETURN NULL;
  END IF;
  IF TG_OP = 'DELETE' THEN
    PERFORM finrt_emit('user:' || OLD.user_id, 'notification_dismissed',
      jsonb_build_object('id', OLD.id, 'unread_count', finrt_counts(OLD.user_id) -> 'unread'),
      NULL, NULL);
    RETURN NULL;
  END IF;
  channel := 'user:' || NEW.user_id;
  IF (NEW.type, NEW.title, NEW.message, NEW.data::text, NEW.priority, NEW.is_read,
      NEW.is_dismissed, NEW.created_at, NEW.read_at, NEW.expires_at, NEW.seen_at,
      NEW.archived_at, NEW.snoozed_until, NEW.actions::text, NEW.count)
     IS NOT DISTINCT FROM
     (OLD.type, OLD.title, OLD.message, OLD.data::text, OLD.priority, OLD.is_read,
      OLD.is_dismissed, OLD.created_at, OLD.read_at, OLD.expires_at, OLD.seen_at,
      OLD.archived_at, OLD.snoozed_until, OLD.actions::text, OLD.count) THEN
    RETURN NULL;  -- bookkeeping only (announced_*, group_until, expiry_announced_at)
  ELSIF NEW.is_dismissed AND NOT OLD.is_dismissed THEN
    PERFORM finrt_emit(channel, 'notification_dismissed',
      jsonb_build_object('id', NEW.id, 'unread_count', finrt_counts(NEW.user_id) -> 'unread'),
      NULL, NULL);
  ELSIF NEW.is_read AND NOT OLD.is_read THEN
    PERFORM finrt_emit(channel, 'notification_read',
      jsonb_build_object('id', NEW.id, 'read_at', finrt_iso(NEW.read_at),
                         'unread_count', finrt_counts(NEW.user_id) -> 'unread'),
      NULL, NULL);
  ELSIF NEW.archived_at IS DISTINCT FROM OLD.archived_at AND NEW.archived_at IS NOT NULL THEN
    PERFORM finrt_emit(channel, 'notification_archived',
      finrt_with_counts(NEW.user_id, jsonb_build_object(
        'id', NEW.id, 'ids', jsonb_build_array(NEW.id),
        'archived_at', finrt_iso(NEW.archived_at))),
      NULL, NULL);
  ELSIF NEW.archived_at IS DISTINCT FROM OLD.archived_at THEN
    PERFORM finrt_emit(channel, 'notification_unarchived',
      finrt_with_counts(NEW.user_id, finrt_notification_public(NEW)), NULL, NULL);
  ELSE
    PERFORM finrt_emit(channel, 'notification_updated',
      finrt_with_counts(NEW.user_id, finrt_notification_public(NEW)), NULL, NULL);
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION finrt_file_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  done boolean;
  data jsonb;
BEGIN
  IF NOT finrt_outside() THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'DELETE' THEN
    PERFORM finrt_emit('file:' || OLD.id, 'file_deleted', jsonb_build_object('file_id', OLD.id),
                       NULL, NULL);
    RETURN NULL;
  END IF;
  done := NEW.status IN ('processed', 'failed');
  data := jsonb_build_object(
    'status', NEW.status, 'processed', CASE WHEN done THEN NEW.rows_total ELSE 0 END,
    'total', coalesce(NEW.rows_total, 0), 'percent', CASE WHEN done THEN 100 ELSE 0 END,
    'source', 'database');
  IF NEW.status = 'failed' THEN
    data := data || jsonb_build_object('error', NEW.error);
  END IF;
  PERFORM finrt_emit('file:' || NEW.id, 'file_processing', data, 'file_processing', NULL);
  RETURN NULL;
END $$;

-- One file_members per file of the statement: the members after it.
CREATE OR REPLACE FUNCTION finrt_file_members_emit(p_file bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  owner text;
BEGIN
  SELECT owner_id INTO owner FROM files WHERE id = p_file;
  IF owner IS NULL THEN
    RETURN;  -- the file itself went (its file_deleted says so)
  END IF;
  PERFORM finrt_emit('file:' || p_file, 'file_members', jsonb_build_object(
    'file_id', p_file, 'owner_id', owner, 'updated_at', finrt_now(),
    'members', coalesce((
      SELECT jsonb_agg(jsonb_build_object('user_id', user_id, 'role', role) ORDER BY user_id)
      FROM file_members WHERE file_id = p_file), '[]'::jsonb)),
    'file_members', NULL);
END $$;

CREATE OR REPLACE FUNCTION finrt_file_members_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  f bigint;
BEGIN
  IF NOT finrt_outside() THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'INSERT' THEN
    FOR f IN SELECT DISTINCT file_id FROM finrt_new ORDER BY 1 LOOP
      PERFORM finrt_file_members_emit(f);
    END LOOP;
  ELSIF TG_OP = 'DELETE' THEN
    FOR f IN SELECT DISTINCT file_id FROM finrt_old ORDER BY 1 LOOP
      PERFORM finrt_file_members_emit(f);
    END LOOP;
  ELSE
    FOR f IN SELECT file_id FROM finrt_new UNION SELECT file_id FROM finrt_old ORDER BY 1 LOOP
      PERFORM finrt_file_members_emit(f);
    END LOOP;
  END IF;
  RETURN NULL;
END $$;
"""

TRIGGERS = """
CREATE TRIGGER finrt_notifications AFTER INSERT OR UPDATE OR DELETE ON notifications
  FOR EACH ROW EXECUTE FUNCTION finrt_notification_changed();
CREATE TRIGGER finrt_files_status AFTER UPDATE OF status ON files
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
  EXECUTE FUNCTION finrt_file_changed();
CREATE TRIGGER finrt_files_del AFTER DELETE ON files
  FOR EACH ROW EXECUTE FUNCTION finrt_file_changed();
CREATE TRIGGER finrt_file_members_ins AFTER INSERT ON file_members
  REFERENCING NEW TABLE AS finrt_new
  FOR EACH STATEMENT EXECUTE FUNCTION finrt_file_members_changed();
CREATE TRIGGER finrt_file_members_upd AFTER UPDATE ON file_members
  REFERENCING OLD TABLE AS finrt_old NEW TABLE AS finrt_new
  FOR EACH STATEMENT EXECUTE FUNCTION finrt_file_members_changed();
CREATE TRIGGER finrt_file_members_del AFTER DELETE ON file_members
  REFERENCING OLD TABLE AS finrt_old
  FOR EACH STATEMENT EXECUTE FUNCTION finrt_file_members_changed();
"""

DROP = """
DROP TRIGGER IF EXISTS finrt_notifications ON notifications;
DROP TRIGGER IF EXISTS finrt_files_status ON files;
DROP TRIGGER IF EXISTS finrt_files_del ON files;
DROP TRIGGER IF EXISTS finrt_file_members_ins ON file_members;
DROP TRIGGER IF EXISTS finrt_file_members_upd ON file_members;
DROP TRIGGER IF EXISTS finrt_file_members_del ON file_members;
DROP FUNCTION IF EXISTS finrt_file_members_changed();
DROP FUNCTION IF EXISTS finrt_file_members_emit(bigint);
DROP FUNCTION IF EXISTS finrt_file_changed();
DROP FUNCTION IF EXISTS finrt_notification_changed();
DROP FUNCTION IF EXISTS finrt_notification_public(notifications);
DROP FUNCTION IF EXISTS finrt_with_counts(text, jsonb);
DROP FUNCTION IF EXISTS finrt_counts(text);
DROP FUNCTION IF EXISTS finrt_iso(timestamptz);
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
