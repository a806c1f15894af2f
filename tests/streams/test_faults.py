"""Faults: Redis restarts under live streams, and a client that stops reading."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import redis

from core.settings import get_settings
from finrt.embedded_redis import EmbeddedRedis
from streams.envelope import parse_id
from streams.publish import Publisher
from tests.support import rss_kb, sse


def _publisher(url: str, maxlen: int = 1000) -> Publisher:
    return Publisher(redis.Redis.from_url(url), get_settings().redis_prefix, maxlen=maxlen)


def _wait_ready(server, ready: bool, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ok = httpx.get(server.url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok == ready:
            return
        time.sleep(0.1)
    raise AssertionError(f"readyz never became {'ready' if ready else 'unavailable'}")


async def test_redis_restart_with_persistence_loses_nothing(start_api, token, user, tmp_root):
    data = tmp_root / f"redis-aof-{user}"
    server_redis = EmbeddedRedis(data_dir=str(data)).start()
    try:
        api = start_api(redis_url=server_redis.url)
        pub = _publisher(server_redis.url)
        channel = f"user:{user}"
        async with sse(f"{api.url}/api/v1/stream/notifications", token(user)) as stream:
            before = [pub.publish(channel, "job_progress", {"n": i}) for i in range(3)]
            assert [e.id for e in await stream.events(3)] == before
            server_redis.stop()
            _wait_ready(api, False)
            server_redis = EmbeddedRedis(port=server_redis.port, data_dir=str(data)).start()
            # Published at once, likely before the hub has even reconnected: history fills the gap.
            pub = _publisher(server_redis.url)
            after = [pub.publish(channel, "job_progress", {"n": i}) for i in range(3, 8)]
            got = await stream.events(5, timeout=15)
            assert [e.id for e in got] == after
            assert all(e.event == "job_progress" for e in got)
            await stream.no_event(0.5)
    finally:
        server_redis.stop()


async def test_redis_restart_without_persistence_sends_reset(start_api, token, user):
    server_redis = EmbeddedRedis().start()
    try:
        api = start_api(redis_url=server_redis.url)
        channel = f"user:{user}"
        async with sse(f"{api.url}/api/v1/stream/notifications", token(user)) as stream:
            pub = _publisher(server_redis.url)
            pub.publish(channel, "job_progress", {"n": 0})
            await stream.next_event()
            server_redis.stop()
            _wait_ready(api, False)
            server_redis = EmbeddedRedis(port=server_redis.port).start()
            _wait_ready(api, True)
            first = await stream.next_event(timeout=15)
            assert first.event == "reset"
            assert first.envelope["data"]["reason"] == "history_lost"
            pub = _publisher(server_redis.url)
            live = pub.publish(channel, "job_progress", {"n": 1})
            assert (await stream.next_event()).id == live
    finally:
        server_redis.stop()


async def test_events_published_since_a_restart_without_persistence_still_mean_history_lost(
    start_api, token, user
):
    """The restarted Redis's stream begins with events published since: a client behind it lost
    history with the old Redis (nothing was trimmed), and a reconnect is told the same."""
    server_redis = EmbeddedRedis().start()
    try:
        api = start_api(redis_url=server_redis.url)
        channel = f"user:{user}"
        async with sse(f"{api.url}/api/v1/stream/notifications", token(user)) as stream:
            pub = _publisher(server_redis.url)
            seen = pub.publish(channel, "job_progress", {"n": 0})
            await stream.next_event()
            assert server_redis.process is not None
            server_redis.process.kill()
            server_redis.process.wait()
            server_redis = EmbeddedRedis(port=server_redis.port).start()
            # At once, most likely before the API has its pub/sub link back.
            pub = _publisher(server_redis.url)
            since = [pub.publish(channel, "job_progress", {"n": i}) for i in (1, 2)]
            first = await stream.next_event(timeout=15)
            assert first.event == "reset"
            assert first.envelope["data"]["reason"] == "history_lost"
        url = f"{api.url}/api/v1/stream/notifications"
        async with sse(url, token(user), last_event_id=seen) as again:
            first = await again.next_event(timeout=15)
            assert first.event == "reset"
            assert first.envelope["data"]["reason"] == "history_lost"
            assert first.id is not None
            assert parse_id(first.id) >= parse_id(since[-1])
    finally:
        server_redis.stop()


def _slow_client(port: int, path: str, token: str) -> socket.socket:
    """A client that reads the response headers and then nothing more."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200")
    return sock


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    """The body of a chunked HTTP response read so far, and whether it has ended."""
    out, pos = [], 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return b"".join(out), False
        size = int(data[pos:eol].split(b";")[0], 16)
        if size == 0:
            return b"".join(out), True
        if eol + 2 + size + 2 > len(data):
            return b"".join(out), False
        out.append(data[eol + 2 : eol + 2 + size])
        pos = eol + 2 + size + 2


def _ids(body: bytes) -> list[str]:
    return [line[4:].decode() for line in body.split(b"\n") if line.startswith(b"id: ")]


