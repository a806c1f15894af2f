"""Fixtures for the producer tests: real Celery workers (``finrt worker`` subprocesses) on the
real broker, an API of their own, and isolated environments (own database, key prefix and
reports folder) for the tests that kill workers or stop Redis.

The session worker runs without beat, so no sweeper of ours touches the shared database while
other tests look at its outbox; the tests that need beat start one of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import BIN, ROOT, ApiServer, Received, SSEStream, make_token

OWNER_ENV = {
    "FINRT_UPLOAD_MAX_BYTES": "1000000",
    "FINRT_UPLOAD_MAX_ROWS": "20000",
    "FINRT_PROGRESS_INTERVAL_SECONDS": "0.1",
}


def settings_from(env: dict[str, str]) -> Any:
    """The Settings a subprocess started with ``env`` sees."""
    from core.settings import Settings

    values = {k[6:].lower(): v for k, v in env.items() if k.startswith("FINRT_")}
    return Settings.model_validate(values)


class WorkerProcess:
    """``finrt worker`` (prefork, ``pool`` processes) or ``finrt beat`` in a process group of its
    own."""

    def __init__(
        self, env: dict[str, str], log_dir: Path, name: str, *, beat: bool = False, pool: int = 1
    ):
        self.env, self.name, self.beat = dict(env), f"{name}-{uuid.uuid4().hex[:6]}", beat
        self.pool = pool
        self.log_path = log_dir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def nodename(self) -> str:
        return f"{self.name}@test"

    def start(self, timeout: float = 30.0, wait: bool = True) -> WorkerProcess:
        if self.beat:
            args = [str(BIN / "finrt"), "beat", "--max-interval", "1"]
        else:
            args = [
                str(BIN / "finrt"),
                "worker",
                "-n",
                self.nodename,
                "--pool",
                "prefork",
                "-c",
                str(self.pool),
                "--without-mingle",
                "--without-gossip",
                # The database-events tests start (and kill) relays of their own.
                "--no-relay",
            ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                args,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(ROOT),
                start_new_session=True,
            )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        if self.beat:
            while time.monotonic() < deadline:
                self._check_alive()
                if "beat: Starting..." in self.log():
                    return
                time.sleep(0.1)
            raise RuntimeError(f"beat not started in time:\n{self.log()}")
        from workers.enqueue import producer

        control = producer(settings_from(self.env)).control
        while time.monotonic() < deadline:
            self._check_alive()
            if control.ping(destination=[self.nodename], timeout=0.5):
                return
        raise RuntimeError(f"worker not ready in time:\n{self.log()}")

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited early:\n{self.log()}")

    def _signal_group(self, sig: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait()
        self._signal_group(signal.SIGKILL)  # pool processes left behind, if any

    def kill(self) -> None:
        """SIGKILL the whole group: the worker and its pool die mid-task, nothing acknowledged."""
        if self.process is None:
            return
        self._signal_group(signal.SIGKILL)
        self.process.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@pytest.fixture(scope="session")
def worker_env(env: dict[str, str], tmp_root: Path) -> dict[str, str]:
    """The environment of the producer tests' API and worker (reports under the temp root)."""
    full = dict(env)
    full.update(OWNER_ENV)
    full["FINRT_REPORTS_DIR"] = str(tmp_root / "reports")
    full["FINRT_BEAT_SCHEDULE_FILE"] = str(tmp_root / "beat-schedule")
    return full


@pytest.fixture(scope="session")
def celery_worker(worker_env: dict[str, str], tmp_root: Path) -> Iterator[WorkerProcess]:
    """One real worker for the session, on the session's broker keys and database."""
    worker = WorkerProcess(worker_env, tmp_root, "worker").start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def producers_api(worker_env: dict[str, str], tmp_root: Path) -> Iterator[ApiServer]:
    """An API process sharing the worker's settings (reports folder, upload limits)."""
    server = ApiServer(worker_env, tmp_root, name="producers").start()
    yield server
    server.stop()


