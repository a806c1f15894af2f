"""Values that would break events: a parameter like ``1e-70000`` (70,000 characters stored and
sent) is refused with 422; an event that still cannot be published (too large) is never dropped
silently: a log line, a metric, and the outbox keeps it."""

from __future__ import annotations

import logging
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from models import OutboxEvent, enqueue, session_scope
from models.outbox import REFUSED, prune_outbox
from tests.ops.metrics_support import scrape, value
from tests.support import sse


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("1e-70000", "decimal places"),
        ("1e-1000000", "decimal places"),
        ("0.0000000000001", "decimal places"),
        (1e-20, "decimal places"),
        ("0.1234567890123", "decimal places"),
        ("1.0000000000000000000001", "decimal places"),
    ],
)
async def test_parameter_values_with_too_many_digits_are_refused(
    api, token, user, make_file, raw, why
):
    file_id = make_file(user)
    headers = {"Authorization": f"Bearer {token(user)}"}
    base = f"{api.url}/api/v1/files/{file_id}"
    async with (
        httpx.AsyncClient(timeout=10) as client,
        sse(f"{api.url}/api/v1/stream/files/{file_id}", token(user)) as stream,
    ):
        refused = await client.put(
            f"{base}/parameters/growth_rate", json={"value": raw}, headers=headers
        )
        assert refused.status_code == 422, refused.text
        assert why in refused.json()["detail"]
        # Nothing changed: the next good value has no previous one, and is the one stored.
        good = await client.put(
            f"{base}/parameters/growth_rate", json={"value": "0.050000"}, headers=headers
        )
        assert good.status_code == 200, good.text
        event = await stream.next_event()
        assert event.event == "parameter_update"
        assert event.envelope["data"]["value"] == "0.05"
        assert event.envelope["data"]["previous"] is None
        dashboard = (await client.get(f"{base}/dashboard", headers=headers)).json()
        assert dashboard["parameters"] == {"growth_rate": "0.05"}


def test_the_precision_bound_keeps_real_rates(api, token, user, make_file):
    file_id = make_file(user)
    headers = {"Authorization": f"Bearer {token(user)}"}
    base = f"{api.url}/api/v1/files/{file_id}"
    for raw in ("0.123456789012", "1e-12", "-0.5", "10", "0.25000000000000000"):
        r = httpx.put(
            f"{base}/parameters/growth_rate", json={"value": raw}, headers=headers, timeout=10
        )
        assert r.status_code == 200, (raw, r.text)


def test_an_unpublishable_event_is_logged_counted_and_kept(api, env, token, user, caplog):
    url = env["FINRT_DATABASE_URL"]
    before = value(scrape(api.url), "finrt_outbox_refused_events")
    channel = f"user:{user}"
    with caplog.at_level(logging.ERROR, logger="finrt.outbox"):
        with session_scope(url) as session:
            # Over FINRT_MAX_EVENT_BYTES (64 KB): published after commit, refused by Redis' side.
            row = enqueue(session, channel, "big_report", {"pad": "x" * 100_000})
            session.flush()
            row_id = row.id
    assert any(
        f"outbox row {row_id} (big_report on {channel}) refused for good" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    assert value(scrape(api.url), "finrt_outbox_refused_events") == before + 1
    # The outbox keeps it, even past the pruning age of published rows.
    prune_outbox(url, older_than=timedelta(0))
    with session_scope(url) as session:
        kept = session.get(OutboxEvent, row_id)
        assert kept is not None and kept.event_id == REFUSED
        assert len(kept.data) > 100_000
        others = session.scalars(
            sa.select(OutboxEvent).where(OutboxEvent.channel == channel, OutboxEvent.id != row_id)
        )
        assert list(others) == []
    history = httpx.get(
        f"{api.url}/api/v1/events/{channel}",
        headers={"Authorization": f"Bearer {token(user)}"},
        timeout=10,
    )
    assert history.json()["events"] == []
