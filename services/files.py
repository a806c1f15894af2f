"""Files: uploads, listing, the dashboard snapshot, parameters and sharing.

Plain functions over a session, no HTTP; the caller commits. Every change's events go through
the outbox in the same transaction (a parameter's from the ORM hooks, the recomputed figures
enqueued here), so nothing reaches a browser unless the change committed. Processing an upload
is the worker's part (``workers/processing.py``).
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from domain.csv_import import FinancialRow
from domain.metrics import (
    ChartSeries,
    Dashboard,
    build_dashboard,
    chart_to_json,
    diff_dashboards,
    metric_to_json,
    validate_parameter,
)
from models import DashboardSnapshot, File, FileMember, FileParameter, FileUpload, enqueue
from models.base import Base, utcnow
from models.change_events import service_change
from models.financial import FinancialDataRow
from services.access import ensure_user
from services.notify import create_notification
from streams.channels import USER_ID_RE, file_channel, user_channel

log = logging.getLogger("finrt.files")

__all__ = [
    "MAX_EVENT_POINTS",
    "USER_ID_RE",
    "add_member",
    "clean_file_name",
    "create_upload",
    "dashboard_public",
    "enqueue_dashboard_events",
    "file_channel",
    "file_public",
    "files_for",
    "insert_unless_present",
    "load_parameters",
    "lock_snapshot",
    "owner_of",
    "read_rows",
    "recalculate",
    "role_of",
    "set_parameter",
    "stored_dashboard",
    "user_channel",
]

# Chart points and periods carried by one event (about 45 bytes each; events are capped at
# FINRT_MAX_EVENT_BYTES, 64 KiB by default).
MAX_EVENT_POINTS = 500


def _iso(value: Any) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount or 0)


# -- uploads ---------------------------------------------------------------------------------


def clean_file_name(raw: str | None) -> str:
    """A display name from an uploaded file name: no path, no control characters, 1-255."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return name[:255] or "upload.csv"


def create_upload(session: Session, owner_id: str, name: str, content: bytes, job_id: str) -> File:
    """A queued file with its bytes and an empty dashboard snapshot."""
    ensure_user(session, owner_id)
    file = File(owner_id=owner_id, name=name, status="queued")
    session.add(file)
    session.flush()
    session.add(
        FileUpload(
            file_id=file.id,
            job_id=job_id,
            size_bytes=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            content=content,
        )
    )
    session.add(DashboardSnapshot(file_id=file.id, version=0, data=None))
    return file


# -- reading ---------------------------------------------------------------------------------


def files_for(session: Session, user_id: str) -> list[tuple[File, str]]:
    """The user's files, owned and shared, newest first, each with the user's role."""
    shared = select(FileMember.file_id).where(FileMember.user_id == user_id)
    files = session.scalars(
        select(File)
        .where(or_(File.owner_id == user_id, File.id.in_(shared)))
        .order_by(File.created_at.desc(), File.id.desc())
    )
    return [(f, "owner" if f.owner_id == user_id else "member") for f in files]


def owner_of(session: Session, file_id: int) -> str | None:
    return session.scalar(select(File.owner_id).where(File.id == file_id))


def role_of(file: File, user_id: str) -> str:
    return "owner" if file.owner_id == user_id else "member"


def file_public(file: File, role: str) -> dict[str, Any]:
    return {
        "id": file.id,
        "name": file.name,
        "owner_id": file.owner_id,
        "role": role,
        "status": file.status,
        "rows_total": file.rows_total,
        "rows_ok": file.rows_ok,
        "rows_bad": file.rows_bad,
        "error": file.error,
        "created_at": _iso(file.created_at),
        "updated_at": _iso(file.updated_at),
    }


def load_parameters(session: Session, file_id: int) -> dict[str, Decimal]:
    """The file's parameters. One written outside the application that the API would refuse
    (``'0,25'``, out of range, an unknown name) is left out, as if unset, and logged: the
    dashboard, reports and recalculations go on with the rest."""
    rows = session.execute(
        select(FileParameter.name, FileParameter.value).where(FileParameter.file_id == file_id)
    )
    found: dict[str, Decimal] = {}
    for name, value in rows:
        try:
            found[name] = validate_parameter(name, value)
        except ValueError as exc:
            log.warning("file %s: stored parameter %r ignored: %s", file_id, name[:64], exc)
    return found


