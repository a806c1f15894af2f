"""The WebSocket route: ping, subscribe and unsubscribe only (RFC 6455 text frames, JSON).

In: ``{"type":"ping"}``, ``{"type":"subscribe","channel":C}``, ``{"type":"unsubscribe",
"channel":C}``. Out: ``pong``, ``subscribed``, ``unsubscribed``, ``error`` and event envelopes.
A bad token closes with 4001; a bad frame gets an error and the socket stays open.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, HTTPException
from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.deps import authenticate_stream
from api.private_apis import raw_websocket_send
from api.routes.streams import authorize
from api.state import AppState
from api.stream_request import read_credentials
from streams.channels import check_channel
from streams.envelope import InvalidEvent
from streams.hub import HubUnavailable, TooManyStreams
from streams.presence import carries_presence
from streams.presence_live import frames as presence_frames
from streams.subscriber import Subscriber
from streams.transports import WEBSOCKET

router = APIRouter()
MAX_FRAME = 4096


class WebSocketSession:
    def __init__(self, state: AppState, ws: WebSocket, sub: Subscriber) -> None:
        self.state, self.ws, self.sub = state, ws, sub

    def reply(self, message: dict[str, Any], *then: bytes) -> None:
        """Queue the reply and the frames ``then`` after it, and wake the sender once.
        Bounded by FINRT_CLIENT_BUFFER: a client that reads none of the replies is closed as
        slow (Subscriber.queue_raw)."""
        self.sub.queue_raw(orjson.dumps(message))
        for frame in then:
            self.sub.queue_raw(frame)
        self.state.hub.mark(self.sub)

    def error(self, text: str) -> None:
        self.reply({"type": "error", "error": text})

    async def handle(self, raw: str | bytes | None) -> None:
        if raw is None or isinstance(raw, bytes):
            return self.error("frames must be JSON text")
        # ``finrt api`` sets the protocol's limit to MAX_FRAME (uvicorn's ws_max_size), so this
        # only answers under a server that does not (a frame over it there is an error reply).
        if len(raw.encode("utf-8", "surrogatepass")) > MAX_FRAME:
            return self.error(f"frame larger than {MAX_FRAME} bytes")
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self.error("invalid JSON")
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return self.error('expected an object with a "type"')
        kind = message["type"]
        if kind == "ping":
            return self.reply({"type": "pong"})
        if kind not in ("subscribe", "unsubscribe"):
            return self.error(f"unknown type {kind[:40]!r}")
        channel = message.get("channel")
        try:
            if not isinstance(channel, str):
                raise InvalidEvent('"channel" must be a string')
            check_channel(channel)
        except InvalidEvent as exc:
            return self.error(str(exc))
        hub, sub = self.state.hub, self.sub
        if kind == "unsubscribe":
            hub.leave(sub, [channel])
            return self.reply({"type": "unsubscribed", "channel": channel})
        if channel in sub.positions:
            return self.reply({"type": "subscribed", "channel": channel})
        if len(sub.positions) >= self.state.settings.max_channels_per_stream:
            return self.error("too many channels on this socket")
        try:
            await authorize(self.state, sub.user_id, [channel])
            await hub.join(sub, [channel])
        except HTTPException as exc:
            return self.error(f"{channel}: {exc.detail}")
        except (HubUnavailable, RedisError):
            return self.error("event service unavailable, try again")
        reply: dict[str, Any] = {"type": "subscribed", "channel": channel}
        snapshot: dict[str, Any] | None = None
        if hub.presence is not None and carries_presence(channel):
            try:  # who is on the file, as of this subscription
                snapshot = await hub.presence.snapshot(channel)
            except (RedisError, OSError, TimeoutError):
                snapshot = None
            reply["presence"] = snapshot
        if snapshot is None:
            return self.reply(reply)
        # And as the file's first presence event, as on every stream that carries it.
        self.reply(
            reply, sub.transport.control(*presence_frames(channel, "presence", snapshot), None)
        )


def close_reason(text: str) -> str:
    """``text`` cut to what a close frame carries: 123 bytes of UTF-8 (RFC 6455 5.5)."""
    return text.encode()[:123].decode(errors="ignore")


@router.websocket("/api/v1/ws")
async def websocket_route(ws: WebSocket) -> None:
    """Subscribe to channels and ping over one socket."""
    state: AppState = ws.app.state.finrt
    await ws.accept()
    try:
        credentials, _, _ = read_credentials(ws.scope)
        principal = await authenticate_stream(state, credentials)
    except HTTPException as exc:
        # 1013 "try again later" only when the service is unavailable (the identity provider's
        # keys could not be fetched: 503); a bad credential of any kind is 4001.
        code = 1013 if exc.status_code == 503 else 4001
        await ws.close(code=code, reason=close_reason(str(exc.detail)))
        return
    except RedisError:
        # A ?ticket= cannot be redeemed while Redis is down: "try again later", not an error.
        await ws.close(code=1013, reason="event service unavailable, try again")
        return
    hub = state.hub
    try:
        sub = hub.new_subscriber(principal.user_id, [], WEBSOCKET)
    except TooManyStreams as exc:
        await ws.close(code=4029, reason=close_reason(str(exc)))
        return
    try:
        await hub.admit(sub)
    except (TooManyStreams, RedisError) as exc:
        hub.release(sub)
        await ws.close(
            code=4029 if isinstance(exc, TooManyStreams) else 1013, reason=close_reason(str(exc))
        )
        return
    # The hub writes every frame (events and our replies) through the raw ASGI send, in one
    # order; Starlette's wrapper is used for accept and receive only.
    sub.send = raw_websocket_send(ws)
    sub.live = True
    session = WebSocketSession(state, ws, sub)

    hub.expiries.add(sub, principal.expires_at)
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            await session.handle(text if text is not None else message.get("bytes"))
            if sub.closing == "slow":  # it reads none of our replies: read no more of it
                break
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        hub.release(sub)
