"""Processing an uploaded file (the body of the ``finrt.process_file`` task).

Parsing runs outside any transaction, so a large file holds no database lock; then one
transaction stores the rows, the dashboard snapshot, the file's status and counts, their
events (through the outbox) and the owner's notifications. Running it again after a crash is
safe: a finished file is left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from core.settings import get_settings
from domain.csv_import import CsvRejected, FinancialRow, ParseResult, RowError, parse_csv
from domain.metrics import Dashboard, build_dashboard, period_sort_key
from models import File, FileUpload, FinancialDataRow, enqueue, session_scope
from models.base import utcnow
from models.change_events import service_change
from services.digests import literal
from services.files import (
    MAX_EVENT_POINTS,
    enqueue_dashboard_events,
    file_channel,
    load_parameters,
    lock_snapshot,
    stored_dashboard,
    user_channel,
)
from services.notification_actions import open_file, retry_processing
from services.notify import check_event_size, create_notification
from workers.progress import FileGone

__all__ = [
    "MAX_ISSUES_LISTED",
    "ProcessOutcome",
    "allowed_starts",
    "fail_processing",
    "file_exists",
    "lost_reason",
    "process_upload",
    "quality_digest_title",
]

# Row errors carried in a data_quality_issue notification, and quoted in its message.
MAX_ISSUES_LISTED = 50
MAX_ISSUES_IN_MESSAGE = 5
_ROWS_PER_INSERT = 5000

Progress = Callable[[int, int], None]
FILE_GONE = "the file was deleted while it was processed"


@dataclass(frozen=True)
class ProcessOutcome:
    """``status``: processed, failed, or skipped (missing, or finished by an earlier run)."""

    status: str
    rows_ok: int = 0
    rows_bad: int = 0


def _job_event(job_id: str, file_id: int, status: str, percent: int) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "kind": "process_file",
        "file_id": file_id,
        "status": status,
        "percent": percent,
    }


def allowed_starts() -> int:
    """How many times a job may be started: its first run and FINRT_TASK_MAX_RETRIES more."""
    return get_settings().task_max_retries + 1


def lost_reason(attempts: int) -> str:
    """Why a job that was started ``attempts`` times without ending is given up."""
    return (
        f"the job was started {attempts} times without finishing (its worker process was lost: "
        "out of memory, or killed)"
    )


def _start(url: str, file_id: int, max_attempts: int) -> tuple[bytes, str] | int | None:
    """Mark the file processing and count the start; its bytes and owner, the number of
    starts when it was already started ``max_attempts`` times (every one of them lost its
    worker, or it would have ended), or None when there is nothing to do."""
    with session_scope(url) as session:
        file = session.get(File, file_id)
        if file is None or file.status in ("processed", "failed"):
            return None
        upload = session.get(FileUpload, file_id)
        if upload is None or upload.content is None:
            return None
        if upload.attempts >= max_attempts:
            return upload.attempts
        upload.attempts = FileUpload.attempts + 1  # in the UPDATE: no start is lost
        # Set even when already "processing" (a redelivered task): the stale-job check
        # measures from here.
        file.status, file.updated_at = "processing", utcnow()
        service_change(file)  # its file_processing: the hooks' (services/announce_changes.py)
        return upload.content, file.owner_id


def file_exists(url: str, file_id: int) -> bool:
    """Whether the file is still there (asked as its parse reports progress)."""
    with session_scope(url) as session:
        return session.scalar(select(File.id).where(File.id == file_id)) is not None


def _gone(session: Session, owner: str, file_id: int, job_id: str) -> ProcessOutcome:
    event = _job_event(job_id, file_id, "failed", 100) | {"error": FILE_GONE}
    enqueue(session, user_channel(owner), "job_progress", event, key=f"job:{job_id}")
    return ProcessOutcome("skipped")


def process_upload(
    url: str,
    file_id: int,
    job_id: str,
    *,
    max_bytes: int,
    max_rows: int,
    on_progress: Progress | None = None,
    max_attempts: int | None = None,
) -> ProcessOutcome:
    """Parse the stored upload and, in one transaction, store its rows, the dashboard, the
    file's status and counts, their events and the owner's notifications.

    Safe to run again (a task redelivered after a crash): a finished file is left alone. A
    file whose processing was started ``max_attempts`` times already (each run lost its
    worker: a file that kills the process that reads it would otherwise be handed on for
    ever) is marked failed instead (None: ``allowed_starts()``).
    """
    started = _start(url, file_id, allowed_starts() if max_attempts is None else max_attempts)
    if started is None:
        return ProcessOutcome("skipped")
    if isinstance(started, int):
        done = fail_processing(url, file_id, job_id, lost_reason(started))
        return ProcessOutcome("failed" if done else "skipped")
    content, owner = started
    try:
        result = parse_csv(content, max_bytes=max_bytes, max_rows=max_rows, on_progress=on_progress)
    except CsvRejected as exc:
        done = fail_processing(url, file_id, job_id, exc.reason)
        return ProcessOutcome("failed" if done else "skipped")
    except FileGone:
        with session_scope(url) as session:
            return _gone(session, owner, file_id, job_id)
    with session_scope(url) as session:
        # The file is kept from being deleted while this transaction writes what belongs to it
        # (KEY SHARE: its status may still change); gone already, the owner's job ends here.
        file = session.scalar(
            select(File).where(File.id == file_id).with_for_update(key_share=True)
        )
        if file is None:
            return _gone(session, owner, file_id, job_id)
        snapshot = lock_snapshot(session, file_id)
        file = session.get(File, file_id, populate_existing=True)
        if file is None or file.status != "processing":
            return ProcessOutcome("skipped")
        if not result.rows:
            _finish_failed(session, file, job_id, _nothing_usable(result), result.errors)
            return ProcessOutcome("failed", 0, len(result.errors))
        _store_rows(session, file_id, result.rows)
        dashboard = build_dashboard(result.rows, load_parameters(session, file_id))
        old = stored_dashboard(snapshot)
        snapshot.data = dashboard.to_json()
        _finish_processed(session, file, job_id, result, dashboard, old)
        return ProcessOutcome("processed", len(result.rows), len(result.errors))


def _store_rows(session: Session, file_id: int, rows: Sequence[FinancialRow]) -> None:
    # Its events are the processing's own (financial_data_update, after the rows are stored).
    session.execute(
        delete(FinancialDataRow)
        .where(FinancialDataRow.file_id == file_id)
        .execution_options(finrt_events="explicit")
    )
    batch: list[dict[str, Any]] = []
    for position, row in enumerate(rows):
        batch.append(
            {
                "file_id": file_id,
                "position": position,
                "period": row.period,
                "statement": row.statement,
                "line_item": row.line_item,
                "amount": format(row.amount, "f"),
                "currency": row.currency,
            }
        )
        if len(batch) >= _ROWS_PER_INSERT:
            session.execute(insert(FinancialDataRow), batch)
            batch = []
    if batch:
        session.execute(insert(FinancialDataRow), batch)


def _summary(file: File, result: ParseResult, dashboard: Dashboard) -> dict[str, Any]:
    periods = sorted({row.period for row in result.rows}, key=period_sort_key)
    total_periods = len(periods)
    statements: dict[str, int] = {}
    for row in result.rows:
        statements[row.statement] = statements.get(row.statement, 0) + 1
    return {
        "file_id": file.id,
        "statement_id": None,  # every statement of the file (rows_by_statement has them)
        "updated_at": utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "status": "processed",
        "currency": dashboard.currency,
        "periods": periods[-MAX_EVENT_POINTS:],
        "periods_total": total_periods,
        "rows_total": result.total_lines,
        "rows_ok": len(result.rows),
        "rows_bad": len(result.errors),
        "rows_by_statement": statements,
    }


def _finish_processed(
    session: Session,
    file: File,
    job_id: str,
    result: ParseResult,
    dashboard: Dashboard,
    old: Dashboard | None,
) -> None:
    total, ok, bad = result.total_lines, len(result.rows), len(result.errors)
    file.status, file.error = "processed", None
    file.rows_total, file.rows_ok, file.rows_bad = total, ok, bad
    # Its file_processing is the hooks', enqueued by this flush: before the events below.
    service_change(file)
    session.flush()
    upload = session.get(FileUpload, file.id)
    if upload is not None:
        upload.content = None  # the rows are stored; the raw bytes are no longer needed
    channel = file_channel(file.id)
    enqueue(
        session, channel, "financial_data_update", _summary(file, result, dashboard), "financial"
    )
    enqueue_dashboard_events(session, file.id, old, dashboard)
    enqueue(
        session,
        user_channel(file.owner_id),
        "job_progress",
        _job_event(job_id, file.id, "processed", 100),
        key=f"job:{job_id}",
    )
    message = f"{ok} of {total} rows imported" + (f"; {bad} refused." if bad else ".")
    create_notification(
        session,
        file.owner_id,
        "file_processed",
        f"{file.name} is processed",
        message,
        data={
            "file_id": file.id,
            "job_id": job_id,
            "rows_total": total,
            "rows_ok": ok,
            "rows_bad": bad,
        },
        dedupe_key=f"file_processed:{file.id}",
        actions=[open_file(file.id)],
    )
    if bad:
        rows = "row" if bad == 1 else "rows"
        title, message = f"{bad} {rows} refused in {file.name}", _issues_message(result.errors)
        actions = [open_file(file.id)]
        create_notification(
            session,
            file.owner_id,
            "data_quality_issue",
            title,
            message,
            data=_fitting(
                file.owner_id,
                "data_quality_issue",
                title,
                message,
                lambda listed: _issues_data(file.id, result.errors, listed),
                actions,
            ),
            priority="high",
            dedupe_key=f"data_quality_issue:{file.id}",
            actions=actions,
            # Problems of one file within the digest window become one notification.
            group=f"file:{file.id}",
            digest_title=quality_digest_title(file.name),
        )


def quality_digest_title(file_name: str) -> str:
    """The title of a file's data-quality digest; the name stays as it is, braces and all."""
    return "{count} data-quality issues in " + literal(file_name)


