"""Scenarios past one Redis and with presence on (registered in bench/runner.py).

``cluster-fanout``     the fan-out (``subs`` streams on one channel, events at 100/s) on the
                       bench's one Redis, then on a 3-shard Redis Cluster (3 primaries and 3
                       replicas of ``redis-server`` on free loopback ports, started here and
                       removed after) with ``finrt api`` of 1 worker and of ``--workers 2``:
                       deliveries/s, p99, lost, Redis CPU per published event (every node).
``presence-capacity``  N idle viewers of one file (each a member; presence on) beside N idle
                       notification streams: RSS per connection, Redis calls/s while idle.
``presence-storm``     N viewers (1,000; quick 200) open one file at once: time until every one
                       has its ``presence`` snapshot, presence events each client received.

The cluster and ``--workers`` rows run the API unpinned (two processes on one CPU would say
nothing); the one-Redis row is pinned as the other scenarios are.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import redis

from bench import report
from bench.clients import ClientGroup
from bench.common import cpu_seconds, make_token, percentiles
from bench.procs import LOAD_CPU, PYTHON, Proc, Worker, free_port, rss_kb, spawn, wait_http_ok

if TYPE_CHECKING:
    from bench.runner import Bench, Target

Scenario = Callable[["Target"], Awaitable[dict[str, Any]]]
_PRESENCE = re.compile(rb"event: (presence(?:_join|_leave|_count)?)\r?\n")


# -- the cluster ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _cluster(bench: Bench) -> Iterator[Any]:
    """Six redis-server nodes joined as 3 primaries + 3 replicas (the test suite's fixture)."""
    from tests.cluster.cluster_redis import TestCluster

    started = TestCluster(bench.tmp / "cluster")
    try:
        yield started.start()
    finally:
        started.stop()


@contextlib.contextmanager
def _env(bench: Bench, **values: str) -> Iterator[None]:
    saved = dict(bench.env)
    bench.env.update(values)
    try:
        yield
    finally:
        bench.env.clear()
        bench.env.update(saved)


@contextlib.contextmanager
def _redis_cpu_of(bench: Bench, pids: list[int]) -> Iterator[None]:
    """Count these processes (the cluster's nodes) as Redis in the CPU figures."""
    saved = bench.redis_cpu_pids
    bench.redis_cpu_pids = pids
    try:
        yield
    finally:
        bench.redis_cpu_pids = saved


def _workers_target(bench: Bench, workers: int) -> Target:
    """``finrt api --workers N``, not pinned (N processes on one CPU would say nothing)."""
    from bench.runner import Target

    class Workers(Target):
        def argv(self, port: int) -> list[str]:
            return [*super().argv(port), "--workers", str(workers)]

        async def start(self) -> Proc:
            await self.stop()
            self.port = free_port()
            self.proc = spawn(
                f"server-workers{workers}",
                self.argv(self.port),
                env=self.bench.env,
                cpu=None,
                pinning=self.bench.pinning,
                log_dir=self.bench.log_dir,
            )
            await wait_http_ok(self.port, "/healthz", self.proc, timeout=60)
            await asyncio.sleep(1.0)  # every worker up
            return self.proc

    return Workers(bench, "ours")


def _fanout_row(res: dict[str, Any], events: int) -> dict[str, Any]:
    cpu = res.get("cpu", {})
    redis_s = cpu.get("redis_pct", 0.0) / 100 * cpu.get("wall_s", 0.0)
    lat = res.get("latency_ms", {})
    return {
        "deliveries_per_s": round(res.get("deliveries_per_s", 0.0)),
        "p50_ms": lat.get("p50"),
        "p99_ms": lat.get("p99"),
        "lost": res.get("lost"),
        "duplicates": res.get("duplicates"),
        "redis_cpu_us_per_event": round(1e6 * redis_s / max(1, events), 1),
        "server_cpu_pct": cpu.get("server_pct"),
        "load_cpu_saturated": res.get("load_cpu_saturated"),
    }


async def s_cluster_fanout(bench: Bench, target: Target) -> dict[str, Any]:
    from bench.fanout import fanout
    from bench.runner import Skip

    if target.name != "ours":
        raise Skip("not measured for the baseline")
    if bench.pub_mode != "streams":
        raise Skip("needs the streams publisher (Publisher on a cluster)")
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        raise Skip("needs redis-server and redis-cli 7 (Debian redis-server, redis-tools)")
    p = bench.p
    events = p.f100_events
    rows: dict[str, Any] = {}

    async def run(label: str, tgt: Target) -> None:
        res = await fanout(bench, tgt, f"cluster-fanout-{label}", events, 100.0)
        rows[label] = _fanout_row(res, events)

    await run("one-redis", target)
    broker = f"redis://127.0.0.1:{bench.redis_port}/1"
    with _cluster(bench) as cluster:
        pids = [n.process.pid for n in cluster.nodes if n.process is not None]
        with _env(bench, FINRT_REDIS_URL=cluster.url, FINRT_CELERY_BROKER_URL=broker):
            with _redis_cpu_of(bench, pids):
                await run("cluster-1-worker", _workers_target(bench, 1))
                await run("cluster-2-workers", _workers_target(bench, 2))
    return {"rows": rows, "events": events, "subs": p.subs}


def _fanout_cell(res: dict[str, Any]) -> list[str]:
    out = []
    for label, row in res.get("rows", {}).items():
        out.append(
            f"{label}: {report.rate(row['deliveries_per_s'])} dlv/s, "
            f"p99 {report.ms(row['p99_ms'])}, lost {row['lost']}, "
            f"Redis {row['redis_cpu_us_per_event']} us/ev"
        )
    return out


# -- presence ------------------------------------------------------------------------------------


def _make_file(bench: Bench, owner: str, members: list[str]) -> int:
    """A file shared with ``members`` in the bench's database (in a process with its env)."""
    done = subprocess.run(
        [PYTHON, "-m", "bench.cluster_bench", "make-file", owner, *members],
        env=bench.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-1000:])
    return int(done.stdout.strip().splitlines()[-1])


