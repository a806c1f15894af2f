"""Event publisher process: ``python -m bench.publisher '<json spec>'``.

Modes:
  streams  ``await streams.apublish(channel, type, data)`` -- the project's own publish path
           (reads FINRT_REDIS_URL / FINRT_REDIS_PREFIX from the environment).
  raw      stand-in with the same wire effect: XADD the envelope to ``<prefix>:{<channel>}:h``
           and PUBLISH the envelope JSON on ``<prefix>:{<channel>}``.
  nchan    ``POST /pub/<channel, ':' as '_'>`` to Nchan (bench/nchan.py) at ``nchan_port``, the
           data as the message body, over kept-alive HTTP/1.1 connections (one per call in
           flight).

Protocol (JSON lines): emits ``hello`` once connected; while waiting for ``{"cmd": "go"}`` it
publishes a warm-up probe (``seq = -1``) to every channel every 250 ms so the orchestrator can
tell when every subscriber is live; then publishes ``per_channel`` rounds over ``channels``
(paced to ``rate`` events/s in total, or as fast as possible with ``rate = 0`` using
``concurrency`` concurrent calls) and emits ``done`` with first/last publish stamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from bench.common import (
    EVENT_TYPE,
    PAD,
    emit,
    history_key,
    log,
    pubsub_channel,
    read_command,
    set_loop_policy,
    stdin_reader,
)

PublishFn = Callable[[str, dict[str, Any]], Awaitable[str]]


async def _make_publish(spec: dict[str, Any]) -> tuple[PublishFn, Callable[[], Awaitable[None]]]:
    mode = spec.get("mode", "streams")
    etype = spec.get("type", EVENT_TYPE)
    if mode == "streams":
        import streams

        apublish = streams.apublish

        async def pub_streams(channel: str, data: dict[str, Any]) -> str:
            return str(await apublish(channel, etype, data))

        async def close_streams() -> None:
            return None

        return pub_streams, close_streams

    if mode == "nchan":
        return _nchan_publish(int(spec["nchan_port"]))

    import redis.asyncio as aioredis

    prefix = spec["prefix"]
    maxlen = int(spec.get("history_maxlen", 1000))
    client = aioredis.Redis.from_url(spec["redis_url"], max_connections=1000)

    async def pub_raw(channel: str, data: dict[str, Any]) -> str:
        created = datetime.now(UTC).isoformat()
        fields: dict[Any, Any] = {"type": etype, "data": orjson.dumps(data), "created_at": created}
        # XADD first: the Redis entry id becomes the envelope id; then PUBLISH the envelope.
        rid = await client.xadd(
            history_key(prefix, channel), fields, maxlen=maxlen, approximate=True
        )
        eid = rid.decode() if isinstance(rid, bytes) else str(rid)
        env = {"id": eid, "channel": channel, "type": etype, "data": data, "created_at": created}
        await client.publish(pubsub_channel(prefix, channel), orjson.dumps(env))
        return eid

    async def close_raw() -> None:
        await client.aclose()

    return pub_raw, close_raw


def _nchan_publish(port: int) -> tuple[PublishFn, Callable[[], Awaitable[None]]]:
    """Publishing to Nchan: a pool of kept-alive connections, one request at a time on each."""
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    head = f"Host: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"

    async def pub_nchan(channel: str, data: dict[str, Any]) -> str:
        body = orjson.dumps(data)
        path = "/pub/" + channel.replace(":", "_")
        request = (
            f"POST {path} HTTP/1.1\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        while True:
            reused = bool(idle)
            conn = idle.pop() if reused else await asyncio.open_connection("127.0.0.1", port)
            reader, writer = conn
            try:
                writer.write(request)
                status_line = await reader.readuntil(b"\r\n")
                length = 0
                for line in (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError):
                writer.close()
                if reused:  # nginx closed a kept-alive connection: once more on a new one
                    continue
                raise
            break
        idle.append(conn)
        status = int(status_line.split(b" ", 2)[1])
        if status not in (201, 202):
            raise RuntimeError(f"Nchan answered {status}")
        return str(status)

    async def close_nchan() -> None:
        for _, writer in idle:
            writer.close()

    return pub_nchan, close_nchan


async def _run(spec: dict[str, Any]) -> None:
    reader = await stdin_reader()
    publish, close = await _make_publish(spec)
    pad = "x" * int(spec.get("pad", len(PAD)))
    channels: list[str] = spec["channels"]
    per_channel = int(spec.get("per_channel", 1))
    seq_start = int(spec.get("seq_start", 0))
    rate = float(spec.get("rate", 0))
    concurrency = max(1, int(spec.get("concurrency", 32)))
    want_ids = spec.get("ids", "first")
    notify = spec.get("type") == "notification"

    go = asyncio.Event()
    stop = asyncio.Event()

    async def commands() -> None:
        while True:
            cmd = await read_command(reader)
            if cmd is None or cmd.get("cmd") == "exit":
                stop.set()
                go.set()
                return
            if cmd.get("cmd") == "go":
                go.set()

    cmd_task = asyncio.create_task(commands())
    emit({"ev": "hello"})

    async def probe(ch: str) -> None:
        try:
            await publish(ch, {"t": time.time_ns(), "seq": -1, "pad": ""})
        except Exception as exc:  # a failed probe is retried by the next round
            log("warm-up publish failed:", repr(exc))

    warmups = 0
    if spec.get("warmup", True):
        while not go.is_set():
            for i in range(0, len(channels), 50):
                await asyncio.gather(*(probe(ch) for ch in channels[i : i + 50]))
            warmups += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(go.wait(), 0.25)
    else:
        await go.wait()
    if stop.is_set():
        await close()
        return

    total = per_channel * len(channels)
    work: Iterator[tuple[int, str, int]] = (
        (k, ch, seq_start + r)
        for k, (r, ch) in enumerate(itertools.product(range(per_channel), channels))
    )
    ids: list[str] = []
    errors: dict[str, int] = {}
    first_ns = 0
    last_ns = 0
    max_lag = 0.0
    t0 = time.perf_counter()

    async def one(ch: str, seq: int) -> str | None:
        nonlocal first_ns, last_ns
        stamp = time.time_ns()
        data: dict[str, Any] = {"t": stamp, "seq": seq, "pad": pad}
        if notify:  # what the hub reads to count a notification's delivery by type
            data["type"] = "report_ready"
        if not first_ns:
            first_ns = stamp
        try:
            eid = await publish(ch, data)
        except Exception as exc:  # keep going; count it
            key = f"{type(exc).__name__}: {exc}"[:200]
            errors[key] = errors.get(key, 0) + 1
            return None
        last_ns = time.time_ns()
        return eid

    if rate > 0:
        interval = 1.0 / rate
        for k, ch, seq in work:
            target = t0 + k * interval
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                max_lag = max(max_lag, -delay)
            eid = await one(ch, seq)
            if eid is not None and (want_ids == "all" or (want_ids == "first" and not ids)):
                ids.append(eid)
    else:

        async def worker() -> None:
            for _k, ch, seq in work:
                eid = await one(ch, seq)
                if eid is not None and want_ids == "all":
                    ids.append(eid)
                elif eid is not None and want_ids == "first" and not ids:
                    ids.append(eid)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    emit(
        {
            "ev": "done",
            "count": total - sum(errors.values()),
            "errors": errors,
            "elapsed_s": elapsed,
            "rate": total / elapsed if elapsed > 0 else 0.0,
            "first_ns": first_ns,
            "last_ns": last_ns,
            "max_lag_ms": max_lag * 1000,
            "warmup_rounds": warmups,
            "ids": ids if want_ids == "all" else ids[:1],
        }
    )
    await stop.wait()
    cmd_task.cancel()
    await close()


def main() -> None:
    spec = orjson.loads(sys.argv[1])
    set_loop_policy()
    try:
        asyncio.run(_run(spec))
    except KeyboardInterrupt:
        log("publisher interrupted")


if __name__ == "__main__":
    main()
