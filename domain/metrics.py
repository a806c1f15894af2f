"""Per-period metrics and chart series computed from parsed rows.

Only income-statement rows whose line item is in ``LINE_ITEM_ROLES`` feed the metrics; a
period appears when it has at least one income row. Expenses (cogs, opex, interest, tax) are
expected as positive amounts, so a negative expense line reduces the expense.

Periods sort by (year, first month, length in months): ``2026-01`` < ``2026-Q1`` <
``2026-02``. Monthly and quarterly periods are never merged; a metric's ``previous`` value
comes from the nearest earlier period of the same length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation, localcontext
from typing import Any, Literal

from domain.csv_import import FinancialRow

__all__ = [
    "CHART_NAMES",
    "LINE_ITEM_ROLES",
    "METRIC_LABELS",
    "METRIC_NAMES",
    "METRIC_UNITS",
    "PARAMETERS",
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
# A parameter is a rate: more precision than this means nothing, and ``1e-70000`` would be
# stored (and sent in events) as 70,000 characters.
MAX_PARAMETER_DECIMALS = 12
MAX_PARAMETER_DIGITS = 20
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


def period_sort_key(period: str) -> tuple[int, int, int]:
    """(year, first month, length in months) of a ``YYYY-MM`` or ``YYYY-Qn`` period."""
    year, _, part = period.partition("-")
    if part.upper().startswith("Q"):
        return int(year), (int(part[1:]) - 1) * 3 + 1, 3
    return int(year), int(part), 1


def next_period(period: str) -> str:
    year, first_month, length = period_sort_key(period)
    month = first_month + length
    if month > 12:
        year, month = year + 1, month - 12
    return f"{year:04d}-Q{(month - 1) // 3 + 1}" if length == 3 else f"{year:04d}-{month:02d}"


def validate_parameter(name: str, value: object) -> Decimal:
    spec = PARAMETERS.get(name)
    if spec is None:
        known = ", ".join(sorted(PARAMETERS))
        raise ValueError(f"unknown parameter {name!r}; known parameters: {known}")
    number = _to_decimal(name, value)
    _check_precision(name, number)
    if not spec.min <= number <= spec.max:
        raise ValueError(f"{name} must be between {spec.min} and {spec.max} (got {number})")
    return number


def affected_metrics(parameter_name: str) -> list[str]:
    """Metric (and chart) names whose values can change when the parameter changes."""
    if parameter_name not in _AFFECTED:
        raise ValueError(f"unknown parameter {parameter_name!r}")
    return list(_AFFECTED[parameter_name])


def build_dashboard(rows: Sequence[FinancialRow], parameters: Mapping[str, Decimal]) -> Dashboard:
    params = {name: validate_parameter(name, value) for name, value in parameters.items()}
    with localcontext(_CONTEXT):
        totals = _role_totals(rows)
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


def _to_decimal(name: str, value: object) -> Decimal:
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
    elif isinstance(value, float | str):
        text = str(value).strip()
        try:
            number = Decimal(text) if len(text) <= 64 else Decimal("NaN")
        except InvalidOperation:
            raise ValueError(f"{name} must be a number (got {text[:64]!r})") from None
    else:
        raise ValueError(f"{name} must be a number (got {type(value).__name__})")
    if not number.is_finite():
        raise ValueError(f"{name} must be a finite number (got {str(value)[:64]!r})")
    return number


def _check_precision(name: str, number: Decimal) -> None:
    """At most MAX_PARAMETER_DECIMALS decimal places and MAX_PARAMETER_DIGITS digits
    (trailing zeros do not count: ``0.2500`` is ``0.25``)."""
    if number.is_zero():
        return
    _sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite: _to_decimal refused NaN and Infinity
    kept = len(digits)
    while kept > 1 and digits[kept - 1] == 0:
        kept -= 1
        exponent += 1
    places = max(0, -exponent)
    whole = max(0, kept + exponent)
    if places > MAX_PARAMETER_DECIMALS:
        raise ValueError(f"{name} may have at most {MAX_PARAMETER_DECIMALS} decimal places")
    if whole + places > MAX_PARAMETER_DIGITS:
        raise ValueError(f"{name} may have at most {MAX_PARAMETER_DIGITS} digits")


def _role_totals(rows: Sequence[FinancialRow]) -> dict[str, dict[str, Decimal]]:
    totals: dict[str, dict[str, Decimal]] = {}
    for row in rows:
        if row.statement != "income":
            continue
        per_period = totals.setdefault(row.period, dict.fromkeys(_ROLES, Decimal(0)))
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
