"""The file name a report is downloaded under: a plain, header-safe name whatever the upload's."""

from __future__ import annotations

import re

import pytest

from domain.reports import REPORT_EXTENSIONS
from models import ReportExport
from services.reports import download_name

pytestmark = pytest.mark.fast

PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@pytest.mark.parametrize(
    ("upload", "stem"),
    [
        ("q3 results.csv", "q3-results"),
        ("_private.csv", "private"),
        ("__.csv", "file"),
        ("-_.x_.csv", "x"),
        ("é€.csv", "file"),
        ("../../etc/passwd", "file"),
    ],
)
def test_a_download_name_starts_plain_and_names_the_report(upload: str, stem: str) -> None:
    report = ReportExport(id=7, format="pdf")
    name = download_name(upload, report)
    assert PLAIN.fullmatch(name), name
    assert name == f"{stem}-report-7{REPORT_EXTENSIONS['pdf']}"