def _redis_calls(bench: Bench) -> dict[str, int]:
    """Calls so far by command (INFO's own left out: this bench sends them). Redis counts the
    commands a script runs too: EVALSHA is the number of script calls."""
    client = redis.Redis(host="127.0.0.1", port=bench.redis_port)
    try:
        stats = client.info("commandstats")
        return {k[8:]: int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info"}
    finally:
        client.close()


def _calls_since(bench: Bench, before: dict[str, int]) -> dict[str, int]:
    after = _redis_calls(bench)
    delta = {k: n - before.get(k, 0) for k, n in after.items()}
    return dict(sorted(((k, n) for k, n in delta.items() if n), key=lambda kv: -kv[1]))


async def _idle(
    bench: Bench, target: Target, path: str, users: list[str], n: int
) -> dict[str, Any]:
    """RSS per connection and Redis calls/s of N idle streams on ``path``."""
    server = await target.start()
    spec = {"host": "127.0.0.1", "port": target.port, "path": path, "secret": bench.secret}
    worker = await Worker.start(
        "client-idle",
        "bench.loadclient",
        spec,
        env=bench.env,
        cpu=LOAD_CPU,
        pinning=bench.pinning,
        log_dir=bench.log_dir,
    )
    client = ClientGroup([worker], bench.log_dir.parent / "dumps")
    try:
        await client.open({"cmd": "open", "count": 1, "users": users[:1], "timeout": 30})
        await asyncio.sleep(2.0)
        rss0 = rss_kb(server.pid)
        opened = await client.open(
            {"cmd": "open", "count": n, "users": users, "concurrency": 100, "timeout": 120}
        )
        await asyncio.sleep(3.0)  # joins written, folded counts sent
        rss1 = rss_kb(server.pid)
        window = 10.0 if not bench.quick else 5.0
        calls0, t0 = _redis_calls(bench), time.monotonic()
        await asyncio.sleep(window)
        calls = _calls_since(bench, calls0)
        seconds = time.monotonic() - t0
        return {
            "opened": opened["ok"],
            "failed": opened["failed"],
            "rss_kb_per_conn": round((rss1 - rss0) / max(1, opened["ok"]), 1),
            "redis_calls_per_s_idle": round(sum(calls.values()) / seconds, 2),
            "redis_calls_per_s_by_command": {k: round(n / seconds, 2) for k, n in calls.items()},
        }
    finally:
        await client.close()
        await target.stop()


async def s_presence_capacity(bench: Bench, target: Target) -> dict[str, Any]:
    from bench.runner import Skip

    if target.name != "ours":
        raise Skip("not measured for the baseline")
    n = 300 if bench.quick else 2000
    users = [f"pv{i}" for i in range(n)]
    file_id = _make_file(bench, "powner", users)
    viewers = await _idle(bench, target, f"/api/v1/stream/files/{file_id}", users, n)
    plain = await _idle(bench, target, "/api/v1/stream/notifications", users, n)
    return {"viewers": n, "presence": viewers, "notifications": plain}


def _capacity_cell(res: dict[str, Any]) -> list[str]:
    on, off = res.get("presence", {}), res.get("notifications", {})
    return [
        f"{res.get('viewers')} viewers of one file: {on.get('rss_kb_per_conn')} KB/conn, "
        f"{on.get('redis_calls_per_s_idle')} Redis calls/s idle",
        f"same on notification streams: {off.get('rss_kb_per_conn')} KB/conn, "
        f"{off.get('redis_calls_per_s_idle')} calls/s",
        "script calls/s (EVALSHA; the rest run inside them): "
        f"{on.get('redis_calls_per_s_by_command', {}).get('evalsha')} viewers, "
        f"{off.get('redis_calls_per_s_by_command', {}).get('evalsha')} notifications",
    ]


class _Viewer:
    __slots__ = ("counts", "snapshot_at", "writer")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.snapshot_at = 0.0
        self.writer: asyncio.StreamWriter | None = None


async def _view(port: int, path: str, token: str, viewer: _Viewer, sem: asyncio.Semaphore) -> None:
    async with sem:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    viewer.writer = writer
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    tail = b""
    while data := await reader.read(65536):
        block = tail + data
        for found in _PRESENCE.finditer(block):
            if found.end() <= len(tail):
                continue  # counted with the previous read
            kind = found.group(1).decode()
            viewer.counts[kind] = viewer.counts.get(kind, 0) + 1
            if kind == "presence" and not viewer.snapshot_at:
                viewer.snapshot_at = time.monotonic()
        tail = block[-40:]


async def s_presence_storm(bench: Bench, target: Target) -> dict[str, Any]:
    from bench.runner import Skip

    if target.name != "ours":
        raise Skip("not measured for the baseline")
    n = 200 if bench.quick else 1000
    users = [f"ps{i}" for i in range(n)]
    file_id = _make_file(bench, "sowner", users)
    tokens = [make_token(bench.secret, u) for u in users]
    server = await target.start()
    path = f"/api/v1/stream/files/{file_id}"
    viewers = [_Viewer() for _ in users]
    sem = asyncio.Semaphore(200)
    try:
        calls0, cpu0 = _redis_calls(bench), cpu_seconds(server.pid) or 0.0
        t0 = time.monotonic()
        tasks = [
            asyncio.create_task(_view(target.port, path, tok, v, sem))
            for tok, v in zip(tokens, viewers, strict=True)
        ]
        deadline = t0 + 120
        while time.monotonic() < deadline and not all(v.snapshot_at for v in viewers):
            await asyncio.sleep(0.05)
        all_in = max((v.snapshot_at for v in viewers), default=t0) - t0
        await asyncio.sleep(3.0)  # the last folded count goes out within a second
        calls = _calls_since(bench, calls0)
        cpu = (cpu_seconds(server.pid) or 0.0) - cpu0
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for v in viewers:
            if v.writer is not None:
                v.writer.close()
        await target.stop()
    got = sorted(int(1000 * (v.snapshot_at - t0)) for v in viewers if v.snapshot_at)
    p50, p99 = percentiles(got, (50, 99))
    per_client = sorted(sum(v.counts.values()) - v.counts.get("presence", 0) for v in viewers)
    kinds: dict[str, int] = {}
    for v in viewers:
        for kind, count in v.counts.items():
            kinds[kind] = kinds.get(kind, 0) + count
    return {
        "viewers": n,
        "with_snapshot": len(got),
        "all_snapshots_s": round(all_in, 2),
        "snapshot_ms": {"p50": p50, "p99": p99},
        "events_per_client": {
            "mean": round(sum(per_client) / max(1, n), 2),
            "max": per_client[-1] if per_client else 0,
        },
        "events_by_type": kinds,
        "redis_calls": sum(calls.values()),
        "redis_calls_by_command": calls,
        "server_cpu_s": round(cpu, 2),
    }


def _storm_cell(res: dict[str, Any]) -> list[str]:
    per = res.get("events_per_client", {})
    return [
        f"{res.get('with_snapshot')}/{res.get('viewers')} snapshots in "
        f"{res.get('all_snapshots_s')} s",
        f"presence events/client after the snapshot: mean {per.get('mean')}, max {per.get('max')}",
        f"Redis calls {res.get('redis_calls')}",
    ]


report.CELLS.update(
    {
        "cluster-fanout": _fanout_cell,
        "presence-capacity": _capacity_cell,
        "presence-storm": _storm_cell,
    }
)
report.TARGETS.update(
    {
        "cluster-fanout": ["all delivered on each", "(cost, not peak)"],
        "presence-capacity": ["no per-connection", "Redis calls"],
        "presence-storm": ["every snapshot", "folded counts"],
    }
)


def scenarios(bench: Bench) -> dict[str, Scenario]:
    return {
        "cluster-fanout": lambda t: s_cluster_fanout(bench, t),
        "presence-capacity": lambda t: s_presence_capacity(bench, t),
        "presence-storm": lambda t: s_presence_storm(bench, t),
    }


def _make_file_main(owner: str, members: list[str]) -> None:
    from core.settings import get_settings
    from models import File, FileMember, session_scope
    from services.access import ensure_user

    with session_scope(get_settings().database_url) as session:
        for uid in (owner, *members):
            ensure_user(session, uid)
        file = File(owner_id=owner, name="bench.csv", status="processed")
        session.add(file)
        session.flush()
        for uid in members:
            session.add(FileMember(file_id=file.id, user_id=uid))
        file_id = file.id
    print(file_id)


if __name__ == "__main__":
    if sys.argv[1:2] == ["make-file"]:
        _make_file_main(sys.argv[2], sys.argv[3:])
