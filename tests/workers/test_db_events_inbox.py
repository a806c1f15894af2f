"""Database events on PostgreSQL for notifications, files and file members (migration 0008):
changes made by a plain psycopg connection (as psql or another service would) reach the
person's and the file's streams with the payloads the services give, and the application's
own changes are announced once, not again by the triggers.

Runs with FINRT_TEST_DATABASE_URL naming PostgreSQL; skipped on SQLite (no triggers there).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from models import session_scope
from services.notifications import mark_read
from services.notify import create_notification
from tests.conftest import DATABASE_URL, PG_SCHEMA
from tests.fixtures_workers import events_until
from tests.support import ApiServer, sse
from tests.workers.test_db_events import outside, start_relay, stored, wait_until

pytestmark = pytest.mark.skipif(PG_SCHEMA is None, reason="PostgreSQL only (triggers)")
__all__ = ["start_relay"]  # the fixture, used by name


def _insert_notification(user: str, nid: str) -> None:
    with outside() as conn:
        conn.execute(
            "INSERT INTO users (id, created_at) VALUES (%s, now()) ON CONFLICT DO NOTHING", (user,)
        )
        conn.execute(
            "INSERT INTO notifications (id, user_id, type, title, message, data, priority, "
            "is_read, is_dismissed, created_at, actions, count, announced_count) VALUES "
            "(%s, %s, 'system_update', 'Ledger fixed', 'Corrected by hand.', '{\"by\": \"dba\"}', "
            "'high', false, false, now(), "
            '\'[{"label": "Open", "kind": "link", "url": "/files/1"}]\', 1, 1)',
            (nid, user),
        )
        conn.commit()


def _outside(sql: str, *args: Any) -> None:
    with outside() as conn:
        conn.execute(sql, args or None)
        conn.commit()


async def test_psql_writes_to_the_inbox_reach_the_person_as_the_api_shows_them(
    api: ApiServer, token: Callable[..., str], start_relay: Any
) -> None:
    relay = start_relay()
    user, nid = f"dbi{time.monotonic_ns()}", str(uuid.uuid4())
    await asyncio.to_thread(wait_until, lambda: relay.active, 30, "the relay")
    _outside("INSERT INTO users (id, created_at) VALUES (%s, now())", user)
    async with sse(f"{api.url}/api/v1/stream/notifications", token(user)) as stream:
        await asyncio.sleep(0.5)  # the stream is live
        _insert_notification(user, nid)
        _outside("UPDATE notifications SET is_read = true, read_at = now() WHERE id = %s", nid)
        _outside("UPDATE notifications SET announced_at = now() WHERE id = %s", nid)  # bookkeeping
        _outside("UPDATE notifications SET archived_at = now() WHERE id = %s", nid)
        _outside("UPDATE notifications SET archived_at = NULL WHERE id = %s", nid)
        _outside("DELETE FROM notifications WHERE id = %s", nid)
        seen = await events_until(stream, lambda got: len(got) >= 5, 30)
    assert [e.event for e in seen] == [
        "notification",
        "notification_read",
        "notification_archived",
        "notification_unarchived",
        "notification_dismissed",
    ], [e.event for e in seen]
    created = seen[0].envelope["data"]
    assert created["unread_count"] == 1
    assert created["data"] == {"by": "dba"} and created["priority"] == "high"
    assert created["actions"] == [
        {"label": "Open", "kind": "link", "url": "/files/1", "done_at": None}
    ]
    assert created["created_at"].endswith("Z") and created["read_at"] is None
    assert seen[1].envelope["data"]["unread_count"] == 0
    archived = seen[2].envelope["data"]
    assert archived["ids"] == [nid] and archived["counts"]["unread"] == 0
    assert seen[3].envelope["data"]["id"] == nid and seen[3].envelope["data"]["is_read"] is True


async def test_the_event_of_a_psql_insert_matches_the_rest_api(
    api: ApiServer, token: Callable[..., str], start_relay: Any
) -> None:
    relay = start_relay()
    user, nid = f"dbj{time.monotonic_ns()}", str(uuid.uuid4())
    await asyncio.to_thread(wait_until, lambda: relay.active, 30, "the relay")
    _insert_notification(user, nid)
    await asyncio.to_thread(
        wait_until, lambda: bool(stored(f"user:{user}")), 30, "the notification's event"
    )
    event = stored(f"user:{user}")[0]["data"]
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        listed = await client.get(
            "/api/v1/notifications", headers={"Authorization": f"Bearer {token(user)}"}
        )
    assert listed.status_code == 200, listed.text
    [shown] = [n for n in listed.json()["notifications"] if n["id"] == nid]
    assert {k: v for k, v in event.items() if k != "unread_count"} == shown


async def test_psql_changes_to_a_file_and_its_members_reach_the_file_stream(
    api: ApiServer, make_file: Callable[..., int], token: Callable[..., str], start_relay: Any
) -> None:
    relay = start_relay()
    user = f"dbf{time.monotonic_ns()}"
    file_id = make_file(user)
    await asyncio.to_thread(wait_until, lambda: relay.active, 30, "the relay")
    async with sse(f"{api.url}/api/v1/stream/files/{file_id}", token(user)) as stream:
        await asyncio.sleep(0.5)
        _outside("UPDATE files SET status = 'failed', error = 'restated' WHERE id = %s", file_id)
        _outside("INSERT INTO users (id, created_at) VALUES (%s, now())", f"{user}-a")
        _outside("INSERT INTO users (id, created_at) VALUES (%s, now())", f"{user}-b")
        _outside(
            "INSERT INTO file_members (file_id, user_id, role, created_at) VALUES "
            "(%s, %s, 'viewer', now()), (%s, %s, 'viewer', now())",
            file_id,
            f"{user}-a",
            file_id,
            f"{user}-b",
        )
        # Its rows and a parameter go with it (ON DELETE CASCADE): announced by file_deleted.
        _outside(
            "INSERT INTO financial_rows (file_id, position, period, statement, line_item, amount,"
            " currency) VALUES (%s, 1, '2026-01', 'income', 'revenue', '1.00', 'USD'),"
            " (%s, 2, '2026-01', 'balance', 'cash', '2.00', 'USD')",
            file_id,
            file_id,
        )
        _outside(
            "INSERT INTO file_parameters (file_id, name, value, updated_by, updated_at) "
            "VALUES (%s, 'tax_rate', '0.2', %s, now())",
            file_id,
            user,
        )
        seen = await events_until(
            stream, lambda got: [e.event for e in got].count("parameter_update") == 1, 30
        )
        _outside("DELETE FROM files WHERE id = %s", file_id)
        seen += await events_until(
            stream, lambda got: any(e.event == "file_deleted" for e in got), 30
        )
        # Then the stream is told its channel is gone, and ends (streams/revocation.py).
        frames = await stream.until_closed(10)
        assert [f.event for f in frames if not isinstance(f, str)] == ["access_revoked"]
    kinds = [e.event for e in seen]
    assert kinds == [
        "file_processing",
        "file_members",
        "financial_data_update",
        "financial_data_update",
        "parameter_update",
        "file_deleted",
    ], kinds
    status = seen[0].envelope["data"]
    assert status["status"] == "failed" and status["error"] == "restated"
    assert status["source"] == "database"
    members = seen[1].envelope["data"]["members"]  # one event for the two-row statement
    assert [m["user_id"] for m in members] == [f"{user}-a", f"{user}-b"]


async def test_the_applications_own_inbox_writes_are_announced_once(start_relay: Any) -> None:
    relay = start_relay()
    user = f"dbk{time.monotonic_ns()}"
    await asyncio.to_thread(wait_until, lambda: relay.active, 30, "the relay")
    with session_scope(DATABASE_URL) as session:
        n = create_notification(session, user, "system_update", "Hello", "once")
        nid = n.id
    with session_scope(DATABASE_URL) as session:
        mark_read(session, user, nid)
    await asyncio.sleep(1.5)  # time for a relay that would publish a trigger's copy
    kinds = [e["type"] for e in stored(f"user:{user}")]
    assert kinds == ["notification", "notification_read"], kinds
