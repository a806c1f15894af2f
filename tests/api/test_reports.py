"""Reports: each format opens with its standard reader and holds the file's figures; status
events and the notification; who may read and download them."""

from __future__ import annotations

import csv
import io
import re
import uuid
from decimal import Decimal
from typing import Any

import httpx
import openpyxl
import pypdf
import pytest

from domain.reports import REPORT_CONTENT_TYPES
from domain.sample import sample_csv
from models import ReportExport, session_scope
from tests.fixtures_workers import (
    assert_quiet,
    auth,
    events_until,
    finished,
    upload_csv,
    wait_for,
)
from tests.support import Received, make_token, sse


@pytest.fixture(scope="module")
def owner() -> str:
    return f"rep{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def processed_file(producers_api, celery_worker, worker_env, owner):
    """A processed 8-month sample file and its dashboard snapshot."""
    base, headers = producers_api.url, auth(worker_env, owner)
    async with httpx.AsyncClient(timeout=30) as client:
        response = await upload_csv(client, base, headers, sample_csv(8), "Q1 results.csv")
        file_id = response.json()["file_id"]
        detail = await wait_for(client, f"{base}/api/v1/files/{file_id}", headers, finished)
        dashboard = await client.get(f"{base}/api/v1/files/{file_id}/dashboard", headers=headers)
    assert detail["status"] == "processed"
    return file_id, detail, dashboard.json()


async def _report(client, base, headers, file_id, fmt) -> tuple[dict[str, Any], httpx.Response]:
    response = await client.post(
        f"{base}/api/v1/files/{file_id}/reports", json={"format": fmt}, headers=headers
    )
    assert response.status_code == 202, response.text
    report_id = response.json()["report_id"]
    status = await wait_for(client, f"{base}/api/v1/reports/{report_id}", headers, finished)
    download = await client.get(f"{base}/api/v1/reports/{report_id}/download", headers=headers)
    return status, download


def _report_statuses(events: list[Received]) -> list[str]:
    return [e.envelope["data"]["status"] for e in events if e.event == "report_status"]


def _metric(dashboard: dict[str, Any], name: str) -> Decimal:
    return Decimal(next(m["value"] for m in dashboard["metrics"] if m["name"] == name))


async def test_csv_report_opens_with_the_csv_module_and_holds_the_figures(
    producers_api, worker_env, owner, processed_file
):
    file_id, detail, dashboard = processed_file
    async with httpx.AsyncClient(timeout=30) as client:
        status, download = await _report(
            client, producers_api.url, auth(worker_env, owner), file_id, "csv"
        )
    assert status["status"] == "ready" and status["download_url"].endswith("/download")
    assert download.status_code == 200
    assert download.headers["content-type"] == REPORT_CONTENT_TYPES["csv"]
    assert download.headers["content-disposition"] == (
        f'attachment; filename="Q1-results-report-{status["id"]}.csv"'
    )
    rows = list(csv.reader(io.StringIO(download.content.decode("utf-8-sig"))))
    revenue = next(r for r in rows if r and r[0] == "revenue" and len(r) == 6)
    assert Decimal(revenue[3]) == _metric(dashboard, "revenue")
    net = next(r for r in rows if r and r[0] == "net_income" and len(r) == 6)
    assert Decimal(net[3]) == _metric(dashboard, "net_income")
    data_at = rows.index(["period", "statement", "line_item", "amount", "currency"])
    assert len(rows) - data_at - 1 == detail["rows_ok"] == 56


async def test_xlsx_report_opens_with_openpyxl_and_holds_the_figures(
    producers_api, worker_env, owner, processed_file
):
    file_id, detail, dashboard = processed_file
    async with httpx.AsyncClient(timeout=30) as client:
        status, download = await _report(
            client, producers_api.url, auth(worker_env, owner), file_id, "xlsx"
        )
    assert download.headers["content-type"] == REPORT_CONTENT_TYPES["xlsx"]
    book = openpyxl.load_workbook(io.BytesIO(download.content), read_only=True)
    assert book.sheetnames == ["Metrics", "Periods", "Data"]
    metrics = {row[0]: row for row in book["Metrics"].iter_rows(values_only=True) if row}
    assert Decimal(str(metrics["revenue"][3])) == _metric(dashboard, "revenue")
    assert Decimal(str(metrics["gross_profit"][3])) == _metric(dashboard, "gross_profit")
    assert sum(1 for _ in book["Data"].iter_rows()) - 1 == detail["rows_ok"]
    assert status["size_bytes"] == len(download.content)


