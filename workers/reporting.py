"""Building a report (the body of the ``finrt.generate_report`` task).

The report is built from the file's stored rows and parameters, written under a temporary name
and renamed into place, then marked ready in one transaction with its ``report_status`` events
and the requester's notification. Running it again after a crash is safe: it ends with one
finished file and one notification.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from domain.csv_import import FinancialRow
from domain.metrics import Dashboard, build_dashboard
from domain.reports import ReportFormat, build_report
from models import File, ReportExport, enqueue, session_scope
from models.base import utcnow
from services.files import load_parameters, read_rows
from services.notification_actions import link, open_file
from services.notify import create_notification
from services.reports import (
    download_url,
    enqueue_status,
    fail_report,
    status_event,
    stored_name,
)
from streams.channels import user_channel
from workers.processing import allowed_starts, lost_reason

__all__ = ["ReportOutcome", "generate_report"]

Percent = Callable[[int], None]


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount or 0)


REPORT_GONE = "the file was deleted while its report was built"


@dataclass(frozen=True)
class ReportOutcome:
    """``status``: ready, failed (started too often), or skipped (missing, or finished by an
    earlier run)."""

    status: str
    path: Path | None = None


@dataclass(frozen=True)
class _Job:
    report_id: int
    file_id: int
    requested_by: str
    fmt: ReportFormat
    title: str
    stored_name: str
    running: dict[str, Any]  # its report_status event while it runs


def generate_report(
    url: str,
    reports_dir: str | Path,
    report_id: int,
    *,
    on_progress: Percent | None = None,
    delay_seconds: float = 0.0,
    partial_max_age_seconds: float = 3600.0,
    max_attempts: int | None = None,
) -> ReportOutcome:
    """Build the report, store it, and mark it ready with its events and notification.

    A report started ``max_attempts`` times already (each run lost its worker: a report that
    kills the process building it would otherwise be handed on for ever) is marked failed
    instead, with the requester's ``error_alert`` (None: ``allowed_starts()``)."""
    started = _start_job(url, report_id, allowed_starts() if max_attempts is None else max_attempts)
    if started is None:
        return ReportOutcome("skipped")
    if isinstance(started, int):
        failed = fail_report(url, report_id, lost_reason(started))
        return ReportOutcome("failed" if failed else "skipped")
    job, rows, dashboard = started
    directory = Path(reports_dir).resolve()
    _remove_partials(directory, job.stored_name, partial_max_age_seconds)
    if delay_seconds:
        time.sleep(delay_seconds)
    data = build_report(
        job.fmt,
        title=job.title,
        rows=rows,
        dashboard=dashboard,
        generated_at=datetime.now(UTC),
        progress=on_progress,
    )
    path = _write_atomically(directory, job.stored_name, data)
    with session_scope(url) as session:
        done = session.execute(
            update(ReportExport)
            .where(ReportExport.id == report_id, ReportExport.status == "running")
            .values(
                status="ready",
                stored_name=job.stored_name,
                size_bytes=len(data),
                finished_at=utcnow(),
                error=None,
            )
            .execution_options(synchronize_session=False, finrt_events="explicit")
        )
        if _rowcount(done) == 0:
            if session.get(ReportExport, report_id) is None:
                # Deleted meanwhile (with its file): nothing may point at what was written, and
                # the requester, who saw it running, is told it ended.
                path.unlink(missing_ok=True)
                gone = job.running | {"status": "failed", "percent": 100, "error": REPORT_GONE}
                channel = user_channel(job.requested_by)
                enqueue(session, channel, "report_status", gone, key=f"report:{job.report_id}")
            return ReportOutcome("skipped")  # or finished (or failed) by another run meanwhile
        report = session.get(ReportExport, report_id, populate_existing=True)
        assert report is not None
        enqueue_status(session, report, "ready", 100)
        _notify_ready(session, report)
    return ReportOutcome("ready", path)


def _start_job(
    url: str, report_id: int, max_attempts: int
) -> tuple[_Job, list[FinancialRow], Dashboard] | int | None:
    """Mark the report running (a redelivered task finds it running already), count the
    start, and read what it is built from; the number of starts when it was already started
    ``max_attempts`` times; None when it is missing or finished."""
    unfinished = ReportExport.status.in_(("queued", "running"))
    with session_scope(url) as session:
        moved = session.execute(
            update(ReportExport)
            .where(ReportExport.id == report_id, unfinished)
            .where(ReportExport.attempts < max_attempts)
            .values(status="running", started_at=utcnow(), attempts=ReportExport.attempts + 1)
            .execution_options(synchronize_session=False, finrt_events="explicit")
        )
        if _rowcount(moved) == 0:
            return session.scalar(
                select(ReportExport.attempts).where(ReportExport.id == report_id, unfinished)
            )
        report = session.get(ReportExport, report_id, populate_existing=True)
        assert report is not None
        file = session.get(File, report.file_id)
        assert file is not None
        enqueue_status(session, report, "running", 0)
        job = _Job(
            report.id,
            file.id,
            report.requested_by,
            cast(ReportFormat, report.format),
            f"FinVision report: {file.name}",
            stored_name(report),
            status_event(report, "running", 0),
        )
    # A read-only transaction of its own: reading a large file holds no write lock.
    with session_scope(url) as session:
        rows = read_rows(session, job.file_id)
        dashboard = build_dashboard(rows, load_parameters(session, job.file_id))
    return job, rows, dashboard


def _notify_ready(session: Session, report: ReportExport) -> None:
    file = session.get(File, report.file_id)
    name = file.name if file is not None else f"file {report.file_id}"
    data = {
        "report_id": report.id,
        "file_id": report.file_id,
        "format": report.format,
        "download_url": download_url(report.id),
    }
    if report.schedule_key is not None:
        period = report.schedule_key.partition(":")[2]
        create_notification(
            session,
            report.requested_by,
            "scheduled_report",
            f"Scheduled report for {name} ({period})",
            f"The {report.format.upper()} report of {name} for {period} is ready to download.",
            data=data | {"period": period},
            dedupe_key=f"scheduled_report:{report.schedule_key}",
            actions=[link("Download", download_url(report.id)), open_file(report.file_id)],
        )
        return
    create_notification(
        session,
        report.requested_by,
        "report_ready",
        f"Report ready: {name}",
        f"Your {report.format.upper()} report of {name} is ready to download.",
        data=data,
        dedupe_key=f"report_ready:{report.id}",
        actions=[link("Download", download_url(report.id)), open_file(report.file_id)],
    )


def _write_atomically(directory: Path, name: str, data: bytes) -> Path:
    """Write to a hidden temporary name, flush it to disk, then rename: readers and a retried
    task only ever see a finished file."""
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{name}.{uuid.uuid4().hex}.part"
    try:
        with open(partial, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        final = directory / name
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    return final


def _remove_partials(directory: Path, name: str, max_age_seconds: float) -> None:
    """Drop temporary files a killed run left behind (old enough that no run still writes)."""
    if not directory.is_dir():
        return
    cutoff = time.time() - max_age_seconds
    for partial in directory.glob(f".{name}.*.part"):
        try:
            if partial.stat().st_mtime < cutoff:
                partial.unlink()
        except FileNotFoundError:
            pass
