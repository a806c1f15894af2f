"""What ``GET /metrics`` says about one process's streams: read from the hub at scrape time.

The hub keeps plain int counters (:class:`streams.hub.Stats`) and one :class:`DeliveryLag`;
nothing here runs per event. :class:`HubCollector` turns them into Prometheus series when
scraped, so a process with no scraper pays nothing but the counters.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from core.notification_types import NOTIFICATION_TYPES
from streams.channels import channel_kind

if TYPE_CHECKING:
    from streams.envelope import Event
    from streams.hub import Hub

# Seconds from publish (the envelope's created_at) to the write of a live event.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class DeliveryLag:
    """A histogram of delivery lag as plain numbers (the hub samples one event per flush).

    The clock is the wall clock on both sides (publisher and API process): keep hosts in NTP
    sync, or the lag is off by their skew.
    """

    __slots__ = ("counts", "sum", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LAG_BUCKETS) + 1)  # the last one: above every bound
        self.sum = 0.0
        self.total = 0

    def observe(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.counts[bisect.bisect_left(LAG_BUCKETS, seconds)] += 1
        self.sum += seconds
        self.total += 1

    def observe_event(self, event: Event) -> None:
        if not event.created_at:
            return
        try:
            published = datetime.fromisoformat(event.created_at).timestamp()
        except ValueError:
            return
        self.observe(time.time() - published)

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, ``+Inf`` last, as Prometheus wants them."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(str, LAG_BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


def connections_by_kind(hub: Hub) -> dict[tuple[str, str], int]:
    """Open streams by transport (``sse``, ``websocket``) and by the kind of channel they read
    (``user``, ``file``; ``mixed`` for a connection on both, ``none`` for a WebSocket that has
    not subscribed yet). The counts add up to the open streams."""
    counts: dict[tuple[str, str], int] = {}
    for sub in hub.subscribers():  # a scrape walks them once; nothing is kept per connection
        kinds = {channel_kind(name) for name in sub.positions}
        kind = kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "none")
        key = (sub.transport.label, kind)
        counts[key] = counts.get(key, 0) + 1
    return counts


class HubCollector(Collector):
    """The hub's counters and gauges, read when scraped."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        hub, stats = self.hub, self.hub.stats
        connections = GaugeMetricFamily(
            "finrt_connections_open",
            "Open streams on this process, by transport and by the kind of channel they read.",
            labels=["transport", "channel_kind"],
        )
        found = connections_by_kind(hub)
        for transport in ("sse", "websocket"):
            for kind in ("user", "file"):
                found.setdefault((transport, kind), 0)
        for (transport, kind), value in sorted(found.items()):
            connections.add_metric([transport, kind], value)
        yield connections
        yield GaugeMetricFamily(
            "finrt_channels_subscribed",
            "Channels this process holds a Redis pub/sub subscription for.",
            value=hub.subscribed_channels,
        )
        yield GaugeMetricFamily(
            "finrt_redis_pubsub_connected",
            "1 while this process's pub/sub link to Redis is up.",
            value=1 if hub.connected else 0,
        )
        counters = (
            ("events_received", "Events received from Redis pub/sub.", stats.events_in),
            (
                "events_delivered",
                "Events written to clients (live and replayed from history).",
                stats.deliveries,
            ),
            ("flushes", "Batched writes to clients (one per wake-up under load).", stats.flushes),
            (
                "slow_clients_closed",
                "Streams closed because the client fell FINRT_CLIENT_BUFFER events behind.",
                stats.slow_closed,
            ),
            (
                "streams_closed_by_server",
                "Streams the server ended (slow client, token expiry, shutdown) or whose write "
                "failed; clients that hang up are not counted.",
                stats.closed,
            ),
            ("resumes", "Streams that resumed from history after a Last-Event-ID.", stats.resumes),
            (
                "redis_reconnects",
                "Times the pub/sub link to Redis was re-established.",
                stats.reconnects,
            ),
            (
                "redis_pubsub_unresponsive",
                "Times the pub/sub link was dropped for not answering a PING within "
                "FINRT_REDIS_HEALTH_SECONDS (a silently dead connection).",
                stats.unresponsive,
            ),
        )
        for name, text, value in counters:
            yield CounterMetricFamily(f"finrt_{name}", text, value=value)
        resets = CounterMetricFamily(
            "finrt_resets",
            "Reset events sent: history no longer reached a client's position, by reason "
            "(history_lost: the channel's history began after it, e.g. a Redis restart; "
            "history_trimmed: older than FINRT_HISTORY_MAXLEN events; unknown_position: "
            "beyond the newest event, e.g. after a failover to a replica that lacked it).",
            labels=["reason"],
        )
        for reason, count in sorted(stats.resets.items()):
            resets.add_metric([reason], count)
        yield resets
        counter = hub.delivery_counter
        claimed = CounterMetricFamily(
            "finrt_hub_notifications_claimed",
            "Notifications this process was first to deliver (live or replayed), by type: "
            "summed over API processes, the fleet-wide finrt_notifications_delivered_total.",
            labels=["type"],
        )
        for type in sorted(set(NOTIFICATION_TYPES) | set(counter.claimed)):
            claimed.add_metric([type], counter.claimed.get(type, 0))
        yield claimed
        yield CounterMetricFamily(
            "finrt_hub_notification_deliveries_uncounted",
            "Notification deliveries left uncounted because Redis did not take the claims "
            "for too long (more than 100,000 waiting).",
            value=counter.dropped,
        )
        lag = hub.lag
        yield HistogramMetricFamily(
            "finrt_delivery_lag_seconds",
            "Seconds from publish to the write of a live event (one sample per flush).",
            buckets=lag.buckets(),
            sum_value=lag.sum,
        )


__all__ = ["LAG_BUCKETS", "DeliveryLag", "HubCollector", "connections_by_kind"]
