"""While Redis is down every route answers 503 (retry later), never 500; a 500 that does happen
is JSON and keeps its request id; a report refused with 503 leaves nothing behind.

Each test runs an API process on a Redis (or a database) of its own, stopped under it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from finrt.embedded_redis import EmbeddedRedis
from models import OutboxEvent, ReportExport, session_scope
from tests.support import make_token

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()
    yield server
    server.stop()


BODIES: dict[tuple[str, str], dict[str, object]] = {
    ("post", "/api/v1/events/{channel}"): {"type": "price_tick", "data": {}},
    ("put", "/api/v1/files/{file_id}/parameters/{name}"): {"value": 0.2},
    ("post", "/api/v1/files/{file_id}/members"): {"user_id": "someone"},
    ("put", "/api/v1/files/{file_id}/schedule"): {"frequency": "daily", "format": "csv"},
    ("post", "/api/v1/files/{file_id}/reports"): {"format": "csv"},
}


def _json_error(response: httpx.Response, status: int, what: object) -> None:
    assert response.status_code == status, (what, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), what
    assert response.json()["detail"], what
    assert response.headers.get("x-request-id"), (what, response.headers)


def test_every_route_answers_503_while_redis_is_down(
    own_redis, isolated_env, start_isolated_api, user, make_file
):
    env = isolated_env(redis_url=own_redis.url)
    api = start_isolated_api(env)
    bearer = {"Authorization": f"Bearer {make_token(env, user)}"}
    publisher = {"Authorization": f"Bearer {make_token(env, user + 's', scope='publish')}"}
    with httpx.Client(base_url=api.url, timeout=30) as client:
        assert client.post("/api/v1/stream/tickets", headers=bearer).status_code == 201
        schema = client.get("/openapi.json").json()
        # A file of this API's own database, processed, so that reports may be asked for.
        with session_scope(env["FINRT_DATABASE_URL"]) as session:
            from models import File
            from services.access import ensure_user

            ensure_user(session, user)
            file = File(owner_id=user, name="q.csv", status="processed")
            session.add(file)
            session.flush()
            file_id = file.id
        own_redis.stop()

        requests = [
            ("GET", f"/api/v1/events/user:{user}", bearer, None),
            ("GET", f"/api/v1/events/user:{user}?after=1-0", bearer, None),
            ("POST", "/api/v1/stream/tickets", bearer, None),
            ("GET", f"/api/v1/stream/notifications?ticket={secrets.token_urlsafe(24)}", {}, None),
            (
                "GET",
                f"/api/v1/stream?channel=user:{user}&ticket={secrets.token_urlsafe(24)}",
                {},
                None,
            ),
            ("GET", "/api/v1/stream/notifications", bearer, None),
            ("GET", f"/api/v1/stream/files/{file_id}", bearer, None),
            ("GET", f"/api/v1/stream?channel=user:{user}", bearer, None),
            ("POST", f"/api/v1/events/user:{user}", publisher, {"type": "x_y", "data": {}}),
            ("GET", f"/api/v1/files/{file_id}/dashboard", bearer, None),
            ("POST", f"/api/v1/files/{file_id}/reports", bearer, {"format": "csv"}),
        ]
        for method, path, headers, body in requests:
            got = client.request(method, path, headers=headers, json=body)
            _json_error(got, 503, (method, path))
        # And every other operation of the schema: an answer of its own or 503, never a 500.
        for path, operations in schema["paths"].items():
            for method in operations:
                concrete = (
                    path.replace("{file_id}", str(file_id))
                    .replace("{channel}", f"user:{user}")
                    .replace("{report_id}", "1")
                    .replace("{notification_id}", "00000000-0000-0000-0000-000000000000")
                    .replace("{name}", "tax_rate")
                )
                payload = BODIES.get((method, path))
                got = client.request(
                    method.upper(),
                    concrete,
                    headers=publisher if "/events/" in path else bearer,
                    json=payload,
                )
                assert got.status_code != 500, (method, path, got.text)
                if path == "/readyz":  # its own shape: which check failed
                    assert got.status_code == 503 and got.json()["checks"]["redis"] != "ok"
                elif got.status_code >= 400:
                    _json_error(got, got.status_code, (method, path))
        assert "unhandled error" not in api.log()

    with session_scope(env["FINRT_DATABASE_URL"]) as session:
        reports = session.scalars(sa.select(ReportExport).where(ReportExport.file_id == file_id))
        assert list(reports) == [], "a refused report left a row"
        # Other writes (parameters, inbox) keep their events in the outbox for the sweeper;
        # the refused reports have none.
        events = session.scalars(sa.select(OutboxEvent).where(OutboxEvent.type == "report_status"))
        assert list(events) == [], "a refused report left events to send"


def test_an_unhandled_error_is_json_500_with_the_request_id(isolated_env, start_isolated_api, user):
    env = isolated_env()
    api = start_isolated_api(env)
    # Break the database under the running process: reading notifications now fails.
    engine = sa.create_engine(env["FINRT_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE notifications"))
    engine.dispose()
    bearer = {"Authorization": f"Bearer {make_token(env, user)}", "X-Request-ID": "probe-500"}
    got = httpx.get(f"{api.url}/api/v1/notifications", headers=bearer, timeout=30)
    _json_error(got, 500, "broken table")
    assert got.headers["x-request-id"] == "probe-500"
    assert got.json() == {"detail": "internal server error"}
    log = api.log()
    # The traceback is logged under the request's id, not "[-]".
    assert "[probe-500] unhandled error in GET /api/v1/notifications" in log
    assert "no such table" in log


def test_a_websocket_ticket_while_redis_is_down_closes_with_try_again_later(
    own_redis, isolated_env, start_isolated_api
):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    env = isolated_env(redis_url=own_redis.url)
    api = start_isolated_api(env)
    own_redis.stop()
    url = f"ws://127.0.0.1:{api.port}/api/v1/ws?ticket={secrets.token_urlsafe(24)}"
    with connect(url, open_timeout=10) as sock:
        with pytest.raises(ConnectionClosed) as info:
            sock.recv(timeout=30)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1013, info.value
    assert "unhandled error" not in api.log()
