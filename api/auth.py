"""JWT authentication: tokens are issued by the platform's identity provider (RS256/ES256,
its public key or JWKS) or, in simple set-ups, signed with a shared secret (``finrt token``)."""

from __future__ import annotations

import fnmatch
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.types import Options

from api.jwks import JwksKeys, JwksUnavailable
from api.private_apis import jwt_decoder
from core.settings import Settings

SUB_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}\Z")
# Asymmetric algorithms accepted, by key type: a token's alg must match its key's type, so
# neither "none" nor an HMAC signed with the public key as a secret is ever verified.
ASYMMETRIC = ("RS256", "ES256")
# The latest expiry a token may carry (9999-12-31T23:59:59Z): beyond it a timer cannot be set.
MAX_EXP = 253_402_300_799
# The optional ``channels`` claim: patterns (``fnmatch``: ``file:*``, ``user:bot-?``) limiting
# where a publish token may publish.
MAX_CHANNEL_PATTERNS = 64
# Decodes every token; its HMAC secret is prepared once (api/private_apis.py).
_decoder = jwt_decoder()


class AuthError(Exception):
    """The token is missing, malformed, badly signed or expired."""


class KeyUnavailable(AuthError):
    """The identity provider's keys could not be fetched (the token may well be fine);
    ``retry_after``: seconds until they are fetched again."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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


def _options(audience: str, issuer: str) -> Options:
    required = ["sub", "exp"] + (["aud"] if audience else []) + (["iss"] if issuer else [])
    return {"require": required, "verify_aud": bool(audience)}


def decode_token(
    token: str,
    key: Any,
    algorithm: str,
    *,
    audience: str = "",
    issuer: str = "",
) -> Principal:
    try:
        claims = _decoder.decode(
            token,
            key,
            algorithms=[algorithm],  # one algorithm only: "none" and key confusion refused
            audience=audience or None,
            issuer=issuer or None,
            options=_options(audience, issuer),
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise AuthError("token not yet valid (its nbf or iat is in the future)") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"invalid token: no {exc.claim} claim") from exc
    except jwt.InvalidAudienceError as exc:
        raise AuthError("token audience is not this service") from exc
    except jwt.InvalidIssuerError as exc:
        raise AuthError("token issuer is not trusted") from exc
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


def _algorithm_for(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        return "ES256"
    raise ValueError("the public key must be RSA or EC P-256 (for RS256 or ES256 tokens)")


def load_public_key(path: str) -> tuple[Any, str]:
    """The PEM public key in ``path`` and the one algorithm it verifies."""
    try:
        key = load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"FINRT_JWT_PUBLIC_KEY_FILE: cannot read a PEM public key: {exc}") from exc
    return key, _algorithm_for(key)


class TokenVerifier:
    """Verifies tokens the way the settings say: shared secret, public key or JWKS."""

    def __init__(self, settings: Settings) -> None:
        self.audience, self.issuer = settings.jwt_audience, settings.jwt_issuer
        self.jwks = JwksKeys(settings.jwt_jwks_url) if settings.jwt_jwks_url else None
        self.key: Any = settings.jwt_secret
        self.algorithm: str = settings.jwt_algorithm
        if settings.jwt_public_key_file:
            self.key, self.algorithm = load_public_key(settings.jwt_public_key_file)

    async def verify(self, token: str) -> Principal:
        if self.jwks is None:
            return self._decode(token, self.key, self.algorithm)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid token") from exc
        kid = header.get("kid")
        if header.get("alg") not in ASYMMETRIC or not (kid is None or isinstance(kid, str)):
            raise AuthError("invalid token")
        try:
            jwk = await self.jwks.key_for(kid)
        except JwksUnavailable as exc:
            raise KeyUnavailable(str(exc), exc.retry_after) from exc
        if jwk is None:
            raise AuthError("invalid token: unknown signing key")
        try:
            algorithm = _algorithm_for(jwk.key)
        except ValueError as exc:
            raise AuthError("invalid token: unusable signing key") from exc
        return self._decode(token, jwk.key, algorithm)

    def _decode(self, token: str, key: Any, algorithm: str) -> Principal:
        return decode_token(token, key, algorithm, audience=self.audience, issuer=self.issuer)


def issue_token(
    user_id: str, secret: str, algorithm: str, *, ttl_seconds: int = 3600, scopes: str = ""
) -> str:
    if not SUB_RE.match(user_id):
        raise ValueError("user id must be 1-64 of letters, digits and _.@-")
    now = int(time.time())
    if now + ttl_seconds > MAX_EXP:  # such a token would be refused everywhere
        raise ValueError(
            "the lifetime is too long: the token would expire after the year 9999 "
            f"(at most {MAX_EXP - now} seconds)"
        )
    claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + ttl_seconds}
    if scopes:
        claims["scope"] = scopes
    return jwt.encode(claims, secret, algorithm=algorithm)
