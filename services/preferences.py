"""Notification preferences: per person and per type, shown in the inbox and toasted or not.

No row means both on. Critical types (the built-in ones and FINRT_CRITICAL_TYPES) are always on
and refuse to be turned off. A muted type (``inbox`` off) is still stored, but archived on
arrival: never delivered live, in no count or badge, not counted as created in the metrics,
and found under ``status=archived``. ``toast`` off keeps it in the inbox and live, only the
pop-up is left out (the page reads the preferences and their ``preferences_updated`` event).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.notification_types import BUILT_IN_CRITICAL_TYPES, NOTIFICATION_TYPES
from core.settings import get_settings
from models.notifications import NotificationPreference
from models.outbox import enqueue
from services.access import ensure_user, lock_user
from streams.channels import user_channel


class CriticalType(ValueError):
    """An attempt to turn off a type that must always reach the person."""


def critical_types() -> frozenset[str]:
    return frozenset(BUILT_IN_CRITICAL_TYPES) | frozenset(get_settings().critical_type_list)


def is_critical(type: str) -> bool:
    return type in critical_types()


def preferences(session: Session, user_id: str) -> dict[str, Any]:
    """``{"types": {type: {"inbox", "toast", "critical"}}}`` for every known type."""
    critical = critical_types()
    stored = {
        p.type: p
        for p in session.scalars(
            select(NotificationPreference).where(NotificationPreference.user_id == user_id)
        )
    }
    types: dict[str, dict[str, bool]] = {}
    for type in NOTIFICATION_TYPES:
        row = stored.get(type)
        on = type in critical or row is None
        types[type] = {
            "inbox": on or bool(row and row.inbox),
            "toast": on or bool(row and row.toast),
            "critical": type in critical,
        }
    return {"types": types}


def muted(session: Session, user_id: str, type: str) -> bool:
    """Whether ``type`` is kept out of this person's inbox (never for a critical type)."""
    if is_critical(type):
        return False
    row = session.get(NotificationPreference, (user_id, type))
    return row is not None and not row.inbox


def update_preferences(
    session: Session, user_id: str, changes: dict[str, dict[str, bool]]
) -> dict[str, Any]:
    """Store the listed types' choices (others unchanged) and enqueue ``preferences_updated``
    (not when every choice was already so: a call that changes nothing publishes nothing).

    ValueError for an unknown type; CriticalType (a ValueError) for turning a critical one off.
    Nothing is stored unless every change is valid.
    """
    critical = critical_types()
    for type, choice in changes.items():
        if type not in NOTIFICATION_TYPES:
            raise ValueError(
                f"{type!r} is not a notification type (one of {', '.join(NOTIFICATION_TYPES)})"
            )
        if type in critical and not (choice["inbox"] and choice["toast"]):
            raise CriticalType(
                f"{type} is critical: it always reaches the inbox and pops up, "
                "and cannot be turned off"
            )
        if "critical" in choice and choice["critical"] != (type in critical):
            raise ValueError(f"{type}: whether a type is critical is the operator's setting")
    ensure_user(session, user_id)
    # One change of a person's preferences at a time: two first choices of one type would
    # both insert its row (a 500 for the second), and each event must show what the one
    # before it stored. FOR NO KEY UPDATE leaves inserts referring to the user unblocked.
    lock_user(session, user_id, key_share=True)
    now = datetime.now(UTC)
    before = preferences(session, user_id)
    changed = False
    for type, choice in changes.items():
        current = before["types"][type]
        if (current["inbox"], current["toast"]) == (choice["inbox"], choice["toast"]):
            continue  # already so: nothing to store, nothing to announce
        row = session.get(NotificationPreference, (user_id, type))
        if row is None:
            row = NotificationPreference(user_id=user_id, type=type)
            session.add(row)
        row.inbox, row.toast, row.updated_at = choice["inbox"], choice["toast"], now
        changed = True
    if not changed:
        return before
    session.flush()
    result = preferences(session, user_id)
    enqueue(session, user_channel(user_id), "preferences_updated", result)
    return result
