"""The sending side: how the API queues tasks, without importing the tasks themselves."""

from __future__ import annotations

import threading

from celery import Celery

from core.settings import Settings

PROCESS_FILE = "finrt.process_file"
GENERATE_REPORT = "finrt.generate_report"
RECALCULATE_FILE = "finrt.recalculate_file"

_lock = threading.Lock()
_producers: dict[tuple[str, str, int], Celery] = {}


def producer(settings: Settings) -> Celery:
    """A Celery app that only sends, configured like the workers (one per broker and prefix)."""
    from celeryconfig import config_for

    key = (
        settings.celery_broker_url or settings.redis_url,
        settings.redis_prefix,
        settings.celery_visibility_timeout,
    )
    with _lock:
        app = _producers.get(key)
        if app is None:
            app = Celery("finrt-producer", set_as_current=False)
            app.conf.update(config_for(settings))
            _producers[key] = app
        return app


def send_process_file(settings: Settings, file_id: int, job_id: str) -> None:
    """Queue the processing of an uploaded file (blocking; raises if the broker is down)."""
    producer(settings).send_task(
        PROCESS_FILE, args=[file_id, job_id], task_id=job_id, queue=settings.celery_queue
    )


def send_generate_report(settings: Settings, report_id: int, job_id: str) -> None:
    """Queue the building of a report (blocking; raises if the broker is down)."""
    producer(settings).send_task(
        GENERATE_REPORT, args=[report_id], task_id=job_id, queue=settings.celery_queue
    )


def send_recalculate(settings: Settings, file_id: int, *, countdown: float = 0.0) -> None:
    """Queue the recalculation of a file changed outside the application, to run ``countdown``
    seconds from now (workers/recalculations.py)."""
    producer(settings).send_task(
        RECALCULATE_FILE, args=[file_id], queue=settings.celery_queue, countdown=countdown or None
    )
