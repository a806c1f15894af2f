"""``finrt tail``: a hub subscriber whose "socket" is standard output."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import redis.asyncio as aioredis

from core.settings import Settings
from streams.channels import check_channel
from streams.envelope import InvalidEvent, parse_id
from streams.hub import Hub
from streams.transports import WEBSOCKET


async def run_tail(settings: Settings, channel: str, from_id: str | None) -> None:
    try:
        check_channel(channel)
        last = parse_id(from_id) if from_id else None
    except InvalidEvent as exc:
        raise ValueError(str(exc)) from exc
    client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
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
