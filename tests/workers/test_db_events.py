"""Issue 14 on PostgreSQL: changes made outside the application (a plain psycopg connection, as
psql or another service would) reach the streams through the triggers and the relay.

Runs with FINRT_TEST_DATABASE_URL naming PostgreSQL; skipped on SQLite (no triggers there).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import psycopg
import pytest
import redis

from core.settings import get_settings
from streams.history import event_from_entry
from streams.keys import history_key
from tests.conftest import DATABASE_URL, PG_SCHEMA
from tests.fixtures_workers import assert_quiet, events_until, upload_csv, wait_for
from tests.support import BIN, ROOT, ApiServer, make_token, sse
from workers.relay import psycopg_dsn

FINANCIAL = "financial_data_update"
pytestmark = pytest.mark.skipif(PG_SCHEMA is None, reason="PostgreSQL only (triggers)")

CSV = (
    b"period,statement,line_item,amount,currency\n"
    b"2026-01,income,revenue,1000.00,USD\n2026-01,income,cogs,400.00,USD\n"
    b"2026-02,income,revenue,1100.00,USD\n2026-02,income,cogs,420.00,USD\n"
)


class RelayProcess:
    """``finrt relay`` in a process group of its own."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str) -> None:
        self.env, self.log_path = env, log_dir / f"{name}.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "finrt"), "relay"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(ROOT),
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def active(self) -> bool:
        return "relay: active" in self.log()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        self.process.wait(15)


@pytest.fixture
def start_relay(worker_env: dict[str, str], tmp_root: Path) -> Iterator[Callable[[], RelayProcess]]:
    started: list[RelayProcess] = []

    def _start() -> RelayProcess:
        relay = RelayProcess(worker_env, tmp_root, f"relay-{len(started)}-{time.monotonic_ns()}")
        started.append(relay)
        return relay

    yield _start
    for relay in started:
        relay.kill(signal.SIGTERM)


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def outside() -> psycopg.Connection[Any]:
    """A plain connection, as psql would open one: no project code, no ``finrt.origin``."""
    conn = psycopg.connect(psycopg_dsn(DATABASE_URL))
    return conn


def stored(channel: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(get_settings().redis_url)
    try:
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            client.xrange(history_key(get_settings().redis_prefix, channel)),
        )
        return [event_from_entry(i, f).as_dict() for i, f in entries if b"e" in f]
    finally:
        client.close()


def unpublished() -> int:
    with outside() as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()
        return int(row[0]) if row else 0


async def processed_file(api: ApiServer, env: dict[str, str], user: str) -> int:
    headers = {"Authorization": f"Bearer {make_token(env, user)}"}
    async with httpx.AsyncClient(timeout=30) as client:
        response = await upload_csv(client, api.url, headers, CSV)
        assert response.status_code == 202, response.text
        file_id = int(response.json()["file_id"])
        await wait_for(
            client,
            f"{api.url}/api/v1/files/{file_id}",
            headers,
            lambda b: b["status"] in ("processed", "failed"),
            60,
        )
    return file_id


async def test_psql_update_reaches_an_open_file_stream_with_recalculated_figures(
    producers_api: ApiServer, celery_worker: Any, worker_env: dict[str, str], start_relay: Any
) -> None:
    relay = start_relay()
    user = f"dbe{time.monotonic_ns()}"
    file_id = await processed_file(producers_api, worker_env, user)
    await asyncio.to_thread(wait_until, lambda: relay.active, 30, "the relay")
    url = f"{producers_api.url}/api/v1/stream/files/{file_id}"
    async with sse(url, make_token(worker_env, user)) as stream:
        await asyncio.sleep(0.5)  # the stream is live
        with outside() as conn:
            conn.execute(
                "UPDATE financial_rows SET amount = '2000.00' "
                "WHERE file_id = %s AND period = '2026-02' AND line_item = 'revenue'",
                (file_id,),
            )
            conn.commit()
        seen = await events_until(
            stream,
            lambda got: (
                any(e.event == "chart_data_update" for e in got)
                and any(e.event == "metric_update" for e in got)
            ),
            60,
        )
    first = seen[0].envelope
    assert first["type"] == "financial_data_update", seen
    data = first["data"]
    assert data["file_id"] == file_id and data["statement_id"] == "income", data
    assert data["rows"] == 1 and data["periods"] == ["2026-02"], data
    assert data["source"] == "database" and data["updated_at"].endswith("Z"), data
    revenue = [e.envelope["data"] for e in seen if e.event == "metric_update"]
    assert any(m["name"] == "revenue" and m["value"].startswith("2000") for m in revenue), revenue


