"""Channel history for polling clients and debugging, and publishing for services."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, HTTPException, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from api.deps import BearerToken, CurrentUser, StateDep
from api.errors import BAD_CHANNEL, bad_request, forbidden, not_found
from api.limits import rate_limited_response
from api.routes.streams import authorize
from api.state import AppState
from models import File, session_scope
from services.access import NotFound, parse_file_id
from services.event_types import is_reserved
from streams.channels import check_channel
from streams.envelope import InvalidEvent, check_finite, control_envelope, format_id, parse_id
from streams.history import plan_resume

router = APIRouter(prefix="/api/v1", tags=["events"])

ENVELOPE_EXAMPLE: dict[str, Any] = {
    "id": "1795634193826-0",
    "channel": "file:7",
    "type": "metric_update",
    "data": {"name": "revenue", "value": "1200.00"},
    "created_at": "2026-11-25T17:40:12.123456Z",
    "key": "revenue",
}

ChannelPath = Annotated[str, Path(max_length=80, description="user:<id> or file:<id>")]


def _channel(value: str) -> str:
    try:
        return check_channel(value)
    except InvalidEvent as exc:
        raise bad_request(str(exc)) from exc


class EventEnvelope(BaseModel):
    """One event (JSON Schema of each type's data: /api/v1/schemas/events.json)."""

    model_config = ConfigDict(json_schema_extra={"examples": [ENVELOPE_EXAMPLE]})

    id: str = Field(description="unique, strictly increasing within the channel")
    channel: str
    type: str
    data: Any
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    key: str | None = Field(default=None, description="a newer event with it supersedes this")


class EventList(BaseModel):
    events: list[EventEnvelope] = Field(description="oldest first")


@router.get(
    "/events/{channel}",
    response_model=EventList,
    responses={**BAD_CHANNEL, 403: {}, 404: {}, 503: {"description": "Redis is unreachable"}},
)
async def list_events(
    channel: ChannelPath,
    state: StateDep,
    principal: CurrentUser,
    after: Annotated[
        str | None, Query(max_length=41, description="return events after this id")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """``{"events": [...], "position": id}`` oldest first: after ``after``, else the newest
    ``limit``. ``position`` is the newest id in history before the read: a stream resumed from
    it misses nothing published since (it is a real id even when the channel has no events).

    When history no longer reaches back to ``after`` the first event is ``reset``.
    """
    channel = _channel(channel)
    await authorize(state, principal.user_id, [channel])
    hub = state.hub
    events: list[bytes] = []
    try:
        position = None if after is None else parse_id(after)
    except InvalidEvent as exc:
        raise bad_request(str(exc)) from exc
    bounds = await hub.history.bounds(channel)
    if position is None:
        events = [e.envelope for e in await hub.history.read_latest(channel, limit)]
    else:
        plan = plan_resume(position, bounds)
        if plan.reset is not None:
            head = format_id(plan.position)
            data = {"reason": plan.reset, "position": head}
            events.append(control_envelope("reset", channel, head, data))
        else:
            page = await hub.history.read_page(channel, plan.position, limit)
            events = [e.envelope for e in page.events]
    newest = format_id(bounds.head).encode()
    body = b'{"events":[' + b",".join(events) + b'],"position":"' + newest + b'"}'
    return Response(body, media_type="application/json")


class EventCreate(BaseModel):
    type: str = Field(max_length=64, examples=["metric_update"])
    data: dict[str, Any] = Field(default_factory=dict, description="a JSON object")
    key: str | None = Field(default=None, max_length=128)


class EventCreated(BaseModel):
    id: str


@router.post(
    "/events/{channel}",
    status_code=202,
    response_model=EventCreated,
    responses={
        400: {"description": "not a channel name, or a body that could not be parsed"},
        401: {"description": "missing, bad or expired token (checked before the body is read)"},
        403: {
            "description": "the token lacks scope 'publish', its 'channels' claim does not "
            "cover the channel, or the type is reserved for the service's own events"
        },
        404: {"description": "a file channel of a file that does not exist"},
        413: {"description": "the envelope is over FINRT_MAX_EVENT_BYTES, or the body too large"},
        422: {"description": "a bad type, key or data (NaN, Infinity, numbers beyond a double)"},
        429: rate_limited_response("FINRT_PUBLISH_RATE"),
        503: {"description": "Redis is unreachable; nothing was published"},
    },
)
async def publish_event(
    channel: ChannelPath,
    state: StateDep,
    principal: CurrentUser,
    token: BearerToken,
    event: Annotated[EventCreate, Body()],
) -> EventCreated:
    """Publish one event (tokens with scope ``publish`` only, at most FINRT_PUBLISH_RATE)."""
    if not principal.can("publish"):
        raise forbidden("publishing needs a token with scope 'publish'")
    channel = _channel(channel)
    if is_reserved(event.type):
        raise forbidden(
            f"type {event.type!r} is reserved for events the service produces itself; "
            "publish a type of your own"
        )
    if not principal.may_publish_to(channel):
        raise forbidden(f"this token may not publish to {channel} (its 'channels' claim)")
    try:
        check_finite(event.data)
    except InvalidEvent as exc:
        raise HTTPException(422, str(exc)) from None
    await _file_exists(state, channel)
    await state.limits.check("publish", token)
    try:
        event_id = await state.publisher.publish(channel, event.type, event.data, event.key)
    except InvalidEvent as exc:
        status = 413 if "limit is" in str(exc) else 422
        return Response(
            orjson.dumps({"detail": str(exc)}), status_code=status, media_type="application/json"
        )  # type: ignore[return-value]
    except (RedisError, OSError) as exc:
        raise HTTPException(503, "Redis is unreachable; try again shortly") from exc
    return EventCreated(id=event_id)


async def _file_exists(state: AppState, channel: str) -> None:
    """404 for ``file:<id>`` of no file (existence is cached briefly, like read grants)."""
    kind, _, ident = channel.partition(":")
    if kind != "file" or state.access.granted("", channel):
        return

    def _exists() -> bool:
        try:
            file_id = parse_file_id(ident)
        except NotFound:
            return False
        with session_scope(state.settings.database_url) as session:
            return session.get(File, file_id) is not None

    if not await run_in_threadpool(_exists):
        raise not_found(f"no such file: {channel}")
    state.access.grant("", channel)  # "" is no user: this entry means "the file exists"
