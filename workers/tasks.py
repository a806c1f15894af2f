"""Celery tasks: thin wrappers over plain functions (``workers/processing.py``,
``workers/reporting.py``, ``workers/periodic.py``, ``services/``), each tested on its own.

Each task is safe to run twice (a worker killed mid-task gets its task redelivered): the work
checks the database state first, finished files are written under a temporary name and renamed,
and notifications carry dedupe keys. Transient errors (Redis or the database unreachable) are
retried with exponential backoff; other failures mark the job failed and tell its user.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import kombu.exceptions
import redis
import sqlalchemy.exc
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

import services.notifications
from core.settings import Settings, get_settings
from models import session_scope
from models.outbox import sweep_outbox as sweep_outbox_rows
from services.digests import announce_pending
from services.files import owner_of, recalculate
from services.inbox_states import announce_expired, wake_due
from services.reports import fail_report, who_follows
from streams.publish import publish
from workers.celery_app import app
from workers.periodic import (
    due_schedules,
    find_stale_jobs,
    mark_scheduled,
    start_scheduled_report,
)
from workers.processing import fail_processing, file_exists, process_upload
from workers.progress import FileProgress, ReportProgress
from workers.recalculations import Recalculations
from workers.reporting import generate_report

log = logging.getLogger("finrt.workers")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    kombu.exceptions.OperationalError,
)

_MAX_RETRIES = get_settings().task_max_retries


def _task(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``app.task`` with a type (Celery ships none)."""
    decorator: Callable[[Callable[..., Any]], Any] = app.task(**options)
    return decorator


def _failure_reason(exc: BaseException, s: Settings) -> str:
    if isinstance(exc, SoftTimeLimitExceeded):
        return f"the job took longer than {s.task_soft_time_limit} seconds"
    if isinstance(exc, TimeLimitExceeded):  # the hard limit: its process was stopped
        return f"the job took longer than {s.task_time_limit} seconds and was stopped"
    if isinstance(exc, TRANSIENT_ERRORS):
        return "the database or Redis stayed unreachable; please try again"
    return f"an internal error stopped the job ({type(exc).__name__})"


class JobTask(Task):  # type: ignore[misc]
    """A user's job: retried with backoff on transient errors, then marked failed."""

    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True

    def mark_failed(self, args: tuple[Any, ...], reason: str) -> None:
        raise NotImplementedError

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        try:
            self.mark_failed(tuple(args), _failure_reason(exc, get_settings()))
        except Exception:  # the database is down too: the stale-job check will catch it
            log.exception("could not mark job %s failed", task_id)


class ProcessFileTask(JobTask):
    def mark_failed(self, args: tuple[Any, ...], reason: str) -> None:
        file_id, job_id = args
        fail_processing(get_settings().database_url, int(file_id), str(job_id), reason)


class ReportTask(JobTask):
    def mark_failed(self, args: tuple[Any, ...], reason: str) -> None:
        fail_report(get_settings().database_url, int(args[0]), reason)


class PeriodicTask(Task):  # type: ignore[misc]
    """Housekeeping run by beat: no retries, the next tick does the work."""


@_task(base=ProcessFileTask, name="finrt.process_file", max_retries=_MAX_RETRIES)
def process_file(file_id: int, job_id: str) -> str:
    """Parse an uploaded CSV, store its rows and dashboard, publish, notify the owner."""
    s = get_settings()
    with session_scope(s.database_url) as session:
        owner = owner_of(session, file_id)
    if owner is None:
        return "skipped"
    progress = FileProgress(
        publish,
        s.progress_interval_seconds,
        file_id=file_id,
        owner_id=owner,
        job_id=job_id,
        alive=partial(file_exists, s.database_url, file_id),
    )
    outcome = process_upload(
        s.database_url,
        file_id,
        job_id,
        max_bytes=s.upload_max_bytes,
        max_rows=s.upload_max_rows,
        on_progress=progress,
    )
    log.info(
        "file %s: %s (%d rows, %d refused)",
        file_id,
        outcome.status,
        outcome.rows_ok,
        outcome.rows_bad,
    )
    return outcome.status


@_task(
    name="finrt.recalculate_file",
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    max_retries=_MAX_RETRIES,
)
def recalculate_file(file_id: int) -> str:
    """Recompute a file's metrics and charts after its rows or parameters were changed outside
    the application (sent by the relay, once per file per burst); publishes what changed."""
    with session_scope(get_settings().database_url) as session:
        changed = recalculate(session, file_id)
    if changed is None:
        return "skipped"
    log.info("file %s recalculated: %s metrics, %s charts", file_id, *map(len, changed))
    return "recalculated"


