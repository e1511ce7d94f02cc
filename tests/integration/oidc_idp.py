"""A real OpenID provider for the tests: ``node idp/server.mjs`` (oidc-provider 9.x).

``OidcIdp`` writes the provider's configuration (clients, users, the private signing
keys, which the tests keep so they can forge tokens and rotate keys), starts it on a free
loopback port, waits for discovery, and stops it by killing its process group. It also
plays the person's browser with httpx against the devInteractions pages:
``approve_device`` and ``complete_browser_login``. Use it as a context manager, or through
the ``oidc_idp_fixture`` helper from a test module's own fixture.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

from ledgergate.core.config import OidcSettings
from tests.integration.procs import spawn_until_ready, stop_group

IDP_DIR = Path(__file__).parent / "idp"
CLIENT_ID = "ledgergate-cli"
WEB_CLIENT_ID = "ledgergate-console"
USERS: dict[str, dict[str, Any]] = {
    "alice": {"email": "alice@example.com", "groups": ["dba", "eng"], "name": "Alice"},
    "bob": {"email": "bob@example.com", "groups": "ops", "name": "Bob"},
}
# The provider is up within a second or two; a slow CI machine gets this long.
START_TIMEOUT_S = 30.0
# The browser walk stops after this many pages/redirects: a loop is a bug, not a wait.
MAX_STEPS = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_key(kid: str | None = None) -> RSAKey:
    kid = kid or f"k-{os.urandom(4).hex()}"
    return RSAKey.generate_key(
        2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"}, private=True
    )


class _Forms(HTMLParser):
    """The forms of a page: action, method and the inputs' names and values."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "fields": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value", "")