async def test_pdf_report_opens_with_pypdf_and_streams_its_status_and_one_notification(
    producers_api, worker_env, owner, processed_file
):
    file_id, _detail, dashboard = processed_file
    base, headers, token = producers_api.url, auth(worker_env, owner), make_token(worker_env, owner)
    async with (
        httpx.AsyncClient(timeout=30) as client,
        sse(f"{base}/api/v1/stream/files/{file_id}", token) as file_stream,
        sse(f"{base}/api/v1/stream/notifications", token) as inbox,
    ):
        status, download = await _report(client, base, headers, file_id, "pdf")
        on_file = await events_until(file_stream, lambda s: _report_statuses(s)[-1:] == ["ready"])
        # Only report events: late processing events of the file may come first.
        on_file = [e for e in on_file if e.event == "report_status"]
        on_user = await events_until(inbox, lambda s: any(e.event == "notification" for e in s))
        await assert_quiet(inbox, 0.5)
    assert download.headers["content-type"] == REPORT_CONTENT_TYPES["pdf"]
    text = "".join(
        page.extract_text() for page in pypdf.PdfReader(io.BytesIO(download.content)).pages
    )
    assert "FinVision report: Q1 results.csv" in text
    assert f"{_metric(dashboard, 'revenue'):,.2f}" in text
    assert f"{_metric(dashboard, 'net_income'):,.2f}" in text

    statuses = [e.envelope["data"]["status"] for e in on_file]
    assert statuses[0] == "queued" and set(statuses[1:-1]) == {"running"}
    percents = [e.envelope["data"]["percent"] for e in on_file[1:-1]]
    assert percents == sorted(percents) and percents[-1] == 100
    assert all(e.event == "report_status" for e in on_file)
    ready = on_file[-1].envelope["data"]
    assert ready["download_url"] == f"/api/v1/reports/{status['id']}/download"
    assert ready["report_id"] == status["id"] and ready["format"] == "pdf"
    assert [e.envelope["data"]["status"] for e in on_user if e.event == "report_status"][-1] == (
        "ready"
    )
    notification = next(e.envelope["data"] for e in on_user if e.event == "notification")
    assert notification["type"] == "report_ready"
    assert notification["data"]["report_id"] == status["id"]


async def test_only_readers_see_and_download_a_report(
    producers_api, worker_env, owner, user, processed_file
):
    file_id, _detail, _dashboard = processed_file
    base = producers_api.url
    async with httpx.AsyncClient(timeout=30) as client:
        status, _ = await _report(client, base, auth(worker_env, owner), file_id, "csv")
        report = f"{base}/api/v1/reports/{status['id']}"
        stranger = auth(worker_env, user)
        answers = [
            (await client.get(report, headers=stranger)).status_code,
            (await client.get(f"{report}/download", headers=stranger)).status_code,
            (await client.get(f"{base}/api/v1/reports/99999999", headers=stranger)).status_code,
            (await client.get(f"{base}/api/v1/reports/x/download", headers=stranger)).status_code,
        ]
        # A member may: share the file with the stranger, then try again.
        await client.post(
            f"{base}/api/v1/files/{file_id}/members",
            json={"user_id": user},
            headers=auth(worker_env, owner),
        )
        as_member = await client.get(f"{report}/download", headers=stranger)
        listed = await client.get(f"{base}/api/v1/files/{file_id}/reports", headers=stranger)
    assert answers == [403, 403, 404, 422]
    assert as_member.status_code == 200
    assert status["id"] in [r["id"] for r in listed.json()["reports"]]


async def test_a_report_not_ready_is_409_and_a_file_not_processed_refuses_reports(
    producers_api, worker_env, user, make_file
):
    from models import File

    file_id = make_file(user)
    with session_scope(worker_env["FINRT_DATABASE_URL"]) as session:
        report = ReportExport(
            file_id=file_id, requested_by=user, format="pdf", status="queued", job_id="j"
        )
        session.add(report)
        session.get(File, file_id).status = "processing"  # type: ignore[union-attr]
        session.flush()
        report_id = report.id
    base, headers = producers_api.url, auth(worker_env, user)
    async with httpx.AsyncClient(timeout=30) as client:
        download = await client.get(f"{base}/api/v1/reports/{report_id}/download", headers=headers)
        refused = await client.post(
            f"{base}/api/v1/files/{file_id}/reports", json={"format": "pdf"}, headers=headers
        )
        bad_format = await client.post(
            f"{base}/api/v1/files/{file_id}/reports", json={"format": "docx"}, headers=headers
        )
    assert download.status_code == 409 and "queued" in download.json()["detail"]
    assert refused.status_code == 409 and "processing" in refused.json()["detail"]
    assert bad_format.status_code == 422


