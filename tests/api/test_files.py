"""The files endpoints: uploads refused clearly, listing, access rules, parameters, sharing."""

from __future__ import annotations

import io
import zipfile

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import func, select

import streams
from domain.sample import rows_csv, sample_csv
from models import File, FileParameter, Notification, session_scope
from streams.envelope import parse_id
from tests.fixtures_workers import (
    assert_quiet,
    auth,
    events_until,
    finished,
    next_event,
    upload_csv,
    wait_for,
)
from tests.support import Received, make_token, sse

HEADER = b"period,statement,line_item,amount,currency\n"
LONG_ROW = b"2026-01,income," + b"x" * 60 + b",1.00,USD\n"
# Over the test limit (1,000,000 bytes) by less than the multipart allowance, so the API reads
# it before refusing; the second one is refused from its Content-Length alone.
JUST_OVER = HEADER + LONG_ROW * (1_000_001 // len(LONG_ROW) + 1)
FAR_OVER = HEADER + LONG_ROW * 30_000


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("q.csv", HEADER + b"2026-01,income,revenue,10.00,USD\n")
    return out.getvalue()


def _count_files(env, owner: str) -> int:
    with session_scope(env["FINRT_DATABASE_URL"]) as session:
        query = select(func.count()).select_from(File).where(File.owner_id == owner)
        return int(session.scalar(query) or 0)


@pytest.mark.parametrize(
    ("content", "status", "words"),
    [
        (JUST_OVER, 413, "too large"),
        (FAR_OVER, 413, "too large"),
        (rows_csv(20_001), 413, "more than 20000 data rows"),
        (HEADER + b"2026-01,income,caf\xe9,1.00,USD\n", 415, "not UTF-8"),
        (b"\xff\xfe" + HEADER.decode().encode("utf-16-le"), 415, "UTF-16"),
        (_zip(), 415, "zip archive"),
        (b"date,amount\n2026-01,5\n", 422, "header"),
        (b"", 422, "empty"),
    ],
    ids=[
        "just-over-limit",
        "far-over-limit",
        "too-many-rows",
        "latin-1",
        "utf-16",
        "zip",
        "wrong-header",
        "empty",
    ],
)
async def test_a_bad_upload_is_refused_with_a_clear_status_and_nothing_is_created(
    producers_api, worker_env, user, content, status, words
):
    async with httpx.AsyncClient(timeout=30) as client:
        response = await upload_csv(client, producers_api.url, auth(worker_env, user), content)
        listed = await client.get(
            f"{producers_api.url}/api/v1/files", headers=auth(worker_env, user)
        )
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert listed.json() == {"files": []}
    assert _count_files(worker_env, user) == 0


async def test_an_upload_that_is_not_a_multipart_file_field_is_refused(
    producers_api, worker_env, user
):
    url, headers = f"{producers_api.url}/api/v1/files", auth(worker_env, user)
    async with httpx.AsyncClient(timeout=30) as client:
        not_multipart = await client.post(url, headers=headers, json={"file": "x"})
        wrong_field = await client.post(url, headers=headers, files={"csv": ("q.csv", HEADER)})
        anonymous = await client.post(url, files={"file": ("q.csv", HEADER)})
    assert not_multipart.status_code == 415
    assert wrong_field.status_code == 422 and "'file'" in wrong_field.json()["detail"]
    assert anonymous.status_code == 401
    assert _count_files(worker_env, user) == 0


async def test_the_multipart_media_type_is_read_in_any_case(producers_api, worker_env, user):
    url, headers = f"{producers_api.url}/api/v1/files", auth(worker_env, user)
    async with httpx.AsyncClient(timeout=30) as client:
        sent = []
        for media_type in ("Multipart/Form-Data", "MULTIPART/FORM-DATA", "multipart/form-datax"):
            request = client.build_request(
                "POST", url, headers=headers, files={"file": ("q.csv", sample_csv(2))}
            )
            declared = request.headers["content-type"]
            request.headers["content-type"] = declared.replace("multipart/form-data", media_type)
            sent.append(await client.send(request))
    assert [r.status_code for r in sent] == [202, 202, 415], [r.text for r in sent]
    assert _count_files(worker_env, user) == 2


async def test_files_lists_owned_and_shared_files_newest_first(
    producers_api, worker_env, user, make_file
):
    other = f"{user}-o"
    older = make_file(user, name="own.csv")
    shared = make_file(other, members=(user,), name="shared.csv")
    make_file(other, name="private.csv")
    base, headers = producers_api.url, auth(worker_env, user)
    async with httpx.AsyncClient(timeout=30) as client:
        listed = (await client.get(f"{base}/api/v1/files", headers=headers)).json()["files"]
        detail = (await client.get(f"{base}/api/v1/files/{shared}", headers=headers)).json()
    assert [(f["id"], f["role"]) for f in listed] == [(shared, "member"), (older, "owner")]
    assert detail["name"] == "shared.csv" and detail["owner_id"] == other
    assert detail["status"] == "processed"


async def test_a_non_member_gets_403_and_an_unknown_file_404_everywhere(
    producers_api, worker_env, user, make_file
):
    owner, member = f"{user}-owner", f"{user}-member"
    file_id = make_file(owner, members=(member,))
    base = producers_api.url
    calls = [
        ("GET", "/api/v1/files/{}", None),
        ("GET", "/api/v1/files/{}/dashboard", None),
        ("PUT", "/api/v1/files/{}/parameters/tax_rate", {"value": 0.2}),
        ("POST", "/api/v1/files/{}/members", {"user_id": user}),
        ("POST", "/api/v1/files/{}/reports", {"format": "pdf"}),
        ("GET", "/api/v1/files/{}/reports", None),
        ("GET", "/api/v1/files/{}/schedule", None),
        ("PUT", "/api/v1/files/{}/schedule", {"frequency": "daily", "format": "csv"}),
    ]
    async with httpx.AsyncClient(timeout=30) as client:
        for method, path, body in calls:
            for ident, who, expected in (
                (file_id, user, 403),
                (999_999_999, user, 404),
                ("abc", user, 404),
            ):
                response = await client.request(
                    method, base + path.format(ident), json=body, headers=auth(worker_env, who)
                )
                assert response.status_code == expected, (method, path, ident, response.text)
        # Members read and set parameters, but only the owner shares and schedules.
        as_member = auth(worker_env, member)
        shared = await client.post(
            f"{base}/api/v1/files/{file_id}/members", json={"user_id": user}, headers=as_member
        )
        scheduled = await client.put(
            f"{base}/api/v1/files/{file_id}/schedule",
            json={"frequency": "daily", "format": "csv"},
            headers=as_member,
        )
        parameter = await client.put(
            f"{base}/api/v1/files/{file_id}/parameters/growth_rate",
            json={"value": "0.1"},
            headers=as_member,
        )
    assert shared.status_code == 403 and "owner" in shared.json()["detail"]
    assert scheduled.status_code == 403
    assert parameter.status_code == 200 and parameter.json()["value"] == "0.1"
    with pytest.raises(httpx.HTTPStatusError, match="403"):
        async with sse(f"{base}/api/v1/stream/files/{file_id}", make_token(worker_env, user)):
            pass


def _from_cause(events: list[Received]) -> list[Received]:
    """The events from the first ``parameter_update`` on."""
    for index, event in enumerate(events):
        if event.event == "parameter_update":
            return events[index:]
    return []


async def test_a_parameter_change_streams_the_cause_then_the_recomputed_metrics(
    producers_api, celery_worker, worker_env, user
):
    base, headers, token = producers_api.url, auth(worker_env, user), make_token(worker_env, user)
    async with httpx.AsyncClient(timeout=30) as client:
        file_id = (await upload_csv(client, base, headers, sample_csv(8))).json()["file_id"]
        await wait_for(client, f"{base}/api/v1/files/{file_id}", headers, finished)
        before = await client.get(f"{base}/api/v1/files/{file_id}/dashboard", headers=headers)
        before = before.json()
        url = f"{base}/api/v1/stream/files/{file_id}"
        async with sse(url, token, last_event_id=before["last_event_id"]) as stream:
            put = await client.put(
                f"{base}/api/v1/files/{file_id}/parameters/tax_rate",
                json={"value": 0.5},
                headers=headers,
            )
            assert put.status_code == 200, put.text
            seen = await events_until(stream, lambda s: len(_from_cause(s)) == 4)
            await assert_quiet(stream, 0.5)
            events = _from_cause(seen)
            # Before the cause: processing events published after the snapshot's position was
            # read (the snapshot already holds them; a client applies them again, harmlessly).
            early = seen[: len(seen) - len(events)]
            assert {e.event for e in early} <= {
                "file_processing",
                "financial_data_update",
                "metric_update",
                "chart_data_update",
            }
            # The same value again: the parameter event, nothing recomputed differs.
            again = await client.put(
                f"{base}/api/v1/files/{file_id}/parameters/tax_rate",
                json={"value": "0.50"},
                headers=headers,
            )
            repeat = await next_event(stream)
            await assert_quiet(stream, 0.5)
        after = await client.get(f"{base}/api/v1/files/{file_id}/dashboard", headers=headers)
        after = after.json()
        refused = [
            await client.put(
                f"{base}/api/v1/files/{file_id}/parameters/{name}", json=body, headers=headers
            )
            for name, body in (
                ("tax_rate", {"value": 2}),
                ("tax_rate", {"value": "lots"}),
                ("discount", {"value": 1}),
                # Decimal() alone would read these as 0.25 and 0.3.
                ("tax_rate", {"value": "0.2_5"}),
                ("tax_rate", {"value": "\u0660.\u0663"}),
            )
        ]
        kept = await client.get(f"{base}/api/v1/files/{file_id}/dashboard", headers=headers)
    assert put.json()["changed_metrics"] == ["net_income", "net_margin"]
    assert [(e.event, e.envelope.get("key")) for e in events] == [
        ("parameter_update", "parameter:tax_rate"),
        ("metric_update", "net_income"),
        ("metric_update", "net_margin"),
        ("chart_data_update", "net_income"),
    ]
    cause = events[0].envelope["data"]
    assert cause.pop("updated_at").endswith("Z")
    assert cause == {
        "file_id": file_id,
        "name": "tax_rate",
        "value": "0.5",
        "previous": None,
        "updated_by": user,
        "parameter_id": "tax_rate",
    }
    assert again.json()["changed_metrics"] == [] and repeat.event == "parameter_update"
    assert repeat.envelope["data"]["previous"] == "0.5"
    by_name = {m["name"]: m for m in after["metrics"]}
    card = events[1].envelope["data"]
    assert (card.pop("metric_id"), card.pop("metric_type")) == ("net_income", "money")
    assert by_name["net_income"] == card
    assert by_name["revenue"] == {m["name"]: m for m in before["metrics"]}["revenue"]
    assert after["parameters"] == {"tax_rate": "0.5"}
    assert parse_id(after["last_event_id"]) >= parse_id(repeat.envelope["id"])
    assert [r.status_code for r in refused] == [422] * 5
    assert refused[0].json()["detail"] == "tax_rate must be between 0 and 1 (got 2)"
    assert "unknown parameter 'discount'" in refused[2].json()["detail"]
    assert "must be a number in ASCII digits" in refused[3].json()["detail"]
    assert "must be a number in ASCII digits" in refused[4].json()["detail"]
    assert kept.json()["parameters"] == {"tax_rate": "0.5"}


def test_a_rolled_back_parameter_change_publishes_nothing(env, user, make_file, redis_client):
    from core.settings import get_settings
    from services.files import set_parameter
    from streams.keys import history_key

    file_id = make_file(user)
    url = env["FINRT_DATABASE_URL"]
    with pytest.raises(RuntimeError), session_scope(url) as session:
        file = session.get(File, file_id)
        assert file is not None
        set_parameter(session, file, "tax_rate", "0.3", user)
        raise RuntimeError("the request failed after the change")
    with session_scope(url) as session:
        assert session.get(FileParameter, (file_id, "tax_rate")) is None
    key = history_key(get_settings().redis_prefix, f"file:{file_id}")
    assert redis_client.xlen(key) == 0


async def test_sharing_gives_access_and_invites_once(producers_api, worker_env, user, make_file):
    owner = f"{user}-owner"
    file_id = make_file(owner, name="plan.csv")
    base, as_owner = producers_api.url, auth(worker_env, owner)
    members = f"{base}/api/v1/files/{file_id}/members"
    async with (
        httpx.AsyncClient(timeout=30) as client,
        sse(f"{base}/api/v1/stream/notifications", make_token(worker_env, user)) as inbox,
    ):
        before = await client.get(f"{base}/api/v1/files/{file_id}", headers=auth(worker_env, user))
        first = await client.post(members, json={"user_id": user}, headers=as_owner)
        invite = await next_event(inbox)
        second = await client.post(members, json={"user_id": user}, headers=as_owner)
        await assert_quiet(inbox, 0.5)
        after = await client.get(f"{base}/api/v1/files/{file_id}", headers=auth(worker_env, user))
        refused = [
            await client.post(members, json={"user_id": who}, headers=as_owner)
            for who in ("not a valid id!", "x" * 65, owner)
        ]
    assert before.status_code == 403
    assert first.status_code == 201 and second.status_code == 200
    assert first.json() == {"file_id": file_id, "user_id": user, "role": "viewer"}
    assert invite.event == "notification"
    data = invite.envelope["data"]
    assert data["type"] == "collaboration_invite" and data["data"]["file_id"] == file_id
    assert owner in data["title"] and "plan.csv" in data["title"]
    assert after.status_code == 200 and after.json()["role"] == "member"
    assert [r.status_code for r in refused] == [422, 422, 422]
    with session_scope(worker_env["FINRT_DATABASE_URL"]) as session:
        query = select(func.count()).select_from(Notification).where(Notification.user_id == user)
        assert session.scalar(query) == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # A misspelt "format" made a PDF schedule, silently.
        ("/api/v1/files/{}/schedule", {"frequency": "daily", "fromat": "csv"}),
        ("/api/v1/files/{}/schedule", {"frequency": "daily", "cron": "*/5 * * * *"}),
        ("/api/v1/files/{}/parameters/tax_rate", {"value": 0.2, "name": "growth_rate"}),
        ("/api/v1/files/{}/members", {"user_id": "bob", "role": "owner"}),
        ("/api/v1/files/{}/reports", {"format": "csv", "period": "year"}),
    ],
)
async def test_a_body_with_a_key_the_route_does_not_know_is_422_and_changes_nothing(
    producers_api, worker_env, user, make_file, path, body
):
    file_id = make_file(user)
    headers = auth(worker_env, user)
    method = "POST" if path.endswith(("members", "reports")) else "PUT"
    async with httpx.AsyncClient(base_url=producers_api.url, timeout=30) as client:
        response = await client.request(method, path.format(file_id), json=body, headers=headers)
        schedule = await client.get(f"/api/v1/files/{file_id}/schedule", headers=headers)
        reports = await client.get(f"/api/v1/files/{file_id}/reports", headers=headers)
    assert response.status_code == 422, response.text
    assert "Extra inputs are not permitted" in response.text
    assert schedule.json()["frequency"] is None
    assert reports.json()["reports"] == []
    with session_scope() as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(FileParameter)
                .where(FileParameter.file_id == file_id)
            )
            == 0
        )


async def test_a_file_deleted_outside_the_api_never_hands_its_id_or_history_to_a_new_file(
    api, env, token, user, make_file
):
    """The newest file deleted from outside (a plain database connection): the next file gets
    an id of its own, so its owner cannot replay the deleted file's events from history."""
    stranger = f"{user}x"
    old = make_file(user)
    streams.publish(f"file:{old}", "data_update", {"secret": "the old owner's figures"})
    outside = sa.create_engine(env["FINRT_DATABASE_URL"])  # no project code on this connection
    with outside.begin() as conn:
        conn.execute(sa.text("DELETE FROM files WHERE id = :id"), {"id": old})
    outside.dispose()

    new = make_file(stranger)
    assert new > old
    url = f"{api.url}/api/v1/stream/files/{new}"
    async with sse(url, token(stranger), last_event_id="0-0") as stream:
        await stream.no_event(1.0)
    async with httpx.AsyncClient(base_url=api.url) as client:
        gone = await client.get(f"/api/v1/files/{old}", headers=auth(env, stranger))
        assert gone.status_code == 404
