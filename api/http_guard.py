"""uvicorn's httptools protocol with bounds on what a client may cost before its headers are in.

httptools buffers a request's headers without limit and uvicorn sets no time limit on sending
them, so one client could make the process hold a 300 MB header, or hundreds of half-sent
requests (and their file descriptors) for ever. Here, per connection:

- headers (request line included) still incomplete after ``FINRT_MAX_HEADER_BYTES`` get ``431``
  and the connection is closed; checked after each socket read, so at most one read (256 KiB)
  is buffered beyond the limit;
- headers not complete ``FINRT_HEADER_TIMEOUT_SECONDS`` after the connection opened (or after
  their first byte, on a kept-alive connection) get ``408`` and the connection is closed;
- at most a quarter of the process's file-descriptor limit may be waiting for headers at once:
  beyond that, the connection that has waited longest is closed. A real client sends its
  headers in milliseconds, so under a slowloris flood it is the attacker who is shed;
- a connection whose peer vanished without a word (a laptop shut, a mobile network gone, a NAT
  that forgot the flow: no FIN, no RST) is dropped once what was sent to it (a stream's pings,
  at least) has stayed unacknowledged ``FINRT_CLIENT_GONE_SECONDS``: the kernel's
  ``TCP_USER_TIMEOUT``. Without it the kernel retransmits for about 15 minutes, the stream
  holding its slot of the user's ``FINRT_MAX_STREAMS_PER_USER`` and the person showing as
  present on the file all that time.

``finrt api`` serves with this protocol (``http="api.http_guard:GuardedHttpToolsProtocol"``).
uvicorn itself (0.55) offers neither bound for httptools: ``h11_max_incomplete_event_size``
applies to its pure-Python h11 protocol only (slower on every stream write), and it has no
timeout for receiving headers (``timeout_keep_alive`` runs between requests only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.private_apis import light_flow_control, light_pipeline, light_request
from core.settings import get_settings

log = logging.getLogger("finrt.api.http")

# Linux's option number (socket has it on Linux only); None where the kernel has none.
_TCP_USER_TIMEOUT: int | None = getattr(socket, "TCP_USER_TIMEOUT", None)

# Connections of this process still sending headers, oldest first (dicts keep insertion order).
_waiting: dict[GuardedHttpToolsProtocol, None] = {}
_shed = {"count": 0}


def waiting_cap() -> int:
    """How many connections may wait for their headers at once: a quarter of the fd limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 16_384
    return max(16, soft // 4)


def drop_when_gone(transport: asyncio.BaseTransport, seconds: float) -> None:
    """Have the kernel drop the connection when what was sent stays unacknowledged for
    ``seconds`` (TCP_USER_TIMEOUT; Linux only, TCP only, 0 leaves the kernel's default)."""
    if _TCP_USER_TIMEOUT is None or seconds <= 0:
        return
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):  # not TCP (a Unix socket)
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, int(seconds * 1000))


def _response(status: bytes, detail: bytes) -> bytes:
    body = b'{"detail":"' + detail + b'"}'
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    # In slots, not in the instance dict: four more keys there would take uvicorn's dict past
    # what instances can share, and every connection would carry a dict of its own (~1.5 KB).
    __slots__ = (
        "_header_bytes",
        "_header_timer",
        "client_gone",
        "header_timeout",
        "max_header_bytes",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        light_pipeline(self)
        s = get_settings()
        self.max_header_bytes = s.max_header_bytes
        self.header_timeout = s.header_timeout_seconds
        self.client_gone = s.client_gone_seconds
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None

    # -- the header phase -------------------------------------------------------------------

    def _await_headers(self) -> None:
        self._stop_waiting()
        self._header_bytes = 0
        self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)
        _waiting[self] = None
        if len(_waiting) > waiting_cap():
            oldest = next(iter(_waiting))
            _shed["count"] += 1
            if _shed["count"] % 100 == 1:
                log.warning(
                    "too many connections waiting for their headers (%d): closing the oldest "
                    "(%d shed so far)",
                    len(_waiting),
                    _shed["count"],
                )
            oldest._refuse(b"503 Service Unavailable", b"too many connections; retry")

    def _stop_waiting(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        _waiting.pop(self, None)

    def _waiting_for_headers(self) -> bool:
        return self._header_timer is not None

    def _too_slow(self) -> None:
        self._header_timer = None
        self._refuse(b"408 Request Timeout", b"request headers not received in time")

    def _refuse(self, status: bytes, detail: bytes) -> None:
        self._stop_waiting()
        if not self.transport.is_closing():
            self.transport.write(_response(status, detail))
            self.transport.close()

    # -- uvicorn's protocol, extended -------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        drop_when_gone(transport, self.client_gone)
        light_flow_control(self)
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._waiting_for_headers():
            self._header_bytes += len(data)
        super().data_received(data)
        # Still no end of headers after more than the limit: refuse before buffering more.
        if self._waiting_for_headers() and self._header_bytes > self.max_header_bytes:
            self._refuse(b"431 Request Header Fields Too Large", b"request headers too large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._waiting_for_headers():
            # The next request on a kept-alive connection: its headers are timed from their
            # first byte (a silent kept-alive connection is closed by uvicorn's keep-alive
            # timeout). The first request's clock started with the connection.
            self._await_headers()

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not before:  # just made: nobody waits yet
            light_request(self.cycle)
