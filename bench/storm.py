"""Scenarios of many distinct users (each its own ``user:{id}`` channel and token), with Nchan
beside us where it applies.

* ``users-new``: a fresh server; N users never seen before open their streams at once: time to
  open all, RSS per connection, Redis connections afterwards.
* ``users-known``: the same with users already in the database (the server process is fresh,
  as after a deploy).
* ``reconnect-storm``: N streams open, events flowing to a sample of the channels; the API
  process gets SIGTERM and a new one starts on the same port; every client reconnects with its
  Last-Event-ID: time until all are live again, events lost (must be 0), duplicates.

Nchan (nginx's pub/sub module, bench/nchan.py) serves the same N distinct channels for the two
open rows; it has no users, tokens or database, so its figures are the floor of a C server.
``--scale`` shrinks N (e.g. 0.1: 1,000 users).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench import nchan
from bench.common import STREAM_PATH, cpu_seconds
from bench.procs import (
    LOAD_CPU,
    PYTHON,
    SERVER_CPU,
    UVICORN_FLAGS,
    Proc,
    Worker,
    free_port,
    rss_kb,
    spawn,
    wait_http_ok,
)
from bench.profiling import py_spy

if TYPE_CHECKING:
    from bench.runner import Bench, Target

SCENARIOS = ("users-new", "users-known", "reconnect-storm")


@dataclass
class StormParams:
    users: int = 10_000
    concurrency: int = 1000  # handshakes in flight from the client
    sample: int = 100  # channels that get events during the reconnect storm
    events: int = 20  # per sampled channel
    rate: float = 200.0  # events/s in all (10 s of publishing at full scale)

    @classmethod
    def scaled(cls, scale: float) -> StormParams:
        n = max(10, round(10_000 * scale))
        return cls(users=n, concurrency=min(1000, n), sample=max(5, min(100, n // 100 or 5)))


def scenarios(bench: Bench) -> dict[str, Any]:
    """The scenario functions, for the runner's table of them."""
    p = StormParams.scaled(bench.args.scale)

    async def users_new(target: Target) -> dict[str, Any]:
        return await _users(bench, target, p, known=False)

    async def users_known(target: Target) -> dict[str, Any]:
        return await _users(bench, target, p, known=True)

    async def reconnect(target: Target) -> dict[str, Any]:
        return await _reconnect_storm(bench, target, p)

    return {"users-new": users_new, "users-known": users_known, "reconnect-storm": reconnect}


async def _client(bench: Bench, name: str, port: int, path: str) -> Worker:
    spec = {"host": "127.0.0.1", "port": port, "path": path, "secret": bench.secret}
    return await Worker.start(
        f"storm-{name}",
        "bench.stormclient",
        spec,
        env=bench.env,
        cpu=LOAD_CPU,
        pinning=bench.pinning,
        log_dir=bench.log_dir,
    )


def _redis_connections(bench: Bench) -> dict[str, int]:
    r = bench.redis()
    try:
        clients = r.client_list()
    finally:
        r.close()
    api = sum(1 for c in clients if str(c.get("name", "")).startswith("finrt-api:"))
    return {**bench.redis_client_counts(), "api_command_connections": api}


def _create_users(bench: Bench, users: list[str]) -> None:
    from models import session_scope
    from services.access import ensure_users

    with session_scope(bench.env["FINRT_DATABASE_URL"]) as session:
        ensure_users(session, users)


async def _measure_open(
    bench: Bench,
    server: Proc,
    port: int,
    users: list[str],
    path: str,
    p: StormParams,
    tag: str,
    name: str,
) -> dict[str, Any]:
    client = await _client(bench, tag, port, path)
    try:
        first = await client.request({"cmd": "open", "users": [f"warm-{tag}"], "timeout": 30})
        if first["ok"] != 1:
            raise RuntimeError(f"first stream failed: {first['errors']}")
        await asyncio.sleep(1.0)
        rss0 = rss_kb(server.pid)
        cpu0 = cpu_seconds(server.pid) or 0.0
        profile: dict[str, Any] = {}
        want = bench.args.py_spy is not None and tag == "ours"
        async with py_spy(want, server, f"ours-{name}", pinning=bench.pinning,
                          log_dir=bench.log_dir, out=profile):  # fmt: skip
            opened = await client.request(
                {"cmd": "open", "users": users, "concurrency": p.concurrency, "timeout": 120},
                timeout=600,
            )
        cpu1 = cpu_seconds(server.pid) or 0.0
        await asyncio.sleep(1.0)
        rss1 = rss_kb(server.pid)
        ok = opened["ok"]
        return {
            "users": len(users),
            "opened_ok": ok,
            "errors": opened["errors"],
            "open_all_s": round(opened["elapsed_s"], 3),
            "server_cpu_s": round(cpu1 - cpu0, 3),
            "rss_before_kb": rss0,
            "rss_after_kb": rss1,
            "rss_per_conn_kb": round((rss1 - rss0) / ok, 2) if ok else math.nan,
            **profile,
        }
    finally:
        await client.close()


