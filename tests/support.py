"""Test support: real processes (API servers, Redis servers) and a real SSE client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import redis

from finrt.embedded_redis import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def make_token(
    env: dict[str, str], user: str, ttl: float = 3600, scope: str = "", **extra: Any
) -> str:
    claims: dict[str, Any] = {"sub": user, "exp": int(time.time() + ttl)}
    if scope:
        claims["scope"] = scope
    claims.update(extra)
    return jwt.encode(claims, env["FINRT_JWT_SECRET"], algorithm="HS256")


class ApiServer:
    """``finrt api`` in a subprocess on a free port, with its log captured to a file."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        port: int | None = None,
        name: str = "api",
        host: str = "127.0.0.1",
    ):
        self.env = dict(env)
        self.host = host
        self.port = port or free_port()
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> ApiServer:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(BIN / "finrt"), "api", "--host", self.host, "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"API exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop(signal.SIGKILL)  # not left running behind the failed test
        raise RuntimeError(f"API not ready in time:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> float:
        """Stop the process; returns how long it took to exit."""
        if self.process is None or self.process.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return time.monotonic() - started

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> ApiServer:
        self.stop()
        return self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


@dataclass
class Received:
    id: str | None
    event: str
    data: str
    had_id: bool = True  # the frame carried its own ``id:`` line

    @property
    def envelope(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.data)
        return doc


@dataclass
class SSEStream:
    """A live SSE response read frame by frame (comments included), as EventSource would."""

    response: httpx.Response
    frames: asyncio.Queue[Received | str | None] = field(default_factory=asyncio.Queue)
    last_id: str | None = None
    retry: int | None = None
    # Presence events (docs/presence.md) come on every file stream; tests of other things skip
    # them (kept in ``skipped``) unless they ask for them.
    presence: bool = False
    skipped: list[Received] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        buffer: dict[str, str] = {}
        data_lines: list[str] = []
        try:
            async for line in self.response.aiter_lines():
                if line == "":
                    if data_lines:
                        got = Received(
                            buffer.get("id", self.last_id),
                            buffer.get("event", "message"),
                            "\n".join(data_lines),
                            "id" in buffer,
                        )
                        if got.event.startswith("presence") and not self.presence:
                            self.skipped.append(got)
                        else:
                            await self.frames.put(got)
                    buffer, data_lines = {}, []
                    continue
                if line.startswith(":"):
                    await self.frames.put(line)
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data_lines.append(value)
                elif name == "id":
                    buffer["id"] = value
                    self.last_id = value
                elif name == "retry":
                    self.retry = int(value)
                else:
                    buffer[name] = value
        except (httpx.HTTPError, asyncio.CancelledError):
            pass
        finally:
            await self.frames.put(None)

    async def next_event(self, timeout: float = 10.0) -> Received:
        """The next event within ``timeout`` seconds in all: the server's pings (comments, one
        a second in the suite) neither count as events nor extend the wait."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.frames.get()
                if frame is None:
                    raise EOFError("stream ended")
                if isinstance(frame, Received):
                    return frame

    async def next_frame(self, timeout: float = 10.0) -> Received | str | None:
        return await asyncio.wait_for(self.frames.get(), timeout)

    async def events(self, n: int, timeout: float = 10.0) -> list[Received]:
        return [await self.next_event(timeout) for _ in range(n)]

    async def until_closed(self, timeout: float = 10.0) -> list[Received | str]:
        out: list[Received | str] = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.frames.get()
                if frame is None:
                    return out
                out.append(frame)

    async def no_event(self, within: float) -> None:
        with contextlib.suppress(TimeoutError):
            got = await self.next_event(within)
            raise AssertionError(f"unexpected event {got}")


@contextlib.asynccontextmanager
async def sse(
    url: str,
    token: str | None = None,
    *,
    last_event_id: str | None = None,
    params: Any = None,
    client: httpx.AsyncClient | None = None,
    presence: bool = False,
) -> AsyncIterator[SSEStream]:
    headers = {"Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    own = client is None
    client = client or httpx.AsyncClient(timeout=httpx.Timeout(30, read=None))
    try:
        async with client.stream("GET", url, headers=headers, params=params) as response:
            if response.status_code != 200:
                await response.aread()
                raise httpx.HTTPStatusError(
                    f"{response.status_code}: {response.text}",
                    request=response.request,
                    response=response,
                )
            stream = SSEStream(response, presence=presence)
            stream.start()
            try:
                yield stream
            finally:
                if stream._task:
                    stream._task.cancel()
                    with contextlib.suppress(BaseException):
                        await stream._task
    finally:
        if own:
            await client.aclose()


def publish_from_subprocess(
    env: dict[str, str], channel: str, type_: str, payloads: list[dict[str, Any]]
) -> list[str]:
    """Publish with ``streams.publish`` from another process; returns the ids."""
    code = (
        "import json, sys, streams\n"
        "for line in sys.stdin:\n"
        f"    print(streams.publish({channel!r}, {type_!r}, json.loads(line)), flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input="\n".join(json.dumps(p) for p in payloads).encode() + b"\n",
        env=env,
        capture_output=True,
        check=True,
        cwd=str(ROOT),
        timeout=60,
    )
    return out.stdout.decode().split()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def kill_tree(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def redis_calls(url: str, seconds: float) -> list[str]:
    """Every call the Redis at ``url`` got during ``seconds`` (MONITOR)."""
    client = redis.Redis.from_url(url)
    seen: list[str] = []
    try:
        with client.monitor() as monitor:  # type: ignore[no-untyped-call]
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                command = monitor.next_command()
                if command.get("client_type") != "lua":  # calls, not the scripts' insides
                    seen.append(str(command["command"]))
    finally:
        client.close()
    return seen
