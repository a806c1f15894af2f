"""Browser fixtures: headless Chromium (Debian's ``chromium`` package) driven by Playwright's
sync API, and a small page object for the dashboard.

Without /usr/bin/chromium the browser tests are skipped, unless ``CI`` is set: there they fail,
since CI installs Chromium (``.ci/run``) and must run them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, ApiServer, make_token

CHROMIUM = Path(os.environ.get("FINRT_CHROMIUM", "/usr/bin/chromium"))
# Without the background-networking flags Chromium reaches out to Google services at start,
# which a closed network refuses (and which a test has no business doing anyway).
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
README_SCREENSHOT = ROOT / "docs" / "screenshot.png"
# Counts the page's EventSources: how many are open now, at most, and made in all.
COUNT_EVENT_SOURCES = """
(() => {
  const Native = window.EventSource;
  const counts = (window.__eventSources = { open: 0, max: 0, made: 0 });
  window.EventSource = class extends Native {
    constructor(...args) {
      super(...args);
      this.__open = true;
      counts.made += 1;
      counts.open += 1;
      counts.max = Math.max(counts.max, counts.open);
    }
    close() {
      if (this.__open) counts.open -= 1;
      this.__open = false;
      super.close();
    }
  };
})();
"""


def chromium_or_skip() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run the browser tests", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One headless Chromium for the browser tests (a fresh context per page)."""
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield launched
        launched.close()


class Dashboard:
    """The dashboard page as a user sees it, with the waits the tests need."""

    def __init__(self, page: Any, server: ApiServer, output_dir: Path) -> None:
        self.page, self.server, self.output_dir = page, server, output_dir
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        # Network errors are expected (a stopped server, refused streams); a blocked resource
        # or a failed render is not.
        page.on(
            "console",
            lambda m: (
                self.errors.append(m.text)
                if m.type == "error"
                and ("Content Security Policy" in m.text or "render failed" in m.text)
                else None
            ),
        )

    # -- waiting ---------------------------------------------------------------------------

    def wait_for(self, script: str, arg: Any = None, timeout: float = 15.0) -> Any:
        """Until ``script`` (a JS function of ``arg``) returns something truthy; returns it."""
        handle = self.page.wait_for_function(script, arg=arg, timeout=timeout * 1000)
        return handle.json_value()

    def wait_state(self, state: str, timeout: float = 15.0) -> None:
        self.page.wait_for_selector(
            f'#connection[data-state="{state}"]', state="attached", timeout=timeout * 1000
        )

    def wait_connected(self, timeout: float = 15.0) -> None:
        self.wait_state("connected", timeout)

    def wait_streaming(self, channel: str, timeout: float = 15.0) -> None:
        """Until the page's stream is open over ``channel`` (after a file switch, say)."""
        self.wait_for("ch => (window.finrt.stats.channels || []).includes(ch)", channel, timeout)

    def wait_events(self, count: int, timeout: float = 15.0) -> None:
        """Until the page has applied ``count`` events in all."""
        self.wait_for("n => window.finrt.stats.events >= n", count, timeout)

    def wait_badge(self, count: int, timeout: float = 15.0) -> None:
        self.wait_for(
            "n => document.querySelector('#bell').dataset.count === String(n)", count, timeout
        )

    def wait_unread(self, count: int, timeout: float = 15.0) -> None:
        """Until the bell says ``count`` unread (the badge itself counts the unseen)."""
        self.wait_for(
            "n => document.querySelector('#bell').dataset.unread === String(n)", count, timeout
        )

    def wait_card(self, name: str, value: str, timeout: float = 15.0) -> None:
        """Until the card of metric ``name`` shows the raw value ``value``."""
        self.wait_for(
            """([name, value]) => {
                const v = document.querySelector(`.card[data-metric="${name}"] .card-value`);
                return v && v.dataset.value === value;
            }""",
            [name, value],
            timeout,
        )

    # -- reading ---------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.page.evaluate("() => ({...window.finrt.stats})")
        return stats

    def card_values(self) -> dict[str, str]:
        values: dict[str, str] = self.page.evaluate(
            """() => Object.fromEntries([...document.querySelectorAll('.card')].map(
                c => [c.dataset.metric, c.querySelector('.card-value').dataset.value]))"""
        )
        return values

    def card_texts(self) -> dict[str, str]:
        texts: dict[str, str] = self.page.evaluate(
            """() => Object.fromEntries([...document.querySelectorAll('.card')].map(
                c => [c.dataset.metric, c.innerText]))"""
        )
        return texts

    def chart_markup(self) -> str:
        markup: str = self.page.inner_html("#chart")
        return markup

    def event_sources(self) -> dict[str, int]:
        """``{open, max, made}``: the page's EventSources (see COUNT_EVENT_SOURCES)."""
        counts: dict[str, int] = self.page.evaluate("() => ({...window.__eventSources})")
        return counts

    def connection_text(self) -> str:
        text: str = self.page.inner_text("#connection-text")
        return text

    # -- output ----------------------------------------------------------------------------

    def screenshot(self, name: str, *, readme: bool = False) -> Path:
        path = self.output_dir / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        # docs/screenshot.png is in the repository: refreshed on request (or when missing), not
        # rewritten by every test run.
        if readme and (os.environ.get("FINRT_UPDATE_SCREENSHOT") or not README_SCREENSHOT.exists()):
            shutil.copyfile(path, README_SCREENSHOT)
        return path

    def assert_no_errors(self) -> None:
        assert not self.errors, f"the page threw: {self.errors}"


@pytest.fixture
def open_dashboard(
    browser: Any, env: dict[str, str], output_dir: Path
) -> Iterator[Callable[..., Dashboard]]:
    """``open_dashboard(server, user, ...)``: a new tab (own browser context) on the page,
    opened with a token for ``user``; every tab is checked for uncaught errors at the end."""
    contexts: list[Any] = []
    opened: list[Dashboard] = []

    def _open(
        server: ApiServer,
        user: str,
        *,
        width: int = 1280,
        height: int = 900,
        config: dict[str, Any] | None = None,
        context: Any = None,
        route: Callable[[Any], None] | None = None,
        connected: bool = True,
        token: str | None = None,
    ) -> Dashboard:
        if context is None:
            context = browser.new_context(
                viewport={"width": width, "height": height}, locale="en-US", accept_downloads=True
            )
            contexts.append(context)
        page = context.new_page()
        page.add_init_script(COUNT_EVENT_SOURCES)
        if config:
            page.add_init_script(f"globalThis.FINRT_CONFIG = {_json(config)};")
        if route is not None:
            route(page)
        dashboard = Dashboard(page, server, output_dir)
        opened.append(dashboard)
        page.goto(f"{server.url}/?token={token or make_token(env, user)}")
        if connected:
            dashboard.wait_connected()
        return dashboard

    yield _open
    try:
        for dashboard in opened:
            dashboard.assert_no_errors()
    finally:
        for context in contexts:
            context.close()


def _json(value: Any) -> str:
    import json

    return json.dumps(value)
