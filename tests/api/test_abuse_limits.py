"""Every abuse limit refuses with a clear status and JSON detail, and a refusal changes nothing.

Per-token rates on publishing, uploading and requesting reports (FINRT_PUBLISH_RATE,
FINRT_UPLOAD_RATE, FINRT_REPORT_RATE, counted in
Redis), the per-user stream cap, the event size limit and the channel cap of one stream; each
against a real API process with small limits of its own.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import httpx
import pytest
import websockets
from pydantic import ValidationError

import streams
from api.limits import token_digest
from core.settings import Settings
from finrt.embedded_redis import EmbeddedRedis
from tests.support import sse

CSV = b"period,statement,line_item,amount,currency\n2026-01,income,revenue,10.00,USD\n"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _retry_after(response: httpx.Response, longest: int) -> int:
    """The 429's Retry-After (whole seconds, 1 to ``longest``), as its detail says it too."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/json")
    seconds = int(response.headers["retry-after"])
    assert 1 <= seconds <= longest, seconds
    assert f"retry in {seconds} s" in response.json()["detail"]
    return seconds


async def _history(client: httpx.AsyncClient, channel: str, reader: str) -> list[dict]:
    r = await client.get(f"/api/v1/events/{channel}", headers=_bearer(reader))
    assert r.status_code == 200, r.text
    return r.json()["events"]


async def _upload(client: httpx.AsyncClient, token: str, data: bytes = CSV) -> httpx.Response:
    return await client.post(
        "/api/v1/files", headers=_bearer(token), files={"file": ("q.csv", data, "text/csv")}
    )


async def _file_ids(client: httpx.AsyncClient, token: str) -> list[int]:
    r = await client.get("/api/v1/files", headers=_bearer(token))
    assert r.status_code == 200, r.text
    return sorted(f["id"] for f in r.json()["files"])


@pytest.mark.parametrize("bad", ["abc", "0/second", "10/minute;100/hour", "5/fortnight", "-1/s"])
@pytest.mark.parametrize("field", ["publish_rate", "upload_rate", "report_rate"])
def test_a_bad_rate_fails_settings_validation_naming_the_variable(field, bad):
    with pytest.raises(ValidationError) as info:
        Settings(**{field: bad})
    message = str(info.value)
    assert f"FINRT_{field.upper()}: {bad!r} is not one rate" in message
    assert "'100/second'" in message


@pytest.mark.parametrize(("given", "kept"), [(" 5 per hour ", "5 per hour"), ("", "")])
def test_a_rate_may_be_written_in_words_or_left_empty_for_none(given, kept):
    assert Settings(publish_rate=given).publish_rate == kept


# -- publishing -----------------------------------------------------------------------------


async def test_publishing_over_the_rate_is_429_and_publishes_nothing(start_api, token, user):
    server = start_api(publish_rate="3/minute")
    channel = f"user:{user}"
    service = token(f"{user}-svc", scope="publish")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        ids = []
        for n in range(3):
            r = await client.post(
                f"/api/v1/events/{channel}",
                json={"type": "price_tick", "data": {"n": n}},
                headers=_bearer(service),
            )
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        for _ in range(2):
            refused = await client.post(
                f"/api/v1/events/{channel}",
                json={"type": "price_tick", "data": {"n": "refused"}},
                headers=_bearer(service),
            )
            _retry_after(refused, 60)
            detail = refused.json()["detail"]
            assert "publishing is limited to 3 per 1 minute per token" in detail
        events = await _history(client, channel, token(user))
        assert [e["id"] for e in events] == ids
        assert [e["data"]["n"] for e in events] == [0, 1, 2]

        # Another token has a budget of its own: a second token of the same service (another
        # jti), and another service; the exhausted token stays refused.
        same_service = token(f"{user}-svc", scope="publish", jti=uuid.uuid4().hex)
        other_service = token(f"{user}-other", scope="publish")
        for other in (same_service, other_service):
            r = await client.post(
                f"/api/v1/events/{channel}",
                json={"type": "price_tick", "data": {"n": "other token"}},
                headers=_bearer(other),
            )
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        again = await client.post(
            f"/api/v1/events/{channel}",
            json={"type": "price_tick", "data": {"n": "refused"}},
            headers=_bearer(service),
        )
        _retry_after(again, 60)
        events = await _history(client, channel, token(user))
        assert [e["id"] for e in events] == ids
        assert "refused" not in [e["data"]["n"] for e in events]