def read_rows(session: Session, file_id: int) -> list[FinancialRow]:
    """The file's accepted rows, in upload order."""
    result = session.execute(
        select(
            FinancialDataRow.period,
            FinancialDataRow.statement,
            FinancialDataRow.line_item,
            FinancialDataRow.amount,
            FinancialDataRow.currency,
        )
        .where(FinancialDataRow.file_id == file_id)
        .order_by(FinancialDataRow.position)
    )
    return [FinancialRow(p, s, i, Decimal(a), c) for p, s, i, a, c in result]


def dashboard_public(session: Session, file: File, period: str = "month") -> dict[str, Any]:
    """The snapshot: ``{file_id, status, period, currency, metrics, charts, parameters}``.

    Monthly figures are the stored snapshot (what the file's events move); quarterly and
    yearly ones are computed from the stored rows on each read, once the file has a snapshot.
    """
    snapshot = session.get(DashboardSnapshot, file.id)
    data = (snapshot.data if snapshot is not None else None) or {}
    if data and period != "month":
        rows = read_rows(session, file.id)
        data = build_dashboard(rows, load_parameters(session, file.id), period).to_json()
    return {
        "period": period,
        "file_id": file.id,
        "status": file.status,
        "currency": data.get("currency"),
        "metrics": data.get("metrics", []),
        "charts": data.get("charts", []),
        "parameters": {k: format(v, "f") for k, v in load_parameters(session, file.id).items()},
    }


# -- the snapshot and its events -------------------------------------------------------------


