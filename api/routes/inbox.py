"""Inbox states: counts, seen, archive, snooze and actions on the caller's notifications.

Like the other notification routes, each change commits before the answer, so its event has
gone to the user's other tabs by the time the client hears "done".
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from api.deps import CurrentUser, SessionDep, SettingsDep
from api.errors import UNPARSABLE_BODY, not_found
from api.routes.notifications import NotificationId, NotificationPublic
from core.settings import Settings
from models import session_scope
from models.notifications import Notification
from services import inbox_states as states
from services import notification_actions as actions
from services import notifications as inbox
from workers.enqueue import send_generate_report, send_process_file

log = logging.getLogger("finrt.api.inbox")

_NOT_YOURS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such notification of the caller's (or not a uuid)"},
}


class PriorityCounts(BaseModel):
    low: int
    normal: int
    high: int
    urgent: int


class Counts(BaseModel):
    unseen: int = Field(description="listed and not yet seen (the badge)")
    unread: int = Field(description="listed and not yet read")
    by_priority: PriorityCounts = Field(description="the unread ones by priority")


class SeenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    up_to: str = Field(
        max_length=64, description="a notification's id: it and every older one are seen"
    )


class Seen(BaseModel):
    marked: int = Field(description="how many were unseen and are now seen")
    counts: Counts


class ArchivedRead(BaseModel):
    archived: int = Field(description="how many read ones were archived")
    counts: Counts


_ISO_START = re.compile(r"\s*\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}", re.ASCII)


def _iso_text(value: object) -> object:
    """Only the ISO 8601 text the docs name: pydantic alone also reads a number, or digits in a
    string, as seconds since 1970."""
    if not isinstance(value, str) or not _ISO_START.match(value):
        raise ValueError(
            "until must be an ISO 8601 datetime with a time zone, e.g. 2026-12-07T09:00:00+01:00"
        )
    return value


class SnoozeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    until: Annotated[AwareDatetime, BeforeValidator(_iso_text)] = Field(
        description="ISO 8601 with a time zone; at least FINRT_SNOOZE_MIN_SECONDS ahead and "
        "at most 90 days",
        examples=["2026-12-07T09:00:00+01:00"],
    )


class NotificationWithCounts(NotificationPublic):
    """The notification after the change, and the caller's counts that go with it."""

    unread_count: int
    counts: Counts

    @classmethod
    def after(cls, n: Notification, figures: dict[str, Any]) -> NotificationWithCounts:
        body = {**inbox.to_public(n), "unread_count": figures["unread"], "counts": figures}
        return cls.model_validate(body)


class ActionDone(NotificationPublic):
    """The notification with its actions' state; ``performed`` is false when it was done
    before (a double click)."""

    performed: bool


router = APIRouter(prefix="/api/v1", tags=["notifications"])

ActionIndex = Annotated[int, Path(ge=0, le=inbox.MAX_ACTIONS - 1, description="0 or 1")]


async def _send(settings: Settings, follow_up: actions.FollowUp) -> None:
    """Queue the action's task after the commit; if the broker is down, the stale-job check
    sends it later (the job is stored as queued)."""
    job_id, args = str(follow_up.args[1]), follow_up.args
    send = {"process_file": send_process_file, "generate_report": send_generate_report}
    try:
        await run_in_threadpool(send[follow_up.task], settings, int(args[0]), job_id)
    except Exception:
        log.warning("could not queue %s; the stale-job check will", follow_up, exc_info=True)


@router.get("/notifications/counts", response_model=Counts)
def get_counts(principal: CurrentUser, session: SessionDep) -> Counts:
    """Unseen, unread, and unread by priority, over the listed (not archived) notifications."""
    return Counts.model_validate(inbox.counts(session, principal.user_id))