def _issues_message(errors: Sequence[RowError]) -> str:
    parts = [f"line {e.line}: {e.reason}" for e in errors[:MAX_ISSUES_IN_MESSAGE]]
    more = len(errors) - len(parts)
    return "; ".join(parts) + (f"; and {more} more." if more else ".")


def _issues_data(
    file_id: int, errors: Sequence[RowError], listed: int = MAX_ISSUES_LISTED
) -> dict[str, Any]:
    return {
        "file_id": file_id,
        "rows_bad": len(errors),
        "issues": [{"line": e.line, "reason": e.reason, "raw": e.raw} for e in errors[:listed]],
        "truncated": len(errors) > listed,
    }


def _fitting(
    user_id: str,
    type: str,
    title: str,
    message: str,
    data_for: Callable[[int], dict[str, Any]],
    actions: list[Any],
) -> dict[str, Any]:
    """The notification's data listing as many issues as fit its event (FINRT_MAX_EVENT_BYTES),
    so that a file's notification is never refused for the rows it names."""
    listed = MAX_ISSUES_LISTED
    while True:
        data = data_for(listed)
        try:
            check_event_size(user_id, type, title, message, data, actions, "high")
        except ValueError:
            if listed > 0:
                listed //= 2
                continue
        return data


def _nothing_usable(result: ParseResult) -> str:
    if result.total_lines == 0:
        return "the file has a header but no data rows"
    return f"none of the {result.total_lines} data rows is valid"


