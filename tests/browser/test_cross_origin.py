"""A page of another origin (the FinVision app on origin A) uses the API and a stream on
origin B: allowed with FINRT_CORS_ORIGINS=A, refused by the browser without it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support import make_token

pytestmark = pytest.mark.browser

PAGE = b"""<!doctype html><html><head><title>app</title></head><body>
<script>
// Called by the test: REST with a bearer header (preflighted), a publish (JSON, preflighted),
// and a stream that must deliver the published event.
window.tryApi = async (api, token, publisher, user) => {
  const result = { rest: null, stream: null, published: null };
  let publishing = null;
  try {
    const r = await fetch(`${api}/api/v1/notifications`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    result.rest = r.status;
  } catch (e) {
    result.rest = `refused: ${e}`;
  }
  result.stream = await new Promise((resolve) => {
    const es = new EventSource(`${api}/api/v1/stream/notifications?access_token=${token}`);
    const timer = setTimeout(() => { es.close(); resolve("timeout"); }, 20000);
    es.onopen = async () => {
      if (result.published !== null) return;
      result.published = "sending";
      publishing = (async () => { try {
        const p = await fetch(`${api}/api/v1/events/user:${user}`, {
          method: "POST",
          headers: { Authorization: `Bearer ${publisher}`, "Content-Type": "application/json" },
          body: JSON.stringify({ type: "price_tick", data: { hello: "from A" } }),
        });
        result.published = p.status;
      } catch (e) {
        result.published = `refused: ${e}`;
      } })();
    };
    es.addEventListener("price_tick", (e) => {
      clearTimeout(timer); es.close(); resolve(JSON.parse(e.data).data.hello);
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) { clearTimeout(timer); resolve("refused"); }
    };
  });
  if (publishing) await publishing;  // the event may arrive before the publish's answer
  return result;
};
</script></body></html>"""


@pytest.fixture
def app_origin() -> Iterator[str]:
    """Origin A: a plain HTTP server that serves the app's page."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # "localhost" for the page, 127.0.0.1 for the API: two origins for the browser.
    yield f"http://localhost:{server.server_address[1]}"
    server.shutdown()


def _run(browser: Any, origin: str, api_url: str, env: dict[str, str], user: str) -> Any:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(origin + "/")
        reader = make_token(env, user)
        publisher = make_token(env, "svc", scope="publish")
        return page.evaluate(
            "([a, t, p, u]) => window.tryApi(a, t, p, u)", [api_url, reader, publisher, user]
        )
    finally:
        context.close()


def test_listed_origin_uses_rest_and_streams(browser, start_api, env, user, app_origin):
    api = start_api(cors_origins=app_origin)
    result = _run(browser, app_origin, api.url, env, user)
    assert result == {"rest": 200, "stream": "from A", "published": 202}


def test_without_the_setting_the_browser_refuses(browser, api, env, user, app_origin):
    result = _run(browser, app_origin, api.url, env, user)
    assert str(result["rest"]).startswith("refused")
    assert result["stream"] == "refused"
