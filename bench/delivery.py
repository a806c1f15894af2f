"""The delivery scenarios: catching up after a reconnect (``resume``), a Celery task's
progress until the streams have it (``e2e-celery``), and what the database-events triggers cost
(``db-events``, bench/db_events.py in a process of its own)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from bench.clients import open_summary
from bench.fanout import cpu_delta, cpu_snapshot
from bench.procs import LOAD_CPU, PYTHON, rss_kb, spawn, tree_cpu, wait_log
from bench.runner import Skip

if TYPE_CHECKING:
    from bench.runner import Bench, Target


def scenarios(bench: Bench) -> dict[str, Any]:
    """The scenario functions, for the runner's table of them."""
    return {
        "resume": partial(s_resume, bench),
        "e2e-celery": partial(s_e2e_celery, bench),
        "db-events": partial(s_db_events, bench),
    }


async def s_resume(bench: Bench, target: Target) -> dict[str, Any]:
    if target.name != "ours":
        raise Skip("the baseline has no history")
    if bench.pub_mode != "streams":
        raise Skip("needs streams.apublish")
    p = bench.p
    async with target.running() as (server, closing):
        chans = [f"user:resume{i}" for i in range(p.resume_trials)]
        pub = await bench.publisher(
            "ours-resume",
            channels=chans,
            per_channel=p.resume_events,
            rate=0,
            concurrency=1,
            warmup=False,
            ids="all",
        )
        closing.push_async_callback(pub.close)
        await pub.send({"cmd": "go"})
        done = await pub.recv(timeout=300)
        first_ids = done["ids"][: len(chans)]
        client = await bench.client("ours-resume", target.port)
        closing.push_async_callback(client.close)
        trials = []
        for i, first_id in enumerate(first_ids):
            since = client.mark()
            opened = await client.open(
                {
                    "cmd": "open",
                    "count": 1,
                    "user": f"resume{i}",
                    "expect": [1, p.resume_events],
                    "last_event_id": first_id,
                    "timeout": 30,
                }
            )
            res = await client.drain(3, 20, since)
            trials.append(
                {
                    "open_ok": opened["ok"],
                    "errors": opened["errors"],
                    "caught_up_ms": res["complete_ms"]["max"],
                    "received": res["received"],
                    "expected": res["expected"],
                    "lost": res["lost"],
                    "duplicates": res["duplicates"],
                    "unexpected": res["unexpected"],
                }
            )
        times = sorted(t["caught_up_ms"] for t in trials if not math.isnan(t["caught_up_ms"]))
        return {
            "events": p.resume_events,
            "trials": trials,
            "caught_up_ms_median": times[len(times) // 2] if times else math.nan,
            "caught_up_ms_max": times[-1] if times else math.nan,
            "complete_trials": len(times),
            "lost": sum(t["lost"] for t in trials),
            "duplicates": sum(t["duplicates"] for t in trials),
            "server_rss_kb": rss_kb(server.pid),
        }


async def s_e2e_celery(bench: Bench, target: Target) -> dict[str, Any]:
    if target.name != "ours":
        raise Skip("not measured for the baseline")
    if bench.pub_mode != "streams":
        raise Skip("needs streams.publish")
    p = bench.p
    async with target.running() as (server, closing):
        worker_proc = spawn(
            "celery-worker",
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "bench.celery_app",
                "worker",
                "--pool",
                "solo",
                "-Q",
                "bench",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "info",
                "-n",
                f"bench-{os.getpid()}@localhost",
            ],
            env=bench.env,
            cpu=LOAD_CPU,
            pinning=bench.pinning,
            log_dir=bench.log_dir,
        )
        closing.push_async_callback(asyncio.to_thread, worker_proc.stop)
        client = await bench.client("ours-e2e", target.port)
        closing.push_async_callback(client.close)
        opened = await client.open(
            {
                "cmd": "open",
                "count": p.e2e_subs,
                "user": "celery",
                "expect": [0, p.e2e_events],
                "timeout": 30,
            }
        )
        pub = await bench.publisher(
            "ours-e2e", channels=["user:celery"], per_channel=0, rate=0, warmup=True
        )
        closing.push_async_callback(pub.close)
        warm = await client.wait_warm(30)
        await pub.request({"cmd": "go"}, timeout=60)
        await client.reset()
        await wait_log(worker_proc, " ready.", 60)
        from bench.celery_app import app as celery_app

        celery_app.conf.broker_url = bench.env["BENCH_CELERY_BROKER"]
        t_send = time.time_ns()
        await asyncio.to_thread(
            celery_app.send_task,
            "bench.progress",
            args=["user:celery", p.e2e_events, p.e2e_rate],
            queue="bench",
        )
        expected_s = p.e2e_events / p.e2e_rate
        cpu0 = cpu_snapshot(bench, server, client, None)
        w0 = tree_cpu(worker_proc.pid)
        wall0 = time.monotonic()
        res = await client.drain(max(5.0, p.drain_idle_s), expected_s + 30)
        cpu = cpu_delta(cpu0, cpu_snapshot(bench, server, client, None), wall0)
        cpu["celery_worker_pct"] = round(
            100 * (tree_cpu(worker_proc.pid) - w0) / max(1e-6, cpu["wall_s"]), 1
        )
        res.update(
            {
                "open": open_summary(opened),
                "warm": warm,
                "task_sent_to_first_event_ms": (res["first_recv_ns"] - t_send) / 1e6
                if res["first_recv_ns"]
                else math.nan,
                "cpu": cpu,
            }
        )
        return res


async def s_db_events(bench: Bench, target: Target) -> dict[str, Any]:
    """bench/db_events.py in a process of its own (it sets the FINRT_ environment)."""
    if target.name != "ours":
        raise Skip("not measured for the baseline")
    env = {**os.environ, **bench.env}
    done = await asyncio.to_thread(
        subprocess.run,
        [PYTHON, "-m", "bench.db_events"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if "skipped" in result:
        raise Skip(result["skipped"])
    return result
