"""Parsing and validating an uploaded financial CSV.

File-level problems raise :class:`CsvRejected` (the whole upload is refused); problems in a
single data row become a :class:`RowError` and the rest of the file is still imported.
"""

from __future__ import annotations

import collections
import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

__all__ = [
    "CURRENCIES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FIELD_CHARS",
    "DEFAULT_MAX_ROWS",
    "EXPECTED_HEADER",
    "RAW_MAX_CHARS",
    "STATEMENTS",
    "CsvRejected",
    "FinancialRow",
    "ParseResult",
    "RejectKind",
    "RowError",
    "parse_csv",
    "precheck_csv",
]

EXPECTED_HEADER: tuple[str, ...] = ("period", "statement", "line_item", "amount", "currency")
STATEMENTS: frozenset[str] = frozenset({"income", "balance", "cashflow"})
DEFAULT_MAX_ROWS = 100_000
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_FIELD_CHARS = 256
RAW_MAX_CHARS = 120

# ISO 4217 list one, minus XTS (testing) and XXX (no currency), which are never the currency
# of a real statement. HRK, SLL, ZWL, CUC and ANG were withdrawn recently but still appear
# in historical statements, so they stay accepted.
CURRENCIES: frozenset[str] = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD
    BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP
    DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS
    INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD
    MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR
    PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS
    SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW
    UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XUA
    YER ZAR ZMW ZWG ZWL
    """.split()
)

_BINARY_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a zip archive (is it an .xlsx workbook?)"),
    (b"PK\x05\x06", "a zip archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Office document (is it an .xls workbook?)"),
    (b"%PDF-", "a PDF document"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
)

# re.ASCII: \d would otherwise accept digits from other scripts, which Decimal also parses.
_PERIOD_RE = re.compile(r"(\d{4})-(?:(0[1-9]|1[0-2])|[Qq]([1-4]))", re.ASCII)
_LINE_ITEM_RE = re.compile(r"[A-Za-z0-9_\- ]{1,64}")
_AMOUNT_RE = re.compile(r"-?\d{1,18}(?:\.\d{1,6})?", re.ASCII)
_SEPARATORS_RE = re.compile(r"[ _\-]+")
# Leading spaces are skipped because some spreadsheet importers trim them.
_FORMULA_RE = re.compile(r" *(?:[=+@\t\r]|-[^0-9])", re.ASCII)


# Why a file was refused, for programs (an HTTP status, a metric); ``reason`` is for people.
RejectKind = Literal["too_large", "not_text", "invalid"]


class CsvRejected(ValueError):
    """The whole file is refused; ``reason`` is a sentence meant for the uploader, ``kind``
    says which sort of problem it is: ``too_large`` (bytes or rows over a limit), ``not_text``
    (not UTF-8 CSV text at all) or ``invalid`` (text, but not a CSV of this format)."""

    def __init__(self, reason: str, kind: RejectKind = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind: RejectKind = kind


@dataclass(frozen=True)
class FinancialRow:
    period: str
    statement: str
    line_item: str
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str
    raw: str


@dataclass
class ParseResult:
    """``total_lines`` counts non-blank data records, so ``rows + errors == total_lines``."""

    rows: list[FinancialRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    currency: str | None = None
    total_lines: int = 0


@dataclass(frozen=True)
class _Record:
    """A record, the 1-based physical line it starts on and its span in the decoded text."""

    line: int
    start: int
    stop: int
    cells: list[str]


def precheck_csv(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
) -> None:
    """Raise CsvRejected for every file-level problem; row contents are not validated."""
    _text, records = _read_records(
        data, max_bytes=max_bytes, max_rows=max_rows, max_field_chars=max_field_chars
    )
    collections.deque(records, maxlen=0)


def parse_csv(
    data: bytes,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
    on_progress: Callable[[int, int], None] | None = None,
) -> ParseResult:
    """Validate every data row; blank lines (all cells empty or whitespace) are skipped.

    ``on_progress(done, total)`` is called at least every 1% of the rows and once at the end
    (``(0, 0)`` for a header-only file).
    """
    text, body = _read_records(
        data, max_bytes=max_bytes, max_rows=max_rows, max_field_chars=max_field_chars
    )
    records = list(body)
    total = len(records)
    result = ParseResult(total_lines=total)
    step = max(1, total // 100)
    for done, record in enumerate(records, start=1):
        parsed = _parse_record(record)
        if isinstance(parsed, str):
            result.errors.append(RowError(record.line, parsed, _raw(text, record)))
        elif result.currency is None or parsed.currency == result.currency:
            result.currency = parsed.currency
            result.rows.append(parsed)
        else:
            reason = (
                f"currency {parsed.currency} differs from the file's currency {result.currency}"
            )
            result.errors.append(RowError(record.line, reason, _raw(text, record)))
        if on_progress is not None and (done % step == 0 or done == total):
            on_progress(done, total)
    if on_progress is not None and total == 0:
        on_progress(0, 0)
    return result


def _read_records(
    data: bytes, *, max_bytes: int, max_rows: int, max_field_chars: int
) -> tuple[str, Iterator[_Record]]:
    """The decoded text and its non-blank data records, after the header's checks; the other
    file-level checks (field length, row limit) raise as the records are read.

    Lazily: a file of a million short lines is held as its text and at most ``max_rows``
    records, never as a list of its lines (about 60 bytes each, whatever their length).
    """
    if len(data) > max_bytes:
        raise CsvRejected(f"file is {len(data)} bytes; the limit is {max_bytes} bytes", "too_large")
    text = _decode(data)
    records = _records(text, max_field_chars)
    header = next(records, None)
    if header is None:
        raise CsvRejected("file is empty")
    if header.line != 1 or [c.strip().lower() for c in header.cells] != list(EXPECTED_HEADER):
        found = repr(_raw(text, header)) if header.line == 1 else "a blank line"
        raise CsvRejected(
            f"the first line must be the header {','.join(EXPECTED_HEADER)} (found {found})"
        )
    return text, _limited(records, max_rows)


def _limited(records: Iterator[_Record], max_rows: int) -> Iterator[_Record]:
    for count, record in enumerate(records):
        if count >= max_rows:
            raise CsvRejected(f"file has more than {max_rows} data rows", "too_large")
        yield record


def _decode(data: bytes) -> str:
    for magic, kind in _BINARY_MAGIC:
        if data.startswith(magic):
            raise CsvRejected(f"file looks like {kind}, not a CSV text file", "not_text")
    # UTF-32's little-endian mark starts with UTF-16's: test it first.
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        raise CsvRejected(
            "file looks like UTF-32 text, not UTF-8; export it as 'CSV UTF-8'", "not_text"
        )
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CsvRejected("file is UTF-16 text, not UTF-8; export it as 'CSV UTF-8'", "not_text")
    if b"\x00" in data:
        raise CsvRejected(
            "file contains NUL bytes: binary data, or UTF-16 or UTF-32 text without a "
            "byte-order mark; a CSV must be UTF-8 text (export it as 'CSV UTF-8')",
            "not_text",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvRejected(
            f"file is not UTF-8 text (invalid byte at offset {exc.start}); "
            "export it as 'CSV UTF-8'",
            "not_text",
        ) from None
    if not text.strip():
        raise CsvRejected("file is empty")
    return text


def _records(text: str, max_field_chars: int) -> Iterator[_Record]:
    """Yield non-blank CSV records with the 1-based physical line each starts on."""
    buffer = io.StringIO(text, newline="")
    # The reader takes one line at a time from the buffer, so after each record the buffer's
    # position is where the record ends.
    reader = csv.reader(buffer)
    consumed = offset = 0
    while True:
        start, begin = consumed + 1, offset
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error:
            # Only reachable for a field beyond the csv module's own size limit.
            raise CsvRejected(
                f"line {start}: a field is longer than {max_field_chars} characters"
                " (is a quote left open?)"
            ) from None
        consumed, offset = reader.line_num, buffer.tell()
        if not cells:
            continue  # an empty line
        longest = max(map(len, cells), default=0)
        if longest > max_field_chars:
            raise CsvRejected(
                f"line {start}: a field is {longest} characters long; the limit is "
                f"{max_field_chars} (is a quote left open?)"
            )
        if any(cell.strip() for cell in cells):
            yield _Record(start, begin, offset, cells)


def _raw(text: str, record: _Record) -> str:
    """The record's source text, cut to RAW_MAX_CHARS."""
    raw = text[record.start : record.stop].rstrip("\r\n")
    return raw if len(raw) <= RAW_MAX_CHARS else raw[: RAW_MAX_CHARS - 3] + "..."


