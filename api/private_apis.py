"""Every use of a library's private API, in one place.

Each is here because the public API costs what the hot path cannot pay or does not exist; each
has a test (tests/fast/test_private_apis.py) that fails when the library changes it, so an
upgrade breaks a test here rather than streams in production.
"""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.api_jws import PyJWS
from sse_starlette.sse import EventSourceResponse
from starlette.types import Send
from starlette.websockets import WebSocket
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


def raw_websocket_send(ws: WebSocket) -> Send:
    """The socket's ASGI ``send`` itself. The hub writes every frame of a WebSocket (events
    and replies) through it, in one order, stepping it without a task (streams/_drive.py);
    Starlette's public ``WebSocket.send`` adds a state check per frame and is only used for
    accept and close. Starlette keeps the send as ``WebSocket._send``."""
    send: Send = ws._send
    return send


async def wait_for_exit_signal() -> None:
    """Return once uvicorn is told to exit (SIGTERM, SIGINT), as sse-starlette observes it:
    one process-wide watcher shared with sse-starlette's own streams (no public API waits for
    it; ``AppStatus.should_exit`` alone is a flag to poll, and misses the fallback path that
    reads uvicorn's own flag)."""
    await EventSourceResponse._listen_for_exit_signal()


class _PreparedHMAC(HMACAlgorithm):
    """HMAC whose secret is checked and converted once per key, not once per token: PyJWT
    re-checks on every decode that the secret is no PEM, SSH or DER key (about 13 µs of the
    60 µs a token costs), and every stream's open decodes a token."""

    def __init__(self, hash_alg: Any) -> None:
        super().__init__(hash_alg)
        self._prepared: tuple[Any, bytes] | None = None

    def prepare_key(self, key: str | bytes) -> bytes:
        prepared = self._prepared
        if prepared is not None and prepared[0] is key:
            return prepared[1]
        value = super().prepare_key(key)
        self._prepared = (key, value)
        return value


def jwt_decoder() -> jwt.PyJWT:
    """A PyJWT of its own whose HS256/384/512 prepare their secret once (the asymmetric
    algorithms take ready key objects already). PyJWT builds its signature layer in the
    constructor and keeps it as ``PyJWT._jws``; registering algorithms on it is public API
    (``PyJWS.register_algorithm``)."""
    decoder = jwt.PyJWT()
    jws: PyJWS = decoder._jws
    for name, hash_alg in (
        ("HS256", HMACAlgorithm.SHA256),
        ("HS384", HMACAlgorithm.SHA384),
        ("HS512", HMACAlgorithm.SHA512),
    ):
        jws.unregister_algorithm(name)
        jws.register_algorithm(name, _PreparedHMAC(hash_alg))
    return decoder


__all__ = ["jwt_decoder", "raw_websocket_send", "wait_for_exit_signal"]


# uvicorn's httptools protocol keeps three containers per connection for as long as it lives
# (hours, for a stream): two asyncio events (its flow control's, and the request's) and a deque
# of pipelined requests. An empty deque takes about 600 bytes; each of these holds at most one
# or two items. api/http_guard.py swaps them for lists when they are made (about 1.8 KB of the
# 11.6 KB an idle stream costs; tests/ops/test_connection_memory.py).


class LightEvent(asyncio.Event):
    """``asyncio.Event`` with its waiters in a list instead of a deque: the same behaviour
    (``wait`` appends and removes its future, ``set`` wakes them in order)."""

    def __init__(self) -> None:  # asyncio.Event's, with a list (it takes no arguments in 3.11+)
        self._waiters = []  # type: ignore[assignment]
        self._value = False


class _Pipeline(list[Any]):
    """uvicorn's queue of pipelined requests, which it uses with ``appendleft`` and ``pop``."""

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


def light_pipeline(protocol: HttpToolsProtocol) -> None:
    """Right after ``HttpToolsProtocol.__init__``, which makes ``pipeline`` an empty deque."""
    protocol.pipeline = _Pipeline()  # type: ignore[assignment]


def light_flow_control(protocol: HttpToolsProtocol) -> None:
    """Right after ``connection_made``, which makes ``flow`` with its event set (writable)."""
    event = LightEvent()
    if protocol.flow._is_writable_event.is_set():
        event.set()
    protocol.flow._is_writable_event = event


def light_request(cycle: RequestResponseCycle) -> None:
    """Right after ``on_headers_complete`` made ``cycle``, before its task first runs."""
    cycle.message_event = LightEvent()
