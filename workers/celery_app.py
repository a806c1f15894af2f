"""The Celery application (``celery -A workers ...``), configured from ``celeryconfig``.

The worker's parent process never opens a database or Redis connection of ours (tasks run in
the pool's processes), so forked pool processes start without shared sockets.
"""

from __future__ import annotations

import logging.config
from typing import Any

from celery import Celery
from celery.signals import setup_logging

from core.logs import log_config

app = Celery("finrt")
# Lazy: celeryconfig (and so the FINRT_ settings) is read when the configuration is first used.
app.config_from_object("celeryconfig")


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
