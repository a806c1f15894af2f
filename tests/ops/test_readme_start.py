"""The README's "Start" section, run as written: its shell examples are extracted and run with
bash against a real ``finrt dev``, in a directory laid out like a clone (``.venv`` and
``samples`` linked), from a shell with no ``FINRT_`` variable, while the machine's own Redis
holds 6379 (so ``finrt dev`` must pick another port and the commands must still find it).

Two substitutions only: ``make run``/``make test`` lines are skipped (``make run`` is the
``finrt dev`` this test starts; ``make test`` is the suite itself), and the API's port 8000
becomes the free port the test chose."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time

import jwt
import pytest

from finrt._procs import port_in_use
from finrt.embedded_redis import free_port
from tests.ops.test_dev import DevRun, kill_leftovers
from tests.support import ROOT, Received, sse

pytestmark = pytest.mark.timeout(300)


def start_section_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.strip() and not line.startswith("make ")]


def test_the_start_section_has_commands_to_run():
    commands = start_section_commands()
    assert any("finrt token" in c for c in commands)
    assert any("finrt publish" in c for c in commands)


@pytest.mark.skipif(not port_in_use(6379), reason="needs a Redis of the machine's own on 6379")
async def test_the_readme_start_commands_work_against_finrt_dev(tmp_path):
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    port = free_port()
    script = "\n".join(
        c.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for c in start_section_commands()
    )
    run = DevRun(tmp_path, port)
    try:
        chosen = run.wait_for(r"^dev\s*\| Redis: embedded on port (\d+) \((.*?)\)")
        assert int(chosen.group(1)) != 6379 and "6379 is taken" in chosen.group(2)
        recorded = (tmp_path / "var" / "redis_url").read_text().strip()
        assert recorded == f"redis://127.0.0.1:{chosen.group(1)}/0"
        run.wait_for(r"\?token=")
        secret = (tmp_path / "var" / "jwt_secret").read_text().strip()
        alice = jwt.encode({"sub": "alice", "exp": 2_000_000_000}, secret, algorithm="HS256")
        base = f"http://127.0.0.1:{port}"
        async with sse(f"{base}/api/v1/stream/notifications", alice) as stream:
            env = {k: v for k, v in os.environ.items() if not k.startswith("FINRT_")}
            # `wait`: the backgrounded `finrt tail` keeps running until the test has seen it
            # print; then the whole group is stopped.
            shell = subprocess.Popen(
                ["bash", "-e", "-c", script + "\necho\nwait\n"],
                cwd=str(tmp_path),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            lines: list[str] = []
            reader = threading.Thread(
                target=lambda: lines.extend(iter(shell.stdout.readline, "")), daemon=True
            )
            reader.start()

            def printed() -> tuple[str | None, list[dict], bool]:
                ids = [line.strip() for line in lines if re.fullmatch(r"\d+-\d+\n?", line)]
                tailed = [json.loads(line) for line in lines if line.startswith('{"id"')]
                uploaded = any(re.search(r'"file_id": ?\d+', line) for line in lines)
                return (ids[0] if ids else None), tailed, uploaded

            deadline = time.monotonic() + 120
            try:
                while time.monotonic() < deadline and shell.poll() is None:
                    event_id, tailed, uploaded = printed()
                    if event_id and uploaded and event_id in [e["id"] for e in tailed]:
                        break
                    await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(shell.pid, signal.SIGTERM)
            shell.wait(30)
            reader.join(10)
            err = shell.stderr.read() if shell.stderr else ""
            out = "".join(lines)
            assert "Traceback" not in out + err
            assert err.strip() == "", err
            event_id, tailed, uploaded = printed()
            assert event_id, out
            # `finrt tail --from oldest` printed it, and the upload was accepted.
            assert event_id in [e["id"] for e in tailed], out
            assert uploaded, out
            # The open stream got what the README's publish sent: the same Redis.
            got = await stream.next_event(timeout=15)
            assert isinstance(got, Received) and (got.id, got.event) == (event_id, "greeting")
        assert run.stop() == 0
    finally:
        kill_leftovers(tmp_path)
