"""The library internals api/private_apis.py relies on: these fail when an upgrade changes them."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import MutableMapping
from typing import Any

from sse_starlette.sse import AppStatus
from starlette.websockets import WebSocket
from uvicorn.server import Server

from api.private_apis import raw_websocket_send, wait_for_exit_signal


async def test_raw_websocket_send_is_the_asgi_send_itself():
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    ws = WebSocket({"type": "websocket", "path": "/", "headers": []}, receive, send)
    raw = raw_websocket_send(ws)
    assert raw is send  # not a wrapper: no per-frame state check, steppable by _drive
    await raw({"type": "websocket.send", "text": "x"})
    assert sent == [{"type": "websocket.send", "text": "x"}]


async def test_the_exit_signal_wait_returns_when_uvicorn_is_told_to_exit():
    # sse-starlette hooks uvicorn's exit handler; the wait ends when it fires.
    assert Server.handle_exit is AppStatus.handle_exit
    waiter = asyncio.ensure_future(wait_for_exit_signal())
    try:
        await asyncio.sleep(0.2)
        assert not waiter.done()
        AppStatus.should_exit = True
        await asyncio.wait_for(waiter, 10)
    finally:
        AppStatus.should_exit = False
        waiter.cancel()


class _Transport:
    """Just what uvicorn's protocol asks of a transport, recording what is written."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name)

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_protocol(self, protocol: Any) -> None: ...


async def test_the_guarded_protocol_lightens_uvicorns_containers_and_still_serves():
    """uvicorn makes its flow control's and each request's asyncio.Event and its pipelining
    deque where api/private_apis.py expects; swapped, a request is served and a paused writer
    waits for the socket and is woken, as with uvicorn's own."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from api.http_guard import GuardedHttpToolsProtocol
    from api.private_apis import LightEvent

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await send({"type": "http.response.body", "body": b"two"})

    config = Config(app=app, lifespan="off", log_level="warning")
    protocol = GuardedHttpToolsProtocol(config, ServerState(), {})
    assert not isinstance(protocol.pipeline, collections.deque)
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    assert isinstance(protocol.flow._is_writable_event, LightEvent)
    assert protocol.flow._is_writable_event.is_set()
    protocol.flow.pause_writing()  # the socket's buffer is full: a send waits
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert protocol.cycle is not None and isinstance(protocol.cycle.message_event, LightEvent)
    await asyncio.sleep(0.05)
    assert transport.written == b""  # held back by flow control
    protocol.flow.resume_writing()
    for _ in range(50):
        await asyncio.sleep(0.01)
        if transport.written.endswith(b"0\r\n\r\n"):
            break
    assert transport.written.startswith(b"HTTP/1.1 200 OK")
    assert b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n" in transport.written
    protocol.connection_lost(None)


def test_the_jwt_decoder_prepares_its_hmac_secret_once_and_still_verifies_every_token():
    import time

    import jwt
    import pytest
    from jwt.algorithms import HMACAlgorithm

    from api.private_apis import jwt_decoder

    secret = "s" * 64  # HS512's key size
    claims = {"sub": "alice", "exp": int(time.time()) + 60}
    decoder = jwt_decoder()
    prepared = []
    original = HMACAlgorithm.prepare_key

    def counting(self: HMACAlgorithm, key: str | bytes) -> bytes:
        prepared.append(key)
        return original(self, key)

    tokens = {alg: jwt.encode(claims, secret, algorithm=alg) for alg in ("HS256", "HS384", "HS512")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HMACAlgorithm, "prepare_key", counting)
        for alg, token in tokens.items():
            for _ in range(3):
                assert decoder.decode(token, secret, algorithms=[alg])["sub"] == "alice"
    # One preparation per algorithm (the decoder's), not one per token.
    assert len(prepared) == 3
    token = jwt.encode(claims, secret, algorithm="HS256")
    with pytest.raises(jwt.InvalidSignatureError):
        decoder.decode(token, "t" * 64, algorithms=["HS256"])  # another secret: prepared anew
    with pytest.raises(jwt.InvalidSignatureError):
        decoder.decode(token[:-2] + "AA", secret, algorithms=["HS256"])
    with pytest.raises(jwt.InvalidAlgorithmError):
        decoder.decode(token, secret, algorithms=["HS512"])
    with pytest.raises(jwt.InvalidKeyError):  # PyJWT's own refusal of a PEM key as a secret
        decoder.decode(
            token,
            "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----",
            algorithms=["HS256"],
        )
