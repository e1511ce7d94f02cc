"""A real SAML 2.0 IdP for the tests: ``python -m tests.integration.saml_idp CONFIG.json``.

Built on pysaml2's ``saml2.server.Server`` (the library the gateway's SP uses, but the
other role) behind a small ``http.server`` on a loopback port:

- ``GET /metadata``: the IdP's metadata (signing certificate, SSO endpoint);
- ``GET /sso/redirect``: an AuthnRequest over HTTP-Redirect, whose signature is checked
  against the SP's metadata; answers a login form;
- ``POST /login``: the person's username from the configured users table
  (``{login: {mail, groups}}``); answers the auto-post form carrying ``SAMLResponse``
  and ``RelayState`` to the SP's assertion consumer service.

Options for the tests' bad cases: ``sign_assertion`` (default true), ``sign_response``
(default false), ``audience_override``, ``clock_offset_s`` (issue assertions as if the
clock were that far off), ``tamper`` (alter the NameID after signing). The SP's metadata
is read from the ``sp_metadata`` file when the first request arrives (and again whenever
the file changes), so the IdP can start before the SP exists.

``SamlIdp`` starts and stops the process from a test; ``login`` plays the browser.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import warnings
from datetime import UTC, datetime
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
from cryptography.utils import CryptographyDeprecationWarning
from saml2 import BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import AUTHN_PASSWORD_PROTECTED, NAMEID_FORMAT_UNSPECIFIED, NameID
from saml2.samlp import response_from_string
from saml2.sigver import pre_signature_part
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from ledgergate.core.config import SamlSettings
from ledgergate.services.saml import SamlServiceProvider, ensure_sp_keypair
from tests.integration.procs import spawn_until_ready, stop_group

with warnings.catch_warnings():
    # saml2.server imports saml2.cryptography.symmetric, which touches cryptography's
    # deprecated CFB name at import time; nothing here uses it.
    warnings.filterwarnings(
        "ignore", message="CFB has been moved", category=CryptographyDeprecationWarning
    )
    from saml2.server import Server

REPO = Path(__file__).resolve().parents[2]
USERS: dict[str, dict[str, Any]] = {
    "alice": {"mail": "alice@example.com", "groups": ["dba", "eng"]},
    "bob": {"mail": "bob@example.com", "groups": ["ops"]},
}
# The IdP is up within a second or two; a slow CI machine gets this long.
START_TIMEOUT_S = 30.0
# Logins shown a form but not yet submitted; a test never has more than a few.
MAX_PENDING = 100
# Assertions are valid this long after issue; the login session lasts SESSION_S.
LIFETIME_S = 300
SESSION_S = 3600
# The browser walk stops after this many redirects: a loop is a bug, not a wait.
MAX_STEPS = 10
_ASSERTION = "urn:oasis:names:tc:SAML:2.0:assertion:Assertion"
_RESPONSE = "urn:oasis:names:tc:SAML:2.0:protocol:Response"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the IdP process ---------------------------------------------------------------------


class _Idp:
    """The IdP's state: configuration, pysaml2 server, logins waiting for the form."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.base = cfg["base_url"]
        self.lock = threading.Lock()
        self.pending: dict[str, tuple[Any, str]] = {}
        self._server: Any = None
        self._sp_mtime = 0.0
        self.metadata = self._config(with_sp=False)
        md = create_metadata_string(None, config=self.metadata, sign=False)
        self.metadata_xml = md.decode() if isinstance(md, bytes) else str(md)

    def _config(self, *, with_sp: bool) -> Any:
        conf: dict[str, Any] = {
            "entityid": f"{self.base}/metadata",
            "key_file": self.cfg["key_file"],
            "cert_file": self.cfg["cert_file"],
            "xmlsec_binary": "/usr/bin/xmlsec1",
            "accepted_time_diff": 60,
            "service": {
                "idp": {
                    "endpoints": {
                        "single_sign_on_service": [
                            (f"{self.base}/sso/redirect", BINDING_HTTP_REDIRECT)
                        ]
                    },
                    "want_authn_requests_signed": True,
                    "name_id_format": [NAMEID_FORMAT_UNSPECIFIED],
                    "policy": {"default": {"lifetime": {"minutes": 5}}},
                }
            },
        }
        if with_sp:
            conf["metadata"] = {"local": [self.cfg["sp_metadata"]]}
        config = IdPConfig()
        config.load(conf)
        return config

    def server(self) -> Any:
        mtime = os.stat(self.cfg["sp_metadata"]).st_mtime
        if self._server is None or mtime != self._sp_mtime:
            self._server = Server(config=self._config(with_sp=True))
            self._sp_mtime = mtime
        return self._server

    # -- pages -----------------------------------------------------------------------

    def sso(self, query: dict[str, str]) -> str:
        with self.lock:
            req = self.server().parse_authn_request(
                query["SAMLRequest"],
                BINDING_HTTP_REDIRECT,
                relay_state=query.get("RelayState"),
                sigalg=query.get("SigAlg"),
                signature=query.get("Signature"),
            )
            if req is None:
                raise ValueError("the AuthnRequest was not accepted")
            while len(self.pending) >= MAX_PENDING:
                self.pending.pop(next(iter(self.pending)))
            key = secrets.token_urlsafe(16)
            self.pending[key] = (req.message, query.get("RelayState", ""))
        return (
            "<!doctype html><title>Test IdP</title>"
            '<form method="post" action="/login">'
            f'<input type="hidden" name="key" value="{key}">'
            '<input name="username"><button>Sign in</button></form>'
        )

    def login(self, form: dict[str, str]) -> str:
        with self.lock:
            message, relay_state = self.pending.pop(form.get("key", ""), (None, ""))
            user = self.cfg["users"].get(form.get("username", ""))
            if message is None or user is None:
                raise PermissionError("unknown login or user")
            xml, acs = self._response(message, form["username"], user)
        b64 = base64.b64encode(xml.encode()).decode()
        return (
            "<!doctype html><title>Test IdP</title>"
            f'<form method="post" action="{html.escape(acs)}">'
            f'<input type="hidden" name="SAMLResponse" value="{b64}">'
            f'<input type="hidden" name="RelayState" value="{html.escape(relay_state)}">'
            "</form><script>document.forms[0].submit()</script>"
        )

    def _response(self, message: Any, login: str, user: dict[str, Any]) -> tuple[str, str]:
        cfg, server = self.cfg, self.server()
        args = server.response_args(message)
        identity = {"uid": [login], "mail": [user["mail"]], "groups": list(user["groups"])}
        resp = server.create_authn_response(
            identity,
            args["in_response_to"],
            args["destination"],
            args["sp_entity_id"],
            name_id=NameID(format=NAMEID_FORMAT_UNSPECIFIED, text=login),
            authn={"class_ref": AUTHN_PASSWORD_PROTECTED, "authn_auth": self.base},
            sign_assertion=False,
            sign_response=False,
        )
        doc = response_from_string(str(resp))
        assertion = doc.assertion[0]
        now = time.time() + float(cfg.get("clock_offset_s", 0))

        def at(delta: float) -> str:
            return datetime.fromtimestamp(now + delta, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        doc.issue_instant = assertion.issue_instant = at(0)
        assertion.conditions.not_before = at(0)
        assertion.conditions.not_on_or_after = at(LIFETIME_S)
        if cfg.get("audience_override"):
            for restriction in assertion.conditions.audience_restriction:
                for audience in restriction.audience:
                    audience.text = cfg["audience_override"]
        for confirmation in assertion.subject.subject_confirmation:
            confirmation.subject_confirmation_data.not_on_or_after = at(LIFETIME_S)
        for statement in assertion.authn_statement:
            statement.authn_instant = at(0)
            statement.session_not_on_or_after = at(SESSION_S)
        algs = {"digest_alg": DIGEST_SHA256, "sign_alg": SIG_RSA_SHA256}
        cert = server.sec.my_cert
        sign_assertion = cfg.get("sign_assertion", True)
        sign_response = cfg.get("sign_response", False)
        if sign_assertion:
            assertion.signature = pre_signature_part(assertion.id, cert, 1, **algs)
        if sign_response:
            doc.signature = pre_signature_part(doc.id, cert, 2, **algs)
        xml = str(doc)
        # Inner signature first: the Response's signature covers the signed assertion.
        if sign_assertion:
            xml = server.sec.sign_statement(xml, _ASSERTION, node_id=assertion.id)
        if sign_response:
            xml = server.sec.sign_statement(xml, _RESPONSE, node_id=doc.id)
        if cfg.get("tamper"):
            xml = re.sub(r"(<(?:\w+:)?NameID\b[^>]*>)[^<]*", r"\1mallory", xml, count=1)
        return xml, str(args["destination"])


def _handler(idp: _Idp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: str, ctype: str = "text/html") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", f"{ctype}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            try:
                if url.path == "/metadata":
                    self._send(200, idp.metadata_xml, "application/samlmetadata+xml")
                elif url.path == "/sso/redirect":
                    self._send(200, idp.sso(query))
                else:
                    self._send(404, "not found")
            except Exception as e:
                self._send(400, f"bad request: {type(e).__name__}: {e}", "text/plain")

        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(size).decode()
            form = {k: v[0] for k, v in parse_qs(body).items()}
            try:
                if urlsplit(self.path).path == "/login":
                    self._send(200, idp.login(form))
                else:
                    self._send(404, "not found")
            except PermissionError as e:
                self._send(403, str(e), "text/plain")
            except Exception as e:
                self._send(400, f"bad request: {type(e).__name__}: {e}", "text/plain")

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    return Handler


def main(config_path: str) -> None:
    cfg = json.loads(Path(config_path).read_text())
    idp = _Idp(cfg)
    httpd = ThreadingHTTPServer(("127.0.0.1", cfg["port"]), _handler(idp))
    httpd.serve_forever()


# -- from the tests --------------------------------------------------------------------


class SamlIdp:
    """One test IdP process; ``options`` are the bad-case switches (see the docstring)."""

    def __init__(
        self, workdir: Path, *, users: dict[str, dict[str, Any]] | None = None, **options: Any
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users = users or USERS
        self.options = options
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.entity_id = f"{self.base_url}/metadata"
        self.key_file, self.cert_file = ensure_sp_keypair(
            workdir / "idp.key", workdir / "idp.crt", "ledgergate test IdP"
        )
        self.sp_metadata = workdir / "sp-metadata.xml"
        self.idp_metadata = workdir / "idp-metadata.xml"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "base_url": self.base_url,
            "key_file": str(self.key_file),
            "cert_file": str(self.cert_file),
            "sp_metadata": str(self.sp_metadata),
            "users": self.users,
            **self.options,
        }

    def start(self) -> SamlIdp:
        cfg = self.workdir / "idp.json"
        cfg.write_text(json.dumps(self.config()))
        self.log = self.workdir / "idp.log"
        self.proc, meta = spawn_until_ready(
            [sys.executable, "-m", "tests.integration.saml_idp", str(cfg)],
            cwd=REPO,
            log=self.log,
            ready_url=f"{self.base_url}/metadata",
            what="the test SAML IdP",
            timeout_s=START_TIMEOUT_S,
        )
        self.idp_metadata.write_text(meta.text)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_group(proc)

    def rotate_key(self) -> None:
        """Come back on the same port and entity id signing with a new key (which an SP
        configured from the old metadata does not trust)."""
        self.stop()
        self.key_file.unlink()
        self.cert_file.unlink()
        ensure_sp_keypair(self.key_file, self.cert_file, "ledgergate test IdP")
        self.start()

    def __enter__(self) -> SamlIdp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the gateway's side ------------------------------------------------------------

    def settings(self, **over: Any) -> SamlSettings:
        return SamlSettings(idp_metadata=str(self.idp_metadata), **over)

    def service_provider(
        self, base_url: str = "http://127.0.0.1:9/gw", **over: Any
    ) -> SamlServiceProvider:
        """An SP trusting this IdP (key pair under workdir/sp), whose metadata the IdP
        reads from then on."""
        key, cert = ensure_sp_keypair(
            self.workdir / "sp" / "sp.key", self.workdir / "sp" / "sp.crt", "ledgergate"
        )
        sp = SamlServiceProvider(
            self.settings(**over), base_url=base_url, key_file=key, cert_file=cert
        )
        self.sp_metadata.write_text(sp.metadata())
        return sp


class _Forms(HTMLParser):
    """The forms of a page: action and the inputs' names and values."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "fields": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value", "")


def _form(page: httpx.Response) -> dict[str, Any]:
    if page.status_code != 200:
        raise RuntimeError(f"the test IdP answered {page.status_code}: {page.text[:500]}")
    parser = _Forms()
    parser.feed(page.text)
    if not parser.forms:
        raise RuntimeError(f"no form on {page.url}")
    return parser.forms[0]


def login(sso_url: str, username: str) -> tuple[str, str, str]:
    """Be the person's browser: follow ``sso_url`` (the SP's ``login_url``) to the IdP,
    sign in as ``username`` and return the auto-post form's (ACS URL, SAMLResponse,
    RelayState) instead of posting it."""
    with httpx.Client(follow_redirects=True, max_redirects=MAX_STEPS, timeout=10) as browser:
        page = browser.get(sso_url)
        form = _form(page)
        fields = {**form["fields"], "username": username}
        page = browser.post(urljoin(str(page.url), form["action"]), data=fields)
        posted = _form(page)
    return posted["action"], posted["fields"]["SAMLResponse"], posted["fields"]["RelayState"]


if __name__ == "__main__":
    main(sys.argv[1])
