from __future__ import annotations

import gzip
import io
import zipfile
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.csv_import import (
    CsvRejected,
    FinancialRow,
    RowError,
    parse_csv,
    precheck_csv,
)

HEADER = "period,statement,line_item,amount,currency"


def make_csv(*lines: str, header: str = HEADER, newline: str = "\n") -> bytes:
    return (newline.join([header, *lines]) + newline).encode("utf-8")


def reject_reason(data: bytes, *, max_rows: int = 100_000, max_bytes: int = 1_000_000) -> str:
    """The reason parse_csv gives, checked to be the same as precheck_csv's."""
    with pytest.raises(CsvRejected) as caught:
        parse_csv(data, max_rows=max_rows, max_bytes=max_bytes)
    reason = caught.value.reason
    with pytest.raises(CsvRejected) as again:
        precheck_csv(data, max_rows=max_rows, max_bytes=max_bytes)
    assert again.value.reason == reason
    return reason


def only_error(line: str) -> RowError:
    result = parse_csv(make_csv("2026-01,income,revenue,1.00,USD", line))
    assert len(result.errors) == 1, result.errors
    return result.errors[0]


def test_valid_file_is_parsed_and_normalised() -> None:
    data = make_csv(
        "2026-01,income,Gross Profit,1234.56,USD",
        " 2026-q2 , Balance ,Cash-At Bank , -100.5 ,USD",
        "2025-12,cashflow,capex,0,USD",
    )
    result = parse_csv(data)
    assert result.errors == []
    assert result.currency == "USD"
    assert result.total_lines == 3
    assert result.rows == [
        FinancialRow("2026-01", "income", "gross_profit", Decimal("1234.56"), "USD"),
        FinancialRow("2026-Q2", "balance", "cash_at_bank", Decimal("-100.5"), "USD"),
        FinancialRow("2025-12", "cashflow", "capex", Decimal("0"), "USD"),
    ]


def test_header_is_case_insensitive_trimmed_and_may_carry_a_bom() -> None:
    header = " Period , STATEMENT,Line_Item,amount ,Currency"
    data = b"\xef\xbb\xbf" + make_csv("2026-01,income,revenue,10,EUR", header=header)
    result = parse_csv(data)
    assert [row.amount for row in result.rows] == [Decimal(10)]
    assert result.currency == "EUR"


def test_crlf_files_and_header_only_files_are_accepted() -> None:
    result = parse_csv(make_csv("2026-01,income,revenue,10,USD", newline="\r\n"))
    assert len(result.rows) == 1 and result.errors == []
    empty = parse_csv(make_csv())
    assert (empty.rows, empty.errors, empty.currency, empty.total_lines) == ([], [], None, 0)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty"),
        (b"\xef\xbb\xbf \r\n\n", "empty"),
        ("period;amount\n".encode("utf-16"), "UTF-16"),
        (
            "period,statement,line_item,amount,currency\n2026-01,income,Umsätze,1,EUR\n".encode(
                "latin-1"
            ),
            "not UTF-8",
        ),
        (b"period,statement\x00,line_item,amount,currency\n", "NUL"),
        (gzip.compress(make_csv()), "gzip"),
        (b"%PDF-1.7\n...", "PDF"),
    ],
)
def test_file_level_rejections(data: bytes, expected: str) -> None:
    assert expected in reject_reason(data)


def test_zip_upload_such_as_xlsx_is_rejected() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data.csv", make_csv())
    assert "zip" in reject_reason(buffer.getvalue())


@pytest.mark.parametrize(
    "header",
    [
        "period,statement,line_item,amount",
        "period,statement,line_item,amount,currency,extra",
        "statement,period,line_item,amount,currency",
        "2026-01,income,revenue,1,USD",
    ],
)
def test_wrong_header_names_the_expected_one(header: str) -> None:
    reason = reject_reason(make_csv("2026-01,income,revenue,1,USD", header=header))
    assert HEADER in reason


def test_header_must_be_on_the_first_line() -> None:
    assert "blank line" in reject_reason(b"\n" + make_csv())