DANGEROUS_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _formula_parts(rows: list[list[str]]) -> list[str]:
    """Every field, and every part a spreadsheet splitting on , ; or tab would make of it,
    that it would read as a formula (numbers excepted)."""
    found = []
    for row in rows:
        for cell in row:
            for part in [cell, *re.split(r"[,;\t]", cell)]:
                part = part.lstrip(" ")
                if part.startswith(DANGEROUS_STARTS) and not re.fullmatch(r"-?\d+(\.\d+)?", part):
                    found.append(part)
    return found


async def test_csv_report_of_a_formula_named_file_holds_no_formula_in_any_split(
    producers_api, celery_worker, worker_env, owner
):
    base, headers = producers_api.url, auth(worker_env, owner)
    name = "q3;=1+1;@SUM(1), -2+3\t+cmd.csv"
    async with httpx.AsyncClient(timeout=30) as client:
        response = await upload_csv(client, base, headers, sample_csv(2), name)
        file_id = response.json()["file_id"]
        detail = await wait_for(client, f"{base}/api/v1/files/{file_id}", headers, finished)
        assert detail["status"] == "processed", detail
        status, download = await _report(client, base, headers, file_id, "csv")
    assert status["status"] == "ready", status
    text = download.content.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][1].startswith("FinVision report: q3;")  # the name is there, made harmless
    assert _formula_parts(rows) == []
    # Every field is quoted; read as a semicolon-locale spreadsheet would, still no formula.
    assert text.splitlines()[0].startswith('"Report","FinVision report: q3;')
    assert _formula_parts(list(csv.reader(io.StringIO(text), delimiter=";"))) == []


async def test_every_report_download_is_an_attachment_that_no_browser_sniffs(
    producers_api, worker_env, owner, processed_file
):
    """A CSV holds the file's own text: a browser guessing HTML in it would run it."""
    file_id, _detail, _dashboard = processed_file
    async with httpx.AsyncClient(timeout=30) as client:
        downloads = [
            (await _report(client, producers_api.url, auth(worker_env, owner), file_id, f))
            for f in ("csv", "xlsx", "pdf")
        ]
    for status, download in downloads:
        assert download.status_code == 200, download.text
        assert download.headers["x-content-type-options"] == "nosniff"
        assert download.headers["content-disposition"].startswith("attachment; filename=")
        assert download.headers["content-type"] == REPORT_CONTENT_TYPES[status["format"]]


async def test_a_files_reports_are_listed_a_page_at_a_time(
    producers_api, worker_env, user, make_file
):
    file_id = make_file(user)
    with session_scope(worker_env["FINRT_DATABASE_URL"]) as session:
        rows = [
            ReportExport(
                file_id=file_id, requested_by=user, format="csv", status="failed", job_id=f"j{i}"
            )
            for i in range(105)
        ]
        session.add_all(rows)
        session.flush()
        ids = sorted((r.id for r in rows), reverse=True)
    url, headers = f"{producers_api.url}/api/v1/files/{file_id}/reports", auth(worker_env, user)
    async with httpx.AsyncClient(timeout=30) as client:
        default = (await client.get(url, headers=headers)).json()
        pages = [
            (await client.get(url, params={"page": p, "limit": 40}, headers=headers)).json()
            for p in (1, 2, 3, 4)
        ]
        beyond = await client.get(url, params={"page": 2**31 - 1}, headers=headers)
        bad = [
            (await client.get(url, params=params, headers=headers)).status_code
            for params in (
                {"page": 0},
                {"page": -1},
                {"page": "x"},
                {"page": 2**31},
                {"limit": 0},
                {"limit": 101},
                {"limit": "ten"},
            )
        ]
    assert [r["id"] for r in default["reports"]] == ids[:100]
    assert (default["total"], default["page"], default["limit"]) == (105, 1, 100)
    assert [r["id"] for p in pages for r in p["reports"]] == ids
    assert [len(p["reports"]) for p in pages] == [40, 40, 25, 0]
    assert {(p["total"], p["limit"]) for p in pages} == {(105, 40)}
    assert beyond.status_code == 200 and beyond.json()["reports"] == []
    assert bad == [422] * 7
