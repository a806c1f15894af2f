"""Presence on the page, two users in two Chromium contexts: avatars, reloads, leaving, who
changed what, and a shared file appearing in the invitee's list."""

from __future__ import annotations

import time

import httpx
import pytest

AVATAR = "id => !!document.querySelector(`#presence-avatars [data-user='${id}']`)"
NO_AVATAR = "id => !document.querySelector(`#presence-avatars [data-user='${id}']`)"
# Records whether the avatar of a user ever left the list (the observer sees every change).
WATCH_AVATAR = """id => {
    window.__avatarLost = false;
    const list = document.querySelector('#presence-avatars');
    new MutationObserver(() => {
        if (!list.querySelector(`[data-user='${id}']`)) window.__avatarLost = true;
    }).observe(list, {childList: true, subtree: true});
}"""


def _call(method: str, url: str, token: str, body: dict[str, object]) -> httpx.Response:
    response = httpx.request(
        method, url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=15
    )
    assert response.status_code < 300, response.text
    return response


@pytest.mark.browser
def test_two_users_see_each_other_and_each_others_changes(
    start_api, user, make_file, open_dashboard, token
):
    server = start_api(presence_grace_seconds="2")
    bob = f"{user}-bob"
    file_id = make_file(user, members=(bob,))
    alice_page = open_dashboard(server, user)
    bob_page = open_dashboard(server, bob)
    alice_page.wait_for(AVATAR, bob)
    bob_page.wait_for(AVATAR, user)
    assert alice_page.page.get_attribute(f"#presence-avatars [data-user='{bob}']", "title") == bob
    assert alice_page.page.inner_text("#presence-label") == "1 other viewing"

    # Bob reloads: Alice never sees his avatar go.
    alice_page.page.evaluate(WATCH_AVATAR, bob)
    bob_page.page.reload()
    bob_page.wait_connected()
    bob_page.wait_for(AVATAR, user)
    time.sleep(3)  # past the grace period
    assert alice_page.page.evaluate("() => window.__avatarLost") is False
    alice_page.wait_for(AVATAR, bob)

    # Who changed what: "bob set growth_rate 5% → 7%" on Alice's page.
    url = f"{server.url}/api/v1/files/{file_id}/parameters/growth_rate"
    _call("PUT", url, token(user), {"value": "0.05"})
    _call("PUT", url, token(bob), {"value": "0.07"})
    line = alice_page.wait_for(
        """id => [...document.querySelectorAll('#activity li')]
            .map(li => li.innerText).find(t => t.startsWith(id))""",
        bob,
    )
    assert f"{bob} set growth_rate 5% → 7%" in line
    mine = alice_page.page.inner_text("#activity li:last-child")
    assert mine.startswith("You set growth_rate 5%")

    # Bob closes his tab: his avatar goes after the grace period.
    bob_page.page.close()
    alice_page.wait_for(NO_AVATAR, bob, timeout=20)
    assert alice_page.page.inner_text("#presence-label") == "Only you"
    alice_page.screenshot("presence")


@pytest.mark.browser
def test_a_shared_file_appears_in_the_invitees_list_without_a_reload(
    start_api, user, make_file, open_dashboard, token
):
    server = start_api()
    carol = f"{user}-carol"
    file_id = make_file(user, name="shared-q3.csv")
    carol_page = open_dashboard(server, carol)
    assert carol_page.page.locator(f"#file-select option[value='{file_id}']").count() == 0
    _call("POST", f"{server.url}/api/v1/files/{file_id}/members", token(user), {"user_id": carol})
    carol_page.wait_for(
        "id => !!document.querySelector(`#file-select option[value='${id}']`)", file_id
    )
    # With no file of her own, the shared one opens, and Alice (not on the page) is not shown.
    carol_page.wait_streaming(f"file:{file_id}")
    assert "shared-q3.csv" in carol_page.page.inner_text("#file-select")
