"""Presence on file channels against real API processes and the real Redis: snapshots, joins
and leaves without ids or history, the grace period, crash cleanup across processes, big rooms,
the REST endpoint and the WebSocket reply."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from finrt.embedded_redis import EmbeddedRedis
from tests.ops.metrics_support import scrape, value
from tests.support import Received, SSEStream, redis_calls, sse


def _stream(
    server: Any, file_id: int, tok: str
) -> contextlib.AbstractAsyncContextManager[SSEStream]:
    return sse(f"{server.url}/api/v1/stream/files/{file_id}", tok, presence=True)


async def _presence(stream: SSEStream, timeout: float = 15.0) -> Received:
    """The next presence event (data events are not expected in these tests)."""
    got = await _quiet(stream, timeout, first=True)
    assert got, f"no event within {timeout} s"
    assert got[0].event.startswith("presence"), got[0]
    return got[0]


async def _quiet(stream: SSEStream, within: float, first: bool = False) -> list[Received]:
    """Every event that arrives within ``within`` seconds (with ``first``: the first one)."""
    got: list[Received] = []
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = await stream.next_frame(left)  # pings count as frames, not as events
        except TimeoutError:
            break
        if frame is None:
            raise EOFError("stream ended")
        if isinstance(frame, Received):
            got.append(frame)
            if first:
                break
    return got


def _who(server: Any, file_id: int, tok: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.url}/api/v1/files/{file_id}/presence",
        headers={"Authorization": f"Bearer {tok}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _until_who(server: Any, file_id: int, tok: str, users: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        body = _who(server, file_id, tok)
        if {u["user_id"] for u in body["users"]} == users or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def _held(server: Any, file_id: int, tok: str) -> AsyncIterator[SSEStream]:
    """A stream that stays open in the background (its snapshot read)."""
    async with _stream(server, file_id, tok) as stream:
        await _presence(stream)
        yield stream


async def test_snapshot_first_then_joins_and_leaves_without_ids_or_history(
    start_api, token, user, make_file
):
    server = start_api(presence_grace_seconds="1")
    bob = f"{user}-bob"
    file_id = make_file(user, members=(bob,))
    async with _stream(server, file_id, token(user)) as alice:
        first = await _presence(alice)
        assert first.event == "presence" and not first.had_id
        snap = first.envelope
        assert snap["id"] is None and snap["channel"] == f"file:{file_id}"
        assert snap["data"]["file_id"] == file_id and snap["data"]["count"] == 1
        assert [u["user_id"] for u in snap["data"]["users"]] == [user]
        assert snap["data"]["users"][0]["connections"] == 1

        async with _stream(server, file_id, token(bob)) as bobs:
            theirs = (await _presence(bobs)).envelope["data"]
            assert {u["user_id"] for u in theirs["users"]} == {user, bob}
            joined = await _presence(alice)
            assert joined.event == "presence_join" and not joined.had_id
            assert joined.envelope["data"]["user_id"] == bob
            assert joined.envelope["data"]["file_id"] == file_id
            body = _who(server, file_id, token(bob))
            assert body["count"] == 2 and {u["user_id"] for u in body["users"]} == {user, bob}
            # A data event after presence still carries its id and is the only one in history.
            import streams

            event_id = streams.publish(f"file:{file_id}", "metric_update", {"n": 1})
            got = await alice.next_event()
            assert got.event == "metric_update" and got.had_id and got.id == event_id
        left = await _presence(alice)
        assert left.event == "presence_leave" and left.envelope["data"]["user_id"] == bob
        history = httpx.get(
            f"{server.url}/api/v1/events/file:{file_id}",
            headers={"Authorization": f"Bearer {token(user)}"},
            timeout=10,
        ).json()["events"]
        # (file_members: the fixture shared the file; presence itself left nothing.)
        assert [e["type"] for e in history if e["type"] != "file_members"] == ["metric_update"]
    # The SSE position of a client was never moved by presence: its last id is the event's.
    assert alice.last_id == event_id


async def test_a_reconnect_within_the_grace_period_announces_nothing(
    start_api, token, user, make_file
):
    one = start_api(presence_grace_seconds="3")
    two = start_api(presence_grace_seconds="3")
    bob = f"{user}-bob"
    file_id = make_file(user, members=(bob,))
    async with _held(one, file_id, token(user)) as alice:
        async with _held(two, file_id, token(bob)):
            assert (await _presence(alice)).envelope["data"]["user_id"] == bob
        # Bob's page reloads onto the other process, well within the grace period.
        async with _held(one, file_id, token(bob)):
            assert await _quiet(alice, 5) == []
            body = _who(two, file_id, token(user))
            bobs = [u for u in body["users"] if u["user_id"] == bob]
            assert bobs and bobs[0]["connections"] == 1
        assert (await _presence(alice)).event == "presence_leave"


async def test_a_killed_process_loses_its_users_within_the_lease_once_each(
    start_api, token, user, make_file
):
    settings = {"presence_grace_seconds": "1", "presence_lease_seconds": "4"}
    survivors = [start_api(**settings), start_api(**settings)]
    doomed = start_api(**settings)
    bob, carol = f"{user}-bob", f"{user}-carol"
    file_id = make_file(user, members=(bob, carol))
    async with contextlib.AsyncExitStack() as stack:
        watchers = [
            await stack.enter_async_context(_held(s, file_id, token(user))) for s in survivors
        ]
        for who in (bob, carol, carol):  # carol twice: two tabs count once
            await stack.enter_async_context(_held(doomed, file_id, token(who)))
        for watcher in watchers:
            joins = [await _presence(watcher) for _ in range(2)]
            assert {j.envelope["data"]["user_id"] for j in joins} == {bob, carol}
        for server in (*survivors, doomed):
            body = await _until_who(server, file_id, token(user), {user, bob, carol})
            assert body["count"] == 3
            assert {u["user_id"]: u["connections"] for u in body["users"]}[carol] == 2
        doomed.kill()
        killed_at = time.monotonic()
        for watcher in watchers:
            leaves = [await _presence(watcher, timeout=30) for _ in range(2)]
            assert {e.event for e in leaves} == {"presence_leave"}
            assert sorted(e.envelope["data"]["user_id"] for e in leaves) == sorted([bob, carol])
        # 4 s of lease; generous room for a loaded machine, still far below "never".
        assert time.monotonic() - killed_at < 15
        # Exactly once: both survivors reap, neither announces a second leave.
        for watcher in watchers:
            assert await _quiet(watcher, 4) == []
        for server in survivors:
            body = _who(server, file_id, token(user))
            assert body["count"] == 1 and [u["user_id"] for u in body["users"]] == [user]


async def test_big_rooms_fold_joins_into_counts(start_api, token, user, make_file):
    server = start_api(presence_room_limit="2", presence_grace_seconds="0")
    others = [f"{user}-{i}" for i in range(5)]
    file_id = make_file(user, members=tuple(others))
    async with contextlib.AsyncExitStack() as stack:
        alice = await stack.enter_async_context(_held(server, file_id, token(user)))
        await stack.enter_async_context(_held(server, file_id, token(others[0])))
        assert (await _presence(alice)).event == "presence_join"
        async with contextlib.AsyncExitStack() as crowd:
            for who in others[1:]:
                await crowd.enter_async_context(_held(server, file_id, token(who)))
            events = await _quiet(alice, 4)
            assert events and {e.event for e in events} == {"presence_count"}
            assert len(events) <= 3  # four arrivals within about a second: folded
            assert events[-1].envelope["data"] == {"file_id": file_id, "count": 6}
            async with _stream(server, file_id, token(user)) as late:
                snap = (await _presence(late)).envelope["data"]
                assert snap["count"] == 6 and len(snap["users"]) == 2
                assert snap["users"][0]["user_id"] == user  # earliest first
        # Back under the limit: a fresh snapshot, since the list was not kept meanwhile.
        deadline = time.monotonic() + 20
        while True:
            event = await _presence(alice, timeout=max(0.1, deadline - time.monotonic()))
            if event.event == "presence":
                break
            assert event.event == "presence_count"
        users = {u["user_id"] for u in event.envelope["data"]["users"]}
        assert event.envelope["data"]["count"] == 2 and users == {user, others[0]}


async def test_presence_endpoint_follows_the_file_access_rules(api, token, user, make_file):
    member, stranger = f"{user}-m", f"{user}-s"
    file_id = make_file(user, members=(member,))
    url = f"{api.url}/api/v1/files/{{}}/presence"

    def get(path_id: object, who: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token(who)}"} if who else {}
        return httpx.get(url.format(path_id), headers=headers, timeout=10)

    for who in (user, member):
        response = get(file_id, who)
        assert response.status_code == 200
        assert response.json() == {"file_id": file_id, "count": 0, "users": []}
    assert get(file_id, stranger).status_code == 403
    assert get(999_999_999, user).status_code == 404
    assert get("abc", user).status_code == 404
    assert get(file_id, None).status_code == 401


async def test_websocket_subscribed_reply_carries_the_snapshot_and_a_presence_event_follows(
    api, token, user, make_file
):
    bob = f"{user}-bob"
    file_id = make_file(user, members=(bob,))
    channel = f"file:{file_id}"
    ws_url = api.url.replace("http", "ws") + f"/api/v1/ws?access_token={token(user)}"
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel": channel}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["type"] == "subscribed" and reply["channel"] == channel
        assert reply["presence"]["count"] == 1
        assert reply["presence"]["users"][0]["user_id"] == user
        # The file's first presence event, as on every stream that carries it.
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert first["type"] == "presence" and first["id"] is None
        assert first["channel"] == channel and first["data"] == reply["presence"]
        async with _held(api, file_id, token(bob)):
            joined = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert joined["type"] == "presence_join" and joined["id"] is None
            assert joined["data"] == {"file_id": file_id, "user_id": bob, "count": 2}
        await ws.send(json.dumps({"type": "subscribe", "channel": f"user:{user}"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply == {"type": "subscribed", "channel": f"user:{user}"}


@pytest.mark.parametrize("kind", ["multi"])
async def test_the_multi_channel_stream_gets_a_snapshot_per_file(api, token, user, make_file, kind):
    files = [make_file(user), make_file(user)]
    params = [("channel", f"user:{user}")] + [("channel", f"file:{f}") for f in files]
    async with sse(f"{api.url}/api/v1/stream", token(user), params=params, presence=True) as s:
        snaps = [await _presence(s), await _presence(s)]
        assert [e.envelope["data"]["file_id"] for e in snaps] == files
        assert all(e.event == "presence" and not e.had_id for e in snaps)


async def test_renewal_is_one_call_per_interval_whatever_the_connections(
    start_api, token, user, make_file
):
    own = EmbeddedRedis().start()
    try:
        server = start_api(redis_url=own.url, presence_lease_seconds="2")  # renews every 0.5 s
        users = [f"{user}-{i}" for i in range(10)]
        files = [make_file(user, members=tuple(users)) for _ in range(3)]
        async with contextlib.AsyncExitStack() as stack:
            for who in users:
                for file_id in files:
                    await stack.enter_async_context(_held(server, file_id, token(who)))
            for file_id in files:
                assert (await _until_who(server, file_id, token(user), set(users)))["count"] == 10
            commands = await asyncio.to_thread(redis_calls, own.url, 3.0)
            samples = scrape(server.url)
        renewals = [c for c in commands if ":presence:procs" in c]
        writes = [c for c in commands if ":pr:" in c]
        # 30 connections, about 6 intervals: one call each, not one per connection (180).
        assert 2 <= len(renewals) <= 10, renewals
        assert writes == []  # nothing changed: nothing written
        assert value(samples, "finrt_presence_users") == 30
        assert value(samples, "finrt_presence_files") == 3
        assert value(samples, "finrt_presence_renewals_total") >= len(renewals)
    finally:
        own.stop()


async def test_a_redis_restart_ends_with_the_true_set(start_api, token, user, make_file, tmp_root):
    data = tmp_root / f"redis-aof-{user}"
    own = EmbeddedRedis(data_dir=str(data)).start()
    try:
        server = start_api(redis_url=own.url, presence_grace_seconds="1")
        bob = f"{user}-bob"
        file_id = make_file(user, members=(bob,))
        async with _held(server, file_id, token(user)) as alice:
            async with _held(server, file_id, token(bob)):
                assert (await _presence(alice)).event == "presence_join"
                await asyncio.sleep(0.5)  # written, and in the append-only file
                own.stop()
            # Bob left while Redis was down (the grace period ends meanwhile too).
            await asyncio.sleep(2)
            own = EmbeddedRedis(port=own.port, data_dir=str(data)).start()
            body = await _until_who(server, file_id, token(user), {user})
            assert [u["user_id"] for u in body["users"]] == [user]
            # The stream learns it too: a leave, or a fresh snapshot without bob.
            deadline = time.monotonic() + 20
            while True:
                event = await _presence(alice, timeout=max(0.1, deadline - time.monotonic()))
                data_ = event.envelope["data"]
                if event.event == "presence_leave" and data_["user_id"] == bob:
                    break
                if event.event == "presence" and bob not in {u["user_id"] for u in data_["users"]}:
                    break
    finally:
        own.stop()


async def test_a_connection_gone_before_its_first_write_leaves_no_ghost(user):
    """Open and closed within one batch: written with no connection, then let go after the
    grace period (a churn of quick reconnects once left such users behind for good)."""
    import random

    import redis.asyncio as aioredis

    from core.settings import get_settings
    from streams.presence import Presence

    settings = get_settings()
    client = aioredis.Redis.from_url(settings.redis_url)
    presence = Presence(client, settings.redis_prefix, grace_seconds=0.3, lease_seconds=8)
    channel = f"file:{random.randrange(10**9, 10**10)}"
    await presence.start()
    try:
        presence.track(user, channel)
        presence.untrack(user, channel)
        snap = await presence.snapshot(channel)
        assert [(u["user_id"], u["connections"]) for u in snap["users"]] == [(user, 0)]
        empty = {"file_id": int(channel[5:]), "count": 0, "users": []}

        async def gone() -> dict[str, Any]:
            deadline = time.monotonic() + 10
            while (snap := await presence.snapshot(channel))["count"]:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            return snap

        assert await gone() == empty
        presence.track(user, channel)
        presence.untrack(user, channel)
        await presence.snapshot(channel)
        presence.track(user, channel)  # back within the grace period
        assert (await presence.snapshot(channel))["users"][0]["connections"] == 1
        presence.untrack(user, channel)
        assert await gone() == empty
    finally:
        await presence.stop()
        await client.aclose()


async def test_a_graceful_stop_lets_clients_move_without_a_leave(start_api, token, user, make_file):
    settings = {"presence_grace_seconds": "2", "presence_lease_seconds": "4"}
    one, two = start_api(**settings), start_api(**settings)
    bob = f"{user}-bob"
    file_id = make_file(user, members=(bob,))
    async with _held(one, file_id, token(user)) as alice:
        async with _held(two, file_id, token(bob)) as bobs:
            assert (await _presence(alice)).envelope["data"]["user_id"] == bob
            two.stop()  # SIGTERM: its streams end with a short retry hint
            with contextlib.suppress(EOFError, TimeoutError):
                await _quiet(bobs, 10)
        # Bob's client reconnects to the process still running, as a load balancer sends it.
        async with _held(one, file_id, token(bob)):
            assert await _quiet(alice, 6) == []  # past the grace period and the lease
            body = _who(one, file_id, token(user))
            assert {u["user_id"] for u in body["users"]} == {user, bob}
        assert (await _presence(alice)).event == "presence_leave"
