"""The Celery application (``celery -A workers ...``), configured from ``celeryconfig``.

The worker's parent process never opens a database or Redis connection of ours (tasks run in
the pool's processes), so forked pool processes start without shared sockets.
"""

from __future__ import annotations

import logging

from celery import Celery

app = Celery("finrt")
# Lazy: celeryconfig (and so the FINRT_ settings) is read when the configuration is first used.
app.config_from_object("celeryconfig")


class _QuietTick(logging.Filter):
    """The inbox tick runs every second: its "sending", "received" and "succeeded" lines would
    bury everything else in the worker's and beat's logs. Warnings and errors still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is not ours to drop
            return True
        return "finrt.inbox_tick" not in text


for _name in ("celery.app.trace", "celery.worker.strategy", "celery.beat"):
    logging.getLogger(_name).addFilter(_QuietTick())