@router.post(
    "/notifications/seen", response_model=Seen, responses={**_NOT_YOURS, **UNPARSABLE_BODY}
)
def mark_seen(body: SeenRequest, principal: CurrentUser, session: SessionDep) -> Seen:
    """Mark seen the given notification and every older one (the bell was opened)."""
    try:
        marked, figures = states.mark_seen(session, principal.user_id, body.up_to)
    except inbox.NotificationNotFound as exc:
        raise not_found(str(exc)) from exc
    session.commit()
    return Seen(marked=marked, counts=Counts.model_validate(figures))


@router.post("/notifications/archive-read", response_model=ArchivedRead)
def archive_read(principal: CurrentUser, session: SessionDep) -> ArchivedRead:
    """Archive every listed notification that is already read."""
    archived, figures = states.archive_read(session, principal.user_id)
    session.commit()
    return ArchivedRead(archived=archived, counts=Counts.model_validate(figures))


@router.post(
    "/notifications/{notification_id}/archive",
    response_model=NotificationWithCounts,
    responses=_NOT_YOURS,
)
def archive(
    notification_id: NotificationId, principal: CurrentUser, session: SessionDep
) -> NotificationWithCounts:
    """Put one away: it leaves the default list and counts, listed under status=archived."""
    try:
        n, figures = states.archive(session, principal.user_id, notification_id)
    except inbox.NotificationNotFound as exc:
        raise not_found(str(exc)) from exc
    session.commit()
    return NotificationWithCounts.after(n, figures)


@router.post(
    "/notifications/{notification_id}/unarchive",
    response_model=NotificationWithCounts,
    responses=_NOT_YOURS,
)
def unarchive(
    notification_id: NotificationId, principal: CurrentUser, session: SessionDep
) -> NotificationWithCounts:
    """Bring an archived one back to the list."""
    try:
        n, figures = states.unarchive(session, principal.user_id, notification_id)
    except inbox.NotificationNotFound as exc:
        raise not_found(str(exc)) from exc
    session.commit()
    return NotificationWithCounts.after(n, figures)


@router.post(
    "/notifications/{notification_id}/snooze",
    response_model=NotificationWithCounts,
    responses={
        **_NOT_YOURS,
        **UNPARSABLE_BODY,
        422: {"description": "until is missing, bad, or out of bounds"},
    },
)
def snooze(
    notification_id: NotificationId,
    body: SnoozeRequest,
    principal: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
) -> NotificationWithCounts:
    """Hide one until a time; it then comes back as new, with a `notification` event."""
    try:
        n, figures = states.snooze(
            session,
            principal.user_id,
            notification_id,
            body.until,
            min_seconds=settings.snooze_min_seconds,
        )
    except inbox.NotificationNotFound as exc:
        raise not_found(str(exc)) from exc
    except states.SnoozeOutOfBounds as exc:
        raise HTTPException(422, str(exc)) from exc
    session.commit()
    return NotificationWithCounts.after(n, figures)


@router.post(
    "/notifications/{notification_id}/actions/{index}",
    response_model=ActionDone,
    responses={
        404: {"description": "no such notification of the caller's, or no such action"},
        409: {"description": "the action cannot be done now (the reason says why)"},
    },
)
async def perform_action(
    notification_id: NotificationId,
    index: ActionIndex,
    principal: CurrentUser,
    settings: SettingsDep,
) -> ActionDone:
    """Perform action `index` (a link is only recorded); again does nothing again."""

    def _perform() -> tuple[dict[str, Any], bool, actions.FollowUp | None]:
        with session_scope(settings.database_url) as session:
            n, performed, follow_up = actions.perform_action(
                session, principal.user_id, notification_id, index
            )
            public = inbox.to_public(n)
        return public, performed, follow_up

    try:
        public, performed, follow_up = await run_in_threadpool(_perform)
    except (inbox.NotificationNotFound, actions.NoSuchAction) as exc:
        raise not_found(str(exc)) from exc
    except actions.ActionRefused as exc:
        raise HTTPException(409, str(exc)) from exc
    if follow_up is not None:
        await _send(settings, follow_up)
    return ActionDone.model_validate({**public, "performed": performed})
