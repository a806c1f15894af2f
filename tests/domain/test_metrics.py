from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest

from domain.csv_import import FinancialRow, parse_csv
from domain.metrics import (
    PARAMETERS,
    ChartSeries,
    Dashboard,
    MetricCard,
    affected_metrics,
    build_dashboard,
    chart_to_json,
    diff_dashboards,
    metric_to_json,
    next_period,
    period_sort_key,
    validate_parameter,
)

D = Decimal

# Two months, hand-computed:
#   2026-01: revenue 1000, cogs 400, opex 200+100, interest 50, tax 50
#            gross 600 (60%), operating 300 (30%), net 200 (20%)
#   2026-02: revenue 1000+200 (sales), cogs 480, opex 360, interest 50, tax 60
#            gross 720 (60%), operating 360 (30%), net 250 (20.83%)
SMALL_FILE = b"""period,statement,line_item,amount,currency
2026-01,income,revenue,1000,USD
2026-01,income,cogs,400,USD
2026-01,income,sga,200,USD
2026-01,income,opex,100,USD
2026-01,income,interest,50,USD
2026-01,income,tax,50,USD
2026-01,balance,cash,99999,USD
2026-02,income,Revenue,1000,USD
2026-02,income,sales,200,USD
2026-02,income,cost_of_goods_sold,480,USD
2026-02,income,operating expenses,360,USD
2026-02,income,interest,50,USD
2026-02,income,taxes,60,USD
2026-02,income,miscellaneous,12345,USD
2026-03,cashflow,operating_cash_flow,5,USD
"""


@pytest.fixture(scope="module")
def rows() -> list[FinancialRow]:
    result = parse_csv(SMALL_FILE)
    assert result.errors == []
    return result.rows


def values(dashboard: Dashboard) -> dict[str, str | None]:
    return {card["name"]: card["value"] for card in dashboard.to_json()["metrics"]}


def test_metrics_of_the_latest_period(rows: list[FinancialRow]) -> None:
    dashboard = build_dashboard(rows, {})
    assert dashboard.currency == "USD"
    assert {card.period for card in dashboard.metrics} == {"2026-02", "2026-03"}
    assert values(dashboard) == {
        "revenue": "1200.00",
        "gross_profit": "720.00",
        "gross_margin": "0.6000",
        "operating_income": "360.00",
        "operating_margin": "0.3000",
        "net_income": "250.00",
        "net_margin": "0.2083",
        "forecast_revenue": None,
    }
    revenue = dashboard.metric("revenue")
    assert (revenue.previous, revenue.change) == (D(1000), D("0.2"))
    net = dashboard.metric("net_income")
    assert (net.previous, net.change) == (D(200), D("0.25"))


def test_charts_cover_every_period_with_income_rows(rows: list[FinancialRow]) -> None:
    charts = {series.name: series for series in build_dashboard(rows, {}).charts}
    assert list(charts) == ["revenue", "gross_profit", "operating_income", "net_income"]
    assert charts["revenue"].points == [("2026-01", D(1000)), ("2026-02", D(1200))]
    assert charts["net_income"].points == [("2026-01", D(200)), ("2026-02", D(250))]


def test_tax_rate_replaces_the_files_tax_lines(rows: list[FinancialRow]) -> None:
    dashboard = build_dashboard(rows, {"tax_rate": D("0.25")})
    # (360 - 50) * 0.25 = 77.5 of tax instead of 60.
    assert values(dashboard)["net_income"] == "232.50"
    assert values(dashboard)["operating_income"] == "360.00"
    assert build_dashboard(rows, {"tax_rate": D(0)}).metric("net_income").value == D(310)


def test_tax_is_never_negative_on_a_loss() -> None:
    loss = [
        FinancialRow("2026-01", "income", "revenue", D(100), "USD"),
        FinancialRow("2026-01", "income", "opex", D(300), "USD"),
    ]
    assert build_dashboard(loss, {"tax_rate": D("0.3")}).metric("net_income").value == D(-200)


def test_growth_rate_adds_a_forecast_for_the_next_period(rows: list[FinancialRow]) -> None:
    card = build_dashboard(rows, {"growth_rate": D("0.1")}).metric("forecast_revenue")
    assert (card.period, card.value, card.previous) == ("2026-03", D(1320), D(1200))
    assert metric_to_json(card)["change"] == "0.1000"


