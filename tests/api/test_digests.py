"""Digests against a real server: a burst of one group becomes one notification that counts
it, announced once as new (one toast) and then by a bounded number of updates; a later window
starts a new one; nothing critical or urgent is ever merged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest

from core.settings import get_settings
from models import session_scope
from services.digests import UPDATE_SECONDS, announce_pending
from tests.support import sse
from workers.processing import quality_digest_title

TITLE = "{count} data-quality issues in fy2025.csv"


@pytest.fixture
def window(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A one-second digest window in this process (where the producers run)."""
    monkeypatch.setenv("FINRT_DIGEST_WINDOW_SECONDS", "1")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def problem(notify: Any, user: str, line: int, group: str = "file:7") -> str:
    return notify(
        user,
        f"line {line} refused in fy2025.csv",
        type="data_quality_issue",
        message=f"line {line}: not a number",
        data={"file_id": 7, "line": line},
        group=group,
        digest_title=TITLE,
    )


async def drain(tab: Any, quiet: float = 1.5) -> list[Any]:
    got = []
    while True:
        try:
            got.append(await tab.next_event(quiet))
        except TimeoutError:
            return got


async def test_fifty_problems_in_one_window_are_one_notification_counting_fifty(
    stream_url, token, notify, inbox, user
):
    me = inbox(user)
    async with sse(stream_url, token(user)) as tab:
        started = time.monotonic()
        ids = {problem(notify, user, line) for line in range(1, 51)}
        elapsed = time.monotonic() - started
        # The first of the burst is delivered at once, as any notification.
        first = await tab.next_event(5)
        assert first.event == "notification"
        assert first.envelope["data"]["count"] == 1
        assert first.envelope["data"]["title"] == "line 1 refused in fy2025.csv"
        # The beat's inbox tick announces what the last update left out.
        with session_scope() as session:
            announce_pending(session, now=datetime.now(UTC) + timedelta(seconds=5))
        rest = await drain(tab)
    assert ids == {first.envelope["data"]["id"]}
    assert [e.event for e in rest] == ["notification_updated"] * len(rest)
    # Bounded: at most one per second of the burst, and the tick's one.
    assert 1 <= len(rest) <= elapsed / UPDATE_SECONDS + 2
    last = rest[-1].envelope["data"]
    assert (last["id"], last["count"]) == (first.envelope["data"]["id"], 50)
    assert last["title"] == "50 data-quality issues in fy2025.csv"
    assert last["message"] == "line 50: not a number"
    assert last["counts"]["unread"] == 1
    # The event fits its published JSON Schema.
    schema = (await me.client.get("/api/v1/schemas/events.json")).json()
    jsonschema.Draft202012Validator(schema).validate(rest[-1].envelope)
    page = await me.page()
    assert [(n["count"], n["title"]) for n in page["notifications"]] == [
        (50, "50 data-quality issues in fy2025.csv")
    ]
    assert page["unread_count"] == 1
    # Nothing left to announce: a later tick publishes nothing more.
    with session_scope() as session:
        assert announce_pending(session, now=datetime.now(UTC) + timedelta(seconds=10)) == 0


async def test_two_windows_give_two_notifications(window, stream_url, token, notify, inbox, user):
    me = inbox(user)
    async with sse(stream_url, token(user)) as tab:
        first = {problem(notify, user, line) for line in range(3)}
        await asyncio.sleep(1.3)
        second = {problem(notify, user, line) for line in range(3, 5)}
        with session_scope() as session:
            announce_pending(session, now=datetime.now(UTC) + timedelta(seconds=5))
        got = await drain(tab)
    assert len(first) == len(second) == 1 and first != second
    assert [e.envelope["data"]["id"] for e in got if e.event == "notification"] == [
        *first,
        *second,
    ]
    page = await me.page()
    assert [n["count"] for n in page["notifications"]] == [2, 3]


