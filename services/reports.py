"""Report exports and report schedules: requests, status, access, downloads, schedules.

Building a report is the worker's part (``workers/reporting.py``); the functions here change a
report's state and enqueue its ``report_status`` events through the outbox, on the file's
channel and on the requester's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, delete, update
from sqlalchemy.orm import Session

from domain.reports import REPORT_EXTENSIONS
from models import File, FileSchedule, ReportExport, enqueue, session_scope
from models.base import utcnow
from models.change_events import owe_report_events, service_change
from models.financial import FREQUENCIES
from services.access import Forbidden, NotFound, file_for_reader
from services.files import file_channel, user_channel
from services.notification_actions import regenerate_report
from services.notify import create_notification

__all__ = [
    "REPORT_FORMATS",
    "FileNotReady",
    "current_period",
    "discard_report",
    "download_name",
    "download_url",
    "enqueue_status",
    "fail_report",
    "report_for_reader",
    "report_public",
    "request_report",
    "schedule_public",
    "send_and_announce",
    "set_schedule",
    "status_event",
    "stored_name",
    "stored_path",
    "who_follows",
]

REPORT_FORMATS: tuple[str, ...] = tuple(REPORT_EXTENSIONS)
_SAFE_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]+")


class FileNotReady(ValueError):
    """Reports need a processed file."""


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount or 0)


def download_url(report_id: int) -> str:
    return f"/api/v1/reports/{report_id}/download"


def stored_name(report: ReportExport) -> str:
    return f"report-{report.id}{REPORT_EXTENSIONS[report.format]}"


def stored_path(reports_dir: str | Path, report: ReportExport) -> Path | None:
    if report.stored_name is None:
        return None
    return Path(reports_dir).resolve() / report.stored_name


def download_name(file_name: str, report: ReportExport) -> str:
    """``q3-results-report-7.pdf``: the file's name without extension, made header-safe."""
    stem = file_name.rsplit(".", 1)[0] if "." in file_name else file_name
    stem = _SAFE_NAME_RE.sub("-", stem).strip("-._")[:80] or "file"
    return f"{stem}-report-{report.id}{REPORT_EXTENSIONS[report.format]}"


def report_public(report: ReportExport) -> dict[str, Any]:
    ready = report.status == "ready"
    return {
        "id": report.id,
        "file_id": report.file_id,
        "format": report.format,
        "status": report.status,
        "job_id": report.job_id,
        "requested_by": report.requested_by,
        "scheduled": report.schedule_key is not None,
        "error": report.error,
        "size_bytes": report.size_bytes if ready else None,
        "download_url": download_url(report.id) if ready else None,
        "created_at": _iso(report.created_at),
        "started_at": _iso(report.started_at),
        "finished_at": _iso(report.finished_at),
    }


def report_for_reader(session: Session, user_id: str, report_id: int) -> tuple[ReportExport, File]:
    """The report and its file if ``user_id`` may read the file; NotFound or Forbidden."""
    report = session.get(ReportExport, report_id)
    if report is None:
        raise NotFound("no such report")
    try:
        file = file_for_reader(session, user_id, report.file_id)
    except Forbidden:
        raise Forbidden("not a member of this report's file") from None
    return report, file


def status_event(
    report: ReportExport, status: str, percent: int, error: str | None = None
) -> dict[str, Any]:
    return {
        "report_id": report.id,
        "file_id": report.file_id,
        "format": report.format,
        "status": status,
        "percent": percent,
        "scheduled": report.schedule_key is not None,
        "download_url": download_url(report.id) if status == "ready" else None,
        "error": error,
    }


def enqueue_status(
    session: Session, report: ReportExport, status: str, percent: int, error: str | None = None
) -> None:
    """``report_status`` on the file's channel and on the requester's."""
    data = status_event(report, status, percent, error)
    for channel in (file_channel(report.file_id), user_channel(report.requested_by)):
        enqueue(session, channel, "report_status", data, key=f"report:{report.id}")


def who_follows(session: Session, report_id: int) -> tuple[dict[str, Any], str] | None:
    """A report's ``running`` event data and its requester (for progress events), or None."""
    report = session.get(ReportExport, report_id)
    if report is None:
        return None
    return status_event(report, "running", 0), report.requested_by


def request_report(
    session: Session,
    file: File,
    user_id: str,
    fmt: str,
    job_id: str,
    *,
    schedule_key: str | None = None,
    announce: bool = True,
) -> ReportExport:
    """A queued report of a processed file, with its ``queued`` events (or, with
    ``announce=False``, without them: :func:`send_and_announce` sends its task and them
    together, :func:`discard_report` removes it if the task could not be sent)."""
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(REPORT_FORMATS)}")
    if file.status != "processed":
        raise FileNotReady(f"the file is {file.status}; reports need a processed file")
    report = ReportExport(
        file_id=file.id,
        requested_by=user_id,
        format=fmt,
        status="queued",
        job_id=job_id,
        schedule_key=schedule_key,
        attempts=0,
    )
    if announce:
        service_change(report)  # its queued events: the hooks', at this flush
    session.add(report)
    session.flush()
    if not announce:
        owe_report_events(session, report.id)  # send_and_announce (or discard_report) owes them
    return report


