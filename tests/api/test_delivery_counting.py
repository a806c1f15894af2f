"""Notification deliveries against two real API processes on one Redis: a notification reaching
a person's streams on both processes (two of them on one) counts once; one created while the
person was away counts when a resuming stream (``Last-Event-ID``) replays it, and once only
however often it is replayed. Each process's first deliveries
(``finrt_hub_notifications_claimed_total``) sum to the fleet-wide
``finrt_notifications_delivered_total``, which every process reports alike."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.ops.metrics_support import scrape, value
from tests.support import sse

TYPE = "scheduled_report"
STREAM = "/api/v1/stream/notifications"


def figures(servers: list[Any], type: str = TYPE) -> tuple[float, list[float]]:
    """(first deliveries summed over the processes, the fleet-wide count each one reports)."""
    scraped = [scrape(s.url) for s in servers]
    claimed = sum(value(s, "finrt_hub_notifications_claimed_total", type=type) for s in scraped)
    fleet = [value(s, "finrt_notifications_delivered_total", type=type) for s in scraped]
    return claimed, fleet


async def counted(
    servers: list[Any], before: tuple[float, list[float]], type: str = TYPE
) -> tuple[float, float]:
    """Deliveries counted since ``before``: (sum of each process's claims, the fleet-wide
    figure), once both agree and have stayed put for three hub ticks (one a second here)."""
    deadline = time.monotonic() + 30
    last: tuple[float, float] | None = None
    steady = 0
    while True:
        claimed, fleet = figures(servers, type)
        now = (claimed - before[0], max(f - b for f, b in zip(fleet, before[1], strict=True)))
        alike = len({f - b for f, b in zip(fleet, before[1], strict=True)}) == 1
        steady = steady + 1 if now == last and alike and now[0] == now[1] else 0
        if steady >= 6 or time.monotonic() > deadline:
            return now
        last = now
        await asyncio.sleep(0.5)


async def test_one_notification_on_streams_of_two_processes_counts_once(
    start_api, token, notify, user
):
    a, b = start_api(), start_api()
    before = figures([a, b])
    bearer = token(user)
    async with (
        sse(a.url + STREAM, bearer) as on_a,
        sse(b.url + STREAM, bearer) as on_b,
        sse(b.url + STREAM, bearer) as again_on_b,
    ):
        ids = [notify(user, f"report {i}", type=TYPE) for i in range(3)]
        for tab in (on_a, on_b, again_on_b):
            got = await tab.events(3, 10)
            assert [(e.event, e.envelope["data"]["id"]) for e in got] == [
                ("notification", i) for i in ids
            ]
        assert await counted([a, b], before) == (3, 3)


async def test_a_notification_created_while_away_counts_when_a_resume_replays_it(
    start_api, token, notify, user
):
    a, b = start_api(), start_api()
    bearer = token(user)
    before = figures([a, b])
    async with sse(a.url + STREAM, bearer) as tab:
        first = notify(user, "while here", type=TYPE)
        got = await tab.next_event(10)
        assert got.envelope["data"]["id"] == first
        position = got.id
    assert await counted([a, b], before) == (1, 1)

    away = notify(user, "while away", type=TYPE)
    assert await counted([a, b], before) == (1, 1)  # nobody had a stream open

    async with sse(b.url + STREAM, bearer, last_event_id=position) as resumed:
        got = await resumed.next_event(10)
        assert (got.event, got.envelope["data"]["id"]) == ("notification", away)
    assert await counted([a, b], before) == (2, 2)

    # Replayed again, on the other process and on both at once: still delivered once.
    async with (
        sse(a.url + STREAM, bearer, last_event_id=position) as one,
        sse(b.url + STREAM, bearer, last_event_id=position) as other,
    ):
        for tab in (one, other):
            assert (await tab.next_event(10)).envelope["data"]["id"] == away
    assert await counted([a, b], before) == (2, 2)
