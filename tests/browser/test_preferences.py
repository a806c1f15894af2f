"""The notification settings panel in headless Chromium, two tabs of one user: turning pop-ups
off for a type in one tab stops the other tab's toasts of that type at once; critical types
cannot be switched off."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.browser


def switch(tab: Any, type: str, field: str) -> str:
    return f'#prefs input[data-type="{type}"][data-field="{field}"]'


def test_pop_ups_turned_off_in_one_tab_stop_in_the_other(api, user, open_dashboard, notify):
    first = open_dashboard(api, user)
    second = open_dashboard(api, user, context=first.page.context)
    for tab in (first, second):
        tab.page.wait_for_selector(switch(tab, "report_ready", "toast"))
        assert tab.page.is_checked(switch(tab, "report_ready", "toast"))
        # Critical: shown on, and cannot be changed.
        assert tab.page.is_checked(switch(tab, "error_alert", "toast"))
        assert tab.page.is_disabled(switch(tab, "error_alert", "toast"))
        assert tab.page.is_disabled(switch(tab, "error_alert", "inbox"))

    before = notify(user, "Q3 ready", type="report_ready", priority="high")
    second.page.wait_for_selector(f'.toast[data-id="{before}"]')

    first.page.bring_to_front()
    first.page.uncheck(switch(first, "report_ready", "toast"))
    # The other tab follows the event: its switch turns off by itself.
    second.page.wait_for_function(
        "sel => !document.querySelector(sel).checked",
        arg=switch(second, "report_ready", "toast"),
        timeout=15000,
    )

    second.screenshot("preferences-toasts-off")
    muted = notify(user, "Q4 ready", type="report_ready", priority="high")
    other = notify(user, "Import done", type="file_processed", priority="high")
    second.page.wait_for_selector(f'.toast[data-id="{other}"]')
    for tab in (first, second):
        tab.wait_unread(3)  # still in the inbox: only the pop-up is off
        assert tab.page.query_selector(f'.toast[data-id="{muted}"]') is None

    second.page.bring_to_front()
    second.page.check(switch(second, "report_ready", "toast"))
    first.page.wait_for_function(
        "sel => document.querySelector(sel).checked",
        arg=switch(first, "report_ready", "toast"),
        timeout=15000,
    )
    again = notify(user, "Q1 ready", type="report_ready", priority="high")
    first.page.wait_for_selector(f'.toast[data-id="{again}"]')
