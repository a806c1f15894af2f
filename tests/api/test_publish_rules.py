"""Publishing over HTTP cannot impersonate the service, and what a client sends cannot break a
log line or an event: reserved types, the ``channels`` claim, file channels of real files,
non-finite numbers, oversized ``exp`` and hostile ``X-Request-ID``. Against a real API process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

import httpx
import jwt
import pytest

from api.event_schemas import events_schema
from services.event_types import SERVICE_EVENT_TYPES
from tests.support import ROOT


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _history(client: httpx.Client, channel: str, reader: str) -> list[dict]:
    r = client.get(f"/api/v1/events/{channel}", headers=_bearer(reader))
    assert r.status_code == 200, r.text
    return r.json()["events"]


def _raw_token(env: dict[str, str], payload_json: str) -> str:
    """An HS256 token over a payload written by hand (numbers json.dumps cannot make)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(payload_json.encode())
    mac = hmac.new(env["FINRT_JWT_SECRET"].encode(), signing.encode(), hashlib.sha256)
    return signing + "." + b64(mac.digest())


@pytest.mark.parametrize(
    "kind",
    [
        "notification",
        "notification_read",
        "metric_update",
        "report_status",
        "pong",
        "notification_archived",
        "notification_updated",
        "preferences_updated",
        "presence_join",
    ],
)
def test_reserved_types_cannot_be_published(api, token, user, make_file, kind):
    assert kind in SERVICE_EVENT_TYPES
    file_id = make_file(user)
    service = token(f"{user}-svc", scope="publish")
    with httpx.Client(base_url=api.url, timeout=10) as client:
        for channel in (f"user:{user}", f"file:{file_id}"):
            r = client.post(
                f"/api/v1/events/{channel}",
                json={"type": kind, "data": {"title": "Account locked"}, "key": "k"},
                headers=_bearer(service),
            )
            assert r.status_code == 403, r.text
            assert "reserved" in r.json()["detail"] and kind in r.json()["detail"]
            assert _history(client, channel, token(user)) == []
        # A type of the client's own still goes through.
        r = client.post(
            f"/api/v1/events/user:{user}", json={"type": "price_tick"}, headers=_bearer(service)
        )
        assert r.status_code == 202, r.text


def test_every_type_the_service_documents_is_reserved():
    """A type added to the events schema (/api/v1/schemas/events.json) without reserving it
    would let a client fake it: this fails until it is reserved."""
    documented = {name for name in events_schema()["$defs"] if name[0].islower()}
    assert documented - SERVICE_EVENT_TYPES == set()


def test_a_channels_claim_limits_where_a_token_publishes(api, token, user, make_file):
    file_id = make_file(user)
    files_only = token(f"{user}-svc", scope="publish", channels=["file:*"])
    with httpx.Client(base_url=api.url, timeout=10) as client:
        refused = client.post(
            f"/api/v1/events/user:{user}", json={"type": "price_tick"}, headers=_bearer(files_only)
        )
        assert refused.status_code == 403, refused.text
        assert "channels" in refused.json()["detail"]
        assert _history(client, f"user:{user}", token(user)) == []
        ok = client.post(
            f"/api/v1/events/file:{file_id}",
            json={"type": "price_tick"},
            headers=_bearer(files_only),
        )
        assert ok.status_code == 202, ok.text
        # A claim that is not a list of patterns makes the token invalid.
        for bad in ("file:*", [1], ["x" * 81], [""]):
            r = client.post(
                f"/api/v1/events/file:{file_id}",
                json={"type": "price_tick"},
                headers=_bearer(token(f"{user}-svc", scope="publish", channels=bad)),
            )
            assert r.status_code == 401, (bad, r.text)


def test_a_file_channel_must_name_an_existing_file(api, token, user, make_file):
    service = token(f"{user}-svc", scope="publish")
    with httpx.Client(base_url=api.url, timeout=10) as client:
        r = client.post(
            "/api/v1/events/file:987654321", json={"type": "price_tick"}, headers=_bearer(service)
        )
        assert r.status_code == 404, r.text
        assert "no such file" in r.json()["detail"]
        file_id = make_file(user)
        r = client.post(
            f"/api/v1/events/file:{file_id}", json={"type": "price_tick"}, headers=_bearer(service)
        )
        assert r.status_code == 202, r.text


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_non_finite_numbers_in_data_are_refused(api, token, user, number):
    service = token(f"{user}-svc", scope="publish")
    body = '{"type": "price_tick", "data": {"a": [1, {"b": NUMBER}]}}'.replace("NUMBER", number)
    with httpx.Client(base_url=api.url, timeout=10) as client:
        r = client.post(
            f"/api/v1/events/user:{user}",
            content=body,
            headers={**_bearer(service), "Content-Type": "application/json"},
        )
        assert r.status_code == 422, (number, r.status_code, r.text)
        assert "NaN" in r.json()["detail"]
        assert _history(client, f"user:{user}", token(user)) == []


