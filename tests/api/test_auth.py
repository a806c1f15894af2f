"""Authentication and access rules on streams, tickets and the WebSocket route."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import jwt
import pytest
import websockets

from tests.support import sse


def _none_alg_token(user: str) -> str:
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = jwt.utils.base64url_encode(
        json.dumps({"sub": user, "exp": int(time.time()) + 600}).encode()
    )
    return f"{header.decode()}.{body.decode()}."


@pytest.mark.parametrize(
    "make_bad",
    [
        lambda env, u: None,
        lambda env, u: jwt.encode(
            {"sub": u, "exp": int(time.time()) + 600}, "x" * 32, algorithm="HS256"
        ),
        lambda env, u: jwt.encode(
            {"sub": u, "exp": int(time.time()) - 5}, env["FINRT_JWT_SECRET"], algorithm="HS256"
        ),
        lambda env, u: _none_alg_token(u),
        lambda env, u: jwt.encode(
            {"sub": "bad user!", "exp": int(time.time()) + 600},
            env["FINRT_JWT_SECRET"],
            algorithm="HS256",
        ),
        lambda env, u: jwt.encode(
            {"exp": int(time.time()) + 600}, env["FINRT_JWT_SECRET"], algorithm="HS256"
        ),
        lambda env, u: "not-a-jwt",
    ],
    ids=["missing", "bad-signature", "expired", "alg-none", "bad-subject", "no-subject", "garbage"],
)
async def test_bad_tokens_get_401_json_before_any_stream(api, env, user, make_bad):
    bad = make_bad(env, user)
    async with httpx.AsyncClient(base_url=api.url) as client:
        for kwargs in (
            {"headers": {"Authorization": f"Bearer {bad}"}} if bad else {},
            {"params": {"access_token": bad}} if bad else {},
        ):
            r = await client.get("/api/v1/stream/notifications", **kwargs)
            assert r.status_code == 401
            assert r.headers["content-type"].startswith("application/json")
            assert r.json()["detail"]


async def test_channels_of_others_are_403_and_unknown_files_404(api, token, user, make_file):
    other = f"{user}x"
    theirs = make_file(other)
    headers = {"Authorization": f"Bearer {token(user)}"}
    async with httpx.AsyncClient(base_url=api.url) as client:
        assert (
            await client.get(f"/api/v1/stream/files/{theirs}", headers=headers)
        ).status_code == 403
        assert (
            await client.get("/api/v1/stream/files/987654321", headers=headers)
        ).status_code == 404
        assert (await client.get("/api/v1/stream/files/abc", headers=headers)).status_code == 404
        r = await client.get("/api/v1/stream", params={"channel": f"user:{other}"}, headers=headers)
        assert r.status_code == 403
        r = await client.get(
            "/api/v1/stream",
            params={"channel": ["user:" + user, "file:" + str(theirs)]},
            headers=headers,
        )
        assert r.status_code == 403
        r = await client.get("/api/v1/stream", params={"channel": "nope:1"}, headers=headers)
        assert r.status_code == 400


async def test_members_may_stream_a_shared_file(api, token, user, make_file):
    owner = f"{user}o"
    file_id = make_file(owner, members=(user,))
    async with sse(f"{api.url}/api/v1/stream/files/{file_id}", token(user)) as stream:
        assert stream.response.status_code == 200


async def test_ticket_opens_one_stream_once(api, token, user):
    async with httpx.AsyncClient(base_url=api.url) as client:
        r = await client.post(
            "/api/v1/stream/tickets", headers={"Authorization": f"Bearer {token(user)}"}
        )
        assert r.status_code == 201
        ticket = r.json()["ticket"]
        assert r.json()["expires_in"] == 60
        async with sse(
            f"{api.url}/api/v1/stream/notifications", params={"ticket": ticket}
        ) as stream:
            assert stream.response.status_code == 200
        again = await client.get("/api/v1/stream/notifications", params={"ticket": ticket})
        assert again.status_code == 401
        assert (await client.post("/api/v1/stream/tickets")).status_code == 401


async def test_tokens_never_reach_the_log(api, token, user):
    secret_token = token(user)
    async with httpx.AsyncClient(base_url=api.url) as client:
        r = await client.post(
            "/api/v1/stream/tickets", headers={"Authorization": f"Bearer {secret_token}"}
        )
        ticket = r.json()["ticket"]
    async with sse(f"{api.url}/api/v1/stream/notifications", params={"access_token": secret_token}):
        pass
    async with sse(f"{api.url}/api/v1/stream/notifications", params={"ticket": ticket}):
        pass
    log = api.log()
    assert "access_token=***" in log
    assert secret_token not in log
    assert ticket not in log


def _ws_url(api, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return api.url.replace("http", "ws") + "/api/v1/ws" + (f"?{query}" if query else "")


async def test_websocket_bad_token_closes_4001(api):
    async with websockets.connect(_ws_url(api, access_token="garbage")) as ws:
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd.code == 4001


async def test_websocket_closes_4001_with_auth_expired_when_the_token_expires(api, token, user):
    async with websockets.connect(_ws_url(api, access_token=token(user, ttl=2))) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel": f"user:{user}"}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                last = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert last["type"] == "auth_expired"
    assert info.value.rcvd.code == 4001


async def test_websocket_ping_subscribe_events_and_errors(api, token, user):
    import streams

    async with websockets.connect(_ws_url(api, access_token=token(user))) as ws:

        async def ask(message: object) -> dict:
            await ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))
            return json.loads(await ws.recv())

        assert await ask({"type": "ping"}) == {"type": "pong"}
        assert (await ask("{not json"))["type"] == "error"
        assert (await ask(b"\x00\x01"))["type"] == "error"
        assert (await ask({"type": "launch"}))["type"] == "error"
        assert (await ask({"type": "subscribe", "channel": "user:*"}))["type"] == "error"
        assert (await ask({"type": "subscribe", "channel": "user:someone-else"}))["type"] == "error"
        assert (await ask({"type": "subscribe", "channel": "file:999999999"}))["type"] == "error"
        assert await ask({"type": "subscribe", "channel": f"user:{user}"}) == {
            "type": "subscribed",
            "channel": f"user:{user}",
        }
        event_id = streams.publish(f"user:{user}", "job_progress", {"n": 1})
        envelope = json.loads(await ws.recv())
        assert envelope["id"] == event_id and envelope["type"] == "job_progress"
        assert await ask({"type": "ping"}) == {"type": "pong"}  # still usable after errors
        assert (await ask({"type": "unsubscribe", "channel": f"user:{user}"}))[
            "type"
        ] == "unsubscribed"
        streams.publish(f"user:{user}", "job_progress", {"n": 2})
        assert await ask({"type": "ping"}) == {"type": "pong"}  # nothing arrived in between
