"""Housekeeping run by beat: scheduled reports that are due, and jobs whose worker was lost."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from models import File, FileSchedule, FileUpload, ReportExport, session_scope
from models.base import utcnow
from services.reports import current_period, fail_report, request_report
from workers.processing import fail_processing

__all__ = [
    "StaleJobs",
    "due_schedules",
    "find_stale_jobs",
    "mark_scheduled",
    "start_scheduled_report",
]


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount or 0)


def due_schedules(session: Session, now: datetime) -> list[tuple[int, str]]:
    """``(file_id, period)`` of every processed file whose current period has no report yet."""
    rows = session.execute(
        select(FileSchedule.file_id, FileSchedule.frequency, FileSchedule.last_period)
        .join(File, File.id == FileSchedule.file_id)
        .where(File.status == "processed")
        .order_by(FileSchedule.file_id)
    )
    due = []
    for file_id, frequency, last in rows:
        period = current_period(frequency, now)
        if last != period:
            due.append((file_id, period))
    return due


def start_scheduled_report(
    session: Session, file_id: int, period: str, job_id: str
) -> ReportExport | None:
    """The period's report, made once (its ``schedule_key`` is unique); None when it is
    already finished. An unfinished one is returned so that its task can be sent again."""
    # Lock the schedule row first: two checks running at once take turns here.
    locked = session.execute(
        update(FileSchedule)
        .where(FileSchedule.file_id == file_id)
        .values(updated_at=FileSchedule.updated_at)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(locked) == 0:  # the schedule was removed meanwhile
        return None
    key = f"{file_id}:{period}"
    existing = session.scalar(select(ReportExport).where(ReportExport.schedule_key == key))
    if existing is None:
        schedule = session.get(FileSchedule, file_id)
        file = session.get(File, file_id)
        if schedule is None or file is None:
            return None
        return request_report(
            session, file, file.owner_id, schedule.format, job_id, schedule_key=key
        )
    if existing.status in ("ready", "failed"):
        return None
    return existing


def mark_scheduled(session: Session, file_id: int, period: str) -> None:
    session.execute(
        update(FileSchedule)
        .where(FileSchedule.file_id == file_id)
        .values(last_period=period)
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class StaleJobs:
    """Files and reports whose task never finished (``failed``), or never started and may have
    been lost with a broker that kept no data (``requeue``: ``(id, job_id)``)."""

    failed_files: int
    failed_reports: int
    requeue_files: list[tuple[int, str]]
    requeue_reports: list[tuple[int, str]]


def find_stale_jobs(url: str, older_than_seconds: float) -> StaleJobs:
    """Fail jobs stuck running longer than any attempt can last (the worker running them
    died and redelivery did not help); list queued ones to send again (tasks are idempotent)."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    with session_scope(url) as session:
        stuck_files = list(
            session.execute(
                select(File.id, FileUpload.job_id)
                .join(FileUpload, FileUpload.file_id == File.id)
                .where(File.status == "processing", File.updated_at < cutoff)
            )
        )
        queued_files = list(
            session.execute(
                select(File.id, FileUpload.job_id)
                .join(FileUpload, FileUpload.file_id == File.id)
                .where(File.status == "queued", File.created_at < cutoff)
            )
        )
        stuck_reports = list(
            session.scalars(
                select(ReportExport.id).where(
                    ReportExport.status == "running", ReportExport.started_at < cutoff
                )
            )
        )
        queued_reports = list(
            session.execute(
                select(ReportExport.id, ReportExport.job_id).where(
                    ReportExport.status == "queued", ReportExport.created_at < cutoff
                )
            )
        )
    reason = "the job did not finish in time (its worker was probably lost)"
    failed_files = sum(fail_processing(url, fid, job, reason) for fid, job in stuck_files)
    failed_reports = sum(fail_report(url, rid, reason) for rid in stuck_reports)
    return StaleJobs(
        failed_files,
        failed_reports,
        [(fid, job) for fid, job in queued_files],
        [(rid, job) for rid, job in queued_reports],
    )
