"""``GET /metrics``: Prometheus text for this process's streams and the fleet's Celery tasks.

Stream series are per process (scrape every API replica, not the load balancer); task series
come from Redis, where every worker counts them, so each replica reports the same fleet-wide
figures (aggregate them with ``max``, not ``sum``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from api.deps import StateDep
from api.http_metrics import HttpCollector
from core.notification_types import NOTIFICATION_TYPES
from models.outbox import count_refused
from services import engagement
from streams.keys import engagement_key
from streams.metrics import HubCollector
from streams.presence_metrics import PresenceCollector
from streams.publish import PUBLISHED
from workers.metrics import TaskDurations, durations_key, parse_durations, published_key
from workers.outcomes import outcomes_key

log = logging.getLogger("finrt.api.metrics")

router = APIRouter(tags=["operations"])

# A scrape must answer even when Redis does not: the task series are then left out.
REDIS_READ_TIMEOUT_SECONDS = 1.0
DATABASE_READ_TIMEOUT_SECONDS = 3.0


class TaskCollector(Collector):
    """Task outcomes and durations, as read from Redis for this scrape."""

    def __init__(
        self,
        outcomes: dict[tuple[str, str], int] | None,
        durations: dict[str, TaskDurations] | None,
        published: int | None = None,
    ) -> None:
        self.outcomes, self.durations, self.published = outcomes, durations, published

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "finrt_task_metrics_up",
            "1 when this scrape could read the task counters from Redis.",
            value=0 if self.outcomes is None else 1,
        )
        if self.outcomes is None or self.durations is None:
            return
        outcomes = CounterMetricFamily(
            "finrt_tasks",
            "Celery task runs by outcome (success, failure, retry), fleet-wide.",
            labels=["task", "outcome"],
        )
        for (task, outcome), value in sorted(self.outcomes.items()):
            outcomes.add_metric([task, outcome], value)
        yield outcomes
        durations = HistogramMetricFamily(
            "finrt_task_duration_seconds",
            "Celery task run time (each attempt), fleet-wide.",
            labels=["task"],
        )
        for task, found in sorted(self.durations.items()):
            durations.add_metric([task], found.buckets(), sum_value=found.sum)
        yield durations
        yield CounterMetricFamily(
            "finrt_task_events_published",
            "Events published to Redis by Celery tasks (progress, and the outbox after their "
            "commits), fleet-wide.",
            value=self.published or 0,
        )


class PublishedCollector(Collector):
    """Events this process published to Redis."""

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "finrt_events_published",
            "Events this process published to Redis (POST /events, and the outbox after its "
            "requests' commits).",
            value=PUBLISHED.value,
        )


class OutboxCollector(Collector):
    """Events the outbox could never publish (too large, say): each is logged and kept."""

    def __init__(self, refused: int | None) -> None:
        self.refused = refused

    def collect(self) -> Iterator[Metric]:
        if self.refused is not None:
            yield GaugeMetricFamily(
                "finrt_outbox_refused_events",
                "Outbox events that could never be published (e.g. over FINRT_MAX_EVENT_BYTES); "
                "kept in the outbox table with event_id 'refused', fleet-wide.",
                value=self.refused,
            )


async def _read_refused(state: StateDep) -> int | None:
    try:
        async with asyncio.timeout(DATABASE_READ_TIMEOUT_SECONDS):
            return await run_in_threadpool(count_refused, state.settings.database_url)
    except Exception as exc:
        log.warning("outbox metrics not read from the database: %s", type(exc).__name__)
        return None


class EngagementCollector(Collector):
    """Notifications created, delivered live, seen, read, acted on and archived, by type,
    fleet-wide (services and hubs add to one Redis hash)."""

    def __init__(self, counts: dict[tuple[str, str], int] | None) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        if self.counts is None:
            return
        for kind in engagement.KINDS:
            family = CounterMetricFamily(
                f"finrt_notifications_{kind}",
                f"Notifications {_KIND_TEXT[kind]}, by type, fleet-wide.",
                labels=["type"],
            )
            for type in NOTIFICATION_TYPES:
                family.add_metric([type], self.counts.get((kind, type), 0))
            yield family


_KIND_TEXT = {
    "created": "created (not muted; a digest counts once)",
    "delivered": "that reached at least one stream of their person, live or replayed on "
    "resuming (once however many streams and processes)",
    "seen": "marked seen",
    "read": "marked read",
    "acted": "acted on (an action done; once per notification)",
    "archived": "archived",
}


class LoopCollector(Collector):
    """What the process's event loop holds: a task count that rises and never falls is a leak."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "finrt_event_loop_tasks",
            "asyncio tasks alive in this process's event loop.",
            value=len(asyncio.all_tasks()),
        )
        yield GaugeMetricFamily(
            "finrt_gc_frozen_objects",
            "Objects of the process's start-up heap that the garbage collector no longer walks.",
            value=gc.get_freeze_count(),
        )


def _outcomes(raw: dict[bytes, bytes]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for field, value in raw.items():
        task, _, outcome = field.decode().rpartition(":")
        out[(task, outcome)] = int(value)
    return out


Counts = dict[tuple[str, str], int]


async def _read_tasks(
    state: StateDep,
) -> tuple[Counts | None, dict[str, TaskDurations] | None, Counts | None, int | None]:
    prefix = state.settings.redis_prefix
    try:
        async with asyncio.timeout(REDIS_READ_TIMEOUT_SECONDS):
            pipe = state.redis.pipeline(transaction=False)
            pipe.hgetall(outcomes_key(prefix))
            pipe.hgetall(durations_key(prefix))
            pipe.hgetall(engagement_key(prefix))
            pipe.get(published_key(prefix))
            outcomes, durations, notifications, published = await pipe.execute()
    except Exception as exc:
        log.warning("task metrics not read from Redis: %s", type(exc).__name__)
        return None, None, None, None
    return (
        _outcomes(outcomes),
        parse_durations(durations),
        engagement.parse(notifications),
        int(published or 0),
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics(state: StateDep, request: Request) -> Response:
    """Prometheus metrics: streams of this process, Celery tasks of the fleet."""
    outcomes, durations, notifications, published = await _read_tasks(state)
    refused = await _read_refused(state)
    # A registry per scrape: nothing global, and every value is read as of this request.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(state.hub))
    if state.hub.presence is not None:
        registry.register(PresenceCollector(state.hub.presence))
    registry.register(PublishedCollector())
    registry.register(TaskCollector(outcomes, durations, published))
    registry.register(EngagementCollector(notifications))
    registry.register(LoopCollector())
    registry.register(HttpCollector(request.app.state.http_stats))
    registry.register(OutboxCollector(refused))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