@pytest.fixture
def isolated_env(env: dict[str, str], tmp_root: Path) -> Callable[..., dict[str, str]]:
    """A fresh environment: own SQLite database (migrated), key prefix and reports folder;
    keyword arguments become FINRT_ variables."""
    from models.migrate import upgrade

    def _make(**overrides: object) -> dict[str, str]:
        tag = uuid.uuid4().hex[:8]
        url = f"sqlite:///{tmp_root}/iso-{tag}.db"
        upgrade(url)
        full = dict(env)
        full.update(OWNER_ENV)
        full.update(
            {
                "FINRT_DATABASE_URL": url,
                "FINRT_REDIS_PREFIX": f"{env['FINRT_REDIS_PREFIX']}:iso{tag}",
                "FINRT_REPORTS_DIR": str(tmp_root / f"reports-{tag}"),
                "FINRT_BEAT_SCHEDULE_FILE": str(tmp_root / f"beat-{tag}"),
            }
        )
        full.update({f"FINRT_{k.upper()}": str(v) for k, v in overrides.items()})
        return full

    return _make


@pytest.fixture
def start_worker(tmp_root: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers (or beat, ``beat=True``) of the test's own; all stopped afterwards."""
    started: list[WorkerProcess] = []

    def _start(
        env: dict[str, str], *, beat: bool = False, wait: bool = True, pool: int = 1
    ) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_root, "beat" if beat else "worker", beat=beat, pool=pool)
        started.append(worker)
        return worker.start(wait=wait)

    yield _start
    for worker in started:
        worker.stop()


@pytest.fixture
def start_isolated_api(tmp_root: Path) -> Iterator[Callable[[dict[str, str]], ApiServer]]:
    started: list[ApiServer] = []

    def _start(env: dict[str, str]) -> ApiServer:
        server = ApiServer(env, tmp_root, name=f"iso{len(started)}-{uuid.uuid4().hex[:4]}")
        started.append(server)
        return server.start()

    yield _start
    for server in started:
        server.stop()


# -- helpers for the tests -------------------------------------------------------------------


def auth(env: dict[str, str], user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(env, user)}"}


async def upload_csv(
    client: httpx.AsyncClient, base: str, headers: dict[str, str], data: bytes, name: str = "q.csv"
) -> httpx.Response:
    return await client.post(
        f"{base}/api/v1/files", headers=headers, files={"file": (name, data, "text/csv")}
    )


async def wait_for(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Poll ``url`` until ``done(body)``; returns the body."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.get(url, headers=headers)
        response.raise_for_status()
        body = response.json()
        if done(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting on {url}; last: {body}")


def finished(body: dict[str, Any]) -> bool:
    return body.get("status") in ("processed", "failed", "ready")


async def report_of_a_new_file(
    client: httpx.AsyncClient, base: str, headers: dict[str, str], fmt: str = "pdf"
) -> int:
    """Upload a small file, wait until it is processed and ask for its report: the report's
    id."""
    from domain.sample import sample_csv

    file_id = (await upload_csv(client, base, headers, sample_csv(4))).json()["file_id"]
    await wait_for(client, f"{base}/api/v1/files/{file_id}", headers, finished)
    response = await client.post(
        f"{base}/api/v1/files/{file_id}/reports", json={"format": fmt}, headers=headers
    )
    assert response.status_code == 202, response.text
    return int(response.json()["report_id"])


async def next_event(stream: SSEStream, timeout: float = 15.0) -> Received:
    """The next event within ``timeout`` seconds overall (``SSEStream.next_event`` restarts its
    timeout at every ping)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError(f"no event within {timeout} s")
        frame = await asyncio.wait_for(stream.frames.get(), left)
        if frame is None:
            raise EOFError("stream ended")
        if isinstance(frame, Received):
            return frame


async def events_until(
    stream: SSEStream, done: Callable[[list[Received]], bool], timeout: float = 30.0
) -> list[Received]:
    """Events until ``done(events so far)``, within ``timeout`` seconds overall."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen: list[Received] = []
    while not done(seen):
        seen.append(await next_event(stream, max(0.01, deadline - loop.time())))
    return seen


async def assert_quiet(stream: SSEStream, seconds: float) -> None:
    """No event (pings aside) for ``seconds``."""
    with contextlib.suppress(TimeoutError):
        got = await next_event(stream, seconds)
        raise AssertionError(f"unexpected event {got}")
