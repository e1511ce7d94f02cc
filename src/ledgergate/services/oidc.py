"""OpenID Connect relying party, gateway side: is this JWT from our provider, for us, now?

Owns discovery, the provider's signing keys (fetched, cached, refetched on rotation) and
every check on an ID token or IdP access token presented to the gateway, ending in
``Claims``. Signatures are verified by joserfc only; nothing here does crypto by hand.
Every refusal is an ``IdentityError`` with a short reason code; a message never contains
the token. HTTP and JOSE exceptions are translated here and do not leave this module.

Rules: only the configured asymmetric algorithms are accepted (``none`` and HMAC never,
so a token "signed" with the provider's public key as an HMAC secret fails); the key is
chosen by ``kid`` and must suit the header's ``alg``; ``exp`` and ``iat`` are required;
times allow ``clock_skew`` either way. The verifier is shared by worker threads: one
lock guards the cache and its fetches, verification itself runs outside it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key

from ledgergate.core.config import OidcSettings, parse_duration
from ledgergate.core.identity import Claims, IdentityError

__all__ = ["JWKS_REFETCH_INTERVAL_NS", "OidcVerifier", "looks_like_jwt"]

# An unknown ``kid`` makes the verifier refetch the JWKS at most once per 30 s: the
# provider's key rotation is picked up within a connection attempt or two, while a client
# presenting made-up key ids cannot make the gateway fetch the JWKS on every connection.
JWKS_REFETCH_INTERVAL_NS = 30 * 10**9
# After a failed discovery or JWKS fetch, connections fail at once for this long instead
# of each waiting out its own timeout in turn behind the lock while the provider is down.
FETCH_RETRY_NS = 5 * 10**9
# Real ID tokens are a few kB; anything far larger is refused before it is parsed.
MAX_TOKEN_BYTES = 16 * 1024
# Discovery and JWKS requests give up after this long (seconds): a login must not hang.
HTTP_TIMEOUT_S = 10.0

_KEY_TYPE_FOR_ALG = {"RS": RSAKey, "PS": RSAKey, "ES": ECKey, "Ed": OKPKey}
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_NS = 10**9

PublicKey = RSAKey | ECKey | OKPKey


def _b64decode(part: str) -> bytes:
    if not part or not set(part) <= _B64URL:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, or ValueError."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not three parts")
    try:
        header = json.loads(_b64decode(parts[0]))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError("header is not base64url JSON") from e
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header


def looks_like_jwt(s: str) -> bool:
    """Whether ``s`` has the shape of a signed JWT (three base64url parts, the first a
    JSON header), so the gateway can route a password to the OIDC verifier."""
    if len(s) > MAX_TOKEN_BYTES or s.count(".") != 2:
        return False
    try:
        _header(s)
    except ValueError:
        return False
    _, payload, signature = s.split(".")
    # An empty signature still looks like a JWT (``alg: none``): the verifier refuses it
    # with a clear reason rather than treating it as a password.
    return bool(payload) and set(payload + signature) <= _B64URL


@dataclass(frozen=True, slots=True)
class _Keys:
    by_kid: Mapping[str, PublicKey]
    unnamed: tuple[PublicKey, ...]  # keys published without a ``kid``
    fetched_ns: int


class OidcVerifier:
    """Verifies JWTs from one OpenID provider; build one per provider and share it."""

    def __init__(self, settings: OidcSettings, http: httpx.Client | None = None) -> None:
        self.settings = settings
        self.audiences = tuple(settings.audience or [settings.client_id])
        self.algorithms = frozenset(settings.algorithms)
        self.skew_ns = parse_duration(settings.clock_skew)
        self.cache_ns = parse_duration(settings.jwks_cache)
        self._http = http
        self._own_http = http is None
        self._lock = threading.Lock()
        self._jwks_uri: str | None = None
        self._discovered_ns = 0
        self._keys: _Keys | None = None
        self._last_refetch_ns: int | None = None
        self._failed_ns: int | None = None

    def __enter__(self) -> OidcVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP client this verifier made (not one passed in)."""
        with self._lock:
            if self._own_http and self._http is not None:
                self._http.close()
                self._http = None

    # -- fetching --------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        if self._http is None:
            verify: ssl.SSLContext | bool = True
            if self.settings.ca_file:
                verify = ssl.create_default_context(cafile=self.settings.ca_file)
            self._http = httpx.Client(timeout=HTTP_TIMEOUT_S, verify=verify)
        return self._http

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            resp = self._client().get(url, headers={"Accept": "application/json"})
            resp.raise_for_status()
            doc = resp.json()
        except (httpx.HTTPError, ValueError) as e:
            raise IdentityError(
                f"the identity provider's {what} could not be fetched ({type(e).__name__})",
                "provider unreachable",
            ) from e
        if not isinstance(doc, dict):
            raise IdentityError(
                f"the identity provider's {what} is not a JSON object", "provider unreachable"
            )
        return doc

    def _discover(self, now_ns: int) -> str:
        if self._jwks_uri is None or now_ns - self._discovered_ns >= self.cache_ns:
            issuer = self.settings.issuer
            doc = self._get_json(
                issuer.rstrip("/") + "/.well-known/openid-configuration", "discovery document"
            )
            if doc.get("issuer") != issuer:
                raise IdentityError(
                    "the identity provider's discovery document names another issuer",
                    "provider misconfigured",
                )
            uri = doc.get("jwks_uri")
            if not isinstance(uri, str) or not uri:
                raise IdentityError(
                    "the identity provider publishes no jwks_uri", "provider misconfigured"
                )
            self._jwks_uri, self._discovered_ns = uri, now_ns
        return self._jwks_uri

    def _fetch_keys(self, now_ns: int) -> _Keys:
        doc = self._get_json(self._discover(now_ns), "key set")
        by_kid: dict[str, PublicKey] = {}
        unnamed: list[PublicKey] = []
        for jwk in doc.get("keys") or []:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            if jwk.get("kty") not in ("RSA", "EC", "OKP"):
                continue  # symmetric keys are never trusted for ID tokens
            try:
                key = import_key(jwk)
            except (JoseError, ValueError, TypeError):
                continue  # one bad key must not hide the others
            if not isinstance(key, (RSAKey, ECKey, OKPKey)):
                continue
            kid = jwk.get("kid")
            if isinstance(kid, str) and kid:
                by_kid[kid] = key
            else:
                unnamed.append(key)
        return _Keys(by_kid, tuple(unnamed), now_ns)

    def _refresh(self, now_ns: int) -> _Keys:
        """Fetch the key set (the caller holds the lock); fail fast after a failure."""
        if self._failed_ns is not None and 0 <= now_ns - self._failed_ns < FETCH_RETRY_NS:
            raise IdentityError(
                "the identity provider could not be reached a moment ago", "provider unreachable"
            )
        try:
            keys = self._fetch_keys(now_ns)
        except IdentityError:
            self._failed_ns = now_ns
            raise
        self._failed_ns = None
        self._keys = keys
        return keys

    def _key_for(self, kid: str | None, now_ns: int) -> PublicKey:
        with self._lock:
            keys = self._keys
            if keys is None or now_ns - keys.fetched_ns >= self.cache_ns:
                keys = self._refresh(now_ns)
            key = _pick(keys, kid)
            if key is None and (
                self._last_refetch_ns is None
                or now_ns - self._last_refetch_ns >= JWKS_REFETCH_INTERVAL_NS
            ):
                self._last_refetch_ns = now_ns
                key = _pick(self._refresh(now_ns), kid)
        if key is None:
            raise IdentityError(
                "the token was signed with a key the identity provider does not publish",
                "unknown key id",
            )
        return key

    # -- verification ----------------------------------------------------------------

    def verify(
        self,
        token: str,
        now_ns: int,
        *,
        nonce: str | None = None,
        max_age_ns: int | None = None,
    ) -> Claims:
        """Check ``token`` completely and return what it vouches for, or raise
        ``IdentityError``. ``nonce``: the value sent in the authorization request (login
        flows); ``max_age_ns``: refuse tokens issued longer ago than this."""
        if len(token) > MAX_TOKEN_BYTES:
            raise IdentityError("the token is too large", "malformed token")
        try:
            header = _header(token)
        except ValueError:
            raise IdentityError("the token is not a signed JWT", "malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise IdentityError(
                f"the token's signing algorithm {str(alg)[:20]!r} is not allowed",
                "algorithm not allowed",
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise IdentityError("the token's key id is not a string", "malformed token")
        key = self._key_for(kid, now_ns)
        if not isinstance(key, _KEY_TYPE_FOR_ALG[alg[:2]]):
            raise IdentityError(
                "the token's algorithm does not match its key", "algorithm not allowed"
            )
        try:
            signed = jws.deserialize_compact(token, key, algorithms=[alg])
        except BadSignatureError:
            raise IdentityError("the token's signature is not valid", "bad signature") from None
        except (JoseError, ValueError, TypeError):
            raise IdentityError("the token could not be verified", "malformed token") from None
        try:
            payload = json.loads(signed.payload)
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None
        if not isinstance(payload, dict):
            raise IdentityError("the token's payload is not a JSON object", "malformed token")
        return self._check_claims(payload, now_ns, nonce, max_age_ns)

    def _check_claims(
        self, c: dict[str, Any], now_ns: int, nonce: str | None, max_age_ns: int | None
    ) -> Claims:
        s = self.settings
        if c.get("iss") != s.issuer:
            raise IdentityError("the token was not issued by ledgergate's provider", "wrong issuer")
        aud = c.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(a in self.audiences for a in auds if isinstance(a, str)):
            raise IdentityError("the token's audience is not ledgergate's", "wrong audience")
        azp = c.get("azp")
        if azp is not None and len(auds) > 1 and azp != s.client_id:
            raise IdentityError("the token was issued to another client (azp)", "wrong audience")
        exp, iat, nbf = _time(c, "exp"), _time(c, "iat"), _time(c, "nbf")
        if exp is None or iat is None:
            missing = "exp" if exp is None else "iat"
            raise IdentityError(f"the token has no {missing} claim", "malformed token")
        if now_ns >= exp + self.skew_ns:
            raise IdentityError("the token has expired", "token expired")
        if nbf is not None and now_ns + self.skew_ns < nbf:
            raise IdentityError("the token is not valid yet", "token not yet valid")
        if now_ns + self.skew_ns < iat:
            raise IdentityError("the token was issued in the future", "issued in the future")
        if max_age_ns is not None and now_ns - iat > max_age_ns + self.skew_ns:
            raise IdentityError("the token was issued too long ago", "token too old")
        if nonce is not None:
            got = c.get("nonce")
            if not isinstance(got, str) or not hmac.compare_digest(got, nonce):
                raise IdentityError("the token's nonce does not match the login", "wrong nonce")
        sub = c.get("sub")
        if not isinstance(sub, str) or not sub:
            raise IdentityError("the token has no subject", "malformed token")
        name = c.get(s.username_claim)
        email = c.get("email")
        return Claims(
            subject=name if isinstance(name, str) and name else sub,
            sub=sub,
            groups=_groups(c.get(s.groups_claim)),
            email=email if isinstance(email, str) and email else None,
            expires_ns=exp,
            issuer=s.issuer,
            source="oidc",
        )


def _pick(keys: _Keys, kid: str | None) -> PublicKey | None:
    if kid is not None:
        return keys.by_kid.get(kid)
    # No ``kid``: acceptable only when the provider publishes a single key.
    every = (*keys.by_kid.values(), *keys.unnamed)
    return every[0] if len(every) == 1 else None


def _time(c: dict[str, Any], name: str) -> int | None:
    """A NumericDate claim in ns; ``None`` when absent."""
    v = c.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise IdentityError(f"the token's {name} claim is not a number", "malformed token")
    return int(v * _NS) if isinstance(v, float) else v * _NS


def _groups(v: object) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list) and all(isinstance(g, str) for g in v):
        return tuple(v)
    raise IdentityError("the token's groups claim is not a list of names", "malformed token")
