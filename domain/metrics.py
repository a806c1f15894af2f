"""Per-period metrics and chart series computed from parsed rows.

Only income-statement rows whose line item is in ``LINE_ITEM_ROLES`` feed the metrics; a
period appears when it has at least one income row. Expenses (cogs, opex, interest, tax) are
expected as positive amounts, so a negative expense line reduces the expense.

Periods sort by (year, first month, length in months): ``2026-01`` < ``2026-Q1`` <
``2026-02`` < ``2026`` sorts as (2026, 1, 12). In the ``month`` view (the default, the rows'
own periods) monthly and quarterly periods are never merged; a metric's ``previous`` value
comes from the nearest earlier period of the same length.

The ``quarter`` view adds each quarter's months up; a quarter the file reports directly
(``YYYY-Qn`` rows) takes those rows instead of its months, so a file carrying both a quarter
and its months does not count them twice. The ``year`` view adds up the quarters of the
``quarter`` view. A period the file covers only in part (two months of a quarter) is shown as
it stands. Ratios and the tax parameter are computed on the added-up figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from typing import Any, Literal

from domain.csv_import import FinancialRow
from domain.numbers import check_precision, to_decimal
from domain.periods import PERIODS, Period, next_period, period_of, period_sort_key

__all__ = [
    "CHART_NAMES",
    "LINE_ITEM_ROLES",
    "METRIC_LABELS",
    "METRIC_NAMES",
    "METRIC_UNITS",
    "PARAMETERS",
    "PERIODS",
    "ChartSeries",
    "Dashboard",
    "MetricCard",
    "ParameterSpec",
    "affected_metrics",
    "build_dashboard",
    "chart_to_json",
    "diff_dashboards",
    "format_decimal",
    "metric_to_json",
    "next_period",
    "period_of",
    "period_sort_key",
    "validate_parameter",
]

Unit = Literal["money", "ratio"]
JsonDict = dict[str, Any]

METRIC_LABELS: dict[str, str] = {
    "revenue": "Revenue",
    "gross_profit": "Gross profit",
    "gross_margin": "Gross margin",
    "operating_income": "Operating income",
    "operating_margin": "Operating margin",
    "net_income": "Net income",
    "net_margin": "Net margin",
    "forecast_revenue": "Forecast revenue",
}
METRIC_NAMES: tuple[str, ...] = tuple(METRIC_LABELS)
METRIC_UNITS: dict[str, Unit] = {
    name: "ratio" if name.endswith("_margin") else "money" for name in METRIC_NAMES
}
CHART_NAMES: tuple[str, ...] = ("revenue", "gross_profit", "operating_income", "net_income")

LINE_ITEM_ROLES: dict[str, str] = {
    "revenue": "revenue",
    "sales": "revenue",
    "cogs": "cogs",
    "cost_of_goods_sold": "cogs",
    "opex": "opex",
    "operating_expenses": "opex",
    "sga": "opex",
    "selling_general_and_administrative": "opex",
    "research_and_development": "opex",
    "marketing": "opex",
    "depreciation": "opex",
    "amortization": "opex",
    "depreciation_and_amortization": "opex",
    "interest": "interest",
    "interest_expense": "interest",
    "tax": "tax",
    "taxes": "tax",
    "income_tax": "tax",
}
_ROLES = ("revenue", "cogs", "opex", "interest", "tax")

_QUANTA: dict[Unit, Decimal] = {"money": Decimal("0.01"), "ratio": Decimal("0.0001")}
# Sums of 100k amounts of 24 significant digits exceed the default 28-digit precision.
_CONTEXT = Context(prec=80, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    min: Decimal
    max: Decimal
    description: str


PARAMETERS: dict[str, ParameterSpec] = {
    "tax_rate": ParameterSpec(
        "tax_rate",
        Decimal(0),
        Decimal(1),
        "Tax rate applied to operating income minus interest (never below zero); "
        "replaces the file's tax lines.",
    ),
    "growth_rate": ParameterSpec(
        "growth_rate",
        Decimal(-1),
        Decimal(10),
        "Revenue growth for a one-period forecast: last revenue x (1 + growth_rate).",
    ),
}
_AFFECTED: dict[str, list[str]] = {
    "tax_rate": ["net_income", "net_margin"],
    "growth_rate": ["forecast_revenue"],
}


@dataclass(frozen=True)
class MetricCard:
    name: str
    label: str
    period: str | None
    value: Decimal | None
    previous: Decimal | None
    change: Decimal | None


@dataclass(frozen=True)
class ChartSeries:
    name: str
    label: str
    points: list[tuple[str, Decimal | None]]


@dataclass
class Dashboard:
    metrics: list[MetricCard] = field(default_factory=list)
    charts: list[ChartSeries] = field(default_factory=list)
    currency: str | None = None

    def metric(self, name: str) -> MetricCard:
        for card in self.metrics:
            if card.name == name:
                return card
        raise KeyError(name)

    def to_json(self) -> JsonDict:
        return {
            "currency": self.currency,
            "metrics": [metric_to_json(card) for card in self.metrics],
            "charts": [chart_to_json(series) for series in self.charts],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Dashboard:
        """Rebuild from ``to_json()`` output (values keep its rounding), e.g. to diff later."""

        def number(text: str | None) -> Decimal | None:
            return None if text is None else Decimal(text)

        metrics = [
            MetricCard(
                m["name"],
                m["label"],
                m["period"],
                number(m["value"]),
                number(m["previous"]),
                number(m["change"]),
            )
            for m in data["metrics"]
        ]
        charts = [
            ChartSeries(
                c["name"], c["label"], [(p["period"], number(p["value"])) for p in c["points"]]
            )
            for c in data["charts"]
        ]
        return cls(metrics, charts, data.get("currency"))


def validate_parameter(name: str, value: object) -> Decimal:
    spec = PARAMETERS.get(name)
    if spec is None:
        known = ", ".join(sorted(PARAMETERS))
        raise ValueError(f"unknown parameter {name!r}; known parameters: {known}")
    number = to_decimal(name, value)
    check_precision(name, number)
    if not spec.min <= number <= spec.max:
        raise ValueError(f"{name} must be between {spec.min} and {spec.max} (got {number})")
    return number


def affected_metrics(parameter_name: str) -> list[str]:
    """Metric (and chart) names whose values can change when the parameter changes."""
    if parameter_name not in _AFFECTED:
        raise ValueError(f"unknown parameter {parameter_name!r}")
    return list(_AFFECTED[parameter_name])


def build_dashboard(
    rows: Sequence[FinancialRow], parameters: Mapping[str, Decimal], period: str = "month"
) -> Dashboard:
    """The metric cards and chart series of ``rows`` by ``period`` (``month``, ``quarter`` or
    ``year``); ValueError for another period."""
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)} (got {period[:16]!r})")
    view: Period = period  # type: ignore[assignment]
    params = {name: validate_parameter(name, value) for name, value in parameters.items()}
    with localcontext(_CONTEXT):
        totals = _role_totals(rows, view)
        periods = sorted(totals, key=period_sort_key)
        values = {p: _period_metrics(totals[p], params.get("tax_rate")) for p in periods}
        latest = periods[-1] if periods else None
        previous = _previous_of_same_length(periods)
        current = values[latest] if latest else {}
        before = values[previous] if previous else {}
        cards = [
            _card(name, latest, current.get(name), before.get(name))
            for name in METRIC_NAMES
            if name != "forecast_revenue"
        ]
        cards.append(_forecast_card(latest, current.get("revenue"), params.get("growth_rate")))
        charts = [
            ChartSeries(name, METRIC_LABELS[name], [(p, values[p][name]) for p in periods])
            for name in CHART_NAMES
        ]
    return Dashboard(cards, charts, rows[0].currency if rows else None)


def metric_to_json(card: MetricCard) -> JsonDict:
    unit = METRIC_UNITS.get(card.name, "money")
    return {
        "name": card.name,
        "label": card.label,
        "unit": unit,
        "period": card.period,
        "value": format_decimal(card.value, unit),
        "previous": format_decimal(card.previous, unit),
        "change": format_decimal(card.change, "ratio"),
    }


def chart_to_json(series: ChartSeries) -> JsonDict:
    unit = METRIC_UNITS.get(series.name, "money")
    return {
        "name": series.name,
        "label": series.label,
        "unit": unit,
        "points": [
            {"period": period, "value": format_decimal(value, unit)}
            for period, value in series.points
        ],
    }


def diff_dashboards(
    old: Dashboard | None, new: Dashboard
) -> tuple[list[MetricCard], list[ChartSeries]]:
    """Metrics and charts of ``new`` whose JSON differs from ``old`` (all of them if None)."""
    if old is None:
        return list(new.metrics), list(new.charts)
    old_metrics = {card.name: metric_to_json(card) for card in old.metrics}
    old_charts = {series.name: chart_to_json(series) for series in old.charts}
    metrics = [c for c in new.metrics if old_metrics.get(c.name) != metric_to_json(c)]
    charts = [s for s in new.charts if old_charts.get(s.name) != chart_to_json(s)]
    return metrics, charts


def format_decimal(value: Decimal | None, unit: Unit) -> str | None:
    """Fixed-point string, 2 decimals for money and 4 for ratios, rounded half up."""
    if value is None:
        return None
    quantized = value.quantize(_QUANTA[unit], context=_CONTEXT)
    if quantized.is_zero():
        quantized = abs(quantized)
    return format(quantized, "f")


def _role_totals(rows: Sequence[FinancialRow], view: Period) -> dict[str, dict[str, Decimal]]:
    income = [row for row in rows if row.statement == "income"]
    # Quarters the file reports directly: their months are left out of the added-up views.
    reported = {row.period for row in income if period_sort_key(row.period)[2] == 3}
    totals: dict[str, dict[str, Decimal]] = {}
    for row in income:
        if view != "month" and period_of(row.period, "quarter") in reported:
            if period_sort_key(row.period)[2] == 1:
                continue
        label = period_of(row.period, view)
        per_period = totals.setdefault(label, dict.fromkeys(_ROLES, Decimal(0)))
        role = LINE_ITEM_ROLES.get(row.line_item)
        if role is not None:
            per_period[role] += row.amount
    return totals


def _period_metrics(
    totals: Mapping[str, Decimal], tax_rate: Decimal | None
) -> dict[str, Decimal | None]:
    revenue = totals["revenue"]
    gross_profit = revenue - totals["cogs"]
    operating_income = gross_profit - totals["opex"]
    interest = totals["interest"]
    if tax_rate is None:
        tax = totals["tax"]
    else:
        tax = max(Decimal(0), operating_income - interest) * tax_rate
    net_income = operating_income - interest - tax
    return {
        "revenue": revenue,
        "gross_profit": gross_profit,
        "gross_margin": _ratio(gross_profit, revenue),
        "operating_income": operating_income,
        "operating_margin": _ratio(operating_income, revenue),
        "net_income": net_income,
        "net_margin": _ratio(net_income, revenue),
    }


def _ratio(numerator: Decimal, denominator: Decimal) -> Decimal | None:
    return None if denominator.is_zero() else numerator / denominator


def _change(value: Decimal | None, previous: Decimal | None) -> Decimal | None:
    if value is None or previous is None or previous.is_zero():
        return None
    return (value - previous) / abs(previous)


def _previous_of_same_length(periods: list[str]) -> str | None:
    if not periods:
        return None
    length = period_sort_key(periods[-1])[2]
    for period in reversed(periods[:-1]):
        if period_sort_key(period)[2] == length:
            return period
    return None


def _card(
    name: str, period: str | None, value: Decimal | None, previous: Decimal | None
) -> MetricCard:
    return MetricCard(name, METRIC_LABELS[name], period, value, previous, _change(value, previous))


def _forecast_card(
    latest: str | None, revenue: Decimal | None, growth: Decimal | None
) -> MetricCard:
    value = None if revenue is None or growth is None else revenue * (1 + growth)
    period = next_period(latest) if latest else None
    return _card("forecast_revenue", period, value, revenue)