def _read_ids(port: int, path: str, token: str, last_id: str, n: int) -> list[str]:
    """Resume with a plain socket and collect ``n`` event ids (fast, whatever the payload)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Last-Event-ID: {last_id}\r\n\r\n".encode()
    )
    parts, seen = [], 0
    with sock:
        sock.settimeout(3)  # stop after 3 s of silence, or once n ids are in
        deadline = time.monotonic() + 20
        while seen < n and time.monotonic() < deadline:
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                break
            if not chunk:
                break
            parts.append(chunk)
            seen += chunk.count(b"id: ")
    _head, _, body = b"".join(parts).partition(b"\r\n\r\n")
    return _ids(_dechunk(body)[0])[:n]


def _ws_flood(port: int, token: str, frames: int) -> tuple[int, bytes]:
    """A WebSocket client that sends ``frames`` tiny frames (each earning an error reply) and
    reads nothing until it is done; returns how many it could send, and what it then reads."""
    import base64
    import os

    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /api/v1/ws?access_token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    one = bytes([0x81, 0x81]) + b"\x00\x00\x00\x00" + b"x"  # masked text "x": invalid JSON
    sent = 0
    s.settimeout(5)
    try:
        while sent < frames:
            s.sendall(one * 1000)
            sent += 1000
    except OSError:
        pass  # the server stopped reading (or closed): what a flooder meets
    s.settimeout(10)
    got = bytearray()
    try:
        while chunk := s.recv(1 << 20):
            got.extend(chunk)
    except OSError:
        pass
    s.close()
    return sent, bytes(got)


async def test_a_websocket_client_that_sends_but_never_reads_is_closed_and_costs_no_memory(
    start_api, token, user
):
    """Each frame earns a reply (here an error); a client that reads none of them is closed as
    slow once FINRT_CLIENT_BUFFER replies wait, as an event stream would be."""
    api = start_api(client_buffer="200")
    rss_before = rss_kb(api.pid)
    sent, got = await asyncio.to_thread(_ws_flood, api.port, token(user), 100_000)
    growth_mb = (rss_kb(api.pid) - rss_before) / 1024
    # 100,000 replies kept for it would be hundreds of MB (about 3.6 KB each, measured).
    assert growth_mb < 40, f"server grew {growth_mb:.1f} MB for {sent} frames"
    assert got.count(b"invalid JSON") <= 1000, "more replies than its buffer were kept for it"
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{api.url}/readyz")).status_code == 200


async def test_a_client_that_stops_reading_is_closed_without_slowing_others(start_api, token, user):
    api = start_api(client_buffer="200", history_maxlen="5000")
    channel = f"user:{user}"
    path = "/api/v1/stream/notifications"
    slow = _slow_client(api.port, path, token(user))
    try:
        async with sse(api.url + path, token(user)) as fast:
            await fast.next_frame()  # preamble
            rss_before = rss_kb(api.pid)
            pad = "x" * 8_000
            started = time.monotonic()
            pub = _publisher(get_settings().redis_url, maxlen=5000)

            def produce() -> list[str]:
                out = []
                for i in range(3000):
                    out.append(pub.publish(channel, "job_progress", {"n": i, "pad": pad}))
                    time.sleep(0.001)  # ~8 MB/s: what the reading test client keeps up with
                return out

            publishing = asyncio.create_task(asyncio.to_thread(produce))
            got = await fast.events(3000, timeout=30)
            ids = await publishing
            elapsed = time.monotonic() - started
            assert [e.id for e in got] == ids
            growth_mb = (rss_kb(api.pid) - rss_before) / 1024
            # 3000 x 8 KB is 24 MB: keeping it all for the slow client would show here.
            assert growth_mb < 20, f"server grew {growth_mb:.1f} MB"
            assert elapsed < 60
        # The slow client now reads: what was buffered, then the end of its stream.
        slow.settimeout(10)
        parts = []
        while not b"".join(parts[-2:]).endswith(b"0\r\n\r\n"):
            chunk = slow.recv(1 << 20)
            if not chunk:
                break
            parts.append(chunk)
        body, ended = _dechunk(b"".join(parts))
        assert ended, "the slow client's stream was never ended"
        seen = _ids(body)
        assert seen and seen[-1] != ids[-1], "the slow client was never cut off"
        # Its reconnect resumes from history: nothing lost.
        expected = ids[ids.index(seen[-1]) + 1 :]
        rest = await asyncio.to_thread(
            _read_ids, api.port, path, token(user), seen[-1], len(expected)
        )
        assert rest == expected
    finally:
        slow.close()


def test_a_subscription_redis_refuses_is_retried_with_backoff_and_logged(start_api, token, user):
    """Regression: when Redis refused the hub's SUBSCRIBE (an ACL user without channel
    permissions: NOPERM), the hub dropped the link and reconnected at once, thousands of times
    a second, a core busy and the log flooded, never saying why."""
    server_redis = EmbeddedRedis().start()
    try:
        admin = redis.Redis.from_url(server_redis.url)
        admin.acl_setuser(
            "nochannels",
            enabled=True,
            passwords=["+pw"],
            keys=["*"],
            commands=["+@all"],
            reset_channels=True,
        )
        admin.close()
        api = start_api(redis_url=f"redis://nochannels:pw@127.0.0.1:{server_redis.port}/0")
        url = f"{api.url}/api/v1/stream/notifications"
        headers = {"Authorization": f"Bearer {token(user)}"}
        deadline = time.monotonic() + 3
        try:
            with httpx.stream("GET", url, headers=headers, timeout=3) as response:
                for _ in response.iter_lines():
                    if time.monotonic() > deadline:
                        break
        except httpx.HTTPError:
            pass  # the stream cannot go live; what matters is what the process does meanwhile
        log = api.log()
        assert log.count("Redis pub/sub connection lost") < 20, log[-2000:]
        assert "NOPERM" in log
    finally:
        server_redis.stop()
