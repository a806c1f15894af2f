"""Actions on notifications against a real server (and, for "Retry processing", a real worker):
performed once however often they are asked for, 404 for anyone else, and the producers'
actions; expiry refused at creation and announced to the tabs once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from domain.sample import rows_csv
from models import FileUpload, session_scope
from services.files import create_upload
from services.inbox_states import announce_expired
from services.notification_actions import link, retry_processing
from services.notify import create_notification
from tests.fixtures_workers import auth, wait_for
from tests.support import BIN, ROOT, sse
from workers.processing import allowed_starts, fail_processing

NOTIFICATIONS = "/api/v1/notifications"


def _with_actions(user: str, actions: list[dict[str, Any]]) -> str:
    with session_scope() as session:
        n = create_notification(
            session, user, "report_ready", "Report ready", "q3", actions=actions
        )
        return n.id


async def _act(me: Any, nid: str, index: Any) -> httpx.Response:
    response: httpx.Response = await me.client.post(
        f"{NOTIFICATIONS}/{nid}/actions/{index}", headers=me.headers
    )
    return response


async def test_a_link_action_is_recorded_once_and_shown_done_in_both_tabs(
    stream_url, token, inbox, user, stored_events
):
    me = inbox(user)
    async with sse(stream_url, token(user)) as tab1, sse(stream_url, token(user)) as tab2:
        nid = _with_actions(user, [link("Download", "/api/v1/reports/7/download")])
        for tab in (tab1, tab2):
            got = await tab.next_event(5)
            assert got.envelope["data"]["actions"] == [
                {
                    "label": "Download",
                    "kind": "link",
                    "url": "/api/v1/reports/7/download",
                    "done_at": None,
                }
            ]
        first = await _act(me, nid, 0)
        assert first.status_code == 200, first.text
        done_at = first.json()["actions"][0]["done_at"]
        assert first.json()["performed"] is True and done_at
        for tab in (tab1, tab2):
            got = await tab.next_event(5)
            assert got.event == "notification_action_done"
            assert (got.envelope["data"]["id"], got.envelope["data"]["index"]) == (nid, 0)
            assert got.envelope["data"]["actions"][0]["done_at"] == done_at

        again = await _act(me, nid, 0)
        assert again.status_code == 200
        assert again.json()["performed"] is False
        assert again.json()["actions"][0]["done_at"] == done_at
        await tab2.no_event(0.5)
    assert [e["type"] for e in stored_events(user)].count("notification_action_done") == 1


async def test_twenty_clicks_at_once_perform_it_once(inbox, user, stored_events):
    me = inbox(user)
    nid = _with_actions(user, [link("Open", "/#file=1"), link("Download", "/x")])
    responses = await asyncio.gather(*[_act(me, nid, 1) for _ in range(20)])
    assert [r.status_code for r in responses] == [200] * 20
    assert sum(r.json()["performed"] for r in responses) == 1
    assert len({r.json()["actions"][1]["done_at"] for r in responses}) == 1
    assert all(r.json()["actions"][0]["done_at"] is None for r in responses)
    assert [e["type"] for e in stored_events(user)].count("notification_action_done") == 1


@pytest.mark.parametrize(
    ("index", "status", "expected"),
    [
        (2, 422, "less than or equal to 1"),
        (-1, 422, "greater than or equal to 0"),
        ("first", 422, "valid integer"),
        (1, 404, "this notification has no action 1"),
    ],
)
async def test_a_bad_action_index_is_refused_and_changes_nothing(
    inbox, user, stored_events, index, status, expected
):
    me = inbox(user)
    nid = _with_actions(user, [link("Download", "/x")])
    before = stored_events(user)
    response = await _act(me, nid, index)
    assert response.status_code == status
    assert expected in str(response.json()["detail"])
    assert stored_events(user) == before
    assert (await me.page())["notifications"][0]["actions"][0]["done_at"] is None


async def test_anyone_elses_action_is_404(inbox, user, stored_events):
    nid = _with_actions(user, [link("Download", "/x")])
    response = await _act(inbox(f"s{uuid.uuid4().hex[:8]}"), nid, 0)
    assert response.status_code == 404
    assert response.json() == {"detail": "no such notification"}
    assert (await inbox(user).page())["notifications"][0]["actions"][0]["done_at"] is None


async def test_retry_of_a_file_that_is_not_failed_is_409_and_not_done(inbox, user, make_file):
    me = inbox(user)
    file_id = make_file(user)  # processed
    nid = _with_actions(user, [retry_processing(file_id)])
    response = await _act(me, nid, 0)
    assert response.status_code == 409
    assert response.json() == {
        "detail": "the file is processed; only a failed file is processed again"
    }
    assert (await me.page())["notifications"][0]["actions"][0]["done_at"] is None


def test_producers_refuse_more_than_two_actions_or_a_bad_one(user):
    bad = [
        ([link("a", "/a")] * 3, "at most 2 actions"),
        ([{"label": "x", "kind": "mail"}], "kind must be one of link, api"),
        ([{"label": "", "kind": "link", "url": "/"}], "label must be 1 to 40"),
        ([{"label": "x", "kind": "link"}], "a link action needs a url"),
    ]
    for actions, expected in bad:
        with pytest.raises(ValueError, match=expected), session_scope() as session:
            create_notification(session, user, "report_ready", "t", "m", actions=actions)


async def test_retry_processing_on_a_failed_file_processes_it_once(
    producers_api, celery_worker, worker_env, user
):
    """A file whose job was lost (every run it was given lost its worker, then it was failed)
    is processed again from the bytes still stored, by the action of its error_alert: the
    new job gets runs of its own."""
    with session_scope() as session:
        file = create_upload(session, user, "q3.csv", rows_csv(24), str(uuid.uuid4()))
        session.flush()
        file_id, job_id = file.id, str(file.id)
        upload = session.get(FileUpload, file_id)
        assert upload is not None
        upload.attempts = allowed_starts()
    assert fail_processing(worker_env["FINRT_DATABASE_URL"], file_id, job_id, "the worker was lost")
    base, headers = producers_api.url, auth(worker_env, user)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        page = (await client.get(NOTIFICATIONS, headers=headers)).json()
        alert = next(n for n in page["notifications"] if n["type"] == "error_alert")
        assert alert["actions"] == [
            {"label": "Retry processing", "kind": "api", "url": None, "done_at": None}
        ]

        clicks = [
            client.post(f"{NOTIFICATIONS}/{alert['id']}/actions/0", headers=headers)
            for _ in range(3)
        ]
        responses = await asyncio.gather(*clicks)
        assert [r.status_code for r in responses] == [200] * 3
        assert sum(r.json()["performed"] for r in responses) == 1

        done = await wait_for(
            client, f"{base}/api/v1/files/{file_id}", headers, lambda b: b["status"] == "processed"
        )
        assert done["rows_ok"] == 24
        page = (await client.get(NOTIFICATIONS, headers=headers)).json()
        kinds = [n["type"] for n in page["notifications"]]
        assert kinds.count("file_processed") == 1
        processed = next(n for n in page["notifications"] if n["type"] == "file_processed")
        assert processed["actions"][0]["label"] == "Open file"
        assert processed["actions"][0]["url"] == f"/#file={file_id}"


def test_creating_an_expired_notification_is_refused(user):
    past = datetime.now(UTC) - timedelta(seconds=1)
    with pytest.raises(ValueError, match="already past"), session_scope() as session:
        create_notification(session, user, "system_update", "t", "m", expires_at=past)


async def test_finrt_notify_refuses_an_expiry_in_the_past(env, inbox, user):
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    process = await asyncio.create_subprocess_exec(
        str(BIN / "finrt"),
        *["notify", user, "--type", "system_update", "--title", "t", "--message", "m"],
        *["--expires-at", past],
        env=env,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert b"already past" in err and out == b""
    assert (await inbox(user).page())["total"] == 0


async def test_an_expiry_is_announced_to_every_tab_once(stream_url, token, notify, inbox, user):
    async with sse(stream_url, token(user)) as tab1, sse(stream_url, token(user)) as tab2:
        stays = notify(user, "stays")
        soon = notify(user, "flash", expires_at=datetime.now(UTC) + timedelta(seconds=1))
        for tab in (tab1, tab2):
            await tab.events(2, 5)
        with session_scope() as session:
            assert soon not in announce_expired(session)
        await asyncio.sleep(1.2)
        with session_scope() as session:
            assert soon in announce_expired(session)
        with session_scope() as session:
            assert soon not in announce_expired(session)
        for tab in (tab1, tab2):
            got = await tab.next_event(5)
            assert got.event == "notification_expired"
            assert got.envelope["data"]["id"] == soon
            assert got.envelope["data"]["unread_count"] == 1
        await tab2.no_event(0.5)
    assert [n["id"] for n in (await inbox(user).page())["notifications"]] == [stays]


async def test_regenerate_report_builds_a_new_one_after_a_failure(
    producers_api, celery_worker, worker_env, user
):
    from models import File
    from services.reports import fail_report, request_report
    from tests.fixtures_workers import upload_csv

    base, headers = producers_api.url, auth(worker_env, user)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        accepted = await upload_csv(client, base, headers, rows_csv(12))
        file_id = accepted.json()["file_id"]
        await wait_for(
            client, f"{base}/api/v1/files/{file_id}", headers, lambda b: b["status"] == "processed"
        )
        with session_scope() as session:
            file = session.get(File, file_id)
            assert file is not None
            failed_id = request_report(session, file, user, "csv", str(uuid.uuid4())).id
        assert fail_report(worker_env["FINRT_DATABASE_URL"], failed_id, "the disk was full")

        page = (await client.get(NOTIFICATIONS, headers=headers)).json()
        alert = next(n for n in page["notifications"] if n["type"] == "error_alert")
        assert [a["label"] for a in alert["actions"]] == ["Regenerate report"]
        first = await client.post(f"{NOTIFICATIONS}/{alert['id']}/actions/0", headers=headers)
        again = await client.post(f"{NOTIFICATIONS}/{alert['id']}/actions/0", headers=headers)
        assert (first.json()["performed"], again.json()["performed"]) == (True, False)

        async def ready() -> dict[str, Any] | None:
            page = (await client.get(NOTIFICATIONS, headers=headers)).json()
            return next((n for n in page["notifications"] if n["type"] == "report_ready"), None)

        for _ in range(300):
            note = await ready()
            if note is not None:
                break
            await asyncio.sleep(0.2)
        assert note is not None, "no report_ready after Regenerate report"
        assert note["data"]["report_id"] != failed_id
        assert note["actions"][0]["label"] == "Download"
        assert note["actions"][0]["url"] == f"/api/v1/reports/{note['data']['report_id']}/download"
        download = await client.get(note["actions"][0]["url"], headers=headers)
        assert download.status_code == 200 and b"FinVision report: q.csv" in download.content


async def test_regenerate_report_is_refused_to_a_member_removed_from_the_file(
    inbox, user, make_file
):
    """The requester of a failed report who has since lost the file (a member removed) may
    not have it built again from the old alert: 409, and no report is made."""
    from sqlalchemy import func, select

    from core.settings import get_settings
    from models import File, FileMember, ReportExport
    from services.reports import fail_report, request_report

    owner = f"{user}o"
    file_id = make_file(owner, members=(user,))
    with session_scope() as session:
        file = session.get(File, file_id)
        assert file is not None
        failed_id = request_report(session, file, user, "csv", str(uuid.uuid4())).id
    assert fail_report(get_settings().database_url, failed_id, "the disk was full")
    with session_scope() as session:  # removed elsewhere (the API has no removal)
        member = session.get(FileMember, (file_id, user))
        assert member is not None
        session.delete(member)

    me = inbox(user)
    alert = next(n for n in (await me.page())["notifications"] if n["type"] == "error_alert")
    response = await _act(me, alert["id"], 0)
    assert response.status_code == 409, response.text
    assert "no longer a member" in response.json()["detail"]
    with session_scope() as session:
        reports = session.scalar(
            select(func.count()).select_from(ReportExport).where(ReportExport.file_id == file_id)
        )
    assert reports == 1
