"""Hostile uploads by their size and framing, against the real API process and a real Celery
worker.

Too many bytes or rows (up to a 64 MB body, sent with a Content-Length or chunked), archives and
documents renamed .csv, zip and gzip bombs, and broken multipart envelopes. Each upload is
refused with the README's status, a JSON ``detail`` and nothing stored, or accepted and
processed within its limits. The API's memory stays flat: a refused 64 MB body is never read
whole, a zip bomb is never inflated. Last, over the whole run: no upload got a server error.

The limits are those of ``producers_api`` (OWNER_ENV: 1,000,000 bytes, 20,000 rows).
"""

from __future__ import annotations

import base64
import bz2
import gzip
import io
import lzma
import tarfile
import time
import tracemalloc
import zipfile
import zlib
from contextlib import suppress
from typing import Any

import openpyxl
import pytest

from domain.csv_import import CsvRejected, parse_csv, precheck_csv
from tests.hardening.uploads import (
    BOUNDARY,
    COLUMNS,
    GIB,
    GOOD_ROWS,
    HEADER,
    MAX_BYTES,
    MAX_ROWS,
    MEMORY_SLACK_KB,
    PART_HEAD,
    PART_TAIL,
    ROW,
    TALLY,
    Memory,
    csv_bytes,
    raw_post,
    request_head,
    rows_body,
)

pytestmark = pytest.mark.hardening


# -- too many bytes, too many rows -----------------------------------------------------------


def test_two_million_rows_are_refused_with_413_before_the_body_is_read(up):
    user = up.user()
    length, pieces = rows_body(2_000_000)
    assert length > 60_000_000
    head = request_head(up.env, user, b"Content-Length: %d\r\n" % length)
    with Memory(up.pid) as memory:
        answer = raw_post(up.base, head, pieces)
    assert answer.status == 413, answer.body
    assert answer.headers["content-type"] == "application/json"
    assert "too large" in answer.json()["detail"]
    assert answer.sent < length // 4, f"{answer.sent} of {length} bytes sent before the answer"
    assert answer.seconds < 10
    assert memory.growth_kb < MEMORY_SLACK_KB, memory.growth_kb
    up.healthy()
    assert up.listed(user) == []


