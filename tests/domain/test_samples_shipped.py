"""The sample CSVs the docs upload (samples/) are there and behave as the docs say."""

from __future__ import annotations

import pytest

from domain.csv_import import parse_csv
from tests.support import ROOT

SAMPLES = ROOT / "samples"


def test_the_good_sample_imports_every_row():
    result = parse_csv((SAMPLES / "q3.csv").read_bytes())
    assert result.rows and not result.errors
    assert {row.period for row in result.rows} == {"2026-07", "2026-08", "2026-09"}


def test_the_sample_with_bad_rows_keeps_the_good_ones_and_names_the_bad():
    result = parse_csv((SAMPLES / "q3-bad-rows.csv").read_bytes())
    assert result.rows and len(result.errors) == 3


def test_the_multi_currency_sample_keeps_one_currency_and_names_the_other_rows():
    result = parse_csv((SAMPLES / "multi-currency.csv").read_bytes())
    assert result.rows and result.errors
    assert {row.currency for row in result.rows} == {"USD"}
    assert all("currency EUR" in error.reason for error in result.errors)


@pytest.mark.parametrize("name", ["q3.csv", "q3-bad-rows.csv", "multi-currency.csv"])
def test_the_docs_name_each_sample(name):
    text = (ROOT / "docs" / "files-and-reports.md").read_text()
    assert f"samples/{name}" in text
