"""The ``finrt`` commands in a directory where ``finrt dev`` runs, as a newcomer types them:
no ``FINRT_`` variable set, the machine's own Redis on 6379 (not the dev one). They find the
secret and the Redis that ``finrt dev`` recorded under ``./var/``, say so when told to use
another Redis, and never print a traceback for an expected failure."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import jwt
import pytest
import redis

from finrt.embedded_redis import EmbeddedRedis, free_port
from streams.keys import history_key
from tests.support import BIN

pytestmark = pytest.mark.timeout(120)

FINRT = str(BIN / "finrt")


def shell_env(**extra: str) -> dict[str, str]:
    """A person's shell: no FINRT_ variable but a prefix of this test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINRT_")}
    env["FINRT_REDIS_PREFIX"] = f"t{uuid.uuid4().hex[:8]}"
    env.update(extra)
    return env


def finrt(cwd: Path, env: dict[str, str], *args: str, timeout: float = 60):
    return subprocess.run(
        [FINRT, *args], cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout
    )


def one_line(result, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def dev_dir(tmp_path: Path):
    """A directory as a running ``finrt dev`` leaves it: its Redis (not on 6379), recorded in
    var/redis_url, its secret in var/jwt_secret, its children listed in var/dev.pids."""
    with EmbeddedRedis() as own:
        var = tmp_path / "var"
        var.mkdir()
        (var / "redis_url").write_text(own.url + "\n")
        (var / "jwt_secret").write_text("s" * 48 + "\n")
        (var / "dev.pids").write_text("redis 1\n")
        yield tmp_path, own


def test_token_and_publish_use_what_finrt_dev_recorded(dev_dir):
    where, own = dev_dir
    env = shell_env()
    token = finrt(where, env, "token", "alice")
    assert token.returncode == 0, token.stderr
    assert jwt.decode(token.stdout.strip(), "s" * 48, algorithms=["HS256"])["sub"] == "alice"

    published = finrt(where, env, "publish", "user:alice", "greeting", '{"text": "hi"}')
    assert published.returncode == 0, published.stderr
    assert published.stderr == ""
    dev_redis = redis.Redis(port=own.port)
    key = history_key(env["FINRT_REDIS_PREFIX"], "user:alice")
    assert published.stdout.strip().encode() in [i for i, _ in dev_redis.xrange(key)]
    # The machine's Redis on 6379 got nothing.
    assert not redis.Redis(port=6379).exists(key)


def test_a_command_told_to_use_another_redis_says_so(dev_dir):
    where, _ = dev_dir
    env = shell_env(FINRT_REDIS_URL="redis://127.0.0.1:6379/0")
    result = finrt(where, env, "publish", "user:alice", "greeting", "{}")
    assert result.returncode == 0
    note = one_line(result, 0)
    assert "is not the Redis that `finrt dev` runs in this directory" in note
    assert "var/redis_url" in note


def test_a_stopped_dev_redis_is_one_line_naming_where_the_url_came_from(tmp_path):
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "redis_url").write_text(f"redis://127.0.0.1:{free_port()}/0\n")
    line = one_line(finrt(tmp_path, shell_env(), "publish", "user:a", "greeting", "{}"), 1)
    assert "Redis is not reachable" in line and "recorded by `finrt dev`" in line


def test_outside_a_dev_directory_token_says_in_one_line_how(tmp_path):
    line = one_line(finrt(tmp_path, shell_env(), "token", "alice"), 2)
    assert "FINRT_JWT_SECRET" in line and "var/jwt_secret" in line


def test_tail_needs_no_secret_and_replays_what_history_holds_from_0_0_or_oldest(tmp_path):
    with EmbeddedRedis() as own:
        env = shell_env(FINRT_REDIS_URL=own.url, FINRT_HISTORY_MAXLEN="5")
        channel = "user:bob"
        ids = []
        for n in range(40):  # far more than history keeps: its start is trimmed away
            result = finrt(tmp_path, env, "publish", channel, "job_progress", json.dumps({"n": n}))
            assert result.returncode == 0, result.stderr
            ids.append(result.stdout.strip())
        for start in ("0-0", "oldest"):
            tail = subprocess.Popen(
                [FINRT, "tail", channel, "--from", start],
                cwd=str(tmp_path),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                assert tail.stdout is not None
                first = json.loads(tail.stdout.readline())
                assert first["type"] == "job_progress", first  # not a reset
                got = [first["id"]]
                while got[-1] != ids[-1]:
                    got.append(json.loads(tail.stdout.readline())["id"])
                assert got == ids[ids.index(got[0]) :] and len(got) >= 5
                live = finrt(tmp_path, env, "publish", channel, "job_progress", "{}")
                assert json.loads(tail.stdout.readline())["id"] == live.stdout.strip()
                ids.append(live.stdout.strip())
            finally:
                tail.terminate()
                tail.wait(10)
            assert tail.stderr is not None and "Traceback" not in tail.stderr.read()


def test_notify_with_redis_down_stores_it_and_says_so_in_one_line(tmp_path):
    env = shell_env(FINRT_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert finrt(tmp_path, env, "migrate").returncode == 0
    result = finrt(
        tmp_path, env, "notify", "bob", "--type", "system_update", "--title", "t", "--message", "m"
    )
    line = one_line(result, 0)
    assert len(result.stdout.split()) == 1  # the id
    assert "is stored" in line and "sweeper" in line
