"""The fan-out scenarios: one channel to many streams (``fanout-*``), a channel per user
(``per-user``) and the open streams one process holds (``capacity``), with the stream load they
share (open, warm up, publish, drain, and the processes' CPU)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from bench.clients import ClientGroup, open_summary
from bench.common import cpu_seconds
from bench.procs import Proc, Worker, rss_kb, tree_cpu
from bench.profiling import py_spy
from bench.runner import Skip

if TYPE_CHECKING:
    from bench.runner import Bench, Target


def scenarios(bench: Bench) -> dict[str, Any]:
    """The scenario functions, for the runner's table of them."""
    return {
        "fanout-100": partial(s_fanout_100, bench),
        "fanout-100-notify": partial(s_fanout_100_notify, bench),
        "fanout-10": partial(s_fanout_10, bench),
        "fanout-max": partial(s_fanout_max, bench),
        "capacity": partial(s_capacity, bench),
        "per-user": partial(s_per_user, bench),
    }


async def stream_load(
    bench: Bench,
    target: Target,
    tag: str,
    *,
    users: list[str],
    conns: int,
    channels: list[str],
    per_channel: int,
    rate: float,
    concurrency: int = 1,
    drain_max_s: float | None = None,
    event_type: str | None = None,
) -> dict[str, Any]:
    """Open `conns` streams, warm them up, publish, drain; return the merged figures."""
    p = bench.p
    async with target.running() as (server, closing):
        client = await bench.client(f"{target.name}-{tag}", target.port, target.stream_path)
        closing.push_async_callback(client.close)
        opened = await client.open(
            {
                "cmd": "open",
                "count": conns,
                "users": users,
                "expect": [0, per_channel],
                # Gentler than the capacity scenario's open storm: here delivery is measured.
                "concurrency": 100,
                "timeout": 60,
            },
        )
        if opened["ok"] == 0:
            raise RuntimeError(f"no stream could be opened: {opened['errors']}")
        pub = await bench.publisher(
            f"{target.name}-{tag}",
            channels=channels,
            per_channel=per_channel,
            rate=rate,
            concurrency=concurrency,
            warmup=True,
            ids="first",
            **({"type": event_type} if event_type else {}),
            **({"mode": "nchan", "nchan_port": target.port} if target.name == "nchan" else {}),
        )
        closing.push_async_callback(pub.close)
        warm = await client.wait_warm(30)
        await client.reset()
        extra: dict[str, Any] = {}
        async with profiled(bench, target, tag, server, extra):
            cpu0 = cpu_snapshot(bench, server, client, pub)
            wall0 = time.monotonic()
            await pub.send({"cmd": "go"})
            expected_s = per_channel * len(channels) / rate if rate > 0 else 0
            done = await pub.recv(timeout=expected_s + 600)
            res = await client.drain(
                p.drain_idle_s, drain_max_s if drain_max_s is not None else p.drain_max_s
            )
            cpu = cpu_delta(cpu0, cpu_snapshot(bench, server, client, pub), wall0)
        res.update(extra)
        # Everything but the server shares the load CPU: when it is (nearly) saturated and
        # the server is not, the client side limited the rate: ours is then a lower bound.
        load_pct = sum(cpu.get(k, 0.0) for k in ("client_pct", "publisher_pct", "redis_pct"))
        res["load_cpu_saturated"] = bool(
            bench.pinning.enabled and load_pct >= 80.0 and cpu.get("server_pct", 0.0) < 80.0
        )
        span_ns = res["last_recv_ns"] - done["first_ns"] if res["last_recv_ns"] else 0
        res.update(
            {
                "open": open_summary(opened),
                "warm": warm,
                "publisher": {k: v for k, v in done.items() if k not in ("ev", "ids")},
                "deliveries_per_s": res["events"] / (span_ns / 1e9) if span_ns > 0 else 0.0,
                "span_s": span_ns / 1e9,
                "cpu": cpu,
                "server_rss_kb": rss_kb(server.pid),
            }
        )
        return res


def profiled(
    bench: Bench, target: Target, tag: str, server: Proc, out: dict[str, Any]
) -> contextlib.AbstractAsyncContextManager[None]:
    want = bench.args.py_spy is not None and (not bench.args.py_spy or tag in bench.args.py_spy)
    return py_spy(
        want,
        server,
        f"{target.name}-{tag}",
        pinning=bench.pinning,
        log_dir=bench.log_dir,
        out=out,
    )


def cpu_snapshot(
    bench: Bench, server: Proc, client: ClientGroup, pub: Worker | None
) -> dict[str, float]:
    redis_pids = bench.redis_cpu_pids
    if redis_pids is None:
        redis_pids = [bench.redis_proc.pid] if bench.redis_proc else []
    snap = {
        "server": tree_cpu(server.pid),
        "client": sum(cpu_seconds(pid) or 0.0 for pid in client.pids),
        "redis": sum(cpu_seconds(pid) or 0.0 for pid in redis_pids),
    }
    if pub is not None:
        snap["publisher"] = cpu_seconds(pub.pid) or 0.0
    return {k: v or 0.0 for k, v in snap.items()}


