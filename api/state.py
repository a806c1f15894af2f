"""What one API process holds for its lifetime: settings, Redis, the hub, a publisher, the
rate limits."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis

from api.auth import Principal, TokenVerifier
from api.limits import RateLimits
from core.settings import Settings
from services.access import AccessCache
from streams.batching import TurnBatcher
from streams.hub import Hub
from streams.publish import AsyncPublisher


@dataclass
class AppState:
    settings: Settings
    redis: aioredis.Redis
    hub: Hub
    publisher: AsyncPublisher
    limits: RateLimits
    verifier: TokenVerifier
    access: AccessCache = field(default_factory=AccessCache)
    tokens: dict[str, Principal] = field(default_factory=dict)
    # First sightings of users, created in batches (api/deps.py known_user).
    user_batch: TurnBatcher[str, None] | None = None