def insert_unless_present(
    session: Session, model: type[Base], values: dict[str, Any], keys: list[str]
) -> bool:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING``; True if the row was inserted.

    Not a savepoint and IntegrityError: releasing a savepoint fires the session's
    ``after_commit`` (so the outbox would publish mid-transaction), and under pysqlite a
    savepoint that opens the transaction commits on release.
    """
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    columns = model.__table__.c
    statement = (
        insert(model)
        .values(values)
        .on_conflict_do_nothing(index_elements=keys)
        # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT here.
        .returning(*[columns[key] for key in keys])
    )
    return session.execute(statement).first() is not None


def lock_snapshot(session: Session, file_id: int) -> DashboardSnapshot:
    """The file's snapshot row, locked for this transaction (made if missing).

    Bumping the version is a write, so it takes the row lock on PostgreSQL (and SQLite's write
    lock) before anything is read: two recomputations of one file never interleave.
    """
    bump = (
        update(DashboardSnapshot)
        .where(DashboardSnapshot.file_id == file_id)
        .values(version=DashboardSnapshot.version + 1)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(session.execute(bump)) == 0:
        values = {"file_id": file_id, "version": 0, "data": None, "updated_at": utcnow()}
        insert_unless_present(session, DashboardSnapshot, values, ["file_id"])
        session.execute(bump)
    snapshot = session.get(DashboardSnapshot, file_id, populate_existing=True)
    assert snapshot is not None
    return snapshot


def enqueue_dashboard_events(
    session: Session, file_id: int, old: Dashboard | None, new: Dashboard
) -> tuple[list[str], list[str]]:
    """One ``metric_update`` per changed metric and one ``chart_data_update`` per changed
    chart, keyed by name so that a lagging client may skip superseded ones."""
    channel = file_channel(file_id)
    metrics, charts = diff_dashboards(old, new)
    for card in metrics:
        data = metric_to_json(card)
        # The spec's names beside ours: metric_id (the name), metric_type (its unit).
        data.update(metric_id=card.name, metric_type=data["unit"])
        enqueue(session, channel, "metric_update", data, key=card.name)
    for series in charts:
        enqueue(session, channel, "chart_data_update", _chart_event(series), key=series.name)
    return [c.name for c in metrics], [s.name for s in charts]


def _chart_event(series: ChartSeries) -> dict[str, Any]:
    """A chart's JSON with at most the newest MAX_EVENT_POINTS points, so that the event stays
    within the event size limit whatever the file; the snapshot always holds every point."""
    data = chart_to_json(series)
    total = len(data["points"])
    data["points_total"] = total
    data["truncated"] = total > MAX_EVENT_POINTS
    if total > MAX_EVENT_POINTS:
        data["points"] = data["points"][-MAX_EVENT_POINTS:]
    # The spec's names: chart_type, and chart_data as labels and values (compact: the points
    # again as two plain lists).
    data["chart_type"] = "line"
    data["chart_data"] = {
        "labels": [p["period"] for p in data["points"]],
        "values": [p["value"] for p in data["points"]],
    }
    return data


def stored_dashboard(snapshot: DashboardSnapshot) -> Dashboard | None:
    return Dashboard.from_json(snapshot.data) if snapshot.data else None


def recalculate(session: Session, file_id: int) -> tuple[list[str], list[str]] | None:
    """Rebuild a processed file's dashboard from its stored rows and parameters (after a change
    made outside the application); enqueue what changed. None if the file is not processed."""
    file = session.get(File, file_id)
    if file is None or file.status != "processed":
        return None
    snapshot = lock_snapshot(session, file_id)
    old = stored_dashboard(snapshot)
    new = build_dashboard(read_rows(session, file_id), load_parameters(session, file_id))
    snapshot.data = new.to_json()
    return enqueue_dashboard_events(session, file_id, old, new)


# -- parameters ------------------------------------------------------------------------------


def set_parameter(
    session: Session, file: File, name: str, raw_value: object, user_id: str
) -> dict[str, Any]:
    """Store a parameter; its ``parameter_update`` (from the hooks, at the flush that writes
    it) comes first, then the metrics and charts it changed.

    Raises ValueError (with ``validate_parameter``'s message) for a bad name or value.
    """
    value = validate_parameter(name, raw_value)
    snapshot = lock_snapshot(session, file.id)
    stored = session.get(FileParameter, (file.id, name), populate_existing=True)
    previous = stored.value if stored is not None else None
    text = _canonical(value)
    if stored is None:
        stored = FileParameter(file_id=file.id, name=name, value=text, updated_by=user_id)
        session.add(stored)
    else:
        stored.value, stored.updated_by, stored.updated_at = text, user_id, utcnow()
    # Its parameter_update (with ``previous``) is the hooks' (models/change_events.py), enqueued
    # by this flush: a client sees the cause before the recomputed figures enqueued below.
    service_change(stored)
    session.flush()
    changed: tuple[list[str], list[str]] = ([], [])
    # A file still being processed gets its parameters applied when processing finishes.
    if file.status == "processed":
        old = stored_dashboard(snapshot)
        new = build_dashboard(read_rows(session, file.id), load_parameters(session, file.id))
        snapshot.data = new.to_json()
        changed = enqueue_dashboard_events(session, file.id, old, new)
    return {
        "file_id": file.id,
        "name": name,
        "value": text,
        "previous": previous,
        "updated_by": user_id,
        "updated_at": _iso(stored.updated_at),
        "changed_metrics": changed[0],
        "changed_charts": changed[1],
    }


def _canonical(value: Decimal) -> str:
    """``0.50`` and ``0.5`` are one value: plain notation, no trailing zeros, no ``-0``."""
    text = format(value.normalize(), "f")
    return "0" if value.is_zero() else text


# -- sharing ---------------------------------------------------------------------------------


def add_member(
    session: Session, file: File, user_id: str, invited_by: str
) -> tuple[FileMember, bool]:
    """Share ``file`` with ``user_id``; returns the membership and whether it is new.

    The invitee gets a ``collaboration_invite`` notification, once per file.
    """
    if not USER_ID_RE.match(user_id):
        raise ValueError("user_id must be 1-64 of letters, digits and _.@-")
    if user_id == file.owner_id:
        raise ValueError("the owner already has access to this file")
    ensure_user(session, user_id)
    values = {"file_id": file.id, "user_id": user_id, "role": "viewer", "created_at": utcnow()}
    created = insert_unless_present(session, FileMember, values, ["file_id", "user_id"])
    member = session.get(FileMember, (file.id, user_id), populate_existing=True)
    assert member is not None
    create_notification(
        session,
        user_id,
        "collaboration_invite",
        f"{invited_by} shared {file.name} with you",
        f"You can now see the dashboard of {file.name} and request its reports.",
        data={"file_id": file.id, "file_name": file.name, "invited_by": invited_by},
        dedupe_key=f"invite:{file.id}:{user_id}",
    )
    return member, created
