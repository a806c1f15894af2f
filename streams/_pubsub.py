"""One raw RESP connection that only subscribes: the hub's single link to Redis pub/sub.

Written on a bare asyncio Protocol with hiredis' parser rather than redis-py's PubSub because
the hub needs three things that object hides: every message that arrived in one socket read,
handed over as one batch (so one flush serves them all); the subscribe confirmations, in order
(a channel's history may only be read once its subscription is live); and a clear "connection
lost" signal to drive its own reconnect and gap filling.

A link that is silently dead (a NAT or a cloud load balancer dropped the idle connection, a
network partition) looks "connected" for ever: nothing arrives, but then nothing would arrive on
a quiet link either. So the link is watched: whenever nothing has come in for half of
``health_seconds`` it sends a PING (allowed on a subscribed connection); when nothing at all has
come in for ``health_seconds`` it counts as unresponsive and is aborted, which ends ``lost`` and
lets the hub reconnect and fill the gap from history. TCP keepalive is set as well, so the
kernel also notices a peer that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from urllib.parse import unquote, urlparse

import hiredis

from core.aio import timed

log = logging.getLogger("finrt.hub")


class Backoff:
    """The pause before trying again: ``first`` seconds, doubling after each failure up to
    ``most``, back to ``first`` after :meth:`reset` (a success)."""

    def __init__(self, first: float = 0.05, most: float = 2.0) -> None:
        self.first, self.most = first, most
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(delay * 2, self.most)
        return delay

    def reset(self) -> None:
        self._next = self.first


OnMessage = Callable[[bytes, bytes], None]
OnConfirm = Callable[[bytes, bytes], None]
OnBatchEnd = Callable[[], None]
# A cluster link's handler of error replies (MOVED, TRYAGAIN...): True when it dealt with it.
OnError = Callable[[str], bool]
# Sharded pub/sub (Redis Cluster) speaks of the same things under other names.
_KINDS = {
    b"message": b"message",
    b"smessage": b"message",
    b"subscribe": b"subscribe",
    b"ssubscribe": b"subscribe",
    b"unsubscribe": b"unsubscribe",
    b"sunsubscribe": b"sunsubscribe",
}


def encode_command(*parts: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class SubscriberProtocol(asyncio.Protocol):
    def __init__(self, on_message: OnMessage, on_confirm: OnConfirm, on_batch_end: OnBatchEnd):
        self._reader = hiredis.Reader()
        self._on_message, self._on_confirm, self._on_batch_end = (
            on_message,
            on_confirm,
            on_batch_end,
        )
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._replies: asyncio.Queue[object] = asyncio.Queue()
        self.handshaking = True
        self.last_received = time.monotonic()
        # Set when the health watch aborted the link for not answering (a silent drop).
        self.unresponsive = False
        self._watch: asyncio.Task[None] | None = None
        self.on_error: OnError | None = None
        # The error reply (a command Redis refused, e.g. NOPERM) that ended the link, if one did.
        self.refused: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        reader = self._reader
        reader.feed(data)
        got_message = False
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(exc)
                return
            if reply is False:
                break
            if self.handshaking:
                self._replies.put_nowait(reply)
                continue
            if isinstance(reply, list) and len(reply) == 3:
                kind = _KINDS.get(reply[0], reply[0])
                if kind == b"message":
                    try:
                        self._on_message(reply[1], reply[2])
                    except Exception:  # one bad delivery must not take the link down
                        log.exception("delivering a message failed")
                    got_message = True
                elif kind in (b"subscribe", b"unsubscribe", b"sunsubscribe"):
                    self._on_confirm(kind, reply[1])
            elif isinstance(reply, list) and reply and reply[0] == b"pong":
                pass  # the health watch's PING answered: last_received already moved
            elif isinstance(reply, hiredis.ReplyError):
                if self.on_error is not None and self.on_error(str(reply)):
                    continue
                self.refused = str(reply)
                self._fail(reply)
                return
        if got_message:
            self._on_batch_end()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if not self.lost.done():
            self.lost.set_result(None)

    def watch_health(self, health_seconds: float) -> None:
        """Start the PING-when-idle watch (after the handshake)."""
        if self._watch is None and health_seconds > 0:
            self._watch = asyncio.get_running_loop().create_task(
                self._health(health_seconds), name="hub-redis-health"
            )

    async def _health(self, limit: float) -> None:
        step = max(limit / 4, 0.05)
        while not self.lost.done():
            await asyncio.sleep(step)
            quiet = time.monotonic() - self.last_received
            if quiet >= limit:
                self.unresponsive = True
                log.warning(
                    "Redis pub/sub link unresponsive for %.1fs (no answer to PING); "
                    "dropping it to reconnect",
                    quiet,
                )
                self._fail(TimeoutError("no answer to PING"))
                return
            if quiet >= limit / 2:
                self.write(encode_command("PING"))

    def _fail(self, exc: BaseException) -> None:
        if self.transport is not None:
            self.transport.abort()
        if not self.lost.done():
            self.lost.set_result(None)

    async def call(self, *parts: str | bytes) -> object:
        """A command during the handshake (AUTH, CLIENT SETNAME), before any SUBSCRIBE."""
        assert self.transport is not None
        self.transport.write(encode_command(*parts))
        reply = await self._replies.get()
        if isinstance(reply, hiredis.ReplyError):
            raise ConnectionError(f"Redis refused {parts[0]!r}: {reply}")
        return reply

    def write(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(payload)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self.transport is not None:
            self.transport.close()


def _keepalive(transport: asyncio.BaseTransport, idle: float) -> None:
    """TCP keepalive on the link: probes after ``idle`` seconds of silence, so the kernel, too,
    ends a connection whose peer is gone (where the platform offers the knobs)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        seconds = max(int(idle), 1)
        for name, value in (
            ("TCP_KEEPIDLE", seconds),
            ("TCP_KEEPINTVL", seconds),
            ("TCP_KEEPCNT", 3),
        ):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


async def open_subscriber(
    url: str,
    on_message: OnMessage,
    on_confirm: OnConfirm,
    on_batch_end: OnBatchEnd,
    *,
    client_name: str = "finrt-hub",
    timeout: float = 5.0,
    health_seconds: float = 0.0,
) -> SubscriberProtocol:
    """Connect to the Redis at ``url`` (redis:// or rediss://), authenticate, name the client;
    with ``health_seconds``, keep checking that it answers (see the module's docstring)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise ValueError(f"unsupported Redis URL scheme: {parsed.scheme!r}")
    loop = asyncio.get_running_loop()
    ctx = ssl.create_default_context() if parsed.scheme == "rediss" else None
    transport, protocol = await timed(
        loop.create_connection(
            lambda: SubscriberProtocol(on_message, on_confirm, on_batch_end),
            parsed.hostname or "127.0.0.1",
            parsed.port or 6379,
            ssl=ctx,
        ),
        timeout,
    )
    try:
        if parsed.password:
            user = unquote(parsed.username) if parsed.username else None
            password = unquote(parsed.password)
            args = ("AUTH", user, password) if user else ("AUTH", password)
            await timed(protocol.call(*args), timeout)
        await timed(protocol.call("CLIENT", "SETNAME", client_name), timeout)
    except BaseException:
        protocol.close()
        raise
    protocol.handshaking = False
    if health_seconds > 0:
        _keepalive(transport, health_seconds)
        protocol.last_received = time.monotonic()
        protocol.watch_health(health_seconds)
    return protocol