def cpu_delta(a: dict[str, float], b: dict[str, float], wall0: float) -> dict[str, float]:
    wall = max(1e-6, time.monotonic() - wall0)
    out = {f"{k}_pct": round(100.0 * (b[k] - a.get(k, 0.0)) / wall, 1) for k in b}
    out["wall_s"] = round(wall, 2)
    return out


async def fanout(
    bench: Bench,
    target: Target,
    tag: str,
    events: int,
    rate: float,
    drain_max_s: float | None = None,
    event_type: str | None = None,
) -> dict[str, Any]:
    p = bench.p
    return await stream_load(
        bench,
        target,
        tag,
        users=["bench"],
        conns=p.subs,
        channels=["user:bench"],
        per_channel=events,
        rate=rate,
        concurrency=p.fmax_concurrency if rate <= 0 else 1,
        drain_max_s=drain_max_s,
        event_type=event_type,
    )


async def s_fanout_100(bench: Bench, target: Target) -> dict[str, Any]:
    return await fanout(bench, target, "fanout-100", bench.p.f100_events, 100.0)


async def s_fanout_100_notify(bench: Bench, target: Target) -> dict[str, Any]:
    return await fanout(
        bench, target, "fanout-100-notify", bench.p.f100_events, 100.0, event_type="notification"
    )


async def s_fanout_10(bench: Bench, target: Target) -> dict[str, Any]:
    return await fanout(bench, target, "fanout-10", bench.p.f10_events, 10.0)


async def s_fanout_max(bench: Bench, target: Target) -> dict[str, Any]:
    # The naive baseline needs ~70 s to work through 2M deliveries: let it finish.
    return await fanout(
        bench, target, "fanout-max", bench.p.fmax_events, 0.0, drain_max_s=2 * bench.p.drain_max_s
    )


async def s_per_user(bench: Bench, target: Target) -> dict[str, Any]:
    if target.name == "baseline":
        raise Skip("not measured for the baseline")
    p = bench.p
    users = [f"u{i}" for i in range(p.peruser_users)]
    return await stream_load(
        bench,
        target,
        "per-user",
        users=users,
        conns=len(users),
        channels=[f"user:{u}" for u in users],
        per_channel=p.peruser_events,
        rate=p.peruser_rate,
    )


async def s_capacity(bench: Bench, target: Target) -> dict[str, Any]:
    p = bench.p
    total = p.cap_conns if target.name == "ours" else p.cap_baseline
    timed = min(p.cap_timed, total)
    async with target.running() as (server, closing):
        client = await bench.client(f"{target.name}-capacity", target.port)
        closing.push_async_callback(client.close)
        # One stream first so lazily created shared state exists before "RSS before".
        first = await client.open({"cmd": "open", "count": 1, "user": "cap", "timeout": 30})
        if first["ok"] != 1:
            raise RuntimeError(f"first stream failed: {first['errors']}")
        await asyncio.sleep(1.0)
        rss0 = rss_kb(server.pid)
        cpu0 = tree_cpu(server.pid)
        extra: dict[str, Any] = {}
        async with profiled(bench, target, "capacity", server, extra):
            timed_open = await client.open(
                {
                    "cmd": "open",
                    "count": timed,
                    "user": "cap",
                    "concurrency": p.cap_concurrency,
                    "timeout": 60,
                }
            )
        cpu_open = tree_cpu(server.pid) - cpu0
        await asyncio.sleep(1.0)
        rss_timed = rss_kb(server.pid)
        batches = []
        left = total - timed
        while left > 0:
            n = min(1000, left)
            batches.append(
                await client.open(
                    {
                        "cmd": "open",
                        "count": n,
                        "user": "cap",
                        "concurrency": p.cap_concurrency,
                        "timeout": 60,
                    }
                )
            )
            left -= n
        await asyncio.sleep(1.0)
        idle0 = tree_cpu(server.pid)
        await asyncio.sleep(3.0)
        idle_pct = 100.0 * (tree_cpu(server.pid) - idle0) / 3.0
        rss1 = rss_kb(server.pid)
        live = (batches[-1] if batches else timed_open)["total_open"]
        opened_ok = timed_open["ok"] + sum(b["ok"] for b in batches)
        redis_clients = bench.redis_client_counts()
        failed = timed_open["failed"] + sum(b["failed"] for b in batches)
        errors: dict[str, int] = dict(timed_open["errors"])
        for b in batches:
            for k, v in b["errors"].items():
                errors[k] = errors.get(k, 0) + v
        return {
            "connections": total,
            "opened_ok": opened_ok,
            "failed": failed,
            "errors": errors,
            "live": live,
            "rss_before_kb": rss0,
            "rss_after_timed_kb": rss_timed,
            "rss_after_kb": rss1,
            "rss_per_conn_kb": (rss1 - rss0) / opened_ok if opened_ok else math.nan,
            "rss_per_conn_timed_kb": (rss_timed - rss0) / timed_open["ok"]
            if timed_open["ok"]
            else math.nan,
            "timed_count": timed,
            "timed_open_s": timed_open["elapsed_s"],
            "timed_open": open_summary(timed_open),
            "server_cpu_s_for_timed_open": cpu_open,
            "rest_open_s": sum(b["elapsed_s"] for b in batches),
            "idle_server_cpu_pct": round(idle_pct, 1),
            **extra,
            "redis": redis_clients,
        }