def _finish_failed(
    session: Session, file: File, job_id: str, reason: str, errors: Sequence[RowError] = ()
) -> None:
    file.status, file.error = "failed", reason[:2000]
    if errors:
        file.rows_total, file.rows_ok, file.rows_bad = len(errors), 0, len(errors)
    # Its file_processing is the hooks', enqueued by this flush: before the events below.
    service_change(file)
    session.flush()
    enqueue(
        session,
        user_channel(file.owner_id),
        "job_progress",
        _job_event(job_id, file.id, "failed", 100) | {"error": file.error},
        key=f"job:{job_id}",
    )
    message = reason + (f" ({_issues_message(errors)})" if errors else "")
    title = f"{file.name} could not be processed"
    actions = [retry_processing(file.id)]
    base: dict[str, Any] = {"file_id": file.id, "job_id": job_id, "error": reason}

    def data_for(listed: int) -> dict[str, Any]:
        return base | _issues_data(file.id, errors, listed) if errors else base

    create_notification(
        session,
        file.owner_id,
        "error_alert",
        title,
        message,
        data=_fitting(file.owner_id, "error_alert", title, message, data_for, actions),
        priority="high",
        # Per job: a file processed again (Retry processing) that fails again says so again.
        dedupe_key=f"file_failed:{file.id}:{job_id}",
        actions=actions,
    )


def fail_processing(url: str, file_id: int, job_id: str, reason: str) -> bool:
    """Mark an unfinished file failed and tell its owner; False if it had already finished."""
    with session_scope(url) as session:
        if session.get(File, file_id) is None:
            return False
        lock_snapshot(session, file_id)
        file = session.get(File, file_id, populate_existing=True)
        if file is None or file.status in ("processed", "failed"):
            return False
        _finish_failed(session, file, job_id, reason)
        return True
