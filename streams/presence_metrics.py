"""Presence figures for ``/metrics``: what one process holds and what it costs in Redis calls."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.presence import Presence


class PresenceCollector(Collector):
    def __init__(self, presence: Presence) -> None:
        self.presence = presence

    def collect(self) -> Iterator[Metric]:
        held = self.presence.held()
        yield GaugeMetricFamily(
            "finrt_presence_files", "Files with users present through this process.", held[0]
        )
        yield GaugeMetricFamily(
            "finrt_presence_users",
            "(file, user) pairs present through this process (in a grace period included).",
            held[1],
        )
        stats = self.presence.stats
        for name, text in (
            ("renewals", "Lease renewals: one Redis call each, for all of the connections."),
            ("flushes", "Batched presence writes: one Redis pipeline each."),
            ("reaped", "Processes whose lease ran out, cleaned up by this one."),
        ):
            yield CounterMetricFamily(f"finrt_presence_{name}", text, value=stats[name])
