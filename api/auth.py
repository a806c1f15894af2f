"""JWT authentication: tokens are issued by the platform's auth service (or ``finrt token``)."""

from __future__ import annotations

import fnmatch
import math
import re
import time
from dataclasses import dataclass

import jwt

SUB_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}\Z")
# The latest expiry a token may carry (9999-12-31T23:59:59Z): beyond it a timer cannot be set.
MAX_EXP = 253_402_300_799
# The optional ``channels`` claim: patterns (``fnmatch``: ``file:*``, ``user:bot-?``) limiting
# where a publish token may publish.
MAX_CHANNEL_PATTERNS = 64


class AuthError(Exception):
    """The token is missing, malformed, badly signed or expired."""


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    scopes: frozenset[str]
    expires_at: float
    # None: no ``channels`` claim, every channel.
    channels: tuple[str, ...] | None = None

    def can(self, scope: str) -> bool:
        return scope in self.scopes

    def may_publish_to(self, channel: str) -> bool:
        if self.channels is None:
            return True
        return any(fnmatch.fnmatchcase(channel, pattern) for pattern in self.channels)


def decode_token(token: str, secret: str, algorithm: str) -> Principal:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[algorithm],  # one algorithm only: "none" and key confusion refused
            options={"require": ["sub", "exp"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired") from exc
    except (jwt.InvalidTokenError, OverflowError, ValueError, TypeError) as exc:
        # OverflowError: an ``exp`` too large for a float (PyJWT converts it).
        raise AuthError("invalid token") from exc
    sub = claims.get("sub")
    if not isinstance(sub, str) or not SUB_RE.match(sub):
        raise AuthError("invalid token subject")
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise AuthError("invalid token scope")
    exp = claims["exp"]
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise AuthError("invalid token expiry")
    if isinstance(exp, float) and not math.isfinite(exp):
        raise AuthError("invalid token expiry")
    if exp > MAX_EXP:  # compared as given: float() of a huge int raises
        raise AuthError("invalid token expiry: after the year 9999")
    return Principal(sub, frozenset(scope.split()), float(exp), _channels(claims))


def _channels(claims: dict[str, object]) -> tuple[str, ...] | None:
    if "channels" not in claims:
        return None
    value = claims["channels"]
    if (
        not isinstance(value, list)
        or len(value) > MAX_CHANNEL_PATTERNS
        or not all(isinstance(p, str) and 0 < len(p) <= 80 for p in value)
    ):
        raise AuthError(
            f"invalid token channels: a list of up to {MAX_CHANNEL_PATTERNS} patterns "
            "of 1-80 characters"
        )
    return tuple(value)


def issue_token(
    user_id: str, secret: str, algorithm: str, *, ttl_seconds: int = 3600, scopes: str = ""
) -> str:
    if not SUB_RE.match(user_id):
        raise ValueError("user id must be 1-64 of letters, digits and _.@-")
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + ttl_seconds}
    if scopes:
        claims["scope"] = scopes
    return jwt.encode(claims, secret, algorithm=algorithm)
