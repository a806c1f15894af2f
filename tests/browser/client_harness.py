"""What the browser client's tests share: a bare page on the API's origin that imports
``/static/finrt.js`` like a third-party app would, React from the vendored UMD files, the React
example taken from docs/browser-client.md, processed files, and the server's stream count.

The harness page and the vendored files are answered by Playwright (``context.route``) under
``/__harness/``: they are the test's, not the server's, and nothing leaves the machine.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import ROOT

VENDOR = Path(__file__).resolve().parent / "vendor"
DOC = ROOT / "docs" / "browser-client.md"

# `window.start(options)` connects with the module and records what it hands over.
HARNESS_SCRIPT = """
window.log = []; window.presence = []; window.statuses = []; window.byType = []; window.resets = [];
window.refreshCalls = 0; window.expired = 0;
window.start = async (options) => {
  const finrt = await import("/static/finrt.js");
  const extra = options.refresh ? { refreshToken: () => { window.refreshCalls += 1; return window.nextToken; } } : {};
  delete options.refresh;
  window.conn = finrt.connect({
    ...options,
    ...extra,
    // Presence events (never in history) are kept apart from the channel's events; the
    // client's own auth_expired (no id either) belongs with the events.
    onEvent: (e) => (String(e.type).startsWith("presence") ? window.presence : window.log).push(e),
    onStatus: (state, detail) => window.statuses.push([state, detail.role]),
    onReset: (channel, reason) => window.resets.push([channel, reason]),
    onAuthExpired: () => (window.expired += 1),
  });
  window.conn.on("metric_update", (e) => window.byType.push(e.id));
};
window.harnessReady = true;
"""


def example(name: str) -> str:
    """The ```js block after ``<!-- example: name -->`` in docs/browser-client.md."""
    text = DOC.read_text()
    found = re.search(rf"<!-- example: {re.escape(name)} -->\s*```js\n(.*?)```", text, re.S)
    assert found, f"docs/browser-client.md has no example {name!r}"
    return found.group(1)


def page_html(*, react: bool = False, module: str = "") -> str:
    scripts = ""
    if react:
        scripts = (
            '<script src="/__harness/vendor/react.production.min.js"></script>\n'
            '<script src="/__harness/vendor/react-dom.production.min.js"></script>\n'
        )
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>harness</title></head><body>"
        f'<div id="root"></div>\n{scripts}<script type="module">{HARNESS_SCRIPT}</script>\n'
        f'<script type="module">{module}</script></body></html>'
    )


def serve_harness(context: Any, server_url: str, *, react: bool = False, module: str = "") -> str:
    """Routes the harness on ``context``; returns its address."""
    html = page_html(react=react, module=module)
    context.route(
        f"{server_url}/__harness/page.html",
        lambda route: route.fulfill(status=200, content_type="text/html", body=html),
    )
    context.route(
        f"{server_url}/__harness/vendor/*",
        lambda route: route.fulfill(
            status=200,
            content_type="text/javascript",
            body=(VENDOR / route.request.url.rsplit("/", 1)[1]).read_bytes(),
        ),
    )
    context.route(
        f"{server_url}/__harness/example.js",
        lambda route: route.fulfill(
            status=200, content_type="text/javascript", body=example("react-hooks")
        ),
    )
    return f"{server_url}/__harness/page.html"


def open_harness(context: Any, url: str) -> Any:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.harness_errors = errors
    page.goto(url)
    page.wait_for_function("() => window.harnessReady === true")
    return page


def open_streams(server_url: str) -> int:
    """SSE streams open on the server (``finrt_connections_open``, every channel kind)."""
    text = httpx.get(f"{server_url}/metrics").text
    found = re.findall(r'^finrt_connections_open\{[^}]*transport="sse"[^}]*\} (\S+)$', text, re.M)
    return int(sum(float(v) for v in found))


def wait_streams(server_url: str, expected: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    count = open_streams(server_url)
    while count != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        count = open_streams(server_url)
    return count


def js(value: Any) -> str:
    return json.dumps(value)
