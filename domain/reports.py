"""Report files (CSV, XLSX, PDF) built from parsed rows and a computed dashboard.

Every text cell written to CSV or XLSX goes through :func:`neutralise_cell` so that a
spreadsheet never evaluates it as a formula, even if a caller bypassed the parser.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal
from xml.sax.saxutils import escape

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from domain.csv_import import EXPECTED_HEADER, FinancialRow
from domain.metrics import CHART_NAMES, METRIC_LABELS, METRIC_UNITS, Dashboard, format_decimal

__all__ = [
    "REPORT_CONTENT_TYPES",
    "REPORT_EXTENSIONS",
    "ReportFormat",
    "build_report",
    "neutralise_cell",
    "neutralise_csv_cell",
]

ReportFormat = Literal["csv", "xlsx", "pdf"]

REPORT_CONTENT_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}
REPORT_EXTENSIONS: dict[str, str] = {"csv": ".csv", "xlsx": ".xlsx", "pdf": ".pdf"}

Progress = Callable[[int], None]

_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?", re.ASCII)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_METRIC_HEADER = ["metric", "label", "period", "value", "previous", "change"]
_PERIOD_HEADER = ["period", *CHART_NAMES]
_NUMBER_FORMATS = {"money": "#,##0.00", "ratio": "0.00%", "amount": "#,##0.00####"}


def neutralise_cell(text: str) -> str:
    """Prefix ``'`` to text a spreadsheet would read as a formula; numbers pass unchanged."""
    if text.startswith(_FORMULA_STARTS) and not _NUMBER_RE.fullmatch(text):
        return "'" + text
    return text


# Where a spreadsheet may split a CSV field: a semicolon locale splits on ";", some imports
# on tabs. Every part after such a split must be as harmless as the whole field.
_CSV_SEPARATORS = re.compile(r"([,;\t])")


def neutralise_csv_cell(text: str) -> str:
    """:func:`neutralise_cell` for the field and for every part a ``,``/``;``/tab split
    would make of it (``q3;=1+1`` becomes ``q3;'=1+1``); parts are judged without the spaces
    a spreadsheet may trim."""
    pieces = _CSV_SEPARATORS.split(text)
    for i in range(0, len(pieces), 2):  # the odd indexes hold the separators
        part = pieces[i]
        stripped = part.lstrip(" ")
        if neutralise_cell(stripped) != stripped:
            pieces[i] = part[: len(part) - len(stripped)] + "'" + stripped
    return neutralise_cell("".join(pieces))


def build_report(
    fmt: ReportFormat,
    *,
    title: str,
    rows: Sequence[FinancialRow],
    dashboard: Dashboard,
    generated_at: datetime,
    progress: Progress | None = None,
) -> bytes:
    """Render a report; ``progress`` receives a few increasing percentages ending at 100."""
    builders = {"csv": _build_csv, "xlsx": _build_xlsx, "pdf": _build_pdf}
    builder = builders.get(fmt)
    if builder is None:
        raise ValueError(f"unknown report format {fmt!r}; expected one of csv, xlsx, pdf")
    notify: Progress = progress if progress is not None else _ignore
    notify(0)
    data = builder(title, rows, dashboard, generated_at, notify)
    notify(100)
    return data


def _ignore(_percent: int) -> None:
    return None


