"""Progress events of a running job: throttled, best effort, the last one always sent.

Progress is not a database change, so it goes straight to ``streams`` (no outbox). A failed
publish is logged and skipped: the job's outcome still arrives through the outbox.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from streams.channels import file_channel, user_channel
from streams.envelope import InvalidEvent

log = logging.getLogger("finrt.workers.progress")

Publish = Callable[[str, str, Any, str | None], str]


class Throttle:
    """Lets an update through at most once per ``interval`` seconds; a final one always."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.clock = interval, clock
        self._last: float | None = None

    def ready(self, *, final: bool = False) -> bool:
        now = self.clock()
        if final or self._last is None or now - self._last >= self.interval:
            self._last = now
            return True
        return False


class _Reporter:
    def __init__(self, publish: Publish, interval: float) -> None:
        self._publish, self.throttle = publish, Throttle(interval)
        self._warned = False
        self.sent = 0

    def _send(self, channel: str, event_type: str, data: Any, key: str) -> None:
        try:
            self._publish(channel, event_type, data, key)
            self.sent += 1
        except (redis.RedisError, InvalidEvent):
            if not self._warned:
                log.warning("progress event on %s not published", channel, exc_info=True)
                self._warned = True


class FileGone(Exception):
    """The file was deleted while it was processed: its parse stops here."""


class FileProgress(_Reporter):
    """``file_processing`` on ``file:{id}`` and ``job_progress`` on the owner's channel.

    With ``alive``, asked before each update it sends: a file deleted meanwhile raises
    :class:`FileGone` (no progress of a file that no longer exists, and no more parsing)."""

    def __init__(
        self,
        publish: Publish,
        interval: float,
        *,
        file_id: int,
        owner_id: str,
        job_id: str,
        alive: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(publish, interval)
        self.file_id, self.owner_id, self.job_id = file_id, owner_id, job_id
        self.alive = alive

    def __call__(self, done: int, total: int) -> None:
        if not self.throttle.ready(final=done >= total):
            return
        if self.alive is not None and not self.alive():
            raise FileGone(self.file_id)
        percent = 100 if total == 0 else done * 100 // total
        data = {"status": "processing", "processed": done, "total": total, "percent": percent}
        self._send(file_channel(self.file_id), "file_processing", data, "file_processing")
        job = {
            "job_id": self.job_id,
            "kind": "process_file",
            "file_id": self.file_id,
            "status": "running",
            "percent": percent,
        }
        self._send(user_channel(self.owner_id), "job_progress", job, f"job:{self.job_id}")


class ReportProgress(_Reporter):
    """``report_status`` (running, with percent) on the file's and the requester's channels."""

    def __init__(
        self, publish: Publish, interval: float, *, event: dict[str, Any], user_id: str
    ) -> None:
        super().__init__(publish, interval)
        self.event, self.user_id = event, user_id

    def __call__(self, percent: int) -> None:
        if not self.throttle.ready(final=percent >= 100):
            return
        data = self.event | {"status": "running", "percent": percent}
        key = f"report:{data['report_id']}"
        self._send(file_channel(data["file_id"]), "report_status", data, key)
        self._send(user_channel(self.user_id), "report_status", data, key)