def test_a_chunked_body_without_content_length_is_refused_with_411(up):
    user = up.user()
    small = up.send(
        user,
        iter([PART_HEAD + HEADER + ROW + PART_TAIL]),
        {"Content-Type": "multipart/form-data; boundary=" + BOUNDARY.decode()},
    )
    up.refused(user, small, 411, "Content-Length")
    _length, pieces = rows_body(2_000_000)
    chunked = (b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    head = request_head(up.env, user, b"Transfer-Encoding: chunked\r\n")
    with Memory(up.pid) as memory:
        answer = raw_post(up.base, head, chunked)
    assert answer.status == 411 and "Content-Length" in answer.json()["detail"]
    assert answer.sent < 16_000_000 and answer.seconds < 10
    assert memory.growth_kb < MEMORY_SLACK_KB, memory.growth_kb
    up.healthy()
    assert up.listed(user) == []


def test_just_over_the_limits_is_refused_with_413(up):
    over_bytes = HEADER + ROW * ((MAX_BYTES - len(HEADER)) // len(ROW) + 1)
    assert MAX_BYTES < len(over_bytes) < MAX_BYTES + len(ROW)
    over_rows = HEADER + ROW * (MAX_ROWS + 1)
    # Many more rows than allowed, each as short as a row can be, within the byte limit.
    tiny_rows = HEADER + b"a\n" * ((MAX_BYTES - len(HEADER)) // 2)
    for data, words in (
        (over_bytes, f"the limit is {MAX_BYTES} bytes"),
        (over_rows, f"more than {MAX_ROWS} data rows"),
        (tiny_rows, f"more than {MAX_ROWS} data rows"),
    ):
        user = up.user()
        up.refused(user, up.post(user, data), 413, words)


def _peak_bytes(check: Any, data: bytes) -> int:
    """The most memory ``check(data)`` held at once (tracemalloc), refused or not."""
    tracemalloc.start()
    try:
        with suppress(CsvRejected):
            check(data, max_bytes=MAX_BYTES, max_rows=MAX_ROWS)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_regression_a_file_of_many_short_lines_is_checked_without_a_list_of_its_lines():
    """The importer held a list of every physical line before counting rows, at about 60
    bytes a line: a 1 MB file of 500,000 one-letter rows took 35 MB to refuse (a 10 MiB one,
    400 MB), in the API's check and again in the worker; now the text and at most the row
    limit's records."""
    tiny_rows = HEADER + b"a\n" * ((MAX_BYTES - len(HEADER)) // 2)
    megabyte = 1_000_000
    assert _peak_bytes(precheck_csv, tiny_rows) < 12 * megabyte  # was 35 MB
    assert _peak_bytes(parse_csv, tiny_rows) < 20 * megabyte  # was 35 MB


def test_the_api_checks_many_short_lines_in_flat_memory(up, celery_worker):
    """The same files through the API: the short rows are refused, the blank lines accepted
    (and fail for having no data row); the API's peak stays well under what a list of lines
    would cost."""
    tiny_rows = HEADER + b"a\n" * ((MAX_BYTES - len(HEADER)) // 2)
    blank_lines = HEADER + b"\n" * (MAX_BYTES - len(HEADER) - 10)
    user = up.user()
    with Memory(up.pid) as memory:
        up.refused(user, up.post(user, tiny_rows), 413, f"more than {MAX_ROWS}")
    assert memory.growth_kb < MEMORY_SLACK_KB, memory.growth_kb
    with Memory(up.pid) as memory:
        file_id = up.accepted(user, up.post(user, blank_lines))
    assert memory.growth_kb < MEMORY_SLACK_KB, memory.growth_kb
    body = up.finished(user, file_id)
    assert body["status"] == "failed" and body["error"] == "the file has a header but no data rows"
    assert (body["rows_total"], body["rows_ok"], body["rows_bad"]) == (0, 0, 0)


def test_exactly_the_row_limit_is_accepted_and_processed(up, celery_worker):
    blank = b"\r\n \n,,,,\n"  # blank lines do not count
    data = HEADER + (ROW * 1000 + blank) * (MAX_ROWS // 1000)
    assert len(data) <= MAX_BYTES
    user = up.user()
    file_id = up.accepted(user, up.post(user, data))
    body = up.finished(user, file_id, timeout=120)
    assert (body["status"], body["rows_total"], body["rows_ok"]) == (
        "processed",
        MAX_ROWS,
        MAX_ROWS,
    )


# -- archives renamed .csv -------------------------------------------------------------------


def test_the_bombs_are_what_they_claim(bombs):
    with zipfile.ZipFile(io.BytesIO(bombs.zip_gib)) as archive:
        assert archive.getinfo("zeros.csv").file_size == GIB
    with zipfile.ZipFile(io.BytesIO(bombs.zip_nested)) as archive:
        assert archive.read("inner.zip") == bombs.zip_gib
    inflate = zlib.decompressobj(wbits=31)
    head = inflate.decompress(bombs.gzip_gib, 1 << 20)
    assert head == bytes(1 << 20)  # and so on, for 1 GiB
    assert gzip.decompress(bombs.gzip_nested) == bombs.gzip_gib
    assert len(bombs.zip_nested) < 100_000 and len(bombs.gzip_nested) < 100_000
    assert len(bombs.zip_gib) < 2_000_000 and len(bombs.gzip_gib) < 2_000_000


def _xlsx() -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(list(COLUMNS))
    sheet.append(["2026-01", "income", "revenue", 1, "USD"])
    sheet["F2"] = '=HYPERLINK("http://x","click")'
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        info = tarfile.TarInfo("q.csv")
        content = HEADER + ROW
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    return out.getvalue()


def _small_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("q.csv", HEADER + ROW)
    return out.getvalue()


RENAMED = {
    "xlsx": (_xlsx, 415, "xlsx"),
    "xls": (lambda: bytes.fromhex("d0cf11e0a1b11ae1") + bytes(504), 415, ".xls workbook"),
    "pdf": (lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", 415, "PDF"),
    "png": (lambda: b"\x89PNG\r\n\x1a\n" + bytes(64), 415, "PNG"),
    "jpeg": (lambda: b"\xff\xd8\xff\xe0" + bytes(64), 415, "JPEG"),
    "bzip2": (lambda: bz2.compress(HEADER + ROW), 415, "bzip2"),
    "xz": (lambda: lzma.compress(HEADER + ROW), 415, "xz"),
    "7z": (lambda: b"7z\xbc\xaf\x27\x1c" + bytes(64), 415, "7z"),
    "tar": (_tar, 415, "NUL"),
    "zip": (_small_zip, 415, "zip archive"),
    "header-then-zip": (lambda: HEADER + _small_zip(), 415, "NUL"),
}


@pytest.mark.parametrize("case", list(RENAMED))
def test_archives_and_documents_renamed_csv_are_refused_with_415(up, case):
    make, status, words = RENAMED[case]
    user = up.user()
    up.refused(user, up.post(user, make(), name=f"{case}.csv"), status, words)


def test_a_zip_bomb_renamed_csv_is_refused_without_inflating_it(up, bombs):
    for data, status, words in (
        (bombs.zip_nested, 415, "zip archive"),
        (bombs.zip_gib, 413, "too large"),  # 1,043,774 bytes: over the limit as it is
        (bombs.gzip_nested, 415, "gzip archive"),
        (bombs.gzip_gib, 413, "too large"),
    ):
        user = up.user()
        started = time.monotonic()
        with Memory(up.pid) as memory:
            up.refused(user, up.post(user, data, name="bomb.csv"), status, words)
        assert time.monotonic() - started < 5
        assert memory.growth_kb < MEMORY_SLACK_KB, memory.growth_kb


def test_a_gzip_content_encoding_is_never_inflated(up, celery_worker, bombs):
    """``Content-Encoding: gzip`` is not decoded: the bytes are the body as sent. A multipart
    body inflating to 1 GiB (three gzip members: the part's head, the bomb, the tail) is not
    valid multipart as sent, and is refused; a plain body so labelled is read as it is."""
    ctype = {"Content-Type": "multipart/form-data; boundary=" + BOUNDARY.decode()}
    bomb = gzip.compress(PART_HEAD) + bombs.gzip_gib + gzip.compress(PART_TAIL)
    user = up.user()
    with Memory(up.pid) as memory:
        response = up.send(user, bomb, {**ctype, "Content-Encoding": "gzip"})
    assert memory.growth_kb < MEMORY_SLACK_KB, memory.growth_kb
    up.refused(user, response, 400, "multipart")
    plain = csv_bytes(GOOD_ROWS)
    user = up.user()
    response = up.send(
        user, PART_HEAD + plain + PART_TAIL, {**ctype, "Content-Encoding": "gzip, br"}
    )
    file_id = up.accepted(user, response)
    assert up.finished(user, file_id)["rows_ok"] == len(GOOD_ROWS)


# -- the multipart envelope ------------------------------------------------------------------


def _part(head: bytes, content: bytes, boundary: bytes = b"B", close: bool = True) -> bytes:
    tail = b"\r\n--" + boundary + b"--\r\n" if close else b""
    return b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + content + tail


FILE_HEAD = b'Content-Disposition: form-data; name="file"; filename="q.csv"'
GOOD_FILE = csv_bytes(GOOD_ROWS)
ENVELOPES = {
    # (Content-Type, body, status or None for any 4xx, words)
    "no-boundary": ("multipart/form-data", _part(FILE_HEAD, GOOD_FILE), 400, "boundary"),
    "empty-boundary": ("multipart/form-data; boundary=", _part(FILE_HEAD, GOOD_FILE), None, ""),
    "5000-character-boundary": (
        "multipart/form-data; boundary=" + "b" * 5000,
        _part(FILE_HEAD, GOOD_FILE, b"b" * 5000),
        None,
        "",
    ),
    "not-closed": (
        "multipart/form-data; boundary=B",
        _part(FILE_HEAD, GOOD_FILE, close=False),
        422,
        "'file'",
    ),
    "no-file-name": (
        "multipart/form-data; boundary=B",
        _part(b'Content-Disposition: form-data; name="file"', GOOD_FILE),
        422,
        "'file'",
    ),
    "200-kb-part-header": (
        "multipart/form-data; boundary=B",
        _part(FILE_HEAD + b"\r\nX-Pad: " + b"y" * 200_000, GOOD_FILE),
        None,
        "",
    ),
    "100-kb-file-name": (
        "multipart/form-data; boundary=B",
        _part(
            b'Content-Disposition: form-data; name="file"; filename="' + b"x" * 100_000 + b'"',
            GOOD_FILE,
        ),
        None,
        "",
    ),
    "base64-part": (
        "multipart/form-data; boundary=B",
        _part(
            FILE_HEAD + b"\r\nContent-Transfer-Encoding: base64",
            base64.b64encode(GOOD_FILE),
        ),
        422,
        "",  # the base64 text is read as it is: a line too long, or a wrong header
    ),
    "two-files": (
        "multipart/form-data; boundary=B",
        _part(FILE_HEAD, GOOD_FILE, close=False) + b"\r\n" + _part(FILE_HEAD, GOOD_FILE),
        400,
        "too many files",
    ),
    "eleven-fields": (
        "multipart/form-data; boundary=B",
        b"".join(
            _part(b'Content-Disposition: form-data; name="f%d"' % i, b"x", close=False) + b"\r\n"
            for i in range(11)
        )
        + _part(FILE_HEAD, GOOD_FILE),
        400,
        "too many fields",
    ),
    "urlencoded": ("application/x-www-form-urlencoded", b"file=" + GOOD_FILE, 415, "multipart"),
    "text-csv": ("text/csv", GOOD_FILE, 415, "multipart"),
    "no-content-type": ("", GOOD_FILE, 415, "multipart"),
}


@pytest.mark.parametrize("case", list(ENVELOPES))
def test_broken_multipart_envelopes_are_refused_clearly(up, case):
    ctype, body, status, words = ENVELOPES[case]
    user = up.user()
    response = up.send(user, body, {"Content-Type": ctype})
    if status is None:
        assert 400 <= response.status_code < 500, response.text
        status = response.status_code
    up.refused(user, response, status, words)


# -- last --------------------------------------------------------------------------------------


def test_no_upload_got_a_server_error(up):
    up.healthy()
    assert TALLY.server_errors == [], TALLY.server_errors
