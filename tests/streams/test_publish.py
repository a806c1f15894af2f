"""Publishing: one atomic append-and-wake, validated input, idempotent with a dedupe token."""

from __future__ import annotations

import pytest

import streams
from core.settings import get_settings
from streams.envelope import InvalidEvent, parse_id
from streams.keys import history_key


def test_publish_appends_to_history_with_increasing_ids(redis_client, user):
    channel = f"user:{user}"
    ids = [streams.publish(channel, "job_progress", {"n": i}) for i in range(5)]
    assert [parse_id(i) for i in ids] == sorted(parse_id(i) for i in ids)
    entries = redis_client.xrange(history_key(get_settings().redis_prefix, channel))
    assert [e[0].decode() for e in entries] == ids


@pytest.mark.parametrize(
    ("channel", "type_", "data"),
    [
        ("user:a b", "x", {}),
        ("nope:1", "x", {}),
        ("user:a", "Bad-Type", {}),
        ("user:a", "reset", {}),
        ("user:a", "ok", {"x": object()}),
        ("user:a", "ok", {"x": "y" * 70_000}),
    ],
)
def test_publish_refuses_bad_input(channel, type_, data):
    with pytest.raises(InvalidEvent):
        streams.publish(channel, type_, data)


def test_dedupe_token_publishes_once(redis_client, user):
    from streams.publish import default_publisher

    channel = f"user:{user}"
    first = default_publisher().publish(channel, "notification", {"a": 1}, dedupe="tok1")
    again = default_publisher().publish(channel, "notification", {"a": 1}, dedupe="tok1")
    assert first == again
    assert redis_client.xlen(history_key(get_settings().redis_prefix, channel)) == 1