async def _users(bench: Bench, target: Target, p: StormParams, *, known: bool) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    users = [f"{'k' if known else 'n'}{run}x{i}" for i in range(p.users)]
    if known:
        await asyncio.to_thread(_create_users, bench, users)
    async with target.running() as (server, _):
        res = await _measure_open(
            bench, server, target.port, users, STREAM_PATH, p, "ours", _name(known)
        )
        res["redis"] = _redis_connections(bench)
    res["nchan"] = await nchan.measure(
        bench,
        lambda port, proc: _measure_open(
            bench, proc, port, users, "/sub/user_{user}", p, "nchan", _name(known)
        ),
    )
    res["floor"] = await _floor(bench, users, p, _name(known))
    return res


async def _floor(bench: Bench, users: list[str], p: StormParams, name: str) -> dict[str, Any]:
    """The same opens against bench/floor_app.py: uvicorn and PyJWT with nothing of ours."""
    port = free_port()
    argv = [PYTHON, "-m", "uvicorn", "bench.floor_app:app", "--host", "127.0.0.1",
            "--port", str(port), *UVICORN_FLAGS]  # fmt: skip
    server = spawn(
        f"server-floor-{name}", argv, env=bench.env, cpu=SERVER_CPU,
        pinning=bench.pinning, log_dir=bench.log_dir,
    )  # fmt: skip
    try:
        await wait_http_ok(port, "/healthz", server, timeout=60)
        return await _measure_open(bench, server, port, users, STREAM_PATH, p, "floor", name)
    except Exception as exc:  # a peer's failure is its row's note, not the end of the run
        return {"skipped": f"uvicorn floor failed: {exc}"}
    finally:
        await asyncio.to_thread(server.stop)


def _name(known: bool) -> str:
    return "users-known" if known else "users-new"


