"""ORM-level database events: a change to the live tables made through any SQLAlchemy session
publishes, without the code that made it enqueueing anything.

Tracked: financial rows, file parameters and report exports (their status). Two forms:

- A change the service marks as its own (:func:`service_change`, data on the object; the
  services' parameter updates and report requests) is announced at the flush that writes it
  (enqueued in ``after_flush_postexec``, so its outbox row precedes every event enqueued later
  in the transaction, e.g. the recomputed metrics), with the payload the API documents for
  the service's event: ``parameter_update`` with the ``previous`` value (from the attribute
  history) and ``updated_at``; ``report_status`` on the file's and the requester's channels.
- Any other change is noted at flush and, just before commit, gets a generic event unless an
  already-enqueued event covers it (``financial_data_update`` per file and statement,
  ``parameter_update`` per parameter, ``report_status`` per report, each with
  ``"source": "application"``), in the same transaction.

On PostgreSQL the triggers (migration 0006) leave the application's writes alone, so each
change publishes once there too.

Bulk ``update()`` / ``delete()`` statements on the tracked tables executed through a session
cannot be described row by row: they are refused with :class:`BulkChangeRefused` unless the
statement says its events are enqueued by the caller
(``.execution_options(finrt_events="explicit")``; the services' conditional updates of a
report's status and the import's replacement of a file's rows). Bulk inserts of financial rows
are covered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from models.financial import FileParameter, FinancialDataRow, ReportExport
from models.outbox import enqueue, enqueued
from streams.channels import file_channel, user_channel

EXPLICIT = "finrt_events"  # execution option: "explicit" = the caller enqueues the events
_CHANGES_KEY = "finrt_changes"
_OWED_KEY = "finrt_owed_reports"
_AT_FLUSH_KEY = "finrt_at_flush"
_SERVICE = "finrt_service_change"  # InstanceState.info: the change is a service's own
MAX_PERIODS = 100


class BulkChangeRefused(RuntimeError):
    """A bulk UPDATE/DELETE of a tracked table whose events nobody would publish."""


@dataclass
class _Changes:
    financial: dict[tuple[int, str], tuple[int, set[str]]] = field(default_factory=dict)
    parameters: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    reports: dict[int, dict[str, Any]] = field(default_factory=dict)

    def row(self, file_id: int, statement: str, period: str) -> None:
        count, periods = self.financial.get((file_id, statement), (0, set()))
        periods.add(period)
        self.financial[(file_id, statement)] = (count + 1, periods)


def owe_report_events(session: Session, report_id: int) -> None:
    """The caller announces this report's events itself, later (or never, if it is discarded):
    the hooks enqueue none for it in this transaction."""
    session.info.setdefault(_OWED_KEY, set()).add(report_id)


def service_change(obj: object) -> None:
    """Say that ``obj``'s pending change is a service's own (data on the object, read by the
    hooks; nothing is enqueued here). The hooks then announce it at the flush that writes it,
    in the transaction's order, with the payload the API documents for the service's event (a
    parameter's ``previous`` value; no ``source``), instead of the generic one before commit."""
    inspect(obj).info[_SERVICE] = True


def is_service_change(obj: object) -> bool:
    """Whether ``obj`` carries :func:`service_change`'s mark; the mark is taken off."""
    return bool(inspect(obj).info.pop(_SERVICE, False))


def enqueue_at_flush(
    session: Session, channel: str, type: str, data: dict[str, Any], key: str | None
) -> None:
    """For a hook running in ``after_flush``: enqueue once the flush is over (the outbox row
    is written by the next flush, before any event enqueued after it)."""
    session.info.setdefault(_AT_FLUSH_KEY, []).append((channel, type, data, key))


def _changes(session: Session) -> _Changes:
    found: _Changes | None = session.info.get(_CHANGES_KEY)
    if found is None:
        found = session.info[_CHANGES_KEY] = _Changes()
    return found


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parameter_event(obj: FileParameter) -> dict[str, Any]:
    """services/files.py set_parameter's ``parameter_update``: the value it replaced too."""
    value = inspect(obj).attrs.value.history
    if value.deleted:
        previous = value.deleted[0]
    elif value.unchanged:  # set to the value it had
        previous = value.unchanged[0]
    else:  # a new parameter
        previous = None
    return {
        "file_id": obj.file_id,
        "name": obj.name,
        "value": obj.value,
        "previous": previous,
        "updated_by": obj.updated_by,
        "parameter_id": obj.name,
        "updated_at": _iso(obj.updated_at),
    }


def _report_event(obj: ReportExport) -> dict[str, Any]:
    """services/reports.py status_event: a report's status as its requester follows it."""
    status = obj.status
    return {
        "report_id": obj.id,
        "file_id": obj.file_id,
        "format": obj.format,
        "status": status,
        "percent": 100 if status in ("ready", "failed") else 0,
        "scheduled": obj.schedule_key is not None,
        "download_url": f"/api/v1/reports/{obj.id}/download" if status == "ready" else None,
        "error": obj.error,
    }


@event.listens_for(Session, "after_flush")
def _note_flushed(session: Session, _ctx: UOWTransaction) -> None:
    changes: _Changes | None = None
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, FinancialDataRow):
            changes = changes or _changes(session)
            changes.row(obj.file_id, obj.statement, obj.period)
        elif isinstance(obj, FileParameter):
            if obj not in session.deleted and is_service_change(obj):
                channel, key = file_channel(obj.file_id), f"parameter:{obj.name}"
                enqueue_at_flush(session, channel, "parameter_update", _parameter_event(obj), key)
                continue
            changes = changes or _changes(session)
            gone = obj in session.deleted
            changes.parameters[(obj.file_id, obj.name)] = {
                "value": None if gone else obj.value,
                "updated_by": obj.updated_by,
            }
        elif isinstance(obj, ReportExport):
            status = inspect(obj).attrs.status.history
            if obj in session.new or status.has_changes():
                if obj not in session.deleted and is_service_change(obj):
                    data, key = _report_event(obj), f"report:{obj.id}"
                    for target in (file_channel(obj.file_id), user_channel(obj.requested_by)):
                        enqueue_at_flush(session, target, "report_status", data, key)
                    continue
                changes = changes or _changes(session)
                changes.reports[obj.id] = {
                    "report_id": obj.id,
                    "file_id": obj.file_id,
                    "requested_by": obj.requested_by,
                    "format": obj.format,
                    "status": obj.status,
                    "scheduled": obj.schedule_key is not None,
                    "error": obj.error,
                }