def send_and_announce(url: str, report_id: int, send: Callable[[], None]) -> None:
    """Send a report's task (``send``) and enqueue its ``queued`` events in one transaction
    that holds the report's row (PostgreSQL: the row; SQLite: the write lock) while sending: a
    worker starting at once waits for the commit to mark it running, so ``queued`` is always
    the first event. If ``send`` raises, nothing is announced (and the caller discards the
    report); the lock is then held for the task queue's few retries only."""
    with session_scope(url) as session:
        held = session.execute(
            update(ReportExport)
            .where(ReportExport.id == report_id, ReportExport.status == "queued")
            .values(status="queued")
            .execution_options(synchronize_session=False, finrt_events="explicit")
        )
        if _rowcount(held) == 0:
            raise RuntimeError(f"report {report_id} is not queued")
        report = session.get(ReportExport, report_id, populate_existing=True)
        assert report is not None
        enqueue_status(session, report, "queued", 0)
        send()


def discard_report(url: str, report_id: int) -> None:
    """Remove a report whose task could not be queued: no row, no event, as if never asked."""
    with session_scope(url) as session:
        # Nothing was announced for it: no event either way.
        session.execute(
            delete(ReportExport)
            .where(ReportExport.id == report_id)
            .execution_options(finrt_events="explicit")
        )


def fail_report(url: str, report_id: int, reason: str, notify: bool = True) -> bool:
    """Mark an unfinished report failed and (with ``notify``) tell the requester with an
    ``error_alert``; False if it had finished."""
    with session_scope(url) as session:
        moved = session.execute(
            update(ReportExport)
            .where(ReportExport.id == report_id, ReportExport.status.in_(("queued", "running")))
            .values(status="failed", error=reason[:2000], finished_at=utcnow())
            .execution_options(synchronize_session=False, finrt_events="explicit")
        )
        if _rowcount(moved) == 0:
            return False
        report = session.get(ReportExport, report_id, populate_existing=True)
        assert report is not None
        enqueue_status(session, report, "failed", 100, report.error)
        if not notify:
            return True
        file = session.get(File, report.file_id)
        name = file.name if file is not None else f"file {report.file_id}"
        create_notification(
            session,
            report.requested_by,
            "error_alert",
            f"Report failed: {name}",
            f"The {report.format.upper()} report of {name} could not be built: {reason}",
            data={"report_id": report.id, "file_id": report.file_id, "error": report.error},
            priority="high",
            dedupe_key=f"report_failed:{report.id}",
            actions=[regenerate_report(report.id)],
        )
        return True


# -- schedules -------------------------------------------------------------------------------


def current_period(frequency: str, now: datetime) -> str:
    """The UTC period a scheduled report covers: ``2026-11-25`` (daily), ``2026-W48`` (weekly)."""
    now = now.astimezone(UTC)
    if frequency == "daily":
        return now.date().isoformat()
    if frequency == "weekly":
        year, week, _ = now.isocalendar()
        return f"{year}-W{week:02d}"
    raise ValueError(f"frequency must be one of {', '.join(FREQUENCIES)}")


def set_schedule(
    session: Session, file: File, user_id: str, frequency: str | None, fmt: str
) -> FileSchedule | None:
    """Set (or with ``frequency=None`` remove) the file's recurring report."""
    schedule = session.get(FileSchedule, file.id)
    if frequency is None:
        if schedule is not None:
            session.delete(schedule)
        return None
    if frequency not in FREQUENCIES:
        raise ValueError(f"frequency must be one of {', '.join(FREQUENCIES)} or null")
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(REPORT_FORMATS)}")
    if schedule is None:
        schedule = FileSchedule(file_id=file.id, created_by=user_id)
        session.add(schedule)
    if schedule.frequency != frequency:
        schedule.last_period = None  # the new frequency's current period is due
    schedule.frequency, schedule.format, schedule.created_by = frequency, fmt, user_id
    session.flush()
    return schedule


def schedule_public(
    file_id: int, schedule: FileSchedule | None, now: datetime | None = None
) -> dict[str, Any]:
    if schedule is None:
        return {"file_id": file_id, "frequency": None, "format": None, "last_period": None}
    now = now or datetime.now(UTC)
    return {
        "file_id": file_id,
        "frequency": schedule.frequency,
        "format": schedule.format,
        "last_period": schedule.last_period,
        "current_period": current_period(schedule.frequency, now),
    }
