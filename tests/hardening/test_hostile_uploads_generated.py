"""Hypothesis-generated hostile uploads, against the real API process and a real Celery
worker.

Mostly CSV files with the header, their lines valid, spoiled by a formula or a cell their
column refuses, or junk; some with a wrong header, in another encoding, or random bytes; sent
under hostile file names and content types. Each is refused with exactly what the importer
itself says of it (a JSON ``detail``, nothing stored), or accepted and processed with the
counts the importer gives; no dashboard or report built from what was stored carries a
formula.

The limits are those of ``producers_api`` (OWNER_ENV: 1,000,000 bytes, 20,000 rows). Short by
default; FINRT_SOAK=1 generates more files.
"""

from __future__ import annotations

import codecs
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.csv_import import parse_csv
from tests.hardening.figures import scaled
from tests.hardening.uploads import (
    FORMULAS,
    MAX_BYTES,
    MAX_ROWS,
    assert_safe_cell,
    check_csv_report,
    csv_line,
    data_section,
    local_refusal,
)

pytestmark = pytest.mark.hardening


# -- generated files -------------------------------------------------------------------------

# Valid cells (so that many generated files have rows to store) and cells each column refuses.
VALID_CELLS = (
    st.sampled_from(["2026-01", "2026-02", "2026-03", "2026-Q1", "2026-q2", "1999-12"]),
    st.sampled_from(["income", "balance", "cashflow", "Income", " income "]),
    st.sampled_from(["revenue", "cogs", "opex", "tax", "Gross Profit", "-1 x", "cash_flow"]),
    st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False).map(str),
    st.sampled_from(["USD"]),
)
INVALID_CELLS = (
    st.sampled_from(["2026-13", "26-01", "2026-Q5", "2026/01", "", "٢٠٢٦-01"]),
    st.sampled_from(["equity", "", "income;", "İncome"]),
    st.sampled_from(["a" * 65, "café", "x.y", "", "'revenue"]),
    st.sampled_from(["1,000.00", "1e5", "0x10", "", "١٢٣", "1" * 19, "1.1234567", "+1"]),
    st.sampled_from(["EUR", "usd", "XXX", "", "US"]),
)
FORMULA_CELLS = st.one_of(
    st.sampled_from(FORMULAS),
    st.builds(
        lambda lead, start, rest: lead + start + rest,
        st.sampled_from(["", " ", "  "]),
        st.sampled_from(list("=+-@\t\r")),
        st.text(max_size=12),
    ),
)
JUNK_CELLS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(['"', '""', '"x', 'x"y', "\ufeff", "\u202e=1", "\u00a0=1", "\x0b=1"]),
)
VALID_LINE = st.tuples(*VALID_CELLS).map(list)


@st.composite
def _spoiled_line(draw: st.DrawFn) -> list[str]:
    """A valid line with one cell replaced by a formula or a cell its column refuses."""
    cells = draw(VALID_LINE)
    column = draw(st.integers(0, 4))
    cells[column] = draw(st.one_of(FORMULA_CELLS, INVALID_CELLS[column]))
    return cells


LINE = st.one_of(
    VALID_LINE,
    _spoiled_line(),
    st.lists(st.one_of(JUNK_CELLS, FORMULA_CELLS), max_size=7),
)
HEADERS = [
    "period,statement,line_item,amount,currency",
    " Period , STATEMENT ,line_item,amount,currency",
    "period,statement,line_item,amount,currency,",
    "period,statement,line_item,amount",
    "=period,statement,line_item,amount,currency",
]


def _write(cells: list[str], quoted: bool) -> str:
    return csv_line(cells) if quoted else ",".join(cells)


