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
from urllib.parse import urlparse

from fastapi import Request
from fastapi.responses import Response

from ledgergate.services.admin import ApiError

__all__ = [
    "COOKIE",
    "LOGIN_COOKIE",
    "clear_session",
    "cookie_token",
    "csrf_ok",
    "csrf_token",
    "safe_next",
    "same_origin",
    "set_session",
]

COOKIE = "__Host-ledgergate"
LOGIN_COOKIE = "__Host-ledgergate-login"
# How long a sign-in at the identity provider may take before its answer is refused.
LOGIN_TTL_S = 600
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CSRF_LABEL = b"ledgergate console csrf v1"


def csrf_token(token: str) -> str:
    """The value pages send as ``X-CSRF-Token``: bound to the session's token, so it
    changes with every sign-in and is worthless without the cookie."""
    return hmac.new(token.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def csrf_ok(token: str, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(csrf_token(token), sent)


def same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return urlparse(origin).netloc == host


def cookie_token(request: Request) -> str | None:
    """The token of the console's cookie, checked for a change: a non-GET call must
    come from this origin with the CSRF header (raises 403 otherwise)."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    if request.method not in _SAFE_METHODS:
        if not same_origin(request):
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
    """Where to go after signing in: a path of this console only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
