"""Counting notification deliveries once across the fleet, with no Redis write per delivery.

A notification counts as delivered when its ``notification`` event is written to at least one
stream of its person: live, or replayed from history when a stream resumes (``Last-Event-ID``).
The hub notes each such event here (in memory, deduplicated by notification id); once per hub
tick, :meth:`DeliveryCounter.save` claims the noted ids in Redis with one pipelined ``SADD`` per
(hour published, type) set. ``SADD`` answers how many ids were new: only those are counted, by
whichever process claimed them first, so several tabs, several API processes and a later
replay of the same notification count it once. The winners are added to the fleet-wide
``delivered:<type>`` counters, and to this process's own ``claimed`` figures (its
``finrt_hub_notifications_claimed_total``, which sums over processes to the fleet's count).

An event published more than :data:`COUNT_WINDOW_SECONDS` ago is not counted (a replay of an
old notification is no new delivery), so a claim set can expire a little after that window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from streams.envelope import Event
from streams.keys import (
    DELIVERY_CLAIM_TTL,
    ENGAGEMENT_HOUR_TTL,
    delivery_claims_key,
    engagement_key,
)

log = logging.getLogger("finrt.hub")

# Deliveries count within a day of the notification's publication (the rate's own window).
COUNT_WINDOW_SECONDS = 24 * 3600
# Ids noted but not yet claimed, kept while Redis does not answer; past this, new ones are
# dropped (and logged once per tick) rather than hold memory without bound.
MAX_PENDING = 100_000
# Ids per SADD command.
CHUNK = 1000


class DeliveryCounter:
    def __init__(self, client: Any, prefix: str) -> None:
        self.client, self.prefix = client, prefix
        # (hour published, type) -> notification ids written to a stream since the last save.
        self._pending: dict[tuple[int, str], set[str]] = {}
        self._n_pending = 0
        # Deliveries this process claimed first, by type, not yet added to the fleet counters.
        self._unsaved: dict[str, int] = {}
        # Deliveries this process claimed first, by type, since it started.
        self.claimed: dict[str, int] = {}
        self.dropped = 0

    def note(self, event: Event) -> None:
        """``event`` (a ``notification``) was written to a stream: count it at the next save,
        unless it is old or a woken snooze (counted when first delivered)."""
        published_ms = event.sid[0]
        if time.time() * 1000 - published_ms > COUNT_WINDOW_SECONDS * 1000:
            return
        try:
            data = orjson.loads(event.envelope)["data"]
            kind = str(data["type"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if data.get("woken_from_snooze"):
            return
        ident = str(data.get("id") or f"{event.channel}/{event.id}")
        ids = self._pending.setdefault((published_ms // 3_600_000, kind), set())
        if ident in ids:
            return
        if self._n_pending >= MAX_PENDING:
            self.dropped += 1
            return
        ids.add(ident)
        self._n_pending += 1

    async def save(self) -> None:
        """Claim the noted ids and add the first deliveries to the fleet's counters; what Redis
        did not take waits for the next call."""
        pending, self._pending, self._n_pending = self._pending, {}, 0
        if pending:
            await self._claim(pending)
        unsaved, self._unsaved = self._unsaved, {}
        if not unsaved:
            return
        hour = datetime.now(UTC).strftime("%Y%m%d%H")
        try:
            async with asyncio.timeout(2.0):
                pipe = self.client.pipeline(transaction=False)
                for kind, n in unsaved.items():
                    pipe.hincrby(engagement_key(self.prefix), f"delivered:{kind}", n)
                    pipe.hincrby(engagement_key(self.prefix, hour), f"delivered:{kind}", n)
                pipe.expire(engagement_key(self.prefix, hour), ENGAGEMENT_HOUR_TTL)
                await pipe.execute()
        except Exception:
            _add(self._unsaved, unsaved)
            log.debug("notification deliveries not yet saved to Redis", exc_info=True)

    async def _claim(self, pending: dict[tuple[int, str], set[str]]) -> None:
        order: list[str] = []  # the type of each SADD, in pipeline order
        try:
            async with asyncio.timeout(2.0):
                pipe = self.client.pipeline(transaction=False)
                for (hour, kind), ids in pending.items():
                    key = delivery_claims_key(self.prefix, hour, kind)
                    members = list(ids)
                    for start in range(0, len(members), CHUNK):
                        pipe.sadd(key, *members[start : start + CHUNK])
                        order.append(kind)
                    pipe.expire(key, DELIVERY_CLAIM_TTL)
                    order.append("")
                answers = await pipe.execute()
        except Exception:
            self._restore(pending)
            log.debug("notification deliveries not yet claimed in Redis", exc_info=True)
            return
        won: dict[str, int] = {}
        for kind, answer in zip(order, answers, strict=True):
            if kind and answer:
                won[kind] = won.get(kind, 0) + int(answer)
        _add(self._unsaved, won)
        _add(self.claimed, won)

    def _restore(self, pending: dict[tuple[int, str], set[str]]) -> None:
        for key, ids in pending.items():
            mine = self._pending.setdefault(key, set())
            room = MAX_PENDING - self._n_pending
            if room <= 0:
                self.dropped += len(ids - mine)
                continue
            new = ids - mine
            kept = set(list(new)[:room])
            self.dropped += len(new) - len(kept)
            mine |= kept
            self._n_pending += len(kept)


def _add(into: dict[str, int], counts: dict[str, int]) -> None:
    for kind, n in counts.items():
        into[kind] = into.get(kind, 0) + n
