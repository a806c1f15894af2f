"""Inbox states in headless Chromium, two tabs of one user: seen, archive, snooze (woken by a
real beat and worker) and "Retry processing" (done by a real worker), both tabs agreeing."""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from domain.sample import rows_csv
from models import session_scope
from services.files import create_upload
from tests.fixtures_workers import auth
from tests.support import BIN
from workers.processing import fail_processing

pytestmark = pytest.mark.browser


def note(dashboard: Any, nid: str, inner: str = "") -> str:
    return f'.note[data-id="{nid}"] {inner}'.strip()


def open_bell(dashboard: Any) -> None:
    if dashboard.page.get_attribute("#bell", "aria-expanded") != "true":
        dashboard.page.click("#bell")


COUNTS = "**/api/v1/notifications/counts"
# The page's reads of the counts: how many it made, and how many answers it has read.
COUNT_READS = """() => {
    const native = window.fetch;
    const reads = (window.__countsReads = { made: 0, answered: 0 });
    window.fetch = async (...args) => {
        const response = await native(...args);
        if (!String(args[0]).includes("/notifications/counts")) return response;
        reads.made += 1;
        const json = response.json.bind(response);
        // Counted a task later, once the page's code waiting for the answer has run.
        response.json = () => json().finally(() => setTimeout(() => (reads.answered += 1)));
        return response;
    };
}"""
# Resolves after the page's next repaint (its renders are scheduled for the next frame).
NEXT_REPAINT = "() => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve)))"


class HeldCounts:
    """A tab's reads of ``/notifications/counts``, answered by the server when they are made
    but handed to the page only by :meth:`release`: what a slow answer does when another
    tab's change reaches this tab, through its event, before it."""

    def __init__(self, dashboard: Any) -> None:
        self.page = dashboard.page
        self.held: list[tuple[Any, Any]] = []
        self.page.evaluate(COUNT_READS)
        self.page.route(COUNTS, self._hold)

    def _hold(self, route: Any) -> None:
        self.held.append((route, route.fetch()))

    def wait_held(self, timeout: float = 15.0) -> None:
        """Until the tab has made a read (and the server has answered it)."""
        deadline = time.monotonic() + timeout
        while not self.held:
            assert time.monotonic() < deadline, "the tab read no counts after the events"
            self.page.wait_for_timeout(50)  # lets Playwright run the route handler

    def release(self) -> None:
        """Hands the held answers over, and returns once the page has read every answer to
        its reads and repainted."""
        for route, response in self.held:
            route.fulfill(response=response)
        self.page.unroute(COUNTS, self._hold)
        self.page.wait_for_function(
            "n => window.__countsReads.answered >= n"
            " && window.__countsReads.answered === window.__countsReads.made",
            arg=len(self.held),
            timeout=15_000,
        )
        self.page.evaluate(NEXT_REPAINT)


def test_opening_the_bell_sees_in_both_tabs_and_archive_leaves_the_other(
    api, user, open_dashboard, notify
):
    first = open_dashboard(api, user)
    second = open_dashboard(api, user, context=first.page.context)
    # Each tab reads the counts after the events below; those reads are answered before the
    # bell is opened and reach the tabs only after the "seen" event did. The badge must not
    # come back from such an older answer.
    held = [HeldCounts(tab) for tab in (first, second)]
    low = notify(user, "Weekly digest", type="system_update", priority="low")
    urgent = notify(user, "Payment run failed", type="error_alert", priority="urgent")
    third = notify(user, "Report ready")
    for tab in (first, second):
        tab.wait_badge(3)
        tab.wait_unread(3)
    assert second.page.inner_text("#bell-badge") == "3"
    for reads in held:
        reads.wait_held()

    first.page.bring_to_front()
    open_bell(first)
    for tab in (first, second):
        tab.wait_for("() => window.finrt.stats.byType.notifications_seen >= 1")
    for reads in held:
        reads.release()
    for name, tab in (("first", first), ("second", second)):
        try:
            tab.wait_badge(0, timeout=30)
        except Exception as exc:  # what each tab holds, for whoever reads the failure
            state = "() => ({bell: {...document.querySelector('#bell').dataset}, stats: window.finrt && window.finrt.stats})"
            raise AssertionError(
                f"the {name} tab's badge never reached 0 ({exc}); first: "
                f"{first.page.evaluate(state)}; second: {second.page.evaluate(state)}"
            ) from None
    assert second.page.is_hidden("#bell-badge")
    second.wait_unread(3)  # seen is not read
    counts = first.page.inner_text(".inbox-counts")
    assert "1 urgent" in counts and "1 normal" in counts and "1 low" in counts

    first.page.click(note(first, urgent, "[data-action=archive]"))
    second.wait_unread(2)
    second.page.bring_to_front()
    open_bell(second)
    second.page.wait_for_selector(note(second, third))
    assert second.page.query_selector(note(second, urgent)) is None
    assert "urgent" not in second.page.inner_text(".inbox-counts")
    second.page.click('.inbox-tab[data-view="archived"]')
    second.page.wait_for_selector(note(second, urgent))
    assert second.page.query_selector(note(second, low)) is None
    # Unarchive by keyboard, from the other tab: it is back in the first one's list.
    second.page.focus(note(second, urgent, "[data-action=unarchive]"))
    second.page.keyboard.press("Enter")
    first.wait_unread(3)
    first.page.bring_to_front()
    first.page.wait_for_selector(note(first, urgent))
    first.assert_no_errors()


