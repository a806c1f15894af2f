"""Database events for the inbox and the files: a change to notifications, files or file members
made through any SQLAlchemy session publishes, even if the code that made it enqueued nothing.

The companion of ``models/change_events.py`` (financial rows, parameters, reports), here because
its payloads are the services' own (a notification as the REST API shows it, with the badge's
counts). Registered when the ``services`` package is imported, as every API process and worker
does. At flush the session notes what changed; just before commit, every change no enqueued
event covers gets its event, in the same transaction:

- a notification added: ``notification`` (with ``unread_count``) on ``user:{id}``;
- a notification changed: ``notification_dismissed`` (dismissed), ``notification_read`` (read),
  ``notification_archived`` / ``notification_unarchived`` (archived_at set / cleared), else
  ``notification_updated`` (any other change: the notification with its counts); a
  notification deleted: ``notification_dismissed``. Covered when the transaction already
  enqueued an event of that type on that person's channel (the services' own), or when the
  caller said it announces that notification itself (:func:`announced_by_caller`: a digest
  that grew within its update interval is announced later by the inbox tick). Changes to
  bookkeeping columns only (``announced_*``, ``group_until``, ``expiry_announced_at``)
  publish nothing;
- a file's status changed: ``file_processing`` on ``file:{id}``. Marked as the processing's
  own (``models.change_events.service_change``: workers/processing.py, a retry), it is
  enqueued at the flush that writes it, before the events enqueued after it, with the
  processing's payload (``processed``/``total``/``percent``, ``error`` when failed); otherwise
  before commit with ``"source": "application"``. A file deleted: ``file_deleted`` (a file
  just added has nobody following it yet: nothing);
- a member added or removed (``file_members`` rows, ORM objects or an ``INSERT`` statement):
  ``file_members`` on ``file:{id}`` with the file's members after the commit.

Bulk ``update()`` / ``delete()`` statements on these tables are refused, as in
``models/change_events.py``, unless marked ``.execution_options(finrt_events="explicit")``.
The notification services make their changes with such marked statements (an ``INSERT ...
ON CONFLICT DO NOTHING``, conditional updates: of two concurrent requests only one changes the
row, and so only one publishes) and enqueue those events themselves; a digest that grows is
changed through its object and announced by the caller (:func:`announced_by_caller`).
On PostgreSQL, writes from outside the application are covered by the triggers of migration
``0008``; the application's own writes are left to these hooks there too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, inspect, select
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from models import File, FileMember, Notification
from models.change_events import EXPLICIT, BulkChangeRefused, enqueue_at_flush, is_service_change
from models.outbox import enqueue, enqueued
from services.notifications import iso, to_public, unread_count, with_counts
from streams.channels import file_channel, user_channel

_KEY = "finrt_inbox_changes"
_CALLER_KEY = "finrt_inbox_by_caller"
_TRACKED = (Notification, File, FileMember)
# Columns users never see: a change to only these is not news.
_BOOKKEEPING = frozenset({"announced_count", "announced_at", "group_until", "expiry_announced_at"})


def announced_by_caller(session: Session, notification_id: str) -> None:
    """The caller announces this notification's change itself (or on purpose later): the hooks
    enqueue nothing for it in this transaction."""
    session.info.setdefault(_CALLER_KEY, set()).add(notification_id)


@dataclass
class _Noted:
    # notification id -> (user id, event type, the notification or None when deleted)
    notifications: dict[str, tuple[str, str, Notification | None]] = field(default_factory=dict)
    files: dict[int, File] = field(default_factory=dict)
    deleted_files: set[int] = field(default_factory=set)
    members: set[int] = field(default_factory=set)


def _noted(session: Session) -> _Noted:
    found: _Noted | None = session.info.get(_KEY)
    if found is None:
        found = session.info[_KEY] = _Noted()
    return found


def _changed(obj: Any, name: str) -> bool:
    return bool(inspect(obj).attrs[name].history.has_changes())


def _notification_event(session: Session, n: Notification) -> str | None:
    if n in session.new:
        # Put away on arrival (a muted type is stored archived): nothing to show.
        hidden = n.is_dismissed or n.archived_at is not None or n.snoozed_until is not None
        return None if hidden else "notification"
    if n in session.deleted:
        return "notification_dismissed"
    state = inspect(n)
    if not any(a.history.has_changes() for a in state.attrs if a.key not in _BOOKKEEPING):
        return None
    if _changed(n, "is_dismissed") and n.is_dismissed:
        return "notification_dismissed"
    if _changed(n, "is_read") and n.is_read:
        return "notification_read"
    if _changed(n, "archived_at"):
        return "notification_archived" if n.archived_at else "notification_unarchived"
    return "notification_updated"


@event.listens_for(Session, "after_flush")
def _note_flushed(session: Session, _ctx: UOWTransaction) -> None:
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, Notification):
            kind = _notification_event(session, obj)
            if kind is not None:
                gone = obj in session.deleted
                _noted(session).notifications[obj.id] = (obj.user_id, kind, None if gone else obj)
        elif isinstance(obj, File):
            if obj in session.deleted:
                _noted(session).deleted_files.add(obj.id)
            elif obj not in session.new and _changed(obj, "status"):
                if is_service_change(obj):
                    data = _processing_event(obj)
                    channel = file_channel(obj.id)
                    enqueue_at_flush(session, channel, "file_processing", data, "file_processing")
                else:
                    _noted(session).files[obj.id] = obj
        elif isinstance(obj, FileMember):
            _noted(session).members.add(obj.file_id)


@event.listens_for(Session, "do_orm_execute")
def _note_bulk(state: ORMExecuteState) -> None:
    mapper = state.bind_mapper
    if mapper is None or mapper.class_ not in _TRACKED:
        return
    if state.execution_options.get(EXPLICIT) == "explicit" or not (
        state.is_insert or state.is_update or state.is_delete
    ):
        return
    if state.is_insert and mapper.class_ is FileMember:
        # An INSERT ... VALUES (services/files.py add_member): the file ids it names.
        statement: Any = state.statement
        params: dict[str, Any] = dict(statement.compile().params)
        params.update(*(p for p in _rows(state.parameters)))
        noted = _noted(state.session)
        for name, value in params.items():
            if (name == "file_id" or name.startswith("file_id_m")) and value is not None:
                noted.members.add(int(value))
        return
    table = getattr(mapper.local_table, "name", mapper.class_.__name__)
    raise BulkChangeRefused(
        f"a bulk statement on {table} through a session publishes no events: change objects "
        f"instead, or enqueue the events yourself and mark the statement with "
        f'.execution_options({EXPLICIT}="explicit")'
    )


def _rows(parameters: Any) -> list[dict[str, Any]]:
    if isinstance(parameters, list):
        return [p for p in parameters if isinstance(p, dict)]
    return [parameters] if isinstance(parameters, dict) else []


@event.listens_for(Session, "before_commit")
def _enqueue_uncovered(session: Session) -> None:
    session.flush()
    noted: _Noted | None = session.info.pop(_KEY, None)
    by_caller: set[str] = session.info.pop(_CALLER_KEY, set())
    if noted is None:
        return
    done = {(channel, kind) for channel, kind, _ in enqueued(session)}
    for nid, (user_id, kind, n) in sorted(noted.notifications.items()):
        channel = user_channel(user_id)
        if (channel, kind) in done or nid in by_caller:
            continue
        enqueue(session, channel, kind, _notification_data(session, kind, nid, user_id, n))
    for file_id, file in sorted(noted.files.items()):
        channel = file_channel(file_id)
        if (channel, "file_processing") in done or file_id in noted.deleted_files:
            continue
        enqueue(session, channel, "file_processing", _file_data(file), key="file_processing")
    for file_id in sorted(noted.deleted_files):
        enqueue(session, file_channel(file_id), "file_deleted", {"file_id": file_id})
    for file_id in sorted(noted.members - noted.deleted_files):
        data = members_data(session, file_id)
        if data is not None:
            enqueue(session, file_channel(file_id), "file_members", data, key="file_members")


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(_KEY, None)
        session.info.pop(_CALLER_KEY, None)


def _notification_data(
    session: Session, kind: str, nid: str, user_id: str, n: Notification | None
) -> dict[str, Any]:
    if kind == "notification" and n is not None:
        return {**to_public(n), "unread_count": unread_count(session, user_id)}
    if kind == "notification_read" and n is not None:
        count = unread_count(session, user_id)
        return {"id": nid, "read_at": iso(n.read_at), "unread_count": count}
    if kind == "notification_dismissed":
        return {"id": nid, "unread_count": unread_count(session, user_id)}
    if kind == "notification_archived" and n is not None:
        data = {"id": nid, "ids": [nid], "archived_at": iso(n.archived_at)}
        return with_counts(session, user_id, data)
    assert n is not None  # unarchived or updated: the notification as listed, with its counts
    return with_counts(session, user_id, to_public(n))


def _file_data(file: File) -> dict[str, Any]:
    status = file.status
    total = file.rows_total or 0
    done = status in ("processed", "failed")
    data: dict[str, Any] = {
        "status": status,
        "processed": total if done else 0,
        "total": total,
        "percent": 100 if done else 0,
        "source": "application",
    }
    if status == "failed":
        data["error"] = file.error
    return data


def _processing_event(file: File) -> dict[str, Any]:
    """The processing's own ``file_processing`` (workers/processing.py, a retry): a file
    starting over counts nothing yet; a failed one keeps its line count and says why."""
    status, total = file.status, file.rows_total
    if status == "processed":
        return {"status": status, "processed": total, "total": total, "percent": 100}
    if status == "failed":
        data = {"status": status, "processed": 0, "total": total, "percent": 100}
        return data | {"error": file.error}
    return {"status": status, "processed": 0, "total": 0, "percent": 0}


def members_data(session: Session, file_id: int) -> dict[str, Any] | None:
    """``{"file_id", "owner_id", "members": [{"user_id", "role"}], "updated_at"}``; None if the
    file is gone."""
    owner = session.scalar(select(File.owner_id).where(File.id == file_id))
    if owner is None:
        return None
    rows = session.execute(
        select(FileMember.user_id, FileMember.role)
        .where(FileMember.file_id == file_id)
        .order_by(FileMember.user_id)
    ).all()
    return {
        "file_id": file_id,
        "owner_id": owner,
        "members": [{"user_id": u, "role": r} for u, r in rows],
        "updated_at": iso(datetime.now(UTC)),
    }
