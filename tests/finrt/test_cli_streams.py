"""``finrt publish`` and ``finrt tail``: the real console script against the real Redis."""

from __future__ import annotations

import json
import subprocess
import time

from tests.support import BIN, ROOT


def _finrt(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "finrt"), *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_publish_prints_the_id_and_tail_prints_history_then_live(api, env, user):
    channel = f"user:{user}"
    first = _finrt(env, "publish", channel, "job_progress", '{"n": 1}').stdout.strip()
    second = _finrt(
        env, "publish", channel, "job_progress", '{"n": 2}', "--key", "k"
    ).stdout.strip()
    assert first and second and first != second
    tail = subprocess.Popen(
        [str(BIN / "finrt"), "tail", channel, "--from", first, "--api", api.url],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert tail.stdout is not None
        replayed = json.loads(tail.stdout.readline())
        assert (replayed["id"], replayed["data"], replayed["key"]) == (second, {"n": 2}, "k")
        time.sleep(0.5)
        third = _finrt(env, "publish", channel, "job_progress", '{"n": 3}').stdout.strip()
        live = json.loads(tail.stdout.readline())
        assert live["id"] == third and live["channel"] == channel
    finally:
        tail.terminate()
        tail.wait(10)


def test_publish_refuses_bad_input_without_a_traceback(env):
    bad_json = _finrt(env, "publish", "user:a", "job_progress", "{nope")
    assert bad_json.returncode == 2 and "not JSON" in bad_json.stderr
    bad_channel = _finrt(env, "publish", "users:a", "job_progress", "{}")
    assert bad_channel.returncode == 2 and "channel" in bad_channel.stderr
    for result in (bad_json, bad_channel):
        assert "Traceback" not in result.stderr


def test_token_prints_a_jwt_for_the_user(env):
    import jwt

    token = _finrt(env, "token", "alice", "--ttl", "60", "--scope", "publish").stdout.strip()
    claims = jwt.decode(token, env["FINRT_JWT_SECRET"], algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["scope"] == "publish"
    assert _finrt(env, "token", "not valid!").returncode == 2
