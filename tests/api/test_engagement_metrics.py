"""Notification metrics against real servers: created, delivered live, seen, read, acted on and
archived, by type, fleet-wide from Redis; a muted type is not counted; a notification nobody
had a stream open for is created but not delivered."""

from __future__ import annotations

import asyncio
import time

from services.notification_actions import link
from tests.ops.metrics_support import Samples, scrape, value
from tests.support import sse

KINDS = ("created", "delivered", "seen", "read", "acted", "archived")


def figures(samples: Samples, type: str) -> dict[str, float]:
    return {k: value(samples, f"finrt_notifications_{k}_total", type=type) for k in KINDS}


async def test_each_step_of_a_notification_is_counted_once_by_type(
    api, stream_url, token, notify, inbox, user
):
    me = inbox(user)
    nobody_listening = f"{user}x"
    before = figures(scrape(api.url), "report_ready")
    muted_before = figures(scrape(api.url), "collaboration_invite")
    body = {"types": {"collaboration_invite": {"inbox": False, "toast": False}}}
    async with sse(stream_url, token(user)) as tab:
        response = await me.client.put(
            "/api/v1/notifications/preferences", json=body, headers=me.headers
        )
        assert response.status_code == 200
        assert (await tab.next_event(5)).event == "preferences_updated"
        first = notify(user, "one", actions=[link("Open", "/x")])
        second = notify(user, "two")
        notify(user, "muted", type="collaboration_invite")
        got = await tab.events(2, 5)
        assert [e.event for e in got] == ["notification", "notification"]
        notify(nobody_listening, "unheard")
        seen = await me.client.post(
            "/api/v1/notifications/seen", json={"up_to": second}, headers=me.headers
        )
        assert seen.status_code == 200
        assert (await me.read(first)).status_code == 200
        assert (await me.read(first)).status_code == 200  # again: not counted again
        done = await me.post(f"/api/v1/notifications/{first}/actions/0")
        assert done.status_code == 200, done.text
        assert (await me.post(f"/api/v1/notifications/{second}/archive")).status_code == 200

    expected = {"created": 3, "delivered": 2, "seen": 2, "read": 1, "acted": 1, "archived": 1}
    # The hub adds its deliveries to Redis once per tick (a few seconds).
    deadline = time.monotonic() + 30
    while True:
        after = figures(scrape(api.url), "report_ready")
        delta = {k: after[k] - before[k] for k in KINDS}
        if delta == expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert delta == expected
    muted_after = figures(scrape(api.url), "collaboration_invite")
    assert muted_after == muted_before
