"""Where a reconnecting client starts, given what its channel's history still holds."""

from __future__ import annotations

import pytest

from streams.history import Bounds, ResumePlan, plan_resume

HISTORY = Bounds(existed=True, first=(100, 0), head=(200, 5))


def test_a_client_without_a_position_starts_at_the_head_without_replay():
    assert plan_resume(None, HISTORY) == ResumePlan(None, False, (200, 5))


def test_a_client_behind_the_head_replays_from_its_position():
    assert plan_resume((150, 0), HISTORY) == ResumePlan(None, True, (150, 0))


def test_a_client_at_the_oldest_kept_event_still_replays():
    assert plan_resume((100, 0), HISTORY) == ResumePlan(None, True, (100, 0))


def test_a_client_at_the_head_has_nothing_to_replay():
    assert plan_resume((200, 5), HISTORY) == ResumePlan(None, False, (200, 5))


@pytest.mark.parametrize(
    ("last", "bounds", "reason"),
    [
        ((99, 9), HISTORY, "history_trimmed"),
        ((200, 6), HISTORY, "unknown_position"),
        ((150, 0), Bounds(existed=False, first=(300, 0), head=(300, 0)), "history_lost"),
        # Published to since it was lost, never trimmed: still lost, not trimmed.
        ((150, 0), Bounds(existed=True, first=(300, 0), head=(310, 0), whole=True), "history_lost"),
    ],
)
def test_a_gap_history_cannot_fill_is_a_reset_to_the_head_never_silence(last, bounds, reason):
    plan = plan_resume(last, bounds)
    assert plan == ResumePlan(reason, False, bounds.head)


def test_0_0_replays_a_history_that_holds_its_beginning():
    """Regression: ``Last-Event-ID: 0-0`` got ``reset`` (history_lost) from a channel whose
    history still held every event since it began."""
    whole = Bounds(existed=True, first=(300, 0), head=(310, 0), whole=True)
    assert plan_resume((0, 0), whole) == ResumePlan(None, True, (0, 0))
    # A channel without history yet (created by this very read): nothing to replay, no reset.
    new = Bounds(existed=False, first=(300, 0), head=(300, 0), whole=True)
    assert plan_resume((0, 0), new) == ResumePlan(None, False, (300, 0))


def test_0_0_on_a_trimmed_history_is_a_reset():
    trimmed = Bounds(existed=True, first=(300, 0), head=(310, 0), whole=False)
    assert plan_resume((0, 0), trimmed) == ResumePlan("history_trimmed", False, (310, 0))
