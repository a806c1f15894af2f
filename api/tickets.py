"""Stream tickets: short-lived, single-use stand-ins for a token in an EventSource URL."""

from __future__ import annotations

import secrets
import time

import orjson
import redis.asyncio as aioredis

from api.auth import AuthError, Principal
from streams.keys import ticket_key


async def issue_ticket(
    client: aioredis.Redis, prefix: str, principal: Principal, ttl_seconds: int
) -> str:
    ticket = secrets.token_urlsafe(24)
    value = orjson.dumps(
        {"sub": principal.user_id, "exp": principal.expires_at, "scope": sorted(principal.scopes)}
    )
    await client.set(ticket_key(prefix, ticket), value, ex=ttl_seconds)
    return ticket


async def redeem_ticket(client: aioredis.Redis, prefix: str, ticket: str) -> Principal:
    """The ticket's principal; the ticket is gone afterwards (GETDEL: single use)."""
    if not (16 <= len(ticket) <= 64) or not ticket.replace("-", "").replace("_", "").isalnum():
        raise AuthError("invalid ticket")
    raw = await client.getdel(ticket_key(prefix, ticket))
    if raw is None:
        raise AuthError("invalid or used ticket")
    doc = orjson.loads(raw)
    if doc["exp"] <= time.time():
        raise AuthError("token expired")
    return Principal(doc["sub"], frozenset(doc.get("scope", [])), float(doc["exp"]))
