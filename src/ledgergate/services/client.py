"""The person's side of a login: talking to a gateway's REST API and keeping the token.

Used by ``ledgergate login | logout | whoami``, and by the commands that act as the
logged-in person (``request access``, ``reviews ...``). The gateway tells which identity
providers it trusts (``/api/v1/login/config``); an OIDC login runs on this machine
(``services.login``: device flow or a browser redirect to a loopback port) and its fresh
ID token is exchanged for a gateway token; a SAML login goes through the browser to the
gateway, which hands a one-time code back to a loopback port. The token is saved in a
file only its owner can read (0600). Never prints or logs the token unless asked to.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from ledgergate.services import login as oidc_login

__all__ = [
    "ClientError",
    "Credentials",
    "GatewayClient",
    "credentials_path",
    "forget",
    "load",
    "save",
]

HTTP_TIMEOUT_S = 15.0


class ClientError(Exception):
    """A login step that failed; the message says why (never a token)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    gateway: str
    ca: str | None
    token: str
    token_id: str
    identity: str
    groups: tuple[str, ...]
    roles: tuple[str, ...]
    expires_ns: int


def credentials_path() -> Path:
    env = os.environ.get("LEDGERGATE_CREDENTIALS")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ledgergate" / "credentials.json"


def save(c: Credentials, path: Path | None = None) -> Path:
    p = path or credentials_path()
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(
            {
                "gateway": c.gateway,
                "ca": c.ca,
                "token": c.token,
                "token_id": c.token_id,
                "identity": c.identity,
                "groups": list(c.groups),
                "roles": list(c.roles),
                "expires_ns": c.expires_ns,
            },
            f,
        )
    os.chmod(tmp, 0o600)
    os.replace(tmp, p)
    return p