def test_too_many_rows_is_rejected_but_blank_lines_do_not_count() -> None:
    rows = ["2026-01,income,revenue,1,USD"] * 3
    assert "more than 2 data rows" in reject_reason(make_csv(*rows), max_rows=2)
    assert len(parse_csv(make_csv(*rows, "", ",,,,"), max_rows=3).rows) == 3


def test_too_big_is_rejected() -> None:
    data = make_csv("2026-01,income,revenue,1,USD")
    assert f"limit is {len(data) - 1} bytes" in reject_reason(data, max_bytes=len(data) - 1)
    assert len(parse_csv(data, max_bytes=len(data)).rows) == 1


def test_overlong_field_is_rejected_with_its_line() -> None:
    data = make_csv("2026-01,income,revenue,1,USD", "2026-01,income," + "x" * 300 + ",1,USD")
    reason = reject_reason(data)
    assert "line 3" in reason and "256" in reason
    assert "line 2" in reject_reason(make_csv('2026-01,"unclosed,1,USD', *["a,b"] * 100))


def test_row_errors_carry_file_line_numbers() -> None:
    data = make_csv(
        "2026-01,income,revenue,100,USD",  # line 2
        "2026-13,income,revenue,100,USD",  # line 3
        "",  # line 4, blank
        '2026-02,income,"multi',  # line 5, a quoted field spans two lines
        'line",100,USD',
        "2026-02,income,revenue,abc,USD",  # line 7
    )
    result = parse_csv(data)
    assert [(e.line, e.raw) for e in result.errors] == [
        (3, "2026-13,income,revenue,100,USD"),
        (5, '2026-02,income,"multi\nline",100,USD'),
        (7, "2026-02,income,revenue,abc,USD"),
    ]
    assert result.total_lines == 4


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("2026-13,income,revenue,1,USD", "period"),
        ("2026-00,income,revenue,1,USD", "period"),
        ("2026-Q5,income,revenue,1,USD", "period"),
        ("26-01,income,revenue,1,USD", "period"),
        ("2026-1,income,revenue,1,USD", "period"),
        ("2026-01,equity,revenue,1,USD", "statement"),
        ("2026-01,income,rev$nue,1,USD", "line_item"),
        ("2026-01,income," + "x" * 65 + ",1,USD", "line_item"),
        ("2026-01,income,___,1,USD", "line_item"),
        ('2026-01,income,revenue,"1,000",USD', "amount"),
        ("2026-01,income,revenue,1e5,USD", "amount"),
        ("2026-01,income,revenue,NaN,USD", "amount"),
        ("2026-01,income,revenue,Infinity,USD", "amount"),
        ("2026-01,income,revenue," + "9" * 19 + ",USD", "amount"),
        ("2026-01,income,revenue,1.1234567,USD", "amount"),
        ("2026-01,income,revenue,,USD", "amount"),
        ("2026-01,income,revenue,٣,USD", "amount"),
        ("2026-01,income,revenue,1,XYZ", "currency"),
        ("2026-01,income,revenue,1,usd", "upper case"),
        ("2026-01,income,revenue,1,US", "currency"),
        ("2026-01,income,revenue,1", "expected 5 columns, found 4"),
        ("2026-01,income,revenue,1,USD,extra", "expected 5 columns, found 6"),
    ],
)
def test_bad_rows_become_row_errors(line: str, expected: str) -> None:
    error = only_error(line)
    assert error.line == 3
    assert expected in error.reason


def test_largest_allowed_amount_is_accepted() -> None:
    amount = "-" + "9" * 18 + "." + "9" * 6
    result = parse_csv(make_csv(f"2026-01,income,revenue,{amount},USD"))
    assert result.rows[0].amount == Decimal(amount)


@pytest.mark.parametrize(
    "cell",
    ["=1+1", "+1", "@SUM(A1)", "\t=1", "\r=1", "-foo", " =cmd", '=HYPERLINK("x")', "-=1"],
)
def test_formula_looking_cells_are_refused(cell: str) -> None:
    quoted = '"' + cell.replace('"', '""') + '"'
    error = only_error(f"2026-01,income,{quoted},1,USD")
    assert "formula" in error.reason
    error = only_error(f"2026-01,income,revenue,{quoted},USD")
    assert "formula" in error.reason


