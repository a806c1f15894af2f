"""Task durations for the API's ``/metrics``: Celery signals in the worker write a histogram
into Redis; outcomes are counted beside it by :mod:`workers.outcomes`.

Redis rather than prometheus_client's multiprocess mode: workers usually run on other hosts or
containers than the API, and multiprocess mode only shares files between processes of one host
(and needs its directory wiped at every restart). Redis is already shared by every process, a
task costs one pipelined round trip, and any API replica can report the whole fleet's figures.

Hash ``<prefix>:tasks:durations``, fields ``<task>:<le>`` (runs that took at most ``le``
seconds and more than the bound before it; ``+Inf`` for the rest), ``<task>:sum`` (seconds)
and ``<task>:count``. Each run counts, retried attempts included. Counting never fails a task.
"""

from __future__ import annotations

import bisect
import logging
import time
from typing import Any

import redis
from celery.signals import task_postrun, task_prerun

from core.settings import get_settings
from streams.connect import sync_client
from streams.publish import PUBLISHED

log = logging.getLogger("finrt.workers.metrics")

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
BOUNDS = (*map(str, DURATION_BUCKETS), "+Inf")

_client: redis.Redis | None = None
_started: dict[str, float] = {}


def durations_key(prefix: str) -> str:
    return f"{prefix}:tasks:durations"


def published_key(prefix: str) -> str:
    """Events the workers' tasks published, fleet-wide (each process adds what it published
    since it last did, with its task durations)."""
    return f"{prefix}:tasks:published"


_reported = 0  # of this process's PUBLISHED, what is already in published_key


def record_duration(task_name: str, seconds: float) -> None:
    """Add one run of ``task_name`` to the shared histogram, and the events this process
    published since the last run to the fleet's total (best effort)."""
    global _client, _reported
    s = get_settings()
    bound = BOUNDS[bisect.bisect_left(DURATION_BUCKETS, seconds)]
    key = durations_key(s.redis_prefix)
    try:
        if _client is None:
            _client = sync_client(s.redis_url, socket_timeout=2, socket_connect_timeout=2)
        pipe = _client.pipeline(transaction=False)
        pipe.hincrby(key, f"{task_name}:{bound}", 1)
        pipe.hincrbyfloat(key, f"{task_name}:sum", seconds)
        pipe.hincrby(key, f"{task_name}:count", 1)
        published = PUBLISHED.value
        if published > _reported:
            pipe.incrby(published_key(s.redis_prefix), published - _reported)
        pipe.execute()
        _reported = published
    except redis.RedisError:
        log.debug("task duration not recorded", exc_info=True)


class TaskDurations:
    """One task's histogram as read back: cumulative buckets, sum and count."""

    __slots__ = ("count", "counts", "sum")

    def __init__(self) -> None:
        self.counts = dict.fromkeys(BOUNDS, 0)
        self.sum = 0.0
        self.count = 0

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound in BOUNDS:
            running += self.counts[bound]
            out.append((bound, running))
        return out


def parse_durations(raw: dict[bytes, bytes]) -> dict[str, TaskDurations]:
    """The hash as ``HGETALL`` returns it -> one :class:`TaskDurations` per task."""
    out: dict[str, TaskDurations] = {}
    for field, value in raw.items():
        task, _, part = field.decode().rpartition(":")
        found = out.setdefault(task, TaskDurations())
        if part == "sum":
            found.sum = float(value)
        elif part == "count":
            found.count = int(value)
        elif part in found.counts:
            found.counts[part] = int(value)
    return out


def _name(sender: Any) -> str:
    return str(getattr(sender, "name", None) or sender)


def _on_prerun(task_id: str | None = None, **_kwargs: Any) -> None:
    if task_id is not None:
        _started[task_id] = time.monotonic()


def _on_postrun(sender: Any = None, task_id: str | None = None, **_kwargs: Any) -> None:
    started = _started.pop(task_id, None) if task_id is not None else None
    if started is not None:
        record_duration(_name(sender), time.monotonic() - started)


task_prerun.connect(_on_prerun, weak=False)
task_postrun.connect(_on_postrun, weak=False)
