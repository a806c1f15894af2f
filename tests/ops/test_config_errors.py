"""Bad configuration is one clear line: every command checks all settings before it does
anything and, on a bad one, prints one line naming the variable, the problem and what is
accepted, with exit status 2. Log levels are accepted in any case."""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest

from tests.support import BIN

pytestmark = pytest.mark.timeout(120)

BAD = {
    "FINRT_LOG_LEVEL": ("loud", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    "FINRT_REDIS_URL": ("http://127.0.0.1:6379", "redis://host:port/db"),
    "FINRT_PING_SECONDS": ("often", "a number > 0"),
    "FINRT_DATABASE_URL": ("nonsense", "postgresql+psycopg://"),
    "FINRT_CELERY_BROKER_URL": ("http://broker", "amqp://"),
}

COMMANDS = {
    "api": ["api", "--port", "1"],
    "worker": ["worker"],
    "beat": ["beat"],
    "dev": ["dev", "--port", "1"],
    "migrate": ["migrate"],
    "token": ["token", "alice"],
    "publish": ["publish", "user:a", "greeting", "{}"],
    "tail": ["tail", "user:a"],
    "notify": ["notify", "a", "--type", "system_update", "--title", "t", "--message", "m"],
}


def _run(tmp_path, args: list[str], **bad: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINRT_")}
    env["FINRT_JWT_SECRET"] = "k" * 40
    env.update(bad)
    return subprocess.run(
        [str(BIN / "finrt"), *args],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _assert_one_line(result, variable: str, value: str, accepted: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0] and value in lines[0] and accepted in lines[0], lines[0]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_names_a_bad_setting_in_one_line(tmp_path, command):
    # Each command gets one of the bad settings in turn; `api` gets them all (below).
    variable = list(BAD)[list(COMMANDS).index(command) % len(BAD)]
    value, accepted = BAD[variable]
    _assert_one_line(
        _run(tmp_path, COMMANDS[command], **{variable: value}), variable, value, accepted
    )
    assert not (tmp_path / "var").exists()  # nothing was started or created


@pytest.mark.parametrize("variable", list(BAD))
def test_the_api_names_each_bad_setting(tmp_path, variable):
    value, accepted = BAD[variable]
    _assert_one_line(
        _run(tmp_path, COMMANDS["api"], **{variable: value}), variable, value, accepted
    )


def test_a_soft_time_limit_not_below_the_hard_one_is_refused(tmp_path):
    """Celery's pool applies the hard limit only once the soft one passed: a soft limit at or
    past the hard one would stretch the hard one without a word."""
    result = _run(tmp_path, COMMANDS["worker"], FINRT_TASK_SOFT_TIME_LIMIT="400")
    _assert_one_line(result, "FINRT_TASK_SOFT_TIME_LIMIT", "400", "FINRT_TASK_TIME_LIMIT (360)")


def test_log_levels_are_case_insensitive(start_api):
    api = start_api(log_level="warning")
    assert httpx.get(f"{api.url}/readyz", timeout=5).status_code == 200
