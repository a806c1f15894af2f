"""Channel history for polling clients and debugging, and publishing for services."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, HTTPException, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from api.deps import BearerToken, CurrentUser, StateDep
from api.errors import BAD_CHANNEL, bad_request, forbidden
from api.limits import rate_limited_response
from api.routes.streams import authorize
from streams.envelope import InvalidEvent, check_channel, control_envelope, format_id, parse_id
from streams.history import plan_resume

router = APIRouter(prefix="/api/v1", tags=["events"])

ChannelPath = Annotated[str, Path(max_length=80, description="user:<id> or file:<id>")]


def _channel(value: str) -> str:
    try:
        return check_channel(value)
    except InvalidEvent as exc:
        raise bad_request(str(exc)) from exc


@router.get(
    "/events/{channel}",
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
    """``{"events": [...]}`` oldest first: after ``after``, else the newest ``limit``.

    When history no longer reaches back to ``after`` the first event is ``reset``.
    """
    channel = _channel(channel)
    await authorize(state, principal, [channel])
    hub = state.hub
    events: list[bytes] = []
    if after is None:
        events = [e.envelope for e in await hub.history.read_latest(channel, limit)]
    else:
        try:
            position = parse_id(after)
        except InvalidEvent as exc:
            raise bad_request(str(exc)) from exc
        bounds = await hub.history.bounds(channel)
        plan = plan_resume(position, bounds)
        if plan.reset is not None:
            head = format_id(plan.position)
            data = {"reason": plan.reset, "position": head}
            events.append(control_envelope("reset", channel, head, data))
        else:
            page = await hub.history.read_page(channel, plan.position, limit)
            events = [e.envelope for e in page.events]
    body = b'{"events":[' + b",".join(events) + b"]}"
    return Response(body, media_type="application/json")


class EventCreate(BaseModel):
    type: str = Field(max_length=64, examples=["metric_update"])
    data: Any = Field(default_factory=dict)
    key: str | None = Field(default=None, max_length=128)


class EventCreated(BaseModel):
    id: str


@router.post(
    "/events/{channel}",
    status_code=202,
    response_model=EventCreated,
    responses={
        400: {"description": "not a channel name, or a body that could not be parsed"},
        403: {"description": "the token lacks scope 'publish'"},
        413: {"description": "the envelope is over FINRT_MAX_EVENT_BYTES"},
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
