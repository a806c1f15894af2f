"""Monthly, quarterly and yearly figures of one file (``build_dashboard(..., period)``)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.csv_import import FinancialRow, parse_csv
from domain.metrics import PERIODS, build_dashboard, next_period, period_of, period_sort_key

# 2025-12 and 2026-01..05 monthly; 2026-Q3 reported as a quarter, and 2026-07 too (a month of a
# reported quarter: left out of the added-up views). Revenue r, cogs r/2, nothing else.
ROWS = [
    ("2025-12", 100),
    ("2026-01", 10),
    ("2026-02", 20),
    ("2026-03", 30),
    ("2026-04", 40),
    ("2026-05", 50),
    ("2026-Q3", 700),
    ("2026-07", 9999),
]


def csv_rows() -> list[FinancialRow]:
    lines = ["period,statement,line_item,amount,currency"]
    for period, revenue in ROWS:
        lines.append(f"{period},income,revenue,{revenue},EUR")
        lines.append(f"{period},income,cogs,{Decimal(revenue) / 2},EUR")
    lines.append("2026-02,balance,cash,123456,EUR")
    result = parse_csv("\n".join(lines).encode())
    assert result.errors == []
    return result.rows


def points(period: str, name: str = "revenue") -> list[tuple[str, str | None]]:
    chart = {c["name"]: c for c in build_dashboard(csv_rows(), {}, period).to_json()["charts"]}
    return [(p["period"], p["value"]) for p in chart[name]["points"]]


def card(period: str, name: str, **params: str) -> dict[str, str | None]:
    parameters = {k: Decimal(v) for k, v in params.items()}
    dashboard = build_dashboard(csv_rows(), parameters, period).to_json()
    found: dict[str, str | None] = next(m for m in dashboard["metrics"] if m["name"] == name)
    return found


def test_month_is_the_default_and_keeps_the_rows_own_periods() -> None:
    assert build_dashboard(csv_rows(), {}) == build_dashboard(csv_rows(), {}, "month")
    assert [p for p, _ in points("month")] == [
        "2025-12",
        "2026-01",
        "2026-02",
        "2026-03",
        "2026-04",
        "2026-05",
        "2026-07",
        "2026-Q3",
    ]


def test_quarters_add_their_months_up_and_a_reported_quarter_wins() -> None:
    assert points("quarter") == [
        ("2025-Q4", "100.00"),
        ("2026-Q1", "60.00"),
        ("2026-Q2", "90.00"),
        ("2026-Q3", "700.00"),  # the 2026-07 row is inside a reported quarter: not added
    ]
    assert points("quarter", "gross_profit")[1] == ("2026-Q1", "30.00")


def test_years_add_the_quarters_up() -> None:
    assert points("year") == [("2025", "100.00"), ("2026", "850.00")]
    revenue = card("year", "revenue")
    assert (revenue["period"], revenue["value"], revenue["previous"]) == (
        "2026",
        "850.00",
        "100.00",
    )
    assert revenue["change"] == "7.5000"
    assert card("year", "gross_margin")["value"] == "0.5000"


def test_the_latest_quarter_compares_with_the_one_before() -> None:
    revenue = card("quarter", "revenue")
    assert (revenue["period"], revenue["value"], revenue["previous"]) == (
        "2026-Q3",
        "700.00",
        "90.00",
    )


def test_parameters_apply_to_the_added_up_figures() -> None:
    # Tax on the year's operating income (425), not month by month.
    assert card("year", "net_income", tax_rate="0.2")["value"] == "340.00"
    forecast = card("year", "forecast_revenue", growth_rate="0.1")
    assert (forecast["period"], forecast["value"]) == ("2027", "935.00")
    assert card("quarter", "forecast_revenue", growth_rate="0")["period"] == "2026-Q4"


def test_an_unknown_period_is_refused() -> None:
    with pytest.raises(ValueError, match="month, quarter, year"):
        build_dashboard(csv_rows(), {}, "week")
    assert PERIODS == ("month", "quarter", "year")


def test_period_labels_and_order() -> None:
    assert period_of("2026-05", "quarter") == "2026-Q2"
    assert period_of("2026-12", "year") == "2026"
    assert period_of("2026-Q4", "year") == "2026"
    assert period_of("2026-Q4", "month") == "2026-Q4"
    assert period_sort_key("2026") == (2026, 1, 12)
    assert sorted(["2027", "2026-Q4", "2026"], key=period_sort_key) == ["2026", "2026-Q4", "2027"]
    assert next_period("2026") == "2027"
    assert next_period("2026-Q4") == "2027-Q1"


def test_an_empty_file_has_every_card_in_every_view() -> None:
    for period in PERIODS:
        dashboard = build_dashboard([], {}, period)
        assert len(dashboard.metrics) == 8
        assert all(series.points == [] for series in dashboard.charts)
