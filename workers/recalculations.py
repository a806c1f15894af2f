"""Recalculations asked for by changes made outside the application, queued durably.

A change of financial rows or parameters made outside the application (psql, another service)
leaves outbox rows (``financial_data_update`` / ``parameter_update`` with ``"source":
"database"``); the file's metrics and charts must be recomputed. Whoever publishes such rows (the
relay, or the outbox sweeper when no relay ran) first queues ``finrt.recalculate_file`` for their
files, and only then publishes and marks them: a publisher that dies or loses Redis or the broker
before marking leaves the rows for the next one, which asks again. Nothing is held in a
process's memory, so nothing is lost with it.

One task per file per burst: the first change of a burst queues the task with a countdown of
:data:`WINDOW_SECONDS` and sets a key in Redis for half that time; changes seen while the key
lives ride along (they committed before the task, which runs after the key is gone, reads the
file). The other half is the margin for clocks: the countdown is an absolute time on the sender's
clock, read by the worker's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import orjson

from core.settings import Settings
from workers.enqueue import send_recalculate

RECALC_TYPES = frozenset({"financial_data_update", "parameter_update"})
WINDOW_SECONDS = 1.0


def files_changed_outside(rows: Iterable[tuple[str, str, str]]) -> set[int]:
    """The files whose rows or parameters the given outbox rows (channel, type, data) say were
    changed outside the application."""
    found: set[int] = set()
    for _channel, type, data in rows:
        if type not in RECALC_TYPES or '"database"' not in data:
            continue
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            doc = orjson.loads(data)
            file_id = doc.get("file_id")
            if doc.get("source") == "database" and isinstance(file_id, int):
                found.add(file_id)
    return found


class Recalculations:
    """``before_publish`` for :func:`models.outbox.flush_outbox` and ``sweep_outbox``."""

    def __init__(self, settings: Settings, window_seconds: float = WINDOW_SECONDS) -> None:
        self.settings, self.window = settings, window_seconds
        self.queued: list[int] = []  # files queued by this process, for its log

    def before_publish(self, rows: Sequence[tuple[str, str, str]]) -> None:
        """Queue one recalculation per file of ``rows`` not already queued in this burst.
        Raises when Redis or the broker cannot be reached: the rows then stay unpublished."""
        files = files_changed_outside(rows)
        if not files:
            return
        from streams.publish import default_publisher

        client = default_publisher().client
        hold_ms = max(1, int(self.window * 500))
        for file_id in sorted(files):
            key = f"{self.settings.redis_prefix}:recalc:{file_id}"
            if not client.set(key, b"1", nx=True, px=hold_ms):
                continue  # a task queued moments ago has yet to read the file
            try:
                send_recalculate(self.settings, file_id, countdown=self.window)
            except BaseException:
                with contextlib.suppress(Exception):
                    client.delete(key)
                raise
            self.queued.append(file_id)
