"""What each transport writes, and the multi-channel stream's cursor."""

from __future__ import annotations

import pytest

from streams.envelope import InvalidEvent
from streams.subscriber import Subscriber
from streams.transports import SSE, SSE_MULTI, WEBSOCKET, decode_cursor, encode_cursor
from tests.fast.conftest import event


def test_cursor_round_trips_every_channel_position():
    positions = {"user:alice": (1000, 3), "file:7": (0, 0), "file:12": (1764096000000, 42)}
    cursor = encode_cursor(positions)
    assert "=" not in cursor and "+" not in cursor and "/" not in cursor  # header-safe
    assert decode_cursor(cursor) == positions


@pytest.mark.parametrize("bad", ["", "e30x", "bnVsbA", "W10", "eyJ1c2VyOngiOjF9", "!!!"])
def test_a_cursor_that_is_not_ours_is_refused(bad):
    if bad == "":
        assert decode_cursor(encode_cursor({})) == {}
        return
    with pytest.raises(InvalidEvent):
        decode_cursor(bad)


def test_the_multi_channel_stream_stamps_each_event_with_a_cursor_over_all_channels():
    sub = Subscriber("alice", ["user:alice", "file:7"], SSE_MULTI, 100)
    a, b = event("user:alice", 1), event("file:7", 2)
    chunk = SSE_MULTI.messages(sub, [a, b])[0]["body"]
    blocks = chunk.decode().split("\n\n")[:2]
    ids = [decode_cursor(block.split("\n")[0].removeprefix("id: ")) for block in blocks]
    assert ids == [
        {"user:alice": (1000, 1), "file:7": (0, 0)},
        {"user:alice": (1000, 1), "file:7": (1000, 2)},
    ]


def test_an_event_is_framed_once_per_transport_kind_not_per_connection():
    subs = [Subscriber(f"u{i}", ["file:7"], SSE, 100) for i in range(3)]
    e = event("file:7", 1)
    bodies = [SSE.messages(s, [e])[0]["body"] for s in subs]
    assert bodies[0] == bodies[1] == bodies[2]
    assert e.sse is not None and e.sse in bodies[0]  # cached on the event, reused
    frame = e.sse
    SSE.messages(subs[0], [e])
    assert e.sse is frame


def test_each_transport_frames_control_events_and_its_end():
    envelope = b'{"type":"reset"}'
    assert SSE.control("reset", envelope, "1-2") == (
        b'id: 1-2\nevent: reset\ndata: {"type":"reset"}\n\n'
    )
    assert SSE.control("auth_expired", envelope, None).startswith(b"event: auth_expired\n")
    assert WEBSOCKET.control("reset", envelope, "1-2") == envelope
    assert SSE.preamble(2000, None) == b"retry: 2000\n\n"
    assert SSE.preamble(2000, "5-0") == b"retry: 2000\nid: 5-0\n\n"
    assert WEBSOCKET.preamble(2000, "5-0") is None
    assert SSE.farewell(250) == b"retry: 250\n\n" and WEBSOCKET.farewell(250) is None
    assert SSE.ping is not None and WEBSOCKET.ping is None

    messages: list[dict] = []
    SSE.close("shutdown", messages)
    assert messages == [{"type": "http.response.body", "body": b"", "more_body": False}]
    messages = [{"type": "http.response.body", "body": b"x", "more_body": True}]
    SSE.close("shutdown", messages)
    assert messages[-1]["more_body"] is False and len(messages) == 1
    for reason, code in (("auth_expired", 4001), ("shutdown", 1000)):
        messages = []
        WEBSOCKET.close(reason, messages)
        assert messages == [{"type": "websocket.close", "code": code}]


def test_websocket_writes_one_text_frame_per_item():
    sub = Subscriber("alice", ["file:7"], WEBSOCKET, 100)
    e = event("file:7", 1)
    messages = WEBSOCKET.messages(sub, [e, b'{"type":"pong"}'])
    assert messages == [
        {"type": "websocket.send", "text": e.envelope.decode()},
        {"type": "websocket.send", "text": '{"type":"pong"}'},
    ]


async def test_a_live_event_shares_one_message_among_connections_and_a_closing_one_gets_its_own():
    written: list[tuple[str, dict[str, object]]] = []

    def recorder(name: str):
        async def send(message):
            written.append((name, message))

        return send

    subs = [Subscriber(f"u{i}", ["file:7"], SSE, 100) for i in range(3)]
    for i, sub in enumerate(subs):
        sub.send = recorder(f"u{i}")
        sub.go_live()
    e = event("file:7", 1)
    general = SSE.messages(subs[0], [e])[0]
    for sub in subs[:2]:
        assert sub.offer(e)
        sub.flush()
    assert subs[2].offer(e)
    subs[2].close("auth_expired")  # the same one event queued, and the stream's end
    (n0, m0), (n1, m1), (n2, m2) = written
    assert (n0, n1, n2) == ("u0", "u1", "u2")
    assert m0 is m1 and m0 == general  # the same bytes as the general path, one dict
    assert m2 is not m0 and m2["more_body"] is False
    assert m2["body"] == general["body"] and m0["more_body"] is True
