"""Redis names for a channel, all in one place.

A channel's keys carry the channel in a hash tag (``{file:7}``) so that on a Redis Cluster its
history stream and its pub/sub wake-ups land on one shard.
"""

from __future__ import annotations


def pubsub_channel(prefix: str, channel: str) -> str:
    """The Redis pub/sub channel that carries a channel's live events (payload: envelope JSON)."""
    return f"{prefix}:{{{channel}}}"


def history_key(prefix: str, channel: str) -> str:
    """The capped Redis Stream that keeps a channel's recent events; stream id = event id."""
    return f"{prefix}:{{{channel}}}:h"


def channel_from_pubsub(prefix: str, name: str) -> str:
    """Inverse of :func:`pubsub_channel`."""
    return name[len(prefix) + 2 : -1]


def ticket_key(prefix: str, ticket: str) -> str:
    """A single-use stream ticket; value: JSON ``{"sub", "exp"}``; TTL: the ticket's life."""
    return f"{prefix}:ticket:{ticket}"


def dedupe_key(prefix: str, channel: str, token: str) -> str:
    """Marks an idempotent publish as done; value: the event id; TTL: seven days."""
    return f"{prefix}:{{{channel}}}:d:{token}"


def presence_key(prefix: str, channel: str, part: str) -> str:
    """A file's presence, in the channel's hash tag: ``u`` (user -> processes holding it),
    ``c`` (user -> connections), ``z`` (user by since), ``p:<process>`` (that process's users)."""
    return f"{prefix}:{{{channel}}}:pr:{part}"


def presence_procs_key(prefix: str) -> str:
    """Every API process that holds presence, scored by its lease's end (Redis time, ms)."""
    return f"{prefix}:presence:procs"


def presence_files_key(prefix: str, process: str) -> str:
    """The file channels where ``process`` holds presence (read when its lease has expired)."""
    return f"{prefix}:presence:files:{process}"


# An hour's notification counters live a little over a day ("finrt stats" reads the last 24).
ENGAGEMENT_HOUR_TTL = 26 * 3600


def engagement_key(prefix: str, hour: str | None = None) -> str:
    """Notification counters by ``<kind>:<type>`` (created, delivered, seen, read, acted,
    archived): the running totals, or with ``hour`` (``YYYYMMDDHH``, UTC) that hour's, kept a
    little over a day for ``finrt stats``."""
    return f"{prefix}:notifications:engagement" + (f":{hour}" if hour else "")


# A claim set outlives the day in which its notifications' deliveries count (see
# streams/delivery_counts.py), whatever hour of that day it was last touched.
DELIVERY_CLAIM_TTL = 26 * 3600


def delivery_claims_key(prefix: str, hour: int, type: str) -> str:
    """The ids of the notifications of ``type`` published in ``hour`` (hours since the epoch,
    UTC) that some stream has received: a process counts a delivery only if its ``SADD`` added
    the id."""
    return f"{prefix}:notifications:delivered:{hour}:{type}"
