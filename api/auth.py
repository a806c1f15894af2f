"""JWT authentication: tokens are issued by the platform's auth service (or ``finrt token``)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import jwt

SUB_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}\Z")


class AuthError(Exception):
    """The token is missing, malformed, badly signed or expired."""


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    scopes: frozenset[str]
    expires_at: float

    def can(self, scope: str) -> bool:
        return scope in self.scopes


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
    except jwt.InvalidTokenError as exc:
        raise AuthError("invalid token") from exc
    sub = claims.get("sub")
    if not isinstance(sub, str) or not SUB_RE.match(sub):
        raise AuthError("invalid token subject")
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise AuthError("invalid token scope")
    return Principal(sub, frozenset(scope.split()), float(claims["exp"]))


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
