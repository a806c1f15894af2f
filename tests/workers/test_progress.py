"""Progress throttling: a few events per second, the last one always."""

from __future__ import annotations

from typing import Any

import redis

from workers.progress import FileProgress, ReportProgress, Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throttle_lets_one_update_through_per_interval_and_every_final_one():
    clock = Clock()
    throttle = Throttle(0.25, clock)
    passed = []
    for step in range(100):
        clock.now = step * 0.01
        passed.append(throttle.ready(final=step == 99))
    assert [i for i, ok in enumerate(passed) if ok] == [0, 25, 50, 75, 99]


def test_file_progress_throttles_but_always_sends_the_end():
    sent: list[tuple[str, str, Any, str | None]] = []

    def publish(channel: str, type_: str, data: Any, key: str | None) -> str:
        sent.append((channel, type_, data, key))
        return "1-0"

    progress = FileProgress(
        publish,
        3600,
        file_id=7,
        owner_id="ann",
        job_id="j1",
    )
    for done in range(1, 1001):
        progress(done, 1000)
    assert [(c, t) for c, t, _, _ in sent] == [
        ("file:7", "file_processing"),
        ("user:ann", "job_progress"),
        ("file:7", "file_processing"),
        ("user:ann", "job_progress"),
    ]
    assert sent[-2][2] == {"status": "processing", "processed": 1000, "total": 1000, "percent": 100}
    assert sent[-1][2]["percent"] == 100 and sent[-1][3] == "job:j1"


def test_a_failed_progress_publish_never_fails_the_job():
    def down(*_args):
        raise redis.ConnectionError("Redis is down")

    progress = ReportProgress(down, 0, event={"report_id": 3, "file_id": 7}, user_id="ann")
    progress(50)
    progress(100)
    assert progress.sent == 0
