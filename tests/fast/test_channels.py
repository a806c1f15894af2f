"""Channel names: one channel, one name."""

from __future__ import annotations

import pytest

from streams.channels import (
    Channel,
    check_channel,
    file_channel,
    parse_channel,
    parse_file_id,
    user_channel,
)
from streams.envelope import InvalidEvent


def test_names_round_trip():
    assert parse_channel(user_channel("alice@x.io")) == Channel("user", "alice@x.io")
    assert parse_channel(file_channel(7)) == Channel("file", "7")
    assert check_channel(file_channel(0)) == "file:0"


@pytest.mark.parametrize(
    "name",
    ["file:01", "file:007", "file:+1", "file:-1", "file:1.0", "file:\u0661", "file:\u00b2",
     "file:" + "9" * 19, "file:", "user:", "user:a b", "USER:a", "topic:x", "user:" + "a" * 65],
)  # fmt: skip
def test_any_other_spelling_is_refused(name):
    with pytest.raises(InvalidEvent):
        parse_channel(name)
    with pytest.raises(InvalidEvent):
        check_channel(name)


def test_file_ids_are_read_only_in_their_canonical_form():
    assert parse_file_id("42") == 42
    assert parse_file_id("9" * 18) == int("9" * 18)
    for raw in ("042", "4_2", " 42", "42 ", "\u0664\u0662", "9" * 19, ""):
        assert parse_file_id(raw) is None