def _local_in(page: Any, seconds: float) -> str:
    """A datetime-local value ``seconds`` from now, in the browser's time zone."""
    value: str = page.evaluate(
        """s => {
            const d = new Date(Date.now() + s * 1000);
            const p = n => String(n).padStart(2, "0");
            return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}` +
                   `T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
        }""",
        seconds,
    )
    return value


def test_a_snoozed_one_leaves_both_tabs_and_comes_back_with_a_toast(
    isolated_env, start_isolated_api, start_worker, open_dashboard, user
):
    env = isolated_env(snooze_min_seconds=1, inbox_tick_seconds=0.5)
    server = start_isolated_api(env)
    start_worker(env)
    start_worker(env, beat=True)
    config = {"highToastMs": 120000}
    first = open_dashboard(server, user, config=config)
    second = open_dashboard(server, user, config=config, context=first.page.context)
    # Through the CLI with the test's environment: its events go to its own key prefix.
    args = ["notify", user, "--type", "error_alert", "--title", "Cash below threshold"]
    args += ["--message", "12 days of costs", "--priority", "high"]
    done = subprocess.run(
        [str(BIN / "finrt"), *args], env=env, capture_output=True, check=True, timeout=60
    )
    nid = done.stdout.decode().strip()
    toast = f'.toast[data-id="{nid}"]'
    for tab in (first, second):
        tab.page.wait_for_selector(toast)
        tab.wait_unread(1)

    first.page.bring_to_front()
    open_bell(first)
    first.page.click(note(first, nid, "[data-action=snooze]"))
    first.page.fill(note(first, nid, ".snooze-when"), _local_in(first.page, 6))
    first.page.click(note(first, nid, "[data-action=snooze-pick]"))
    for tab in (first, second):
        tab.wait_unread(0)
        tab.page.wait_for_selector(toast, state="detached")
    assert first.page.query_selector(note(first, nid)) is None

    # Back at its time, from the beat's tick: a toast in both tabs, unread and listed again.
    for tab in (first, second):
        tab.page.wait_for_selector(toast, timeout=40_000)
        tab.wait_unread(1)
    first.page.wait_for_selector(note(first, nid))
    first.screenshot("snooze-woken")

    # Expiry you can see: the same tick tells both tabs, the counts drop without a reload.
    expires = (datetime.now(UTC) + timedelta(seconds=6)).isoformat()
    args = ["notify", user, "--type", "system_update", "--title", "Flash sale"]
    args += ["--message", "ends soon", "--expires-at", expires]
    flash = (
        subprocess.run(
            [str(BIN / "finrt"), *args], env=env, capture_output=True, check=True, timeout=60
        )
        .stdout.decode()
        .strip()
    )
    first.page.wait_for_selector(note(first, flash))
    for tab in (first, second):
        tab.wait_unread(2)
    for tab in (first, second):
        tab.wait_unread(1, timeout=40)
    first.page.wait_for_selector(note(first, flash), state="detached")


