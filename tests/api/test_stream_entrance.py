"""One entrance for streams: one parser with one set of limits reads every stream request, and
one rule picks the credential that counts (bearer header, then access_token, then ticket)."""

from __future__ import annotations

import httpx
import pytest
import websockets
from websockets.sync.client import connect


def _status(client: httpx.Client, method: str, path: str, **kwargs) -> tuple[int, str]:
    """Status and (for a refusal) detail; a stream is closed at once."""
    with client.stream(method, path, **kwargs) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, response.json()["detail"]
        return 200, ""


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/api/v1/stream/notifications", {"access_token": "x" * 4097}, 422),
        ("/api/v1/stream/notifications", {"ticket": "t" * 65}, 422),
        ("/api/v1/stream/notifications", {"last_event_id": "1" * 4097}, 422),
        ("/api/v1/stream/notifications", {}, 401),
        ("/api/v1/stream/files/07", None, 404),
        ("/api/v1/stream", {"channel": "file:07"}, 400),
        ("/api/v1/stream", {}, 400),
    ],
)
def test_refusals_before_any_stream_starts(api, token, user, path, params, status):
    headers = {} if status == 401 else {"Authorization": f"Bearer {token(user)}"}
    with httpx.Client(base_url=api.url, timeout=10) as client:
        got, detail = _status(client, "GET", path, params=params, headers=headers)
    assert got == status, (path, params, got, detail)
    if status == 422:
        assert "too long" in detail
        assert f"at most {4096 if 'ticket' not in params else 64:,} characters" in detail


def test_a_query_token_too_long_is_told_what_to_use_instead(api):
    """Regression: the 422 said only "access_token is too long"; the token may be fine, the
    query string is the wrong place for it."""
    with httpx.Client(base_url=api.url, timeout=10) as client:
        path = "/api/v1/stream/notifications"
        status, detail = _status(client, "GET", path, params={"access_token": "x" * 4097})
    assert status == 422
    assert "Authorization header" in detail and "POST /api/v1/stream/tickets" in detail
    # The WebSocket says it whole in its close reason.
    url = api.url.replace("http", "ws") + "/api/v1/ws?access_token=" + "x" * 4097
    with connect(url) as ws:
        with pytest.raises(websockets.ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4001
    assert info.value.rcvd.reason == detail


def test_the_bearer_header_wins_and_a_ticket_beside_a_token_is_not_spent(api, token, user):
    bearer = {"Authorization": f"Bearer {token(user)}"}
    path = "/api/v1/stream/notifications"
    with httpx.Client(base_url=api.url, timeout=10) as client:
        ticket = client.post("/api/v1/stream/tickets", headers=bearer).json()["ticket"]
        # A good header beats a bad query token and leaves the ticket unused...
        params = {"access_token": "garbage", "ticket": ticket}
        assert _status(client, "GET", path, params=params, headers=bearer)[0] == 200
        # ...a query token beats the ticket (and a bad one is refused, not passed over)...
        assert _status(client, "GET", path, params=params)[0] == 401
        # ...so the ticket still opens one stream, once.
        assert _status(client, "GET", path, params={"ticket": ticket})[0] == 200
        assert _status(client, "GET", path, params={"ticket": ticket})[0] == 401
