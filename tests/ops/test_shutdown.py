"""Graceful shutdown: SIGTERM ends every open stream with a short retry hint, the process exits
at once, and every client resumes on another process without losing an event."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import httpx
import pytest

from api.app import SHUTDOWN_RETRY_MS
from streams.publish import publish
from tests.support import Received, sse

pytestmark = pytest.mark.timeout(120)

USERS, STREAMS_PER_USER = 10, 10  # 100 streams; under the per-user limit of 20


async def test_sigterm_with_100_open_streams_exits_in_time_and_clients_resume_elsewhere(
    start_api, token
):
    first_api, second_api = start_api(), start_api()
    users = [f"shut{uuid.uuid4().hex[:8]}{i}" for i in range(USERS)]
    limits = httpx.Limits(max_connections=4 * USERS * STREAMS_PER_USER)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None), limits=limits) as client:
        async with contextlib.AsyncExitStack() as opened:
            streams = []
            for user in users:
                for _ in range(STREAMS_PER_USER):
                    stream = await opened.enter_async_context(
                        sse(
                            f"{first_api.url}/api/v1/stream/notifications",
                            token(user),
                            client=client,
                        )
                    )
                    streams.append((user, stream))
            before = {u: publish(f"user:{u}", "job_progress", {"n": 0}) for u in users}
            for user, stream in streams:
                assert (await stream.next_event()).id == before[user]

            stopping = asyncio.create_task(asyncio.to_thread(first_api.stop))
            # Published while the first process shuts down and before anyone reconnects.
            meanwhile = {
                u: [publish(f"user:{u}", "job_progress", {"n": n}) for n in (1, 2, 3)]
                for u in users
            }
            took = await stopping
            assert took < 5, f"the API took {took:.1f} s to exit"

            seen: dict[int, list[str]] = {}
            for index, (_, stream) in enumerate(streams):
                frames = await stream.until_closed(timeout=10)
                seen[index] = [f.id for f in frames if isinstance(f, Received) and f.id]
                assert stream.retry == SHUTDOWN_RETRY_MS, "no final retry hint"
        assert "closing 100 open streams" in first_api.log()

        async with contextlib.AsyncExitStack() as reopened:
            resumed = []
            for index, (user, stream) in enumerate(streams):
                again = await reopened.enter_async_context(
                    sse(
                        f"{second_api.url}/api/v1/stream/notifications",
                        token(user),
                        last_event_id=stream.last_id,
                        client=client,
                    )
                )
                resumed.append((index, user, again))
            for index, user, again in resumed:
                missing = len(meanwhile[user]) - len(seen[index])
                got = [e.id for e in await again.events(missing, timeout=10)]
                assert seen[index] + got == meanwhile[user], "an event was lost or repeated"
            live = {u: publish(f"user:{u}", "job_progress", {"n": 4}) for u in users}
            for _, user, again in resumed:
                assert (await again.next_event()).id == live[user]
