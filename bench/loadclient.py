"""SSE load client: many `text/event-stream` connections in one uvloop process.

Run by the orchestrator as ``python -m bench.loadclient`` (pinned to the load CPU) and driven
over stdin/stdout with JSON lines (see ``_serve``). Each connection is a raw asyncio Protocol:
it writes one ``GET ... HTTP/1.1`` request, parses the response head, de-chunks the body and
splits it into SSE blocks on blank lines, so the per-event cost is a few bytes-level scans
(C speed) plus a handful of Python operations. No HTTP library runs per event.

Per event it reads ``t`` (publisher's ``time.time_ns()`` stamp) and ``seq`` out of the
``data:`` line's JSON and records ``receive_ns - t``. Every connection tracks which of its
expected sequence numbers arrived (lost = expected - received, duplicates = repeats).
Events with ``seq < 0`` are warm-up probes: they only mark the connection as "warm".
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import sys
import time
from array import array
from typing import Any, cast

import orjson

from bench.common import (
    STREAM_PATH,
    emit,
    log,
    make_token,
    percentiles,
    read_command,
    set_loop_policy,
    stdin_reader,
)

# Fast path: the stamp as the publisher wrote it ({"t": ..., "seq": ...}, compact or not).
# A literal prefix keeps this a C-speed scan; anything else falls back to a full JSON parse.
_RE_STAMP = re.compile(rb'"t":\s*(\d+),\s*"seq":\s*(-?\d+)')
# The first blocks of every connection are checked against a count of `data:` lines; once the
# stamp pattern has matched every event there, later blocks skip the count (it costs a scan).
_CHECK_BLOCKS = 20
_LINGER_RST = struct.pack("ii", 1, 0)
_now = time.time_ns

# Connection states
_HEAD, _BODY, _DONE = 0, 1, 2


class Pool:
    """All connections of this process and the aggregate counters they feed."""

    def __init__(self) -> None:
        self.conns: list[Conn] = []
        # Per measured event: the publisher's stamp and the seq; per received block: the
        # receive time and the index where the block's events end. Latencies are computed
        # after the run (latencies()), which keeps the per-event work on the hot path in C.
        self.ts = array("q")
        self.seqs = array("q")
        self.block_now = array("q")
        self.block_end = array("q")
        self.events = 0  # measured events received (seq >= 0), including duplicates
        self.unstamped = 0  # data: blocks without a t/seq stamp
        self.warm = 0  # connections that have seen a warm-up probe
        self.pending = 0  # connections still missing expected events
        self.first_recv = 0
        self.last_recv = 0
        self.disconnects = 0  # connections closed by the peer after they were ready
        self.all_done = asyncio.Event()

    def latencies(self) -> array[int]:
        lat = array("q", bytes(8 * len(self.ts)))
        ts = self.ts
        start = 0
        for now, end in zip(self.block_now, self.block_end, strict=True):
            for i in range(start, end):
                lat[i] = now - ts[i]
            start = end
        return lat

    def reset(self) -> None:
        self.ts = array("q")
        self.seqs = array("q")
        self.block_now = array("q")
        self.block_end = array("q")
        self.events = 0
        self.first_recv = self.last_recv = 0

    def conn_complete(self, now: int) -> None:
        self.pending -= 1
        if self.pending <= 0:
            self.all_done.set()


class Conn(asyncio.Protocol):
    __slots__ = (
        "buf",
        "checks",
        "chunk_left",
        "chunked",
        "crlf_left",
        "dups",
        "error",
        "expect_hi",
        "expect_lo",
        "got",
        "head",
        "last_id",
        "marks",
        "pool",
        "ready",
        "request",
        "sep",
        "size_buf",
        "state",
        "status",
        "t_complete",
        "t_headers",
        "t_ready",
        "t_start",
        "transport",
        "unexpected",
        "warm",
    )

    def __init__(self, pool: Pool, request: bytes, lo: int, hi: int) -> None:
        self.pool = pool
        self.request = request
        self.expect_lo = lo
        self.expect_hi = hi
        self.marks = bytearray(max(0, hi - lo))
        self.got = 0
        self.dups = 0
        self.unexpected = 0
        self.warm = False
        self.state = _HEAD
        self.head = b""
        self.status = 0
        self.chunked = False
        self.chunk_left = 0
        self.crlf_left = 0
        self.size_buf = b""
        self.buf = b""
        self.checks = _CHECK_BLOCKS
        self.sep = b""
        self.last_id = b""
        self.error = ""
        self.t_start = 0
        self.t_headers = 0
        self.t_ready = 0
        self.t_complete = 0
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                # Close with RST: no TIME_WAIT pile-up across tens of thousands of connections.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        tr.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        prev = self.state
        self.state = _DONE
        if not self.ready.done():
            self.error = self.error or f"closed before ready ({exc or 'eof'})"
            self.ready.set_result(None)
        elif prev != _DONE:
            self.pool.disconnects += 1

    def data_received(self, data: bytes) -> None:
        now = _now()
        if self.state == _HEAD:
            head = self.head + data
            i = head.find(b"\r\n\r\n")
            if i < 0:
                self.head = head
                return
            self.head = b""
            self._on_head(head[:i], now)
            if self.state != _BODY:
                return
            data = head[i + 4 :]
            if not data:
                return
        elif self.state != _BODY:
            return
        if self.chunked:
            data = self._dechunk(data)
            if not data:
                return
        self._feed(data, now)

    # -- parsing ------------------------------------------------------------------------

    def _on_head(self, head: bytes, now: int) -> None:
        self.t_headers = now
        lines = head.split(b"\r\n")
        try:
            self.status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            self.status = -1
        lower = head.lower()
        self.chunked = b"transfer-encoding: chunked" in lower
        if self.status != 200 or b"text/event-stream" not in lower:
            self.error = f"HTTP {self.status}"
            self.state = _DONE
            if not self.ready.done():
                self.ready.set_result(None)
            if self.transport is not None:
                self.transport.abort()
            return
        self.state = _BODY

    def _dechunk(self, data: bytes) -> bytes:
        if self.size_buf:
            data = self.size_buf + data
            self.size_buf = b""
        out: list[bytes] = []
        pos = 0
        n = len(data)
        while pos < n:
            left = self.chunk_left
            if left:
                end = pos + left
                if end > n:
                    out.append(data[pos:] if pos else data)
                    self.chunk_left = left - (n - pos)
                    break
                out.append(data[pos:end])
                self.chunk_left = 0
                self.crlf_left = 2
                pos = end
                continue
            if self.crlf_left:
                take = min(self.crlf_left, n - pos)
                pos += take
                self.crlf_left -= take
                continue
            j = data.find(b"\r\n", pos)
            if j < 0:
                self.size_buf = data[pos:]
                break
            size = int(data[pos:j].split(b";", 1)[0], 16)
            pos = j + 2
            if size == 0:
                self.state = _DONE
                break
            self.chunk_left = size
        if len(out) == 1:
            return out[0]
        return b"".join(out)

    def _feed(self, data: bytes, now: int) -> None:
        buf = self.buf + data if self.buf else data
        sep = self.sep
        if not sep:
            nl = buf.find(b"\n")
            if nl < 0:
                self.buf = buf
                return
            sep = self.sep = b"\r\n\r\n" if nl > 0 and buf[nl - 1] == 13 else b"\n\n"
        end = buf.rfind(sep)
        if end < 0:
            self.buf = buf
            return
        cut = end + len(sep)
        block = buf[:cut]
        self.buf = buf[cut:]
        if not self.t_ready:
            self.t_ready = now
            if not self.ready.done():
                self.ready.set_result(None)
        if self.checks:
            self.checks -= 1
            ndata = block.count(b"data:")
            if not ndata:
                return
            stamps = _RE_STAMP.findall(block)
            if len(stamps) != ndata:
                self.checks = -1  # this server's framing needs the full parse from now on
                stamps = self._slow_parse(block)
        elif self.checks < 0:
            stamps = self._slow_parse(block)
        else:
            stamps = _RE_STAMP.findall(block)
        if not stamps:
            return
        i = block.rfind(b"id:")
        if i >= 0 and (i == 0 or block[i - 1] == 10):
            j = block.find(b"\n", i)
            self.last_id = block[i + 3 : j].strip()
        pool = self.pool
        marks = self.marks
        lo = self.expect_lo
        nmarks = len(marks)
        got0 = self.got
        ndata = len(stamps)
        if ndata >= 4:
            ts, seqs = zip(*stamps, strict=True)
            sa = array("q", map(int, seqs))
            first = sa[0]
            k0 = first - lo
            # Fast path for coalesced writes: consecutive new expected seqs, C-level work.
            if (
                first >= 0
                and k0 >= 0
                and k0 + ndata <= nmarks
                and sa[-1] == first + ndata - 1
                and marks.find(1, k0, k0 + ndata) < 0
                and sa == array("q", range(first, first + ndata))
            ):
                marks[k0 : k0 + ndata] = b"\x01" * ndata
                self.got += ndata
                pool.ts.extend(map(int, ts))
                pool.seqs.extend(sa)
                pool.events += ndata
                pool.block_now.append(now)
                pool.block_end.append(len(pool.ts))
                self._progress(got0, now)
                return
        pool_ts = pool.ts
        pool_seqs = pool.seqs
        n0 = len(pool_ts)
        for t, s in stamps:
            seq = int(s)
            if seq < 0:
                if not self.warm:
                    self.warm = True
                    pool.warm += 1
                continue
            pool_ts.append(int(t))
            pool_seqs.append(seq)
            k = seq - lo
            if 0 <= k < nmarks:
                if marks[k]:
                    self.dups += 1
                else:
                    marks[k] = 1
                    self.got += 1
            else:
                self.unexpected += 1
        if len(pool_ts) != n0:
            pool.events += len(pool_ts) - n0
            pool.block_now.append(now)
            pool.block_end.append(len(pool_ts))
        self._progress(got0, now)

    def _progress(self, got0: int, now: int) -> None:
        if self.got != got0:
            pool = self.pool
            if not pool.first_recv:
                pool.first_recv = now
            pool.last_recv = now
            if self.got == len(self.marks) and not self.t_complete:
                self.t_complete = now
                pool.conn_complete(now)

    def _slow_parse(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """Full JSON parse of every data: line (only if the fast scan looked inconsistent)."""
        stamps: list[tuple[bytes, bytes]] = []
        for ev in block.replace(b"\r\n", b"\n").split(b"\n\n"):
            payload = b"\n".join(
                line[5:].lstrip(b" ") for line in ev.split(b"\n") if line.startswith(b"data:")
            )
            if not payload:
                continue
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError:
                self.pool.unstamped += 1
                continue
            inner = obj.get("data", obj) if isinstance(obj, dict) else None
            if isinstance(inner, str):
                with contextlib.suppress(orjson.JSONDecodeError):
                    inner = orjson.loads(inner)
            if isinstance(inner, dict) and "t" in inner and "seq" in inner:
                stamps.append((str(inner["t"]).encode(), str(inner["seq"]).encode()))
            else:
                self.pool.unstamped += 1
        return stamps


def latency_summary(lat_ns: array[int], seq: array[int]) -> dict[str, Any]:
    """Latency percentiles, plus per event (seq) the worst latency any client saw: a few slow
    events that reach everyone point at server-side stalls, not at slow clients."""
    lat = sorted(lat_ns)
    p = percentiles(lat, (50, 90, 99, 99.9, 100))
    worst: dict[int, int] = {}
    get = worst.get
    for s, v in zip(seq, lat_ns, strict=False):
        if v > get(s, -1):
            worst[s] = v
    slowest = sorted(worst.items(), key=lambda kv: kv[1], reverse=True)[:5]
    per_seq = sorted(worst.values())
    return {
        "latency_ms": {
            "n": len(lat),
            "p50": p[0] / 1e6,
            "p90": p[1] / 1e6,
            "p99": p[2] / 1e6,
            "p999": p[3] / 1e6,
            "max": p[4] / 1e6,
            "min": lat[0] / 1e6 if lat else float("nan"),
        },
        "per_event_worst_ms": {
            "events": len(per_seq),
            "p50": percentiles(per_seq, (50,))[0] / 1e6,
            "slowest": [[s, v / 1e6] for s, v in slowest],
        },
    }


class Client:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.host: str = spec.get("host", "127.0.0.1")
        self.port: int = int(spec["port"])
        self.path: str = spec.get("path", STREAM_PATH)  # "{user}" becomes each stream's user
        self.secret: str = spec["secret"]
        self.pool = Pool()
        self.tokens: dict[str, str] = {}

    def _request(self, user: str, last_event_id: str | None) -> bytes:
        token = self.tokens.get(user)
        if token is None:
            token = self.tokens[user] = make_token(self.secret, user)
        lines = [
            f"GET {self.path.replace('{user}', user)} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Accept: text/event-stream",
            "Cache-Control: no-cache",
            f"Authorization: Bearer {token}",
        ]
        if last_event_id:
            lines.append(f"Last-Event-ID: {last_event_id}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def open(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Open `count` streams (at most `concurrency` handshakes in flight) and wait until
        each has its response head and first SSE block (the `retry:` line)."""
        loop = asyncio.get_running_loop()
        count = int(cmd["count"])
        users: list[str] = cmd.get("users") or [cmd.get("user", "bench")]
        lo, hi = (int(x) for x in cmd.get("expect", (0, 0)))
        last_event_id = cmd.get("last_event_id")
        timeout = float(cmd.get("timeout", 60.0))
        sem = asyncio.Semaphore(int(cmd.get("concurrency", 500)))
        pool = self.pool
        new: list[Conn] = []
        for i in range(count):
            user = users[i % len(users)]
            conn = Conn(pool, self._request(user, last_event_id), lo, hi)
            new.append(conn)
        if hi > lo:
            pool.pending += count
        pool.conns.extend(new)
        if pool.pending > 0:
            pool.all_done.clear()

        async def one(conn: Conn) -> None:
            async with sem:
                conn.t_start = _now()
                try:
                    await asyncio.wait_for(
                        loop.create_connection(lambda: conn, self.host, self.port), timeout
                    )
                    await asyncio.wait_for(asyncio.shield(conn.ready), timeout)
                except (OSError, TimeoutError) as exc:
                    conn.error = conn.error or f"{type(exc).__name__}: {exc}"
                    if conn.transport is not None:
                        conn.transport.abort()

        t0 = _now()
        await asyncio.gather(*(one(c) for c in new))
        t1 = _now()
        errors: dict[str, int] = {}
        for c in new:
            if c.error:
                errors[c.error] = errors.get(c.error, 0) + 1
                if hi > lo and not c.t_complete:
                    c.t_complete = -1
                    pool.conn_complete(0)
        ok = count - sum(errors.values())
        heads = sorted(c.t_ready - c.t_start for c in new if not c.error and c.t_ready)
        p50, p99, pmax = percentiles(heads, (50, 99, 100))
        return {
            "ev": "opened",
            "count": count,
            "ok": ok,
            "failed": count - ok,
            "errors": errors,
            "elapsed_s": (t1 - t0) / 1e9,
            "t0_ns": t0,
            "t1_ns": t1,
            "ready_ms": {"p50": p50 / 1e6, "p99": p99 / 1e6, "max": pmax / 1e6},
            "ready_raw_ms": [round(h / 1e6, 3) for h in heads],
            "total_open": sum(1 for c in pool.conns if c.state == _BODY),
        }

    async def wait_warm(self, cmd: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + float(cmd.get("timeout", 30.0))
        while True:
            live = [c for c in self.pool.conns if c.state == _BODY]
            cold = sum(1 for c in live if not c.warm)
            if cold == 0 or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        return {"ev": "warm", "ok": cold == 0, "cold": cold, "live": len(live)}

    async def drain(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Wait until every connection has all expected events, or nothing new arrived for
        `idle_s` seconds, or `max_s` passed; then report the statistics."""
        pool = self.pool
        idle_s = float(cmd.get("idle_s", 3.0))
        max_s = float(cmd.get("max_s", 60.0))
        deadline = time.monotonic() + max_s
        start_ns = _now()
        while not pool.all_done.is_set():
            now = time.monotonic()
            idle = (_now() - max(pool.last_recv, start_ns)) / 1e9
            if now >= deadline or idle >= idle_s:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pool.all_done.wait(), min(0.2, deadline - now))
        return self.stats(cmd)

    def stats(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Counters of the connections (from index `since`); latency figures too, or, with
        `dump`, the raw latency arrays written to `<dump>.lat` / `<dump>.seq` for the
        orchestrator to merge across client processes."""
        pool = self.pool
        every = pool.conns[int(cmd.get("since", 0)) :]
        # Streams that never opened are reported as failed opens, not as lost events.
        conns = [c for c in every if c.t_ready]
        expected = sum(len(c.marks) for c in conns)
        received = sum(c.got for c in conns)
        lost_per = [len(c.marks) - c.got for c in conns]
        complete = [(c.t_complete - c.t_start) / 1e6 for c in conns if c.t_complete > 0]
        out: dict[str, Any] = {
            "ev": "result",
            "connections": len(every),
            "open_failed": len(every) - len(conns),
            "live": sum(1 for c in conns if c.state == _BODY),
            "disconnects": pool.disconnects,
            "expected": expected,
            "received": received,
            "lost": expected - received,
            "clients_with_loss": sum(1 for x in lost_per if x),
            "max_lost_per_client": max(lost_per, default=0),
            "duplicates": sum(c.dups for c in conns),
            "clients_with_dups": sum(1 for c in conns if c.dups),
            "unexpected": sum(c.unexpected for c in conns),
            "unstamped": pool.unstamped,
            "events": pool.events,
            "first_recv_ns": pool.first_recv,
            "last_recv_ns": pool.last_recv,
            "complete": pool.pending <= 0,
            "complete_ms": {
                "n": len(complete),
                "max": max(complete, default=float("nan")),
                "min": min(complete, default=float("nan")),
            },
        }
        dump = cmd.get("dump")
        lat = pool.latencies()
        if dump:
            with open(f"{dump}.lat", "wb") as f:
                lat.tofile(f)
            with open(f"{dump}.seq", "wb") as f:
                pool.seqs.tofile(f)
        else:
            out.update(latency_summary(lat, pool.seqs))
        return out

    def reset_measurement(self) -> None:
        self.pool.reset()

    def close(self) -> dict[str, Any]:
        n = 0
        for c in self.pool.conns:
            c.state = _DONE
            if c.transport is not None and not c.transport.is_closing():
                c.transport.abort()
                n += 1
        return {"ev": "closed", "closed": n}


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
        elif name == "wait_warm":
            emit(await client.wait_warm(cmd))
        elif name == "reset":
            client.reset_measurement()
            emit({"ev": "reset"})
        elif name == "drain":
            emit(await client.drain(cmd))
        elif name == "stats":
            emit(client.stats(cmd))
        elif name == "close":
            emit(client.close())
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
        log("loadclient interrupted")


if __name__ == "__main__":
    main()
