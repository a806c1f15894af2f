"""Celery settings (lowercase, as in Celery's guide), derived from the FINRT_ settings.

``celery -A workers`` and ``finrt worker`` load this module through ``config_from_object``;
:func:`config_for` gives the same settings for any :class:`~core.settings.Settings` (the API's
task producer, and tests that talk to a worker of their own).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from core.settings import Settings, get_settings
from workers.broker import TRANSPORT

TASK_MODULES = ("workers.tasks", "workers.outcomes", "workers.metrics")


def transport_options(s: Settings) -> dict[str, Any]:
    visibility = s.celery_visibility_timeout
    return {
        # Celery's own keys live beside ours, under the same prefix, so two deployments (or two
        # test runs) on one Redis never take each other's tasks.
        "global_keyprefix": f"{s.redis_prefix}:celery:",
        # An unacknowledged task (its worker died) goes back to the queue after this long.
        "visibility_timeout": visibility,
        # How often workers look for such tasks: kombu's default (every 100 s) would dwarf a
        # short timeout.
        "unacked_restore_interval": max(1, min(10, visibility // 10)),
        "unacked_restore_throttle": 1 if visibility < 600 else 10,
        "socket_connect_timeout": 5,
        "socket_timeout": 30,
        "health_check_interval": 25,
    }


def config_for(s: Settings) -> dict[str, Any]:
    every = {"sweep": s.outbox_sweep_seconds, "schedules": s.schedule_check_seconds}
    broker = s.celery_broker_url or s.redis_url
    return {
        "broker_url": broker,
        # kombu's Redis transport, whose channel survives Redis going away mid-task
        # (workers/broker.py); other brokers (amqp://, rediss://, sentinel://) as kombu has them.
        "broker_transport": TRANSPORT if urlsplit(broker).scheme == "redis" else None,
        "broker_transport_options": transport_options(s),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # a worker waits for Redis as long as it takes
        "broker_pool_limit": 10,
        # No result backend: a job's state lives in the database (files, report_exports).
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_default_queue": s.celery_queue,
        # Acknowledge after the task ran, so a worker that dies mid-task leaves it to another.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": s.task_soft_time_limit,
        "task_time_limit": s.task_time_limit,
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        # A task running when the broker connection drops finishes its work (its
        # acknowledgement may be lost with the connection; the redelivered copy then finds the
        # work done). Cancelling it would delay the user's result by the visibility timeout.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_max_tasks_per_child": 500,
        "worker_send_task_events": False,
        "timezone": "UTC",
        "enable_utc": True,
        "imports": TASK_MODULES,
        "beat_schedule_filename": s.beat_schedule_file,
        "beat_schedule": {
            "sweep-outbox": {
                "task": "finrt.sweep_outbox",
                "schedule": every["sweep"],
                # Ticks missed while no worker ran are worth nothing: the next one does it all.
                "options": {"expires": every["sweep"]},
            },
            "check-report-schedules": {
                "task": "finrt.check_schedules",
                "schedule": every["schedules"],
                "options": {"expires": every["schedules"]},
            },
            # Snoozes and expiries live in the database, so a restart loses none: the first tick
            # after it wakes (once) every snooze that came due meanwhile.
            "inbox-tick": {
                "task": "finrt.inbox_tick",
                "schedule": s.inbox_tick_seconds,
                "options": {"expires": max(1.0, s.inbox_tick_seconds)},
            },
            "purge-expired-notifications": {
                "task": "finrt.purge_notifications",
                "schedule": s.notification_purge_seconds,
                "options": {"expires": s.notification_purge_seconds},
            },
            "check-stale-jobs": {
                "task": "finrt.check_stale_jobs",
                "schedule": s.stale_job_check_seconds,
                "options": {"expires": s.stale_job_check_seconds},
            },
        },
    }


globals().update(config_for(get_settings()))