def test_margins_are_none_without_revenue() -> None:
    rows = [FinancialRow("2026-01", "income", "cogs", D(10), "USD")]
    got = values(build_dashboard(rows, {}))
    assert got["gross_margin"] is None and got["net_margin"] is None
    assert got["gross_profit"] == "-10.00"


def test_empty_input_still_gives_every_metric_and_chart() -> None:
    dashboard = build_dashboard([], {})
    assert len(dashboard.metrics) == 8 and len(dashboard.charts) == 4
    assert all(card.value is None and card.period is None for card in dashboard.metrics)
    assert dashboard.to_json()["currency"] is None


def test_periods_sort_by_year_first_month_then_length() -> None:
    periods = ["2026-Q1", "2025-12", "2026-02", "2026-01", "2025-Q4", "2026-04", "2026-Q2"]
    assert sorted(periods, key=period_sort_key) == [
        "2025-Q4",
        "2025-12",
        "2026-01",
        "2026-Q1",
        "2026-02",
        "2026-04",
        "2026-Q2",
    ]
    assert [next_period(p) for p in ("2026-12", "2026-07", "2026-Q4", "2026-Q2")] == [
        "2027-01",
        "2026-08",
        "2027-Q1",
        "2026-Q3",
    ]


def test_previous_comes_from_the_same_kind_of_period() -> None:
    rows = [
        FinancialRow("2026-Q1", "income", "revenue", D(3000), "USD"),
        FinancialRow("2026-02", "income", "revenue", D(900), "USD"),
        FinancialRow("2026-03", "income", "revenue", D(1100), "USD"),
    ]
    card = build_dashboard(rows, {}).metric("revenue")
    assert (card.period, card.value, card.previous) == ("2026-03", D(1100), D(900))
    points = build_dashboard(rows, {}).charts[0].points
    assert [p for p, _ in points] == ["2026-Q1", "2026-02", "2026-03"]


def test_change_is_relative_to_the_absolute_previous_value() -> None:
    rows = [
        FinancialRow("2026-01", "income", "revenue", D(100), "USD"),
        FinancialRow("2026-01", "income", "opex", D(200), "USD"),
        FinancialRow("2026-02", "income", "revenue", D(100), "USD"),
        FinancialRow("2026-02", "income", "opex", D(50), "USD"),
    ]
    card = build_dashboard(rows, {}).metric("operating_income")
    assert (card.previous, card.value, card.change) == (D(-100), D(50), D("1.5"))
    zero = [FinancialRow("2026-01", "income", "revenue", D(0), "USD"), rows[2]]
    assert build_dashboard(zero, {}).metric("revenue").change is None


def test_json_is_serialisable_with_fixed_decimals(rows: list[FinancialRow]) -> None:
    document = build_dashboard(rows, {"growth_rate": D("0.333333")}).to_json()
    json.dumps(document)
    card = document["metrics"][0]
    assert set(card) == {"name", "label", "unit", "period", "value", "previous", "change"}
    assert card["label"] == "Revenue" and card["unit"] == "money"
    assert document["metrics"][-1]["value"] == "1600.00"  # 1599.9996 rounded half up
    chart = document["charts"][0]
    assert chart["points"][0] == {"period": "2026-01", "value": "1000.00"}


