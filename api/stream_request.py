"""What a stream request asks for, read from its ASGI scope in one place.

The three SSE endpoints are served by the front door (api/front.py), and by their FastAPI routes
when the app runs without it (the routes also describe them in OpenAPI); the WebSocket route
reads its credentials the same way. All of them read the request here: one parser, one set of
limits (:data:`LIMITS`, also what OpenAPI declares), and one rule for which credential wins
(:meth:`Credentials.pick`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

from fastapi import HTTPException
from starlette.types import Scope

from api.errors import bad_request, not_found
from services.access import NotFound, parse_file_id
from streams.channels import check_channel, file_channel, user_channel
from streams.envelope import InvalidEvent

PREFIX = "/api/v1/stream"
_FILE = re.compile(r"^/api/v1/stream/files/([^/]+)/?\Z")

# Longest accepted value of each query parameter (and of the Last-Event-ID header): a longer
# one is refused with 422 before anything else is done.
LIMITS = {"access_token": 4096, "ticket": 64, "last_event_id": 4096}

StreamKind = Literal["notifications", "file", "many"]


@dataclass(frozen=True, slots=True)
class Credentials:
    """Everything a stream client may authenticate with."""

    bearer: str | None = None
    access_token: str | None = None
    ticket: str | None = None

    def pick(self) -> tuple[Literal["token", "ticket"], str] | None:
        """The credential that counts: the bearer header, else ``?access_token=``, else
        ``?ticket=`` (a ticket is spent only when nothing else was sent)."""
        if self.bearer is not None:
            return "token", self.bearer
        if self.access_token is not None:
            return "token", self.access_token
        if self.ticket is not None:
            return "ticket", self.ticket
        return None


@dataclass(frozen=True, slots=True)
class StreamRequest:
    kind: StreamKind
    credentials: Credentials
    last_event_id: str | None
    file_id: str | None = None  # the path's file id, as sent (kind "file")
    requested: tuple[str, ...] = ()  # ``?channel=`` values, as sent (kind "many")

    @property
    def multi(self) -> bool:
        return self.kind == "many"

    def channels(self, user_id: str, max_channels: int) -> list[str]:
        """The channels this request names: 404 for a file id not written canonically, 400
        for a bad channel name or too many of them."""
        if self.kind == "notifications":
            return [user_channel(user_id)]
        if self.kind == "file":
            assert self.file_id is not None
            try:
                return [file_channel(parse_file_id(self.file_id))]
            except NotFound as exc:
                raise not_found(str(exc)) from exc
        return many_channels(list(self.requested), max_channels)


def many_channels(requested: list[str], limit: int) -> list[str]:
    channels = list(dict.fromkeys(requested))
    if not channels:
        raise bad_request("name at least one channel")
    if len(channels) > limit:
        raise bad_request(f"at most {limit} channels per stream")
    for name in channels:
        try:
            check_channel(name)
        except InvalidEvent as exc:
            raise bad_request(str(exc)) from exc
    return channels


def stream_kind(path: str) -> tuple[StreamKind, str | None] | None:
    """Which stream endpoint ``path`` is (and its file id), or None for any other path."""
    if not path.startswith(PREFIX):
        return None
    trimmed = path.rstrip("/")
    if trimmed == PREFIX:
        return "many", None
    if trimmed == PREFIX + "/notifications":
        return "notifications", None
    match = _FILE.match(path)
    return ("file", match.group(1)) if match is not None else None


def read_credentials(scope: Scope) -> tuple[Credentials, dict[str, str], list[str]]:
    """The credentials, the other limited query values and the ``channel`` values.

    422 for a value over its limit. Query values are decoded as Starlette decodes them.
    """
    query: dict[str, str] = {}
    channels: list[str] = []
    for name, value in parse_qsl(scope["query_string"].decode("latin-1")):
        if name == "channel":
            channels.append(value)
        elif name in LIMITS:
            if len(value) > LIMITS[name]:
                raise HTTPException(422, _too_long(name))
            query[name] = value
    bearer = None
    authorization = _header(scope, b"authorization")
    if authorization[:7].lower() == "bearer ":
        bearer = authorization[7:].strip()
    return (
        Credentials(bearer, query.get("access_token"), query.get("ticket")),
        query,
        channels,
    )


def _too_long(name: str) -> str:
    limit = LIMITS["last_event_id" if name == "Last-Event-ID" else name]
    detail = f"{name} is too long (at most {limit:,} characters)"
    if name == "access_token":
        # A token with too many claims for a query string, not a bad one. 123 characters: a
        # WebSocket's whole close reason (RFC 6455 5.5).
        detail += ": use the Authorization header or a ticket (POST /api/v1/stream/tickets)"
    elif name == "ticket":
        detail += ": pass the ticket POST /api/v1/stream/tickets returned, as it is"
    return detail


def parse_stream_request(scope: Scope) -> StreamRequest | None:
    """The stream ``scope`` asks for, or None when its path is not a stream endpoint."""
    found = stream_kind(scope["path"])
    if found is None:
        return None
    kind, file_id = found
    credentials, query, channels = read_credentials(scope)
    last = _header(scope, b"last-event-id").strip() or query.get("last_event_id", "").strip()
    if len(last) > LIMITS["last_event_id"]:
        raise HTTPException(422, _too_long("Last-Event-ID"))
    return StreamRequest(kind, credentials, last or None, file_id, tuple(channels))


def _header(scope: Scope, name: bytes) -> str:
    """The header's value (the last one, as a dict of them would keep), without building that
    dict on every stream's open."""
    value = b""
    for key, raw in scope["headers"]:
        if key == name:
            value = raw
    return value.decode("latin-1")


def openapi_parameters(kind: StreamKind) -> dict[str, Any]:
    """The OpenAPI description of a stream endpoint's parameters, from :data:`LIMITS` (the
    routes take the raw request, so FastAPI does not derive these from their signatures)."""

    def optional(name: str, where: str, description: str) -> dict[str, Any]:
        schema = {"anyOf": [{"type": "string", "maxLength": LIMITS[name]}, {"type": "null"}]}
        return {"name": name, "in": where, "required": False, "schema": schema,
                "description": description}  # fmt: skip

    params: list[dict[str, Any]] = []
    if kind == "many":
        params.append(
            {
                "name": "channel",
                "in": "query",
                "required": True,
                "schema": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "description": "channels, e.g. user:alice",
            }
        )
    params += [
        optional("access_token", "query", "the JWT, for clients that cannot set headers"),
        optional("ticket", "query", "a single-use ticket from POST /stream/tickets"),
        optional("last_event_id", "query", "resume position"),
    ]
    header = optional("last_event_id", "header", "resume position (wins over the query)")
    params.append(header | {"name": "Last-Event-ID"})
    return {"parameters": params, "security": [{"HTTPBearer": []}]}