async def test_the_publish_rate_is_shared_by_every_api_process(
    start_api, token, user, redis_client, env
):
    first = start_api(publish_rate="2/minute")
    second = start_api(publish_rate="2/minute")
    service = token(f"{user}-svc", scope="publish")
    channel = f"user:{user}"
    statuses = []
    for server in (first, second, first, second):
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            r = await client.post(
                f"/api/v1/events/{channel}",
                json={"type": "price_tick", "data": {}},
                headers=_bearer(service),
            )
            statuses.append(r.status_code)
    assert statuses == [202, 202, 429, 429]
    # The counter is a Redis key under the service's prefix, named by a digest of the token.
    keys = [k.decode() for k in redis_client.scan_iter(f"{env['FINRT_REDIS_PREFIX']}:ratelimit:*")]
    digest = token_digest(service)
    assert [k for k in keys if digest in k] == [
        f"{env['FINRT_REDIS_PREFIX']}:ratelimit:LIMITER/publish/{digest}/2/1/minute"
    ]
    assert not [k for k in keys if service in k or service.split(".")[2] in k]


async def test_retry_after_is_honest_and_refusals_take_no_budget(start_api, token, user):
    server = start_api(publish_rate="2 per 3 seconds")
    channel = f"user:{user}"
    service = _bearer(token(f"{user}-svc", scope="publish"))
    body = {"type": "price_tick", "data": {}}
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        for _ in range(2):
            r = await client.post(f"/api/v1/events/{channel}", json=body, headers=service)
            assert r.status_code == 202, r.text
        await asyncio.sleep(1.5)
        refused = [
            await client.post(f"/api/v1/events/{channel}", json=body, headers=service)
            for _ in range(5)
        ]
        wait = max(_retry_after(r, 2) for r in refused)
        await asyncio.sleep(wait + 0.1)
        # The accepted ones have left the window; the refused ones, had they counted, would
        # still fill it.
        r = await client.post(f"/api/v1/events/{channel}", json=body, headers=service)
        assert r.status_code == 202, r.text


async def test_an_empty_rate_means_no_limit_for_that_action_only(
    start_api, token, user, redis_client, env
):
    server = start_api(publish_rate="", upload_rate="1/minute")
    service = token(f"{user}-svc", scope="publish")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        for _ in range(5):
            r = await client.post(
                f"/api/v1/events/user:{user}",
                json={"type": "price_tick", "data": {}},
                headers=_bearer(service),
            )
            assert r.status_code == 202, r.text
        # One token for both: the limit is per token, and a token minted a second later differs.
        uploader = token(user)
        assert (await _upload(client, uploader)).status_code == 202
        _retry_after(await _upload(client, uploader), 60)
    # Nothing was counted for the publishing token.
    pattern = f"{env['FINRT_REDIS_PREFIX']}:ratelimit:*{token_digest(service)}*"
    assert not list(redis_client.scan_iter(pattern))


# -- uploading ------------------------------------------------------------------------------


async def test_uploading_over_the_rate_is_429_before_the_body_and_stores_nothing(
    start_api, token, user
):
    server = start_api(upload_rate="2/minute")
    mine = token(user)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        accepted = []
        for _ in range(2):
            r = await _upload(client, mine)
            assert r.status_code == 202, r.text
            accepted.append(r.json()["file_id"])
        assert await _file_ids(client, mine) == sorted(accepted)
        refused = await _upload(client, mine)
        _retry_after(refused, 60)
        assert "uploading is limited to 2 per 1 minute per token" in refused.json()["detail"]
        # Checked before the body is read: one the body checks would refuse is a 429 too.
        not_multipart = await client.post("/api/v1/files", headers=_bearer(mine), json={})
        assert not_multipart.status_code == 429, not_multipart.text
        assert await _file_ids(client, mine) == sorted(accepted)
        # Without a valid token it is a 401, as before; a second token has its own budget.
        anonymous = await client.post("/api/v1/files", files={"file": ("q.csv", CSV)})
        assert anonymous.status_code == 401
        second = token(user, jti=uuid.uuid4().hex)
        r = await _upload(client, second)
        assert r.status_code == 202, r.text
        assert await _file_ids(client, mine) == sorted([*accepted, r.json()["file_id"]])


# -- requesting reports ----------------------------------------------------------------------


async def test_requesting_reports_over_the_rate_is_429_and_queues_nothing(
    start_api, token, user, make_file
):
    """A report holds a worker for as long as it takes: one token cannot fill the queue that
    everyone's uploads share."""
    server = start_api(report_rate="2/minute")
    mine, file_id = token(user), make_file(user)
    url = f"/api/v1/files/{file_id}/reports"
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        accepted = [
            await client.post(url, json={"format": f}, headers=_bearer(mine))
            for f in ("csv", "pdf")
        ]
        assert [r.status_code for r in accepted] == [202, 202], [r.text for r in accepted]
        refused = await client.post(url, json={"format": "xlsx"}, headers=_bearer(mine))
        _retry_after(refused, 60)
        assert (
            "requesting reports is limited to 2 per 1 minute per token"
            in (refused.json()["detail"])
        )
        listed = await client.get(url, headers=_bearer(mine))
        # Uploads have a budget of their own.
        uploaded = await _upload(client, mine)
    assert sorted(r["format"] for r in listed.json()["reports"]) == ["csv", "pdf"]
    assert uploaded.status_code == 202, uploaded.text


