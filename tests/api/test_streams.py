"""The SSE endpoints against a real server: delivery, headers, pings, resume, reset, limits."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

import streams
from core.settings import get_settings
from streams.keys import history_key
from tests.support import publish_from_subprocess, sse


async def test_file_stream_gets_events_from_another_process_in_order(
    api, env, token, user, make_file
):
    file_id = make_file(user)
    url = f"{api.url}/api/v1/stream/files/{file_id}"
    async with sse(url, token(user)) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.response.headers["cache-control"] == "no-cache"
        assert stream.response.headers["x-accel-buffering"] == "no"
        ids = publish_from_subprocess(
            env, f"file:{file_id}", "metric_update", [{"n": i} for i in range(20)]
        )
        got = await stream.events(20)
        assert [e.id for e in got] == ids
        assert [e.envelope["data"]["n"] for e in got] == list(range(20))
        assert {e.event for e in got} == {"metric_update"}
        first = got[0].envelope
        assert set(first) == {"id", "channel", "type", "data", "created_at"}
        assert first["channel"] == f"file:{file_id}" and first["id"] == got[0].id
        assert stream.retry == 500
        # FINRT_PING_SECONDS=1 in the tests: a comment line arrives while nothing is published.
        frame = await stream.next_frame(timeout=5)
        assert frame == ": ping"


async def test_resume_after_disconnect_delivers_the_rest_exactly_once(api, token, user):
    url = f"{api.url}/api/v1/stream/notifications"
    channel = f"user:{user}"
    ids = []
    async with sse(url, token(user)) as stream:
        for i in range(5):
            ids.append(streams.publish(channel, "job_progress", {"n": i}))
        got = await stream.events(5)
        last = got[-1].id
    ids += [streams.publish(channel, "job_progress", {"n": i}) for i in range(5, 12)]
    async with sse(url, token(user), last_event_id=last) as stream:
        ids.append(streams.publish(channel, "job_progress", {"n": 12}))
        got = await stream.events(8)
        assert [e.envelope["data"]["n"] for e in got] == list(range(5, 13))
        assert [e.id for e in got] == ids[5:]
        await stream.no_event(0.5)


async def test_a_client_that_saw_nothing_resumes_from_the_position_it_was_given(api, token, user):
    """The first frame names the stream position, so even an early reconnect misses nothing."""
    url = f"{api.url}/api/v1/stream/notifications"
    async with sse(url, token(user)) as stream:
        await stream.next_frame(timeout=5)  # the preamble carries an id but no event
        position = stream.last_id
        assert position
    published = streams.publish(f"user:{user}", "job_progress", {"n": 1})
    async with sse(url, token(user), last_event_id=position) as stream:
        got = await stream.next_event()
        assert got.id == published


async def test_resume_survives_an_api_restart(start_api, token, user):
    server = start_api()
    url = f"{server.url}/api/v1/stream/notifications"
    channel = f"user:{user}"
    async with sse(url, token(user)) as stream:
        streams.publish(channel, "job_progress", {"n": 0})
        last = (await stream.next_event()).id
        server.stop()
        rest = await stream.until_closed()
        assert not [f for f in rest if not isinstance(f, str)]
    ids = [streams.publish(channel, "job_progress", {"n": i}) for i in range(1, 6)]
    server.start()
    async with sse(url, token(user), last_event_id=last) as stream:
        got = await stream.events(5)
        assert [e.id for e in got] == ids
        await stream.no_event(0.3)


async def test_multi_channel_stream_resumes_with_its_cursor(api, token, user, make_file):
    file_id = make_file(user)
    url = f"{api.url}/api/v1/stream"
    params = [("channel", f"user:{user}"), ("channel", f"file:{file_id}")]
    async with sse(url, token(user), params=params) as stream:
        streams.publish(f"user:{user}", "notification", {"n": 1})
        streams.publish(f"file:{file_id}", "metric_update", {"n": 2})
        got = await stream.events(2)
        assert sorted(e.envelope["data"]["n"] for e in got) == [1, 2]
        cursor = got[-1].id
        assert cursor and "-" not in cursor[:0]  # opaque
    streams.publish(f"file:{file_id}", "metric_update", {"n": 3})
    streams.publish(f"user:{user}", "notification", {"n": 4})
    streams.publish(f"file:{file_id}", "metric_update", {"n": 5})
    async with sse(url, token(user), params=params, last_event_id=cursor) as stream:
        got = await stream.events(3)
        assert [
            e.envelope["data"]["n"] for e in got if e.envelope["channel"].startswith("file")
        ] == [3, 5]
        assert [
            e.envelope["data"]["n"] for e in got if e.envelope["channel"].startswith("user")
        ] == [4]
        await stream.no_event(0.3)


async def test_a_position_older_than_history_gets_reset_first(api, token, user, redis_client):
    channel = f"user:{user}"
    url = f"{api.url}/api/v1/stream/notifications"
    ids = [streams.publish(channel, "job_progress", {"n": i}) for i in range(30)]
    redis_client.xtrim(
        history_key(get_settings().redis_prefix, channel), maxlen=10, approximate=False
    )
    async with sse(url, token(user), last_event_id=ids[5]) as stream:
        first = await stream.next_event()
        assert first.event == "reset"
        assert first.envelope["data"]["reason"] == "history_trimmed"
        assert first.id == ids[-1]  # the position the client continues from
        live = streams.publish(channel, "job_progress", {"n": 30})
        assert (await stream.next_event()).id == live


@pytest.mark.parametrize("sent_as", ["header", "query"])
async def test_resume_from_0_0_replays_a_channel_from_its_first_event(api, token, user, sent_as):
    """Regression: ``0-0`` (before every event) got ``reset`` (history_lost) although history
    held every event since the channel began."""
    channel = f"user:{user}"
    url = f"{api.url}/api/v1/stream/notifications"
    ids = [streams.publish(channel, "job_progress", {"n": i}) for i in range(5)]
    header, params = ("0-0", None) if sent_as == "header" else (None, {"last_event_id": "0-0"})
    async with sse(url, token(user), last_event_id=header, params=params) as stream:
        got = await stream.events(5)
        assert [e.event for e in got] == ["job_progress"] * 5
        assert [e.id for e in got] == ids
        ids.append(streams.publish(channel, "job_progress", {"n": 5}))
        assert (await stream.next_event()).id == ids[-1]
    # A channel without any event yet: nothing to replay and no reset; live events follow.
    async with sse(url, token(f"{user}-new"), last_event_id="0-0") as stream:
        await stream.no_event(0.3)
        live = streams.publish(f"user:{user}-new", "job_progress", {"n": 0})
        fresh = await stream.next_event()
        assert (fresh.event, fresh.id) == ("job_progress", live)
    # The history endpoint reads 0-0 the same way.
    async with httpx.AsyncClient() as client:
        r = await client.get(
            f"{api.url}/api/v1/events/{channel}",
            params={"after": "0-0"},
            headers={"Authorization": f"Bearer {token(user)}"},
        )
    assert [e["id"] for e in r.json()["events"]] == ids


async def test_resume_from_0_0_after_history_was_trimmed_gets_reset(api, token, user, redis_client):
    channel = f"user:{user}"
    url = f"{api.url}/api/v1/stream/notifications"
    ids = [streams.publish(channel, "job_progress", {"n": i}) for i in range(30)]
    redis_client.xtrim(
        history_key(get_settings().redis_prefix, channel), maxlen=10, approximate=False
    )
    async with sse(url, token(user), last_event_id="0-0") as stream:
        first = await stream.next_event()
        assert (first.event, first.id) == ("reset", ids[-1])
        assert first.envelope["data"]["reason"] == "history_trimmed"
        live = streams.publish(channel, "job_progress", {"n": 30})
        assert (await stream.next_event()).id == live


@pytest.mark.parametrize("sent", ["abc", "-1-0", "1-", "1-0-0", "0x1-0", "1" * 21 + "-0"])
async def test_malformed_last_event_ids_are_a_clear_400(api, token, user, sent):
    async with httpx.AsyncClient() as client:
        r = await client.get(
            f"{api.url}/api/v1/stream/notifications",
            params={"last_event_id": sent},
            headers={"Authorization": f"Bearer {token(user)}"},
        )
    assert r.status_code == 400, r.text
    assert "not an event id" in r.json()["detail"]


@pytest.mark.parametrize("future", ["99999999999999999999-0", "far"])
async def test_an_id_beyond_the_newest_is_a_reset_not_an_error(api, token, user, future):
    channel = f"user:{user}"
    head = streams.publish(channel, "job_progress", {"n": 0})
    if future == "far":
        future = f"{int(head.split('-')[0]) + 86_400_000}-0"  # a day ahead
    url = f"{api.url}/api/v1/stream/notifications"
    async with sse(url, token(user), last_event_id=future) as stream:
        first = await stream.next_event()
        assert (first.event, first.id) == ("reset", head)
        assert first.envelope["data"]["reason"] == "unknown_position"


async def test_bad_last_event_id_is_a_clear_400(api, token, user):
    async with httpx.AsyncClient() as client:
        r = await client.get(
            f"{api.url}/api/v1/stream/notifications",
            headers={"Authorization": f"Bearer {token(user)}", "Last-Event-ID": "yesterday"},
        )
    assert r.status_code == 400
    assert "event id" in r.json()["detail"]


async def test_two_api_processes_share_one_redis(api, start_api, token, user):
    other = start_api()
    channel = f"user:{user}"
    async with (
        sse(f"{api.url}/api/v1/stream/notifications", token(user)) as a,
        sse(f"{other.url}/api/v1/stream/notifications", token(user)) as b,
    ):
        ids = [streams.publish(channel, "job_progress", {"n": i}) for i in range(10)]
        assert [e.id for e in await a.events(10)] == ids
        assert [e.id for e in await b.events(10)] == ids


async def test_200_clients_share_one_redis_subscription(start_api, token, user, redis_client):
    server = start_api(max_streams_per_user="1000")
    channel = f"user:{user}"
    pubsub_name = f"{get_settings().redis_prefix}:{{{channel}}}"
    url = f"{server.url}/api/v1/stream/notifications"
    limits = httpx.Limits(max_connections=300)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None), limits=limits) as client:
        from contextlib import AsyncExitStack

        async with AsyncExitStack() as stack:
            streams_ = [
                await stack.enter_async_context(sse(url, token(user), client=client))
                for _ in range(200)
            ]
            assert redis_client.pubsub_numsub(pubsub_name) == [(pubsub_name.encode(), 1)]
            event_id = streams.publish(channel, "job_progress", {"n": 1})
            got = await asyncio.gather(*(s.next_event() for s in streams_))
            assert {e.id for e in got} == {event_id}


async def test_per_user_stream_limit_is_429(start_api, token, user):
    server = start_api(max_streams_per_user="2")
    url = f"{server.url}/api/v1/stream/notifications"
    async with sse(url, token(user)), sse(url, token(user)):
        async with httpx.AsyncClient() as client:
            r = await client.get(url, headers={"Authorization": f"Bearer {token(user)}"})
        assert r.status_code == 429
        assert "streams" in r.json()["detail"]
    async with sse(url, token(user)):  # the slots are free again once those closed
        pass


async def test_stream_ends_with_auth_expired_when_the_token_expires(api, token, user):
    async with sse(f"{api.url}/api/v1/stream/notifications", token(user, ttl=2)) as stream:
        frames = await stream.until_closed(timeout=10)
    events = [f for f in frames if not isinstance(f, str)]
    assert events and events[-1].event == "auth_expired"
    assert events[-1].envelope["type"] == "auth_expired"


async def test_streams_end_each_at_their_own_token_expiry_and_the_others_stay_open(
    api, token, user
):
    """One timer serves every stream's expiry (streams/expiry.py): each still ends at its own
    time, one closed earlier is simply gone, and a stream of a long-lived token stays open."""
    url = f"{api.url}/api/v1/stream/notifications"
    other_user = f"{user}-b"
    ended: list[str] = []
    at: dict[str, float] = {}

    async def watch(name: str, tok: str) -> None:
        async with sse(url, tok) as stream:
            frames = await stream.until_closed(timeout=15)
        events = [f for f in frames if not isinstance(f, str)]
        assert events and events[-1].event == "auth_expired", name
        ended.append(name)
        at[name] = time.monotonic()

    async with sse(url, token(other_user, ttl=3)):  # same expiry as "first", closed before it
        pass
    async with sse(url, token(other_user)) as lasting:
        await asyncio.gather(
            watch("second", token(user, ttl=5)),
            watch("first", token(user, ttl=3)),
            watch("also first", token(other_user, ttl=3)),
        )
        assert ended[-1] == "second" and set(ended[:2]) == {"first", "also first"}
        assert at["second"] - at["first"] > 1.0  # 2 s apart, not all at the first expiry
        assert await lasting.next_frame(timeout=5) == ": ping"  # still open
        event_id = streams.publish(f"user:{other_user}", "job_progress", {"n": 1})
        assert (await lasting.next_event()).id == event_id


async def test_history_endpoint_and_publish_scope(api, token, user):
    channel = f"user:{user}"
    ids = [streams.publish(channel, "job_progress", {"n": i}) for i in range(3)]
    headers = {"Authorization": f"Bearer {token(user)}"}
    async with httpx.AsyncClient(base_url=api.url) as client:
        r = await client.get(f"/api/v1/events/{channel}", params={"after": ids[0]}, headers=headers)
        assert r.status_code == 200
        assert [e["id"] for e in r.json()["events"]] == ids[1:]
        r = await client.get(f"/api/v1/events/{channel}", params={"limit": 2}, headers=headers)
        assert [e["id"] for e in r.json()["events"]] == ids[1:]
        r = await client.post(
            f"/api/v1/events/{channel}", json={"type": "x", "data": {}}, headers=headers
        )
        assert r.status_code == 403
        service = {"Authorization": f"Bearer {token('svc', scope='publish')}"}
        r = await client.post(
            f"/api/v1/events/{channel}",
            json={"type": "price_tick", "data": {"v": 1}, "key": "v"},
            headers=service,
        )
        assert r.status_code == 202
        new_id = r.json()["id"]
        r = await client.get(
            f"/api/v1/events/{channel}", params={"after": ids[-1]}, headers=headers
        )
        assert [(e["id"], e["key"]) for e in r.json()["events"]] == [(new_id, "v")]
        bad = await client.post(
            f"/api/v1/events/{channel}", json={"type": "Bad Type"}, headers=service
        )
        assert bad.status_code == 422
        big = await client.post(
            f"/api/v1/events/{channel}",
            json={"type": "x", "data": {"p": "x" * 70_000}},
            headers=service,
        )
        assert big.status_code == 413


@pytest.mark.parametrize("path", ["/api/v1/events/user:someone-else", "/api/v1/events/file:999999"])
async def test_history_follows_the_stream_access_rules(api, token, user, path):
    async with httpx.AsyncClient(base_url=api.url) as client:
        r = await client.get(path, headers={"Authorization": f"Bearer {token(user)}"})
    assert r.status_code in (403, 404)


async def test_every_stream_has_the_sse_headers_and_a_request_id_of_its_own(api, token, user):
    """The headers are made once and copied per stream: one stream's additions (its request id)
    never show on another's."""
    url = f"{api.url}/api/v1/stream/notifications"
    async with (
        sse(url, token(user)) as one,
        sse(url, token(user)) as two,
        sse(url, token(user)) as three,
    ):
        streams_ = (one, two, three)
        ids = [s.response.headers.get_list("x-request-id") for s in streams_]
        assert all(len(i) == 1 for i in ids), ids
        assert len({i[0] for i in ids}) == 3
        for s in streams_:
            assert s.response.headers["content-type"].startswith("text/event-stream")
            assert s.response.headers["cache-control"] == "no-cache"
            assert s.response.headers["x-accel-buffering"] == "no"
