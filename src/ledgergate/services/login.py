"""OpenID Connect login flows for ``ledgergate login``: the CLI as a public native client.

Owns the two ways a person obtains tokens from the provider (RFC 8252 native-app style):
the device authorization grant (RFC 8628: show a code, poll the token endpoint) and the
authorization code grant with PKCE S256 redirected to a one-shot HTTP server on a random
loopback port. Endpoints come from discovery. It does not verify the ID token: the caller
does that with ``services.oidc.OidcVerifier`` and the returned ``nonce``. HTTP failures
and provider errors leave this module as ``LoginError``; messages never carry a token,
code or secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

__all__ = [
    "DevicePrompt",
    "LoginError",
    "LoopbackCallback",
    "TokenSet",
    "browser_login",
    "device_login",
    "discover",
]

# Each request to the provider gives up after this long (seconds).
HTTP_TIMEOUT_S = 15.0
# RFC 8628 §3.5: without an ``interval`` the client polls every 5 s; ``slow_down`` adds 5.
DEFAULT_INTERVAL_S = 5.0
SLOW_DOWN_S = 5.0
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_CLOSE_PAGE = (
    b"<!doctype html><html><head><meta charset='utf-8'><title>ledgergate</title></head>"
    b"<body><p>Login received. You may close this window and return to the terminal.</p>"
    b"</body></html>"
)


class LoginError(Exception):
    """A login that could not be completed; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class DevicePrompt:
    """What to show the person during a device login."""

    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: float


@dataclass(frozen=True, slots=True)
class TokenSet:
    id_token: str
    access_token: str | None
    refresh_token: str | None
    expires_in: int | None
    nonce: str | None  # sent in the authorization request (browser flow); check it


def _client(http: httpx.Client | None) -> httpx.Client:
    return http if http is not None else httpx.Client(timeout=HTTP_TIMEOUT_S)


def _call(http: httpx.Client, method: str, url: str, **kw: Any) -> httpx.Response:
    try:
        return http.request(method, url, **kw)
    except httpx.HTTPError as e:
        raise LoginError(f"cannot reach the identity provider ({type(e).__name__}: {e})") from e


def _json(resp: httpx.Response, what: str) -> dict[str, Any]:
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise LoginError(
            f"the identity provider's {what} answer is not JSON (HTTP {resp.status_code})"
        )
    return doc


def discover(issuer: str, http: httpx.Client) -> dict[str, Any]:
    """The provider's discovery document, checked to name ``issuer``."""
    resp = _call(http, "GET", issuer.rstrip("/") + "/.well-known/openid-configuration")
    if resp.status_code != 200:
        raise LoginError(f"the identity provider's discovery failed (HTTP {resp.status_code})")
    doc = _json(resp, "discovery")
    if doc.get("issuer") != issuer:
        raise LoginError("the identity provider's discovery document names another issuer")
    return doc


def _endpoint(doc: dict[str, Any], name: str) -> str:
    url = doc.get(name)
    if not isinstance(url, str) or not url:
        raise LoginError(f"the identity provider does not offer {name.replace('_', ' ')}")
    return url


def _auth(client_id: str, client_secret: str | None, form: dict[str, str]) -> dict[str, Any]:
    """Request arguments authenticating the client: HTTP Basic with a secret
    (client_secret_basic), else ``client_id`` in the form (a public client)."""
    if client_secret is None:
        return {"data": {**form, "client_id": client_id}}
    return {"data": form, "auth": (client_id, client_secret)}


def _provider_error(doc: dict[str, Any], status: int) -> str:
    code = str(doc.get("error") or f"HTTP {status}")[:64]
    desc = doc.get("error_description")
    return f"{code}: {str(desc)[:200]}" if desc else code


def _tokens(doc: dict[str, Any], nonce: str | None) -> TokenSet:
    id_token = doc.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise LoginError("the identity provider returned no ID token (is 'openid' a scope?)")
    expires_in = doc.get("expires_in")
    return TokenSet(
        id_token=id_token,
        access_token=doc.get("access_token") if isinstance(doc.get("access_token"), str) else None,
        refresh_token=doc.get("refresh_token")
        if isinstance(doc.get("refresh_token"), str)
        else None,
        expires_in=int(expires_in) if isinstance(expires_in, (int, float)) else None,
        nonce=nonce,
    )


# -- device authorization grant (RFC 8628) ----------------------------------------------


