"""Actions on notifications: the makers producers use, and performing one for its user.

An action is a link (the page opens it; performing it only records it done) or an api action
the service performs for the user (``op`` names it, ``args`` carry what it needs; neither is
shown). Performing is idempotent: the notification's row is locked first, so of two calls
(a double click, two tabs) only one does the work; the other finds it done.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from models import File, FileUpload, ReportExport, enqueue
from models.base import utcnow
from models.change_events import service_change
from models.notifications import Notification
from services import engagement
from services.access import Forbidden, NotFound, file_for_reader
from services.files import user_channel
from services.notifications import (
    NotificationNotFound,
    iso,
    owned,
    parse_id,
    public_action,
    rowcount,
)

__all__ = [
    "ActionRefused",
    "FollowUp",
    "NoSuchAction",
    "link",
    "open_file",
    "perform_action",
    "regenerate_report",
    "retry_processing",
]


class NoSuchAction(LookupError):
    """The notification has no action at that index."""


class ActionRefused(Exception):
    """The action cannot be done now (say, the file is no longer failed)."""


@dataclass(frozen=True)
class FollowUp:
    """What the caller does once the transaction has committed: queue a task."""

    task: str
    args: tuple[Any, ...]


def link(label: str, url: str) -> dict[str, Any]:
    return {"label": label, "kind": "link", "url": url}


def open_file(file_id: int, label: str = "Open file") -> dict[str, Any]:
    """A link the page opens by choosing the file (``#file=ID``)."""
    return link(label, f"/#file={file_id}")


def retry_processing(file_id: int) -> dict[str, Any]:
    return {
        "label": "Retry processing",
        "kind": "api",
        "op": "retry_processing",
        "args": {"file_id": file_id},
    }


def _retry_processing(session: Session, user_id: str, args: dict[str, Any]) -> FollowUp:
    """Queue a failed file again, with a new job id, from the bytes still stored."""
    file = session.get(File, int(args["file_id"]))
    if file is None or file.owner_id != user_id:
        raise ActionRefused("the file no longer exists")
    if file.status != "failed":
        raise ActionRefused(f"the file is {file.status}; only a failed file is processed again")
    upload = session.get(FileUpload, file.id)
    if upload is None or upload.content is None:
        raise ActionRefused("the upload is no longer stored; upload the file again")
    job_id = str(uuid.uuid4())
    upload.job_id, upload.attempts = job_id, 0  # a new job, tried afresh
    file.status, file.error, file.updated_at = "queued", None, utcnow()
    # Its file_processing is the hooks' (services/announce_changes.py), enqueued by this flush.
    service_change(file)
    session.flush()
    job = {"job_id": job_id, "kind": "process_file", "file_id": file.id, "status": "queued"}
    enqueue(
        session, user_channel(user_id), "job_progress", job | {"percent": 0}, key=f"job:{job_id}"
    )
    return FollowUp("process_file", (file.id, job_id))


def regenerate_report(report_id: int) -> dict[str, Any]:
    return {
        "label": "Regenerate report",
        "kind": "api",
        "op": "regenerate_report",
        "args": {"report_id": report_id},
    }


def _regenerate_report(session: Session, user_id: str, args: dict[str, Any]) -> FollowUp:
    """A new report of the same file and format, requested by the same user."""
    from services.reports import FileNotReady, request_report  # reports notify through us

    failed = session.get(ReportExport, int(args["report_id"]))
    if failed is None or failed.requested_by != user_id:
        raise ActionRefused("the report no longer exists")
    if failed.status != "failed":
        raise ActionRefused(f"the report is {failed.status}; only a failed one is built again")
    try:  # the requester may have lost the file since (a member removed)
        file = file_for_reader(session, user_id, failed.file_id)
    except NotFound:
        raise ActionRefused("the report's file no longer exists") from None
    except Forbidden:
        raise ActionRefused("you are no longer a member of the report's file") from None
    job_id = str(uuid.uuid4())
    try:
        report = request_report(session, file, user_id, failed.format, job_id)
    except FileNotReady as exc:
        raise ActionRefused(str(exc)) from None
    return FollowUp("generate_report", (report.id, job_id))


_OPS: dict[str, Callable[[Session, str, dict[str, Any]], FollowUp | None]] = {
    "retry_processing": _retry_processing,
    "regenerate_report": _regenerate_report,
}


def perform_action(
    session: Session, user_id: str, notification_id: str, index: int
) -> tuple[Notification, bool, FollowUp | None]:
    """Do action ``index`` of one of the user's notifications and record it done:
    ``(notification, done now, follow-up)``. Done before: nothing happens again.

    NotificationNotFound, NoSuchAction, ActionRefused (nothing changed).
    """
    now = datetime.now(UTC)
    nid = parse_id(notification_id)
    # A no-op UPDATE takes the row's write lock before anything is read, so two calls take
    # turns (SQLite: the database's; PostgreSQL: the row's) and the second sees the first's.
    locked = session.execute(
        update(Notification)
        .where(owned(user_id, nid, now))
        .values(actions=Notification.actions)
        .execution_options(synchronize_session=False, finrt_events="explicit")
    )
    if rowcount(locked) == 0:
        raise NotificationNotFound("no such notification")
    n = session.get(Notification, nid, populate_existing=True)
    assert n is not None
    actions = [dict(a) for a in n.actions or []]
    if not 0 <= index < len(actions):
        raise NoSuchAction(f"this notification has no action {index}")
    action = actions[index]
    if action.get("done_at"):
        return n, False, None
    follow_up = None
    if action["kind"] == "api":
        op = _OPS.get(str(action.get("op")))
        if op is None:
            raise ActionRefused(f"unknown action {action.get('op')!r}")
        follow_up = op(session, user_id, dict(action.get("args") or {}))
    if not any(a.get("done_at") for a in actions):  # acted on: counted once
        engagement.count(session, "acted", n.type)
    action["done_at"] = iso(now)
    session.execute(
        update(Notification)
        .where(Notification.id == nid)
        .values(actions=actions)
        .execution_options(synchronize_session=False, finrt_events="explicit")
    )
    n = session.get(Notification, nid, populate_existing=True)
    assert n is not None
    data = {
        "id": nid,
        "index": index,
        "done_at": action["done_at"],
        "actions": [public_action(a) for a in actions],
    }
    enqueue(session, user_channel(user_id), "notification_action_done", data)
    return n, True, follow_up
