"""Notification preferences against a real server: every type on by default, critical types
cannot be turned off (422 that says why, nothing changed), a muted type is kept but archived on
arrival and never delivered live or counted, and each change reaches every open tab."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from tests.support import sse

PREFERENCES = "/api/v1/notifications/preferences"


async def put(me: Any, body: Any) -> Any:
    return await me.client.put(PREFERENCES, json=body, headers=me.headers)


async def test_every_type_is_on_by_default_and_critical_ones_say_so(inbox, user):
    response = await inbox(user).get(PREFERENCES)
    assert response.status_code == 200, response.text
    types = response.json()["types"]
    assert types["report_ready"] == {"inbox": True, "toast": True, "critical": False}
    assert types["error_alert"] == {"inbox": True, "toast": True, "critical": True}
    assert types["system_update"]["critical"] is True
    assert "data_quality_issue" in types


@pytest.mark.parametrize(
    "choice", [{"inbox": False, "toast": True}, {"inbox": True, "toast": False}]
)
async def test_a_critical_type_cannot_be_turned_off(stream_url, token, inbox, user, choice):
    me = inbox(user)
    async with sse(stream_url, token(user)) as tab:
        response = await put(me, {"types": {"error_alert": choice}})
        assert response.status_code == 422
        assert "error_alert is critical" in response.json()["detail"]
        assert "cannot be turned off" in response.json()["detail"]
        await tab.no_event(0.5)
    types = (await me.get(PREFERENCES)).json()["types"]
    assert types["error_alert"] == {"inbox": True, "toast": True, "critical": True}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"types": {"nonsense": {"inbox": False, "toast": False}}}, "not a notification type"),
        ({"types": {"report_ready": {"inbox": False}}}, "Field required"),
        ({"types": {"report_ready": {"inbox": "no", "toast": True}}}, "boolean"),
        ({"types": {"report_ready": {"inbox": True, "toast": True, "loud": 1}}}, "Extra inputs"),
        ({"types": {"report_ready": {"inbox": True, "toast": True, "critical": True}}}, "operator"),
        ({}, "Field required"),
    ],
)
async def test_a_bad_body_is_422_and_changes_nothing(inbox, user, body, expected):
    me = inbox(user)
    mixed = {"types": {"file_processed": {"inbox": False, "toast": False}, **body.get("types", {})}}
    response = await put(me, mixed if body else body)
    assert response.status_code == 422
    assert expected in str(response.json()["detail"])
    types = (await me.get(PREFERENCES)).json()["types"]
    assert types["file_processed"]["inbox"] is True  # the valid part was not stored either


async def test_a_change_reaches_every_tab_and_a_muted_type_is_kept_out_of_sight(
    stream_url, token, notify, inbox, user
):
    me = inbox(user)
    schema = (await me.client.get("/api/v1/schemas/events.json")).json()
    async with sse(stream_url, token(user)) as tab1, sse(stream_url, token(user)) as tab2:
        response = await put(me, {"types": {"report_ready": {"inbox": False, "toast": False}}})
        assert response.status_code == 200, response.text
        assert response.json()["types"]["report_ready"]["inbox"] is False
        for tab in (tab1, tab2):
            got = await tab.next_event(5)
            assert got.event == "preferences_updated"
            data = got.envelope["data"]
            assert data["types"]["report_ready"] == {
                "inbox": False,
                "toast": False,
                "critical": False,
            }
            assert data["types"]["file_processed"]["inbox"] is True
            jsonschema.Draft202012Validator(schema).validate(got.envelope)

        muted = notify(user, "muted report", type="report_ready")
        shown = notify(user, "file done", type="file_processed")
        got = await tab1.next_event(5)
        # Only the one of a type still on is delivered live.
        assert (got.event, got.envelope["data"]["id"]) == ("notification", shown)
        assert got.envelope["data"]["unread_count"] == 1
        await tab1.no_event(0.5)

        # Kept: under status=archived, in no count.
        page = await me.page()
        assert [n["id"] for n in page["notifications"]] == [shown]
        assert page["unread_count"] == 1
        counts = (await me.get("/api/v1/notifications/counts")).json()
        assert (counts["unseen"], counts["unread"]) == (1, 1)
        archived = await me.page(status="archived")
        assert [n["id"] for n in archived["notifications"]] == [muted]

        # Turned on again: new ones reach the inbox (toast off stays a choice of the page).
        response = await put(me, {"types": {"report_ready": {"inbox": True, "toast": False}}})
        assert response.status_code == 200
        assert (await tab1.next_event(5)).event == "preferences_updated"
        again = notify(user, "next report", type="report_ready")
        got = await tab1.next_event(5)
        assert (got.event, got.envelope["data"]["id"]) == ("notification", again)


async def test_a_call_that_changes_nothing_publishes_nothing(stream_url, token, inbox, user):
    me = inbox(user)
    async with sse(stream_url, token(user)) as tab:
        same = [
            {"types": {"report_ready": {"inbox": True, "toast": True}}},  # the defaults
            {"types": {"error_alert": {"inbox": True, "toast": True}}},  # critical: always so
            {"types": {}},
        ]
        for body in same:
            response = await put(me, body)
            assert response.status_code == 200, response.text
        await tab.no_event(0.5)
        changed = await put(me, {"types": {"report_ready": {"inbox": True, "toast": False}}})
        assert (await tab.next_event(5)).event == "preferences_updated"
        again = await put(me, {"types": {"report_ready": {"inbox": True, "toast": False}}})
        await tab.no_event(0.5)
    assert changed.json() == again.json()
    assert again.json()["types"]["report_ready"] == {
        "inbox": True,
        "toast": False,
        "critical": False,
    }


async def test_a_type_the_operator_lists_is_critical(start_api, token, user):
    import httpx

    server = start_api(critical_types="report_ready, data_quality_issue")
    headers = {"Authorization": f"Bearer {token(user)}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        types = (await client.get(PREFERENCES, headers=headers)).json()["types"]
        assert types["report_ready"]["critical"] is True
        assert types["data_quality_issue"]["critical"] is True
        assert types["error_alert"]["critical"] is True
        assert types["file_processed"]["critical"] is False
        body = {"types": {"report_ready": {"inbox": True, "toast": False}}}
        response = await client.put(PREFERENCES, json=body, headers=headers)
        assert response.status_code == 422
        assert "report_ready is critical" in response.json()["detail"]


def test_an_unknown_critical_type_stops_the_settings_and_the_server(env):
    """A misspelt FINRT_CRITICAL_TYPES would leave the intended type mutable: it is refused,
    at settings load and at ``finrt api``'s start, in one line naming the name."""
    import subprocess

    from pydantic import ValidationError

    from core.settings import Settings, settings_problem
    from tests.support import BIN, ROOT

    with pytest.raises(ValidationError) as info:
        Settings(critical_types="report_ready, security_alert")
    problem = settings_problem(info.value)
    assert "FINRT_CRITICAL_TYPES" in problem and "'security_alert'" in problem
    assert "data_quality_issue" in problem  # what it accepts
    assert Settings(critical_types=" report_ready ,").critical_type_list == ["report_ready"]

    bad = dict(env, FINRT_CRITICAL_TYPES="report_ready,reportready")
    result = subprocess.run(
        [str(BIN / "finrt"), "api", "--port", "1"],
        env=bad,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=str(ROOT),
    )
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "FINRT_CRITICAL_TYPES" in result.stderr and "'reportready'" in result.stderr


async def test_forty_changes_at_once_are_all_stored_and_the_last_event_is_the_final_state(
    stream_url, token, inbox, user
):
    """Two tabs saving switches at the same moment: every PUT is answered (none is a 500 from
    two first choices of one type inserted together), and the tabs end on what is stored."""
    import asyncio

    me = inbox(user)
    mutable = ["report_ready", "file_processed", "collaboration_invite", "scheduled_report"]
    bodies = [
        {"types": {mutable[i % 4]: {"inbox": i % 3 != 0, "toast": i % 2 == 0}}} for i in range(40)
    ]
    async with sse(stream_url, token(user)) as tab:
        responses = await asyncio.gather(*(put(me, body) for body in bodies))
        assert [r.status_code for r in responses] == [200] * 40, [
            r.text for r in responses if r.status_code != 200
        ]
        final = (await me.get(PREFERENCES)).json()
        last = None
        while True:
            try:
                got = await tab.next_event(1.5)
            except TimeoutError:
                break
            assert got.event == "preferences_updated"
            last = got.envelope["data"]
    assert last == final