@event.listens_for(Session, "after_flush_postexec")
def _enqueue_flushed(session: Session, _ctx: UOWTransaction) -> None:
    for channel, type, data, key in session.info.pop(_AT_FLUSH_KEY, []):
        enqueue(session, channel, type, data, key=key)


@event.listens_for(Session, "do_orm_execute")
def _note_bulk(state: ORMExecuteState) -> None:
    mapper = state.bind_mapper
    if mapper is None or mapper.class_ not in (FinancialDataRow, FileParameter, ReportExport):
        return
    if state.execution_options.get(EXPLICIT) == "explicit":
        return
    if state.is_insert and mapper.class_ is FinancialDataRow:
        params: Any = state.parameters
        rows: list[Any] = params if isinstance(params, list) else [params] if params else []
        changes = _changes(state.session)
        for row in rows:
            changes.row(int(row["file_id"]), str(row["statement"]), str(row["period"]))
        return
    if state.is_update or state.is_delete or state.is_insert:
        table = getattr(mapper.local_table, "name", mapper.class_.__name__)
        raise BulkChangeRefused(
            f"a bulk statement on {table} through a session publishes no events: change "
            f"objects instead, or enqueue the events yourself and mark the statement with "
            f'.execution_options({EXPLICIT}="explicit")'
        )


@event.listens_for(Session, "before_commit")
def _enqueue_uncovered(session: Session) -> None:
    session.flush()  # the commit's own flush comes after this hook: note its changes now
    changes: _Changes | None = session.info.pop(_CHANGES_KEY, None)
    owed: set[int] = session.info.pop(_OWED_KEY, set())
    if changes is None:
        return
    done = enqueued(session)
    now = _now()
    for (file_id, statement), (count, periods) in sorted(changes.financial.items()):
        channel = file_channel(file_id)
        if any(c == channel and t == "financial_data_update" for c, t, _ in done):
            continue
        ordered = sorted(periods)
        data = {
            "file_id": file_id,
            "statement_id": statement,
            "updated_at": now,
            "rows": count,
            "periods": ordered[:MAX_PERIODS],
            "periods_total": len(ordered),
            "source": "application",
        }
        enqueue(session, channel, "financial_data_update", data)
    for (file_id, name), values in sorted(changes.parameters.items()):
        channel, key = file_channel(file_id), f"parameter:{name}"
        if (channel, "parameter_update", key) in done:
            continue
        data = {
            "file_id": file_id,
            "name": name,
            "parameter_id": name,
            "value": values["value"],
            "updated_by": values["updated_by"],
            "updated_at": now,
            "source": "application",
        }
        enqueue(session, channel, "parameter_update", data, key=key)
    for report_id, values in sorted(changes.reports.items()):
        key = f"report:{report_id}"
        channel = file_channel(values["file_id"])
        if (channel, "report_status", key) in done or report_id in owed:
            continue
        status = values["status"]
        data = {k: v for k, v in values.items() if k != "requested_by"}
        data.update(
            percent=100 if status in ("ready", "failed") else 0,
            download_url=f"/api/v1/reports/{report_id}/download" if status == "ready" else None,
            source="application",
        )
        for target in (channel, user_channel(values["requested_by"])):
            enqueue(session, target, "report_status", data, key=key)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(_CHANGES_KEY, None)
        session.info.pop(_OWED_KEY, None)
        session.info.pop(_AT_FLUSH_KEY, None)
