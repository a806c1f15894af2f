"""``finrt stats``: the last day's notifications, from the database, and their delivery.

Created, seen, read, acted on and archived come from the notifications themselves (those
created since ``since``; a muted one, archived on arrival, is left out). Deliveries are not
stored per notification (the hub counts them without a database write): they come from the
hourly Redis counters the hubs keep for a little over a day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.notification_types import NOTIFICATION_TYPES
from models.notifications import Notification
from services import engagement
from streams.keys import engagement_key


@dataclass
class TypeFigures:
    created: int = 0
    delivered: int = 0
    seen: int = 0
    read: int = 0
    acted: int = 0
    archived: int = 0
    interacted: int = 0  # read or acted on

    @property
    def delivery_rate(self) -> float | None:
        return None if not self.created else min(self.delivered / self.created, 1.0)

    @property
    def interaction_rate(self) -> float | None:
        return None if not self.created else self.interacted / self.created


def from_database(session: Session, since: datetime) -> dict[str, TypeFigures]:
    out = {t: TypeFigures() for t in NOTIFICATION_TYPES}
    rows = session.execute(
        select(
            Notification.type,
            Notification.created_at,
            Notification.archived_at,
            Notification.seen_at,
            Notification.is_read,
            Notification.actions,
        )
        .where(Notification.created_at >= since)
        .execution_options(yield_per=1000)
    )
    for type, created_at, archived_at, seen_at, is_read, actions in rows:
        if archived_at is not None and archived_at == created_at:
            continue  # muted: archived on arrival, never shown
        f = out.setdefault(type, TypeFigures())
        acted = any(a.get("done_at") for a in actions or [])
        f.created += 1
        f.seen += seen_at is not None
        f.read += bool(is_read)
        f.acted += acted
        f.archived += archived_at is not None
        f.interacted += bool(is_read) or acted
    return out


def add_deliveries(
    figures: dict[str, TypeFigures], client: redis.Redis, prefix: str, now: datetime
) -> None:
    """Deliveries of the last 24 hourly counters (the current hour included)."""
    pipe = client.pipeline(transaction=False)
    for back in range(24):
        hour = (now - timedelta(hours=back)).strftime("%Y%m%d%H")
        pipe.hgetall(engagement_key(prefix, hour))
    for raw in pipe.execute():
        for (kind, type), n in engagement.parse(raw).items():
            if kind == "delivered":
                figures.setdefault(type, TypeFigures()).delivered += n
