"""finrt.client against a real API: the documented example across an API restart (nothing
lost, nothing twice), several channels, async, reset, auth_expired, refusals."""

from __future__ import annotations

import asyncio
import json
import queue
import re
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from finrt.client import (
    AccessRevoked,
    AuthExpired,
    AuthFailed,
    Reset,
    StreamRefused,
    astream,
    stream,
)
from tests.support import ROOT, publish_from_subprocess


def documented_example() -> str:
    text = (ROOT / "docs" / "integrating.md").read_text()
    found = re.search(r"<!-- example:[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert found, "the example block is gone from docs/integrating.md"
    return found.group(1)


class Lines:
    """A subprocess's stdout lines, read in a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        out = process.stdout
        threading.Thread(target=self._read, args=(out,), daemon=True).start()

    def _read(self, out) -> None:
        for line in out:
            self.queue.put(line)

    def take(self, n: int, timeout: float = 30.0) -> list[str]:
        return [self.queue.get(timeout=timeout).rstrip("\n") for _ in range(n)]

    def none_within(self, seconds: float) -> None:
        with pytest.raises(queue.Empty):
            self.queue.get(timeout=seconds)


def test_documented_example_loses_nothing_across_an_api_restart(
    start_api, env, token, user, make_file, tmp_path
):
    api = start_api()
    file_id = make_file(user)
    channels = [f"user:{user}", f"file:{file_id}"]
    script = tmp_path / "example.py"
    script.write_text(documented_example())
    run_env = {
        **env,
        "FINRT_API_URL": api.url,
        "FINRT_CHANNELS": ",".join(channels),
        "FINRT_TOKEN": token(user),
    }
    process = subprocess.Popen(
        [sys.executable, str(script)], env=run_env, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        lines = Lines(process)
        # Live from where it connects: a marker until one arrives says it is connected.
        deadline = time.monotonic() + 30
        while lines.queue.empty() and time.monotonic() < deadline:
            publish_from_subprocess(env, channels[0], "marker", [{"n": -1}])
            time.sleep(0.3)
        time.sleep(1.0)
        while not lines.queue.empty():
            assert " marker " in lines.queue.get()

        def publish(numbers: range) -> None:
            for n in numbers:
                publish_from_subprocess(env, channels[n % 2], "job_progress", [{"n": n}])

        publish(range(0, 4))
        seen = lines.take(4)
        api.stop()
        publish(range(4, 8))  # while no API runs
        api.start()
        publish(range(8, 12))
        seen += lines.take(8, timeout=60)
        lines.none_within(2.0)  # and nothing twice
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(10)
    got = [(line.split(" ", 3)[1], json.loads(line.split(" ", 3)[3])["n"]) for line in seen]
    # Every event once, in order within its channel (the order across channels is not fixed
    # while a resume replays history).
    for index, channel in enumerate(channels):
        assert [n for c, n in got if c == channel] == list(range(index, 12, 2))
    assert len(got) == 12


async def _take(iterator, n: int, timeout: float = 20.0) -> list:
    taken = []
    async with asyncio.timeout(timeout):
        while len(taken) < n:
            taken.append(await anext(iterator))
    return taken


async def test_async_stream_surfaces_reset_and_continues(api, env, token, user):
    channel = f"user:{user}"
    publish_from_subprocess(env, channel, "job_progress", [{"n": 0}, {"n": 1}])
    # An old position: history no longer reaches it, so the stream starts with reset.
    events = astream(api.url, [channel], token(user), last_event_id="1-0")
    try:
        (reset,) = await _take(events, 1)
        assert isinstance(reset, Reset) and reset.reason
        publish_from_subprocess(env, channel, "job_progress", [{"n": 2}])
        (live,) = await _take(events, 1)
        # Pings (every second here) were on the wire meanwhile: none came out as an event.
        assert (type(live).__name__, live.type, live.data) == ("Event", "job_progress", {"n": 2})
    finally:
        await events.aclose()


async def test_auth_expired_ends_a_fixed_token_and_refreshes_a_callable(api, env, token, user):
    channel = f"user:{user}"
    fixed = [e async for e in astream(api.url, [channel], token(user, ttl=2))]
    assert len(fixed) == 1 and isinstance(fixed[0], AuthExpired)

    minted: list[str] = []

    def fresh() -> str:
        minted.append(token(user, ttl=2, jti=str(len(minted))))
        return minted[-1]

    events = astream(api.url, [channel], fresh)
    try:
        (expired,) = await _take(events, 1)
        assert isinstance(expired, AuthExpired)
        publish_from_subprocess(env, channel, "job_progress", [{"n": 1}])
        (after,) = await _take(events, 1)
        assert after.data == {"n": 1} and len(minted) >= 2
    finally:
        await events.aclose()


async def test_a_channel_taken_away_is_dropped_and_the_stream_goes_on(
    api, env, token, user, make_file
):
    """A member removed elsewhere: the client hears it once, never asks for the file again
    (no 403 raised on a reconnect), and ends only when no channel is left."""
    from models import FileMember, session_scope

    lee = f"{user}-lee"
    file_id = make_file(user, members=(lee,))
    channel = f"file:{file_id}"

    def remove() -> None:
        with session_scope(env["FINRT_DATABASE_URL"]) as session:
            member = session.get(FileMember, (file_id, lee))
            assert member is not None
            session.delete(member)

    async def next_of(
        events: Any,
    ) -> Any:  # presence events aside (the file's, on every stream of it)
        async with asyncio.timeout(20):
            async for event in events:
                if not event.type.startswith("presence"):
                    return event
        return None

    both = astream(api.url, [f"user:{lee}", channel], token(lee))
    alone = astream(api.url, [channel], token(lee))
    try:
        live = asyncio.ensure_future(next_of(both))
        told = asyncio.ensure_future(next_of(alone))
        await asyncio.sleep(1.0)  # both connected
        publish_from_subprocess(env, f"user:{lee}", "job_progress", [{"n": 0}])
        assert (await live).data == {"n": 0}
        await asyncio.to_thread(remove)
        revoked = await next_of(both)
        assert isinstance(revoked, AccessRevoked) and revoked.channel == channel
        assert revoked.reason == "no longer a member of this file"
        publish_from_subprocess(env, f"user:{lee}", "job_progress", [{"n": 1}])
        assert (await next_of(both)).data == {"n": 1}
        assert isinstance(await told, AccessRevoked)
        assert await next_of(alone) is None  # ended: no channel left, no 403 raised
    finally:
        await both.aclose()
        await alone.aclose()


def test_refusals_raise_instead_of_retrying(api, token, user):
    with pytest.raises(StreamRefused) as refused:
        next(stream(api.url, [f"user:o{user}"], token(user)))
    assert refused.value.status == 403
    with pytest.raises(AuthFailed):
        next(stream(api.url, [f"user:{user}"], "not-a-token"))
    started = time.monotonic()
    with pytest.raises(StreamRefused) as bad:
        next(stream(api.url, ["nonsense"], token(user)))
    assert bad.value.status == 400 and time.monotonic() - started < 30