def test_negative_amount_is_not_mistaken_for_a_formula() -> None:
    result = parse_csv(make_csv("2026-01,income,revenue,-100.5,USD"))
    assert result.rows[0].amount == Decimal("-100.5")


def test_first_good_rows_currency_wins() -> None:
    data = make_csv(
        "2026-01,income,revenue,1,XYZ",
        "2026-01,income,revenue,1,EUR",
        "2026-02,income,revenue,2,USD",
        "2026-03,income,revenue,3,EUR",
    )
    result = parse_csv(data)
    assert result.currency == "EUR"
    assert [row.amount for row in result.rows] == [Decimal(1), Decimal(3)]
    assert [(e.line, e.reason) for e in result.errors][1] == (
        4,
        "currency USD differs from the file's currency EUR",
    )


def test_raw_is_truncated() -> None:
    line = "2026-01,income,revenue," + "1" * 200 + ",USD"
    error = only_error(line)
    assert len(error.raw) <= 120 and error.raw.startswith("2026-01,income,revenue,111")
    assert len(error.reason) < 300


def test_progress_reaches_the_end_at_least_every_percent() -> None:
    calls: list[tuple[int, int]] = []
    parse_csv(
        make_csv(*["2026-01,income,revenue,1,USD"] * 250),
        on_progress=lambda d, t: calls.append((d, t)),
    )
    assert calls[-1] == (250, 250)
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert max(b - a for a, b in zip([0, *done], done, strict=False)) <= 2


def test_progress_is_reported_for_a_header_only_file() -> None:
    calls: list[tuple[int, int]] = []
    parse_csv(make_csv(), on_progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 0)]


def test_precheck_accepts_bad_rows() -> None:
    precheck_csv(make_csv("2026-13,nonsense,=1,abc,XYZ"), max_bytes=1000, max_rows=1)


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_ever_raise_csv_rejected(data: bytes) -> None:
    for candidate in (data, make_csv() + data):
        try:
            result = parse_csv(candidate, max_field_chars=64)
        except CsvRejected as exc:
            assert exc.reason
        else:
            assert len(result.rows) + len(result.errors) == result.total_lines


CELL = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters='\x00",\r\n'),
    max_size=12,
)
GOOD_CELLS = st.tuples(
    st.sampled_from(["2026-01", "2026-Q4", "1999-12", "2026-13"]),
    st.sampled_from(["income", "balance", "Cashflow", "other"]),
    st.sampled_from(["revenue", "Gross Profit", "=x", "-x"]),
    st.sampled_from(["1", "-2.50", "1,5", "+3", "1e3"]),
    st.sampled_from(["USD", "EUR", "usd"]),
).map(",".join)
LINE = st.one_of(GOOD_CELLS, st.lists(CELL, max_size=7).map(",".join))


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(LINE, max_size=30))
def test_every_non_blank_line_is_a_row_or_an_error(lines: list[str]) -> None:
    result = parse_csv(make_csv(*lines))
    data_lines = [
        number
        for number, line in enumerate(lines, start=2)
        if any(cell.strip() for cell in line.split(","))
    ]
    assert len(result.rows) + len(result.errors) == len(data_lines) == result.total_lines
    assert {e.line for e in result.errors} <= set(data_lines)
    assert all(len(e.raw) <= 120 for e in result.errors)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (make_csv("2026-01,income,revenue,1,USD") * 40, "too_large"),
        (make_csv(*["2026-01,income,revenue,1,USD"] * 3), "too_large"),
        (b"%PDF-1.7 ...", "not_text"),
        ("\ufeffperiod".encode("utf-16"), "not_text"),
        (b"period\x00,statement", "not_text"),
        (b"\xff\xfe\x00\x00p\x00\x00\x00", "not_text"),
        (b"caf\xe9,1\n", "not_text"),
        (b"", "invalid"),
        (b"date,amount\n2026-01,1\n", "invalid"),
    ],
)
def test_a_refusal_names_its_kind(data: bytes, kind: str) -> None:
    # The upload route answers 413, 415 or 422 from the kind alone, never from the wording.
    with pytest.raises(CsvRejected) as caught:
        precheck_csv(data, max_rows=2, max_bytes=1000)
    assert caught.value.kind == kind, caught.value.reason
