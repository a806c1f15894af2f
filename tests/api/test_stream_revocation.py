"""Access taken away while streams are open: a member removed, a file deleted, elsewhere (a
bare database session, no service function): the streams lose the file at once, are told why,
and cannot come back, while everyone else's go on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy.orm import Session

import streams
from models import File, FileMember
from models.db import engine_for
from tests.conftest import DATABASE_URL
from tests.support import ApiServer, SSEStream, sse


def _remove_member(file_id: int, member: str) -> None:
    with Session(engine_for(DATABASE_URL)) as session:
        row = session.get(FileMember, (file_id, member))
        assert row is not None
        session.delete(row)
        session.commit()


def _delete_file(file_id: int) -> None:
    with Session(engine_for(DATABASE_URL)) as session:
        file = session.get(File, file_id)
        assert file is not None
        session.delete(file)
        session.commit()


async def _ws_next(ws: Any, timeout: float = 10.0) -> dict[str, Any]:
    """The next frame that is not presence."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if not str(frame.get("type", "")).startswith("presence"):
            return frame


async def _status(url: str, token: str) -> int:
    async with httpx.AsyncClient(timeout=10) as client:
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        async with client.stream("GET", url, headers=headers) as response:
            return response.status_code


async def _closed_after(stream: SSEStream) -> list[str]:
    """The event types the stream carried until the server ended it."""
    frames = await stream.until_closed(10)
    return [f.event for f in frames if not isinstance(f, str)]


async def test_a_member_removed_elsewhere_loses_the_file_on_every_stream_at_once(
    api: ApiServer, make_file: Callable[..., int], token: Callable[..., str], user: str
) -> None:
    lee = f"{user}-lee"
    file_id = make_file(user, members=(lee,))
    channel = f"file:{file_id}"
    base = f"{api.url}/api/v1"
    single_url = f"{base}/stream/files/{file_id}"
    multi = {"channel": [f"user:{lee}", channel]}
    ws_url = api.url.replace("http", "ws") + f"/api/v1/ws?access_token={token(lee)}"
    async with (
        sse(single_url, token(user)) as owners,
        sse(single_url, token(lee)) as lees,
        sse(f"{base}/stream", token(lee), params=multi) as lees_multi,
        websockets.connect(ws_url) as ws,
    ):
        await ws.send(json.dumps({"type": "subscribe", "channel": channel}))
        assert (await _ws_next(ws))["type"] == "subscribed"
        await asyncio.sleep(0.3)  # every stream live

        await asyncio.to_thread(_remove_member, file_id, lee)

        # The owner learns who still shares the file, and goes on.
        got = await owners.next_event(15)
        assert got.event == "file_members" and got.envelope["data"]["members"] == []
        # Lee's file stream: told why, then ended; it never sees the new member list.
        revoked = await lees.next_event(15)
        assert revoked.event == "access_revoked"
        assert revoked.envelope["channel"] == channel
        assert revoked.envelope["data"] == {
            "channel": channel,
            "reason": "no longer a member of this file",
        }
        assert await _closed_after(lees) == []
        # Lee's stream over two channels loses the file only.
        revoked = await lees_multi.next_event(15)
        assert revoked.event == "access_revoked" and revoked.envelope["data"]["channel"] == channel
        # The socket is unsubscribed, in its own protocol's words, and stays open.
        assert await _ws_next(ws, 15) == {
            "type": "unsubscribed",
            "channel": channel,
            "reason": "no longer a member of this file",
        }

        streams.publish(channel, "metric_update", {"file_id": file_id, "n": 1})
        streams.publish(f"user:{lee}", "job_progress", {"n": 2})
        assert (await owners.next_event()).envelope["data"]["n"] == 1
        after = await lees_multi.next_event()
        assert after.envelope["channel"] == f"user:{lee}" and after.envelope["data"]["n"] == 2
        await ws.send(json.dumps({"type": "ping"}))
        assert await _ws_next(ws) == {"type": "pong"}  # nothing of the file came before it
        await lees_multi.no_event(0.5)

    # Coming back is refused at once (the API's cached grant was forgotten), on every route.
    assert await _status(single_url, token(lee)) == 403
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel": channel}))
        reply = await _ws_next(ws)
        assert reply["type"] == "error" and "not a member" in reply["error"]


async def test_a_file_deleted_elsewhere_ends_its_streams_after_saying_so(
    api: ApiServer, make_file: Callable[..., int], token: Callable[..., str], user: str
) -> None:
    lee = f"{user}-lee"
    file_id = make_file(user, members=(lee,))
    url = f"{api.url}/api/v1/stream/files/{file_id}"
    async with sse(url, token(user)) as owners, sse(url, token(lee)) as lees:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(_delete_file, file_id)
        for stream in (owners, lees):
            kinds = await _closed_after(stream)
            assert kinds == ["file_deleted", "access_revoked"], kinds
    assert await _status(url, token(user)) == 404


async def test_a_members_event_that_names_no_members_takes_nothing_away(
    api: ApiServer, make_file: Callable[..., int], token: Callable[..., str], user: str
) -> None:
    """A producer's malformed ``file_members`` is delivered as it is and cuts no one off."""
    lee = f"{user}-lee"
    file_id = make_file(user, members=(lee,))
    channel = f"file:{file_id}"
    async with sse(f"{api.url}/api/v1/stream/files/{file_id}", token(lee)) as lees:
        await asyncio.sleep(0.3)
        streams.publish(channel, "file_members", {"file_id": file_id, "members": "everyone"})
        streams.publish(channel, "metric_update", {"file_id": file_id, "n": 1})
        kinds = [e.event for e in await lees.events(2)]
        assert kinds == ["file_members", "metric_update"]


@pytest.mark.parametrize("removed", ["member", "file"])
async def test_a_grant_cached_before_the_change_does_not_let_a_stream_back_in(
    api: ApiServer,
    make_file: Callable[..., int],
    token: Callable[..., str],
    user: str,
    removed: str,
) -> None:
    """The stream was opened (and its grant cached) moments before; it closed before the
    change, so no stream of it was there to be cut: the process still forgets the grant."""
    lee = f"{user}-lee"
    file_id = make_file(user, members=(lee,))
    url = f"{api.url}/api/v1/stream/files/{file_id}"
    async with sse(url, token(lee)):
        pass
    async with sse(url, token(user)) as owners:  # the process carries the channel
        await asyncio.sleep(0.3)
        if removed == "member":
            await asyncio.to_thread(_remove_member, file_id, lee)
            assert (await owners.next_event(15)).event == "file_members"
        else:
            await asyncio.to_thread(_delete_file, file_id)
            assert (await owners.next_event(15)).event == "file_deleted"
    assert await _status(url, token(lee)) == (403 if removed == "member" else 404)
