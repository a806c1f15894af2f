"""Period labels: ``YYYY-MM``, ``YYYY-Qn`` and ``YYYY``, their order, and the views that add
months up into quarters and years (``month``, ``quarter``, ``year``)."""

from __future__ import annotations

from typing import Literal

__all__ = ["PERIODS", "Period", "next_period", "period_of", "period_sort_key"]

Period = Literal["month", "quarter", "year"]
PERIODS: tuple[Period, ...] = ("month", "quarter", "year")


def period_sort_key(period: str) -> tuple[int, int, int]:
    """(year, first month, length in months) of a ``YYYY-MM``, ``YYYY-Qn`` or ``YYYY`` period."""
    year, _, part = period.partition("-")
    if not part:
        return int(year), 1, 12
    if part.upper().startswith("Q"):
        return int(year), (int(part[1:]) - 1) * 3 + 1, 3
    return int(year), int(part), 1


def next_period(period: str) -> str:
    year, first_month, length = period_sort_key(period)
    if length == 12:
        return f"{year + 1:04d}"
    month = first_month + length
    if month > 12:
        year, month = year + 1, month - 12
    return f"{year:04d}-Q{(month - 1) // 3 + 1}" if length == 3 else f"{year:04d}-{month:02d}"


def period_of(period: str, view: Period) -> str:
    """The label of the ``view`` period holding a row's ``period`` (``2026-05`` in the
    ``quarter`` view is ``2026-Q2``, in the ``year`` view ``2026``)."""
    year, first_month, length = period_sort_key(period)
    if view == "month" or length == 12:
        return period
    if view == "quarter":
        return f"{year:04d}-Q{(first_month - 1) // 3 + 1}"
    return f"{year:04d}"
