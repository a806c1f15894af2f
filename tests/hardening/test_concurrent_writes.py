"""Issue 21, item 1: hundreds of concurrent writes of every kind against one API process.

Writers share files, upload, request reports, share files, and read, dismiss and mark-all-read
the notifications the sharing gave; a bystander reads its inbox all along. Every request must
succeed, and the event each one promises (``parameter_update``, ``notification``,
``notification_read``, ``notification_dismissed``, ``notifications_read_all``,
``report_status``) must already be in Redis when its response arrives: publishing after commit
must not wait on the connection pool (before the fix, ~16 writers on SQLite and ~30 on
PostgreSQL deadlocked the pool on itself for 30 s). The bystander's latency is reported, not
asserted (the machine is shared).

``make test`` sends WRITERS clients through a few rounds each; ``make soak`` keeps them writing
for a minute (``FINRT_SOAK_WRITES_SECONDS``). Runs on SQLite or, with FINRT_TEST_DATABASE_URL,
on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest
import redis.asyncio as aioredis

from streams.history import event_from_entry
from streams.keys import history_key
from tests.fixtures_workers import WorkerProcess
from tests.hardening import figures
from tests.support import ApiServer, make_token

pytestmark = [pytest.mark.hardening, pytest.mark.timeout(figures.scaled(600, 1200))]

WRITERS = int(figures.scaled(150, 300))
FILES = 10
ROUNDS = 1  # make test: each writer's rounds
SECONDS = float(os.environ.get("FINRT_SOAK_WRITES_SECONDS", 60))
CSV = (
    b"period,statement,line_item,amount,currency\n"
    b"2026-01,income,revenue,1000.00,USD\n2026-01,income,cogs,400.00,USD\n"
    b"2026-02,income,revenue,1100.00,USD\n2026-02,income,cogs,420.00,USD\n"
)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Tally:
    requests: int = 0
    promised: int = 0  # responses that promise an event
    published: int = 0  # ... whose event was in Redis when the response arrived
    server_errors: int = 0
    failures: list[str] = field(default_factory=list)
    uploads: list[tuple[str, int]] = field(default_factory=list)


class Writers:
    """The writers' shared client, tokens and the Redis the events are looked up in."""

    def __init__(self, base: str, env: dict[str, str], run: str) -> None:
        self.env, self.run = env, run
        # A connection per request: a reused one may meet the server's keep-alive close (a
        # client error, not the server's) on a machine this busy.
        limits = httpx.Limits(max_connections=WRITERS + 20, max_keepalive_connections=0)
        self.http = httpx.AsyncClient(base_url=base, timeout=120, limits=limits)
        self.redis = aioredis.Redis.from_url(env["FINRT_REDIS_URL"], max_connections=WRITERS + 20)
        self.prefix = env["FINRT_REDIS_PREFIX"]
        self.tokens: dict[str, str] = {}
        self.tally = Tally()

    def headers(self, user: str) -> dict[str, str]:
        if user not in self.tokens:
            self.tokens[user] = make_token(self.env, user)
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    async def call(self, method: str, path: str, user: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, path, headers=self.headers(user), **kwargs)
        self.tally.requests += 1
        if response.status_code >= 500:
            self.tally.server_errors += 1
        if response.status_code >= 300:
            self.tally.failures.append(f"{method} {path}: {response.status_code} {response.text}")
        return response

    async def published(
        self, channel: str, type: str, match: Callable[[dict[str, Any]], bool]
    ) -> bool:
        """Whether the channel's history holds a matching event now (newest first)."""
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            await self.redis.xrevrange(history_key(self.prefix, channel), count=3000),
        )
        for entry_id, fields in entries:
            if b"e" not in fields:
                continue
            event = event_from_entry(entry_id, fields).as_dict()
            if event["type"] == type and match(event["data"]):
                return True
        return False

    async def promise(
        self, what: str, channel: str, type: str, match: Callable[[dict[str, Any]], bool]
    ) -> None:
        self.tally.promised += 1
        if await self.published(channel, type, match):
            self.tally.published += 1
        else:
            self.tally.failures.append(f"{what}: no {type} on {channel} when it answered")


async def one_round(w: Writers, owner: str, file_id: int, n: int) -> None:
    """One of each write, as one user of a shared file and one invitee would make them."""
    invitee = f"inv-{w.run}-{n}"
    share = await w.call(
        "POST", f"/api/v1/files/{file_id}/members", owner, json={"user_id": invitee}
    )
    if share.status_code == 201:
        await w.promise(
            "share", f"user:{invitee}", "notification", lambda d: d.get("type") is not None
        )
    value = f"0.{n:07d}1"  # unique, canonical (no trailing zero)
    put = await w.call(
        "PUT", f"/api/v1/files/{file_id}/parameters/growth_rate", owner, json={"value": value}
    )
    if put.status_code == 200:
        await w.promise(
            "parameter", f"file:{file_id}", "parameter_update", lambda d: d["value"] == value
        )
    listed = await w.call("GET", "/api/v1/notifications", invitee)
    found = listed.json().get("notifications", []) if listed.status_code == 200 else []
    ids = [item["id"] for item in found]
    if ids:
        read = await w.call("POST", f"/api/v1/notifications/{ids[0]}/read", invitee)
        if read.status_code == 200:
            await w.promise(
                "read", f"user:{invitee}", "notification_read", lambda d: d["id"] == ids[0]
            )
        gone = await w.call("POST", f"/api/v1/notifications/{ids[0]}/dismiss", invitee)
        if gone.status_code == 200:
            await w.promise(
                "dismiss",
                f"user:{invitee}",
                "notification_dismissed",
                lambda d: d["id"] == ids[0],
            )
    else:
        w.tally.failures.append(f"{invitee} has no notification after being invited")
    second = f"inv2-{w.run}-{n}"  # its invite is unread: marking all has one to mark
    await w.call("POST", f"/api/v1/files/{file_id}/members", owner, json={"user_id": second})
    marked = await w.call("POST", "/api/v1/notifications/mark-all-read", second)
    if marked.status_code == 200:
        await w.promise(
            "mark-all", f"user:{second}", "notifications_read_all", lambda d: d["count"] == 1
        )
    report = await w.call("POST", f"/api/v1/files/{file_id}/reports", owner, json={"format": "csv"})
    if report.status_code == 202:
        rid = report.json()["report_id"]
        await w.promise(
            "report",
            f"file:{file_id}",
            "report_status",
            lambda d: d["report_id"] == rid and d["status"] in ("queued", "running", "ready"),
        )
    if n % 5 == 0:  # uploads are the worker's load too: one round in five
        up = await w.call(
            "POST",
            "/api/v1/files",
            owner,
            files={"file": (f"w{n}.csv", CSV, "text/csv")},
        )
        if up.status_code == 202:
            w.tally.uploads.append((owner, int(up.json()["file_id"])))


