"""The Celery application (``celery -A workers ...``), configured from ``celeryconfig``.

The worker's parent process never opens a database or Redis connection of ours (tasks run in
the pool's processes), so forked pool processes start without shared sockets.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

from celery import Celery
from celery.signals import setup_logging

from core.logs import log_config

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


def _quiet_the_tick() -> None:
    for name in ("celery.app.trace", "celery.worker.strategy", "celery.beat"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietTick) for f in logger.filters):
            logger.addFilter(_QuietTick())


_quiet_the_tick()


@setup_logging.connect  # type: ignore[untyped-decorator]
def _same_logging_as_the_api(**_: Any) -> None:
    """Worker and beat log as the API does (FINRT_LOG_LEVEL, FINRT_LOG_JSON, tokens redacted):
    with a receiver on this signal, Celery leaves logging alone instead of using its format."""
    configure_logging()


def configure_logging() -> None:
    from core.settings import get_settings

    s = get_settings()
    logging.config.dictConfig(log_config(s.log_level, s.log_json))
    # Celery's warnings (running as root...) become log lines too, in the same format.
    logging.captureWarnings(True)
    _quiet_the_tick()