@pytest.mark.parametrize("data", ["[1, 2]", '"text"', "3", "null", "true"])
def test_data_that_is_not_an_object_is_refused(api, token, user, data):
    """The contract's envelope carries ``"data": {...}``: the page and clients read fields of
    it; a list or a string would reach them as an event they cannot read."""
    service = token(f"{user}-svc", scope="publish")
    with httpx.Client(base_url=api.url, timeout=10) as client:
        r = client.post(
            f"/api/v1/events/user:{user}",
            content=f'{{"type": "price_tick", "data": {data}}}',
            headers={**_bearer(service), "Content-Type": "application/json"},
        )
        assert r.status_code == 422, (data, r.status_code, r.text)
        assert r.json()["detail"][0]["loc"] == ["body", "data"]
        assert _history(client, f"user:{user}", token(user)) == []
        # An object, even an empty one, is data; so is a body without it ({}).
        for body in ('{"type": "price_tick", "data": {}}', '{"type": "price_tick"}'):
            r = client.post(
                f"/api/v1/events/user:{user}",
                content=body,
                headers={**_bearer(service), "Content-Type": "application/json"},
            )
            assert r.status_code == 202, r.text
        assert [e["data"] for e in _history(client, f"user:{user}", token(user))] == [{}, {}]


@pytest.mark.parametrize("exp", ["1" + "0" * 400, "1e400", "1e300", "253402300800"])
def test_an_exp_too_large_is_401_not_500(api, env, user, exp):
    bad = _raw_token(env, f'{{"sub": "{user}", "exp": {exp}}}')
    with httpx.Client(base_url=api.url, timeout=10) as client:
        r = client.get("/api/v1/notifications", headers=_bearer(bad))
        assert r.status_code == 401, (exp, r.status_code, r.text)
        r = client.get("/api/v1/stream/notifications", params={"access_token": bad})
        assert r.status_code == 401, (exp, r.status_code, r.text)
        r = client.post("/api/v1/stream/tickets", headers=_bearer(bad))
        assert r.status_code == 401, (exp, r.status_code, r.text)
    # The latest allowed expiry still works.
    fine = _raw_token(env, f'{{"sub": "{user}", "exp": 253402300799}}')
    assert httpx.get(f"{api.url}/api/v1/notifications", headers=_bearer(fine)).status_code == 200


def test_a_hostile_request_id_is_replaced_and_never_logged(api, token, user):
    secret = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "k" * 32, algorithm="HS256")
    hostile = [
        "a b",
        "x" * 65,
        "line\tbreak",
        secret,
        "token=abc",
        "ü",
    ]
    with httpx.Client(base_url=api.url, timeout=10) as client:
        kept = client.get("/healthz", headers={"X-Request-ID": "req-42.a:b_c"})
        assert kept.headers["x-request-id"] == "req-42.a:b_c"
        for given in hostile:
            r = client.get(
                "/api/v1/notifications",
                headers=[
                    (b"Authorization", f"Bearer {token(user)}".encode()),
                    (b"X-Request-ID", given.encode()),
                ],
            )
            assert r.status_code == 200, r.text
            replaced = r.headers["x-request-id"]
            assert replaced != given and replaced.isalnum() and len(replaced) == 16, replaced
            # The front door (streams) applies the same rule.
            s = client.get(
                "/api/v1/stream/notifications",
                params={"access_token": "garbage"},
                headers=[(b"X-Request-ID", given.encode())],
            )
            assert s.status_code == 401 and s.headers["x-request-id"] != given
    log = api.log()
    assert secret not in log and secret.split(".")[1] not in log


def test_the_browser_client_listens_for_every_documented_type():
    """EventSource hands over only the named events it listens for: a type missing from the
    client's list would never reach an app."""
    source = (ROOT / "api" / "static" / "finrt-source.js").read_text()
    listed = set(re.findall(r'^  "([a-z_]+)",$', source, re.M))
    documented = {name for name in events_schema()["$defs"] if name[0].islower()}
    assert documented - listed == set()