async def test_a_read_digest_that_grows_is_unread_again(stream_url, token, notify, inbox, user):
    me = inbox(user)
    digest = problem(notify, user, 1)
    assert (await me.read(digest)).status_code == 200
    assert await me.unread_count() == 0
    assert problem(notify, user, 2) == digest
    assert await me.unread_count() == 1


@pytest.mark.parametrize(
    ("type", "priority"), [("error_alert", "high"), ("data_quality_issue", "urgent")]
)
async def test_critical_and_urgent_ones_are_never_merged(
    stream_url, token, notify, inbox, user, type, priority
):
    async with sse(stream_url, token(user)) as tab:
        ids = [notify(user, "outage", type=type, priority=priority, group="same") for _ in range(3)]
        got = await tab.events(3, 5)
    assert len(set(ids)) == 3
    assert [e.event for e in got] == ["notification"] * 3
    assert [n["count"] for n in (await inbox(user).page())["notifications"]] == [1, 1, 1]


async def test_a_producer_that_runs_again_with_its_dedupe_key_does_not_grow_the_digest_again(
    stream_url, token, notify, inbox, user
):
    """A retried task (or ``finrt notify --dedupe-key`` run twice) whose notification joined a
    digest counts once: the second run returns the digest and publishes nothing."""
    me = inbox(user)

    def run(key: str, line: int) -> str:
        return notify(
            user,
            f"line {line} refused",
            type="data_quality_issue",
            message=f"line {line}: not a number",
            group="file:7",
            digest_title=TITLE,
            dedupe_key=key,
        )

    digest = run("check:1", 1)
    async with sse(stream_url, token(user)) as tab:
        assert run("check:2", 2) == digest
        with session_scope() as session:
            announce_pending(session, now=datetime.now(UTC) + timedelta(seconds=5))
        grown = await tab.next_event(5)
        assert (grown.event, grown.envelope["data"]["count"]) == ("notification_updated", 2)
        for _ in range(3):  # the producer of check:2 retried, and the first one too
            assert run("check:2", 2) == digest
            assert run("check:1", 1) == digest
        with session_scope() as session:
            announce_pending(session, now=datetime.now(UTC) + timedelta(seconds=10))
        await tab.no_event(1)
    page = await me.page()
    assert [(n["id"], n["count"]) for n in page["notifications"]] == [(digest, 2)]
    assert page["notifications"][0]["title"] == "2 data-quality issues in fy2025.csv"


async def test_one_producer_run_many_times_at_once_makes_one_notification_counting_one(
    notify, inbox, user
):
    """Twenty runs of one producer (one dedupe key) at the same moment: the first creates the
    digest, the others wait for it and find their key on it; none joins it as a second."""
    from concurrent.futures import ThreadPoolExecutor

    def run(_: int) -> str:
        return notify(
            user, "line 1 refused", type="data_quality_issue", group="file:7", dedupe_key="k"
        )

    with ThreadPoolExecutor(10) as pool:
        ids = set(pool.map(run, range(20)))
    page = await inbox(user).page()
    assert len(ids) == 1
    assert [(n["id"], n["count"]) for n in page["notifications"]] == [(ids.pop(), 1)]


@pytest.mark.parametrize("name", ["{count}.csv", "q{}.csv", "{0} and {title}.csv", "%s %d.csv"])
async def test_a_file_name_with_braces_stays_as_it_is_in_its_digest_title(
    stream_url, token, notify, inbox, user, name
):
    """The worker puts the file's name in the digest title's template; only the template's own
    ``{count}`` is replaced, never braces of the name."""
    me = inbox(user)

    def issue(line: int) -> str:
        return notify(
            user,
            f"line {line} refused in {name}",
            type="data_quality_issue",
            message=f"line {line}: not a number",
            group="file:braces",
            digest_title=quality_digest_title(name),
        )

    digest = issue(1)
    assert issue(2) == issue(3) == digest
    page = await me.page()
    assert [(n["count"], n["title"]) for n in page["notifications"]] == [
        (3, f"3 data-quality issues in {name}")
    ]
