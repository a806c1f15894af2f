"""Task outcome counters in Redis, for the API's ``/metrics`` (workers are other processes).

Hash ``<prefix>:tasks:outcomes``; field ``<task name>:<outcome>`` (success, failure, retry);
value: how many since the key was created. Counting never fails a task.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery.signals import task_failure, task_retry, task_success

from core.settings import get_settings
from streams.connect import sync_client

log = logging.getLogger("finrt.workers.outcomes")

_client: redis.Redis | None = None


def outcomes_key(prefix: str) -> str:
    return f"{prefix}:tasks:outcomes"


def read_outcomes(client: redis.Redis, prefix: str) -> dict[tuple[str, str], int]:
    """``{(task, outcome): count}``."""
    raw: dict[bytes, bytes] = client.hgetall(outcomes_key(prefix))  # type: ignore[assignment]
    out: dict[tuple[str, str], int] = {}
    for field, value in raw.items():
        task, _, outcome = field.decode().rpartition(":")
        out[(task, outcome)] = int(value)
    return out


def count(task_name: str, outcome: str) -> None:
    global _client
    s = get_settings()
    try:
        if _client is None:
            _client = sync_client(s.redis_url, socket_timeout=2, socket_connect_timeout=2)
        _client.hincrby(outcomes_key(s.redis_prefix), f"{task_name}:{outcome}", 1)
    except redis.RedisError:
        log.debug("task outcome not counted", exc_info=True)


def _name(sender: Any) -> str:
    return str(getattr(sender, "name", None) or sender)


def _on_success(sender: Any = None, **_kwargs: Any) -> None:
    count(_name(sender), "success")


def _on_failure(sender: Any = None, **_kwargs: Any) -> None:
    count(_name(sender), "failure")


def _on_retry(sender: Any = None, **_kwargs: Any) -> None:
    count(_name(sender), "retry")


task_success.connect(_on_success, weak=False)
task_failure.connect(_on_failure, weak=False)
task_retry.connect(_on_retry, weak=False)