async def _reconnect_storm(bench: Bench, target: Target, p: StormParams) -> dict[str, Any]:
    if bench.pub_mode != "streams":
        raise _skip("needs streams.apublish")
    run = uuid.uuid4().hex[:6]
    users = [f"r{run}x{i}" for i in range(p.users)]
    sample = users[:: max(1, len(users) // p.sample)][: p.sample]
    async with target.running() as (_, closing):
        port = target.port
        client = await _client(bench, "reconnect", port, STREAM_PATH)
        closing.push_async_callback(client.close)
        opened = await client.request(
            {"cmd": "open", "users": users, "concurrency": p.concurrency, "timeout": 120},
            timeout=600,
        )
        if opened["ok"] != len(users):
            raise RuntimeError(f"only {opened['ok']} of {len(users)} opened: {opened['errors']}")
        await client.request({"cmd": "expect", "users": sample, "count": p.events})
        pub = await bench.publisher(
            "reconnect",
            channels=[f"user:{u}" for u in sample],
            per_channel=p.events,
            rate=p.rate,
            concurrency=1,
            warmup=False,
            ids="first",
        )
        closing.push_async_callback(pub.close)
        await pub.send({"cmd": "go"})
        publishing_s = p.events * len(sample) / p.rate
        await asyncio.sleep(publishing_s * 0.3)  # events flow before, during and after
        old = target.proc
        assert old is not None
        t_term = time.time_ns()
        await asyncio.to_thread(old.stop, 30.0)  # SIGTERM; streams are told to come back
        t_down = time.time_ns()
        new = spawn(
            "server-ours-after-restart",
            target.argv(port),
            env=bench.env,
            cpu=SERVER_CPU,
            pinning=bench.pinning,
            log_dir=bench.log_dir,
        )
        target.proc = new
        await wait_http_ok(port, "/healthz", new, timeout=60)
        t_up = time.time_ns()
        deadline = time.monotonic() + 120
        while True:
            stats = await client.request({"cmd": "stats", "since_ns": t_term})
            if stats["reopened_since"] >= len(users) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        all_live_s = (stats["last_ready_ns"] - t_term) / 1e9 if stats["last_ready_ns"] else math.nan
        await pub.recv(timeout=publishing_s + 300)
        await asyncio.sleep(3.0)  # the last events' way through
        final = await client.request({"cmd": "stats", "since_ns": t_term})
        return {
            "users": len(users),
            "sampled_channels": len(sample),
            "events_published": p.events * len(sample),
            "old_process_exit_s": round((t_down - t_term) / 1e9, 3),
            "new_process_ready_s": round((t_up - t_term) / 1e9, 3),
            "reconnected": stats["reopened_since"],
            "all_live_again_s": round(all_live_s, 3),
            "live_at_end": final["live"],
            "expected": final["expected"],
            "lost": final["lost"],
            "duplicates": final["duplicates"],
            "redis": _redis_connections(bench),
            "nchan": {"skipped": nchan.RESTART_NOTE},
        }


def _skip(why: str) -> Exception:
    from bench.runner import Skip

    return Skip(why)


# -- the table -------------------------------------------------------------------------------


def _ratio(ours: Any, peer: Any) -> str:
    try:
        a, b = float(ours), float(peer)
    except (TypeError, ValueError):
        return "-"
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return "-"
    return f"{a / b:.1f}x"


def brief(res: dict[str, Any]) -> str:
    """One line for the progress log."""
    keys = ("users", "open_all_s", "rss_per_conn_kb", "all_live_again_s", "lost", "duplicates")
    parts = [f"{k}={res[k]}" for k in keys if k in res]
    peer = res.get("nchan") or {}
    if "open_all_s" in peer:
        parts.append(f"nchan open_all_s={peer['open_all_s']} rss={peer['rss_per_conn_kb']}")
    return "; ".join(parts)


def render(doc: dict[str, Any]) -> str:
    """The distinct-user rows: ours, Nchan (or why not), ours/Nchan, and the uvicorn floor
    (bench/floor_app.py: uvicorn and PyJWT with nothing of ours) with ours/floor."""
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for name in SCENARIOS:
        res = doc["scenarios"].get(name, {}).get("ours")
        if res is None:
            continue
        if "error" in res or "skipped" in res:
            why = str(res.get("error") or res.get("skipped"))[:80]
            rows.append((name, why, "-", "-", "-", "-"))
            continue
        peer = res.get("nchan") or {}
        note = peer.get("skipped") or peer.get("error")
        floor = res.get("floor") or {}
        f_note = floor.get("skipped") or floor.get("error")
        users = f"{res['users']:,}"
        if name == "reconnect-storm":
            rows += [
                (f"{name} ({users}): all live again", f"{res['all_live_again_s']} s",
                 "not measured", "-", "-", "-"),
                ("  new process answering after SIGTERM", f"{res['new_process_ready_s']} s",
                 "", "", "", ""),
                ("  events lost / duplicated", f"{res['lost']} / {res['duplicates']} "
                 f"of {res['expected']}", "", "", "", ""),
                ("  Redis connections after (API / all)",
                 f"{res['redis']['api_command_connections']} / "
                 f"{res['redis']['total_connections']}", "", "", "", ""),
            ]  # fmt: skip
            notes.append(f"{name}: Nchan not measured: {note}")
            continue

        def peer_cell(found: dict[str, Any], why: Any, key: str, unit: str) -> str:
            if why or key not in found:
                return "not measured"
            return f"{found[key]} {unit}"

        rows += [
            (f"{name} ({users}): time to open all", f"{res['open_all_s']} s",
             peer_cell(peer, note, "open_all_s", "s"),
             _ratio(res["open_all_s"], peer.get("open_all_s")),
             peer_cell(floor, f_note, "open_all_s", "s"),
             _ratio(res["open_all_s"], floor.get("open_all_s"))),
            ("  server CPU for the opens", f"{res.get('server_cpu_s', '-')} s", "-", "-",
             peer_cell(floor, f_note, "server_cpu_s", "s"),
             _ratio(res.get("server_cpu_s"), floor.get("server_cpu_s"))),
            ("  RSS per connection", f"{res['rss_per_conn_kb']} KB",
             peer_cell(peer, note, "rss_per_conn_kb", "KB"),
             _ratio(res["rss_per_conn_kb"], peer.get("rss_per_conn_kb")),
             peer_cell(floor, f_note, "rss_per_conn_kb", "KB"),
             _ratio(res["rss_per_conn_kb"], floor.get("rss_per_conn_kb"))),
            ("  Redis connections after (API / all)",
             f"{res['redis']['api_command_connections']} / {res['redis']['total_connections']}",
             "-", "-", "-", "-"),
            ("  opened / failed", f"{res['opened_ok']} / {res['users'] - res['opened_ok']}",
             "-" if note else f"{peer['opened_ok']} / {peer['users'] - peer['opened_ok']}", "",
             "-" if f_note or "opened_ok" not in floor
             else f"{floor['opened_ok']} / {floor['users'] - floor['opened_ok']}", ""),
        ]  # fmt: skip
        if note:
            notes.append(f"{name}: Nchan not measured: {note}")
        if f_note:
            notes.append(f"{name}: uvicorn floor not measured: {f_note}")
    if not rows:
        return ""
    headers = ("Distinct users (own channel, own token)", "Ours", "Nchan", "Ours/Nchan",
               "uvicorn floor", "Ours/floor")  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line.rstrip(), "-+-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    out.append(
        "uvicorn floor = bench/floor_app.py under the same uvicorn: token verified, SSE headers "
        "sent, nothing else (no hub, Redis or database)"
    )
    return "\n".join(out + sorted(set(notes)))
