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
