"""Fixtures for the inbox tests (registered in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import httpx
import pytest
import redis

from core.settings import get_settings
from streams.history import event_from_entry
from streams.keys import history_key


@pytest.fixture
def notify() -> Callable[..., str]:
    """Create a notification for ``user`` in a transaction of its own, committed (so its
    event is published); returns its id. Keyword arguments go to ``create_notification``."""
    from models import session_scope
    from services.notify import create_notification

    def _notify(
        user: str,
        title: str = "Report ready",
        *,
        type: str = "report_ready",
        message: str = "Q3 income statement is ready",
        **kwargs: Any,
    ) -> str:
        with session_scope() as session:
            return create_notification(session, user, type, title, message, **kwargs).id

    return _notify


@pytest.fixture
def stored_events(redis_client: redis.Redis) -> Callable[[str], list[dict[str, Any]]]:
    """The envelopes stored on ``user:{user}``, oldest first, read from Redis itself."""
    prefix = get_settings().redis_prefix

    def _events(user: str) -> list[dict[str, Any]]:
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            redis_client.xrange(history_key(prefix, f"user:{user}")),
        )
        return [event_from_entry(i, f).as_dict() for i, f in entries if b"e" in f]

    return _events


class Inbox:
    """One user's calls to the notifications API of a running server."""

    def __init__(self, client: httpx.AsyncClient, user: str, token: str) -> None:
        self.client, self.user = client, user
        self.headers = {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params, headers=self.headers)

    async def post(self, path: str) -> httpx.Response:
        return await self.client.post(path, headers=self.headers)

    async def page(self, **params: Any) -> dict[str, Any]:
        response = await self.get("/api/v1/notifications", **params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def unread_count(self) -> int:
        response = await self.get("/api/v1/notifications/unread-count")
        assert response.status_code == 200, response.text
        return int(response.json()["unread_count"])

    async def read(self, notification_id: str) -> httpx.Response:
        return await self.post(f"/api/v1/notifications/{notification_id}/read")

    async def dismiss(self, notification_id: str) -> httpx.Response:
        return await self.post(f"/api/v1/notifications/{notification_id}/dismiss")

    async def read_all(self) -> httpx.Response:
        return await self.post("/api/v1/notifications/mark-all-read")

    async def history(self) -> list[dict[str, Any]]:
        """``GET /events/user:{user}``: the channel's stored events, oldest first."""
        response = await self.get(f"/api/v1/events/user:{self.user}")
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events


@pytest.fixture
async def inbox(api: Any, token: Callable[..., str]) -> AsyncIterator[Callable[[str], Inbox]]:
    """``inbox(user)``: that user's API client against the shared server."""
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        yield lambda user: Inbox(client, user, token(user))


@pytest.fixture
def stream_url(api: Any) -> str:
    return f"{api.url}/api/v1/stream/notifications"
