"""Server-Sent Events streams and stream tickets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from redis.exceptions import RedisError

from api.auth import Principal
from api.deps import CurrentUser, LastEventId, StateDep, StreamUser
from api.errors import bad_request, forbidden, not_found
from api.state import AppState
from api.tickets import issue_ticket
from models import session_scope
from services.access import Forbidden, NotFound, check_channel, parse_file_id
from streams.envelope import InvalidEvent, StreamId, parse_id
from streams.envelope import check_channel as valid_channel
from streams.hub import HubUnavailable, TooManyStreams
from streams.sse import HubEventSourceResponse
from streams.subscriber import SSE, SSE_MULTI, decode_cursor

router = APIRouter(prefix="/api/v1", tags=["streams"])

STREAM_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"text/event-stream": {}}, "description": "the event stream"},
    400: {"description": "a bad channel name, too many channels, or a bad Last-Event-ID"},
    401: {"description": "missing, bad or expired token"},
    403: {"description": "a channel the user may not read"},
    404: {"description": "unknown file"},
    429: {"description": "too many open streams for this user"},
    503: {"description": "Redis is unreachable; try again shortly"},
}


async def authorize(state: AppState, principal: Principal, channels: list[str]) -> None:
    """403/404 unless ``principal`` may read every channel (grants are cached briefly)."""
    todo = [c for c in channels if not state.access.granted(principal.user_id, c)]
    if not todo:
        return

    def _check() -> None:
        with session_scope(state.settings.database_url) as session:
            for channel in todo:
                check_channel(session, principal.user_id, channel)

    try:
        await run_in_threadpool(_check)
    except Forbidden as exc:
        raise forbidden(str(exc)) from exc
    except NotFound as exc:
        raise not_found(str(exc)) from exc
    for channel in todo:
        state.access.grant(principal.user_id, channel)


def _positions(channels: list[str], raw: str | None, multi: bool) -> dict[str, StreamId | None]:
    last: dict[str, StreamId | None] = dict.fromkeys(channels)
    if raw is None:
        return last
    try:
        if multi:
            cursor = decode_cursor(raw)
            last.update({c: sid for c, sid in cursor.items() if c in last})
        else:
            last[channels[0]] = parse_id(raw)
    except InvalidEvent as exc:
        raise bad_request(str(exc)) from exc
    return last


async def open_stream(
    state: AppState,
    principal: Principal,
    channels: list[str],
    last_event_id: str | None,
    *,
    multi: bool,
) -> Response:
    await authorize(state, principal, channels)
    last = _positions(channels, last_event_id, multi)
    hub = state.hub
    try:
        sub = hub.new_subscriber(principal.user_id, channels, SSE_MULTI if multi else SSE)
    except TooManyStreams as exc:
        return JSONResponse({"detail": str(exc)}, status_code=429)
    try:
        await hub.join(sub, channels)
        plans = await hub.prepare(sub, last)
    except (HubUnavailable, RedisError) as exc:
        hub.release(sub)
        return JSONResponse({"detail": str(exc)}, status_code=503)
    except BaseException:
        hub.release(sub)
        raise
    return HubEventSourceResponse(
        hub,
        sub,
        plans,
        announce=any(v is None for v in last.values()),
        expires_at=principal.expires_at,
    )


@router.get("/stream/notifications", responses=STREAM_RESPONSES, response_class=Response)
async def stream_notifications(
    state: StateDep, principal: StreamUser, last_event_id: LastEventId
) -> Response:
    """Stream the caller's notifications and job events (channel ``user:{sub}``)."""
    return await open_stream(
        state, principal, [f"user:{principal.user_id}"], last_event_id, multi=False
    )


@router.get("/stream/files/{file_id}", responses=STREAM_RESPONSES, response_class=Response)
async def stream_file(
    file_id: str, state: StateDep, principal: StreamUser, last_event_id: LastEventId
) -> Response:
    """Stream one file's dashboard events (channel ``file:{file_id}``)."""
    return await open_stream(state, principal, file_channels(file_id), last_event_id, multi=False)


@router.get("/stream", responses=STREAM_RESPONSES, response_class=Response)
async def stream_many(
    state: StateDep,
    principal: StreamUser,
    last_event_id: LastEventId,
    channel: Annotated[list[str], Query(min_length=1, description="channels, e.g. user:alice")],
) -> Response:
    """Stream several channels on one connection; the SSE id is a cursor over all of them."""
    channels = many_channels(channel, state.settings.max_channels_per_stream)
    return await open_stream(state, principal, channels, last_event_id, multi=True)


def file_channels(file_id: str) -> list[str]:
    try:
        parse_file_id(file_id)
    except NotFound as exc:
        raise not_found(str(exc)) from exc
    return [f"file:{file_id}"]


def many_channels(requested: list[str], limit: int) -> list[str]:
    channels = list(dict.fromkeys(requested))
    if not channels:
        raise bad_request("name at least one channel")
    if len(channels) > limit:
        raise bad_request(f"at most {limit} channels per stream")
    for name in channels:
        try:
            valid_channel(name)
        except InvalidEvent as exc:
            raise bad_request(str(exc)) from exc
    return channels


class TicketPublic(BaseModel):
    ticket: str
    expires_in: int


@router.post(
    "/stream/tickets",
    status_code=201,
    response_model=TicketPublic,
    responses={503: {"description": "Redis is unreachable; no ticket was made"}},
)
async def create_ticket(state: StateDep, principal: CurrentUser) -> TicketPublic:
    """A single-use ticket (valid 60 s) for ``?ticket=`` on a stream URL."""
    ttl = state.settings.ticket_ttl_seconds
    ticket = await issue_ticket(state.redis, state.settings.redis_prefix, principal, ttl)
    return TicketPublic(ticket=ticket, expires_in=ttl)
