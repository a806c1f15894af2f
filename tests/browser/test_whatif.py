"""The forecast card says why it has no value (no growth rate set), and the page lets a person
set the what-if parameters; the recomputed card arrives live, as for everyone watching."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support import ROOT, make_token

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def _processed_sample(api, env, user) -> int:
    """``samples/q3.csv`` uploaded and processed by a real worker."""
    auth = {"Authorization": f"Bearer {make_token(env, user)}"}
    sent = httpx.post(
        f"{api.url}/api/v1/files",
        headers=auth,
        files={"file": ("q3.csv", (ROOT / "samples" / "q3.csv").read_bytes(), "text/csv")},
        timeout=10,
    )
    assert sent.status_code == 202, sent.text
    file_id = sent.json()["file_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = httpx.get(f"{api.url}/api/v1/files/{file_id}", headers=auth, timeout=10).json()
        if got["status"] == "processed":
            return file_id
        time.sleep(0.3)
    raise AssertionError("the sample was not processed in time")


def test_the_forecast_says_no_growth_rate_and_the_page_sets_one(
    producers_api, celery_worker, worker_env, user, open_dashboard
):
    api, env = producers_api, worker_env
    file_id = _processed_sample(api, env, user)
    d = open_dashboard(api, user)
    d.wait_streaming(f"file:{file_id}")
    d.wait_for(
        """() => {
            const card = document.querySelector('.card[data-metric="forecast_revenue"]');
            return card && card.innerText.includes('No growth rate set');
        }"""
    )
    assert "no earlier period" not in d.card_texts()["forecast_revenue"]
    # A second tab of the same person sees the change live.
    other = open_dashboard(api, user)
    other.wait_streaming(f"file:{file_id}")

    d.page.fill("#whatif-growth", "0.1")
    d.page.click("#whatif-form button[type=submit]")
    d.wait_for("() => document.querySelector('#whatif-status').innerText.startsWith('Saved')")
    for tab in (d, other):
        tab.wait_for(
            """() => {
                const v = document.querySelector('.card[data-metric="forecast_revenue"] .card-value');
                return v && v.dataset.value !== '';
            }"""
        )
        assert "No growth rate set" not in tab.card_texts()["forecast_revenue"]
    other.wait_for("() => document.querySelector('#whatif-growth').value === '0.1'")
    dashboard = httpx.get(
        f"{api.url}/api/v1/files/{file_id}/dashboard",
        headers={"Authorization": f"Bearer {make_token(env, user)}"},
        timeout=10,
    ).json()
    assert dashboard["parameters"]["growth_rate"] == "0.1"

    # A value out of bounds: the server's reason, shown; nothing changed.
    d.page.fill("#whatif-growth", "99")
    d.page.click("#whatif-form button[type=submit]")
    d.wait_for("() => document.querySelector('#whatif-status').innerText.startsWith('growth rate')")