def _tracked(
    rows: Sequence[FinancialRow], notify: Progress, start: int, end: int
) -> Iterator[FinancialRow]:
    """Yield rows, reporting progress from ``start`` to ``end`` about every tenth of them."""
    step = max(1, len(rows) // 10)
    for index, row in enumerate(rows, start=1):
        yield row
        if index % step == 0:
            notify(start + (end - start) * index // len(rows))


def _timestamp(generated_at: datetime) -> str:
    if generated_at.tzinfo is not None:
        generated_at = generated_at.astimezone(UTC)
    return generated_at.strftime("%Y-%m-%d %H:%M:%S UTC")


def _period_rows(dashboard: Dashboard) -> list[list[str | Decimal | None]]:
    series = {chart.name: dict(chart.points) for chart in dashboard.charts}
    # Every chart's periods, each once, in the order first seen (a dict: linear in the periods).
    periods = list(dict.fromkeys(p for chart in dashboard.charts for p, _ in chart.points))
    return [[p, *(series.get(name, {}).get(p) for name in CHART_NAMES)] for p in periods]


def _rounded(value: Decimal, unit: Literal["money", "ratio"]) -> Decimal:
    return Decimal(format_decimal(value, unit) or "0")


def _text(value: str | Decimal | None, unit: Literal["money", "ratio"] = "money") -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format_decimal(value, unit) or ""
    return neutralise_csv_cell(value)


def _build_csv(
    title: str,
    rows: Sequence[FinancialRow],
    dashboard: Dashboard,
    generated_at: datetime,
    notify: Progress,
) -> bytes:
    out = io.StringIO()
    # Every field quoted: a reader splitting on another separator still sees one field.
    writer = csv.writer(out, quoting=csv.QUOTE_ALL)
    writer.writerow([_text("Report"), _text(title)])
    writer.writerow([_text("Generated at"), _text(_timestamp(generated_at))])
    writer.writerow([_text("Currency"), _text(dashboard.currency)])
    writer.writerow([])
    writer.writerow(["Metrics"])
    writer.writerow(_METRIC_HEADER)
    for card in dashboard.metrics:
        unit = METRIC_UNITS.get(card.name, "money")
        writer.writerow(
            [
                _text(card.name),
                _text(card.label),
                _text(card.period),
                _text(card.value, unit),
                _text(card.previous, unit),
                _text(card.change, "ratio"),
            ]
        )
    writer.writerow([])
    writer.writerow(["Periods"])
    writer.writerow(_PERIOD_HEADER)
    writer.writerows([_text(cell) for cell in row] for row in _period_rows(dashboard))
    notify(30)
    writer.writerow([])
    writer.writerow(["Data"])
    writer.writerow(EXPECTED_HEADER)
    for row in _tracked(rows, notify, 30, 90):
        writer.writerow(
            [
                _text(row.period),
                _text(row.statement),
                _text(row.line_item),
                neutralise_cell(format(row.amount, "f")),
                _text(row.currency),
            ]
        )
    # The BOM makes Excel read the file as UTF-8 instead of the local code page.
    return out.getvalue().encode("utf-8-sig")


def _xlsx_text(value: str) -> str:
    return neutralise_cell(ILLEGAL_CHARACTERS_RE.sub("", value))


def _xlsx_cell(
    sheet: object,
    value: str | Decimal | None,
    unit: Literal["money", "ratio", "amount"] | None = None,
) -> WriteOnlyCell:
    if isinstance(value, str):
        return WriteOnlyCell(sheet, value=_xlsx_text(value))
    if value is not None and unit in ("money", "ratio"):
        value = _rounded(value, "ratio" if unit == "ratio" else "money")
    cell = WriteOnlyCell(sheet, value=value)
    if unit is not None:
        cell.number_format = _NUMBER_FORMATS[unit]
    return cell


def _build_xlsx(
    title: str,
    rows: Sequence[FinancialRow],
    dashboard: Dashboard,
    generated_at: datetime,
    notify: Progress,
) -> bytes:
    # Write-only mode streams rows, keeping memory flat for 100k-row files.
    workbook = Workbook(write_only=True)
    workbook.properties.title = _xlsx_text(title)
    workbook.properties.creator = "FinVision Realtime"

    metrics = workbook.create_sheet("Metrics")
    for label, text in (
        ("Report", title),
        ("Generated at", _timestamp(generated_at)),
        ("Currency", dashboard.currency),
    ):
        metrics.append([_xlsx_cell(metrics, label), _xlsx_cell(metrics, text)])
    metrics.append([])
    metrics.append([_xlsx_cell(metrics, heading) for heading in _METRIC_HEADER])
    for card in dashboard.metrics:
        unit = METRIC_UNITS.get(card.name, "money")
        metrics.append(
            [
                _xlsx_cell(metrics, card.name),
                _xlsx_cell(metrics, card.label),
                _xlsx_cell(metrics, card.period),
                _xlsx_cell(metrics, card.value, unit),
                _xlsx_cell(metrics, card.previous, unit),
                _xlsx_cell(metrics, card.change, "ratio"),
            ]
        )

    periods = workbook.create_sheet("Periods")
    periods.append([_xlsx_cell(periods, heading) for heading in _PERIOD_HEADER])
    for period_row in _period_rows(dashboard):
        periods.append([_xlsx_cell(periods, value, "money") for value in period_row])
    notify(30)

    data = workbook.create_sheet("Data")
    data.append([_xlsx_cell(data, heading) for heading in EXPECTED_HEADER])
    for row in _tracked(rows, notify, 30, 90):
        # Plain strings for the text cells: a WriteOnlyCell per cell costs a third more time.
        data.append(
            [
                _xlsx_text(row.period),
                _xlsx_text(row.statement),
                _xlsx_text(row.line_item),
                _xlsx_cell(data, row.amount, "amount"),
                _xlsx_text(row.currency),
            ]
        )
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def _pdf_value(value: str | Decimal | None, unit: Literal["money", "ratio"]) -> str:
    if not isinstance(value, Decimal):
        return value or "-"
    if unit == "ratio":
        return f"{_rounded(value * 100, 'money'):,.2f}%"
    return f"{_rounded(value, 'money'):,.2f}"


def _build_pdf(
    title: str,
    rows: Sequence[FinancialRow],
    dashboard: Dashboard,
    generated_at: datetime,
    notify: Progress,
) -> bytes:
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out, pagesize=A4, title=title, author="FinVision Realtime", invariant=True
    )
    styles = getSampleStyleSheet()
    grid = TableStyle(
        [
            ("GRID", (0, 0), (-1, -1), 0.5, colors.grey),
            ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey),
            ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
            ("ALIGN", (1, 1), (-1, -1), "RIGHT"),
        ]
    )
    metric_table = [["Metric", "Period", "Value", "Previous", "Change"]]
    for card in dashboard.metrics:
        unit = METRIC_UNITS.get(card.name, "money")
        metric_table.append(
            [
                card.label,
                card.period or "-",
                _pdf_value(card.value, unit),
                _pdf_value(card.previous, unit),
                _pdf_value(card.change, "ratio"),
            ]
        )
    period_table = [["Period", *(METRIC_LABELS[name] for name in CHART_NAMES)]]
    for period, *values in _period_rows(dashboard):
        period_table.append([str(period), *(_pdf_value(v, "money") for v in values)])
    currency = escape(dashboard.currency or "none")
    story = [
        Paragraph(escape(title), styles["Title"]),
        Paragraph(f"Generated at {_timestamp(generated_at)}", styles["Normal"]),
        Paragraph(f"Currency: {currency}; {len(rows)} data rows", styles["Normal"]),
        Spacer(1, 12),
        Paragraph("Metrics (latest period)", styles["Heading2"]),
        Table(metric_table, style=grid, repeatRows=1),
        Spacer(1, 12),
        Paragraph("Per period", styles["Heading2"]),
        Table(period_table, style=grid, repeatRows=1),
    ]
    notify(30)
    doc.build(story)
    notify(90)
    return out.getvalue()
