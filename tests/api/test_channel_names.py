"""One channel, one name: a file id written any other way than ``str(int)`` names nothing.

Against a real server: ``/stream/files/01`` once opened a channel ``file:01`` of its own that
never got file 1's events, and publishing to ``file:01`` was accepted.
"""

from __future__ import annotations

import json

import httpx
import pytest
import websockets

import streams
from tests.support import sse

ALIASES = ["01", "001", "+1", "1.0", "0x1", " 1"]


@pytest.fixture
def owned(user, make_file) -> int:
    return make_file(user)


def _aliases(file_id: int) -> list[str]:
    return [a.replace("1", str(file_id), 1) if a != "0x1" else hex(file_id) for a in ALIASES]


async def test_a_file_stream_opens_under_its_one_name_only(api, token, user, owned):
    headers = {"Authorization": f"Bearer {token(user)}"}
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        for alias in _aliases(owned):
            r = await client.get(f"/api/v1/stream/files/{alias}", headers=headers)
            assert r.status_code == 404, (alias, r.status_code, r.text)
            r = await client.get(
                "/api/v1/stream", params={"channel": f"file:{alias}"}, headers=headers
            )
            assert r.status_code == 400, (alias, r.status_code, r.text)
            assert "without leading zeros" in r.json()["detail"]
    # The canonical name still streams the file's events.
    async with sse(f"{api.url}/api/v1/stream/files/{owned}", token(user)) as stream:
        event_id = streams.publish(f"file:{owned}", "metric_update", {"n": 1})
        assert (await stream.next_event()).id == event_id


async def test_history_and_publishing_refuse_an_alias(api, token, user, owned):
    reader = {"Authorization": f"Bearer {token(user)}"}
    service = {"Authorization": f"Bearer {token(f'{user}-svc', scope='publish')}"}
    body = {"type": "metric_update", "data": {"n": 1}}
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        for alias in ["0" + str(owned), "00" + str(owned)]:
            r = await client.get(f"/api/v1/events/file:{alias}", headers=reader)
            assert r.status_code == 400, (alias, r.status_code, r.text)
            r = await client.post(f"/api/v1/events/file:{alias}", json=body, headers=service)
            assert r.status_code == 400, (alias, r.status_code, r.text)
        # Nothing was stored under the alias, and the real channel is untouched.
        r = await client.get(f"/api/v1/events/file:{owned}", headers=reader)
        assert r.status_code == 200 and r.json()["events"] == []


async def test_websocket_subscribe_refuses_an_alias(api, token, user, owned):
    url = api.url.replace("http", "ws") + f"/api/v1/ws?access_token={token(user)}"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel": f"file:0{owned}"}))
        reply = json.loads(await ws.recv())
        assert reply["type"] == "error" and "without leading zeros" in reply["error"]
        await ws.send(json.dumps({"type": "subscribe", "channel": f"file:{owned}"}))
        reply = json.loads(await ws.recv())  # it also carries the file's presence
        assert (reply["type"], reply["channel"]) == ("subscribed", f"file:{owned}")
