"""FINRT_MAX_STREAMS_PER_USER across API processes (leases in Redis), and `finrt api --workers`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time

import httpx
import pytest
import redis

from finrt.embedded_redis import EmbeddedRedis
from tests.support import redis_calls, sse

LEASE = 3.0


async def _status(url: str, token: str) -> int:
    try:
        async with sse(url, token):
            return 200
    except httpx.HTTPStatusError as exc:
        return exc.response.status_code


async def test_the_stream_limit_counts_across_processes_and_a_killed_one_frees_its_slots(
    start_api, token, user
):
    one, two = (
        start_api(max_streams_per_user="3", stream_lease_seconds=str(LEASE)) for _ in range(2)
    )
    path = "/api/v1/stream/notifications"
    async with contextlib.AsyncExitStack() as stack:
        for server in (one, one, two):
            await stack.enter_async_context(sse(server.url + path, token(user)))
        # The fourth stream, on either process, is over the user's limit.
        for server in (one, two):
            async with httpx.AsyncClient(timeout=10) as client:
                r = await client.get(
                    server.url + path, headers={"Authorization": f"Bearer {token(user)}"}
                )
            assert r.status_code == 429
            assert "all servers" in r.json()["detail"]
        assert await _status(two.url + path, token(f"{user}x")) == 200  # others are not counted
        # Leases outlive a few renewals while their process lives.
        await asyncio.sleep(LEASE * 1.5)
        assert await _status(two.url + path, token(user)) == 429
        one.kill()  # its two streams end without a word to Redis
        started = time.monotonic()
        deadline = started + LEASE * 10  # generous on a loaded machine
        opened = 0
        while opened < 2 and time.monotonic() < deadline:
            if await _status(two.url + path, token(user)) == 200:
                opened += 1  # each closes at once, so one free slot serves every retry
                await stack.enter_async_context(sse(two.url + path, token(user)))
            else:
                await asyncio.sleep(0.2)
        assert opened == 2


async def test_closing_a_stream_frees_its_slot_at_once(start_api, token, user):
    server = start_api(max_streams_per_user="1", stream_lease_seconds="60")
    path = server.url + "/api/v1/stream/notifications"
    for _ in range(3):
        async with sse(path, token(user)):
            assert await _status(path, token(user)) == 429
        deadline = time.monotonic() + 10
        while await _status(path, token(user)) != 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout
    return [int(p) for p in out.split()]


async def test_api_workers_serve_one_port_and_stop_on_sigterm(start_api, token, user):
    server = start_api(api_workers="2", max_streams_per_user="2", stream_lease_seconds="30")
    # uvicorn's supervisor: two processes serving the port (plus its own helper, if any).
    deadline = time.monotonic() + 20
    while len(_children(server.pid)) < 2:
        assert time.monotonic() < deadline, "fewer than two workers"
        await asyncio.sleep(0.2)
    path = server.url + "/api/v1/stream/notifications"
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(2):  # wherever the kernel sends them, the limit holds
            await stack.enter_async_context(sse(path, token(user)))
        statuses = [await _status(path, token(user)) for _ in range(4)]
        assert statuses == [429] * 4
    workers = _children(server.pid)
    os.kill(server.pid, signal.SIGTERM)
    assert server.process is not None
    server.process.wait(30)
    deadline = time.monotonic() + 30
    while alive := [pid for pid in workers if _running(pid)]:
        assert time.monotonic() < deadline, f"workers left running: {alive}"
        await asyncio.sleep(0.2)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_api_workers_must_be_a_count_or_auto(env, value):
    from tests.support import BIN

    done = subprocess.run(
        [str(BIN / "finrt"), "api", "--workers", value], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "--workers must be a whole number of 1 or more, or auto" in done.stderr


async def test_leases_are_renewed_in_one_call_per_interval_whatever_the_streams(
    start_api, token, user
):
    """Twenty users' streams on one process: each interval renews every lease with one script
    call (redis-py costs ~30 µs a command: 10,000 streams would otherwise take 0.3 s of the
    process every few seconds), and the leases live on while the streams do."""
    own = EmbeddedRedis().start()
    try:
        server = start_api(redis_url=own.url, stream_lease_seconds="1.5")  # renews every 0.5 s
        path = server.url + "/api/v1/stream/notifications"
        users = [f"{user}-{i}" for i in range(20)]
        async with contextlib.AsyncExitStack() as stack:
            for who in [*users, users[0]]:
                await stack.enter_async_context(sse(path, token(who)))
            commands = await asyncio.to_thread(redis_calls, own.url, 3.0)
            client = redis.Redis.from_url(own.url)
            try:
                held = [client.zcard(k) for k in client.scan_iter(match="*:streams:{user:*")]
            finally:
                client.close()
        renewals = [c for c in commands if ":streams:{user:" in c]
        # About 6 intervals in 3 s: one call each, not one per user (120).
        assert 2 <= len(renewals) <= 10, renewals
        assert all(c.startswith("EVALSHA") for c in renewals), renewals
        # 3 s is twice the lease: without renewals they would be gone.
        assert sorted(held) == [1] * 19 + [2]
    finally:
        own.stop()
