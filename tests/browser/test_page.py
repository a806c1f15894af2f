"""``GET /`` and its static files, the token's handling, and the page's accessibility."""

from __future__ import annotations

import re

import httpx
import pytest

from api.routes.page import STATIC_DIR
from tests.browser.test_live_dashboard import METRICS, publish_metric


def test_the_page_and_its_modules_are_served_from_this_origin_only(api):
    page = httpx.get(f"{api.url}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"

    sources: set[str] = set()
    for path in STATIC_DIR.rglob("*"):
        if path.suffix in {".html", ".js", ".css"}:
            text = path.read_text()
            assert not re.search(r"(src|href)=\"https?://", text), path
            assert "://" not in re.sub(r"http://www\.w3\.org/2000/svg", "", text), path
            sources.update(re.findall(r"(?:src|href)=\"(/static/[^\"]+)\"", text))
            sources.update(
                "/static/js/" + name for name in re.findall(r"from \"\./([\w.]+)\"", text)
            )
    assert "/static/js/main.js" in sources
    for source in sorted(sources):
        response = httpx.get(f"{api.url}{source}")
        assert response.status_code == 200, source
        assert response.headers["cache-control"] == "no-cache"
        if source.endswith(".js"):
            assert "javascript" in response.headers["content-type"]
    assert httpx.get(f"{api.url}/static/../api/app.py").status_code == 404
    assert httpx.get(f"{api.url}/static/%2e%2e/api/app.py").status_code == 404


@pytest.mark.browser
def test_the_token_is_taken_once_kept_for_the_tab_and_left_out_of_the_address(
    api, user, open_dashboard
):
    d = open_dashboard(api, user)
    page = d.page
    assert "token" not in page.url
    assert page.evaluate("() => sessionStorage.getItem('finrt.token')")
    page.reload()
    d.wait_connected()
    assert "token" not in page.url
    assert page.is_hidden("#banner")
    d.screenshot("reloaded")


@pytest.mark.browser
def test_without_a_token_the_page_says_how_to_open_it(api, browser, output_dir):
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{api.url}/")
        assert "?token=" in page.inner_text("#banner")
        assert page.get_attribute("#connection", "data-state") == "expired"
        page.screenshot(path=str(output_dir / "no-token.png"), full_page=True)
    finally:
        context.close()


@pytest.mark.browser
def test_an_expired_session_is_said_and_the_page_stops(api, user, token, open_dashboard):
    # Long enough to connect first on a loaded machine (a token already expired when the page
    # opens is another path); the server ends the stream when it expires.
    d = open_dashboard(api, user, token=token(user, ttl=8))
    d.wait_state("expired", timeout=30)
    assert "Session expired" in d.connection_text()
    assert "expired" in d.page.inner_text("#banner")
    assert d.page.is_disabled("#upload-form button[type=submit]")
    assert d.page.evaluate("() => sessionStorage.getItem('finrt.token')") is None
    d.screenshot("expired")


@pytest.mark.browser
def test_usable_at_375_px_with_labels_and_a_sensible_focus_order(
    api, user, make_file, open_dashboard, notify
):
    file_id = make_file(user)
    d = open_dashboard(api, user, width=375, height=812)
    page = d.page
    for name, unit in METRICS:
        publish_metric(file_id, name, unit, "0.4213" if unit == "ratio" else "131200.45")
    d.wait_card("net_margin", "0.4213")
    notify(
        user, "Data quality", type="data_quality_issue", message="3 rows refused.", priority="high"
    )
    page.wait_for_selector(".toast--high")

    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    d.screenshot("narrow")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, button, a[href]')]
            .filter(e => e.offsetParent !== null)
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                         && !e.textContent.trim())
            .map(e => e.outerHTML)"""
    )
    assert unlabelled == []

    order = []
    for _ in range(15):
        page.keyboard.press("Tab")
        order.append(
            page.evaluate("() => document.activeElement.id || document.activeElement.className")
        )
    expected = [
        "skip-link",
        "bell",
        "file-select",
        "whatif-tax",
        "whatif-growth",
        "whatif-apply",
        "upload-file",
        "primary",  # Upload
        "report-format",
        "report-button",
        "period-select",
        "cards-toggle",
        "chart-toggle",
    ]
    assert order[: len(expected)] == expected, order

    page.click("#bell")
    assert page.get_attribute("#bell", "aria-expanded") == "true"
    assert page.evaluate("() => document.activeElement.id") == "mark-all-read"
    page.keyboard.press("Escape")
    assert page.is_hidden("#inbox")
    assert page.evaluate("() => document.activeElement.id") == "bell"
