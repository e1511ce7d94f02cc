"""The console's sign-in and sign-out routes: a ledgergate token typed into the page, the
OpenID Connect provider (authorization code with PKCE, the gateway as the client), SAML.

Each ends in ``auth.set_session``: the cookie carries the ledgergate token the login
minted (or the one typed), and expires with it. Failures come back to the sign-in page
with a message that names no secret.
"""

# No ``from __future__ import annotations``: FastAPI reads these annotations at run time.

import asyncio
import secrets
import time
from typing import Annotated
from urllib.parse import quote, unquote

import httpx
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from ledgergate.api.console.auth import (
    COOKIE,
    LOGIN_COOKIE,
    LOGIN_TTL_S,
    MINTED_COOKIE,
    SAML_COOKIE,
    clear_session,
    csrf_ok,
    safe_next,
    same_origin,
    same_secret,
    set_session,
)
from ledgergate.api.console.render import render
from ledgergate.services import login as oidc_login
from ledgergate.services import tokens
from ledgergate.services.admin import AdminService, ApiError

__all__ = ["router"]

# The RelayState a SAML login started from the console carries back to the ACS.
SAML_RELAY = "console"


def _back_to_login(message: str, target: str = "/") -> RedirectResponse:
    return RedirectResponse(
        f"/console/login?error={quote(message[:300], safe='')}&next={quote(target, safe='')}",
        status_code=303,
    )


def signed_in_redirect(
    token: str, expires_ns: int, target: str, *, minted: bool = False
) -> Response:
    """Set the session cookie and go on to ``target``. After a provider's answer (a
    navigation from its site) a redirect would still count as cross-site, and the
    browser would hold back the SameSite=Strict cookie on it: a page of this origin
    moving on by itself makes the next request same-site. ``minted``: the console made
    this token (signing out revokes it)."""
    resp = render("continue.html", None, target=safe_next(target))
    set_session(resp, token, expires_ns)
    if minted:
        resp.set_cookie(
            MINTED_COOKIE,
            "1",
            max_age=max(0, (expires_ns - time.time_ns()) // 10**9),
            path="/",
            secure=True,
            httponly=True,
            samesite="strict",
        )
    return resp


def router(admin: AdminService) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    cfg = admin.config.identity

    def http() -> httpx.Client:
        oidc = cfg.oidc
        assert oidc is not None
        return httpx.Client(timeout=oidc_login.HTTP_TIMEOUT_S, verify=oidc.ca_file or True)

    @r.get("/console/login")
    async def login_page(next: str = "/", error: str | None = None) -> Response:
        return render(
            "login.html",
            None,
            next=safe_next(next),
            error=error,
            oidc=cfg.oidc is not None,
            saml=cfg.saml is not None,
        )

    @r.post("/console/login")
    async def login_token(
        request: Request,
        token: Annotated[str, Form(max_length=4096)],
        next: Annotated[str, Form()] = "/",
    ) -> Response:
        """Sign in with a ledgergate token (one `ledgergate login` or an admin minted)."""
        if not same_origin(request, admin.base_url):  # another site signing you in
            raise ApiError(403, "cross-origin sign-in refused")
        token = token.strip()
        try:
            me = await admin.sign_in(token, "console")
        except ApiError as e:
            return _back_to_login(e.message, next)
        return signed_in_redirect(token, me.expires_ns, next)

    @r.get("/console/login/oidc")
    async def login_oidc(next: str = "/") -> Response:
        oidc = cfg.oidc
        if oidc is None:
            raise ApiError(404, "no OpenID Connect provider is configured")
        redirect_uri = admin.base_url + "/console/login/oidc/callback"

        def start() -> oidc_login.CodeRequest:
            with http() as c:
                return oidc_login.code_request(
                    oidc.issuer, oidc.client_id, oidc.scopes, redirect_uri, c
                )

        try:
            req = await asyncio.to_thread(start)
        except oidc_login.LoginError as e:
            return _back_to_login(str(e), next)
        resp = RedirectResponse(req.url, status_code=303)
        # Lax: the provider's answer is a top-level navigation from its own site. The
        # token endpoint is looked up again at the answer, never taken from a cookie.
        resp.set_cookie(
            LOGIN_COOKIE,
            " ".join((req.state, req.nonce, req.verifier, quote(safe_next(next), safe=""))),
            max_age=LOGIN_TTL_S,
            path="/",
            secure=True,
            httponly=True,
            samesite="lax",
        )
        return resp

    @r.get("/console/login/oidc/callback")
    async def oidc_callback(request: Request) -> Response:
        oidc = cfg.oidc
        if oidc is None:
            raise ApiError(404, "no OpenID Connect provider is configured")
        params = {k: v for k, v in request.query_params.items()}
        kept = (request.cookies.get(LOGIN_COOKIE) or "").split(" ")
        if len(kept) != 4 or not same_secret(kept[0], params.get("state", "")):
            return _back_to_login("this sign-in was not started here, or took too long")
        state, nonce, verifier, target = kept
        callback = admin.base_url + "/console/login/oidc/callback"

        def finish() -> oidc_login.TokenSet:
            with http() as c:
                token_url = oidc_login.token_endpoint(oidc.issuer, c)
                req = oidc_login.CodeRequest("", token_url, callback, state, nonce, verifier)
                return oidc_login.redeem(
                    req, params, oidc.issuer, oidc.client_id, admin.oidc_client_secret(), c
                )

        try:
            ts = await asyncio.to_thread(finish)
            got = await admin.login_oidc(ts.id_token, nonce, "oidc-browser")
        except oidc_login.LoginError as e:
            return _back_to_login(str(e))
        except ApiError as e:
            return _back_to_login(e.message)
        resp = signed_in_redirect(
            str(got["token"]), int(got["expires_ns"]), unquote(target), minted=True
        )
        resp.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
        return resp

    @r.get("/console/login/saml")
    async def login_saml() -> Response:
        if cfg.saml is None:
            raise ApiError(404, "no SAML identity provider is configured")
        # The answer must come back to this browser: its RelayState carries a nonce the
        # ACS compares with this cookie (SameSite=None: the IdP posts from its own site).
        nonce = secrets.token_urlsafe(24)
        resp = RedirectResponse(admin.saml().login_url(f"{SAML_RELAY}.{nonce}"), status_code=303)
        resp.set_cookie(
            SAML_COOKIE,
            nonce,
            max_age=LOGIN_TTL_S,
            path="/",
            secure=True,
            httponly=True,
            samesite="none",
        )
        return resp

    @r.post("/console/logout")
    async def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
        """Sign out. A token the console minted (an OpenID or SAML sign-in) is revoked
        (a ``token.revoked`` entry); one typed in stays valid (it is the person's login,
        their database password too): only the cookie goes."""
        token = request.cookies.get(COOKIE)
        minted = request.cookies.get(MINTED_COOKIE) == "1"
        resp = RedirectResponse("/console/login", status_code=303)
        clear_session(resp)
        resp.delete_cookie(MINTED_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        if token and minted and csrf_ok(token, csrf):
            try:
                me = await admin.principal("Bearer " + token)
            except ApiError:
                return resp
            await admin.call(tokens.revoke_token, me.token_id, time.time_ns(), me.actor)
            await admin.changed()
        return resp

    return r
