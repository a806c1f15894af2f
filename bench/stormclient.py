"""Reconnecting SSE clients, one per user: ``python -m bench.stormclient '<json spec>'``.

The client of the distinct-user scenarios (bench/storm.py). Each connection is one user's own
stream, with its own token; like a browser's EventSource it remembers the last ``id:`` it saw
and, when the stream ends or the server is away, connects again after the server's ``retry:``
hint (250 ms when the server says nothing) with ``Last-Event-ID``. It records, per connection,
which ``seq`` numbers of the measured events arrived, so lost and duplicated events are counted
across the reconnect.

Protocol (JSON lines, like bench.loadclient): ``open`` (users, concurrency, timeout) opens one
stream per user and answers when each has its response head (or failed); ``stats`` (``since_ns``:
count reconnections after that time) reports the counters; ``expect`` (users, count) tells which
connections should have seq 0..count-1; ``exit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import struct
import sys
import time
from typing import Any, cast

import orjson

from bench.common import emit, log, make_token, read_command, set_loop_policy, stdin_reader

_SEQ = re.compile(rb'"seq":\s*(-?\d+)')
_ID = re.compile(rb"(?m)^id: ?([^\r\n]*)$")
_RETRY = re.compile(rb"(?m)^retry: ?(\d+)$")
_LINGER_RST = struct.pack("ii", 1, 0)
_now = time.time_ns


class Stream(asyncio.Protocol):
    """One user's stream, reconnecting for ever (until the client exits)."""

    def __init__(self, client: Client, user: str, path: str) -> None:
        self.client, self.user, self.path = client, user, path
        self.token = make_token(client.secret, user) if client.secret else ""
        self.last_id = b""
        self.retry_ms = 250
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.in_body = False
        self.chunked = False
        self.chunk_left = 0
        self.skip = 0
        self.size_buf = b""
        self.buf = b""
        self.live = False
        self.error = ""
        self.ready_ns = 0  # the last time a response head (200) arrived
        self.opens = 0
        self.seqs: dict[int, int] = {}
        self.first_ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def request(self) -> bytes:
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.client.host}",
            "Accept: text/event-stream",
            "Cache-Control: no-cache",
        ]
        if self.token:
            lines.append(f"Authorization: Bearer {self.token}")
        if self.last_id:
            lines.append(f"Last-Event-ID: {self.last_id.decode()}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.head, self.in_body, self.buf = b"", False, b""
        self.chunk_left = self.skip = 0
        self.size_buf = b""
        try:
            await loop.create_connection(lambda: self, self.client.host, self.client.port)
        except OSError as exc:
            self.error = f"{type(exc).__name__}"
            self._again()

    def _again(self) -> None:
        if self.client.closing:
            return
        delay = (self.retry_ms + random.uniform(0, 100)) / 1000
        asyncio.get_running_loop().call_later(delay, lambda: asyncio.ensure_future(self.connect()))

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        self.transport.write(self.request())

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.live:
            self.live = False
            self.client.drops += 1
        self._again()

    def data_received(self, data: bytes) -> None:
        if not self.in_body:
            head = self.head + data
            i = head.find(b"\r\n\r\n")
            if i < 0:
                self.head = head
                return
            first = head[: head.find(b"\r\n")]
            status = int(first.split(b" ", 2)[1]) if first.count(b" ") >= 1 else -1
            if status != 200:
                self.error = f"HTTP {status}"
                if self.transport is not None:
                    self.transport.abort()
                if not self.first_ready.done():
                    self.first_ready.set_result(None)
                return
            self.chunked = b"transfer-encoding: chunked" in head[:i].lower()
            self.in_body = self.live = True
            self.error = ""
            self.ready_ns = _now()
            self.opens += 1
            if not self.first_ready.done():
                self.first_ready.set_result(None)
            data = head[i + 4 :]
        self._feed(self._dechunk(data) if self.chunked else data)

    def _dechunk(self, data: bytes) -> bytes:
        data = self.size_buf + data
        self.size_buf = b""
        out: list[bytes] = []
        pos, n = 0, len(data)
        while pos < n:
            if self.skip:
                take = min(self.skip, n - pos)
                pos += take
                self.skip -= take
                continue
            if self.chunk_left:
                end = min(n, pos + self.chunk_left)
                out.append(data[pos:end])
                self.chunk_left -= end - pos
                pos = end
                if not self.chunk_left:
                    self.skip = 2
                continue
            j = data.find(b"\r\n", pos)
            if j < 0:
                self.size_buf = data[pos:]
                break
            self.chunk_left = int(data[pos:j].split(b";", 1)[0] or b"0", 16)
            pos = j + 2
        return b"".join(out)

    def _feed(self, data: bytes) -> None:
        buf = self.buf + data.replace(b"\r\n", b"\n")
        *blocks, self.buf = buf.split(b"\n\n")
        for block in blocks:
            retry = _RETRY.search(block)
            if retry:
                self.retry_ms = int(retry.group(1))
            ident = _ID.search(block)
            if ident:
                self.last_id = ident.group(1)
            if b"data:" in block:
                for m in _SEQ.finditer(block):
                    seq = int(m.group(1))
                    if seq >= 0:
                        self.seqs[seq] = self.seqs.get(seq, 0) + 1
                        self.client.events += 1


class Client:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.host: str = spec.get("host", "127.0.0.1")
        self.port: int = int(spec["port"])
        self.secret: str = spec.get("secret", "")
        self.path: str = spec["path"]  # "{user}" is replaced by each stream's user
        self.streams: list[Stream] = []
        self.expected: dict[str, int] = {}
        self.closing = False
        self.drops = 0
        self.events = 0

    async def open(self, cmd: dict[str, Any]) -> dict[str, Any]:
        users: list[str] = cmd["users"]
        sem = asyncio.Semaphore(int(cmd.get("concurrency", 500)))
        timeout = float(cmd.get("timeout", 60))
        new = [Stream(self, u, self.path.replace("{user}", u)) for u in users]
        self.streams.extend(new)

        async def one(s: Stream) -> None:
            async with sem:
                await s.connect()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(s.first_ready), timeout)

        t0 = _now()
        await asyncio.gather(*(one(s) for s in new))
        t1 = _now()
        errors: dict[str, int] = {}
        for s in new:
            if not s.live:
                key = s.error or "not open in time"
                errors[key] = errors.get(key, 0) + 1
        return {
            "ev": "opened",
            "count": len(new),
            "ok": sum(1 for s in new if s.live),
            "errors": errors,
            "elapsed_s": (t1 - t0) / 1e9,
        }

    def stats(self, cmd: dict[str, Any]) -> dict[str, Any]:
        since = int(cmd.get("since_ns", 0))
        live = [s for s in self.streams if s.live]
        again = [s for s in live if s.ready_ns > since]
        lost = dups = 0
        for s in self.streams:
            want = self.expected.get(s.user, 0)
            got = sum(1 for q in range(want) if q in s.seqs)
            lost += want - got
            dups += sum(c - 1 for c in s.seqs.values() if c > 1)
        return {
            "ev": "stats",
            "streams": len(self.streams),
            "live": len(live),
            "reopened_since": len(again),
            "last_ready_ns": max((s.ready_ns for s in again), default=0),
            "drops": self.drops,
            "events": self.events,
            "expected": sum(self.expected.values()),
            "lost": lost,
            "duplicates": dups,
        }

    def close(self) -> None:
        self.closing = True
        for s in self.streams:
            if s.transport is not None:
                s.transport.abort()


async def _serve(spec: dict[str, Any]) -> None:
    reader = await stdin_reader()
    client = Client(spec)
    emit({"ev": "hello"})
    while True:
        cmd = await read_command(reader)
        if cmd is None or cmd.get("cmd") == "exit":
            break
        name = cmd.get("cmd")
        if name == "open":
            emit(await client.open(cmd))
        elif name == "expect":
            client.expected.update(dict.fromkeys(cmd["users"], int(cmd["count"])))
            emit({"ev": "expecting"})
        elif name == "stats":
            emit(client.stats(cmd))
        else:
            emit({"ev": "error", "error": f"unknown command {name!r}"})
    client.close()
    await asyncio.sleep(0.05)


def main() -> None:
    spec = orjson.loads(sys.argv[1])
    set_loop_policy()
    try:
        asyncio.run(_serve(spec))
    except KeyboardInterrupt:
        log("stormclient interrupted")


if __name__ == "__main__":
    main()
