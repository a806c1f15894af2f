"""The ``db-events`` scenario: what the database-events triggers cost, and how fast a change made
outside the application is published.

Run by ``python -m bench --only db-events`` (needs FINRT_BENCH_DATABASE_URL naming PostgreSQL),
in a process of its own (``python -m bench.db_events``, JSON on stdout) because it sets the
FINRT_ environment its relay and publisher read. In three schemas of its own, all migrated, one
with the triggers, one with the financial rows' triggers dropped and one whose triggers only
count their statement's rows (the floor, ``FLOOR``): inserts and updates of
financial rows by a plain psycopg connection per schema (as another service would), in
statements of each size of ``BATCHES`` rows, each committed, the schemas' statements in turn
(the side that goes first rotates), each kind's first statement of a round unmeasured (it
plans again what the round's TRUNCATE dropped); each round's slowdown compares the sides' times
in it, and the figure is the median over the rounds (with the spread). Then single-row UPDATEs
committed one at a time, each timed from its commit until an SSE client of a real ``finrt api``
process has its event (and until it is in the channel's Redis history), with the relay running
in this process.
"""

from __future__ import annotations

import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

ROWS = int(os.environ.get("FINRT_BENCH_DB_ROWS", "20000"))
BATCH = 500  # the statement size of the headline figures
# Statement sizes measured, in rows: single-row writes (an admin in psql, a service writing
# row by row), small ones, and bulk corrections or re-imports.
BATCHES = [
    int(b) for b in os.environ.get("FINRT_BENCH_DB_BATCHES", f"1,50,{BATCH},5000").split(",")
]
# The migration the schemas are brought to (head; an earlier one to compare with it).
REVISION = os.environ.get("FINRT_BENCH_DB_REVISION", "head")
LATENCY_SAMPLES = int(os.environ.get("FINRT_BENCH_DB_SAMPLES", "200"))
ROUNDS = int(os.environ.get("FINRT_BENCH_DB_ROUNDS", "20"))

INSERT = (
    "INSERT INTO financial_rows (file_id, position, period, statement, line_item, amount, "
    "currency) SELECT %s, p, '2026-' || lpad((1 + p %% 12)::text, 2, '0'), 'income', "
    "'revenue', '1.00', 'USD' FROM unnest(%s::int[]) AS p"
)
UPDATE = (
    "UPDATE financial_rows SET amount = %s WHERE file_id = %s AND position >= %s AND position < %s"
)


