"""Notifications endpoints: the caller's inbox.

Routes that change something commit before they answer: the outbox publishes in the session's
after-commit hook, so by the time the client has its response the change is stored and its
event has gone to the user's other tabs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from api.deps import CurrentUser, SessionDep
from api.errors import not_found
from core.notification_types import NOTIFICATION_TYPES
from models.notifications import PRIORITIES, Notification
from services import notifications as inbox

# Timestamps stay the strings services.notifications.to_public makes, so a REST body and the
# `notification` event show one notification byte for byte.
Timestamp = Annotated[
    str, Field(json_schema_extra={"format": "date-time"}, examples=["2026-11-25T17:40:12.123456Z"])
]

NotificationId = Annotated[str, Path(description="the notification's id (a uuid)")]

_NOT_YOURS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such notification of the caller's (or not a uuid)"},
}


class ActionPublic(BaseModel):
    label: str = Field(examples=["Download"])
    kind: Literal["link", "api"] = Field(
        description="link: the page opens url; api: the service performs it "
        "(POST /notifications/{id}/actions/{index})"
    )
    url: str | None = Field(None, description="links only", examples=["/api/v1/reports/7/download"])
    done_at: Timestamp | None


class NotificationPublic(BaseModel):
    id: str = Field(examples=["0b6f3c1e-8d0a-4c1e-9a57-2f1f6d4b8e21"])
    type: str = Field(json_schema_extra={"enum": list(NOTIFICATION_TYPES)})
    title: str
    message: str
    data: dict[str, Any]
    priority: str = Field(json_schema_extra={"enum": list(PRIORITIES)})
    is_read: bool
    is_dismissed: bool
    created_at: Timestamp
    read_at: Timestamp | None
    expires_at: Timestamp | None
    seen_at: Timestamp | None
    archived_at: Timestamp | None
    snoozed_until: Timestamp | None
    actions: list[ActionPublic] = Field(max_length=inbox.MAX_ACTIONS)
    count: int = Field(
        1, ge=1, description="how many notifications this one stands for (a digest when > 1)"
    )

    @classmethod
    def of(cls, n: Notification) -> NotificationPublic:
        return cls.model_validate(inbox.to_public(n))


class NotificationList(BaseModel):
    notifications: list[NotificationPublic]
    total: int = Field(description="how many match the filter, over all pages")
    page: int
    limit: int
    unread_count: int


class NotificationUpdated(NotificationPublic):
    """The notification after the change, and the caller's unread count that goes with it."""

    unread_count: int

    @classmethod
    def after(cls, n: Notification, unread_count: int) -> NotificationUpdated:
        return cls.model_validate({**inbox.to_public(n), "unread_count": unread_count})


class UnreadCount(BaseModel):
    unread_count: int


class MarkedAllRead(BaseModel):
    marked: int = Field(description="how many were unread and are now read")
    unread_count: int


router = APIRouter(prefix="/api/v1", tags=["notifications"])


@router.get("/notifications", response_model=NotificationList)
def list_notifications(
    principal: CurrentUser,
    session: SessionDep,
    page: Annotated[int, Query(ge=1, description="1 for the newest")] = 1,
    limit: Annotated[int, Query(ge=1, le=inbox.MAX_PAGE_SIZE, description="page size")] = 50,
    unread_only: Annotated[bool, Query(description="leave out those already read")] = False,
    status: Annotated[
        Literal["unread", "read", "archived", "all"] | None,
        Query(description="default: every one not archived; all: archived ones too"),
    ] = None,
    type: Annotated[
        Literal[NOTIFICATION_TYPES] | None,  # type: ignore[valid-type]
        Query(description="only this type"),
    ] = None,
    priority: Annotated[
        Literal["low", "normal", "high", "urgent"] | None, Query(description="only this priority")
    ] = None,
) -> NotificationList:
    """The caller's notifications, newest first; expired, dismissed and snoozed ones left out,
    archived ones unless asked for."""
    items, total, unread = inbox.list_notifications(
        session,
        principal.user_id,
        page=page,
        limit=limit,
        unread_only=unread_only,
        status=status,
        type=type,
        priority=priority,
    )
    return NotificationList(
        notifications=[NotificationPublic.of(n) for n in items],
        total=total,
        page=page,
        limit=limit,
        unread_count=unread,
    )


@router.get("/notifications/unread-count", response_model=UnreadCount)
def get_unread_count(principal: CurrentUser, session: SessionDep) -> UnreadCount:
    """How many of the caller's visible notifications are unread (the badge)."""
    return UnreadCount(unread_count=inbox.unread_count(session, principal.user_id))


@router.post("/notifications/mark-all-read", response_model=MarkedAllRead)
def mark_all_read(principal: CurrentUser, session: SessionDep) -> MarkedAllRead:
    """Mark all of the caller's notifications read."""
    marked, unread = inbox.mark_all_read(session, principal.user_id)
    session.commit()
    return MarkedAllRead(marked=marked, unread_count=unread)


@router.post(
    "/notifications/{notification_id}/read",
    response_model=NotificationUpdated,
    responses=_NOT_YOURS,
)
def mark_read(
    notification_id: NotificationId, principal: CurrentUser, session: SessionDep
) -> NotificationUpdated:
    """Mark one notification read (again is fine); returns it with the new unread count."""
    try:
        n, unread = inbox.mark_read(session, principal.user_id, notification_id)
    except inbox.NotificationNotFound as exc:
        raise not_found(str(exc)) from exc
    session.commit()
    return NotificationUpdated.after(n, unread)


@router.post(
    "/notifications/{notification_id}/dismiss",
    response_model=NotificationUpdated,
    responses=_NOT_YOURS,
)
def dismiss(
    notification_id: NotificationId, principal: CurrentUser, session: SessionDep
) -> NotificationUpdated:
    """Hide one notification from the list and the count; returns it with the unread count."""
    try:
        n, unread = inbox.dismiss(session, principal.user_id, notification_id)
    except inbox.NotificationNotFound as exc:
        raise not_found(str(exc)) from exc
    session.commit()
    return NotificationUpdated.after(n, unread)
