"""Hundreds of users never seen before open their streams at once (a deploy, a network blip):
every stream works, nothing published afterwards is lost, and the API process keeps only a
few connections to Redis (the opens share their round trips)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import httpx
import redis
from sqlalchemy import select

import streams
from core.settings import get_settings
from models import User, session_scope
from streams.leases import leases_key

USERS = 400
POOL_BOUND = 10  # command connections; before batching a storm like this took ~100


class RawStream:
    """One SSE connection on a bare socket (hundreds of them stay light in the test)."""

    def __init__(self, port: int, user: str, token: str) -> None:
        self.port, self.user, self.token = port, user, token
        self.status = 0
        self.body = b""
        self.writer: asyncio.StreamWriter | None = None
        self.opened = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(
            b"GET /api/v1/stream/notifications HTTP/1.1\r\nHost: test\r\n"
            b"Accept: text/event-stream\r\n"
            b"Authorization: Bearer " + self.token.encode() + b"\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        self.status = int(head.split(b" ", 2)[1])
        self._task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(Exception):
            while chunk := await reader.read(65536):
                self.body += chunk
                if b"retry:" in self.body:
                    self.opened.set()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.writer is not None:
            self.writer.close()


def _calls(client: redis.Redis, command: str) -> int:
    """How many times Redis ran ``command`` so far (INFO commandstats)."""
    stats = client.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0))


def _api_connections(client: redis.Redis, pid: int) -> int:
    name = f"finrt-api:{pid}"
    return sum(1 for c in client.client_list() if c.get("name") == name)


async def test_a_storm_of_new_users_opens_every_stream_with_few_redis_connections(
    start_api, token, redis_client
):
    server = start_api(max_streams_per_user="2", stream_lease_seconds="30")
    port = int(server.url.rsplit(":", 1)[1])
    run = uuid.uuid4().hex[:8]
    users = [f"storm{run}n{i}" for i in range(USERS)]
    conns = [RawStream(port, u, token(u)) for u in users]
    peak = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, await asyncio.to_thread(_api_connections, redis_client, server.pid))
            await asyncio.sleep(0.02)

    subscribes0 = _calls(redis_client, "subscribe")
    scripts0 = _calls(redis_client, "evalsha")
    watcher = asyncio.create_task(watch())
    try:
        await asyncio.gather(*(c.open() for c in conns))
        assert [c.status for c in conns] == [200] * USERS
        await asyncio.wait_for(asyncio.gather(*(c.opened.wait() for c in conns)), 60)
        done.set()
        await watcher
        peak = max(peak, _api_connections(redis_client, server.pid))
        assert 0 < peak <= POOL_BOUND, f"{peak} Redis connections for {USERS} opens"
        # One SUBSCRIBE per loop turn names every channel wanted in it, not one per stream.
        subscribes = _calls(redis_client, "subscribe") - subscribes0
        assert 0 < subscribes <= USERS // 8, f"{subscribes} SUBSCRIBEs for {USERS} channels"
        # Each batch takes its leases in one script call and reads its channels' bounds in
        # another: not two calls per stream (each costs the process ~30 µs in redis-py).
        scripts = _calls(redis_client, "evalsha") - scripts0
        assert 0 < scripts <= USERS // 4, f"{scripts} script calls for {USERS} opens"

        # Every stream is live: an event published to each user's channel reaches it.
        for u in users:
            streams.publish(f"user:{u}", "price_tick", {"for": u})
        deadline = asyncio.get_running_loop().time() + 30
        while missing := [c for c in conns if f'"for":"{c.user}"'.encode() not in c.body]:
            assert asyncio.get_running_loop().time() < deadline, f"{len(missing)} got nothing"
            await asyncio.sleep(0.1)
        for c in conns:  # each stream got its own event only
            assert c.body.count(b'"for":') == 1
        # The users were created on first sight, in batches.
        with session_scope(get_settings().database_url) as session:
            found = set(session.scalars(select(User.id).where(User.id.in_(users))))
        assert found == set(users)
    finally:
        done.set()
        watcher.cancel()
        for c in conns:
            c.close()


async def test_the_fleet_limit_holds_for_streams_of_one_user_opened_together(
    start_api, token, user
):
    """Leases taken in one batch still count one by one: of 4 + 4 concurrent opens on two
    processes (each would let 3 through), 3 in all open."""
    servers = [start_api(max_streams_per_user="3", stream_lease_seconds="30") for _ in range(2)]
    conns = [
        RawStream(int(s.url.rsplit(":", 1)[1]), user, token(user))
        for s in servers
        for _ in range(4)
    ]
    try:
        await asyncio.gather(*(c.open() for c in conns))
        assert sorted(c.status for c in conns) == [200] * 3 + [429] * 5
    finally:
        for c in conns:
            c.close()


async def test_a_user_whose_lease_key_is_broken_fails_alone_in_a_batch(
    start_api, env, token, redis_client, user
):
    """A batch's leases are one script call; when it fails as a whole (here a key that holds
    the wrong type), its streams are tried one by one: only the broken one is refused."""
    server = start_api()
    port = int(server.url.rsplit(":", 1)[1])
    redis_client.set(leases_key(env["FINRT_REDIS_PREFIX"], user), "not a sorted set")
    others = [f"{user}ok{i}" for i in range(30)]
    conns = [RawStream(port, u, token(u)) for u in [*others[:15], user, *others[15:]]]
    try:
        await asyncio.gather(*(c.open() for c in conns))
        statuses = {c.user: c.status for c in conns}
        assert statuses.pop(user) == 503
        assert set(statuses.values()) == {200}
        await asyncio.wait_for(
            asyncio.gather(*(c.opened.wait() for c in conns if c.user != user)), 30
        )
    finally:
        for c in conns:
            c.close()


def test_command_connections_that_died_without_a_word_are_replaced(api, token, user) -> None:
    """Redis drops the API process's pooled command connections (as a restart or a lost NAT
    entry would; the process is told nothing): the next requests still work."""
    headers = {"Authorization": f"Bearer {token(user)}"}
    client = redis.Redis.from_url(get_settings().redis_url)
    try:
        assert httpx.post(
            f"{api.url}/api/v1/stream/tickets", headers=headers, timeout=10
        ).is_success
        name = f"finrt-api:{api.pid}"
        killed = [c["id"] for c in client.client_list() if c.get("name") == name]
        assert killed, "the API process holds named command connections"
        for ident in killed:
            client.client_kill_filter(_id=ident)
        for _ in range(3):
            answer = httpx.post(f"{api.url}/api/v1/stream/tickets", headers=headers, timeout=10)
            assert answer.status_code == 201, answer.text
        for ident in [c["id"] for c in client.client_list() if c.get("name") == name]:
            client.client_kill_filter(_id=ident)
        # A stream's opening (history bounds, lease: pipelines) meets them too.
        stream_url = f"{api.url}/api/v1/stream/notifications"
        with httpx.stream("GET", stream_url, headers=headers, timeout=10) as stream:
            assert stream.status_code == 200
    finally:
        client.close()


async def test_the_same_new_users_opening_on_two_processes_at_once_all_get_their_streams(
    start_api, token
):
    """Two processes create the same never-seen users in batches at the same moment (the
    crowd reconnecting after a deploy, spread over the fleet): every stream opens, none waits
    on the other process's batch (on PostgreSQL, batches in different orders would deadlock)."""
    servers = [start_api(), start_api()]
    run = uuid.uuid4().hex[:8]
    users = [f"twin{run}n{i}" for i in range(150)]
    conns = [
        RawStream(int(s.url.rsplit(":", 1)[1]), u, token(u))
        for s, order in zip(servers, (users, users[::-1]), strict=True)
        for u in order
    ]
    try:
        await asyncio.gather(*(c.open() for c in conns))
        assert [c.status for c in conns] == [200] * len(conns)
        await asyncio.wait_for(asyncio.gather(*(c.opened.wait() for c in conns)), 60)
        with session_scope(get_settings().database_url) as session:
            found = set(session.scalars(select(User.id).where(User.id.in_(users))))
        assert found == set(users)
    finally:
        for c in conns:
            c.close()
