"""Channel names, built and read here only: ``user:{user id}`` and ``file:{file id}``.

One channel has one name. A file id is written the way ``str(int)`` writes it (ASCII digits, no
leading zero, no sign), so ``file:01`` is not another name for ``file:1``: it is refused, as is
any name not built by :func:`user_channel` or :func:`file_channel`. Every entrance (streams,
history, publishing, the WebSocket, the CLI) checks names with :func:`check_channel`, so an
alias can never open a stream of its own that the real channel's events never reach.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

from streams.envelope import InvalidEvent

USER_ID_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}\Z")
# At most 18 digits: every such number fits a signed 64-bit column.
FILE_ID_RE = re.compile(r"^(?:0|[1-9][0-9]{0,17})\Z")
CHANNEL_RE = re.compile(r"^(?:user:[A-Za-z0-9_.@-]{1,64}|file:(?:0|[1-9][0-9]{0,17}))\Z")

CHANNEL_RULE = (
    "channel must be user:<id> (id: 1-64 of letters, digits, _.@-) or file:<id> "
    "(id: a file number as written, without leading zeros)"
)


class Channel(NamedTuple):
    kind: Literal["user", "file"]
    ident: str


def user_channel(user_id: str) -> str:
    return f"user:{user_id}"


def file_channel(file_id: int) -> str:
    return f"file:{file_id}"


def channel_kind(name: str) -> str:
    """``"file:7"`` -> ``"file"``, for a name already checked (cheap: no validation)."""
    return name.partition(":")[0]


def parse_file_id(raw: str) -> int | None:
    """The file number ``raw`` names, or None unless it is written canonically."""
    # A regex on ASCII digits: str.isdigit() also accepts "\u00b2" and Arabic-Indic digits.
    return int(raw) if FILE_ID_RE.match(raw) else None


def parse_channel(name: str) -> Channel:
    """``"file:7"`` -> ``Channel("file", "7")``; InvalidEvent for any other form."""
    kind, sep, ident = name.partition(":")
    if sep and kind == "user" and USER_ID_RE.match(ident):
        return Channel("user", ident)
    if sep and kind == "file" and FILE_ID_RE.match(ident):
        return Channel("file", ident)
    raise InvalidEvent(CHANNEL_RULE)


def check_channel(name: str) -> str:
    """``name`` itself when it is a channel's one name; InvalidEvent otherwise."""
    if not CHANNEL_RE.match(name):
        raise InvalidEvent(CHANNEL_RULE)
    return name


__all__ = [
    "CHANNEL_RE",
    "CHANNEL_RULE",
    "Channel",
    "channel_kind",
    "check_channel",
    "file_channel",
    "parse_channel",
    "parse_file_id",
    "user_channel",
]
