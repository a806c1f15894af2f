"""Dependencies, as ``Annotated`` aliases so that route signatures read like prose."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.auth import AuthError, Principal, decode_token
from api.errors import unauthorized
from api.state import AppState
from api.tickets import redeem_ticket
from core.settings import Settings
from models import session_scope
from services.access import ensure_user

_bearer = HTTPBearer(auto_error=False, description="A JWT signed with FINRT_JWT_SECRET")


# Plain functions would each be sent to the thread pool on every request: these are async.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.finrt
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(request: Request, settings: SettingsDep) -> Iterator[Session]:
    # A GET only reads: it needs no turn at the database's write lock (SQLite).
    read_only = request.method in ("GET", "HEAD")
    with session_scope(settings.database_url, read_only=read_only) as session:
        yield session


# scope="function": the session commits before the response is sent, so a client that is
# told "done" finds the change stored and its events on their way.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def known_user(state: AppState, principal: Principal) -> Principal:
    """Create the user on first sight (cached per process: no database trip afterwards)."""
    if not state.access.user_known(principal.user_id):

        def _ensure() -> None:
            with session_scope(state.settings.database_url) as session:
                ensure_user(session, principal.user_id)

        await run_in_threadpool(_ensure)
        state.access.remember_user(principal.user_id)
    return principal


def principal_from_token(state: AppState, token: str) -> Principal:
    """The token's principal. Verified tokens are remembered until they expire, so a client
    that reconnects (or a page with several tabs) is not verified again each time."""
    cached = state.tokens.get(token)
    if cached is not None:
        if cached.expires_at > time.time():
            return cached
        del state.tokens[token]
    s = state.settings
    try:
        principal = decode_token(token, s.jwt_secret, s.jwt_algorithm)
    except AuthError as exc:
        raise unauthorized(str(exc)) from exc
    if len(state.tokens) >= 10_000:
        state.tokens.clear()
    state.tokens[token] = principal
    return principal


async def current_user(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise unauthorized("missing bearer token")
    return await known_user(state, principal_from_token(state, credentials.credentials))


CurrentUser = Annotated[Principal, Depends(current_user)]


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The bearer token as sent, for the per-token rate limits (api/limits.py)."""
    if credentials is None:
        raise unauthorized("missing bearer token")
    return credentials.credentials


BearerToken = Annotated[str, Depends(bearer_token)]


async def stream_user(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    access_token: Annotated[
        str | None,
        Query(max_length=4096, description="the JWT, for clients that cannot set headers"),
    ] = None,
    ticket: Annotated[
        str | None,
        Query(max_length=64, description="a single-use ticket from POST /stream/tickets"),
    ] = None,
) -> Principal:
    """Streams accept the bearer header, ``?access_token=`` or a single-use ``?ticket=``."""
    bearer = credentials.credentials if credentials is not None else None
    return await authenticate_stream(state, bearer, access_token, ticket)


async def authenticate_stream(
    state: AppState, bearer: str | None, access_token: str | None, ticket: str | None
) -> Principal:
    if bearer is not None:
        principal = principal_from_token(state, bearer)
    elif access_token is not None:
        principal = principal_from_token(state, access_token)
    elif ticket is not None:
        try:
            principal = await redeem_ticket(state.redis, state.settings.redis_prefix, ticket)
        except AuthError as exc:
            raise unauthorized(str(exc)) from exc
    else:
        raise unauthorized("missing token: send a bearer header, access_token or ticket")
    return await known_user(state, principal)


StreamUser = Annotated[Principal, Depends(stream_user)]


async def last_event_id(
    header: Annotated[str | None, Header(alias="Last-Event-ID", max_length=4096)] = None,
    query: Annotated[
        str | None, Query(alias="last_event_id", max_length=4096, description="resume position")
    ] = None,
) -> str | None:
    """The position a client resumes from: the ``Last-Event-ID`` header, else the query."""
    value = header if header else query
    return value.strip() if value and value.strip() else None


LastEventId = Annotated[str | None, Depends(last_event_id)]
