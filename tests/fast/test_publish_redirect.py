"""A MOVED or ASK answer to a replica-acknowledged publish makes the publisher read the cluster's
slot map again: redis-py hands those answers over as MovedError/AskError, whose text is only
"slot host:port", so they must be recognised by their class (seen: a publisher that kept
sending to the old primary for a minute after a failover)."""

from __future__ import annotations

import pytest
import redis

from streams.publish import _redirected

pytestmark = pytest.mark.fast


def test_moved_and_ask_answers_are_redirects_whatever_their_text() -> None:
    assert _redirected(redis.exceptions.MovedError("3999 127.0.0.1:7000"))
    assert _redirected(redis.exceptions.AskError("3999 127.0.0.1:7000"))
    assert _redirected(redis.ResponseError("MOVED 3999 127.0.0.1:7000"))
    assert not _redirected(redis.ResponseError("NOSCRIPT No matching script"))
    assert not _redirected("1764700000000-0")