def device_login(
    issuer: str,
    client_id: str,
    scopes: list[str],
    *,
    on_prompt: Callable[[DevicePrompt], None],
    client_secret: str | None = None,
    http: httpx.Client | None = None,
    timeout_s: float = 600,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> TokenSet:
    """Ask for a device code, show it through ``on_prompt``, and poll until the person
    approves (or denies, or the code expires)."""
    client = _client(http)
    try:
        doc = discover(issuer, client)
        start = _endpoint(doc, "device_authorization_endpoint")
        token_url = _endpoint(doc, "token_endpoint")
        resp = _call(
            client, "POST", start, **_auth(client_id, client_secret, {"scope": " ".join(scopes)})
        )
        grant = _json(resp, "device authorization")
        if resp.status_code != 200:
            raise LoginError(
                f"the device login was refused: {_provider_error(grant, resp.status_code)}"
            )
        device_code, user_code, uri = (
            grant.get("device_code"),
            grant.get("user_code"),
            grant.get("verification_uri"),
        )
        if not (
            isinstance(device_code, str) and isinstance(user_code, str) and isinstance(uri, str)
        ):
            raise LoginError("the identity provider's device authorization answer is incomplete")
        complete = grant.get("verification_uri_complete")
        expires_in = int(grant.get("expires_in") or timeout_s)
        interval = float(grant.get("interval") or DEFAULT_INTERVAL_S)
        on_prompt(
            DevicePrompt(
                user_code,
                uri,
                complete if isinstance(complete, str) else None,
                expires_in,
                interval,
            )
        )
        deadline = clock() + min(timeout_s, expires_in)
        form = {"grant_type": DEVICE_GRANT, "device_code": device_code}
        while True:
            if clock() + interval > deadline:
                raise LoginError("the device login timed out before it was approved")
            sleep(interval)
            resp = _call(client, "POST", token_url, **_auth(client_id, client_secret, form))
            answer = _json(resp, "token")
            if resp.status_code == 200:
                return _tokens(answer, None)
            error = answer.get("error")
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                interval += SLOW_DOWN_S
                continue
            if error == "expired_token":
                raise LoginError("the device code expired before the login was approved; try again")
            if error == "access_denied":
                raise LoginError("the login was denied at the identity provider")
            raise LoginError(
                f"the device login failed: {_provider_error(answer, resp.status_code)}"
            )
    finally:
        if http is None:
            client.close()


# -- authorization code + PKCE on a loopback redirect (RFC 7636, RFC 8252) ----------------


class LoopbackCallback:
    """The one-shot loopback server: keeps the first request carrying our ``state``
    (also used for the SAML login, where the gateway sends a one-time code back)."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.params: dict[str, str] | None = None
        self.done = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                got = query.get("state", "")
                if url.path != "/callback" or not hmac.compare_digest(got, outer.state):
                    # A stray or forged request: answer it, keep waiting for the real one.
                    self.send_error(400, "not the login this server is waiting for")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(_CLOSE_PAGE)))
                self.end_headers()
                self.wfile.write(_CLOSE_PAGE)
                if not outer.done.is_set():
                    outer.params = query
                    outer.done.set()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the URL holds the code: never print it

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.server.timeout = 0.2
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self._serve, name="login-callback", daemon=True)

    def _serve(self) -> None:
        while not self.done.is_set():
            self.server.handle_request()

    def __enter__(self) -> LoopbackCallback:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        self.server.server_close()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class CodeRequest:
    """An authorization-code request with PKCE (RFC 7636): where to send the browser,
    and what the answer is checked and redeemed with."""

    url: str  # the provider's authorization endpoint with the request's parameters
    token_url: str
    redirect_uri: str
    state: str
    nonce: str
    verifier: str


def token_endpoint(issuer: str, http: httpx.Client) -> str:
    """The provider's token endpoint, from its discovery document."""
    return _endpoint(discover(issuer, http), "token_endpoint")


def code_request(
    issuer: str, client_id: str, scopes: list[str], redirect_uri: str, http: httpx.Client
) -> CodeRequest:
    """Discover the provider and build an authorization request for ``redirect_uri``
    with a fresh state, nonce and PKCE verifier (S256)."""
    doc = discover(issuer, http)
    auth_url = _endpoint(doc, "authorization_endpoint")
    token_url = _endpoint(doc, "token_endpoint")
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    challenge = _b64(hashlib.sha256(verifier.encode()).digest())
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    url = auth_url + ("&" if "?" in auth_url else "?") + query
    return CodeRequest(url, token_url, redirect_uri, state, nonce, verifier)


def redeem(
    req: CodeRequest,
    params: dict[str, str],
    issuer: str,
    client_id: str,
    client_secret: str | None,
    http: httpx.Client,
) -> TokenSet:
    """Check the provider's answer (``params`` of the redirect, its state already matched
    to ``req``) and exchange its code with the PKCE verifier."""
    if "error" in params:
        raise LoginError(f"the identity provider refused the login: {_provider_error(params, 400)}")
    if "iss" in params and params["iss"] != issuer:  # RFC 9207: a mix-up attack
        raise LoginError("the login answer came from another issuer")
    code = params.get("code")
    if not code:
        raise LoginError("the login answer carries no authorization code")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": req.redirect_uri,
        "code_verifier": req.verifier,
    }
    resp = _call(http, "POST", req.token_url, **_auth(client_id, client_secret, form))
    answer = _json(resp, "token")
    if resp.status_code != 200:
        raise LoginError(f"the code exchange failed: {_provider_error(answer, resp.status_code)}")
    return _tokens(answer, req.nonce)


def browser_login(
    issuer: str,
    client_id: str,
    scopes: list[str],
    *,
    open_url: Callable[[str], None],
    client_secret: str | None = None,
    http: httpx.Client | None = None,
    timeout_s: float = 300,
) -> TokenSet:
    """Send the person's browser to the provider (``open_url``), receive the code on a
    loopback port, and exchange it with the PKCE verifier."""
    client = _client(http)
    try:
        with LoopbackCallback(secrets.token_urlsafe(32)) as callback:
            redirect_uri = f"http://127.0.0.1:{callback.port}/callback"
            req = code_request(issuer, client_id, scopes, redirect_uri, client)
            callback.state = req.state
            open_url(req.url)
            if not callback.done.wait(timeout_s):
                raise LoginError("the browser login timed out; no answer reached the loopback port")
            params = callback.params or {}
        return redeem(req, params, issuer, client_id, client_secret, client)
    finally:
        if http is None:
            client.close()
