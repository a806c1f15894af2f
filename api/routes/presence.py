"""Who has a file open right now (presence; docs/presence.md)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from api.deps import CurrentUser, StateDep
from api.routes.files import FileIdPath, reader_file
from core.settings import Settings
from models import session_scope
from streams.channels import file_channel

router = APIRouter(prefix="/api/v1", tags=["files"])


class PresenceUser(BaseModel):
    user_id: str
    connections: int = Field(description="open streams of this user on the file, all servers")
    since: str = Field(description="when the user arrived (ISO 8601, UTC)")


class PresencePublic(BaseModel):
    file_id: int
    count: int = Field(description="users on the file now")
    users: list[PresenceUser] = Field(
        description="earliest arrivals first; at most FINRT_PRESENCE_ROOM_LIMIT of them"
    )


def _file_id(s: Settings, user_id: str, raw: str) -> int:
    with session_scope(s.database_url) as session:
        return reader_file(session, user_id, raw).id


@router.get(
    "/files/{file_id}/presence",
    responses={403: {}, 404: {}, 503: {"description": "Redis is unreachable"}},
)
async def get_presence(
    file_id: FileIdPath, state: StateDep, principal: CurrentUser
) -> PresencePublic:
    """Who has the file open (owner and members only): a stream, a tab or a device each."""
    ident = await run_in_threadpool(_file_id, state.settings, principal.user_id, file_id)
    presence = state.hub.presence
    if presence is None:
        raise HTTPException(503, "presence is not running")
    try:
        snapshot = await presence.snapshot(file_channel(ident))
    except (RedisError, OSError, TimeoutError) as exc:
        raise HTTPException(503, "Redis is unreachable; try again shortly") from exc
    return PresencePublic(**snapshot)