class OidcIdp:
    """One oidc-provider process. ``issuer`` stays the same across restarts."""

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, dict[str, Any]] | None = None,
        device_interval: int = 1,
        web_redirect_uris: list[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users = users or USERS
        self.device_interval = device_interval
        # A second client, a web application (the gateway's console signing people in),
        # with these redirect URIs; it authenticates with PKCE alone.
        self.web_redirect_uris = web_redirect_uris
        self.port = _free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.client_id = CLIENT_ID
        self.key = new_key()
        self.proc: subprocess.Popen[bytes] | None = None

    # -- process -----------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "issuer": self.issuer,
            "device_interval": self.device_interval,
            "users": self.users,
            "jwks": {"keys": [self.key.as_dict(private=True)]},
            "clients": [
                {
                    "client_id": self.client_id,
                    "application_type": "native",
                    "token_endpoint_auth_method": "none",
                    "redirect_uris": ["http://127.0.0.1/callback"],
                    "grant_types": [
                        "authorization_code",
                        "refresh_token",
                        "urn:ietf:params:oauth:grant-type:device_code",
                    ],
                    "response_types": ["code"],
                }
            ]
            + (
                [
                    {
                        "client_id": WEB_CLIENT_ID,
                        "application_type": "web",
                        "token_endpoint_auth_method": "none",
                        "redirect_uris": self.web_redirect_uris,
                        "grant_types": ["authorization_code"],
                        "response_types": ["code"],
                    }
                ]
                if self.web_redirect_uris
                else []
            ),
        }

    def start(self) -> OidcIdp:
        if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError("oidc-provider is not installed: run scripts/install-deps")
        cfg = self.workdir / "idp.json"
        cfg.write_text(json.dumps(self.config()))
        cfg.chmod(0o600)
        self.log = self.workdir / "idp.log"
        self.proc, _ = spawn_until_ready(
            ["node", "server.mjs", str(cfg)],
            cwd=IDP_DIR,
            log=self.log,
            ready_url=f"{self.issuer}/.well-known/openid-configuration",
            what="the test OIDC provider",
            timeout_s=START_TIMEOUT_S,
        )
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_group(proc)

    def restart_with_new_key(self) -> RSAKey:
        """Rotate: the provider comes back on the same issuer publishing only a new key."""
        self.stop()
        self.key = new_key()
        self.start()
        return self.key

    def __enter__(self) -> OidcIdp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the gateway is configured with ------------------------------------------

    def settings(self, **over: Any) -> OidcSettings:
        return OidcSettings(issuer=self.issuer, client_id=self.client_id, **over)

    # -- forging -----------------------------------------------------------------------

    def claims(self, login: str = "alice", **over: Any) -> dict[str, Any]:
        """A valid payload for ``login``; ``over`` values of ``None`` drop a claim."""
        now = int(time.time())
        c: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.client_id,
            "sub": login,
            "iat": now,
            "exp": now + 300,
            **self.users[login],
        }
        c.update(over)
        return {k: v for k, v in c.items() if v is not None}

    def forge(
        self,
        claims: dict[str, Any],
        *,
        alg: str = "RS256",
        kid: str | None = None,
        key: RSAKey | bytes | None = None,
    ) -> str:
        """Sign ``claims`` with the provider's own key (or ``key``). ``alg="none"`` makes
        an unsigned token; ``HS*`` uses ``key`` bytes as the HMAC secret, by default the
        provider's public key in PEM (the key-confusion attack)."""
        signer = key if key is not None else self.key
        if isinstance(signer, RSAKey):
            kid = kid or signer.kid
        header = {"alg": alg, "kid": kid or self.key.kid}
        if alg == "none" or alg.startswith("HS"):
            head = _b64(json.dumps(header).encode())
            body = _b64(json.dumps(claims).encode())
            if alg == "none":
                return f"{head}.{body}."
            secret = signer if isinstance(signer, bytes) else self.key.as_pem(private=False)
            digest = getattr(hashlib, f"sha{alg[2:]}")
            mac = hmac.new(secret, f"{head}.{body}".encode(), digest).digest()
            return f"{head}.{body}.{_b64(mac)}"
        assert isinstance(signer, RSAKey)
        return jwt.encode(header, claims, signer, algorithms=[alg])

    # -- the person's browser -----------------------------------------------------------

    def _walk(
        self, http: httpx.Client, resp: httpx.Response, login: str, stop_at: str | None
    ) -> str | None:
        """Follow redirects and submit forms (login and consent filled in) until the
        provider redirects to ``stop_at`` (returns that URL) or shows a page without a
        form (returns None)."""
        for _ in range(MAX_STEPS):
            if resp.is_redirect:
                loc = urljoin(str(resp.url), resp.headers["location"])
                if stop_at is not None and loc.startswith(stop_at):
                    return loc
                resp = http.get(loc)
                continue
            if resp.status_code >= 400:
                raise AssertionError(f"the IdP answered {resp.status_code}: {resp.text[:500]}")
            parser = _Forms()
            parser.feed(resp.text)
            if not parser.forms:
                if stop_at is not None:
                    raise AssertionError(f"the walk ended before the redirect: {resp.text[:500]}")
                return None
            form = parser.forms[0]
            fields = dict(form["fields"])
            if "login" in fields:
                fields.update(login=login, password="any")
            resp = http.post(urljoin(str(resp.url), form["action"]), data=fields)
        raise AssertionError("the browser walk did not finish")

    def approve_device(self, verification_uri_complete: str, login: str) -> None:
        """Open the verification link, confirm the code, sign in as ``login``, consent."""
        with httpx.Client(timeout=10) as http:
            page = self._walk(http, http.get(verification_uri_complete), login, None)
            assert page is None

    def complete_browser_login(self, authorization_url: str, login: str) -> None:
        """Follow the authorization URL through login and consent to the loopback
        redirect, then deliver it to the waiting ``browser_login`` server."""
        redirect_uri = parse_qs(urlsplit(authorization_url).query)["redirect_uri"][0]
        with httpx.Client(timeout=10) as http:
            loc = self._walk(http, http.get(authorization_url), login, redirect_uri)
        assert loc is not None
        httpx.get(loc, timeout=10).raise_for_status()


def oidc_idp_fixture(workdir: Path) -> Iterator[OidcIdp]:
    """The body of a pytest fixture: ``yield from oidc_idp_fixture(tmp_path_factory...)``."""
    with OidcIdp(workdir) as idp:
        yield idp
