"""N load-client processes driven as one (``--clients N``): commands are split or broadcast,
replies merged; latency arrays are merged from the files each process dumps."""

from __future__ import annotations

import asyncio
import contextlib
import math
from array import array
from pathlib import Path
from typing import Any

from bench.common import percentiles
from bench.loadclient import latency_summary
from bench.procs import Worker

_SUMS = (
    "connections",
    "open_failed",
    "live",
    "disconnects",
    "expected",
    "received",
    "lost",
    "clients_with_loss",
    "duplicates",
    "clients_with_dups",
    "unexpected",
    "unstamped",
    "events",
)


class ClientGroup:
    def __init__(self, workers: list[Worker], dump_dir: Path) -> None:
        self.workers = workers
        self.dump_dir = dump_dir
        self.opened = [0] * len(workers)  # connections opened per worker (for `since`)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    async def _all(self, cmds: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                *(w.request(c, timeout=timeout) for w, c in zip(self.workers, cmds, strict=True))
            )
        )

    async def open(self, cmd: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        n = len(self.workers)
        count = int(cmd["count"])
        users: list[str] | None = cmd.get("users")
        cmds = []
        start = 0
        for k in range(n):
            part = count // n + (1 if k < count % n else 0)
            c = dict(cmd, count=part)
            if users:
                c["users"] = [users[j % len(users)] for j in range(start, start + part)]
            cmds.append(c)
            start += part
        replies = await self._all(cmds, timeout)
        for k, r in enumerate(replies):
            self.opened[k] += r["count"]
        heads = sorted(x for r in replies for x in r.get("ready_raw_ms", []))
        p50, p99, pmax = percentiles(heads, (50, 99, 100))
        errors: dict[str, int] = {}
        for r in replies:
            for key, v in r["errors"].items():
                errors[key] = errors.get(key, 0) + v
        t0 = min(r["t0_ns"] for r in replies)
        t1 = max(r["t1_ns"] for r in replies)
        return {
            "ev": "opened",
            "count": count,
            "ok": sum(r["ok"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "errors": errors,
            "elapsed_s": (t1 - t0) / 1e9,
            "ready_ms": {"p50": p50, "p99": p99, "max": pmax},
            "total_open": sum(r["total_open"] for r in replies),
        }

    async def wait_warm(self, timeout: float) -> dict[str, Any]:
        replies = await self._all(
            [{"cmd": "wait_warm", "timeout": timeout}] * len(self.workers), timeout + 30
        )
        return {
            "ok": all(r["ok"] for r in replies),
            "cold": sum(r["cold"] for r in replies),
            "live": sum(r["live"] for r in replies),
        }

    async def reset(self) -> None:
        await self._all([{"cmd": "reset"}] * len(self.workers), 60)

    def mark(self) -> list[int]:
        """Per-worker connection counts so far, to pass as `since` to drain()."""
        return list(self.opened)

    async def drain(
        self, idle_s: float, max_s: float, since: list[int] | None = None
    ) -> dict[str, Any]:
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        dumps = [self.dump_dir / f"lat-{w.pid}" for w in self.workers]
        cmds = [
            {
                "cmd": "drain",
                "idle_s": idle_s,
                "max_s": max_s,
                "dump": str(d),
                "since": since[k] if since else 0,
            }
            for k, d in enumerate(dumps)
        ]
        replies = await self._all(cmds, max_s + 300)
        lat = array("q")
        seq = array("q")
        for d in dumps:
            for path, arr in ((Path(f"{d}.lat"), lat), (Path(f"{d}.seq"), seq)):
                with contextlib.suppress(OSError):
                    arr.frombytes(path.read_bytes())
                path.unlink(missing_ok=True)
        out: dict[str, Any] = {k: sum(r[k] for r in replies) for k in _SUMS}
        firsts = [r["first_recv_ns"] for r in replies if r["first_recv_ns"]]
        comp_max = [r["complete_ms"]["max"] for r in replies if r["complete_ms"]["n"]]
        comp_min = [r["complete_ms"]["min"] for r in replies if r["complete_ms"]["n"]]
        out.update(
            {
                "max_lost_per_client": max(r["max_lost_per_client"] for r in replies),
                "first_recv_ns": min(firsts) if firsts else 0,
                "last_recv_ns": max(r["last_recv_ns"] for r in replies),
                "complete": all(r["complete"] for r in replies),
                "complete_ms": {
                    "n": sum(r["complete_ms"]["n"] for r in replies),
                    "max": max(comp_max) if comp_max else math.nan,
                    "min": min(comp_min) if comp_min else math.nan,
                },
                "client_processes": len(self.workers),
            }
        )
        out.update(latency_summary(lat, seq))
        return out

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._all([{"cmd": "close"}] * len(self.workers), 60)
        for w in self.workers:
            await w.close()


def open_summary(opened: dict[str, Any]) -> dict[str, Any]:
    """The figures of a ``ClientGroup.open`` reply that go into a scenario's result."""
    return {k: opened[k] for k in ("count", "ok", "failed", "errors", "elapsed_s", "ready_ms")}
