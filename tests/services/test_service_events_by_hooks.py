"""Issue 14, item 1: the services no longer enqueue the events of their own row changes (a
parameter set, a report requested, a file's processing status); the ORM hooks enqueue them,
with the payload, key and place in the transaction the services gave them. Runs on either
database."""

from __future__ import annotations

import ast
import uuid
from pathlib import Path
from typing import Any

import redis

from domain.sample import rows_csv
from models import File, ReportExport, session_scope
from services.files import create_upload, set_parameter
from services.notification_actions import _retry_processing
from services.reports import request_report
from tests.conftest import DATABASE_URL
from tests.processed_files import processed_file
from tests.services.test_change_events import stored
from workers.processing import fail_processing

ROOT = Path(__file__).resolve().parents[2]
# Row changes of tracked tables: announced by the hooks, never by an explicit call.
BY_HOOKS = {"parameter_update", "file_processing"}


def test_no_service_enqueues_a_row_change_of_a_tracked_table_itself() -> None:
    found: list[str] = []
    for path in sorted([*(ROOT / "services").glob("*.py"), *(ROOT / "workers").glob("*.py")]):
        if path.name == "announce_changes.py":  # the hooks themselves
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or getattr(node.func, "id", None) != "enqueue":
                continue
            kinds = [a.value for a in node.args if isinstance(a, ast.Constant)]
            if BY_HOOKS & set(kinds):
                found.append(f"{path.name}:{node.lineno}")
    assert not found, found
    # A report's queued events at its request are the hooks' too; enqueue_status stays for
    # the conditional bulk updates (marked finrt_events="explicit") only.
    source = (ROOT / "services" / "reports.py").read_text()
    tree = ast.parse(source)
    request = next(
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "request_report"
    )
    assert "enqueue_status" not in ast.get_source_segment(source, request)  # type: ignore[operator]


def _of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def test_set_parameter_publishes_its_event_with_previous_before_the_recomputed_figures(
    redis_client: redis.Redis, user: str
) -> None:
    file_id = processed_file(user, rows_csv(24))
    before = len(stored(redis_client, f"file:{file_id}"))
    results = []
    for value in ("0.2", "0.35"):
        with session_scope(DATABASE_URL) as session:
            file = session.get(File, file_id)
            assert file is not None
            results.append(set_parameter(session, file, "growth_rate", value, user))
    events = stored(redis_client, f"file:{file_id}")[before:]
    parameters = _of(events, "parameter_update")
    assert len(parameters) == 2, [e["type"] for e in events]
    for event, result in zip(parameters, results, strict=True):
        assert event["key"] == "parameter:growth_rate"
        assert event["data"] == {
            "file_id": file_id,
            "name": "growth_rate",
            "value": result["value"],
            "previous": result["previous"],
            "updated_by": user,
            "parameter_id": "growth_rate",
            "updated_at": result["updated_at"],
        }
    assert [p["data"]["previous"] for p in parameters] == [None, "0.2"]
    # Each transaction: the parameter first, then the metrics and charts it changed.
    second = events.index(parameters[1])
    assert events[0]["type"] == "parameter_update"
    assert all(e["type"] in ("metric_update", "chart_data_update") for e in events[1:second])
    assert results[0]["changed_metrics"] and events[1]["type"] == "metric_update"


def test_request_report_publishes_queued_on_both_channels_once(
    redis_client: redis.Redis, user: str
) -> None:
    file_id = processed_file(user, rows_csv(6))
    with session_scope(DATABASE_URL) as session:
        file = session.get(File, file_id)
        assert file is not None
        report_id = request_report(session, file, user, "csv", str(uuid.uuid4())).id
    expected = {
        "report_id": report_id,
        "file_id": file_id,
        "format": "csv",
        "status": "queued",
        "percent": 0,
        "scheduled": False,
        "download_url": None,
        "error": None,
    }
    for channel in (f"file:{file_id}", f"user:{user}"):
        events = _of(stored(redis_client, channel), "report_status")
        assert [(e["key"], e["data"]) for e in events] == [(f"report:{report_id}", expected)]
    with session_scope(DATABASE_URL) as session:
        assert session.get(ReportExport, report_id) is not None


def test_failing_and_retrying_a_file_publish_the_processing_events(
    redis_client: redis.Redis, user: str
) -> None:
    with session_scope(DATABASE_URL) as session:
        file_id = create_upload(session, user, "q3.csv", rows_csv(6), str(uuid.uuid4())).id
    assert fail_processing(DATABASE_URL, file_id, str(file_id), "the worker was lost")
    with session_scope(DATABASE_URL) as session:
        file = session.get(File, file_id)
        assert file is not None
        total = file.rows_total
        _retry_processing(session, user, {"file_id": file_id})
    events = _of(stored(redis_client, f"file:{file_id}"), "file_processing")
    assert [(e["key"], e["data"]) for e in events] == [
        (
            "file_processing",
            {
                "status": "failed",
                "processed": 0,
                "total": total,
                "percent": 100,
                "error": "the worker was lost",
            },
        ),
        ("file_processing", {"status": "queued", "processed": 0, "total": 0, "percent": 0}),
    ]
    jobs = _of(stored(redis_client, f"user:{user}"), "job_progress")
    assert [j["data"]["status"] for j in jobs] == ["failed", "queued"]