# The floor: the same triggers, whose functions only count their statement's rows. What any
# trigger that looks at a statement's rows pays (PostgreSQL capturing them in a transition
# table, a PL/pgSQL call, one pass over them), measured in the same run as ours.
FLOOR = """
CREATE OR REPLACE FUNCTION finrt_financial_rows_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    PERFORM count(*) FROM finrt_old;
  ELSE
    PERFORM count(*) FROM finrt_new;
  END IF;
  RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION finrt_financial_rows_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM count(*) FROM finrt_new;
  RETURN NULL;
END $$;
"""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def main() -> int:
    base = os.environ.get("FINRT_BENCH_DATABASE_URL", "")
    if not base.startswith("postgresql"):
        print(json.dumps({"skipped": "FINRT_BENCH_DATABASE_URL must name PostgreSQL"}))
        return 0
    import psycopg
    import redis
    import sqlalchemy as sa

    tag = uuid.uuid4().hex[:8]
    schemas = {
        "with": f"finrt_bench_{tag}",
        "without": f"finrt_bench_{tag}_plain",
        "floor": f"finrt_bench_{tag}_floor",
    }
    engine = sa.create_engine(base)
    with engine.begin() as admin:
        for schema in schemas.values():
            admin.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    sep = "&" if "?" in base else "?"
    urls = {
        side: f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
        for side, schema in schemas.items()
    }
    url = urls["with"]
    os.environ.update(
        FINRT_DATABASE_URL=url,
        FINRT_REDIS_PREFIX=f"bench-db-{uuid.uuid4().hex[:6]}",
    )
    os.environ.setdefault("FINRT_JWT_SECRET", uuid.uuid4().hex)  # settings need one; unused
    from core.settings import get_settings
    from models.migrate import upgrade
    from workers.relay import Relay, psycopg_dsn

    conns: dict[str, Any] = {}
    file_ids: dict[str, int] = {}
    try:
        for side, side_url in urls.items():
            upgrade(side_url, REVISION)
            conn = psycopg.connect(psycopg_dsn(side_url))
            conns[side] = conn
            if side == "without":  # the same tables, no database-events triggers on them
                names = conn.execute(
                    "SELECT tgname FROM pg_trigger WHERE tgrelid = 'financial_rows'::regclass "
                    "AND NOT tgisinternal"
                ).fetchall()
                for (name,) in names:
                    conn.execute(f'DROP TRIGGER "{name}" ON financial_rows')
            if side == "floor":
                conn.execute(FLOOR)
            conn.execute("INSERT INTO users (id, created_at) VALUES ('bench', now())")
            file_ids[side] = _one(
                conn,
                "INSERT INTO files (owner_id, name, status, rows_total, rows_ok, rows_bad, "
                "created_at, updated_at) VALUES ('bench', 'b.csv', 'queued', 0, 0, 0, now(), "
                "now()) RETURNING id",
            )
            conn.commit()
        result: dict[str, Any] = {"rows": ROWS, "rounds": ROUNDS, "revision": REVISION}
        result.update(_throughput(conns, file_ids))
        live = conns["with"]
        live.execute("SET LOCAL finrt.origin = 'app'")  # emptied and refilled silently
        live.execute("TRUNCATE financial_rows, outbox")
        live.execute(INSERT, (file_ids["with"], list(range(LATENCY_SAMPLES))))
        live.commit()
        result.update(_latency(live, file_ids["with"], Relay, get_settings(), redis))
        print(json.dumps(result))
        return 0
    finally:
        for side_conn in conns.values():
            side_conn.close()
        engine = sa.create_engine(base)
        with engine.begin() as admin:
            for schema in schemas.values():
                admin.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def _one(conn: Any, sql: str, *args: Any) -> int:
    row = conn.execute(sql, args or None).fetchone()
    return int(row[0])


def _throughput(conns: dict[str, Any], file_ids: dict[str, int]) -> dict[str, Any]:
    """Each statement size of ``BATCHES`` in turn (its figures under ``sizes``; ``BATCH``'s also
    at the top level, as before)."""
    pids = {side: _one(conn, "SELECT pg_backend_pid()") for side, conn in conns.items()}
    result: dict[str, Any] = {"pairing": "statement by statement, first side rotating"}
    sizes: dict[str, Any] = {}
    for batch in BATCHES:
        sizes[str(batch)] = _one_size(conns, file_ids, pids, batch)
    result["sizes"] = sizes
    result.update(sizes.get(str(BATCH), {}))
    return result