async def timed_read(w: Writers, user: str) -> float:
    """One read of the user's inbox; its latency in ms."""
    started = time.perf_counter()
    response = await w.call("GET", "/api/v1/notifications", user)
    assert response.status_code == 200, response.text
    return (time.perf_counter() - started) * 1000


async def bystander(w: Writers, user: str, stop: asyncio.Event, out: list[float]) -> None:
    """Reads its own inbox in a loop, timing each read."""
    while not stop.is_set():
        out.append(await timed_read(w, user))
        await asyncio.sleep(0.05)


async def wait_processed(w: Writers, owner: str, file_id: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = (await w.call("GET", f"/api/v1/files/{file_id}", owner)).json()
        if body["status"] in ("processed", "failed"):
            assert body["status"] == "processed", body
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"file {file_id} not processed in {timeout} s")


@pytest.fixture
def writes_env(worker_env: dict[str, str]) -> dict[str, str]:
    """The session's database, a key prefix (and so a task queue) of the test's own."""
    env = dict(worker_env)
    env["FINRT_REDIS_PREFIX"] = f"{worker_env['FINRT_REDIS_PREFIX']}:cw{uuid.uuid4().hex[:6]}"
    return env


async def test_concurrent_writes_all_publish_before_answering(
    writes_env: dict[str, str],
    start_isolated_api: Callable[[dict[str, str]], ApiServer],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    api = start_isolated_api(writes_env)
    start_worker(writes_env)
    run = uuid.uuid4().hex[:6]
    w = Writers(api.url, writes_env, run)
    try:
        owners = [f"own-{run}-{i}" for i in range(FILES)]
        files: list[int] = []
        for owner in owners:
            up = await w.call("POST", "/api/v1/files", owner, files={"file": ("q.csv", CSV)})
            assert up.status_code == 202, up.text
            files.append(int(up.json()["file_id"]))
        for owner, file_id in zip(owners, files, strict=True):
            await wait_processed(w, owner, file_id)
        reader = f"bystander-{run}"
        idle = [await timed_read(w, reader) for _ in range(40)]
        w.tally = Tally()  # the figures count the load only

        busy: list[float] = []
        stop = asyncio.Event()
        watcher = asyncio.create_task(bystander(w, reader, stop, busy))
        started = time.monotonic()
        counter = iter(range(10**9))

        async def writer(k: int) -> None:
            owner, file_id = owners[k % FILES], files[k % FILES]
            if figures.SOAK:
                while time.monotonic() - started < SECONDS:
                    await one_round(w, owner, file_id, next(counter))
            else:
                for _ in range(ROUNDS):
                    await one_round(w, owner, file_id, next(counter))

        await asyncio.gather(*(writer(k) for k in range(WRITERS)))
        seconds = time.monotonic() - started
        stop.set()
        await watcher
        for owner, file_id in w.tally.uploads:
            await wait_processed(w, owner, file_id)
        tally = w.tally
        figures.record(
            "concurrent-writes",
            clients=WRITERS,
            requests=tally.requests,
            duration_s=round(seconds, 1),
            published_first=f"{tally.published}/{tally.promised}",
            read_idle_p99_ms=round(percentile(idle, 0.99), 1),
            read_p99_ms=round(percentile(busy, 0.99), 1),
            server_errors=tally.server_errors,
        )
        print(
            f"\nconcurrent writes: {WRITERS} writers, {tally.requests} requests in {seconds:.1f} s, "
            f"{tally.published}/{tally.promised} events published before their response, "
            f"{tally.server_errors} 5xx, {len(tally.uploads)} uploads processed; bystander read "
            f"idle p50 {percentile(idle, 0.5):.1f} ms p99 {percentile(idle, 0.99):.1f} ms, "
            f"under load p50 {percentile(busy, 0.5):.1f} ms p99 {percentile(busy, 0.99):.1f} ms "
            f"({len(busy)} reads)"
        )
        assert tally.failures == [], tally.failures[:20]
        assert tally.server_errors == 0
        assert tally.published == tally.promised > WRITERS
        assert busy, "the bystander never got an answer"
    except BaseException:
        print(f"API log {api.log_path}, tail:\n{api.log()[-4000:]}")
        raise
    finally:
        await w.http.aclose()
        await w.redis.aclose()