def test_retry_processing_reprocesses_the_file_and_shows_done_in_both_tabs(
    producers_api, celery_worker, worker_env, open_dashboard, user
):
    config = {"highToastMs": 120000}
    first = open_dashboard(producers_api, user, config=config)
    second = open_dashboard(producers_api, user, config=config, context=first.page.context)
    # A file whose job was lost: the stale-job check failed it, its bytes are still stored.
    with session_scope(worker_env["FINRT_DATABASE_URL"]) as session:
        file = create_upload(session, user, "q4.csv", rows_csv(12), str(uuid.uuid4()))
        file_id = file.id
    assert fail_processing(worker_env["FINRT_DATABASE_URL"], file_id, "lost", "the job was lost")
    on_toast = '.toast [data-act="0"]'
    for tab in (first, second):
        tab.page.wait_for_selector(on_toast)
        assert tab.page.inner_text(on_toast) == "Retry processing"

    first.page.bring_to_front()
    first.page.click(on_toast)  # from the toast
    for tab in (first, second):
        tab.page.wait_for_selector('.toast [data-act="0"][data-done="true"]', timeout=30_000)
        assert tab.page.is_disabled(on_toast)
        tab.wait_unread(2, timeout=60)  # the error and now "q4.csv is processed"
    status = httpx.get(
        f"{producers_api.url}/api/v1/files/{file_id}",
        headers=auth(worker_env, user),
        timeout=10,
    ).json()
    assert status["status"] == "processed" and status["rows_ok"] == 12
    second.page.bring_to_front()
    open_bell(second)
    in_list = '.note [data-act="0"][data-kind="api"]'
    second.page.wait_for_selector(in_list)
    assert second.page.get_attribute(in_list, "data-done") == "true"
    assert second.page.inner_text(in_list) == "Retry processing ✓"
    second.screenshot("retried")


def test_snooze_presets_are_in_the_browsers_time_zone(api, user, open_dashboard):
    d = open_dashboard(api, user)
    presets = d.page.evaluate(
        """async () => {
            const { snoozePresets } = await import("/static/js/inbox-view.js");
            const show = (d) => [d.getFullYear(), d.getMonth() + 1, d.getDate(), d.getHours(),
                                 d.getMinutes()];
            const at = (...a) => snoozePresets(new Date(...a)).map((p) => [p.label, show(p.until)]);
            return { wednesday: at(2026, 11, 2, 15, 30), monday: at(2026, 11, 7, 8, 0) };
        }"""
    )
    assert presets["wednesday"] == [
        ["1 hour", [2026, 12, 2, 16, 30]],
        ["Tomorrow 9:00", [2026, 12, 3, 9, 0]],
        ["Next Monday 9:00", [2026, 12, 7, 9, 0]],
    ]
    # On a Monday, "next Monday" is a week on, even before 9:00.
    assert presets["monday"][2] == ["Next Monday 9:00", [2026, 12, 14, 9, 0]]


def test_the_inbox_works_from_the_keyboard(api, user, open_dashboard, notify):
    d = open_dashboard(api, user)
    page = d.page
    nid = notify(user, "Quarter closed", type="system_update")
    d.wait_unread(1)
    page.focus("#bell")
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "mark-all-read"
    # Tabs: arrow keys move between All, Unread and Archived.
    page.focus('.inbox-tab[data-view="all"]')
    page.keyboard.press("ArrowRight")
    assert page.get_attribute('.inbox-tab[data-view="unread"]', "aria-selected") == "true"
    page.keyboard.press("ArrowLeft")
    assert page.get_attribute('.inbox-tab[data-view="all"]', "aria-selected") == "true"

    snooze = note(d, nid, "[data-action=snooze]")
    page.focus(snooze)
    page.keyboard.press("Enter")
    assert page.get_attribute(snooze, "aria-expanded") == "true"
    assert page.evaluate("() => document.activeElement.textContent") == "1 hour"
    page.keyboard.press("Escape")  # the menu closes, the panel stays
    assert page.get_attribute(snooze, "aria-expanded") == "false"
    assert page.evaluate("() => document.activeElement.dataset.action") == "snooze"
    assert not page.is_hidden("#inbox")

    page.focus(note(d, nid, "[data-action=archive]"))
    page.keyboard.press("Enter")
    d.wait_unread(0)
    page.focus('.inbox-tab[data-view="archived"]')
    page.keyboard.press("Enter")
    page.wait_for_selector(note(d, nid, "[data-action=unarchive]"))
    page.keyboard.press("Escape")
    assert page.is_hidden("#inbox")
    assert page.evaluate("() => document.activeElement.id") == "bell"
