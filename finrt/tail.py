"""``finrt tail``: a channel's events on standard output. By default it reads Redis directly (no
API, no token); with ``--api`` it reads the API's stream like any client does (finrt.client), so
it resumes across API restarts by itself."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx

from api.auth import issue_token
from core.settings import Settings
from finrt.client import Presence, astream
from streams.channels import check_channel
from streams.connect import async_client
from streams.envelope import InvalidEvent, parse_id
from streams.hub import Hub
from streams.transports import WEBSOCKET

# A minted token lasts this long; the stream's auth_expired brings a fresh one.
TOKEN_TTL_SECONDS = 3600


class ApiUnreachable(ConnectionError):
    """No API answers at the URL (once streaming, a lost API is waited for instead)."""


def reader_of(settings: Settings, channel: str) -> str:
    """Who may read ``channel``: the user of a user channel, the owner of a file channel."""
    kind, _, ident = channel.partition(":")
    if kind == "user":
        return ident
    from models import File, session_scope

    with session_scope(settings.database_url) as session:
        file = session.get(File, int(ident)) if ident.isdigit() else None
        if file is None:
            raise ValueError(f"no file {ident}")
        return file.owner_id


async def run_tail(
    settings: Settings,
    channel: str,
    from_id: str | None,
    *,
    api_url: str,
    token: str | None = None,
) -> None:
    try:
        check_channel(channel)
        if from_id:
            parse_id(from_id)
    except InvalidEvent as exc:
        raise ValueError(str(exc)) from exc
    if token is None:
        if not settings.jwt_secret or settings.jwt_asymmetric:
            raise ValueError("pass --token (tokens come from the identity provider here)")
        user = reader_of(settings, channel)

        def fresh() -> str:
            return issue_token(
                user, settings.jwt_secret, settings.jwt_algorithm, ttl_seconds=TOKEN_TTL_SECONDS
            )

    try:
        async with httpx.AsyncClient(timeout=5) as probe:
            await probe.get(api_url.rstrip("/") + "/healthz")
    except httpx.HTTPError as exc:
        raise ApiUnreachable(f"the API is not reachable at {api_url}: {exc}") from None
    out = sys.stdout
    async for event in astream(api_url, [channel], token or fresh, last_event_id=from_id or None):
        if isinstance(event, Presence):
            continue  # who is watching (this tail included), not the channel's events
        envelope = {
            "id": event.id,
            "channel": event.channel,
            "type": event.type,
            "data": event.data,
            "created_at": event.created_at,
        }
        if event.key is not None:
            envelope["key"] = event.key
        out.write(json.dumps(envelope, separators=(",", ":"), ensure_ascii=False) + "\n")
        out.flush()


async def run_tail_redis(settings: Settings, channel: str, from_id: str | None) -> None:
    """Follow ``channel`` on Redis directly, as a hub subscriber whose "socket" is stdout: what
    ``finrt tail`` does without ``--api`` (no API and no token needed)."""
    try:
        check_channel(channel)
        last = parse_id(from_id) if from_id else None
    except InvalidEvent as exc:
        raise ValueError(str(exc)) from exc
    client = async_client(settings.redis_url, socket_connect_timeout=3)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        raise ConnectionError(str(exc)) from exc
    hub = Hub.from_settings(client, settings, client_buffer=10**9, max_streams_per_user=1)
    done = asyncio.get_running_loop().create_future()
    out = sys.stdout

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            out.write(message["text"] + "\n")
            out.flush()
        elif message["type"] == "websocket.close" and not done.done():
            done.set_result(None)

    await hub.start()
    try:
        sub = hub.new_subscriber("tail", [channel], WEBSOCKET)
        sub.send = send
        await hub.join(sub, [channel])
        await hub.catch_up(sub, await hub.prepare(sub, {channel: last}))
        await done
    finally:
        await hub.stop()
        await client.aclose()
