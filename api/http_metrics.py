"""HTTP request series for ``GET /metrics`` and the build's identity (``finrt_build_info``).

Counted by the request-id middleware as plain numbers (no prometheus_client objects on the hot
path); :class:`HttpCollector` turns them into series when scraped. Requests are labelled by
their route's template (``/api/v1/files/{file_id}``), never by the raw path, so the series stay
few. The stream front door's requests (SSE) are not here: the hub's series cover them.
"""

from __future__ import annotations

import bisect
import platform
from collections.abc import Iterator
from importlib import metadata

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

# Seconds to the response's first byte.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpStats:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.durations: dict[tuple[str, str], list[float]] = {}  # bucket counts, then the sum

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        found = self.durations.get((method, route))
        if found is None:
            found = self.durations[(method, route)] = [0.0] * (len(BUCKETS) + 2)
        found[bisect.bisect_left(BUCKETS, seconds)] += 1
        found[-1] += seconds


def version() -> str:
    try:
        return metadata.version("finvision-realtime")
    except metadata.PackageNotFoundError:
        return "unknown"


class HttpCollector(Collector):
    def __init__(self, stats: HttpStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "finrt_build_info",
            "Always 1; the labels say which build and Python this process runs.",
            labels=["version", "python"],
        )
        info.add_metric([version(), platform.python_version()], 1)
        yield info
        requests = CounterMetricFamily(
            "finrt_http_requests",
            "HTTP requests answered (streams excepted), by method, route template and status.",
            labels=["method", "route", "status"],
        )
        for key, count in sorted(self.stats.requests.items()):
            requests.add_metric(list(key), count)
        yield requests
        durations = HistogramMetricFamily(
            "finrt_http_request_duration_seconds",
            "Seconds from a request's arrival to its response's first byte.",
            labels=["method", "route"],
        )
        for (method, route), counts in sorted(self.stats.durations.items()):
            running, buckets = 0.0, []
            for bound, n in zip((*map(str, BUCKETS), "+Inf"), counts[:-1], strict=True):
                running += n
                buckets.append((bound, running))
            durations.add_metric([method, route], buckets, sum_value=counts[-1])
        yield durations
