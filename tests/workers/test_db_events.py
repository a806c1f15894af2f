"""Issue 14 on PostgreSQL: changes made outside the application (a plain psycopg connection, as
psql or another service would) reach the streams through the triggers and the relay.

Runs with FINRT_TEST_DATABASE_URL naming PostgreSQL; skipped on SQLite (no triggers there).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import kombu.exceptions
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


def test_each_statement_writes_one_summary_per_file_and_statement_and_wakes_each_file_once(
    user: str,
) -> None:
    """The outbox rows and notifications themselves (no relay): order, payload text, periods
    capped at 100 with their total, the old places of moved rows, two statements in one
    transaction, deletes; nothing for a statement that changed no row."""
    with outside() as conn:
        conn.execute("INSERT INTO users (id, created_at) VALUES (%s, now())", (user,))
        a, b, c = (_outside_file(conn, user, f"{name}.csv") for name in "abc")
        conn.commit()
        conn.execute("LISTEN finrt_outbox")
        conn.commit()
        start = conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()
        assert start is not None
        # 300 rows over two files and three statements, 130 periods in all.
        conn.execute(
            "INSERT INTO financial_rows (file_id, position, period, statement, line_item, amount,"
            " currency) SELECT CASE WHEN g %% 2 = 0 THEN %s ELSE %s END, g,"
            " (2000 + g %% 130)::text || '-01', (ARRAY['income', 'balance', 'cash'])[1 + g %% 3],"
            " 'item', '1.00', 'USD' FROM generate_series(0, 299) AS g",
            (a, b),
        )
        conn.commit()
        conn.execute(
            "INSERT INTO financial_rows (file_id, position, period, statement, line_item, amount,"
            " currency) SELECT %s, 1000 + g, (1800 + g)::text || '-01', 'income', 'item',"
            " '1.00', 'USD' FROM generate_series(0, 149) AS g",
            (c,),
        )
        conn.commit()
        conn.execute(
            "UPDATE financial_rows SET amount = '2.00' WHERE file_id = %s AND position < 12", (a,)
        )
        conn.execute(
            "UPDATE financial_rows SET file_id = %s, period = '2100-01' WHERE file_id = %s"
            " AND statement = 'cash' AND position < 20",
            (c, b),
        )
        conn.commit()
        conn.execute("UPDATE financial_rows SET amount = '3.00' WHERE file_id = %s", (-1,))
        conn.execute("DELETE FROM financial_rows WHERE file_id = %s AND position >= 1140", (c,))
        conn.commit()
        rows = conn.execute(
            "SELECT channel, type, data, key, attempts, token = 'db-' || id FROM outbox"
            " WHERE id > %s ORDER BY id",
            (start[0],),
        ).fetchall()
        notes = [n.payload for n in conn.notifies(timeout=1, stop_after=100)]
    for channel, kind, _, key, attempts, token_is_id in rows:
        # The token (the publish's dedupe key) is the row's id: unique without a random draw.
        assert (kind, key, attempts, token_is_id) == (FINANCIAL, None, 0, True), rows
        assert channel.startswith("file:"), rows
    data = [json.loads(r[2]) for r in rows]
    for d in data:
        assert d.pop("updated_at").endswith("Z") and d.pop("source") == "database", d

    # Insert: file a has the even positions, so periods 2000 + even; file b the odd ones.
    expected = [
        (a, "balance", 50, sorted(f"{2000 + g % 130}-01" for g in range(0, 300, 2) if g % 3 == 1)),
        (a, "cash", 50, sorted(f"{2000 + g % 130}-01" for g in range(0, 300, 2) if g % 3 == 2)),
        (a, "income", 50, sorted(f"{2000 + g % 130}-01" for g in range(0, 300, 2) if g % 3 == 0)),
        (b, "balance", 50, sorted(f"{2000 + g % 130}-01" for g in range(1, 300, 2) if g % 3 == 1)),
        (b, "cash", 50, sorted(f"{2000 + g % 130}-01" for g in range(1, 300, 2) if g % 3 == 2)),
        (b, "income", 50, sorted(f"{2000 + g % 130}-01" for g in range(1, 300, 2) if g % 3 == 0)),
    ]
    got = [(d["file_id"], d["statement_id"], d["rows"], d["periods"]) for d in data]
    for i, (f, st, n, ps) in enumerate(expected):
        assert got[i] == (f, st, n, sorted(set(ps))[:100]), (i, got[i])
        assert data[i]["periods_total"] == len(set(ps)), data[i]
    # 150 periods at file c: the first 100 listed, the total given.
    assert got[6][:3] == (c, "income", 150) and data[6]["periods_total"] == 150, data[6]
    assert got[6][3] == [f"{1800 + g}-01" for g in range(100)], got[6]
    # The plain update of file a's first 12 positions (even ones only are a's: 6 rows).
    moved_from = sorted({f"{2000 + g % 130}-01" for g in range(1, 20, 2) if g % 3 == 2})
    assert [(g[0], g[1], g[2]) for g in got[7:10]] == [
        (a, "balance", 2),
        (a, "cash", 2),
        (a, "income", 2),
    ], got[7:10]
    # The rows that moved from b to c: their old places at b, their new one at c.
    assert got[10] == (b, "cash", len(moved_from), moved_from), got[10]
    assert got[11] == (c, "cash", len(moved_from), ["2100-01"]), got[11]
    # The update that matched nothing says nothing; the delete of file c's last 10 rows.
    assert got[12] == (c, "income", 10, [f"{1800 + g}-01" for g in range(140, 150)]), got[12]
    assert len(got) == 13, got
    # One wake-up per file and transaction, in file order (PostgreSQL drops repeats).
    assert notes == [json.dumps({"recalc": f}).replace(":", " :") for f in (a, b, c, a, b, c, c)]


def test_a_session_that_began_with_a_one_row_fix_summarises_its_bulk_update_without_a_sort(
    user: str,
) -> None:
    """PL/pgSQL keeps a trigger statement's plan for the session, made for the size of the
    first statement's rows. After a one-row UPDATE (an admin's first fix in psql), a 2,000-row
    UPDATE of one file still has its periods grouped by a hash, not its rows sorted (the
    statement's plans as PostgreSQL's auto_explain shows them), and its summary is right."""
    plans: list[str] = []
    with outside() as conn:
        conn.execute("INSERT INTO users (id, created_at) VALUES (%s, now())", (user,))
        f = _outside_file(conn, user, "bulk.csv")
        conn.execute(
            "INSERT INTO financial_rows (file_id, position, period, statement, line_item, amount,"
            " currency) SELECT %s, g, '2026-' || lpad((1 + g %% 12)::text, 2, '0'), 'income',"
            " 'item', '1.00', 'USD' FROM generate_series(0, 1999) AS g",
            (f,),
        )
        conn.commit()
        start = conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()
        assert start is not None
        conn.execute(
            "UPDATE financial_rows SET amount = '2.00' WHERE file_id = %s AND position = 0", (f,)
        )
        conn.commit()
        conn.execute("LOAD 'auto_explain'")
        for setting in (
            "log_min_duration = 0",
            "log_nested_statements = on",
            "log_analyze = on",
            "log_timing = off",
        ):
            conn.execute(f"SET auto_explain.{setting}")
        conn.execute("SET client_min_messages = log")
        conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
        conn.execute("UPDATE financial_rows SET amount = '3.00' WHERE file_id = %s", (f,))
        conn.commit()
        rows = conn.execute(
            "SELECT data FROM outbox WHERE id > %s ORDER BY id", (start[0],)
        ).fetchall()
    summaries = [json.loads(r[0]) for r in rows]
    assert [(d["file_id"], d["rows"]) for d in summaries] == [(f, 1), (f, 2000)], summaries
    assert summaries[1]["periods"] == [f"2026-{m:02d}" for m in range(1, 13)], summaries[1]
    trigger = [p for p in plans if "INSERT INTO outbox" in p]
    assert trigger, plans
    assert all("HashAggregate" in p for p in trigger), trigger
    sorts = [line for p in trigger for line in p.splitlines() if "Sort  (" in line]
    assert not [line for line in sorts if "actual rows=2000 " in line], trigger


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


def _revenue(seen: list[Any]) -> list[str]:
    return [
        e.envelope["data"]["value"]
        for e in seen
        if e.event == "metric_update" and e.envelope["data"]["name"] == "revenue"
    ]


def _set_revenue(file_id: int, amount: str) -> None:
    with outside() as conn:
        conn.execute(
            "UPDATE financial_rows SET amount = %s "
            "WHERE file_id = %s AND period = '2026-02' AND line_item = 'revenue'",
            (amount, file_id),
        )
        conn.commit()


async def test_a_relay_killed_right_after_publishing_a_change_leaves_its_recalculation_queued(
    producers_api: ApiServer, celery_worker: Any, worker_env: dict[str, str], start_relay: Any
) -> None:
    """The recalculation is in the broker before the change's event is published: the relay
    dying the moment after (no other relay runs) loses nothing."""
    relay = start_relay()
    user = f"dbk{time.monotonic_ns()}"
    file_id = await processed_file(producers_api, worker_env, user)
    await asyncio.to_thread(wait_until, lambda: relay.active, 30, "the relay")
    url = f"{producers_api.url}/api/v1/stream/files/{file_id}"
    async with sse(url, make_token(worker_env, user)) as stream:
        await asyncio.sleep(0.5)  # the stream is live
        await asyncio.to_thread(_set_revenue, file_id, "4000.00")
        first = await events_until(stream, lambda got: any(e.event == FINANCIAL for e in got), 30)
        relay.kill()  # SIGKILL, well within the burst's window
        seen = await events_until(stream, lambda got: bool(_revenue(got)), 60)
    assert [e.event for e in first] == [FINANCIAL], first
    assert _revenue(seen)[-1].startswith("4000"), _revenue(seen)


async def test_a_change_the_sweeper_publishes_for_want_of_a_relay_is_recalculated_too(
    producers_api: ApiServer, celery_worker: Any, worker_env: dict[str, str]
) -> None:
    from workers.tasks import sweep_outbox

    user = f"dbs{time.monotonic_ns()}"
    file_id = await processed_file(producers_api, worker_env, user)
    await asyncio.to_thread(_set_revenue, file_id, "5000.00")
    url = f"{producers_api.url}/api/v1/stream/files/{file_id}"
    async with sse(url, make_token(worker_env, user)) as stream:
        await assert_quiet(stream, 1)  # no relay runs
        await asyncio.sleep(get_settings().outbox_sweep_age_seconds)  # the row is left behind
        assert await asyncio.to_thread(sweep_outbox) >= 1
        seen = await events_until(stream, lambda got: bool(_revenue(got)), 60)
    assert seen[0].event == FINANCIAL, seen
    assert _revenue(seen)[-1].startswith("5000"), _revenue(seen)


def test_a_change_whose_recalculation_cannot_be_queued_stays_unpublished_until_it_can(
    user: str,
) -> None:
    """Without the broker the rows that ask for a recalculation are left for the next flush
    (the relay's next round, or the sweeper), not published without it."""
    from finrt.embedded_redis import free_port
    from models.outbox import flush_outbox
    from workers.recalculations import Recalculations

    with outside() as conn:
        conn.execute("INSERT INTO users (id, created_at) VALUES (%s, now())", (user,))
        file_id = _outside_file(conn, user, "r.csv")
        conn.execute(
            "INSERT INTO financial_rows (file_id, position, period, statement, line_item, amount,"
            " currency) VALUES (%s, 1, '2026-01', 'income', 'revenue', '1.00', 'USD')",
            (file_id,),
        )
        conn.commit()
    s = get_settings()
    channel = f"file:{file_id}"
    dead = s.model_copy(update={"celery_broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    with pytest.raises(kombu.exceptions.OperationalError):
        flush_outbox(s.database_url, {channel}, before_publish=Recalculations(dead).before_publish)
    assert stored(channel) == []
    assert unpublished() >= 1
    recalculations = Recalculations(s)
    assert flush_outbox(s.database_url, {channel}, before_publish=recalculations.before_publish)
    assert recalculations.queued == [file_id]
    assert [e["type"] for e in stored(channel)] == [FINANCIAL]


@pytest.mark.parametrize(
    "table",
    [
        "financial_rows",
        "file_parameters",
        "report_exports",
        "notifications",
        "files",
        "file_members",
    ],
)
def test_a_truncate_from_outside_is_refused_and_truncates_nothing(table: str, user: str) -> None:
    """TRUNCATE fires none of the triggers that announce a change: refused, with the way out."""
    with outside() as conn:
        conn.execute("INSERT INTO users (id, created_at) VALUES (%s, now())", (user,))
        file_id = _outside_file(conn, user, "t.csv")
        conn.execute(
            "INSERT INTO financial_rows (file_id, position, period, statement, line_item, amount,"
            " currency) VALUES (%s, 1, '2026-01', 'income', 'revenue', '1.00', 'USD')",
            (file_id,),
        )
        conn.commit()
        before = conn.execute("SELECT count(*) FROM financial_rows").fetchone()
        with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
            conn.execute(f"TRUNCATE {table} CASCADE")
        conn.rollback()
        after = conn.execute("SELECT count(*) FROM financial_rows").fetchone()
        # As the application (no events wanted): allowed; rolled back here, the data is shared.
        conn.execute("SET LOCAL finrt.origin = 'app'")
        conn.execute(f"TRUNCATE {table} CASCADE")
        conn.rollback()
    assert f"TRUNCATE of {table} is refused" in str(refused.value)
    hint = refused.value.diag.message_hint
    assert hint is not None
    assert hint.split()[:3] == ["DELETE", "FROM", table] and "announces what it removes" in hint
    assert before == after and before is not None and before[0] >= 1


async def test_parameters_written_from_psql_that_the_api_would_refuse_are_left_out(
    producers_api: ApiServer, celery_worker: Any, worker_env: dict[str, str]
) -> None:
    """A comma for a point, a value out of range, a name no dashboard knows: the file's
    dashboard and its parameter endpoint go on (as if those were unset), never a 500."""
    user = f"dbp{time.monotonic_ns()}"
    file_id = await processed_file(producers_api, worker_env, user)
    with outside() as conn:
        for name, value in (("tax_rate", "0,25"), ("growth_rate", "20"), ("discount", "1")):
            conn.execute(
                "INSERT INTO file_parameters (file_id, name, value, updated_by, updated_at) "
                "VALUES (%s, %s, %s, %s, now())",
                (file_id, name, value, user),
            )
        conn.commit()
    base, headers = producers_api.url, {"Authorization": f"Bearer {make_token(worker_env, user)}"}
    async with httpx.AsyncClient(timeout=30) as client:
        dashboard = await client.get(f"{base}/api/v1/files/{file_id}/dashboard", headers=headers)
        quarters = await client.get(
            f"{base}/api/v1/files/{file_id}/dashboard?period=quarter", headers=headers
        )
        put = await client.put(
            f"{base}/api/v1/files/{file_id}/parameters/growth_rate",
            json={"value": "0.1"},
            headers=headers,
        )
        after = await client.get(f"{base}/api/v1/files/{file_id}/dashboard", headers=headers)
    assert dashboard.status_code == 200, dashboard.text
    assert dashboard.json()["parameters"] == {}
    assert quarters.status_code == 200, quarters.text
    assert put.status_code == 200, put.text
    assert after.json()["parameters"] == {"growth_rate": "0.1"}
    assert "stored parameter 'tax_rate' ignored" in producers_api.log()


def test_forty_outside_writers_at_once_each_get_their_own_summaries(user: str) -> None:
    """Forty plain connections commit at the same moment, each updating its own rows of the same
    two files (in opposite orders): nobody waits on another's trigger work, nothing fails, and
    each statement leaves exactly its own summary."""
    writers, per = 40, 5
    with outside() as conn:
        conn.execute("INSERT INTO users (id, created_at) VALUES (%s, now())", (user,))
        a, b = (_outside_file(conn, user, f"{name}.csv") for name in "ab")
        for file_id in (a, b):
            conn.execute(
                "INSERT INTO financial_rows (file_id, position, period, statement, line_item,"
                " amount, currency) SELECT %s, g, '2026-01', 'income', 'item', '1.00', 'USD'"
                " FROM generate_series(0, %s) AS g",
                (file_id, writers * per - 1),
            )
        conn.commit()
        start = conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()
        assert start is not None
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            with outside() as own:
                barrier.wait(30)
                for file_id in (a, b) if k % 2 else (b, a):
                    own.execute(
                        "UPDATE financial_rows SET amount = %s WHERE file_id = %s"
                        " AND position >= %s AND position < %s",
                        (f"{k}.00", file_id, k * per, (k + 1) * per),
                    )
                own.commit()
        except BaseException as exc:  # collected: the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    with outside() as conn:
        rows = conn.execute(
            "SELECT channel, data FROM outbox WHERE id > %s AND type = %s",
            (start[0], FINANCIAL),
        ).fetchall()
    by_file: dict[str, list[int]] = {}
    for channel, data in rows:
        by_file.setdefault(channel, []).append(json.loads(data)["rows"])
    assert by_file == {f"file:{a}": [per] * writers, f"file:{b}": [per] * writers}


def test_a_relay_whose_database_takes_no_more_connections_says_so_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The relay's LISTEN connection is up but its flushes cannot connect (here a role's
    connection limit; the same as a server at ``max_connections``): one line naming the database
    and PostgreSQL's reason, not a traceback every second."""
    from sqlalchemy.engine import make_url

    from workers.relay import Relay

    role = f"finrt_relay_{uuid.uuid4().hex[:8]}"
    with outside() as admin:
        admin.autocommit = True
        admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 2")
        admin.execute(f"GRANT USAGE ON SCHEMA {PG_SCHEMA} TO {role}")
        admin.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA {PG_SCHEMA} TO {role}")
        admin.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {PG_SCHEMA} TO {role}")
    url = make_url(DATABASE_URL).set(username=role, password=None).render_as_string(False)
    relay = Relay(
        get_settings().model_copy(update={"database_url": url}),
        standby_seconds=0.2,
        poll_seconds=0.2,
    )
    thread = threading.Thread(target=relay.run, daemon=True)
    caplog.set_level(logging.INFO, logger="finrt.relay")
    try:
        thread.start()
        wait_until(lambda: relay.active, 30, "the relay to become active")
        time.sleep(0.5)  # a flush or two: its pool holds a connection
        with outside() as admin:
            admin.autocommit = True
            admin.execute(f"ALTER ROLE {role} CONNECTION LIMIT 1")
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE usename = %s AND query NOT ILIKE 'LISTEN%%'",
                (role,),
            )
        time.sleep(3)  # the flushes fail again and again
    finally:
        relay.stop.set()
        thread.join(15)
        with outside() as admin:
            admin.autocommit = True
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert failures, "the relay said nothing"
    assert all(r.exc_info is None for r in failures), [r.getMessage() for r in failures]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    message = failures[0].getMessage()
    assert "cannot reach the database at" in message and "too many connections" in message


def _keepalive_seconds(local_port: int, peer_port: int) -> float:
    """The keepalive timer of the TCP connection from ``local_port`` to ``peer_port``, as ``ss``
    shows it (seconds until the next probe)."""
    out = subprocess.run(
        [
            "ss",
            "-tnoH",
            "state",
            "established",
            f"( sport = :{local_port} and dport = :{peer_port} )",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"timer:\(keepalive,(?:(\d+)min)?(?:([\d.]+)(ms|sec))?", out)
    assert match, out
    minutes, amount, unit = match.groups()
    seconds = float(amount or 0) / (1000 if unit == "ms" else 1)
    return int(minutes or 0) * 60 + seconds


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_the_relays_listen_connection_is_probed_on_both_ends_within_seconds() -> None:
    """A LISTEN connection that dies without a word (a NAT dropping the idle flow) is noticed by
    the relay, and by the server (which then frees the advisory lock for a standby), in about
    half a minute: both ends send TCP keepalives after 15 s of silence, not the kernel's two
    hours."""
    from workers.relay import Relay

    relay = Relay(get_settings(), standby_seconds=0.2, poll_seconds=0.2)
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: relay.active, 30, "the relay to become active")
        with outside() as conn:
            row = conn.execute(
                "SELECT client_port, inet_server_port() FROM pg_stat_activity"
                " WHERE application_name = 'finrt-relay' AND datname = current_database()"
                " ORDER BY backend_start DESC LIMIT 1"
            ).fetchone()
        assert row is not None and row[0] is not None, "no TCP LISTEN connection"
        client, server = int(row[0]), int(row[1])
        assert _keepalive_seconds(client, server) <= 15  # the relay's end
        assert _keepalive_seconds(server, client) <= 15  # the server's end
    finally:
        relay.stop.set()
        thread.join(15)
