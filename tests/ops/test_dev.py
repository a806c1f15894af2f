"""``finrt dev`` (what ``make run`` starts), run as a person would: no Redis configured, a
directory of its own. Everything answers, events flow, SIGTERM leaves nothing behind, and a
second run reuses the secret, the database and Redis's history."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from finrt._procs import port_in_use
from finrt.embedded_redis import free_port
from tests.support import BIN, Received, sse

pytestmark = pytest.mark.timeout(300)


def dev_env() -> dict[str, str]:
    """The environment of a person's shell: no FINRT_ variable at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINRT_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def processes_under(root: Path) -> list[int]:
    """Processes whose working directory lies in ``root`` (every child of a dev run does)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd == str(root) or cwd.startswith(f"{root}/"):
                found.append(int(entry.name))
    return found


class DevRun:
    """``finrt dev`` in a subprocess, its output collected line by line."""

    def __init__(self, cwd: Path, port: int) -> None:
        self.cwd, self.port = cwd, port
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [str(BIN / "finrt"), "dev", "--port", str(port)],
            cwd=str(cwd),
            env=dev_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 150.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := re.search(pattern, line):
                    return found
            if self.process.poll() is not None:
                self._reader.join(2)
                raise AssertionError(
                    f"finrt dev exited ({self.process.returncode}):\n{self.output}"
                )
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r}:\n{self.output}")

    def stop(self, timeout: float = 40.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code


def kill_leftovers(root: Path) -> None:
    for pid in processes_under(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def _check_running(run: DevRun, token: str) -> str:
    """The page, the seeded file, and an event published with the printed command; returns
    that event's id."""
    base = f"http://127.0.0.1:{run.port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        page = await client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        files = await client.get("/api/v1/files", headers={"Authorization": f"Bearer {token}"})
        assert [(f["name"], f["status"]) for f in files.json()["files"]] == [
            ("sample.csv", "processed")
        ]
    command = run.wait_for(r"^\s+(\S*finrt publish .*)$").group(1)
    async with sse(f"{base}/api/v1/stream/notifications", token) as stream:
        published = subprocess.run(
            ["bash", "-c", command],
            cwd=str(run.cwd),
            env=dev_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert published.returncode == 0, published.stderr
        event_id = published.stdout.strip()
        got = await stream.next_event(timeout=10)
        assert isinstance(got, Received)
        assert (got.id, got.event) == (event_id, "greeting")
    return event_id


def _assert_nothing_left(run: DevRun, redis_port: int) -> None:
    assert "stopped: no process left running" in run.output
    deadline = time.monotonic() + 5
    while processes_under(run.cwd) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_under(run.cwd) == []
    assert not port_in_use(run.port)
    assert not port_in_use(redis_port)


async def test_finrt_dev_runs_everything_stops_cleanly_and_a_second_run_reuses_it(tmp_path):
    try:
        run = DevRun(tmp_path, free_port())
        token = run.wait_for(r"\?token=(\S+)").group(1)
        redis_port = int(run.wait_for(r"^redis\s*\| ready at redis://127.0.0.1:(\d+)/").group(1))
        for name in ("redis", "worker", "api", "seed"):
            assert re.search(rf"^{name}\s*\| ", run.output, re.M), f"no {name} lines"
        first_event = await _check_running(run, token)
        secret = (tmp_path / "var" / "jwt_secret").read_text()
        assert stat.S_IMODE((tmp_path / "var" / "jwt_secret").stat().st_mode) == 0o600
        assert run.stop() == 0
        _assert_nothing_left(run, redis_port)

        first_redis_port = redis_port
        again = DevRun(tmp_path, free_port())
        token = again.wait_for(r"\?token=(\S+)").group(1)
        redis_port = int(again.wait_for(r"^redis\s*\| ready at redis://127.0.0.1:(\d+)/").group(1))
        # A stable port: the last run's, free again (so an open page and the commands find it).
        assert redis_port == first_redis_port
        assert "the same as the last run" in again.output
        assert "is ready" in again.wait_for(r"^seed\s*\| demo file 1 .*").group(0)
        assert (tmp_path / "var" / "jwt_secret").read_text() == secret
        # Redis kept its append-only file: the first run's event is still in history.
        history = httpx.get(
            f"http://127.0.0.1:{again.port}/api/v1/events/user:demo",
            params={"after": "0-0", "limit": 1000},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert first_event in [e["id"] for e in history.json()["events"]]
        await _check_running(again, token)
        assert again.stop() == 0
        _assert_nothing_left(again, redis_port)
    finally:
        kill_leftovers(tmp_path)


def test_a_second_ctrl_c_stops_everything_at_once_and_says_so(tmp_path):
    """The README: "a second Ctrl-C kills at once". It did, but said each child "did not stop
    in time", as if something had hung."""
    run = DevRun(tmp_path, free_port())
    try:
        run.wait_for("Ctrl-C stops everything")
        redis_port = int(run.wait_for(r"ready at redis://127\.0\.0\.1:(\d+)/").group(1))
        started = time.monotonic()
        run.process.send_signal(signal.SIGINT)
        run.wait_for("stopping")
        run.process.send_signal(signal.SIGINT)
        assert run.process.wait(30) == 0
        run._reader.join(5)
        assert time.monotonic() - started < 8  # the grace period was not waited for
        assert "did not stop in time" not in run.output
        _assert_nothing_left(run, redis_port)
    finally:
        if run.process.poll() is None:
            run.process.kill()
        kill_leftovers(tmp_path)


def test_finrt_dev_refuses_a_port_in_use_and_starts_nothing(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            result = subprocess.run(
                [str(BIN / "finrt"), "dev", "--port", str(port)],
                cwd=str(tmp_path),
                env=dev_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            kill_leftovers(tmp_path)
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not re.search(r"^(redis|worker|api)\s*\|", result.stdout, re.M)


def test_a_run_killed_with_sigkill_has_its_orphans_stopped_by_the_next(tmp_path):
    try:
        killed = DevRun(tmp_path, free_port())
        killed.wait_for(r"\?token=")
        killed.process.kill()  # no chance to stop its children
        killed.process.wait(10)
        assert processes_under(tmp_path), "expected orphans"
        run = DevRun(tmp_path, killed.port)  # the orphaned API still holds this port
        run.wait_for(r"left running by a previous run")
        run.wait_for(r"\?token=")
        redis_port = int(run.wait_for(r"^redis\s*\| ready at redis://127.0.0.1:(\d+)/").group(1))
        assert run.stop() == 0
        _assert_nothing_left(run, redis_port)
    finally:
        kill_leftovers(tmp_path)