async def test_a_rolled_back_change_publishes_nothing(
    producers_api: ApiServer, celery_worker: Any, worker_env: dict[str, str], start_relay: Any
) -> None:
    relay = start_relay()
    user = f"dbr{time.monotonic_ns()}"
    file_id = await processed_file(producers_api, worker_env, user)
    await asyncio.to_thread(wait_until, lambda: relay.active, 30, "the relay")
    url = f"{producers_api.url}/api/v1/stream/files/{file_id}"
    async with sse(url, make_token(worker_env, user)) as stream:
        await asyncio.sleep(0.5)
        with outside() as conn:
            conn.execute("UPDATE financial_rows SET amount = '1.00' WHERE file_id = %s", (file_id,))
            conn.execute("UPDATE file_parameters SET value = '0.9' WHERE file_id = %s", (file_id,))
            conn.rollback()
        await assert_quiet(stream, 4)
    assert unpublished() == 0


def test_a_100000_row_statement_gives_one_event_per_file_and_statement(
    worker_env: dict[str, str], start_relay: Any, user: str
) -> None:
    relay = start_relay()
    wait_until(lambda: relay.active, 30, "the relay")
    with outside() as conn:
        conn.execute("INSERT INTO users (id, created_at) VALUES (%s, now())", (user,))
        file_id = _outside_file(conn, user, "bulk.csv")
        conn.execute(
            "INSERT INTO financial_rows (file_id, position, period, statement, line_item, amount,"
            " currency) SELECT %s, g, '2026-' || lpad((1 + g %% 12)::text, 2, '0'),"
            " CASE WHEN g %% 2 = 0 THEN 'income' ELSE 'balance' END, 'item' || g, '1.00', 'USD'"
            " FROM generate_series(1, 100000) AS g",
            (file_id,),
        )
        conn.commit()
        conn.execute("UPDATE financial_rows SET amount = '2.00' WHERE file_id = %s", (file_id,))
        conn.commit()
    channel = f"file:{file_id}"
    wait_until(lambda: len(stored(channel)) >= 4, 60, "the summaries")
    time.sleep(1)
    events = stored(channel)
    assert [e["type"] for e in events] == ["financial_data_update"] * 4, events
    statements = sorted(e["data"]["statement_id"] for e in events)
    assert statements == ["balance", "balance", "income", "income"], events
    for event in events:
        assert event["data"]["rows"] == 50000, event
        assert event["data"]["periods_total"] == 6, event  # each statement: every other month


