"""Dependencies, as ``Annotated`` aliases so that route signatures read like prose."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.auth import AuthError, KeyUnavailable, Principal
from api.errors import unauthorized
from api.state import AppState
from api.stream_request import Credentials
from api.tickets import redeem_ticket
from core.settings import Settings
from models import session_scope
from services.access import ensure_users
from streams.batching import TurnBatcher

_bearer = HTTPBearer(
    auto_error=False,
    description="A JWT from the identity provider (or signed with FINRT_JWT_SECRET)",
)


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
    """Create the user on first sight (cached per process: no database trip afterwards).

    First sightings made together (a storm of streams opening after a restart) share one
    transaction: one SELECT and at most one multi-row INSERT per batch (streams/batching.py).
    """
    if not state.access.user_known(principal.user_id):
        batch = state.user_batch
        if batch is None:
            batch = state.user_batch = TurnBatcher(partial(_ensure_users, state))
        await batch.call(principal.user_id)
    return principal


async def _ensure_users(state: AppState, user_ids: list[str]) -> list[None]:
    def _ensure() -> None:
        with session_scope(state.settings.database_url) as session:
            ensure_users(session, user_ids)

    await run_in_threadpool(_ensure)
    for user_id in user_ids:
        state.access.remember_user(user_id)
    return [None] * len(user_ids)


async def principal_from_token(state: AppState, token: str) -> Principal:
    """The token's principal. Verified tokens are remembered until they expire, so a client
    that reconnects (or a page with several tabs) is not verified again each time."""
    cached = state.tokens.get(token)
    if cached is not None:
        if cached.expires_at > time.time():
            return cached
        del state.tokens[token]
    try:
        principal = await state.verifier.verify(token)
    except KeyUnavailable as exc:
        raise HTTPException(
            503,
            # Short enough for a WebSocket's close reason (123 bytes, api/ws.py).
            "the identity provider's keys cannot be fetched: the token cannot be checked now; "
            f"try again in {exc.retry_after} s",
            headers={"Retry-After": str(exc.retry_after)},
        ) from exc
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
    return await known_user(state, await principal_from_token(state, credentials.credentials))


CurrentUser = Annotated[Principal, Depends(current_user)]


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The bearer token as sent, for the per-token rate limits (api/limits.py)."""
    if credentials is None:
        raise unauthorized("missing bearer token")
    return credentials.credentials


BearerToken = Annotated[str, Depends(bearer_token)]


async def authenticate_stream(state: AppState, credentials: Credentials) -> Principal:
    """The principal of a stream client (SSE or WebSocket): 401 without a valid credential."""
    picked = credentials.pick()
    if picked is None:
        raise unauthorized("missing token: send a bearer header, access_token or ticket")
    kind, value = picked
    if kind == "token":
        principal = await principal_from_token(state, value)
    else:
        try:
            principal = await redeem_ticket(state.redis, state.settings.redis_prefix, value)
        except AuthError as exc:
            raise unauthorized(str(exc)) from exc
    return await known_user(state, principal)