def test_huge_amounts_do_not_overflow() -> None:
    big = D("999999999999999999.999999")
    rows = [FinancialRow("2026-01", "income", "revenue", big, "USD")] * 1000
    rows += [FinancialRow("2026-01", "income", "cogs", D("0.000001"), "USD")]
    document = build_dashboard(rows, {"growth_rate": D(10)}).to_json()
    # 1000 x 999999999999999999.999999 = 999999999999999999999.999, rounded half up.
    assert document["metrics"][0]["value"] == "1000000000000000000000.00"
    assert document["metrics"][2]["value"] == "1.0000"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("tax_rate", D("0.25"), D("0.25")),
        ("tax_rate", 0, D(0)),
        ("tax_rate", 1, D(1)),
        ("tax_rate", " 0.3 ", D("0.3")),
        ("tax_rate", 0.2, D("0.2")),
        ("growth_rate", "-1", D(-1)),
        ("growth_rate", D(10), D(10)),
        ("growth_rate", "+.5", D("0.5")),
        ("growth_rate", "2.5e-1", D("0.25")),
        ("tax_rate", 1e-05, D("0.00001")),
    ],
)
def test_validate_parameter_accepts_in_range_numbers(
    name: str, value: object, expected: Decimal
) -> None:
    assert validate_parameter(name, value) == expected


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("discount", D(1), "unknown parameter 'discount'; known parameters: growth_rate, tax_rate"),
        ("tax_rate", D("1.01"), "tax_rate must be between 0 and 1 (got 1.01)"),
        ("tax_rate", -1, "tax_rate must be between 0 and 1"),
        ("growth_rate", "11", "growth_rate must be between -1 and 10"),
        ("growth_rate", "fast", "growth_rate must be a number"),
        ("growth_rate", "NaN", "finite"),
        ("growth_rate", float("inf"), "finite"),
        ("tax_rate", True, "must be a number"),
        ("tax_rate", None, "must be a number"),
        ("growth_rate", "1_0", "must be a number in ASCII digits (got '1_0')"),
        ("growth_rate", "\u0661", "must be a number in ASCII digits"),
        ("growth_rate", "-inf", "finite"),
        ("growth_rate", "1" * 65, "must be a number"),
    ],
)
def test_validate_parameter_refuses_clearly(name: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_parameter(name, value)


def test_build_dashboard_validates_parameters(rows: list[FinancialRow]) -> None:
    with pytest.raises(ValueError, match="tax_rate"):
        build_dashboard(rows, {"tax_rate": D(2)})


def test_parameters_are_described() -> None:
    assert set(PARAMETERS) == {"tax_rate", "growth_rate"}
    spec = PARAMETERS["growth_rate"]
    assert (spec.name, spec.min, spec.max) == ("growth_rate", D(-1), D(10))
    assert spec.description
    assert affected_metrics("tax_rate") == ["net_income", "net_margin"]
    assert affected_metrics("growth_rate") == ["forecast_revenue"]
    with pytest.raises(ValueError):
        affected_metrics("nope")


def test_diff_reports_everything_first_then_only_changes(rows: list[FinancialRow]) -> None:
    first = build_dashboard(rows, {})
    metrics, charts = diff_dashboards(None, first)
    assert (len(metrics), len(charts)) == (8, 4)
    assert diff_dashboards(first, build_dashboard(rows, {})) == ([], [])

    taxed = build_dashboard(rows, {"tax_rate": D("0.25")})
    metrics, charts = diff_dashboards(first, taxed)
    assert [m.name for m in metrics] == affected_metrics("tax_rate")
    assert [c.name for c in charts] == ["net_income"]

    metrics, charts = diff_dashboards(
        taxed, build_dashboard(rows, {"tax_rate": D("0.25"), "growth_rate": D("0.05")})
    )
    assert [m.name for m in metrics] == ["forecast_revenue"] and charts == []


def test_diff_ignores_changes_below_display_precision() -> None:
    old = Dashboard([MetricCard("revenue", "Revenue", "2026-01", D("1.001"), None, None)])
    new = Dashboard([MetricCard("revenue", "Revenue", "2026-01", D("1.004"), None, None)])
    assert diff_dashboards(old, new) == ([], [])


def test_item_json_helpers() -> None:
    card = MetricCard("gross_margin", "Gross margin", "2026-01", D("0.12345"), None, D("-0.5"))
    assert metric_to_json(card) == {
        "name": "gross_margin",
        "label": "Gross margin",
        "unit": "ratio",
        "period": "2026-01",
        "value": "0.1235",
        "previous": None,
        "change": "-0.5000",
    }
    series = ChartSeries("revenue", "Revenue", [("2026-01", D("-0.001")), ("2026-02", None)])
    assert chart_to_json(series)["points"] == [
        {"period": "2026-01", "value": "0.00"},
        {"period": "2026-02", "value": None},
    ]


def test_dashboard_json_round_trips_for_later_diffs(rows: list[FinancialRow]) -> None:
    dashboard = build_dashboard(rows, {"tax_rate": D("0.3"), "growth_rate": D("0.1")})
    stored = json.loads(json.dumps(dashboard.to_json()))
    restored = Dashboard.from_json(stored)
    assert restored.to_json() == dashboard.to_json()
    assert diff_dashboards(restored, dashboard) == ([], [])
    metrics, _ = diff_dashboards(restored, build_dashboard(rows, {"tax_rate": D("0.3")}))
    assert [m.name for m in metrics] == ["forecast_revenue"]
