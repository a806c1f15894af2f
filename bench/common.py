"""Helpers shared by the orchestrator and its worker processes (load client, publisher)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

STREAM_PATH = "/api/v1/stream/notifications"
EVENT_TYPE = "bench"
# Padding that makes the published `data` dict ~150 bytes of JSON:
# {"t": 1764096000000000000, "seq": 123456, "pad": "xxxx..."}
PAD = "x" * 100


def stamp_data(seq: int, pad: str = PAD) -> dict[str, Any]:
    """The `data` dict every benchmark event carries: send time (ns), sequence number, padding."""
    return {"t": time.time_ns(), "seq": seq, "pad": pad}


def pubsub_channel(prefix: str, channel: str) -> str:
    """Redis pub/sub channel our `streams.publish` uses (a Redis Cluster hash tag in braces)."""
    return f"{prefix}:{{{channel}}}"


def history_key(prefix: str, channel: str) -> str:
    return f"{prefix}:{{{channel}}}:h"


def make_token(secret: str, user: str, ttl: int = 3600) -> str:
    import jwt

    return jwt.encode({"sub": user, "exp": int(time.time()) + ttl}, secret, algorithm="HS256")


def percentiles(values: Sequence[int], qs: Sequence[float]) -> list[float]:
    """Nearest-rank percentiles of an already sorted sequence (empty -> NaN)."""
    n = len(values)
    if n == 0:
        return [math.nan for _ in qs]
    out = []
    for q in qs:
        rank = max(1, math.ceil(q / 100.0 * n))
        out.append(float(values[min(n, rank) - 1]))
    return out


def set_loop_policy() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --- JSON-lines control channel used by the worker processes -------------------------------


def emit(obj: dict[str, Any]) -> None:
    """Write one JSON control message on stdout (workers talk to the orchestrator this way)."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


async def stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def read_command(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """Next JSON command from stdin; None on EOF (the orchestrator went away)."""
    while True:
        line = await reader.readline()
        if not line:
            return None
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            log("bad command line:", line[:200])
            continue
        if isinstance(obj, dict):
            return obj


def cpu_seconds(pid: int) -> float | None:
    """utime+stime of a process (and its reaped children) in seconds, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
