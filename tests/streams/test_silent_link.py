"""A Redis link that dies without a word (a NAT or load balancer dropping an idle connection, a
partition): the API reaches Redis through a small TCP proxy that, on command, stops forwarding
on the hub's pub/sub connections without closing them, while a producer publishes to Redis
directly. The hub notices within FINRT_REDIS_HEALTH_SECONDS, reconnects, fills the gap from
history, and says so in readiness and metrics meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from urllib.parse import urlparse

import httpx
import pytest
import redis

from core.settings import get_settings
from streams.publish import Publisher
from tests.conftest import REDIS_URL
from tests.ops.metrics_support import scrape, value
from tests.support import sse

pytestmark = pytest.mark.timeout(120)

HUB_NAME = b"finrt-hub"  # the hub names its link (CLIENT SETNAME): how the proxy tells it apart


class _Link:
    def __init__(self) -> None:
        self.hub = False
        self.silent = False


class SilentProxy:
    """Forwards TCP to Redis. ``silence_hub_links()``: the hub's connections open now go
    silent (bytes swallowed both ways, sockets left open); with ``new_hub_links_silent`` set,
    so do the hub's next ones (a partition), until it is cleared."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.links: list[_Link] = []
        self.new_hub_links_silent = False
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    def start(self) -> SilentProxy:
        """Runs on an event loop of its own, in a thread: the test's loop blocks at times."""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0), self.loop
        ).result(10)
        return self

    def stop(self) -> None:
        async def _close() -> None:
            assert self.server is not None
            self.server.close()
            for task in list(self._tasks):
                task.cancel()

        asyncio.run_coroutine_threadsafe(_close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def silence_hub_links(self) -> None:
        for link in self.links:
            if link.hub:
                link.silent = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        link = _Link()
        self.links.append(link)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(
                self._pump(reader, up_writer, link, from_client=True),
                self._pump(up_reader, writer, link, from_client=False),
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        link: _Link,
        from_client: bool,
    ) -> None:
        try:
            while data := await src.read(65536):
                if from_client and HUB_NAME in data:
                    link.hub = True
                    link.silent = link.silent or self.new_hub_links_silent
                if link.silent:
                    continue  # swallowed: the peer hears nothing, the socket stays open
                dst.write(data)
                await dst.drain()
        finally:
            with contextlib.suppress(OSError):
                dst.close()


async def _until(check, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _ready(url: str) -> tuple[int, dict]:
    response = httpx.get(f"{url}/readyz", timeout=5)
    return response.status_code, response.json()


async def test_a_silently_dead_link_is_detected_reconnected_and_reported(start_api, token, user):
    parsed = urlparse(REDIS_URL)
    proxy = SilentProxy(parsed.hostname or "127.0.0.1", parsed.port or 6379).start()
    client = redis.Redis.from_url(REDIS_URL)
    publisher = Publisher(client, get_settings().redis_prefix)
    channel = f"user:{user}"
    try:
        api = start_api(redis_url=proxy.url, redis_health_seconds="1")
        async with sse(f"{api.url}/api/v1/stream/notifications", token(user)) as stream:
            first = publisher.publish(channel, "job_progress", {"n": 0})
            assert (await stream.next_event(timeout=15)).id == first
            assert value(scrape(api.url), "finrt_redis_pubsub_unresponsive_total") == 0

            # A NAT drops the idle link: nothing flows, nothing closes.
            proxy.silence_hub_links()
            missed = [publisher.publish(channel, "job_progress", {"n": n}) for n in (1, 2)]
            got = await stream.events(2, timeout=30)  # only once the hub notices and refills
            assert [e.id for e in got] == missed
            samples = scrape(api.url)
            assert value(samples, "finrt_redis_pubsub_unresponsive_total") >= 1
            assert value(samples, "finrt_redis_reconnects_total") >= 1
            assert value(samples, "finrt_redis_pubsub_connected") == 1

            # A partition: the link and every new one stay silent. Not ready meanwhile.
            proxy.new_hub_links_silent = True
            proxy.silence_hub_links()
            during = publisher.publish(channel, "job_progress", {"n": 3})
            await _until(lambda: _ready(api.url)[0] == 503, what="readyz 503")
            _, body = _ready(api.url)
            assert body["checks"]["redis"] == "pub/sub link down"
            assert value(scrape(api.url), "finrt_redis_pubsub_connected") == 0
            await stream.no_event(0.5)

            # Healed: ready again, the gap filled from history, then live as before.
            proxy.new_hub_links_silent = False
            await _until(lambda: _ready(api.url)[0] == 200, what="readyz 200")
            assert (await stream.next_event(timeout=30)).id == during
            live = publisher.publish(channel, "job_progress", {"n": 4})
            assert (await stream.next_event(timeout=15)).id == live
        assert "unresponsive" in api.log()
    finally:
        proxy.stop()
        client.close()