@_task(base=ReportTask, name="finrt.generate_report", max_retries=_MAX_RETRIES)
def generate_report_task(report_id: int) -> str:
    """Build a report file, mark it ready, publish, notify the requester."""
    s = get_settings()
    with session_scope(s.database_url) as session:
        follows = who_follows(session, report_id)
    if follows is None:
        return "skipped"
    event, user_id = follows
    progress = ReportProgress(publish, s.progress_interval_seconds, event=event, user_id=user_id)
    outcome = generate_report(
        s.database_url,
        s.reports_dir,
        report_id,
        on_progress=progress,
        delay_seconds=s.report_delay_seconds,
        partial_max_age_seconds=s.task_time_limit,
    )
    log.info("report %s: %s", report_id, outcome.status)
    return outcome.status


@_task(base=PeriodicTask, name="finrt.sweep_outbox")
def sweep_outbox() -> int:
    """Publish outbox rows left behind (Redis was down, a process died after its commit), and
    queue the recalculations that changes made outside the application ask for (no relay ran)."""
    s = get_settings()
    recalculations = Recalculations(s)
    published = sweep_outbox_rows(
        s.database_url,
        older_than_seconds=s.outbox_sweep_age_seconds,
        before_publish=recalculations.before_publish,
    )
    if published:
        log.warning("outbox sweeper published %d events left behind", published)
    for file_id in recalculations.queued:
        log.warning("outbox sweeper: file %s changed outside the application", file_id)
    return published


@_task(base=PeriodicTask, name="finrt.check_schedules")
def check_schedules() -> int:
    """Start the report of every schedule whose current period has none yet."""
    s = get_settings()
    with session_scope(s.database_url) as session:
        due = due_schedules(session, datetime.now(UTC))
    sent = 0
    for file_id, period in due:
        # Made (and committed) first, sent second, marked done last: a crash in between only
        # sends the same idempotent task again at the next check.
        with session_scope(s.database_url) as session:
            report = start_scheduled_report(session, file_id, period, str(uuid.uuid4()))
            todo = (report.id, report.job_id) if report is not None else None
        if todo is not None:
            generate_report_task.apply_async(args=[todo[0]], task_id=todo[1])
            sent += 1
        with session_scope(s.database_url) as session:
            mark_scheduled(session, file_id, period)
    return sent


@_task(base=PeriodicTask, name="finrt.purge_notifications")
def purge_notifications() -> int:
    """Delete expired notifications."""
    purge = getattr(services.notifications, "purge_expired", None)
    if purge is None:
        return 0
    with session_scope(get_settings().database_url) as session:
        announce_expired(session)  # tabs hear of each expiry before its row goes
        return int(purge(session))


@_task(base=PeriodicTask, name="finrt.inbox_tick")
def inbox_tick() -> dict[str, int]:
    """Wake the snoozes that are due (each once), tell the tabs of new expiries and of digests
    whose count grew since they last heard."""
    with session_scope(get_settings().database_url) as session:
        woken = wake_due(session)
    with session_scope(get_settings().database_url) as session:
        expired = announce_expired(session)
    with session_scope(get_settings().database_url) as session:
        digests = announce_pending(session)
    if woken:
        log.info("woke %d snoozed notifications", len(woken))
    return {"woken": len(woken), "expired": len(expired), "digests": digests}


@_task(base=PeriodicTask, name="finrt.check_stale_jobs")
def check_stale_jobs() -> dict[str, int]:
    """Fail jobs whose worker was lost for good; send queued ones again (they are idempotent)."""
    s = get_settings()
    # Longer than any attempt can last, redelivery included.
    stale = find_stale_jobs(s.database_url, s.celery_visibility_timeout + s.task_time_limit + 60)
    for file_id, job_id in stale.requeue_files:
        process_file.apply_async(args=[file_id, job_id], task_id=job_id)
    for report_id, job_id in stale.requeue_reports:
        generate_report_task.apply_async(args=[report_id], task_id=job_id)
    counts = {
        "failed_files": stale.failed_files,
        "failed_reports": stale.failed_reports,
        "requeued_files": len(stale.requeue_files),
        "requeued_reports": len(stale.requeue_reports),
    }
    if any(counts.values()):
        log.warning("stale jobs: %s", counts)
    return counts
