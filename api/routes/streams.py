"""Server-Sent Events streams and stream tickets."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from redis.exceptions import RedisError

from api.deps import CurrentUser, StateDep, authenticate_stream
from api.errors import bad_request, forbidden, not_found
from api.state import AppState
from api.stream_request import StreamRequest, openapi_parameters, parse_stream_request
from api.tickets import issue_ticket
from models import session_scope
from services.access import Forbidden, NotFound, check_channel, own_channel
from streams.envelope import InvalidEvent, StreamId, parse_id
from streams.hub import HubUnavailable, TooManyStreams
from streams.sse import HubEventSourceResponse
from streams.transports import SSE, SSE_MULTI, decode_cursor

router = APIRouter(prefix="/api/v1", tags=["streams"])

STREAM_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"text/event-stream": {}}, "description": "the event stream"},
    400: {"description": "a bad channel name, too many channels, or a bad Last-Event-ID"},
    401: {"description": "missing, bad or expired token"},
    403: {"description": "a channel the user may not read"},
    404: {"description": "unknown file"},
    422: {"description": "a token, ticket or Last-Event-ID longer than its limit"},
    429: {"description": "too many open streams for this user"},
    503: {"description": "Redis is unreachable; try again shortly"},
}


async def authorize(state: AppState, user_id: str, channels: list[str]) -> None:
    """403/404 unless ``user_id`` may read every channel (grants are cached briefly)."""
    todo = [c for c in channels if not state.access.granted(user_id, c)]
    # The user's own channel needs no database (nor a thread); refusals keep their order below.
    todo = [c for c in todo if not _own(user_id, c)]
    if not todo:
        return

    def _check() -> None:
        with session_scope(state.settings.database_url) as session:
            for channel in todo:
                check_channel(session, user_id, channel)

    try:
        await run_in_threadpool(_check)
    except Forbidden as exc:
        raise forbidden(str(exc)) from exc
    except NotFound as exc:
        raise not_found(str(exc)) from exc
    for channel in todo:
        state.access.grant(user_id, channel)


def _own(user_id: str, channel: str) -> bool:
    try:
        return own_channel(user_id, channel)
    except (Forbidden, NotFound):
        return False


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


async def open_stream(state: AppState, request: StreamRequest) -> Response:
    """Authenticate, check access, fix the starting positions and join the hub: the one way
    a stream opens, whether the front door or a route received the request."""
    principal = await authenticate_stream(state, request.credentials)
    channels = request.channels(principal.user_id, state.settings.max_channels_per_stream)
    await authorize(state, principal.user_id, channels)
    last = _positions(channels, request.last_event_id, request.multi)
    hub = state.hub
    try:
        sub = hub.new_subscriber(principal.user_id, channels, SSE_MULTI if request.multi else SSE)
    except TooManyStreams as exc:
        return JSONResponse({"detail": str(exc)}, status_code=429)
    try:
        await hub.admit(sub)
        await hub.join(sub, channels)
        plans = await hub.prepare(sub, last)
    except TooManyStreams as exc:
        hub.release(sub)
        return JSONResponse({"detail": str(exc)}, status_code=429)
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


async def _serve(request: Request) -> Response:
    # Behind the front door (`finrt api`) no stream request gets here; without it (the app
    # from create_app() alone) every one does, and is read by the same parser.
    parsed = parse_stream_request(request.scope)
    assert parsed is not None
    return await open_stream(request.app.state.finrt, parsed)


@router.get(
    "/stream/notifications",
    responses=STREAM_RESPONSES,
    response_class=Response,
    openapi_extra=openapi_parameters("notifications"),
)
async def stream_notifications(request: Request) -> Response:
    """Stream the caller's notifications and job events (channel ``user:{sub}``)."""
    return await _serve(request)


@router.get(
    "/stream/files/{file_id}",
    responses=STREAM_RESPONSES,
    response_class=Response,
    openapi_extra=openapi_parameters("file"),
)
async def stream_file(file_id: str, request: Request) -> Response:
    """Stream one file's dashboard events (channel ``file:{file_id}``)."""
    return await _serve(request)


@router.get(
    "/stream",
    responses=STREAM_RESPONSES,
    response_class=Response,
    openapi_extra=openapi_parameters("many"),
)
async def stream_many(request: Request) -> Response:
    """Stream several channels on one connection; the SSE id is a cursor over all of them."""
    return await _serve(request)


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
