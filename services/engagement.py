"""Notification engagement counters: created, seen, read, acted on, archived, by type.

Counted where they happen (the services), added to Redis only once the change commits (a
rolled-back change counts nothing), so every API process and worker adds to one set of figures
that ``GET /metrics`` reads. Deliveries are counted by the hubs into the same hash, once per
notification across the fleet (``streams/delivery_counts.py``). Counting never fails the
change: without Redis the figures miss it.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime

import redis
from sqlalchemy import event
from sqlalchemy.orm import Session

from core.settings import get_settings
from streams.connect import sync_client
from streams.keys import ENGAGEMENT_HOUR_TTL, engagement_key

log = logging.getLogger("finrt.engagement")

KINDS = ("created", "delivered", "seen", "read", "acted", "archived")
_INFO_KEY = "finrt_engagement"
_client: redis.Redis | None = None


def count(session: Session, kind: str, type: str, n: int = 1) -> None:
    """Count ``n`` of ``kind`` for notifications of ``type`` once ``session`` commits."""
    if n <= 0:
        return
    pending: Counter[tuple[str, str]] = session.info.setdefault(_INFO_KEY, Counter())
    pending[(kind, type)] += n


def count_types(session: Session, kind: str, types: list[str]) -> None:
    for type, n in Counter(types).items():
        count(session, kind, type, n)


def save(counts: Counter[tuple[str, str]]) -> None:
    global _client
    s = get_settings()
    hour = datetime.now(UTC).strftime("%Y%m%d%H")
    try:
        if _client is None:
            _client = sync_client(s.redis_url, socket_timeout=2, socket_connect_timeout=2)
        pipe = _client.pipeline(transaction=False)
        for (kind, type), n in counts.items():
            pipe.hincrby(engagement_key(s.redis_prefix), f"{kind}:{type}", n)
            pipe.hincrby(engagement_key(s.redis_prefix, hour), f"{kind}:{type}", n)
        pipe.expire(engagement_key(s.redis_prefix, hour), ENGAGEMENT_HOUR_TTL)
        pipe.execute()
    except redis.RedisError:
        log.debug("notification engagement not counted", exc_info=True)


def parse(raw: dict[bytes, bytes]) -> dict[tuple[str, str], int]:
    """A counter hash as ``{(kind, type): n}``."""
    out: dict[tuple[str, str], int] = {}
    for field, value in raw.items():
        kind, _, type = field.decode().partition(":")
        out[(kind, type)] = int(value)
    return out


@event.listens_for(Session, "after_commit")
def _save_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return
    counts: Counter[tuple[str, str]] | None = session.info.pop(_INFO_KEY, None)
    if counts:
        save(counts)


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_INFO_KEY, None)
