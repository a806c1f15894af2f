"""A slow client's queue: keyed events supersede older ones with the same key; unkeyed ones are
never dropped, and a queue still over its limit closes the connection ("slow")."""

from __future__ import annotations

from streams.subscriber import Subscriber
from streams.transports import PING, SSE
from tests.fast.conftest import event

CHANNEL = "file:7"


def live_subscriber(limit: int) -> Subscriber:
    sub = Subscriber("alice", [CHANNEL], SSE, limit)  # no socket: nothing is written
    sub.live = True
    return sub


def test_a_superseded_keyed_event_is_dropped_for_a_slow_client():
    sub = live_subscriber(limit=4)
    old_revenue = event(CHANNEL, 1, key="revenue")
    margin = event(CHANNEL, 2, key="margin")
    note = event(CHANNEL, 3)
    new_revenue = event(CHANNEL, 4, key="revenue")
    for e in (old_revenue, margin, note, new_revenue):
        sub.offer(e)
    # The queue reached its limit: the older revenue went, everything else kept, in order.
    assert sub.pending == [margin, note, new_revenue]
    assert sub.closing is None


def test_keys_are_per_channel():
    sub = Subscriber("alice", [CHANNEL, "user:alice"], SSE, 3)
    sub.live = True
    a = event(CHANNEL, 1, key="k")
    b = event("user:alice", 2, key="k")
    c = event(CHANNEL, 3, key="k")
    for e in (a, b, c):
        sub.offer(e)
    assert sub.pending == [b, c]


def test_queued_pings_are_dropped_first():
    sub = live_subscriber(limit=3)
    sub.queue_raw(PING)
    first, second = event(CHANNEL, 1), event(CHANNEL, 2)
    sub.offer(first)
    sub.offer(second)
    assert sub.pending == [first, second]


def test_a_client_still_over_its_limit_after_conflation_is_closed_as_slow():
    finished: list[str] = []
    sub = live_subscriber(limit=3)
    sub.on_finish = lambda s, reason: finished.append(reason)
    for seq in range(1, 4):
        sub.offer(event(CHANNEL, seq))  # unkeyed: nothing may be dropped
    assert sub.closing == "slow"
    assert sub.pending == []  # its reconnect resumes from history instead
    assert finished == ["slow"]
    assert sub.offer(event(CHANNEL, 4)) is False


def test_duplicates_and_held_events_while_catching_up():
    sub = Subscriber("alice", [CHANNEL], SSE, 10)
    early = event(CHANNEL, 5)
    assert sub.offer(early) is False  # not live yet: held
    sub.positions[CHANNEL] = (1000, 5)  # history delivered up to 5
    later = event(CHANNEL, 6)
    sub.offer(later)
    sub.go_live()
    assert sub.pending == [later]  # 5 came from history: never twice
