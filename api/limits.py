"""Per-token rate limits on publishing, uploading and requesting reports (FINRT_PUBLISH_RATE,
FINRT_UPLOAD_RATE, FINRT_REPORT_RATE).

The counters live in Redis, so every API process shares them: a moving window per token and
action (the `limits` library, on the API's own redis-py connection pool), under
``<prefix>:ratelimit:``. Keys carry a digest of the token, never the token. A refused request
takes nothing from the budget.

When Redis cannot be reached the limiter lets the request through and logs a warning: the
request then meets Redis itself (publishing and uploading both need it) and gets that path's
clear 503, instead of a 500 from here.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any, Literal

import redis.asyncio as aioredis
from fastapi import HTTPException
from limits import RateLimitItem
from limits.aio.storage import RedisClusterStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError

from core.settings import Settings, parse_rate
from streams.connect import is_cluster

log = logging.getLogger("finrt.api.limits")

Action = Literal["publish", "upload", "report"]
_ACTING = {"publish": "publishing", "upload": "uploading", "report": "requesting reports"}
# At most one "Redis unreachable" warning this often, however many requests pass meanwhile.
WARN_EVERY_SECONDS = 30.0


def token_digest(token: str) -> str:
    """What identifies a token in Redis keys (128 bits of its SHA-256)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def rate_limited_response(setting: str) -> dict[str, Any]:
    """The 429 as a route declares it in OpenAPI."""
    return {
        "description": f"over the token's rate ({setting}); nothing was done",
        "headers": {
            "Retry-After": {
                "description": "whole seconds until one more request fits",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    }


class RateLimits:
    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        # The storage would build a client of its own from a URL; the API's pool is reused.
        # Passed through a dict: the library types its extra options as plain scalars.
        storage: RedisStorage | RedisClusterStorage
        if is_cluster(settings.redis_url):
            # On a cluster the library keeps a cluster client of its own (seeds from the URL).
            storage = RedisClusterStorage(
                settings.redis_url.replace("redis+cluster://", "async+redis+cluster://", 1),
                implementation="redispy",
                key_prefix=f"{settings.redis_prefix}:ratelimit",
            )
        else:
            options: dict[str, Any] = {"connection_pool": client.connection_pool}
            storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                key_prefix=f"{settings.redis_prefix}:ratelimit",
                **options,
            )
        self._limiter = MovingWindowRateLimiter(storage)
        self.rates: dict[Action, RateLimitItem | None] = {
            "publish": parse_rate(settings.publish_rate),
            "upload": parse_rate(settings.upload_rate),
            "report": parse_rate(settings.report_rate),
        }
        self._warned_at = -math.inf

    async def check(self, action: Action, token: str) -> None:
        """Count one ``action`` for ``token``; 429 with ``Retry-After`` when over its rate."""
        await self._count(action, token, take=True)

    async def room(self, action: Action, token: str) -> None:
        """429 as :meth:`check` when ``token`` has no ``action`` left, but count nothing: for
        a request that may still be refused for another reason (its :meth:`check` follows once
        it is accepted, and stays the authority when two race for the last one)."""
        await self._count(action, token, take=False)

    async def _count(self, action: Action, token: str, *, take: bool) -> None:
        item = self.rates[action]
        if item is None:
            return
        ident = token_digest(token)
        try:
            if await (self._limiter.hit if take else self._limiter.test)(item, action, ident):
                return
            stats = await self._limiter.get_window_stats(item, action, ident)
        except (RedisError, OSError) as exc:
            self._warn(action, exc)
            return
        # When the oldest request in the window leaves it, one more fits.
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        raise HTTPException(
            429,
            f"{_ACTING[action]} is limited to {item} per token; retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )

    def _warn(self, action: Action, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning("rate limit of %s not checked, Redis unreachable: %r", action, exc)
