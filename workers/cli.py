"""``finrt worker`` and ``finrt beat``: Celery with this project's app and defaults.

Extra arguments go to celery (``finrt worker -B -c 4``); they override the defaults here.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from core.settings import get_settings

log = logging.getLogger("finrt.workers")


def _prepare() -> tuple[str, str, list[str]]:
    s = get_settings()
    if s.celery_visibility_timeout <= s.task_time_limit:
        log.warning(
            "FINRT_CELERY_VISIBILITY_TIMEOUT (%ss) is not above FINRT_TASK_TIME_LIMIT (%ss): "
            "a long task may be handed to a second worker while the first still runs",
            s.celery_visibility_timeout,
            s.task_time_limit,
        )
    Path(s.beat_schedule_file).parent.mkdir(parents=True, exist_ok=True)
    # JSON lines only: Celery's start-up banner is printed, not logged.
    quiet = ["--quiet"] if s.log_json else []
    return s.log_level, s.beat_schedule_file, quiet


def _run(argv: list[str]) -> None:
    from celery.bin.celery import celery

    from workers.celery_app import app, configure_logging

    configure_logging()  # before Celery starts: its first warnings already follow it
    # As ``app.start`` does, but keeping the command's exit status, which ``app.start`` drops: a
    # worker that stopped on an unrecoverable error must not exit 0 (a supervisor that restarts
    # on failure would leave it down).
    celery.params[0].default = app
    try:
        code = celery.main(args=argv, standalone_mode=False)
    finally:
        celery.params[0].default = None
    if code:
        raise SystemExit(code)


def run_worker(args: list[str], *, relay: bool = True) -> None:
    level, _, quiet = _prepare()
    child = _start_relay() if relay else None
    try:
        _run([*quiet, "worker", "--loglevel", level, *args])
    finally:
        if child is not None:
            child.terminate()
            child.wait(10)


def _start_relay() -> subprocess.Popen[bytes] | None:
    """The relay as a process of its own (not a thread: Celery's prefork children would
    inherit its database connection); in the worker's process group, so it dies with it."""
    if make_url(get_settings().database_url).get_backend_name() != "postgresql":
        return None
    return subprocess.Popen([sys.executable, "-c", "import finrt.cli as c; c.app(['relay'])"])


def run_beat(args: list[str]) -> None:
    level, schedule, quiet = _prepare()
    _run([*quiet, "beat", "--loglevel", level, "--schedule", schedule, *args])
