"""Tokens from an identity provider: RS256/ES256 verified with a JWKS served by a local HTTP
server (its requests counted) or with a PEM public key; audience and issuer checked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from websockets.sync.client import connect

from api.jwks import REFETCH_SECONDS
from tests.support import make_token

AUD, ISS = "finrt-api", "https://idp.example.test/"


class Jwks:
    """A JWKS endpoint on loopback that counts the requests it gets."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.body: bytes | None = None  # served instead of the keys when set
        self.status = 200  # anything else: the provider is failing (no body)
        self.requests = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.requests += 1
                if jwks.status != 200:
                    self.send_response(jwks.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = jwks.body or json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """The provider goes away: its port refuses connections."""
        self.server.shutdown()
        self.server.server_close()

    def publish(self, kid: str, key: Any, alg: str) -> None:
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
        self.keys.append({**jwk, "kid": kid, "use": "sig", "alg": alg})


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _claims(user: str, **extra: Any) -> dict[str, Any]:
    return {"sub": user, "exp": int(time.time()) + 600, "aud": AUD, "iss": ISS, **extra}


def _sign(key: Any, alg: str, kid: str | None, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A token PyJWT would refuse to make: ``alg`` none, or an HMAC keyed with a public key."""
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    if secret is None:
        return head + "."
    return head + "." + _b64(hmac.new(secret, head.encode(), hashlib.sha256).digest())


def _pem(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _status(url: str, token: str) -> int:
    """The status a stream open gets (the stream itself is closed at once)."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream("GET", url + "/api/v1/stream/notifications", headers=headers) as r:
        if r.status_code == 200:
            assert r.headers["content-type"].startswith("text/event-stream")
        return r.status_code


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    served = Jwks()
    yield served
    served.stop()


def test_jwks_tokens_open_streams_with_one_fetch_and_bad_ones_are_401(start_api, env, user, jwks):
    signing = _rsa()
    jwks.publish("k1", signing, "RS256")
    api = start_api(jwt_jwks_url=jwks.url, jwt_audience=AUD, jwt_issuer=ISS)
    assert jwks.requests == 0  # nothing fetched before a token needs it

    # Many opens, each with a token of its own (no token cache helps): one fetch.
    for n in range(8):
        assert _status(api.url, _sign(signing, "RS256", "k1", _claims(user, jti=str(n)))) == 200
    assert jwks.requests == 1
    with httpx.Client(base_url=api.url) as client:
        good = _sign(signing, "RS256", "k1", _claims(user))
        r = client.get("/api/v1/notifications", headers={"Authorization": f"Bearer {good}"})
        assert r.status_code == 200

    public_pem = _pem(signing)
    bad = {
        "wrong audience": _sign(signing, "RS256", "k1", _claims(user, aud="another-api")),
        "no audience": _sign(signing, "RS256", "k1", {**_claims(user), "aud": None}),
        "wrong issuer": _sign(signing, "RS256", "k1", _claims(user, iss="https://evil.test/")),
        "expired": _sign(signing, "RS256", "k1", _claims(user, exp=int(time.time()) - 60)),
        "other key, same kid": _sign(_rsa(), "RS256", "k1", _claims(user)),
        "alg none": _forged({"alg": "none", "kid": "k1"}, _claims(user), None),
        "key confusion": _forged({"alg": "HS256", "kid": "k1"}, _claims(user), public_pem),
        "shared secret": make_token(env, user, aud=AUD, iss=ISS),
    }
    for name, token in bad.items():
        assert _status(api.url, token) == 401, name
    # Unknown kids: refused, and at most one refetch however many arrive.
    before = jwks.requests
    for n in range(6):
        assert _status(api.url, _sign(_rsa(), "RS256", f"made-up-{n}", _claims(user))) == 401
    assert jwks.requests - before <= 1

    # The provider rotates its keys: a token with the new kid works once the refetch pause
    # has passed, with one more fetch.
    rotated = ec.generate_private_key(ec.SECP256R1())
    jwks.publish("k2", rotated, "ES256")
    time.sleep(REFETCH_SECONDS + 0.5)
    before = jwks.requests
    assert _status(api.url, _sign(rotated, "ES256", "k2", _claims(user))) == 200
    assert _status(api.url, _sign(rotated, "ES256", "k2", _claims(user, jti="x"))) == 200
    assert jwks.requests == before + 1
    # An ES256 key does not verify an RS256 token, whatever the header says.
    assert _status(api.url, _forged({"alg": "RS256", "kid": "k2"}, _claims(user), None)) == 401


def test_public_key_file_verifies_es256_and_refuses_everything_else(start_api, env, user, tmp_path):
    signing = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "idp.pem"
    pem.write_bytes(_pem(signing))
    api = start_api(jwt_public_key_file=str(pem), jwt_issuer=ISS)
    assert _status(api.url, _sign(signing, "ES256", None, _claims(user))) == 200
    # No audience configured: one in the token is not checked.
    assert _status(api.url, _sign(signing, "ES256", None, _claims(user, aud="x"))) == 200
    for token in (
        _sign(signing, "ES256", None, _claims(user, iss="https://other.test/")),
        _sign(ec.generate_private_key(ec.SECP256R1()), "ES256", None, _claims(user)),
        _sign(_rsa(), "RS256", None, _claims(user)),
        _forged({"alg": "HS256"}, _claims(user), _pem(signing)),
        _forged({"alg": "none"}, _claims(user), None),
        make_token(env, user),
    ):
        assert _status(api.url, token) == 401


def test_settings_refuse_what_cannot_work(tmp_path):
    from pydantic import ValidationError

    from core.settings import Settings

    garbage = tmp_path / "bad.pem"
    garbage.write_text("not a key")
    for values, message in (
        ({"jwt_public_key_file": str(tmp_path / "missing.pem")}, "FINRT_JWT_PUBLIC_KEY_FILE"),
        ({"jwt_public_key_file": str(garbage)}, "FINRT_JWT_PUBLIC_KEY_FILE"),
        ({"jwt_jwks_url": "ftp://idp/keys"}, "FINRT_JWT_JWKS_URL"),
        ({"jwt_jwks_url": "http://idp/k", "jwt_public_key_file": str(garbage)}, "not both"),
        ({"cors_origins": "app.example.com"}, "FINRT_CORS_ORIGINS"),
        ({"cors_origins": "https://app.example.com/path"}, "FINRT_CORS_ORIGINS"),
    ):
        with pytest.raises(ValidationError, match=message):
            Settings.model_validate({"env": "production", "jwt_secret": "", **values})
    # A key setting makes the shared secret unnecessary.
    assert Settings(env="production", jwt_secret="", jwt_jwks_url="https://idp/k").jwt_asymmetric
    origins = Settings(jwt_secret="x" * 32, cors_origins=" https://a.test, http://b.test:8080/ ")
    assert origins.cors_origin_list == ["https://a.test", "http://b.test:8080"]


def test_an_unreachable_provider_is_503_not_401(start_api, user):
    from finrt.embedded_redis import free_port

    api = start_api(jwt_jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json")
    token = _sign(_rsa(), "RS256", "k1", _claims(user))
    r = httpx.get(f"{api.url}/api/v1/notifications", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 503 and "identity provider" in r.json()["detail"]
    assert _status(api.url, token) == 503


def test_a_provider_serving_garbage_is_503_not_500(start_api, user, jwks):
    """Regression: a key set that is JSON but no object (a list, a string, null) crashed the
    request (500, a traceback) instead of counting as a provider that cannot be read."""
    signing = _rsa()
    token = _sign(signing, "RS256", "k1", _claims(user))
    for body in (b"[1, 2]", b'"keys"', b"null", b"7"):
        jwks.body = body
        api = start_api(jwt_jwks_url=jwks.url)
        r = httpx.get(
            f"{api.url}/api/v1/notifications", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 503, (body, r.text)
        assert "Traceback" not in api.log(), body
        api.stop()
    # A key whose kid is no string names no token's key; the set's other keys still work.
    jwks.body = None
    jwks.publish("k1", signing, "RS256")
    jwks.keys.insert(0, {**jwks.keys[0], "kid": ["k1"]})
    api = start_api(jwt_jwks_url=jwks.url)
    assert _status(api.url, token) == 200
    assert "Traceback" not in api.log()


def _get(url: str, token: str) -> httpx.Response:
    return httpx.get(f"{url}/api/v1/notifications", headers={"Authorization": f"Bearer {token}"})


@pytest.mark.timeout(60)
def test_an_unknown_kid_while_the_provider_fails_is_503_and_known_keys_still_work(
    start_api, user, jwks
):
    """Regression: with keys known, a token whose kid was not among them while the provider
    answered 5xx got 401 (its token called bad) instead of 503 (it cannot be checked now)."""
    signing, rotated = _rsa(), _rsa()
    jwks.publish("k1", signing, "RS256")
    api = start_api(jwt_jwks_url=jwks.url)
    assert _get(api.url, _sign(signing, "RS256", "k1", _claims(user))).status_code == 200

    jwks.status = 503  # down; meanwhile it rotated to k2, which it cannot tell us about
    time.sleep(REFETCH_SECONDS + 0.5)  # so that an unknown kid makes the API try again
    before = jwks.requests
    r = _get(api.url, _sign(rotated, "RS256", "k2", _claims(user)))
    assert jwks.requests == before + 1
    assert r.status_code == 503, r.text
    assert "identity provider" in r.json()["detail"]
    assert 1 <= int(r.headers["Retry-After"]) <= REFETCH_SECONDS
    # The streams answer the same (the front door), and a known kid still verifies.
    assert _status(api.url, _sign(rotated, "RS256", "k2", _claims(user, jti="s"))) == 503
    assert _get(api.url, _sign(signing, "RS256", "k1", _claims(user, jti="a"))).status_code == 200
    assert _status(api.url, _sign(signing, "RS256", "k1", _claims(user, jti="b"))) == 200
    # A WebSocket is closed with 1013 ("try again later"), the reason whole.
    ws_url = api.url.replace("http", "ws") + "/api/v1/ws?access_token="
    with connect(ws_url + _sign(rotated, "RS256", "k2", _claims(user, jti="w"))) as ws:
        with pytest.raises(websockets.ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1013
    assert "identity provider" in info.value.rcvd.reason
    assert info.value.rcvd.reason.endswith(" s")
    # Made-up kids while it is down cost no more requests to the provider.
    for n in range(4):
        assert _get(api.url, _sign(_rsa(), "RS256", f"x{n}", _claims(user))).status_code == 503
    assert jwks.requests == before + 1
    assert "Traceback" not in api.log()


async def test_key_set_unreachable_or_failing_keeps_known_keys_and_recovers(jwks, monkeypatch):
    """JwksKeys against a provider that stops, fails and comes back (the refetch pause
    shortened): an unknown kid is "cannot check" while the last fetch failed, "unknown" once
    the provider answers again without it."""
    from api import jwks as jwks_module
    from api.jwks import JwksKeys, JwksUnavailable

    monkeypatch.setattr(jwks_module, "REFETCH_SECONDS", 0.2)
    jwks.publish("k1", _rsa(), "RS256")
    keys = JwksKeys(jwks.url)
    assert await keys.key_for("k1") is not None
    assert await keys.key_for("k2") is None  # the provider answered without it: a bad kid

    for failure in ("500", "stopped"):
        if failure == "stopped":
            jwks.stop()
        else:
            jwks.status = 500
        time.sleep(0.3)
        with pytest.raises(JwksUnavailable) as caught:
            await keys.key_for("k2")
        assert caught.value.retry_after == 1
        with pytest.raises(JwksUnavailable):  # within the pause too: still unknown
            await keys.key_for("k2")
        assert await keys.key_for("k1") is not None, failure
        assert await keys.key_for(None) is not None  # one key known: a token without kid

    # The provider is back (another port: the old one was closed), publishing k2.
    back = Jwks()
    try:
        back.keys = [*jwks.keys]
        back.publish("k2", _rsa(), "RS256")
        keys.url = back.url
        time.sleep(0.3)
        assert await keys.key_for("k2") is not None
        assert await keys.key_for("k3") is None
    finally:
        back.stop()


def test_hostile_tokens_against_keys_of_every_type_are_401_never_500(start_api, user, jwks):
    """Each token names a key the JWKS holds, with an algorithm that key must not verify (an
    HMAC "signed" with a symmetric or public key, RS256 with an EC or Ed25519 key, ES256 with
    a P-384 key, algorithms outside RS256/ES256), or breaks a claim rule."""
    signing, p384, ed = _rsa(), ec.generate_private_key(ec.SECP384R1()), _ed25519()
    secret = b"a-symmetric-key-the-provider-should-never-publish"
    jwks.publish("rs", signing, "RS256")
    jwks.publish("p384", p384, "ES384")
    jwks.keys.append({**json.loads(_to_jwk("EdDSA", ed)), "kid": "ed"})
    jwks.keys.append({"kty": "oct", "k": _b64(secret), "kid": "oct"})
    api = start_api(jwt_jwks_url=jwks.url, jwt_audience=AUD, jwt_issuer=ISS)
    now = int(time.time())
    es384 = _sign(p384, "ES384", "p384", _claims(user))
    bad = {
        "HS256 with the oct key": _forged({"alg": "HS256", "kid": "oct"}, _claims(user), secret),
        "RS256 naming the oct key": _forged({"alg": "RS256", "kid": "oct"}, _claims(user), secret),
        "HS256 with the RSA key's PEM": _forged(
            {"alg": "HS256", "kid": "rs"}, _claims(user), _pem(signing)
        ),
        "RS256 naming the Ed25519 key": _sign(signing, "RS256", "ed", _claims(user)),
        "EdDSA": _sign(ed, "EdDSA", "ed", _claims(user)),
        "ES384": es384,
        "ES256 naming the P-384 key": _b64(b'{"alg":"ES256","kid":"p384"}')
        + es384[es384.index(".") :],
        "PS256": _sign(signing, "PS256", "rs", _claims(user)),
        "RS512": _sign(signing, "RS512", "rs", _claims(user)),
        "alg none, no kid": _forged({"alg": "none"}, _claims(user), None),
        "kid a number": _forged({"alg": "RS256", "kid": 7}, _claims(user), None),
        "nbf in the future": _sign(signing, "RS256", "rs", _claims(user, nbf=now + 600)),
        "expired": _sign(signing, "RS256", "rs", _claims(user, exp=now - 5)),
        "no audience": _sign(signing, "RS256", "rs", {**_claims(user), "aud": None}),
        "audience not a string": _sign(signing, "RS256", "rs", _claims(user, aud=[7])),
        "wrong issuer": _sign(signing, "RS256", "rs", _claims(user, iss="https://evil.test/")),
        "header not an object": _b64(b"[1]") + ".e30.AA",
        "deeply nested header": _b64(b'{"alg":"RS256","x":' + b"[" * 3000 + b"]" * 3000 + b"}")
        + ".e30.AA",
    }
    for name, token in bad.items():
        r = _get(api.url, token)
        assert r.status_code == 401, (name, r.text)
        assert _status(api.url, token) == 401, name
    details = {name: _get(api.url, bad[name]).json()["detail"] for name in bad}
    assert "not yet valid" in details["nbf in the future"]
    assert "no aud claim" in details["no audience"]
    assert _status(api.url, _sign(signing, "RS256", "rs", _claims(user))) == 200
    assert "Traceback" not in api.log()


def _ed25519() -> Any:
    return ed25519.Ed25519PrivateKey.generate()


def _to_jwk(alg: str, key: Any) -> str:
    return str(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
