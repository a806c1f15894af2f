"""Hostile uploads by their content, against the real API process and a real Celery worker.

Wrong encodings, formula injection and enormous fields. Each upload is refused with the
README's status, a JSON ``detail`` and nothing stored, or accepted and processed within its
limits (``processed`` or ``failed``, with counts that add up); no report built from what was
accepted (CSV, Excel, PDF) carries a formula; refusing an enormous field leaves the API's
memory flat.

The limits are those of ``producers_api`` (OWNER_ENV: 1,000,000 bytes, 20,000 rows).
"""

from __future__ import annotations

import codecs

import pytest

from tests.hardening.uploads import (
    COLUMNS,
    FORMULA_MARKERS,
    FORMULAS,
    GOOD_ROWS,
    GOOD_STORED,
    HEADER,
    MEMORY_SLACK_KB,
    ROW,
    Memory,
    check_csv_report,
    check_xlsx_report,
    csv_bytes,
    data_section,
    pdf_text,
    readme_formula,
)

pytestmark = pytest.mark.hardening


# -- wrong encodings -------------------------------------------------------------------------

TEXT = "period,statement,line_item,amount,currency\n2026-01,income,revenue,1.00,USD\n"
ENCODINGS = {
    "latin-1": (HEADER + "2026-01,income,café,1.00,EUR\n".encode("latin-1"), "not UTF-8"),
    "cp1252": (
        HEADER + "2026-01,income,net \u2013 other,1.00,EUR €\n".encode("cp1252"),
        "not UTF-8",
    ),
    "shift-jis": (HEADER + "2026-01,income,売上高,1.00,JPY\n".encode("shift_jis"), "not UTF-8"),
    "ebcdic": (TEXT.encode("cp500"), "not UTF-8"),
    "utf-16-le-bom": (codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le"), "UTF-16"),
    "utf-16-be-bom": (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "UTF-16"),
    "utf-16-le": (TEXT.encode("utf-16-le"), "NUL"),
    "utf-16-be": (TEXT.encode("utf-16-be"), "NUL"),
    "utf-32-le-bom": (codecs.BOM_UTF32_LE + TEXT.encode("utf-32-le"), "UTF-32"),
    "utf-32-be-bom": (codecs.BOM_UTF32_BE + TEXT.encode("utf-32-be"), "UTF-32"),
    "utf-32-le": (TEXT.encode("utf-32-le"), "NUL"),
    "nul-byte": (HEADER + b"2026-01,income,reve\x00nue,1.00,USD\n", "NUL"),
    "overlong-utf-8": (HEADER + b"2026-01,income,\xc0\xafrevenue,1.00,USD\n", "not UTF-8"),
    "utf-8-surrogate": (HEADER + b"2026-01,income,\xed\xa0\x80,1.00,USD\n", "not UTF-8"),
    "cut-multibyte": (HEADER + ROW + b"2026-02,income,caf\xc3", "not UTF-8"),
}


@pytest.mark.parametrize("case", list(ENCODINGS))
def test_wrong_encodings_are_refused_with_415(up, case):
    data, words = ENCODINGS[case]
    user = up.user()
    up.refused(user, up.post(user, data), 415, words)


def test_regression_utf32_text_is_named_utf32_not_utf16(up):
    """UTF-32's byte-order mark starts with UTF-16's: it was refused as "UTF-16 text" (little
    endian) or as binary (big endian)."""
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be")):
        user = up.user()
        detail = up.refused(user, up.post(user, bom + TEXT.encode(codec)), 415, "UTF-32")
        assert "UTF-16" not in detail and "CSV UTF-8" in detail


LINE_ENDINGS = {
    "cr-only": (b"\r", b""),
    "crlf": (b"\r\n", b""),
    "bom-lf": (b"\n", codecs.BOM_UTF8),
    "bom-crlf": (b"\r\n", codecs.BOM_UTF8),
}


@pytest.mark.parametrize("case", list(LINE_ENDINGS))
def test_line_endings_and_a_bom_are_accepted(up, celery_worker, case):
    ending, bom = LINE_ENDINGS[case]
    lines = [b",".join(c.encode() for c in row) for row in [COLUMNS, *GOOD_ROWS]]
    user = up.user()
    file_id = up.accepted(user, up.post(user, bom + ending.join(lines) + ending))
    body = up.finished(user, file_id)
    assert body["status"] == "processed"
    assert (body["rows_total"], body["rows_ok"]) == (len(GOOD_ROWS), len(GOOD_ROWS))


def test_mixed_line_endings_and_blank_lines_count_only_real_rows(up, celery_worker):
    lines = [b",".join(c.encode() for c in row) for row in GOOD_ROWS]
    endings = [b"\n", b"\r\n", b"\r", b"\r\n\r\n", b"\n \t \n", b"\n,,,,\n", b"\r"]
    body = HEADER.rstrip(b"\n") + b"\r\n"
    body += b"".join(line + end for line, end in zip(lines, endings, strict=True))
    user = up.user()
    file_id = up.accepted(user, up.post(user, body + b"no,newline,at,the,end"))
    got = up.finished(user, file_id)
    assert got["status"] == "processed"
    assert (got["rows_total"], got["rows_ok"], got["rows_bad"]) == (len(GOOD_ROWS) + 1, 7, 1)


# -- formula injection -----------------------------------------------------------------------


def test_formula_rows_are_refused_row_by_row_and_named_in_a_data_quality_issue(up, injected):
    user, _file_id, bad = injected
    [issue] = up.notifications(user, "data_quality_issue")
    assert issue["priority"] == "high"
    # The README: data.issues holds the first 50, data.truncated says there were more.
    assert len(bad) > 50
    assert issue["data"]["rows_bad"] == len(bad) and issue["data"]["truncated"] is True
    issues = {i["line"]: i for i in issue["data"]["issues"]}
    assert sorted(issues) == sorted(bad)[:50]
    assert issue["message"].startswith(f"line {min(bad)}: ")
    assert issue["message"].endswith(f"and {len(bad) - 5} more.")
    for line, (column, cell) in bad.items():
        if line not in issues:
            continue
        reason = issues[line]["reason"]
        if column and readme_formula(cell):
            assert f"{column} starts with" in reason and "formula" in reason, (cell, reason)
        assert len(issues[line]["raw"]) <= 120
    assert len(up.notifications(user, "file_processed")) == 1


def test_reports_of_a_file_with_formula_rows_carry_no_formula(up, injected):
    user, file_id, _bad = injected
    built = up.reports(user, file_id, ("csv", "xlsx", "pdf"))
    rows = check_csv_report(built["csv"])
    assert data_section(rows) == GOOD_STORED
    assert rows[0][1] == "FinVision report: =WEBSERVICE(A1)&@NOW().csv"  # text, not a cell start
    xlsx_rows, xlsx_text = check_xlsx_report(built["xlsx"])
    assert [(p, s, i, f"{a:.2f}", c) for p, s, i, a, c in xlsx_rows] == GOOD_STORED
    texts = {
        "csv": built["csv"].decode("utf-8-sig"),
        "xlsx": xlsx_text,
        "pdf": pdf_text(built["pdf"]),
    }
    assert "7 data rows" in texts["pdf"]
    for fmt, text in texts.items():
        for marker in FORMULA_MARKERS:
            assert marker not in text, f"{marker!r} reached the {fmt} report"


def test_a_file_of_formulas_only_ends_failed_with_an_error_alert(up, celery_worker):
    rows = [[f, "income", "revenue", "1.00", "USD"] for f in FORMULAS if readme_formula(f)]
    rows += [["2026-01", "income", f, "1.00", "USD"] for f in FORMULAS]
    user = up.user()
    file_id = up.accepted(user, up.post(user, csv_bytes(rows)))
    body = up.finished(user, file_id)
    assert body["status"] == "failed"
    assert (body["rows_total"], body["rows_ok"], body["rows_bad"]) == (len(rows), 0, len(rows))
    assert body["error"] == f"none of the {len(rows)} data rows is valid"
    [alert] = up.notifications(user, "error_alert")
    assert alert["data"]["rows_bad"] == len(rows) and len(alert["data"]["issues"]) == len(rows)
    refused = up.http.post(
        f"/api/v1/files/{file_id}/reports", json={"format": "csv"}, headers=up.headers(user)
    )
    assert refused.status_code == 409, refused.text


def test_a_formula_in_the_header_refuses_the_file(up):
    for header in (b'=HYPERLINK("http://x"),statement,line_item,amount,currency\n', b"@" + HEADER):
        user = up.user()
        up.refused(user, up.post(user, header + ROW), 422, "header")


# -- enormous fields -------------------------------------------------------------------------


def _cell_file(cell: bytes) -> bytes:
    return HEADER + ROW + b"2026-02,income," + cell + b",1.00,USD\n" + ROW


ENORMOUS = {
    # Over the byte limit itself: refused by size before any parsing.
    "1-mib-cell": (_cell_file(b"x" * (1 << 20)), 413, "too large"),
    # Beyond the csv module's own field limit (131,072) and within it.
    "900-kb-cell": (_cell_file(b"x" * 900_000), 422, "256 characters"),
    "100-kb-quoted-cell": (_cell_file(b'"' + b"x," * 50_000 + b'"'), 422, "256"),
    "10k-line-item": (_cell_file(b"r" * 10_000), 422, "10000 characters long"),
    "257-character-cell": (_cell_file(b"r" * 257), 422, "257 characters long"),
    "unclosed-quote-to-eof": (
        HEADER + ROW + b'2026-02,income,"revenue,1.00,USD\n' + ROW * 20,
        422,
        "quote",
    ),
    "100k-column-header": (HEADER.rstrip(b"\n") + b",x" * 100_000 + b"\n" + ROW, 422, "header"),
    "header-of-one-enormous-name": (b"period" * 100_000 + b"\n" + ROW, 422, "256"),
    "double-bom": (codecs.BOM_UTF8 * 2 + HEADER + ROW, 422, "header"),
}


@pytest.mark.parametrize("case", list(ENORMOUS))
def test_enormous_fields_are_refused_clearly(up, case):
    data, status, words = ENORMOUS[case]
    user = up.user()
    with Memory(up.pid) as memory:
        up.refused(user, up.post(user, data), status, words)
    assert memory.growth_kb < MEMORY_SLACK_KB, memory.growth_kb


def test_long_rows_within_the_limits_are_refused_row_by_row(up, celery_worker):
    """A 256-character cell (the limit), a row of 100,000 columns and a quote left open on the
    last line are row errors: the rest of the file is processed."""
    data = (
        HEADER
        + ROW
        + b"2026-01,income," + b"r" * 256 + b",1.00,USD\n"
        + b"1," * 100_000 + b"\n"
        + ROW
        + b'2026-02,income,"revenue,1.00,USD\n'
    )  # fmt: skip
    user = up.user()
    file_id = up.accepted(user, up.post(user, data))
    body = up.finished(user, file_id)
    assert (body["status"], body["rows_ok"], body["rows_bad"]) == ("processed", 2, 3)
    [issue] = up.notifications(user, "data_quality_issue")
    reasons = {i["line"]: i["reason"] for i in issue["data"]["issues"]}
    assert "line_item" in reasons[3]
    assert reasons[4] == "expected 5 columns, found 100001"
    assert reasons[6] == "expected 5 columns, found 3"
    assert all(len(i["raw"]) <= 120 for i in issue["data"]["issues"])
    assert len(issue["message"]) < 2000
