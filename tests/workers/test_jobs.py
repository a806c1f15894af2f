"""The plain functions behind the tasks, run in this process: safe to run twice, bounded
events, stale jobs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from domain.sample import rows_csv, sample_csv
from models import (
    DashboardSnapshot,
    File,
    FinancialDataRow,
    Notification,
    OutboxEvent,
    session_scope,
)
from services.files import MAX_EVENT_POINTS, create_upload
from services.reports import request_report
from workers.periodic import find_stale_jobs
from workers.processing import file_exists, process_upload
from workers.progress import FileProgress
from workers.reporting import generate_report

MAX_BYTES, MAX_ROWS = 10_000_000, 100_000


@pytest.fixture
def db(env: dict[str, str]) -> str:
    return env["FINRT_DATABASE_URL"]


def _upload(db: str, owner: str, data: bytes) -> tuple[int, str]:
    job_id = str(uuid.uuid4())
    with session_scope(db) as session:
        file = create_upload(session, owner, "t.csv", data, job_id)
        session.flush()
        return int(file.id), job_id


def _count(db: str, model, *where) -> int:
    with session_scope(db) as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _outbox(db: str, channel: str, type_: str) -> list[Any]:
    with session_scope(db) as session:
        rows = session.scalars(
            select(OutboxEvent.data)
            .where(OutboxEvent.channel == channel, OutboxEvent.type == type_)
            .order_by(OutboxEvent.id)
        )
        return [orjson.loads(row) for row in rows]


def test_processing_twice_changes_nothing_the_second_time(db, user):
    file_id, job_id = _upload(db, user, sample_csv(6, bad_rows=2))
    first = process_upload(db, file_id, job_id, max_bytes=MAX_BYTES, max_rows=MAX_ROWS)
    again = process_upload(db, file_id, job_id, max_bytes=MAX_BYTES, max_rows=MAX_ROWS)
    assert (first.status, first.rows_ok, first.rows_bad) == ("processed", 42, 2)
    assert again.status == "skipped"
    assert _count(db, FinancialDataRow, FinancialDataRow.file_id == file_id) == 42
    assert _count(db, Notification, Notification.user_id == user) == 2
    assert len(_outbox(db, f"file:{file_id}", "financial_data_update")) == 1


def test_chart_events_stay_small_while_the_snapshot_keeps_every_point(db, user):
    # 13 line items a month for 100 years: 1,200 periods.
    file_id, job_id = _upload(db, user, rows_csv(13 * 1200))
    assert (
        process_upload(db, file_id, job_id, max_bytes=MAX_BYTES, max_rows=MAX_ROWS).status
        == "processed"
    )
    charts = _outbox(db, f"file:{file_id}", "chart_data_update")
    assert {len(c["points"]) for c in charts} == {MAX_EVENT_POINTS}
    assert all(c["truncated"] and c["points_total"] == 1200 for c in charts)
    summary = _outbox(db, f"file:{file_id}", "financial_data_update")[0]
    assert summary["periods_total"] == 1200 and len(summary["periods"]) == MAX_EVENT_POINTS
    with session_scope(db) as session:
        snapshot = session.get(DashboardSnapshot, file_id)
        assert snapshot is not None and snapshot.data is not None
        assert {len(c["points"]) for c in snapshot.data["charts"]} == {1200}
        full = {c["name"]: c["points"] for c in snapshot.data["charts"]}
        for chart in charts:
            assert chart["points"] == full[chart["name"]][-MAX_EVENT_POINTS:]


def test_a_report_built_twice_leaves_one_file_and_one_notification(db, user, tmp_path: Path):
    file_id, job_id = _upload(db, user, sample_csv(3))
    process_upload(db, file_id, job_id, max_bytes=MAX_BYTES, max_rows=MAX_ROWS)
    with session_scope(db) as session:
        file = session.get(File, file_id)
        assert file is not None
        report_id = request_report(session, file, user, "xlsx", "job-r").id
    first = generate_report(db, tmp_path, report_id)
    again = generate_report(db, tmp_path, report_id)
    assert first.status == "ready" and again.status == "skipped"
    assert [p.name for p in tmp_path.iterdir()] == [f"report-{report_id}.xlsx"]
    ready = Notification.user_id == user, Notification.type == "report_ready"
    assert _count(db, Notification, *ready) == 1


def _delete_file(db: str, file_id: int) -> None:
    """Delete a file as a person would (the ORM: its file_deleted is announced)."""
    with session_scope(db) as session:
        file = session.get(File, file_id)
        assert file is not None
        session.delete(file)


def test_a_file_deleted_while_it_is_processed_ends_its_job_and_stores_nothing(db, user):
    file_id, job_id = _upload(db, user, sample_csv(4))
    deleted: list[int] = []

    def delete_once(done: int, total: int) -> None:
        if not deleted:
            _delete_file(db, file_id)
            deleted.append(done)

    outcome = process_upload(
        db, file_id, job_id, max_bytes=MAX_BYTES, max_rows=MAX_ROWS, on_progress=delete_once
    )
    assert deleted and outcome.status == "skipped"
    assert _count(db, FinancialDataRow, FinancialDataRow.file_id == file_id) == 0
    assert _count(db, DashboardSnapshot, DashboardSnapshot.file_id == file_id) == 0
    jobs = _outbox(db, f"user:{user}", "job_progress")
    assert jobs[-1]["status"] == "failed" and "deleted" in jobs[-1]["error"], jobs
    assert _outbox(db, f"file:{file_id}", "financial_data_update") == []


def test_a_file_deleted_while_it_is_parsed_stops_its_parse_and_its_progress(db, user):
    """The progress the task reports (workers.tasks.process_file's FileProgress) asks whether
    the file is still there before each update: once it is deleted, no more progress of it is
    published and its parse stops."""
    file_id, job_id = _upload(db, user, sample_csv(400))
    sent: list[tuple[str, str]] = []
    calls: list[int] = []

    def publish(channel: str, type_: str, data: Any, key: str | None) -> str:
        sent.append((channel, type_))
        return "1-0"

    progress = FileProgress(
        publish,
        0,
        file_id=file_id,
        owner_id=user,
        job_id=job_id,
        alive=partial(file_exists, db, file_id),
    )

    def report_then_delete(done: int, total: int) -> None:
        calls.append(done)
        progress(done, total)
        if len(calls) == 1:
            _delete_file(db, file_id)

    outcome = process_upload(
        db, file_id, job_id, max_bytes=MAX_BYTES, max_rows=MAX_ROWS, on_progress=report_then_delete
    )
    assert outcome.status == "skipped"
    assert len(calls) == 2, "the parse went on after its file was deleted"
    assert sent == [(f"file:{file_id}", "file_processing"), (f"user:{user}", "job_progress")]
    jobs = _outbox(db, f"user:{user}", "job_progress")
    assert jobs[-1]["status"] == "failed" and "deleted" in jobs[-1]["error"], jobs
    assert _count(db, FinancialDataRow, FinancialDataRow.file_id == file_id) == 0


def test_a_report_whose_file_is_deleted_while_it_is_built_leaves_no_file_and_ends(
    db, user, tmp_path: Path
):
    file_id, job_id = _upload(db, user, sample_csv(3))
    process_upload(db, file_id, job_id, max_bytes=MAX_BYTES, max_rows=MAX_ROWS)
    with session_scope(db) as session:
        file = session.get(File, file_id)
        assert file is not None
        report_id = request_report(session, file, user, "csv", "job-gone").id
    deleted: list[int] = []

    def delete_once(percent: int) -> None:
        if not deleted:
            _delete_file(db, file_id)
            deleted.append(percent)

    outcome = generate_report(db, tmp_path, report_id, on_progress=delete_once)
    assert deleted and outcome.status == "skipped"
    assert list(tmp_path.iterdir()) == [], "a report file no row points at"
    statuses = [e["status"] for e in _outbox(db, f"user:{user}", "report_status")]
    assert statuses[-2:] == ["running", "failed"], statuses
    assert (
        _count(db, Notification, Notification.user_id == user, Notification.type == "report_ready")
        == 0
    )


def test_stale_jobs_are_failed_or_sent_again(db, user):
    stuck, _ = _upload(db, user, sample_csv(2))
    waiting, waiting_job = _upload(db, user, sample_csv(2))
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    with session_scope(db) as session:
        for file in session.scalars(select(File).where(File.id.in_([stuck, waiting]))):
            file.created_at = file.updated_at = long_ago
            if file.id == stuck:
                file.status = "processing"
    stale = find_stale_jobs(db, older_than_seconds=3600)
    assert stale.failed_files >= 1
    assert (waiting, waiting_job) in stale.requeue_files
    assert stuck not in [file_id for file_id, _ in stale.requeue_files]
    with session_scope(db) as session:
        failed = session.get(File, stuck)
        assert failed is not None and failed.status == "failed"
        assert "did not finish in time" in (failed.error or "")
        alerts = select(Notification).where(
            Notification.user_id == user, Notification.type == "error_alert"
        )
        assert len(list(session.scalars(alerts))) == 1


def test_concurrent_parameter_changes_leave_a_snapshot_matching_the_stored_values(db, user):
    from concurrent.futures import ThreadPoolExecutor
    from decimal import Decimal

    from domain.metrics import build_dashboard
    from services.files import load_parameters, read_rows, set_parameter

    file_id, job_id = _upload(db, user, sample_csv(6))
    process_upload(db, file_id, job_id, max_bytes=MAX_BYTES, max_rows=MAX_ROWS)

    def change(step: int) -> None:
        name = "tax_rate" if step % 2 else "growth_rate"
        with session_scope(db) as session:
            file = session.get(File, file_id)
            assert file is not None
            set_parameter(session, file, name, Decimal(step) / 100, user)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(change, range(1, 41)))
    with session_scope(db) as session:
        expected = build_dashboard(read_rows(session, file_id), load_parameters(session, file_id))
        snapshot = session.get(DashboardSnapshot, file_id)
        assert snapshot is not None
        assert snapshot.data == expected.to_json()


@pytest.mark.parametrize("good_rows", [True, False])
def test_a_files_notification_lists_as_many_refused_rows_as_its_event_holds(
    db, user, monkeypatch, good_rows
):
    """With a small FINRT_MAX_EVENT_BYTES, fifty long refused rows do not fit one event: the
    notification names fewer of them (``truncated``) instead of being refused."""
    from core.settings import get_settings

    monkeypatch.setenv("FINRT_MAX_EVENT_BYTES", "8192")
    get_settings.cache_clear()
    try:
        long_bad = b"2026-01,income,revenue,not a number " + b"x" * 100 + b",USD\n"
        good = b"2026-01,income,revenue,10.00,USD\n" if good_rows else b""
        data = b"period,statement,line_item,amount,currency\n" + good + long_bad * 60
        file_id, job_id = _upload(db, user, data)
        done = process_upload(db, file_id, job_id, max_bytes=MAX_BYTES, max_rows=MAX_ROWS)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert done.status == ("processed" if good_rows else "failed")
    events = _outbox(db, f"user:{user}", "notification")
    wanted = "data_quality_issue" if good_rows else "error_alert"
    (event,) = [e for e in events if e["type"] == wanted]
    assert event["data"]["truncated"] is True and 0 < len(event["data"]["issues"]) < 50
    assert len(orjson.dumps(event)) < 8192