def load(path: Path | None = None) -> Credentials | None:
    p = path or credentials_path()
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        return Credentials(
            str(d["gateway"]),
            d.get("ca"),
            str(d["token"]),
            str(d["token_id"]),
            str(d["identity"]),
            tuple(d.get("groups", [])),
            tuple(d.get("roles", [])),
            int(d["expires_ns"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


_UNEXPECTED = "the gateway's answer is not a review (is that URL a ledgergate API?)"


def _as_review(v: object) -> dict[str, Any]:
    """A review as the API answers it (an object with an id), or ``ClientError``: the
    commands never trip over an answer of another shape (a proxy's page, no JSON)."""
    if not isinstance(v, dict) or not isinstance(v.get("id"), str):
        raise ClientError(_UNEXPECTED)
    return v


def forget(path: Path | None = None) -> bool:
    p = path or credentials_path()
    try:
        p.unlink()
        return True
    except FileNotFoundError:
        return False


class GatewayClient:
    def __init__(self, url: str, ca: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.ca = ca
        try:
            verify = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
        except (OSError, ssl.SSLError) as e:  # a CA file moved, emptied or not PEM
            raise ClientError(f"cannot load the CA bundle {ca}: {e.strerror or e}") from None
        self.http = httpx.Client(base_url=self.url, verify=verify, timeout=HTTP_TIMEOUT_S)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            r = self.http.request(method, path, headers=headers, **kw)
        except httpx.HTTPError as e:
            raise ClientError(f"cannot reach the gateway at {self.url}: {e}") from None
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code >= 400:
            msg = body.get("error") if isinstance(body, dict) else None
            raise ClientError(msg or f"the gateway answered {r.status_code}")
        return body

    def login_config(self) -> dict[str, Any]:
        return dict(self._call("GET", "/api/v1/login/config"))

    def whoami(self, token: str) -> dict[str, Any]:
        return dict(self._call("GET", "/api/v1/whoami", token))

    def logout(self, token: str) -> None:
        self._call("POST", "/api/v1/logout", token)

    def access_key(self, token: str, connection: str | None, ttl: str) -> dict[str, Any]:
        """A short-lived S3 access key for the caller (the secret is in this answer)."""
        body = {"connection": connection, "ttl": ttl}
        return dict(self._call("POST", "/api/v1/access-keys", token, json=body))

    def ssh_certificate(self, token: str, public_key: str) -> dict[str, Any]:
        """An SSH user certificate for the caller's public key, expiring with the token."""
        body = {"public_key": public_key}
        return dict(self._call("POST", "/api/v1/ssh/certificate", token, json=body))

    # -- reviews (as the caller: the saved token) --------------------------------------------
    def _call_review(self, method: str, path: str, token: str, **kw: Any) -> dict[str, Any]:
        return _as_review(self._call(method, path, token, **kw))

    def request_access(
        self, token: str, connection: str, duration: str, reason: str | None
    ) -> dict[str, Any]:
        body = {"connection": connection, "duration": duration, "reason": reason}
        return self._call_review("POST", "/api/v1/reviews/access", token, json=body)

    def reviews(self, token: str, **filters: str | bool | int | None) -> list[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None and v is not False}
        found = self._call("GET", "/api/v1/reviews", token, params=params)
        if not isinstance(found, list):
            raise ClientError(_UNEXPECTED)
        return [_as_review(x) for x in found]

    def review(self, token: str, review_id: str) -> dict[str, Any]:
        return self._call_review("GET", f"/api/v1/reviews/{quote(review_id, safe='')}", token)

    def decide_review(
        self, token: str, review_id: str, *, approve: bool, reason: str
    ) -> dict[str, Any]:
        path = f"/api/v1/reviews/{quote(review_id, safe='')}/{'approve' if approve else 'deny'}"
        return self._call_review("POST", path, token, json={"reason": reason})

    def cancel_review(self, token: str, review_id: str, reason: str | None) -> dict[str, Any]:
        path = f"/api/v1/reviews/{quote(review_id, safe='')}/cancel"
        return self._call_review("POST", path, token, json={"reason": reason})

    def _credentials(self, login: dict[str, Any]) -> Credentials:
        return Credentials(
            self.url,
            self.ca,
            str(login["token"]),
            str(login["token_id"]),
            str(login["identity"]),
            tuple(login.get("groups", [])),
            tuple(login.get("roles", [])),
            int(login["expires_ns"]),
        )

    def login_oidc(
        self,
        method: str,
        *,
        on_prompt: Callable[[oidc_login.DevicePrompt], None],
        open_url: Callable[[str], None],
    ) -> Credentials:
        cfg = self.login_config().get("oidc")
        if not cfg:
            raise ClientError("this gateway has no OpenID Connect provider configured")
        try:
            if method == "device":
                ts = oidc_login.device_login(
                    cfg["issuer"], cfg["client_id"], list(cfg["scopes"]), on_prompt=on_prompt
                )
            else:
                ts = oidc_login.browser_login(
                    cfg["issuer"], cfg["client_id"], list(cfg["scopes"]), open_url=open_url
                )
        except oidc_login.LoginError as e:
            raise ClientError(str(e)) from None
        login = self._call(
            "POST",
            "/api/v1/login/oidc",
            json={"id_token": ts.id_token, "nonce": ts.nonce, "via": f"oidc-{method}"},
        )
        return self._credentials(login)

    def login_saml(self, *, open_url: Callable[[str], None], timeout_s: float = 300) -> Credentials:
        if not self.login_config().get("saml"):
            raise ClientError("this gateway has no SAML identity provider configured")
        state = secrets.token_urlsafe(24)
        with oidc_login.LoopbackCallback(state) as rx:
            back = f"http://127.0.0.1:{rx.port}/callback?" + urlencode({"state": state})
            open_url(f"{self.url}/saml/login?" + urlencode({"redirect": back}))
            if not rx.done.wait(timeout_s):
                raise ClientError("no login arrived in time; run ledgergate login again")
            code = (rx.params or {}).get("code")
        if not code:
            raise ClientError("the gateway sent no login code")
        return self._credentials(self._call("POST", "/api/v1/login/code", json={"code": code}))
