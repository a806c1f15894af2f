"""Access taken away while a stream is open: a file's members changed, or the file was deleted.

A stream's access is checked when it opens (and a grant is cached for a short while, see
services/access.py). Members can also be removed and files deleted after that, from outside
the API (a database client, another service: the database events of docs/files-and-reports.md
announce it as ``file_members`` or ``file_deleted`` on the file's channel). The hub reads those
two events as they pass and takes the channel away from every connection whose user may no
longer read it, at once and in every API process that carries the channel:

- the user is told with an ``access_revoked`` event (``{"channel", "reason"}``); a WebSocket gets
  ``{"type": "unsubscribed", "channel", "reason"}`` instead (its own protocol's word);
- the connection leaves the channel; a stream left with no channel (a single-file stream) ends
  after that event; a WebSocket stays open for its other subscriptions;
- a removed member does not get the ``file_members`` event (who still shares the file is no
  longer theirs to see); everyone gets ``file_deleted`` (it is what they are told);
- the process forgets its cached grants for the channel, so a reconnect is checked against the
  database again and refused (403).

Part of :class:`streams.hub.Hub` (a base class of it, as streams/catchup.py is).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streams.envelope import Event, control_envelope

if TYPE_CHECKING:
    from streams.subscriber import Subscriber

log = logging.getLogger("finrt.hub")

ACCESS_EVENTS = frozenset({"file_members", "file_deleted"})
REVOKED = "access_revoked"
NOT_A_MEMBER = "no longer a member of this file"
FILE_DELETED = "the file was deleted"


def who_may_stay(event: Event) -> tuple[frozenset[str], str] | None:
    """The users who may still read the event's channel and what the others are told, or
    None when the event does not say (a malformed one is delivered and acted on by no one)."""
    if event.type == "file_deleted":
        return frozenset(), FILE_DELETED
    data = event.as_dict().get("data")
    if not isinstance(data, dict):
        return None
    owner, members = data.get("owner_id"), data.get("members")
    if not isinstance(owner, str) or not isinstance(members, list):
        return None
    ids = {owner}
    for member in members:
        user_id = member.get("user_id") if isinstance(member, dict) else None
        if not isinstance(user_id, str):
            return None
        ids.add(user_id)
    return frozenset(ids), NOT_A_MEMBER


class Revocation:
    # The hub's part this one works with (defined by Hub).
    def mark(self, sub: Subscriber) -> None:
        raise NotImplementedError

    def leave(self, sub: Subscriber, channels: list[str] | None = None) -> None:
        raise NotImplementedError

    # Called with a channel whose access changed: the API drops its cached grants for it.
    on_revoke: Callable[[str], None] | None = None

    def deliver_access_event(self, subscribers: set[Subscriber], event: Event) -> set[Subscriber]:
        """Deliver ``file_members`` / ``file_deleted`` to ``subscribers`` (the channel's) and take
        the channel away from those who may no longer read it. Returns the connections that
        now have something to write."""
        verdict = who_may_stay(event)
        if verdict is None:
            log.warning("a %s on %s names no members: access unchanged", event.type, event.channel)
            return {sub for sub in subscribers if sub.offer(event)}
        allowed, reason = verdict
        if self.on_revoke is not None:
            self.on_revoke(event.channel)
        touched: set[Subscriber] = set()
        for sub in list(subscribers):
            if sub.user_id in allowed:
                if sub.offer(event):
                    touched.add(sub)
                continue
            if event.type == "file_deleted":
                sub.offer(event)
            self.revoke(sub, event.channel, reason)
        return touched

    def revoke(self, sub: Subscriber, channel: str, reason: str) -> None:
        """Take ``channel`` away from ``sub``, telling it why."""
        data: dict[str, Any] = {"channel": channel, "reason": reason}
        log.info("took %s away from a stream of %s: %s", channel, sub.user_id, reason)
        # The position the client is at (as auth_expired carries it), before the channel goes.
        envelope = control_envelope(REVOKED, channel, sub.cursor(), data)
        frame = sub.transport.revoked(channel, reason, envelope)
        if sub.transport.ends_when_empty and list(sub.positions) == [channel]:
            sub.close(REVOKED, frame)
            return
        self.leave(sub, [channel])
        sub.queue_raw(frame)
        self.mark(sub)
