"""What an idle stream costs the API process in memory, measured from outside: its resident
anonymous memory (RssAnon), the heap that connections take. VmRSS also counts pages of code
and libraries mapped in when a path first runs, which says nothing about connections."""

from __future__ import annotations

import asyncio
import resource
from pathlib import Path

import pytest

from tests.support import make_token

# Two thousand: a step of the heap (a table resized, a new arena) is spread over many.
STREAMS = 2000


def _anon_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon")


async def _open(port: int, token: str) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /api/v1/stream/notifications HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:80]
    return writer


async def _open_many(port: int, tokens: list[str]) -> list[asyncio.StreamWriter]:
    gate = asyncio.Semaphore(200)

    async def one(token: str) -> asyncio.StreamWriter:
        async with gate:
            return await _open(port, token)

    return await asyncio.gather(*(one(t) for t in tokens))


@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2 * STREAMS + 500,
    reason="needs file descriptors for 2,000 client sockets",
)
async def test_an_idle_stream_of_a_distinct_user_costs_under_12_5_kb(env, start_api, user):
    """Each person has a channel of their own: two thousand idle streams of as many users.

    The process holds per connection uvicorn's protocol, parser and request (about 10.8 KB in a
    bare uvicorn app) and our subscriber, channel and lease; docs/performance.md has the
    breakdown. Before the per-connection objects were trimmed it was over 15 KB.

    The server runs without coverage: under `make test --cov` the tracer gives every suspended
    coroutine a full frame object, about 1.5 KB more per stream that production never pays."""
    server = start_api(coverage=False)
    pid = server.pid
    warm = await _open_many(server.port, [make_token(env, f"{user}w{i}") for i in range(200)])
    await asyncio.sleep(0.5)
    before = _anon_kb(pid)
    streams = await _open_many(
        server.port, [make_token(env, f"{user}x{i}") for i in range(STREAMS)]
    )
    await asyncio.sleep(1.0)
    per_stream = (_anon_kb(pid) - before) / STREAMS
    for writer in warm + streams:
        writer.close()
    assert per_stream < 12.5, f"{per_stream:.2f} KB per idle stream"
