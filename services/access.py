"""Who may read which channel: ``user:{id}`` its user only; ``file:{id}`` its owner and members."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from models import File, FileMember, User
from models.base import utcnow
from streams import channels
from streams.envelope import InvalidEvent


class Forbidden(Exception):
    pass


class NotFound(Exception):
    pass


class AccessCache:
    """Remembers granted (user, channel) pairs for a short while, so opening a stream on a
    busy file costs no database round trip. Only grants are cached. The API only ever adds
    members; a member removed or a file deleted elsewhere is announced on the file's channel,
    and a process that carries that channel forgets its grants for it at once
    (streams/revocation.py); any other process within ``ttl_seconds``."""

    def __init__(self, ttl_seconds: float = 30.0, max_entries: int = 100_000) -> None:
        self.ttl, self.max_entries = ttl_seconds, max_entries
        self._granted: dict[tuple[str, str], float] = {}
        self._users: set[str] = set()

    def granted(self, user_id: str, channel: str) -> bool:
        until = self._granted.get((user_id, channel))
        return until is not None and until > time.monotonic()

    def grant(self, user_id: str, channel: str) -> None:
        if len(self._granted) >= self.max_entries:
            self._granted.clear()
        self._granted[(user_id, channel)] = time.monotonic() + self.ttl

    def forget_channel(self, channel: str) -> None:
        """Access to ``channel`` changed: every grant of it is checked again."""
        for pair in [p for p in self._granted if p[1] == channel]:
            del self._granted[pair]

    def user_known(self, user_id: str) -> bool:
        return user_id in self._users

    def remember_user(self, user_id: str) -> None:
        if len(self._users) >= self.max_entries:
            self._users.clear()
        self._users.add(user_id)


def ensure_user(session: Session, user_id: str) -> None:
    """Users come from the platform's auth service: create one the first time it is seen.

    ``INSERT ... ON CONFLICT DO NOTHING``: a concurrent first sighting is not an error, and the
    caller's transaction (with its outbox rows) is never rolled back for it.
    """
    if session.get(User, user_id) is not None:
        return
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(insert(User).values(id=user_id, created_at=utcnow()).on_conflict_do_nothing())


def lock_user(session: Session, user_id: str, *, key_share: bool = False) -> None:
    """Lock the user's row until the transaction ends, so that one person's changes of one
    kind happen one after the other (PostgreSQL; SQLite serialises writers anyway).

    ``key_share``: ``FOR NO KEY UPDATE``, which leaves rows that refer to the user (their
    notifications, say) insertable meanwhile; otherwise ``FOR UPDATE``. LookupError when the
    user does not exist (callers create it first with :func:`ensure_user`)."""
    locked = session.execute(
        select(User.id).where(User.id == user_id).with_for_update(key_share=key_share)
    ).first()
    if locked is None:
        raise LookupError(f"no user {user_id!r}")


def ensure_users(session: Session, user_ids: list[str]) -> None:
    """:func:`ensure_user` for many users at once: one SELECT of those that exist (per 500),
    one ``INSERT ... ON CONFLICT DO NOTHING`` sent for all the others (none when all exist, so
    a crowd of known users costs no write)."""
    wanted = list(dict.fromkeys(user_ids))
    existing: set[str] = set()
    for start in range(0, len(wanted), 500):  # bounded IN lists
        chunk = wanted[start : start + 500]
        existing.update(session.scalars(select(User.id).where(User.id.in_(chunk))))
    # In one order everywhere: two processes inserting overlapping batches then queue on
    # PostgreSQL instead of deadlocking.
    missing = sorted(u for u in wanted if u not in existing)
    if not missing:
        return
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    now = utcnow()
    # executemany: one compiled statement, the rows sent by the driver in bulk.
    session.execute(
        insert(User).on_conflict_do_nothing(), [{"id": u, "created_at": now} for u in missing]
    )


def own_channel(user_id: str, channel: str) -> bool:
    """Whether ``channel`` is decided without the database: True for the user's own channel;
    Forbidden for another user's, NotFound for a name that is no channel; False for a file's
    channel (its members are in the database)."""
    try:
        kind, ident = channels.parse_channel(channel)
    except InvalidEvent as exc:
        raise NotFound("no such channel") from exc
    if kind != "user":
        return False
    if ident != user_id:
        raise Forbidden("another user's channel")
    return True


def parse_file_id(raw: str) -> int:
    """The file a path or channel names; NotFound unless written canonically (``01`` is not
    file 1: one file, one name)."""
    file_id = channels.parse_file_id(raw)
    if file_id is None:
        raise NotFound("no such file")
    return file_id


def file_for_reader(session: Session, user_id: str, file_id: int) -> File:
    """The file, if ``user_id`` owns it or is a member; NotFound or Forbidden otherwise."""
    file = session.get(File, file_id)
    if file is None:
        raise NotFound("no such file")
    if file.owner_id != user_id:
        member = session.scalar(
            select(FileMember.user_id).where(
                FileMember.file_id == file_id, FileMember.user_id == user_id
            )
        )
        if member is None:
            raise Forbidden("not a member of this file")
    return file


def check_channel(session: Session, user_id: str, channel: str) -> None:
    try:
        kind, ident = channels.parse_channel(channel)
    except InvalidEvent as exc:
        raise NotFound("no such channel") from exc
    if kind == "user":
        if ident != user_id:
            raise Forbidden("another user's channel")
        return
    file_for_reader(session, user_id, parse_file_id(ident))
