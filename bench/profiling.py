"""Optional py-spy sampling of the server during a scenario's measured phase (``--py-spy``).

py-spy is not a project dependency: ``pip install py-spy`` into the venv to use this. The raw
collapsed stacks go to ``bench/results/tmp/profile-<target>-<scenario>.txt`` (feed them to
flamegraph.pl or speedscope) and a summary of the hottest functions goes into latest.json.
Sampling costs CPU on the load CPU, so figures of a profiled run are perturbed a little.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.procs import LOAD_CPU, PYTHON, Pinning, Proc, spawn

_LINE = re.compile(r":\d+\)$")
_BOILERPLATE = (
    "<module>",
    "runpy",
    "typer/",
    "click/",
    "uvicorn/main.py",
    "uvicorn/server.py",
    "uvicorn/_compat.py",
    "asyncio/runners.py",
    "asyncio/base_events.py",
    "finrt/cli.py",
)


def find_py_spy() -> str | None:
    cand = Path(PYTHON).parent / "py-spy"
    if cand.exists():
        return str(cand)
    return shutil.which("py-spy")


def summarize(path: Path, top: int = 15, possible: float = 0.0) -> dict[str, Any]:
    """Top functions by self and inclusive share of samples, from py-spy's raw output.

    py-spy skips idle threads, so samples / `possible` (rate x seconds) is the busy share."""
    self_: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"error": f"no profile at {path}"}
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        # "func (path:line)" -> "func (path)": one entry per function, not per line.
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        total += n
        self_[frames[-1]] += n
        for f in set(frames):
            incl[f] += n

    # Frames every sample shares (entry point, CLI, uvicorn's runner) say nothing.
    for f in [f for f in incl if any(b in f for b in _BOILERPLATE)]:
        del incl[f]

    def pct(c: collections.Counter[str]) -> list[list[Any]]:
        return [[round(100.0 * v / total, 1), k] for k, v in c.most_common(top)] if total else []

    return {
        "samples": total,
        "busy_pct": round(100.0 * total / possible, 1) if possible else None,
        "self": pct(self_),
        "inclusive": pct(incl),
        "raw": str(path),
    }


@contextlib.asynccontextmanager
async def py_spy(
    enabled: bool,
    server: Proc,
    name: str,
    *,
    pinning: Pinning,
    log_dir: Path,
    out: dict[str, Any],
    rate: int = 200,
) -> AsyncIterator[None]:
    """Sample `server` while the body runs; put the summary into out["profile"]."""
    exe = find_py_spy() if enabled else None
    if exe is None:
        if enabled:
            out["profile"] = {"error": "py-spy not installed (pip install py-spy)"}
        yield
        return
    raw = log_dir.parent / f"profile-{name}.txt"
    raw.unlink(missing_ok=True)
    proc = spawn(
        f"py-spy-{name}",
        [
            exe,
            "record",
            "--pid",
            str(server.pid),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(raw),
        ],
        env={"PATH": "/usr/bin:/bin"},
        cpu=LOAD_CPU,
        pinning=pinning,
        log_dir=log_dir,
    )
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    try:
        yield
    finally:
        seconds = time.monotonic() - t0
        with contextlib.suppress(ProcessLookupError):
            proc.popen.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.popen.wait, 20)
        await asyncio.to_thread(proc.stop)
        out["profile"] = summarize(raw, possible=rate * seconds)