@st.composite
def generated_files(draw: st.DrawFn) -> bytes:
    """Mostly UTF-8 files with the header (some of them spoiled at the byte level); some with
    a wrong header, in another encoding, or random bytes altogether."""
    pick = draw(st.integers(0, 9))
    header = draw(st.text(max_size=30)) if pick == 0 else HEADERS[0 if pick > 3 else pick]
    lines = draw(st.lists(st.tuples(LINE, st.booleans()), max_size=25))
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = ending.join([header, *(_write(cells, quoted) for cells, quoted in lines)])
    text += draw(st.sampled_from(["", ending]))
    data = text.encode("utf-8")
    kind = draw(st.sampled_from(["plain"] * 6 + ["bom", "bytes", "splice", "encoded"]))
    if kind == "bom":
        data = codecs.BOM_UTF8 + data
    elif kind == "bytes":
        data = draw(st.binary(max_size=200))
    elif kind == "splice":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    elif kind == "encoded":
        codec = draw(st.sampled_from(["utf-16", "utf-16-be", "utf-32", "latin-1", "cp1252"]))
        data = text.encode(codec, errors="replace")
    return data


NAMES = st.one_of(
    st.just("q.csv"),
    st.sampled_from(
        [
            '=HYPERLINK("http://x","y").csv',
            "../../etc/passwd",
            "..\\..\\boot.ini",
            "a\r\nX-Injected: 1.csv",
            "\u202egpj.csv",
            "x" * 1000 + ".csv",
            "",
            " ",
            ".csv",
        ]
    ),
    st.text(max_size=40),
)
CONTENT_TYPES = st.sampled_from(
    ["text/csv", "application/octet-stream", "application/vnd.ms-excel", "application/zip", ""]
)


NO_FILENAME = "the multipart field 'file' must be a file with a filename (curl -F file=@q.csv)"


@dataclass
class Accepted:
    user: str
    file_id: int
    data: bytes


@pytest.mark.timeout(scaled(120, 1200))
def test_generated_files_are_refused_clearly_or_processed_within_their_limits(up, celery_worker):
    accepted: list[Accepted] = []
    refused: dict[int, int] = {}

    @settings(
        max_examples=scaled(25, 300),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=generated_files(), name=NAMES, ctype=CONTENT_TYPES)
    def upload(data: bytes, name: str, ctype: str) -> None:
        user = up.user()
        response = up.post(user, data, name=name, ctype=ctype)
        # httpx sends no file name for "": the part is then a plain field, not a file.
        expected = NO_FILENAME if name == "" else local_refusal(data)
        assert response.status_code < 500, (response.status_code, response.text, data)
        if response.status_code == 202:
            assert expected is None, (expected, data)
            accepted.append(Accepted(user, up.accepted(user, response), data))
            return
        refused[response.status_code] = refused.get(response.status_code, 0) + 1
        assert response.status_code in (413, 415, 422), (response.status_code, response.text)
        assert response.json() == {"detail": expected}, data
        assert up.listed(user) == []

    upload()
    print(f"\ngenerated files: {len(accepted)} accepted, refused {sorted(refused.items())}")
    processed: list[tuple[Accepted, list[tuple[str, ...]]]] = []
    for item in accepted:
        body = up.finished(item.user, item.file_id)
        result = parse_csv(item.data, max_bytes=MAX_BYTES, max_rows=MAX_ROWS)
        assert body["rows_total"] == result.total_lines, (body, item.data)
        assert body["rows_ok"] == len(result.rows), (body, item.data)
        assert body["status"] == ("processed" if result.rows else "failed"), (body, item.data)
        [listed] = up.listed(item.user)
        assert 1 <= len(listed["name"]) <= 255
        assert "/" not in listed["name"] and "\\" not in listed["name"]
        assert not any(unicodedata.category(c).startswith("C") for c in listed["name"])
        if result.rows:
            stored: list[tuple[str, ...]] = [
                (r.period, r.statement, r.line_item, format(r.amount, "f"), r.currency)
                for r in result.rows
            ]
            processed.append((item, stored))
    for item, expected_rows in processed:
        dashboard = up.http.get(
            f"/api/v1/files/{item.file_id}/dashboard", headers=up.headers(item.user)
        ).json()
        for value in _strings(dashboard["metrics"], dashboard["charts"]):
            assert_safe_cell(value, f"dashboard of file {item.file_id}")
        rows = check_csv_report(up.reports(item.user, item.file_id, ("csv",))["csv"])
        assert data_section(rows) == expected_rows, item.data


def _strings(*values: Any) -> Iterator[str]:
    for value in values:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            yield from _strings(*value.values())
        elif isinstance(value, list):
            yield from _strings(*value)