async def test_report_requests_refused_with_403_404_or_409_leave_the_rate_untouched(
    start_api, token, user, make_file
):
    """Only an accepted request holds a worker: one refused because the file is not processed
    yet, or because its sender is no longer a member, takes nothing from the budget."""
    from models import File, FileMember, session_scope
    from tests.conftest import DATABASE_URL

    server = start_api(report_rate="2/minute")
    member = f"{user}m"
    mine, theirs = token(user), token(member)
    ready, busy = make_file(user, members=(member,)), make_file(user, members=(member,))
    with session_scope(DATABASE_URL) as session:
        session.get(File, busy).status = "processing"  # type: ignore[union-attr]

    async def ask(file_id: int, bearer: str) -> httpx.Response:
        return await client.post(
            f"/api/v1/files/{file_id}/reports", json={"format": "csv"}, headers=_bearer(bearer)
        )

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        not_ready = [await ask(busy, theirs) for _ in range(5)]
        with session_scope(DATABASE_URL) as session:
            session.delete(session.get(FileMember, (ready, member)))
        removed = [await ask(ready, theirs) for _ in range(3)]
        unknown = [await ask(2**31 - 1, theirs) for _ in range(3)]
        with session_scope(DATABASE_URL) as session:
            session.add(FileMember(file_id=ready, user_id=member))
        accepted = [await ask(ready, theirs) for _ in range(2)]
        over = await ask(ready, theirs)
        # The owner's token has a budget of its own, untouched by the member's.
        own = await ask(ready, mine)
    assert [r.status_code for r in not_ready] == [409] * 5, [r.text for r in not_ready]
    assert "processing" in not_ready[0].json()["detail"]
    assert [r.status_code for r in removed] == [403] * 3, [r.text for r in removed]
    assert [r.status_code for r in unknown] == [404] * 3, [r.text for r in unknown]
    assert [r.status_code for r in accepted] == [202, 202], [r.text for r in accepted]
    _retry_after(over, 60)
    assert own.status_code == 202, own.text


async def test_thirty_report_requests_at_once_get_clear_answers_and_the_rate_holds(
    start_api, token, user, make_file
):
    """Thirty requests for one file at the same moment, from one token and from thirty members:
    one token gets exactly its rate and 429s for the rest (nothing stored for them), each
    member its report; never a 500."""
    server = start_api(report_rate="5/minute")
    members = tuple(f"{user}m{i}" for i in range(30))
    file_id = make_file(user, members=members)
    url = f"/api/v1/files/{file_id}/reports"
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        mine = token(user)
        burst = await asyncio.gather(
            *(client.post(url, json={"format": "csv"}, headers=_bearer(mine)) for _ in range(30))
        )
        listed = await client.get(url, headers=_bearer(mine))
        crowd = await asyncio.gather(
            *(client.post(url, json={"format": "pdf"}, headers=_bearer(token(m))) for m in members)
        )
        after = await client.get(url, headers=_bearer(mine))
    codes = sorted(r.status_code for r in burst)
    assert codes == [202] * 5 + [429] * 25, [r.text for r in burst if r.status_code != 429]
    for refused in (r for r in burst if r.status_code == 429):
        _retry_after(refused, 60)
    accepted = {r.json()["report_id"] for r in burst if r.status_code == 202}
    assert {r["id"] for r in listed.json()["reports"]} == accepted
    assert [r.status_code for r in crowd] == [202] * 30, [r.text for r in crowd]
    assert after.json()["total"] == 35
    assert sorted(r["requested_by"] for r in after.json()["reports"] if r["format"] == "pdf") == (
        sorted(members)
    )


async def test_without_redis_the_limits_let_requests_meet_the_clear_503(start_api, token, user):
    redis_server = EmbeddedRedis().start()
    try:
        server = start_api(
            redis_url=redis_server.url, publish_rate="1/minute", upload_rate="1/minute"
        )
        redis_server.stop()
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            published = await client.post(
                f"/api/v1/events/user:{user}",
                json={"type": "price_tick", "data": {}},
                headers=_bearer(token(f"{user}-svc", scope="publish")),
            )
            uploaded = await _upload(client, token(user))
            listed = await _file_ids(client, token(user))
        assert published.status_code == 503, published.text
        assert "Redis is unreachable" in published.json()["detail"]
        assert uploaded.status_code == 503, uploaded.text
        assert "unreachable" in uploaded.json()["detail"]
        assert listed == []
        assert "rate limit of publish not checked, Redis unreachable" in server.log()
    finally:
        redis_server.stop()


