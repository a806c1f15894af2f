"""The ``finrt`` console script, run for real: clear errors (never a traceback) for a bad or
unreachable Redis or database and a bad token, and ``tail --from``'s progress bar."""

from __future__ import annotations

import os
import pty
import re
import signal
import socket
import subprocess
import threading
import time

import pytest
import redis

from core.settings import get_settings
from finrt.embedded_redis import free_port
from streams.keys import history_key
from streams.publish import Publisher, publish
from tests.support import BIN, ROOT

pytestmark = pytest.mark.timeout(60)

FINRT = str(BIN / "finrt")


def run(base_env: dict[str, str], *args: str, timeout: float = 30, **overrides: str):
    full = dict(base_env)
    full.update({f"FINRT_{k.upper()}": v for k, v in overrides.items()})
    return subprocess.run(
        [FINRT, *args], env=full, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT)
    )


def assert_clear_error(result, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("publish", "user:x", "greeting", "{}"),
        ("tail", "user:x", "--from", "1-0"),
    ],
    ids=["publish", "tail-from"],
)
def test_a_bad_redis_url_is_a_clear_error(env, args):
    result = run(env, *args, redis_url="nonsense")
    assert_clear_error(result, 2, "FINRT_REDIS_URL is not a Redis URL", "'nonsense'")


@pytest.mark.parametrize(
    "args",
    [
        ("publish", "user:x", "greeting", "{}"),
        ("tail", "user:x", "--from", "1-0"),
    ],
    ids=["publish", "tail-from"],
)
def test_an_unreachable_redis_is_a_clear_error_that_hides_the_password(env, args):
    url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    result = run(env, *args, redis_url=url)
    assert time.monotonic() - started < 20
    assert_clear_error(result, 1, "Redis is not reachable at redis://:***@127.0.0.1:")
    assert "hunter2secret" not in result.stderr


def test_tail_without_an_api_or_refused_is_a_clear_error(api, env, token, user):
    """``finrt tail`` follows the API's stream (finrt.client): no API, or a refusal, is a
    one-line error."""
    result = run(env, "tail", "user:x", "--api", f"http://127.0.0.1:{free_port()}")
    assert_clear_error(result, 1, "the API is not reachable at http://127.0.0.1:")
    others = run(env, "tail", f"user:o{user}", "--api", api.url, "--token", token(user))
    assert_clear_error(others, 2, "the API refused the stream: 403")
    bad = run(env, "tail", f"user:{user}", "--api", api.url, "--token", "not-a-token")
    assert_clear_error(bad, 2, "the API refused the stream: 401")


@pytest.mark.parametrize(
    "args",
    [("migrate",), ("notify", "bob", "--type", "system_update", "--title", "t", "--message", "m")],
    ids=["migrate", "notify"],
)
def test_an_unreachable_or_bad_database_is_a_clear_error(env, args):
    down = f"postgresql+psycopg://nobody:pw0rd@127.0.0.1:{free_port()}/none"
    result = run(env, *args, database_url=down)
    assert_clear_error(result, 1, "database not reachable", "Connection refused")
    assert "pw0rd" not in result.stderr
    # A URL that is no URL at all is a configuration error, found before anything runs.
    result = run(env, *args, database_url="nonsense")
    assert_clear_error(result, 2, "FINRT_DATABASE_URL is not a database URL")


def test_the_relay_says_in_one_line_that_it_cannot_reach_its_database_and_keeps_trying(
    env, tmp_path
):
    """No traceback a second: one line naming the database (password hidden), then retries."""
    full = dict(
        env, FINRT_DATABASE_URL=f"postgresql+psycopg://nobody:pw0rd@127.0.0.1:{free_port()}/none"
    )
    log = tmp_path / "relay.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [FINRT, "relay"], env=full, stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT)
        )
    try:
        # Its first line (however slow the start on a loaded machine), then three retries or so.
        deadline = time.monotonic() + 60
        while "cannot reach" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.1)
        time.sleep(3.5)
        assert process.poll() is None, "the relay gave up"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    output = log.read_text()
    assert process.returncode == 0, output
    lines = [line for line in output.splitlines() if "cannot reach" in line]
    assert len(lines) == 1, output
    assert "the database at postgresql+psycopg://nobody:***@127.0.0.1:" in lines[0]
    assert "Traceback" not in output and "pw0rd" not in output


def test_bad_token_input_is_a_clear_error(env):
    assert_clear_error(run(env, "token", "not a user!"), 2, "user id must be")
    result = run(env, "token", "bob", env="production", jwt_secret="short")
    assert_clear_error(result, 2, "configuration error", "FINRT_JWT_SECRET")
    result = run(env, "token", "bob", "--ttl", "999999999999")
    assert_clear_error(result, 2, "the token would expire after the year 9999")
    good = run(env, "token", "bob", "--scope", "publish")
    assert good.returncode == 0 and good.stdout.count(".") == 2


