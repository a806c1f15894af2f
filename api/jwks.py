"""The identity provider's public keys, fetched from its JWKS URL and kept.

Keys are fetched once and reused; an unknown ``kid`` (the provider rotated its keys) triggers a
refetch, but at most one per ``REFETCH_SECONDS``, so a stream of tokens with made-up ``kid``s
cannot turn into a stream of requests to the provider. Fetches are async (httpx) and shared:
many requests waiting on the same key cause one fetch, and none blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import httpx
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKError, PyJWKSetError

log = logging.getLogger("finrt.api.jwks")

# A rotated key is picked up at the latest this long after it is first seen.
REFETCH_SECONDS = 10.0
# Known keys are refreshed after this long (a revoked key stops working).
MAX_AGE_SECONDS = 3600.0
FETCH_TIMEOUT_SECONDS = 5.0


class JwksUnavailable(Exception):
    """The key set could not be fetched or read, so a token naming a key not (yet) known
    cannot be checked; ``retry_after``: seconds until the next fetch may be tried."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class JwksKeys:
    def __init__(self, url: str) -> None:
        self.url = url
        self.keys: dict[str, PyJWK] = {}
        self.fetched_at = 0.0
        self.tried_at = float("-inf")
        self._lock = asyncio.Lock()

    def _lookup(self, kid: str | None) -> PyJWK | None:
        if kid is None:
            # A token without kid is fine when the set holds exactly one key.
            return next(iter(self.keys.values())) if len(self.keys) == 1 else None
        return self.keys.get(kid)

    async def key_for(self, kid: str | None) -> PyJWK | None:
        """The key named ``kid``; None when the provider does not publish it."""
        key = self._lookup(kid)
        if key is not None and time.monotonic() - self.fetched_at <= MAX_AGE_SECONDS:
            return key
        async with self._lock:
            key = self._lookup(kid)
            fresh = time.monotonic() - self.fetched_at <= MAX_AGE_SECONDS
            if (key is None or not fresh) and time.monotonic() - self.tried_at >= REFETCH_SECONDS:
                self.tried_at = time.monotonic()
                await self._fetch()
                key = self._lookup(kid)
            # A known key stays in use when a refresh fails (the provider is briefly down). Any
            # other key cannot be checked while the last fetch failed: the provider may well
            # publish it (a rotation), so the token is not called bad.
            if key is None and self.tried_at > self.fetched_at:
                wait = self.tried_at + REFETCH_SECONDS - time.monotonic()
                raise JwksUnavailable("the key set could not be fetched", max(1, math.ceil(wait)))
            return key

    async def _fetch(self) -> None:
        try:
            async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS) as client:
                response = await client.get(self.url, headers={"Accept": "application/json"})
                response.raise_for_status()
                body: Any = response.json()
            if not isinstance(body, dict):  # PyJWKSet.from_dict assumes an object
                raise ValueError("the key set is not a JSON object")
            keys = PyJWKSet.from_dict(body).keys
        except (httpx.HTTPError, ValueError, PyJWKError, PyJWKSetError) as exc:
            # Known keys stay in use: a provider that is briefly down must not log everyone out.
            log.warning("JWKS fetch from %s failed: %s", self.url, exc)
            return
        # Signing keys only; one without a kid is usable by tokens without one (see _lookup). A
        # kid that is no string (PyJWK keeps whatever the provider sent) names no token's key.
        self.keys = {
            k.key_id or "": k
            for k in keys
            if k.public_key_use in (None, "sig") and isinstance(k.key_id, str | None)
        }
        self.fetched_at = time.monotonic()
        log.info("JWKS fetched from %s: %d keys", self.url, len(self.keys))