# -- the limits that came before ------------------------------------------------------------


def _ws_url(server, token: str) -> str:
    return server.url.replace("http", "ws", 1) + f"/api/v1/ws?access_token={token}"


async def test_the_stream_cap_counts_sse_and_websocket_per_user_not_per_token(
    start_api, token, user
):
    server = start_api(max_streams_per_user="2")
    url = f"{server.url}/api/v1/stream/notifications"
    async with (
        sse(url, token(user)) as stream,
        websockets.connect(_ws_url(server, token(user))) as ws,
    ):
        await ws.send(json.dumps({"type": "subscribe", "channel": f"user:{user}"}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        another_token = token(user, jti=uuid.uuid4().hex)
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(url, headers=_bearer(another_token))
        assert r.status_code == 429
        assert r.json()["detail"] == "at most 2 open streams per user on this server"
        async with websockets.connect(_ws_url(server, another_token)) as extra:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await extra.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4029
        # Another user is not affected, and the open streams go on as before.
        async with sse(url, token(f"{user}b")):
            pass
        event_id = streams.publish(f"user:{user}", "job_progress", {"n": 1})
        assert (await stream.next_event()).id == event_id
        assert json.loads(await ws.recv())["id"] == event_id


async def test_an_event_over_the_byte_limit_is_413_and_not_published(start_api, token, user):
    server = start_api(max_event_bytes="1024")
    channel = f"user:{user}"
    service = _bearer(token(f"{user}-svc", scope="publish"))
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        small = await client.post(
            f"/api/v1/events/{channel}",
            json={"type": "price_tick", "data": {"p": "x" * 500}},
            headers=service,
        )
        assert small.status_code == 202, small.text
        big = await client.post(
            f"/api/v1/events/{channel}",
            json={"type": "price_tick", "data": {"p": "y" * 1100}},
            headers=service,
        )
        assert big.status_code == 413, big.text
        assert re.fullmatch(r"event is \d+ bytes; the limit is 1024", big.json()["detail"])
        events = await _history(client, channel, token(user))
    assert [e["id"] for e in events] == [small.json()["id"]]


async def test_too_many_channels_on_one_stream_is_400_and_holds_no_slot(
    start_api, token, user, make_file
):
    server = start_api(max_channels_per_stream="3", max_streams_per_user="1")
    files = [make_file(user) for _ in range(3)]
    channels = [f"user:{user}", *(f"file:{f}" for f in files)]
    url = f"{server.url}/api/v1/stream"
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(2):
            r = await client.get(
                url, params=[("channel", c) for c in channels], headers=_bearer(token(user))
            )
            assert r.status_code == 400, r.text
            assert r.json()["detail"] == "at most 3 channels per stream"
    # The refusals held none of the user's one stream slot; repeats count once.
    params = [("channel", c) for c in channels[:3] + channels[:3]]
    async with sse(url, token(user), params=params) as stream:
        event_id = streams.publish(channels[2], "metric_update", {"n": 1})
        got = await stream.next_event()
        assert got.envelope["id"] == event_id
        assert got.envelope["channel"] == channels[2]


async def test_too_many_channels_on_a_websocket_is_an_error_and_the_socket_goes_on(
    start_api, token, user, make_file
):
    server = start_api(max_channels_per_stream="2")
    channels = [f"user:{user}", f"file:{make_file(user)}", f"file:{make_file(user)}"]
    async with websockets.connect(_ws_url(server, token(user))) as ws:

        async def ask(message: dict) -> dict:
            await ws.send(json.dumps(message))
            return json.loads(await ws.recv())

        for channel in channels[:2]:
            reply = await ask({"type": "subscribe", "channel": channel})
            # A file channel's reply also carries who is on the file (presence).
            assert {k: reply[k] for k in ("type", "channel")} == {
                "type": "subscribed",
                "channel": channel,
            }
            if channel.startswith("file:"):  # and a presence event follows it
                assert json.loads(await ws.recv())["type"] == "presence"
        refused = await ask({"type": "subscribe", "channel": channels[2]})
        assert refused == {"type": "error", "error": "too many channels on this socket"}
        streams.publish(channels[2], "metric_update", {"n": "not subscribed"})
        event_id = streams.publish(channels[1], "metric_update", {"n": 1})
        assert json.loads(await ws.recv())["id"] == event_id
        assert await ask({"type": "ping"}) == {"type": "pong"}
