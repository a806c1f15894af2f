"""Structured logs (``FINRT_LOG_JSON=true``): one JSON object per line, each request's lines
carry its request id, and no token or ticket ever appears."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.support import sse

pytestmark = pytest.mark.timeout(60)

KEYS = {"ts", "level", "logger", "msg", "request_id"}


def _records(text: str) -> list[dict]:
    records = []
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)  # every line is JSON, or this fails naming it
            assert KEYS <= record.keys(), line
            records.append(record)
    return records


async def test_json_logs_carry_the_request_id_and_never_a_token(start_api, token, user):
    api = start_api(log_json="true")
    secret_token = token(user)
    bearer = {"Authorization": f"Bearer {secret_token}"}
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        given = await client.get("/healthz", headers={"X-Request-ID": "ops-given-id-42"})
        assert given.headers["x-request-id"] == "ops-given-id-42"
        made = await client.get("/api/v1/notifications", headers=bearer)
        assert made.status_code == 200
        made_id = made.headers["x-request-id"]
        ticket = (await client.post("/api/v1/stream/tickets", headers=bearer)).json()["ticket"]
        bad = await client.get("/api/v1/notifications", params={"access_token": secret_token + "x"})
        assert bad.status_code == 401
    async with sse(f"{api.url}/api/v1/stream/notifications", params={"access_token": secret_token}):
        pass
    async with sse(f"{api.url}/api/v1/stream/notifications", params={"ticket": ticket}):
        pass

    deadline = time.monotonic() + 5
    while "stream/notifications?ticket" not in api.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    text = api.log()
    records = _records(text)
    by_id = {r["request_id"]: r for r in records}
    assert "/healthz" in by_id["ops-given-id-42"]["msg"]
    assert "/api/v1/notifications" in by_id[made_id]["msg"]
    assert any(r["request_id"] == "-" for r in records)  # start-up lines: no request
    signature = secret_token.rsplit(".", 1)[1]
    for secret in (secret_token, signature, ticket):
        assert secret not in text
    assert "access_token=***" in text
    assert "ticket=***" in text


async def test_access_lines_carry_fields_not_one_string(start_api):
    api = start_api(log_json="true")
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        answer = await client.get("/healthz", headers={"X-Request-ID": "access-fields-1"})
        assert answer.status_code == 200
    deadline = time.monotonic() + 5
    while "access-fields-1" not in api.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    access = [
        r
        for r in _records(api.log())
        if r["logger"] == "uvicorn.access" and r["request_id"] == "access-fields-1"
    ]
    assert access, api.log()
    line = access[0]
    assert (line["method"], line["path"], line["status"]) == ("GET", "/healthz", 200)
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0


def test_worker_and_beat_follow_log_json_and_redact(isolated_env, start_worker):
    env = isolated_env(log_json="true", log_level="info")
    worker = start_worker(env)
    beat = start_worker(env, beat=True)
    from tests.fixtures_workers import settings_from
    from workers.enqueue import producer

    secret = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJlc2lnbmF0dXJl"
    # An unknown task name: the worker logs the message it got, token and all, as an error.
    producer(settings_from(env)).send_task("finrt.no_such_task", args=[f"access_token={secret}"])
    deadline = time.monotonic() + 30
    while "no_such_task" not in worker.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    # Read while running: at SIGTERM Celery prints "worker: Warm shutdown" (not a log record).
    for process in (worker, beat):
        records = _records(process.log())  # every line is a JSON object
        assert records, process.log()
        assert any(r["logger"].startswith("celery") for r in records)
    assert "no_such_task" in worker.log()
    assert secret not in worker.log()
