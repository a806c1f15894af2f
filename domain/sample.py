"""Deterministic sample CSV files for demo seeding and tests."""

from __future__ import annotations

import csv
import io
import random
from decimal import Decimal

from domain.csv_import import EXPECTED_HEADER

__all__ = ["SAMPLE_CURRENCY", "SAMPLE_START", "rows_csv", "sample_csv"]

SAMPLE_CURRENCY = "USD"
SAMPLE_START = (2026, 1)

# Each kind is invalid on its own, whatever precedes it, so `bad_rows` always yields exactly
# that many row errors (a valid code such as EUR could instead become the file's currency).
_BAD_ROWS: tuple[tuple[str, ...], ...] = (
    ("2026-13", "income", "revenue", "1000.00", "USD"),
    ("{period}", "equity", "revenue", "1000.00", "USD"),
    ("{period}", "income", "revenue", "1,250.00", "USD"),
    ("{period}", "income", '=HYPERLINK("http://example.invalid","x")', "1.00", "USD"),
    ("{period}", "income", "revenue", "12.50", "XYZ"),
    ("{period}", "income", "revenue", "12.50"),
    ("{period}", "income", "revenue", "1e5", "USD"),
    ("2026-Q5", "income", "sales", "10.00", "USD"),
)

_LINE_ITEMS: tuple[tuple[str, str, float, float], ...] = (
    ("income", "revenue", 90_000, 140_000),
    ("income", "cogs", 35_000, 55_000),
    ("income", "sga", 15_000, 25_000),
    ("income", "research_and_development", 8_000, 14_000),
    ("income", "marketing", 4_000, 9_000),
    ("income", "interest", 1_200, 1_800),
    ("income", "tax", 2_000, 6_000),
    ("balance", "cash", 250_000, 400_000),
    ("balance", "accounts_receivable", 60_000, 90_000),
    ("balance", "inventory", 30_000, 50_000),
    ("balance", "accounts_payable", 20_000, 40_000),
    ("cashflow", "operating_cash_flow", 5_000, 30_000),
    ("cashflow", "capital_expenditure", 2_000, 12_000),
)


def sample_csv(periods: int = 8, *, seed: int = 7, bad_rows: int = 0) -> bytes:
    """Monthly income, balance and cash-flow rows from 2026-01 in USD, 7 rows per period."""
    if periods < 0 or bad_rows < 0:
        raise ValueError("periods and bad_rows must not be negative")
    rng = random.Random(seed)
    good: list[list[str]] = []
    revenue = rng.uniform(110_000, 130_000)
    cash = rng.uniform(250_000, 350_000)
    for index in range(periods):
        period = _month(index)
        revenue *= 1 + rng.uniform(-0.02, 0.06)
        cogs = revenue * rng.uniform(0.38, 0.44)
        opex = revenue * rng.uniform(0.25, 0.32)
        interest = rng.uniform(1_400, 1_600)
        tax = max(0.0, revenue - cogs - opex - interest) * 0.21
        net_income = revenue - cogs - opex - interest - tax
        operating_cash = net_income * rng.uniform(0.8, 1.2)
        cash += operating_cash
        for statement, item, value in (
            ("income", "revenue", revenue),
            ("income", "cogs", cogs),
            ("income", "opex", opex),
            ("income", "interest", interest),
            ("income", "tax", tax),
            ("balance", "cash", cash),
            ("cashflow", "operating_cash_flow", operating_cash),
        ):
            good.append([period, statement, item, _money(value), SAMPLE_CURRENCY])
    return _write(_spread(good, bad_rows))


def rows_csv(n_rows: int, *, bad_rows: int = 0, seed: int = 7) -> bytes:
    """Exactly ``n_rows`` data rows (``bad_rows`` of them invalid), cycling line items."""
    if not 0 <= bad_rows <= n_rows:
        raise ValueError("bad_rows must be between 0 and n_rows")
    rng = random.Random(seed)
    good: list[list[str]] = []
    for index in range(n_rows - bad_rows):
        statement, item, low, high = _LINE_ITEMS[index % len(_LINE_ITEMS)]
        # Wrap after a century so that any row count keeps four-digit years.
        period = _month((index // len(_LINE_ITEMS)) % 1200)
        good.append([period, statement, item, _money(rng.uniform(low, high)), SAMPLE_CURRENCY])
    return _write(_spread(good, bad_rows))


def _month(index: int) -> str:
    year, month = divmod(SAMPLE_START[0] * 12 + SAMPLE_START[1] - 1 + index, 12)
    return f"{year:04d}-{month + 1:02d}"


def _money(value: float) -> str:
    return str(Decimal(f"{value:.2f}"))


def _spread(good: list[list[str]], bad_count: int) -> list[list[str]]:
    """Insert ``bad_count`` invalid rows at evenly spaced positions among ``good``."""
    total = len(good) + bad_count
    positions = (
        {int((i + 0.5) * total / bad_count) for i in range(bad_count)} if bad_count else set()
    )
    result: list[list[str]] = []
    good_iter = iter(good)
    period = _month(0)
    bad_index = 0
    for position in range(total):
        if position in positions:
            template = _BAD_ROWS[bad_index % len(_BAD_ROWS)]
            result.append([cell.replace("{period}", period) for cell in template])
            bad_index += 1
        else:
            row = next(good_iter)
            period = row[0]
            result.append(row)
    return result


def _write(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPECTED_HEADER)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")