def _outside_file(conn: psycopg.Connection[Any], owner: str, name: str) -> int:
    row = conn.execute(
        "INSERT INTO files (owner_id, name, status, rows_total, rows_ok, rows_bad, created_at, "
        "updated_at) VALUES (%s, %s, 'queued', 0, 0, 0, now(), now()) RETURNING id",
        (owner, name),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _from_db(event: dict[str, Any]) -> bool:
    """A trigger's summary (a worker's recalculation may add its own events)."""
    return event["type"] == FINANCIAL and event["data"].get("source") == "database"


def test_rows_that_move_announce_their_old_place_too(
    worker_env: dict[str, str], start_relay: Any, user: str
) -> None:
    relay = start_relay()
    wait_until(lambda: relay.active, 30, "the relay")
    with outside() as conn:
        conn.execute("INSERT INTO users (id, created_at) VALUES (%s, now())", (user,))
        source, target = (_outside_file(conn, user, name) for name in ("from.csv", "to.csv"))
        conn.execute(
            "INSERT INTO financial_rows (file_id, position, period, statement, line_item, amount,"
            " currency) SELECT %s, g, '2026-01', 'income', 'item' || g, '1.00', 'USD'"
            " FROM generate_series(1, 10) AS g",
            (source,),
        )
        conn.commit()
        # Three rows move to another period, then two to another file; then a plain UPDATE.
        conn.execute(
            "UPDATE financial_rows SET period = '2026-02' WHERE file_id = %s AND position <= 3",
            (source,),
        )
        conn.execute(
            "UPDATE financial_rows SET file_id = %s WHERE file_id = %s AND position > 8",
            (target, source),
        )
        conn.commit()
        conn.execute("UPDATE financial_rows SET amount = '3.00' WHERE file_id = %s", (target,))
        conn.commit()
    wait_until(lambda: len(stored(f"file:{target}")) >= 2, 30, "the events")
    time.sleep(1)
    at_source = [e["data"] for e in stored(f"file:{source}") if _from_db(e)]
    at_target = [e["data"] for e in stored(f"file:{target}") if _from_db(e)]
    # The insert; the period move (old and new period); the two rows that left.
    assert [(d["rows"], d["periods"]) for d in at_source] == [
        (10, ["2026-01"]),
        (6, ["2026-01", "2026-02"]),
        (2, ["2026-01"]),
    ], at_source
    # The two rows that arrived; the plain UPDATE of them (no old places: nothing moved).
    assert [(d["rows"], d["periods"]) for d in at_target] == [
        (2, ["2026-01"]),
        (2, ["2026-01"]),
    ], at_target


def test_relay_killed_mid_burst_publishes_exactly_once_and_two_relays_never_both_publish(
    worker_env: dict[str, str], start_relay: Any, user: str
) -> None:
    first, second = start_relay(), start_relay()
    wait_until(lambda: first.active or second.active, 30, "a relay")
    time.sleep(2)
    assert first.active != second.active, "two relays active at once"
    active, standby = (first, second) if first.active else (second, first)
    with outside() as conn:
        conn.execute("INSERT INTO users (id, created_at) VALUES (%s, now())", (user,))
        row = conn.execute(
            "INSERT INTO files (owner_id, name, status, rows_total, rows_ok, rows_bad, "
            "created_at, updated_at) VALUES (%s, 'b.csv', 'queued', 0, 0, 0, now(), now()) "
            "RETURNING id",
            (user,),
        ).fetchone()
        assert row is not None
        file_id = int(row[0])
        conn.commit()
    statements = 300
    done = threading.Event()

    def burst() -> None:
        with outside() as conn:
            for i in range(statements):
                conn.execute(
                    "INSERT INTO financial_rows (file_id, position, period, statement, "
                    "line_item, amount, currency) VALUES (%s, %s, '2026-01', 'income', 'r', "
                    "'1.00', 'USD')",
                    (file_id, i),
                )
                conn.commit()
        done.set()

    channel = f"file:{file_id}"
    writer = threading.Thread(target=burst)
    writer.start()
    wait_until(lambda: len(stored(channel)) >= 20, 30, "the first events")
    active.kill()  # SIGKILL mid-burst
    writer.join(120)
    assert done.is_set()
    wait_until(lambda: standby.active, 30, "the standby taking over")
    wait_until(lambda: unpublished() == 0, 60, "every row published")
    wait_until(lambda: len(stored(channel)) >= statements, 30, "every event")
    time.sleep(1)
    events = stored(channel)
    assert len(events) == statements, f"{len(events)} events for {statements} statements"
    assert all(e["type"] == "financial_data_update" for e in events)


async def test_a_change_made_while_no_relay_runs_is_published_and_recalculated_at_catch_up(
    producers_api: ApiServer, celery_worker: Any, worker_env: dict[str, str], start_relay: Any
) -> None:
    user = f"dbc{time.monotonic_ns()}"
    file_id = await processed_file(producers_api, worker_env, user)
    with outside() as conn:
        conn.execute(
            "UPDATE financial_rows SET amount = '3000.00' "
            "WHERE file_id = %s AND period = '2026-02' AND line_item = 'revenue'",
            (file_id,),
        )
        conn.commit()
    url = f"{producers_api.url}/api/v1/stream/files/{file_id}"
    async with sse(url, make_token(worker_env, user)) as stream:
        await assert_quiet(stream, 1)  # nobody relays yet
        start_relay()
        seen = await events_until(
            stream, lambda got: any(e.event == "metric_update" for e in got), 60
        )
    assert seen[0].event == "financial_data_update", seen
    revenue = [e.envelope["data"] for e in seen if e.event == "metric_update"]
    assert any(m["name"] == "revenue" and m["value"].startswith("3000") for m in revenue), revenue