def _parse_record(record: _Record) -> FinancialRow | str:
    """A valid row, or the reason it is invalid."""
    cells = record.cells
    if len(cells) != len(EXPECTED_HEADER):
        return f"expected {len(EXPECTED_HEADER)} columns, found {len(cells)}"
    problems = [
        f"{name} starts with {cell.lstrip(' ')[:1]!r} (spreadsheet formulas are refused)"
        for name, cell in zip(EXPECTED_HEADER, cells, strict=True)
        if _looks_like_formula(cell)
    ]
    if problems:
        return "; ".join(problems)
    period_raw, statement_raw, item_raw, amount_raw, currency_raw = (c.strip() for c in cells)
    period = _parse_period(period_raw)
    statement = statement_raw.lower()
    line_item = _parse_line_item(item_raw)
    amount = _parse_amount(amount_raw)
    if period is None:
        problems.append(f"period {_quote(period_raw)} is not YYYY-MM or YYYY-Qn")
    if statement not in STATEMENTS:
        problems.append(
            f"statement {_quote(statement_raw)} is not one of income, balance, cashflow"
        )
    if line_item is None:
        problems.append(
            f"line_item {_quote(item_raw)} must be 1-64 letters, digits, '_', '-' or spaces"
        )
    if amount is None:
        problems.append(
            f"amount {_quote(amount_raw)} is not a plain decimal "
            "(up to 18 digits and 6 decimals, no thousands separators or exponent)"
        )
    if currency_raw not in CURRENCIES:
        hint = " (use upper case)" if currency_raw.upper() in CURRENCIES else ""
        problems.append(f"currency {_quote(currency_raw)} is not an ISO 4217 code{hint}")
    if problems or period is None or line_item is None or amount is None:
        return "; ".join(problems)
    return FinancialRow(period, statement, line_item, amount, currency_raw)


def _quote(value: str) -> str:
    # Reasons travel in events; a 256-character cell is already in `raw`.
    return repr(value if len(value) <= 40 else value[:37] + "...")


def _looks_like_formula(cell: str) -> bool:
    return _FORMULA_RE.match(cell) is not None


def _parse_period(text: str) -> str | None:
    match = _PERIOD_RE.fullmatch(text)
    if match is None:
        return None
    year, month, quarter = match.groups()
    return f"{year}-{month}" if month else f"{year}-Q{quarter}"


def _parse_line_item(text: str) -> str | None:
    if not _LINE_ITEM_RE.fullmatch(text):
        return None
    name = _SEPARATORS_RE.sub("_", text.lower()).strip("_")
    return name or None


def _parse_amount(text: str) -> Decimal | None:
    if not _AMOUNT_RE.fullmatch(text):
        return None
    amount = Decimal(text)
    # "-0" and "-0.00" would otherwise print with a sign in reports.
    return abs(amount) if amount.is_zero() else amount
