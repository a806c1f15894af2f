"""Token expiry for every open connection of a process, on one timer.

A connection whose token expires gets ``auth_expired`` and is closed. One ``call_later`` per
connection would cost about 540 bytes each (uvloop's timer handle, the bound callback, its
arguments) for as long as the stream lives; here connections are grouped by their expiry
time (a JWT ``exp`` is a whole second, so the groups are few), the times are kept in a heap,
and one timer is armed for the earliest. A connection costs one dict entry in its group.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable

from streams.subscriber import Subscriber


class Expiries:
    def __init__(self, expire: Callable[[Subscriber], None]) -> None:
        self._expire = expire
        # expiry time -> its connections; a group stays (maybe empty) until its time, so the
        # heap holds each time once however often its connections come and go.
        self._groups: dict[float, dict[Subscriber, None]] = {}
        self._times: list[float] = []
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return sum(len(group) for group in self._groups.values())

    def add(self, sub: Subscriber, when: float) -> None:
        """Expire ``sub`` at ``when`` (seconds since the epoch; now if already past)."""
        self.discard(sub)
        group = self._groups.get(when)
        if group is None:
            group = self._groups[when] = {}
            heapq.heappush(self._times, when)
            if self._times[0] == when:
                self._arm()
        group[sub] = None
        sub.expires_at = when

    def discard(self, sub: Subscriber) -> None:
        """``sub`` is gone: it will not be expired."""
        when, sub.expires_at = sub.expires_at, None
        if when is not None:
            group = self._groups.get(when)
            if group is not None:
                group.pop(sub, None)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self.close()
        if self._times:
            delay = max(0.0, self._times[0] - time.time())
            self._timer = asyncio.get_running_loop().call_later(delay, self._due)

    def _due(self) -> None:
        self._timer = None
        now = time.time()
        while self._times and self._times[0] <= now:
            group = self._groups.pop(heapq.heappop(self._times), None) or {}
            for sub in group:
                sub.expires_at = None
                self._expire(sub)
        self._arm()