def _statements(batch: int) -> int:
    """Statements per side, kind and round: ``ROWS`` rows, between 4 and 400 statements."""
    return max(4, min(400, ROWS // batch))


def _one_size(
    conns: dict[str, Any], file_ids: dict[str, int], pids: dict[str, int], batch: int
) -> dict[str, Any]:
    """Inserts and then updates in statements of ``batch`` rows, each committed, by a plain
    psycopg connection per side (as another service would): into the schema with the
    triggers, the one without them and the floor's, statement by statement in turn (the side
    that goes first rotates), so a busy neighbour slows them alike. A round is one pass of each
    kind; its slowdowns compare the sides' times in it with the side without triggers. One round
    first unmeasured (plans, caches). Every side's financial rows start each round empty
    (TRUNCATE: no dead rows, no vacuum in the middle), and each kind's first statement of a
    round, on rows past the measured ones, is unmeasured (the plans the TRUNCATE dropped are
    made again in it, for the statement's size)."""
    statements = _statements(batch)
    rows = statements * batch
    slow: dict[str, list[float]] = {"insert": [], "update": []}
    cpu: dict[str, list[float]] = {"insert": [], "update": []}
    extra_us: dict[str, list[float]] = {"insert": [], "update": []}
    floor_slow: dict[str, list[float]] = {"insert": [], "update": []}
    floor_us: dict[str, list[float]] = {"insert": [], "update": []}
    total = {(kind, side): 0.0 for kind in slow for side in conns}
    names = list(conns)
    for round_no in range(-1, ROUNDS):
        for conn in conns.values():
            # As the application (migration 0014 refuses an outside TRUNCATE: unannounced).
            conn.execute("SET LOCAL finrt.origin = 'app'")
            conn.execute("TRUNCATE financial_rows, outbox")
            conn.commit()
        for kind in ("insert", "update"):
            # One statement of this size per side first, unmeasured, on rows past the measured
            # ones: the TRUNCATE made PostgreSQL drop the plans of the statements and of the
            # triggers' statements, and a session does not replan once every few statements.
            for side, conn in conns.items():
                _write(conn, kind, file_ids[side], rows, batch, f"{round_no + 2}.00")
                conn.commit()
            wall = dict.fromkeys(conns, 0.0)
            used = {side: _cpu_ns(pid) for side, pid in pids.items()}
            for n, first in enumerate(range(0, rows, batch)):
                turn = (n + round_no) % len(names)
                for side in names[turn:] + names[:turn]:
                    conn, file_id = conns[side], file_ids[side]
                    started = time.perf_counter()
                    _write(conn, kind, file_id, first, batch, f"{round_no + 2}.00")
                    conn.commit()
                    wall[side] += time.perf_counter() - started
            if round_no < 0:
                continue
            slow[kind].append((1 - wall["without"] / wall["with"]) * 100)
            floor_slow[kind].append((1 - wall["without"] / wall["floor"]) * 100)
            spent = {side: _cpu_ns(pid) - used[side] for side, pid in pids.items()}
            if all(spent.values()):  # zero: no /proc of the server's processes here
                cpu[kind].append((spent["with"] / spent["without"] - 1) * 100)
                extra_us[kind].append((spent["with"] - spent["without"]) / 1000 / statements)
                floor_us[kind].append((spent["floor"] - spent["without"]) / 1000 / statements)
            for side in conns:
                total[kind, side] += wall[side]
    result: dict[str, Any] = {"batch": batch, "statements": statements}
    for kind, values in slow.items():
        for side in conns:
            result[f"{kind}_rows_s_{side}"] = round(rows * ROUNDS / total[kind, side])
        q = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
        result.update(
            {
                f"{kind}_slowdown_pct": round(statistics.median(values), 1),
                f"{kind}_slowdown_min_pct": round(min(values), 1),
                f"{kind}_slowdown_q1_pct": round(q[0], 1),
                f"{kind}_slowdown_q3_pct": round(q[2], 1),
                f"{kind}_slowdown_max_pct": round(max(values), 1),
                f"{kind}_slowdown_rounds": [round(v, 1) for v in values],
            }
        )
        if len(cpu[kind]) == len(values):
            result[f"{kind}_backend_cpu_extra_pct"] = round(statistics.median(cpu[kind]), 1)
            # What the triggers add per statement, in server CPU time.
            result[f"{kind}_extra_us_per_statement"] = round(statistics.median(extra_us[kind]))
        if floor_slow[kind]:
            result[f"{kind}_floor_slowdown_pct"] = round(statistics.median(floor_slow[kind]), 1)
        if floor_us[kind]:
            result[f"{kind}_floor_extra_us_per_statement"] = round(
                statistics.median(floor_us[kind])
            )
    return result


def _write(conn: Any, kind: str, file_id: int, first: int, batch: int, amount: str) -> None:
    """Insert the positions ``first`` to ``first + batch`` of a file, or update their amount."""
    if kind == "insert":
        conn.execute(INSERT, (file_id, list(range(first, first + batch))))
    else:
        conn.execute(UPDATE, (amount, file_id, first, first + batch))


def _cpu_ns(pid: int) -> int:
    """CPU time of a server process so far, in ns (PostgreSQL on this machine, Linux), else 0."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _latency(conn: Any, file_id: int, relay_cls: Any, settings: Any, redis: Any) -> dict[str, Any]:
    """Single-row UPDATEs committed one at a time by a plain connection, each timed from its
    commit until an SSE client of a real API process has the event (and, on the way, until
    it is in the channel's Redis history)."""
    from streams.keys import history_key

    # As in production, each change's recalculation is queued (under this run's prefix, deleted
    # below; no worker runs it) before its event is published.
    relay = relay_cls(settings)
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    client = redis.Redis.from_url(settings.redis_url)
    key = history_key(settings.redis_prefix, f"file:{file_id}")
    api = _start_api()
    procs: list[subprocess.Popen[Any]] = [api[0]]
    try:
        deadline = time.monotonic() + 30
        while not relay.active and time.monotonic() < deadline:
            time.sleep(0.05)
        # The SSE client is a process of its own: in this one, the relay's thread would hold
        # the GIL for whole switch intervals and delay the reader's clock by milliseconds.
        arrivals: queue.Queue[float] = queue.Queue()
        procs.append(_start_reader(api[1], file_id, settings, arrivals))
        arrivals.get(timeout=30)  # the stream is open (its retry hint arrived)
        to_sse: list[float] = []
        to_redis: list[float] = []
        last = "0-0"  # the stream is empty: the throughput rounds ran with no relay
        for i in range(LATENCY_SAMPLES):
            conn.execute(
                "UPDATE financial_rows SET amount = %s WHERE file_id = %s AND position = %s",
                (f"{i}.00", file_id, i),
            )
            conn.commit()
            committed = time.monotonic()
            got = client.xread({key: last}, count=1, block=10_000)
            if got:
                to_redis.append((time.monotonic() - committed) * 1000)
                last = got[0][1][-1][0]
            try:
                to_sse.append((arrivals.get(timeout=10) - committed) * 1000)
            except queue.Empty:
                continue
        for leftover in list(client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000)):
            client.delete(leftover)  # history, dedupe and task keys of this run's own prefix
        return {
            "latency_samples": len(to_sse),
            "latency_p50_ms": _pct(to_sse, 0.5) if to_sse else None,
            "latency_p99_ms": _pct(to_sse, 0.99) if to_sse else None,
            "latency_mean_ms": round(statistics.fmean(to_sse), 2) if to_sse else None,
            "redis_latency_p50_ms": _pct(to_redis, 0.5) if to_redis else None,
            "redis_latency_p99_ms": _pct(to_redis, 0.99) if to_redis else None,
        }
    finally:
        relay.stop.set()
        thread.join(5)
        client.close()
        for proc in procs:
            proc.terminate()
            proc.wait(15)


def _start_api() -> tuple[subprocess.Popen[bytes], str]:
    """``finrt api`` on a free port with this process's FINRT_ environment."""
    from bench.procs import free_port

    port = free_port()
    finrt = Path(sys.executable).parent / "finrt"
    proc = subprocess.Popen(
        [str(finrt), "api", "--host", "127.0.0.1", "--port", str(port)],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("the API process did not start")


def _start_reader(
    url: str, file_id: int, settings: Any, arrivals: queue.Queue[float]
) -> subprocess.Popen[str]:
    """``python -m bench.db_events reader``: its clock readings (CLOCK_MONOTONIC, one for the
    whole machine) go into ``arrivals``."""
    from api.auth import issue_token

    token = issue_token("bench", settings.jwt_secret, settings.jwt_algorithm)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.db_events", "reader", f"{url}/api/v1/stream/files/{file_id}"],
        env={**os.environ, "FINRT_BENCH_TOKEN": token},
        stdout=subprocess.PIPE,
        text=True,
    )

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            arrivals.put(float(line))

    threading.Thread(target=pump, daemon=True).start()
    return proc


def read_stream(stream_url: str) -> None:
    """The reader: one clock reading when the stream opens and one per event."""
    headers = {
        "Authorization": f"Bearer {os.environ['FINRT_BENCH_TOKEN']}",
        "Accept": "text/event-stream",
    }
    timeout = httpx.Timeout(10, read=None)
    with httpx.stream("GET", stream_url, headers=headers, timeout=timeout) as response:
        for line in response.iter_lines():
            if line.startswith(("retry:", "event: financial_data_update")):
                print(time.monotonic(), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["reader"]:
        read_stream(sys.argv[2])
    else:
        sys.exit(main())
