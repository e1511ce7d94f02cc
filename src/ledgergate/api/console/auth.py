"""Signing in to the web console, and how a browser's API calls are authenticated.

The console's session cookie holds the person's ledgergate token (HttpOnly, Secure,
SameSite=Strict, ``__Host-`` so no other site or subdomain can set it) and expires with
it: revoking the token or disabling the identity signs the console out at its next
request, as it ends the person's other sessions. A browser's calls to the REST API carry
that cookie instead of ``Authorization: Bearer``; every change (any method but GET/HEAD)
must also carry ``X-CSRF-Token``, an HMAC of the token that only pages of this origin,
which render it, can know, and an ``Origin`` other than this one is refused outright.

Sign-in: a ledgergate token typed into the page, the OpenID Connect provider (an
authorization-code login with PKCE, the gateway as the client, the state, nonce and
verifier kept in a short-lived ``__Host-`` cookie so any replica can take the answer), or
SAML (``/saml/login?console=1``).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlparse, urlsplit

from fastapi import Request
from fastapi.responses import Response

from ledgergate.services.admin import ApiError

__all__ = [
    "COOKIE",
    "LOGIN_COOKIE",
    "MINTED_COOKIE",
    "SAML_COOKIE",
    "clear_session",
    "cookie_token",
    "csrf_ok",
    "csrf_token",
    "safe_next",
    "same_origin",
    "same_secret",
    "set_session",
]

COOKIE = "__Host-ledgergate"
LOGIN_COOKIE = "__Host-ledgergate-login"
# Set beside the session cookie when the console minted its token (an OpenID or SAML
# sign-in): signing out revokes only such a token, never one a person typed in (their
# ledgergate login, also their database password).
MINTED_COOKIE = "__Host-ledgergate-minted"
SAML_COOKIE = "__Host-ledgergate-saml"
# How long a sign-in at the identity provider may take before its answer is refused.
LOGIN_TTL_S = 600
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CSRF_LABEL = b"ledgergate console csrf v1"


def csrf_token(token: str) -> str:
    """The value pages send as ``X-CSRF-Token``: bound to the session's token, so it
    changes with every sign-in and is worthless without the cookie."""
    return hmac.new(token.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def csrf_ok(token: str, sent: str | None) -> bool:
    return sent is not None and same_secret(csrf_token(token), sent)


def same_secret(a: str, b: str) -> bool:
    """Constant-time equality of two strings of any characters (compare_digest refuses
    non-ASCII ``str``: a hostile header would be a 500)."""
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


def same_origin(request: Request, public_url: str = "") -> bool:
    """No Origin (not a browser), or this origin: as the browser reached it (``Host``),
    or as the gateway's public URL names it (behind a proxy that rewrites ``Host``)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    got = urlparse(origin)
    if public_url:
        ours = urlparse(public_url)
        if (got.scheme, got.netloc) == (ours.scheme, ours.netloc):
            return True
    return got.netloc == request.headers.get("host", "")


def cookie_token(request: Request, public_url: str = "") -> str | None:
    """The token of the console's cookie, checked for a change: a non-GET call must
    come from this origin with the CSRF header (raises 403 otherwise)."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    if request.method not in _SAFE_METHODS:
        if not same_origin(request, public_url):
            raise ApiError(403, "cross-origin request refused")
        if not csrf_ok(token, request.headers.get("x-csrf-token")):
            raise ApiError(403, "missing or wrong X-CSRF-Token (reload the page)")
    return token


def set_session(resp: Response, token: str, expires_ns: int) -> None:
    max_age = max(0, (expires_ns - time.time_ns()) // 10**9)
    resp.set_cookie(
        COOKIE,
        token,
        max_age=max_age,
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    resp.headers["Cache-Control"] = "no-store"


def clear_session(resp: Response) -> None:
    resp.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this console only (no open redirect:
    browsers drop tabs and newlines from URLs, so ``/\t/evil.example`` would be
    ``//evil.example``; no control character, space or backslash passes)."""
    if not target or any(c <= " " or c in "\x7f\\" for c in target):
        return "/"
    u = urlsplit(target)
    if u.scheme or u.netloc or not u.path.startswith("/") or u.path.startswith("//"):
        return "/"
    return target
