from __future__ import annotations

import itertools

import pytest

from domain.csv_import import parse_csv
from domain.metrics import build_dashboard
from domain.sample import rows_csv, sample_csv


def test_sample_is_deterministic_per_seed() -> None:
    assert sample_csv() == sample_csv()
    assert sample_csv(seed=1) != sample_csv(seed=2)


def test_sample_parses_cleanly_into_monthly_usd_periods() -> None:
    result = parse_csv(sample_csv(periods=14))
    assert result.errors == []
    assert result.currency == "USD"
    periods = sorted({row.period for row in result.rows})
    assert periods[0] == "2026-01" and periods[-1] == "2027-02" and len(periods) == 14
    items = {row.line_item for row in result.rows if row.statement == "income"}
    assert items == {"revenue", "cogs", "opex", "interest", "tax"}


def test_sample_gives_a_plausible_dashboard() -> None:
    dashboard = build_dashboard(parse_csv(sample_csv()).rows, {})
    revenue = dashboard.metric("revenue").value
    net_income = dashboard.metric("net_income").value
    margin = dashboard.metric("gross_margin").value
    assert revenue is not None and net_income is not None and margin is not None
    assert 0 < net_income < revenue
    assert 0 < margin < 1
    assert len(dashboard.charts[0].points) == 8


@pytest.mark.parametrize("bad_rows", [1, 3, 8, 20])
def test_bad_rows_are_spread_through_the_file(bad_rows: int) -> None:
    result = parse_csv(sample_csv(periods=8, bad_rows=bad_rows))
    assert len(result.errors) == bad_rows
    assert len(result.rows) == 8 * 7
    lines = [error.line for error in result.errors]
    gaps = [b - a for a, b in itertools.pairwise(lines)]
    assert min(gaps, default=99) >= 2
    assert lines[-1] > result.total_lines // 2


def test_rows_csv_has_exactly_the_requested_rows() -> None:
    data = rows_csv(1000, bad_rows=3)
    assert len(data.decode().splitlines()) == 1001
    result = parse_csv(data)
    assert (len(result.rows), len(result.errors), result.total_lines) == (997, 3, 1000)
    assert len({row.period for row in result.rows}) > 12
    assert {row.statement for row in result.rows} == {"income", "balance", "cashflow"}


def test_rows_csv_refuses_more_bad_rows_than_rows() -> None:
    with pytest.raises(ValueError):
        rows_csv(2, bad_rows=3)
    with pytest.raises(ValueError):
        sample_csv(bad_rows=-1)
