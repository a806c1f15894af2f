"""Change events never lie: a change committed while Redis was down is published by the
sweeper once Redis is back, exactly once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import redis
from sqlalchemy import select

from domain.sample import sample_csv
from finrt.embedded_redis import EmbeddedRedis
from models import OutboxEvent, session_scope
from streams.keys import history_key
from tests.fixtures_workers import (
    assert_quiet,
    auth,
    events_until,
    finished,
    upload_csv,
    wait_for,
)
from tests.support import make_token, sse


def _outbox(url: str, channel: str) -> list[tuple[str, bool]]:
    with session_scope(url) as session:
        rows = session.scalars(
            select(OutboxEvent).where(OutboxEvent.channel == channel).order_by(OutboxEvent.id)
        )
        return [(row.type, row.published_at is not None) for row in rows]


async def _ready(client: httpx.AsyncClient, base: str, timeout: float = 20) -> None:
    """Until the API sees Redis again (its hub reconnects with backoff)."""
    deadline = time.monotonic() + timeout
    while (await client.get(f"{base}/readyz")).status_code != 200:
        assert time.monotonic() < deadline, "the API did not reconnect to Redis"
        await asyncio.sleep(0.2)


async def test_a_change_committed_while_redis_was_down_is_published_once_when_it_returns(
    isolated_env, start_isolated_api, start_worker, user
):
    server = EmbeddedRedis().start()
    try:
        env = isolated_env(redis_url=server.url, outbox_sweep_seconds=1, outbox_sweep_age_seconds=1)
        worker = start_worker(env, wait=False)
        start_worker(env, beat=True, wait=False)
        api = start_isolated_api(env)
        worker.wait_ready()
        base, headers, token = api.url, auth(env, user), make_token(env, user)
        async with httpx.AsyncClient(timeout=30) as client:
            file_id = (await upload_csv(client, base, headers, sample_csv(4))).json()["file_id"]
            await wait_for(client, f"{base}/api/v1/files/{file_id}", headers, finished)
            channel = f"file:{file_id}"
            # The worker publishes right after its commit; wait until it has.
            deadline = time.monotonic() + 10
            while not all(p for _, p in _outbox(env["FINRT_DATABASE_URL"], channel)):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)

            server.stop()
            put = await client.put(
                f"{base}/api/v1/files/{file_id}/parameters/tax_rate",
                json={"value": "0.4"},
                headers=headers,
            )
            assert put.status_code == 200, put.text  # committed: Redis is not in the way
            pending = [t for t, p in _outbox(env["FINRT_DATABASE_URL"], channel) if not p]
            assert pending == [
                "parameter_update",
                "metric_update",
                "metric_update",
                "chart_data_update",
            ]

            server.start()  # same port, empty: this Redis keeps nothing
            await _ready(client, base)
            async with sse(f"{base}/api/v1/stream/files/{file_id}", token) as stream:
                events = await events_until(stream, lambda s: len(s) == 4, timeout=40)
                # Several sweeps later: nothing published twice.
                await assert_quiet(stream, 3)

        assert [e.event for e in events] == pending
        assert events[0].envelope["data"]["value"] == "0.4"
        assert all(published for _, published in _outbox(env["FINRT_DATABASE_URL"], channel))
        client_ = redis.Redis.from_url(server.url)
        try:
            stored: Any = client_.xrange(history_key(env["FINRT_REDIS_PREFIX"], channel))
        finally:
            client_.close()
        assert [entry_id.decode() for entry_id, fields in stored if b"e" in fields] == [
            e.id for e in events
        ]
    finally:
        server.stop()
