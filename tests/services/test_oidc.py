"""services.oidc: every check on a presented JWT, against a JWKS served in-process."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from ledgergate.core.config import OidcSettings
from ledgergate.core.identity import IdentityError
from ledgergate.services.oidc import JWKS_REFETCH_INTERVAL_NS, OidcVerifier, looks_like_jwt

ISSUER = "https://idp.example.com"
NOW_S = 1_700_000_000
NOW = NOW_S * 10**9
S = 10**9

RSA1 = RSAKey.generate_key(2048, parameters={"kid": "r1", "use": "sig"}, private=True)
RSA2 = RSAKey.generate_key(2048, parameters={"kid": "r2", "use": "sig"}, private=True)
EC1 = ECKey.generate_key("P-256", parameters={"kid": "e1", "use": "sig"}, private=True)


class Idp:
    """Discovery + JWKS as an httpx transport; counts JWKS fetches."""

    def __init__(self, *keys: Any, issuer: str = ISSUER) -> None:
        self.keys = list(keys)
        self.issuer = issuer
        self.jwks_fetches = 0
        self.down = False
        self.raw: list[dict[str, Any]] = []  # published as they are

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": self.issuer, "jwks_uri": f"{ISSUER}/jwks"})
        if request.url.path == "/jwks":
            self.jwks_fetches += 1
            return httpx.Response(
                200, json={"keys": [k.as_dict(private=False) for k in self.keys] + self.raw}
            )
        return httpx.Response(404)

    def verifier(self, **over: Any) -> OidcVerifier:
        settings = OidcSettings(issuer=ISSUER, client_id="ledgergate", **over)
        return OidcVerifier(settings, httpx.Client(transport=httpx.MockTransport(self.handler)))


def claims(**over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "iss": ISSUER,
        "aud": "ledgergate",
        "sub": "u-123",
        "email": "alice@example.com",
        "groups": ["dba", "eng"],
        "iat": NOW_S - 10,
        "exp": NOW_S + 300,
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def sign(c: dict[str, Any], key: Any = RSA1, alg: str = "RS256", **header: Any) -> str:
    return jwt.encode({"alg": alg, "kid": key.kid, **header}, c, key, algorithms=[alg])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def refused(v: OidcVerifier, token: str, reason: str, now: int = NOW, **kw: Any) -> None:
    with pytest.raises(IdentityError) as e:
        v.verify(token, now, **kw)
    assert e.value.reason == reason
    for part in token.split("."):
        assert len(part) < 8 or part not in str(e.value)


def test_valid_token_gives_claims() -> None:
    v = Idp(RSA1).verifier()
    got = v.verify(sign(claims()), NOW)
    assert got.subject == "alice@example.com"
    assert got.sub == "u-123"
    assert got.groups == ("dba", "eng")
    assert got.email == "alice@example.com"
    assert got.expires_ns == (NOW_S + 300) * S
    assert (got.issuer, got.source) == (ISSUER, "oidc")


def test_username_falls_back_to_sub_and_groups_forms() -> None:
    v = Idp(RSA1).verifier()
    got = v.verify(sign(claims(email=None, groups="dba")), NOW)
    assert (got.subject, got.email, got.groups) == ("u-123", None, ("dba",))
    got = v.verify(sign(claims(email="", groups=None)), NOW)
    assert (got.subject, got.groups) == ("u-123", ())
    refused(v, sign(claims(groups=["a", 1])), "malformed token")
    named = Idp(RSA1).verifier(username_claim="preferred_username", groups_claim="roles")
    got = named.verify(sign(claims(preferred_username="alice", roles=["r"])), NOW)
    assert (got.subject, got.groups) == ("alice", ("r",))


def test_ec_key_and_multiple_keys() -> None:
    v = Idp(RSA1, EC1).verifier()
    assert v.verify(sign(claims(), EC1, "ES256"), NOW).sub == "u-123"
    # An RS256 header naming the EC key is refused, not tried.
    header = b64(json.dumps({"alg": "RS256", "kid": "e1"}).encode())
    forged = header + "." + ".".join(sign(claims(), EC1, "ES256").split(".")[1:])
    refused(v, forged, "algorithm not allowed")


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"aud": "someone-else"}, "wrong audience"),
        ({"aud": ["a", "b"]}, "wrong audience"),
        ({"aud": ["ledgergate", "other"], "azp": "other"}, "wrong audience"),
        ({"aud": None}, "wrong audience"),
        ({"iss": "https://evil.example.com"}, "wrong issuer"),
        ({"iss": ISSUER + "/"}, "wrong issuer"),
        ({"exp": NOW_S - 61}, "token expired"),
        ({"nbf": NOW_S + 61}, "token not yet valid"),
        ({"iat": NOW_S + 61}, "issued in the future"),
        ({"exp": None}, "malformed token"),
        ({"iat": None}, "malformed token"),
        ({"exp": "tomorrow"}, "malformed token"),
        ({"exp": True}, "malformed token"),
        ({"sub": None}, "malformed token"),
    ],
)
def test_claim_refusals(over: dict[str, Any], reason: str) -> None:
    refused(Idp(RSA1).verifier(), sign(claims(**over)), reason)


def test_clock_skew_and_accepted_audiences() -> None:
    v = Idp(RSA1).verifier()
    v.verify(sign(claims(exp=NOW_S - 59, nbf=NOW_S + 59, iat=NOW_S + 59)), NOW)
    v.verify(sign(claims(aud=["other", "ledgergate"], azp="ledgergate")), NOW)
    v.verify(sign(claims(azp="someone")), NOW)  # a single audience: azp is informative
    extra = Idp(RSA1).verifier(audience=["api://ledgergate"])
    extra.verify(sign(claims(aud="api://ledgergate")), NOW)
    refused(extra, sign(claims()), "wrong audience")


def test_nonce_and_max_age() -> None:
    v = Idp(RSA1).verifier()
    token = sign(claims(nonce="n-1"))
    v.verify(token, NOW, nonce="n-1")
    refused(v, token, "wrong nonce", nonce="n-2")
    refused(v, sign(claims()), "wrong nonce", nonce="n-1")
    v.verify(token, NOW, max_age_ns=60 * S)
    refused(v, token, "token too old", NOW + 200 * S, max_age_ns=60 * S)


def test_alg_none_and_hmac_with_public_key_are_refused() -> None:
    v = Idp(RSA1).verifier()
    body = b64(json.dumps(claims()).encode())
    none = b64(b'{"alg":"none","kid":"r1"}') + "." + body + "."
    refused(v, none, "algorithm not allowed")
    header = b64(b'{"alg":"HS256","kid":"r1"}')
    for secret in (
        RSA1.as_pem(private=False),
        json.dumps(RSA1.as_dict(private=False)).encode(),
    ):
        mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
        refused(v, f"{header}.{body}.{b64(mac)}", "algorithm not allowed")
    # An asymmetric algorithm that is not on the allow-list.
    narrow = Idp(EC1).verifier(algorithms=["RS256"])
    refused(narrow, sign(claims(), EC1, "ES256"), "algorithm not allowed")


def test_bad_signature_and_malformed() -> None:
    v = Idp(RSA1, RSA2).verifier()
    token = sign(claims())
    h, p, sig = token.split(".")
    refused(v, f"{h}.{p}.{sig[:-4]}AAAA", "bad signature")
    other_payload = b64(json.dumps(claims(sub="admin")).encode())
    refused(v, f"{h}.{other_payload}.{sig}", "bad signature")
    # Signed by RSA2 but claiming RSA1's kid.
    refused(v, sign(claims(), RSA2, kid="r1"), "bad signature")
    for junk in ("", "abc", "a.b", "a.b.c.d.e", "!!!.b.c", b64(b"[1]") + ".e30.", "x" * 20000):
        refused(v, junk, "malformed token")
    refused(v, b64(b'{"alg":"RS256","kid":7}') + ".e30.AAAA", "malformed token")


def test_unknown_kid_refetches_at_most_once_per_interval() -> None:
    idp = Idp(RSA1)
    v = idp.verifier()
    v.verify(sign(claims()), NOW)
    assert idp.jwks_fetches == 1
    stranger = RSAKey.generate_key(2048, parameters={"kid": "x9"}, private=True)
    refused(v, sign(claims(), stranger), "unknown key id")
    assert idp.jwks_fetches == 2
    refused(v, sign(claims(), stranger), "unknown key id", NOW + 29 * S)
    assert idp.jwks_fetches == 2  # rate limited
    refused(v, sign(claims(), stranger), "unknown key id", NOW + JWKS_REFETCH_INTERVAL_NS)
    assert idp.jwks_fetches == 3
    v.verify(sign(claims()), NOW + 31 * S)  # a known kid never refetches
    assert idp.jwks_fetches == 3


def test_rotation_is_picked_up_on_unknown_kid() -> None:
    idp = Idp(RSA1)
    v = idp.verifier()
    v.verify(sign(claims()), NOW)
    idp.keys = [RSA2]
    assert v.verify(sign(claims(), RSA2), NOW + S).sub == "u-123"
    assert idp.jwks_fetches == 2
    # The refetched set replaced the old one: the retired key is gone at once.
    refused(v, sign(claims()), "unknown key id", NOW + 2 * S)
    assert idp.jwks_fetches == 2


def test_cache_expires_after_jwks_cache() -> None:
    idp = Idp(RSA1)
    v = idp.verifier(jwks_cache="5m")
    v.verify(sign(claims()), NOW)
    v.verify(sign(claims()), NOW + 299 * S)
    assert idp.jwks_fetches == 1
    later = NOW_S + 300
    v.verify(sign(claims(iat=later, exp=later + 60)), later * S)
    assert idp.jwks_fetches == 2


def test_kid_less_token_needs_a_single_key() -> None:
    token = jwt.encode({"alg": "RS256"}, claims(), RSA1)
    assert Idp(RSA1).verifier().verify(token, NOW).sub == "u-123"
    refused(Idp(RSA1, RSA2).verifier(), token, "unknown key id")


def test_provider_unreachable_and_misconfigured() -> None:
    idp = Idp(RSA1)
    idp.down = True
    refused(idp.verifier(), sign(claims()), "provider unreachable")
    refused(Idp(RSA1, issuer="https://other").verifier(), sign(claims()), "provider misconfigured")
    # Symmetric, encryption and unreadable keys in the JWKS are skipped, not fatal.
    idp = Idp(RSA1)
    idp.raw = [
        {"kty": "oct", "kid": "s1", "k": b64(b"secret")},
        {**RSA2.as_dict(private=False), "kid": "enc", "use": "enc"},
        {"kty": "RSA", "kid": "bad", "n": "AA"},
        "junk",  # type: ignore[list-item]
    ]
    v = idp.verifier()
    v.verify(sign(claims()), NOW)
    for kid in ("s1", "enc", "bad"):
        refused(v, sign(claims(), RSA2, kid=kid), "unknown key id")


def test_failed_fetch_fails_fast_then_recovers() -> None:
    idp = Idp(RSA1)
    v = idp.verifier()
    idp.down = True
    refused(v, sign(claims()), "provider unreachable")
    idp.down = False
    refused(v, sign(claims()), "provider unreachable", NOW + 4 * S)  # no new attempt yet
    assert idp.jwks_fetches == 0
    assert v.verify(sign(claims()), NOW + 5 * S).sub == "u-123"
    # A failed unknown-kid refetch keeps the cached keys.
    idp.down = True
    refused(v, sign(claims(), RSA2), "provider unreachable", NOW + 6 * S)
    assert v.verify(sign(claims()), NOW + 7 * S).sub == "u-123"


def test_threads_share_one_fetch() -> None:
    idp = Idp(RSA1)
    v = idp.verifier()
    token = sign(claims())
    results: list[str] = []

    def work() -> None:
        for _ in range(20):
            results.append(v.verify(token, NOW).sub)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["u-123"] * 160
    assert idp.jwks_fetches == 1


def test_looks_like_jwt() -> None:
    assert looks_like_jwt(sign(claims()))
    assert looks_like_jwt(b64(b'{"alg":"none"}') + ".e30.")
    for s in ("", "hunter2", "lgt_abc.def.ghi", "a.b.c", "e30.e30", b64(b"[]") + ".e30.x"):
        assert not looks_like_jwt(s), s
    assert not looks_like_jwt(sign(claims()) + "!")
