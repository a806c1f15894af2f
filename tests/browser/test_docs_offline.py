"""/docs and /redoc render with the network closed to everything but the API itself."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.browser


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        ("/docs", "#operations-notifications-listNotifications"),
        ("/redoc", "[data-section-id='operation/listNotifications']"),
    ],
)
def test_api_docs_render_on_an_isolated_network(browser, api, path, rendered):
    context = browser.new_context()
    blocked: list[str] = []
    errors: list[str] = []

    def only_the_api(route: Any) -> None:
        if route.request.url.startswith(api.url + "/"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    try:
        context.route("**/*", only_the_api)
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(api.url + path)
        page.wait_for_selector(rendered, state="attached", timeout=30_000)
        assert "FinVision Realtime" in page.inner_text("body")
        page.screenshot(path=None)
    finally:
        context.close()
    assert not blocked, f"the page reached beyond the API: {blocked}"
    assert not errors, errors