def test_token_refuses_to_sign_when_the_api_takes_identity_provider_tokens(env, tmp_path):
    """Regression: with a key setting the API refuses tokens signed with the secret, yet
    ``finrt token`` printed one (or, without a secret, crashed with a traceback), and
    ``finrt tail --api`` streamed with one (401)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = tmp_path / "idp.pem"
    pem.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for name, value in (
        ("FINRT_JWT_PUBLIC_KEY_FILE", str(pem)),
        ("FINRT_JWT_JWKS_URL", "https://idp.test/k"),
    ):
        for secret in ("", env["FINRT_JWT_SECRET"]):
            keyed = {**env, name: value, "FINRT_JWT_SECRET": secret}
            result = run(keyed, "token", "bob")
            assert result.stdout == "", (name, secret)
            assert_clear_error(result, 2, name, "identity provider")
            # tail --api mints no such token either.
            result = run(keyed, "tail", "user:bob", "--api", "http://127.0.0.1:9")
            assert_clear_error(result, 2, "pass --token")


@pytest.mark.parametrize("command", ["api", "dev"])
@pytest.mark.parametrize("port", ["0", "65536", "99999"])
def test_a_port_out_of_range_is_refused(env, command, port):
    """Regression: ``finrt api --port 99999`` served on port 34463 (99999 modulo 65536) while
    its log said 99999."""
    try:
        result = run(env, command, "--port", port, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"finrt {command} --port {port} started")
    assert result.returncode == 2, result.stderr
    assert "Invalid value for '--port'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_api_on_a_port_in_use_is_one_line_naming_the_address(env, workers):
    """Regression: it started the app, then exited 3 with uvicorn's log lines."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            result = run(env, "api", "--port", str(port), "--workers", workers, timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("finrt api on a port in use did not exit")
    assert_clear_error(result, 1, f"cannot listen on 127.0.0.1:{port}", "already in use")
    assert "uvicorn" not in result.stderr


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("999.1.1.1", "neither an address of this machine nor a name that resolves"),
        ("no-such-host.invalid", "neither an address of this machine nor a name that resolves"),
        ("192.0.2.1", "192.0.2.1 is not an address of this machine"),  # TEST-NET-1
    ],
)
def test_api_on_a_host_it_cannot_listen_on_is_one_line_naming_the_address(env, host, reason):
    port = free_port()
    try:
        result = run(env, "api", "--host", host, "--port", str(port), timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"finrt api --host {host} did not exit")
    assert_clear_error(result, 2, f"cannot listen on {host}:{port}", reason)


@pytest.mark.parametrize(
    "data",
    ['{"v": NaN}', '{"v": [1, Infinity]}', '{"v": -Infinity}', '{"v": {"w": 1e999}}'],
    ids=["nan", "infinity", "minus-infinity", "beyond-a-double"],
)
def test_publish_refuses_numbers_json_does_not_have(env, redis_client, user, data):
    """Python's JSON parser takes them; stored, they would be ``null``."""
    channel = f"user:{user}"
    result = run(env, "publish", channel, "greeting", data)
    assert_clear_error(result, 2, "data must not hold NaN, Infinity or numbers beyond a double")
    assert redis_client.exists(history_key(get_settings().redis_prefix, channel)) == 0


@pytest.mark.parametrize(
    ("data", "kind"), [("[1, 2]", "a list"), ('"up"', "a string"), ("7", "a number")]
)
def test_publish_refuses_data_that_is_not_an_object(env, redis_client, user, data, kind):
    channel = f"user:{user}"
    result = run(env, "publish", channel, "greeting", data)
    assert_clear_error(result, 2, f"data must be a JSON object ({{...}}), not {kind}")
    assert redis_client.exists(history_key(get_settings().redis_prefix, channel)) == 0


def test_publish_refuses_integers_beyond_64_bits(env, redis_client, user):
    result = run(env, "publish", f"user:{user}", "greeting", f'{{"v": {2**64}}}')
    assert_clear_error(result, 2, "Integer exceeds 64-bit range")
    ok = run(env, "publish", f"user:{user}", "greeting", f'{{"v": {2**63 - 1}, "w": null}}')
    assert ok.returncode == 0, ok.stderr
    assert redis_client.xlen(history_key(get_settings().redis_prefix, f"user:{user}")) == 1


def _drain(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return
        if not chunk:
            return
        into.extend(chunk)


def test_tail_from_shows_a_progress_bar_on_a_terminal_then_follows_live(api, env, user, make_file):
    s = get_settings()
    channel = f"file:{make_file(user)}"
    anchor = publish(channel, "metric_update", {"n": -1})
    client = redis.Redis.from_url(s.redis_url)
    publisher = Publisher(client, s.redis_prefix, maxlen=10_000)
    ids = [publisher.publish(channel, "metric_update", {"n": n}) for n in range(3000)]
    # The history goes to stdout (a pipe); the bar to stderr, a terminal.
    master, slave = pty.openpty()
    output = bytearray()
    drainer = threading.Thread(target=_drain, args=(master, output), daemon=True)
    drainer.start()
    full = dict(env, FINRT_HISTORY_MAXLEN="10000")
    process = subprocess.Popen(
        [FINRT, "tail", channel, "--from", anchor, "--api", api.url],
        env=full,
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
        cwd=str(ROOT),
    )
    os.close(slave)
    try:
        assert process.stdout is not None
        got = [process.stdout.readline() for _ in range(3000)]
        assert [line.split('"', 4)[3] for line in got] == ids
        live = publish(channel, "metric_update", {"n": 3000})
        assert process.stdout.readline().split('"', 4)[3] == live
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(10)
        client.close()
    drainer.join(5)
    os.close(master)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))
    assert process.returncode == 0
    assert "Traceback" not in shown
    assert "history" in shown and "%" in shown
    assert "3,000 events of history; now following live" in shown


def test_tail_into_a_closed_pipe_ends_quietly(env, user):
    channel = f"user:{user}"
    anchor = publish(channel, "job_progress", {"n": -1})
    for n in range(600):
        publish(channel, "job_progress", {"n": n})
    process = subprocess.Popen(
        [FINRT, "tail", channel, "--from", anchor],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(ROOT),
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline()
    process.stdout.close()  # as `finrt tail ... | head -1` does
    try:
        process.wait(15)
    finally:
        if process.poll() is None:
            process.kill()
    assert b"Traceback" not in process.stderr.read()
    assert process.returncode == 0
