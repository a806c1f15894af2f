from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from decimal import Decimal

import openpyxl
import pytest
from pypdf import PdfReader

from domain.csv_import import FinancialRow, parse_csv
from domain.metrics import Dashboard, build_dashboard
from domain.reports import (
    REPORT_CONTENT_TYPES,
    REPORT_EXTENSIONS,
    ReportFormat,
    build_report,
    neutralise_cell,
    neutralise_csv_cell,
)
from domain.sample import sample_csv

GENERATED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
DANGEROUS = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"-?\d+(\.\d+)?")


@pytest.fixture(scope="module")
def rows() -> list[FinancialRow]:
    return parse_csv(sample_csv(periods=4)).rows


@pytest.fixture(scope="module")
def dashboard(rows: list[FinancialRow]) -> Dashboard:
    return build_dashboard(rows, {"growth_rate": Decimal("0.05")})


def report(
    fmt: ReportFormat, rows: list[FinancialRow], dashboard: Dashboard, title: str = "Board pack"
) -> bytes:
    return build_report(fmt, title=title, rows=rows, dashboard=dashboard, generated_at=GENERATED)


def csv_cells(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


def section(cells: list[list[str]], name: str) -> list[list[str]]:
    start = cells.index([name]) + 1
    end = next((i for i in range(start, len(cells)) if not cells[i]), len(cells))
    return cells[start:end]


def test_csv_report_has_metrics_then_the_data_rows(
    rows: list[FinancialRow], dashboard: Dashboard
) -> None:
    cells = csv_cells(report("csv", rows, dashboard))
    assert cells[0] == ["Report", "Board pack"]
    assert cells[1] == ["Generated at", "2026-03-04 05:06:07 UTC"]
    metrics = section(cells, "Metrics")
    assert metrics[0] == ["metric", "label", "period", "value", "previous", "change"]
    revenue = dashboard.metric("revenue")
    assert metrics[1][:4] == ["revenue", "Revenue", "2026-04", f"{revenue.value:.2f}"]
    data = section(cells, "Data")
    assert data[0] == ["period", "statement", "line_item", "amount", "currency"]
    assert data[1:] == [
        [r.period, r.statement, r.line_item, str(r.amount), r.currency] for r in rows
    ]
    assert cells.index(["Metrics"]) < cells.index(["Data"])


def test_csv_report_can_be_imported_again(rows: list[FinancialRow], dashboard: Dashboard) -> None:
    cells = section(csv_cells(report("csv", rows, dashboard)), "Data")
    out = io.StringIO()
    csv.writer(out).writerows(cells)
    assert parse_csv(out.getvalue().encode()).rows == rows


def test_xlsx_report_has_metrics_and_data_sheets_with_numbers(
    rows: list[FinancialRow], dashboard: Dashboard
) -> None:
    book = openpyxl.load_workbook(io.BytesIO(report("xlsx", rows, dashboard)))
    assert {"Metrics", "Data"} <= set(book.sheetnames)
    data = [list(r) for r in book["Data"].iter_rows(values_only=True)]
    assert data[0] == ["period", "statement", "line_item", "amount", "currency"]
    assert len(data) == len(rows) + 1
    for got, row in zip(data[1:], rows, strict=True):
        assert isinstance(got[3], int | float)
        assert Decimal(str(got[3])) == row.amount
        assert got[:3] == [row.period, row.statement, row.line_item]
    metrics = {r[0]: r for r in book["Metrics"].iter_rows(values_only=True) if r[0]}
    revenue = dashboard.metric("revenue")
    assert metrics["revenue"][3] == pytest.approx(float(revenue.value or 0), abs=0.005)
    assert metrics["Report"][1] == "Board pack"


def test_pdf_report_shows_title_time_and_figures(
    rows: list[FinancialRow], dashboard: Dashboard
) -> None:
    data = report("pdf", rows, dashboard, title="Q1 <review> & outlook")
    assert data.startswith(b"%PDF")
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)
    assert "Q1 <review> & outlook" in text
    assert "2026-03-04 05:06:07 UTC" in text
    revenue = dashboard.metric("revenue").value
    net_income = dashboard.metric("net_income").value
    assert revenue is not None and net_income is not None
    assert f"{revenue:,.2f}" in text
    assert f"{net_income:,.2f}" in text
    for period in ("2026-01", "2026-02", "2026-03", "2026-04"):
        assert period in text


