"""A snooze survives a restart of everything: stop the API, the worker and beat, start them
again, and the notification comes back once, at its time (not before)."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.fixtures_workers import auth
from tests.support import BIN


def _woken(client: httpx.Client, base: str, headers: dict[str, str], user: str) -> list[Any]:
    response = client.get(f"{base}/api/v1/events/user:{user}", headers=headers)
    response.raise_for_status()
    return [
        e
        for e in response.json()["events"]
        if e["type"] == "notification" and e["data"].get("woken_from_snooze")
    ]


def test_a_snooze_wakes_once_at_its_time_after_everything_restarted(
    isolated_env, start_isolated_api, start_worker, user
):
    env = isolated_env(snooze_min_seconds=1, inbox_tick_seconds=0.5)
    api = start_isolated_api(env)
    worker = start_worker(env)
    beat = start_worker(env, beat=True)
    args = ["notify", user, "--type", "system_update", "--title", "Call the bank"]
    done = subprocess.run(
        [str(BIN / "finrt"), *args, "--message", "about the loan"],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    nid = done.stdout.decode().strip()
    headers = auth(env, user)
    until = datetime.now(UTC) + timedelta(seconds=25)
    with httpx.Client(timeout=30) as client:
        response = client.post(
            f"{api.url}/api/v1/notifications/{nid}/snooze",
            json={"until": until.isoformat()},
            headers=headers,
        )
        assert response.status_code == 200, response.text

        for process in (beat, worker):
            process.stop()
        api.stop()
        assert datetime.now(UTC) < until, "the machine is too slow for this test's margin"

        api = start_isolated_api(env)
        worker = start_worker(env)
        beat = start_worker(env, beat=True)
        listed = client.get(f"{api.url}/api/v1/notifications", headers=headers).json()
        if datetime.now(UTC) < until:
            assert nid not in [n["id"] for n in listed["notifications"]]

        deadline = time.monotonic() + 90
        while not _woken(client, api.url, headers, user) and time.monotonic() < deadline:
            time.sleep(0.25)
        woken = _woken(client, api.url, headers, user)
        assert len(woken) == 1, "the snooze did not come back"
        published = datetime.fromisoformat(woken[0]["created_at"].replace("Z", "+00:00"))
        assert published >= until
        assert woken[0]["data"]["id"] == nid and woken[0]["data"]["is_read"] is False

        time.sleep(3)  # several more ticks: still once
        assert len(_woken(client, api.url, headers, user)) == 1
        listed = client.get(f"{api.url}/api/v1/notifications", headers=headers).json()
        assert [n["id"] for n in listed["notifications"]] == [nid]
        assert listed["unread_count"] == 1

    # A tick a second stays out of the logs (its lines would bury everything else).
    for process in (worker, beat):
        ticks = [line for line in process.log().splitlines() if "finrt.inbox_tick" in line]
        assert not [t for t in ticks if "succeeded" in t or "Sending due task" in t], ticks[:3]
