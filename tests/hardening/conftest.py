"""Fixtures of the hostile-upload suites (``test_hostile_uploads_*.py``).

Each module gets its own client and files; the tally and its figures row are the run's, over
every module.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.hardening import figures
from tests.hardening.uploads import (
    GOOD_ROWS,
    TALLY,
    Bombs,
    Tally,
    Uploads,
    build_bombs,
    injection_file,
)


@pytest.fixture(scope="session")
def hostile_uploads_figures() -> Iterator[Tally]:
    """The run's tally; one ``hostile-uploads`` figures row at the end, if an upload was sent."""
    TALLY.started = time.monotonic()
    yield TALLY
    if TALLY.cases:
        figures.record(
            "hostile-uploads",
            cases=TALLY.cases,
            server_errors=len(TALLY.server_errors),
            duration_s=round(TALLY.seconds, 1),
        )


@pytest.fixture(scope="module")
def up(hostile_uploads_figures, producers_api, worker_env) -> Iterator[Uploads]:
    client = Uploads(producers_api.url, worker_env, producers_api.pid)
    yield client
    # The modules run one after another, so the suite's time ends with the last one's.
    hostile_uploads_figures.seconds = time.monotonic() - hostile_uploads_figures.started
    client.healthy()
    client.http.close()


@pytest.fixture(scope="module")
def injected(up, celery_worker) -> tuple[str, int, dict[int, tuple[str, str]]]:
    """The processed injection file: (owner, file id, refused rows by line)."""
    data, bad = injection_file()
    user = up.user()
    file_id = up.accepted(user, up.post(user, data, name="=WEBSERVICE(A1)&@NOW().csv"))
    body = up.finished(user, file_id)
    assert body["status"] == "processed", body
    assert (body["rows_ok"], body["rows_bad"]) == (len(GOOD_ROWS), len(bad)), body
    return user, file_id, bad


@pytest.fixture(scope="module")
def bombs() -> Bombs:
    return build_bombs()