@pytest.mark.parametrize(
    "value",
    ["=1+1", "+41", "-2+3", "-foo", "@SUM(A1)", "\t=cmd", "\r=cmd", '=HYPERLINK("http://x")'],
)
def test_formula_looking_text_never_reaches_a_report_as_a_formula(value: str) -> None:
    # Rows built directly, bypassing the parser, as a caller with a bug might.
    rows = [
        FinancialRow("2026-01", "income", "revenue", Decimal(100), "USD"),
        FinancialRow("2026-01", value, value, Decimal("-5.5"), value),
    ]
    dashboard = build_dashboard(rows[:1], {})
    for cell in (c for line in csv_cells(report("csv", rows, dashboard, value)) for c in line):
        assert not cell.startswith(DANGEROUS) or NUMBER.fullmatch(cell), cell
    book = openpyxl.load_workbook(io.BytesIO(report("xlsx", rows, dashboard, value)))
    for sheet in book:
        for line in sheet.iter_rows():
            for cell in line:
                assert cell.data_type != "f", cell.value
                if isinstance(cell.value, str):
                    assert not cell.value.startswith(DANGEROUS), cell.value
    assert book["Data"].cell(3, 3).value.startswith("'")
    assert book["Data"].cell(3, 4).value == -5.5


def test_neutralise_cell_keeps_numbers_and_plain_text() -> None:
    assert neutralise_cell("-100.50") == "-100.50"
    assert neutralise_cell("revenue") == "revenue"
    assert neutralise_cell("a=b") == "a=b"
    assert neutralise_cell("-x") == "'-x"
    assert neutralise_cell("=x") == "'=x"


def test_empty_dashboard_and_control_characters_still_render() -> None:
    empty = build_dashboard([], {})
    formats: tuple[ReportFormat, ...] = ("csv", "xlsx", "pdf")
    for fmt in formats:
        assert report(fmt, [], empty, title="bell\x07 title")


def test_progress_is_reported_in_order_up_to_100(
    rows: list[FinancialRow], dashboard: Dashboard
) -> None:
    formats: tuple[ReportFormat, ...] = ("csv", "xlsx", "pdf")
    for fmt in formats:
        seen: list[int] = []
        build_report(
            fmt,
            title="t",
            rows=rows,
            dashboard=dashboard,
            generated_at=GENERATED,
            progress=seen.append,
        )
        assert seen[0] == 0 and seen[-1] == 100 and seen == sorted(seen)
        assert len(seen) >= 3


def test_unknown_format_is_refused(rows: list[FinancialRow], dashboard: Dashboard) -> None:
    with pytest.raises(ValueError, match="unknown report format"):
        report("docx", rows, dashboard)  # type: ignore[arg-type]


def test_content_types_and_extensions_cover_every_format() -> None:
    assert set(REPORT_CONTENT_TYPES) == set(REPORT_EXTENSIONS) == {"csv", "xlsx", "pdf"}
    assert REPORT_CONTENT_TYPES["pdf"] == "application/pdf"
    assert REPORT_EXTENSIONS["xlsx"] == ".xlsx"


@pytest.mark.parametrize(
    ("given", "made"),
    [
        ("q3;=1+1;@SUM(1).csv", "q3;'=1+1;'@SUM(1).csv"),
        ("a, =b", "a, '=b"),
        ("a\t+b", "a\t'+b"),
        (" =x", " '=x"),
        ("=a;b", "'=a;b"),
        ("-100.50", "-100.50"),
        ("plain; text, here", "plain; text, here"),
    ],
)
def test_neutralise_csv_cell_covers_every_separator_split_part(given: str, made: str) -> None:
    assert neutralise_csv_cell(given) == made


def test_the_period_table_lists_every_charts_periods_once_in_the_order_first_seen() -> None:
    from domain.metrics import CHART_NAMES, ChartSeries
    from domain.reports import _period_rows

    first, second = CHART_NAMES[0], CHART_NAMES[1]
    dashboard = Dashboard(
        charts=[
            ChartSeries(first, first, [("2026-02", Decimal(1)), ("2026-01", Decimal(2))]),
            ChartSeries(second, second, [("2026-01", Decimal(3)), ("2026-03", Decimal(4))]),
        ]
    )
    rows = _period_rows(dashboard)
    assert [row[0] for row in rows] == ["2026-02", "2026-01", "2026-03"]
    assert rows[1][1:3] == [Decimal(2), Decimal(3)]
    assert rows[2][1:3] == [None, Decimal(4)]
