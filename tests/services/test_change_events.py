"""Issue 14, item 1: a write through a bare SQLAlchemy session (no service function, no outbox
call) reaches the stream; a service's own event is not doubled; an uncovered bulk statement
is refused with a clear error. Runs on either database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import pytest
import redis
from sqlalchemy import update
from sqlalchemy.orm import Session

from core.settings import get_settings
from models import File, FileMember, FileParameter, FinancialDataRow, Notification, session_scope
from models.change_events import BulkChangeRefused
from models.db import engine_for
from services.access import ensure_user
from services.files import add_member, set_parameter
from services.notifications import unread_count
from services.notify import create_notification
from streams.history import event_from_entry
from streams.keys import history_key
from tests.conftest import DATABASE_URL
from tests.fixtures_workers import events_until
from tests.support import ApiServer, sse


def stored(redis_client: redis.Redis, channel: str) -> list[dict[str, Any]]:
    entries = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        redis_client.xrange(history_key(get_settings().redis_prefix, channel)),
    )
    return [event_from_entry(i, f).as_dict() for i, f in entries if b"e" in f]


async def test_a_bare_session_write_reaches_the_file_stream(
    api: ApiServer, make_file: Callable[..., int], token: Callable[..., str], user: str
) -> None:
    file_id = make_file(user)
    async with sse(f"{api.url}/api/v1/stream/files/{file_id}", token(user)) as stream:
        with Session(engine_for(DATABASE_URL)) as session:
            session.add(
                FileParameter(file_id=file_id, name="tax_rate", value="0.3", updated_by=user)
            )
            session.add(
                FinancialDataRow(
                    file_id=file_id,
                    position=0,
                    period="2026-03",
                    statement="income",
                    line_item="revenue",
                    amount="10.00",
                    currency="USD",
                )
            )
            session.commit()
        seen = await events_until(stream, lambda got: len(got) >= 2, 20)
    by_type = {e.event: e.envelope["data"] for e in seen}
    financial = by_type["financial_data_update"]
    assert financial["file_id"] == file_id and financial["statement_id"] == "income"
    assert financial["periods"] == ["2026-03"] and financial["rows"] == 1
    assert financial["updated_at"].endswith("Z")
    parameter = by_type["parameter_update"]
    assert parameter["parameter_id"] == "tax_rate" and parameter["value"] == "0.3"
    assert parameter["updated_by"] == user and parameter["updated_at"].endswith("Z")


def test_a_service_event_is_not_doubled(
    make_file: Callable[..., int], redis_client: redis.Redis, user: str
) -> None:
    file_id = make_file(user)
    with session_scope(DATABASE_URL) as session:
        file = session.get(File, file_id)
        assert file is not None
        set_parameter(session, file, "growth_rate", "0.2", user)
    events = [e for e in stored(redis_client, f"file:{file_id}") if e["type"] == "parameter_update"]
    assert len(events) == 1, events
    assert events[0]["data"]["previous"] is None  # the service's own, richer event


def test_an_uncovered_bulk_update_is_refused_and_changes_nothing(
    make_file: Callable[..., int], user: str
) -> None:
    file_id = make_file(user)
    with pytest.raises(BulkChangeRefused, match="publishes no events"):
        with session_scope(DATABASE_URL) as session:
            session.execute(
                update(FileParameter).where(FileParameter.file_id == file_id).values(value="0.5")
            )


async def test_bare_session_inbox_writes_reach_the_person_with_their_counts(
    api: ApiServer, token: Callable[..., str], user: str, redis_client: redis.Redis
) -> None:
    with session_scope(DATABASE_URL) as session:
        ensure_user(session, user)
    async with sse(f"{api.url}/api/v1/stream/notifications", token(user)) as stream:
        with Session(engine_for(DATABASE_URL)) as session:
            session.add(
                Notification(
                    id="n-bare-1",
                    user_id=user,
                    type="system_update",
                    title="Ledger fixed",
                    message="An amount was corrected by hand.",
                    data={},
                )
            )
            session.commit()
            n = session.get(Notification, "n-bare-1")
            assert n is not None
            n.is_read = True
            session.commit()
            n.archived_at = datetime.now(UTC)
            session.commit()
            session.delete(n)
            session.commit()
        seen = await events_until(stream, lambda got: len(got) >= 4, 20)
    kinds = [e.event for e in seen]
    assert kinds == [
        "notification",
        "notification_read",
        "notification_archived",
        "notification_dismissed",
    ], kinds
    created = seen[0].envelope["data"]
    assert created["id"] == "n-bare-1" and created["title"] == "Ledger fixed"
    assert created["unread_count"] == 1
    assert seen[1].envelope["data"]["unread_count"] == 0
    assert seen[2].envelope["data"]["ids"] == ["n-bare-1"]


def test_a_service_notification_and_a_digest_inside_its_interval_are_not_doubled(
    redis_client: redis.Redis, user: str
) -> None:
    with session_scope(DATABASE_URL) as session:
        create_notification(session, user, "system_update", "One", "first")
    for _ in range(3):  # a burst: one toast, then at most one update per interval
        with session_scope(DATABASE_URL) as session:
            create_notification(
                session, user, "data_quality_issue", "Bad row", "row 3", group="file:1"
            )
    kinds = [e["type"] for e in stored(redis_client, f"user:{user}")]
    assert kinds.count("notification") == 2, kinds
    assert kinds.count("notification_updated") <= 1, kinds


async def test_a_status_change_and_a_new_member_reach_the_file_stream(
    api: ApiServer, make_file: Callable[..., int], token: Callable[..., str], user: str
) -> None:
    file_id = make_file(user)
    async with sse(f"{api.url}/api/v1/stream/files/{file_id}", token(user)) as stream:
        with Session(engine_for(DATABASE_URL)) as session:
            ensure_user(session, f"{user}-lee")
            file = session.get(File, file_id)
            assert file is not None
            file.status, file.error = "failed", "restated by hand"
            session.add(FileMember(file_id=file_id, user_id=f"{user}-lee", role="viewer"))
            session.commit()
        seen = await events_until(stream, lambda got: len(got) >= 2, 20)
    by_type = {e.event: e.envelope["data"] for e in seen}
    assert by_type["file_processing"]["status"] == "failed"
    assert by_type["file_processing"]["error"] == "restated by hand"
    members = by_type["file_members"]
    assert members["owner_id"] == user
    assert members["members"] == [{"user_id": f"{user}-lee", "role": "viewer"}]


def test_sharing_through_the_service_announces_the_members_once(
    make_file: Callable[..., int], redis_client: redis.Redis, user: str
) -> None:
    file_id = make_file(user)
    for _ in range(2):  # the second share changes nothing
        with session_scope(DATABASE_URL) as session:
            file = session.get(File, file_id)
            assert file is not None
            add_member(session, file, f"{user}-kim", user)
    events = [e for e in stored(redis_client, f"file:{file_id}") if e["type"] == "file_members"]
    assert events and events[-1]["data"]["members"] == [
        {"user_id": f"{user}-kim", "role": "viewer"}
    ]


def test_an_uncovered_bulk_update_of_notifications_is_refused(user: str) -> None:
    with session_scope(DATABASE_URL) as session:
        create_notification(session, user, "system_update", "One", "first")
    with pytest.raises(BulkChangeRefused, match="notifications"):
        with session_scope(DATABASE_URL) as session:
            session.execute(
                update(Notification).where(Notification.user_id == user).values(is_read=True)
            )
    with session_scope(DATABASE_URL) as session:
        assert unread_count(session, user) == 1
