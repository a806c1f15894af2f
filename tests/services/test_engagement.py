"""Engagement counters are added to Redis only when the change commits: a rolled-back
notification counts nothing, a committed one counts once, a muted one not at all."""

from __future__ import annotations

import pytest
import redis

from core.settings import get_settings
from models import session_scope
from services import engagement
from services.notify import create_notification
from services.preferences import update_preferences
from streams.keys import engagement_key


def created(client: redis.Redis, type: str) -> int:
    raw = client.hgetall(engagement_key(get_settings().redis_prefix))
    return engagement.parse(raw).get(("created", type), 0)  # type: ignore[arg-type]


class Boom(Exception):
    pass


def test_only_committed_notifications_are_counted(redis_client: redis.Redis, user: str) -> None:
    before = created(redis_client, "scheduled_report")
    with pytest.raises(Boom), session_scope() as session:
        create_notification(session, user, "scheduled_report", "t", "m")
        raise Boom
    assert created(redis_client, "scheduled_report") == before

    with session_scope() as session:
        create_notification(session, user, "scheduled_report", "t", "m")
    assert created(redis_client, "scheduled_report") == before + 1

    with session_scope() as session:
        update_preferences(session, user, {"scheduled_report": {"inbox": False, "toast": False}})
    with session_scope() as session:
        create_notification(session, user, "scheduled_report", "muted", "m")
    assert created(redis_client, "scheduled_report") == before + 1
