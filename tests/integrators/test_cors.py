"""CORS at the HTTP level: the same answers from the stream front door as from FastAPI."""

from __future__ import annotations

import httpx

APP = "http://app.example.test:8080"
ROUTES = ["/api/v1/stream/notifications", "/api/v1/stream?channel=user:x", "/api/v1/notifications"]


def _preflight(client: httpx.Client, path: str, origin: str, method: str = "GET") -> httpx.Response:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, last-event-id",
        },
    )


def test_listed_origin_is_answered_on_streams_and_rest_alike(start_api, token, user):
    api = start_api(cors_origins=f"{APP}, https://other.example.test")
    with httpx.Client(base_url=api.url) as client:
        for path in ROUTES:
            r = _preflight(client, path, APP)
            assert r.status_code == 200, path
            assert r.headers["access-control-allow-origin"] == APP
            allowed = r.headers["access-control-allow-headers"].lower()
            assert "authorization" in allowed and "last-event-id" in allowed
            assert "access-control-allow-credentials" not in r.headers
        r = _preflight(client, "/api/v1/events/user:x", APP, "POST")
        assert r.status_code == 200 and "POST" in r.headers["access-control-allow-methods"]
        # Other origins are not allowed.
        r = _preflight(client, ROUTES[0], "https://evil.example.test")
        assert r.status_code == 400
        assert "access-control-allow-origin" not in r.headers

        auth = {"Authorization": f"Bearer {token(user)}", "Origin": APP}
        r = client.get("/api/v1/notifications", headers=auth)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == APP
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
        with client.stream("GET", "/api/v1/stream/notifications", headers=auth) as s:
            assert s.status_code == 200
            assert s.headers["access-control-allow-origin"] == APP
        # Refusals carry the header too, so the page can read why.
        r = client.get("/api/v1/stream/notifications", headers={"Origin": APP})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == APP


def test_no_origins_by_default(api, token, user):
    with httpx.Client(base_url=api.url) as client:
        for path in ROUTES:
            r = _preflight(client, path, APP)
            assert "access-control-allow-origin" not in r.headers
            assert r.status_code >= 400
        auth = {"Authorization": f"Bearer {token(user)}", "Origin": APP}
        r = client.get("/api/v1/notifications", headers=auth)
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_an_origin_is_matched_as_browsers_send_it(start_api):
    """Regression: an origin configured with capitals in its host or with its scheme's default
    port never matched, since browsers send the host in lower case and leave that port out."""
    api = start_api(cors_origins="https://App.Example.Test:443, http://Admin.Example.Test:80/")
    with httpx.Client(base_url=api.url) as client:
        for origin in ("https://app.example.test", "http://admin.example.test"):
            r = _preflight(client, ROUTES[0], origin)
            assert r.status_code == 200, origin
            assert r.headers["access-control-allow-origin"] == origin
