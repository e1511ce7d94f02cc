"""What the REST API needs from the rest of ledgergate, on one worker thread.

``AdminService`` owns a store handle and the API's own ledger stream
(``api@<gateway>``, shared like the CLI's), and runs every use-case on a single worker
thread (SQLite handles are per thread; admin calls are rare, so one thread is plenty and
keeps them in order). It authenticates API callers (``Principal`` with roles), logs
people in from a verified OIDC ID token or SAML assertion, holds the one-time codes a
CLI redeems after a browser login, and tells the gateway to re-check its sessions after
a change that may end some. Never returns or logs a token except to its owner, once.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, ParamSpec, TypeVar

from ledgergate.core.config import parse_duration
from ledgergate.core.identity import Claims, IdentityError, roles_of
from ledgergate.core.ledger.checkpoint import Signer
from ledgergate.services import identities, tokens
from ledgergate.services.config import Settings
from ledgergate.services.evidence_jobs import EvidenceJobs
from ledgergate.services.keys import PayloadCipher
from ledgergate.services.ledger import LedgerWriter
from ledgergate.services.worker import LedgerWorker
from ledgergate.store import Store

__all__ = ["AdminService", "ApiError", "Principal"]

P = ParamSpec("P")
T = TypeVar("T")
# A browser login hands the CLI a one-time code, not the token, through the loopback
# redirect; the code is redeemed within this long, once. Bounded: unredeemed codes of
# abandoned logins are dropped oldest first.
CODE_TTL_NS = 120 * 10**9
MAX_CODES = 1000
# An ID token exchanged for a gateway token must have been issued this recently: a
# leaked old ID token is not a way in.
ID_TOKEN_MAX_AGE_NS = 10 * 60 * 10**9


class ApiError(Exception):
    """An API request that cannot be honoured: HTTP status and a message safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class NotAuthenticated(ApiError):
    """401 for a token that does not sign anyone in; ``who``: the identity it names, when
    the gateway knows it (an expired or revoked token, a disabled identity)."""

    def __init__(self, message: str, who: str | None) -> None:
        super().__init__(401, message)
        self.who = who


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    kind: str
    groups: tuple[str, ...]
    roles: frozenset[str]
    token_id: str
    expires_ns: int
    purpose: str
    scope: tuple[str, ...] | None

    @property
    def actor(self) -> str:
        return f"api:{self.name}"

    def require(self, *roles: str) -> None:
        if not self.roles.intersection(roles):
            raise ApiError(403, f"this needs the {' or '.join(roles)} role")

    def as_dict(self) -> dict[str, Any]:
        return {
            "identity": self.name,
            "kind": self.kind,
            "groups": list(self.groups),
            "roles": sorted(self.roles),
            "token_id": self.token_id,
            "expires_ns": self.expires_ns,
            "purpose": self.purpose,
            "connections": None if self.scope is None else list(self.scope),
        }


class AdminService:
    def __init__(
        self,
        settings: Settings,
        signer: Signer,
        *,
        on_change: Callable[[], Awaitable[None]] | None = None,
        base_url: str = "",
    ) -> None:
        self.settings = settings
        self.config = settings.config
        self.base_url = base_url
        self._signer = signer
        self._on_change = on_change
        self._worker = LedgerWorker(
            settings.open_store, f"api@{settings.gateway_name}", signer, name="api"
        )
        self._codes: OrderedDict[str, tuple[int, str, dict[str, Any]]] = OrderedDict()
        self._oidc: Any = None
        self._saml: Any = None
        self._jobs: EvidenceJobs | None = None

    # -- lifecycle and threading ----------------------------------------------------------
    async def start(self) -> None:
        await self._worker.start()

    @property
    def _store(self) -> Store | None:
        return self._worker.store

    @property
    def _writer(self) -> LedgerWriter | None:
        return self._worker.writer

    async def close(self) -> None:
        if self._jobs is not None:
            self._jobs.close()
        await self._worker.close()

    async def _run(self, fn: Callable[P, T], *args: P.args, **kw: P.kwargs) -> T:
        return await self._worker.run(fn, *args, **kw)

    @property
    def evidence_jobs(self) -> EvidenceJobs:
        """Evidence exports this process runs for API callers."""
        if self._jobs is None:
            self._jobs = EvidenceJobs(self.settings, self._signer)
        return self._jobs

    @property
    def signer(self) -> Signer:
        """The ledger key (to sign a checkpoint a proof needs)."""
        return self._signer

    def payload_cipher(self) -> PayloadCipher | None:
        """The payload key, if the data directory has one (never created here)."""
        path = self.settings.payload_key
        if not path.exists():
            return None
        return PayloadCipher(path.read_bytes())

    def oidc_client_secret(self) -> str | None:
        """The gateway's secret at the OpenID provider (the console signs people in as
        that client); None for a public client, which PKCE alone protects."""
        from ledgergate.services.config import resolve_secret

        oidc = self.config.identity.oidc
        if oidc is None:
            return None
        return resolve_secret(oidc.client_secret, what="identity.oidc.client_secret")

    async def call(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run ``fn(store, writer, *args, **kw)`` on the worker thread."""
        return await self._worker.call(fn, *args, **kw)

    async def own_access_key(
        self, me: Principal, connection: str | None, ttl_ns: int
    ) -> dict[str, Any]:
        """An S3 access key for the caller themself, from their token: the same identity
        and groups, the same connection scope (or one connection of it), and it expires
        with the token at the latest. The secret is in this answer only."""
        from ledgergate.services import access_keys
        from ledgergate.services.keys import SecretSealer, load_or_create_payload_key

        now = time.time_ns()
        if (
            connection is not None
            and me.scope is not None
            and not any(fnmatchcase(connection, p) for p in me.scope)
        ):
            raise ApiError(403, f"your token is not valid for connection {connection!r}")
        ttl = min(ttl_ns, me.expires_ns - now)
        if ttl <= 0:
            raise ApiError(401, "not authenticated: token expired")
        sealer = SecretSealer(load_or_create_payload_key(self.settings.access_key_key))

        def mint(st: Store, w: LedgerWriter) -> tuple[str, str, tokens.TokenRecord]:
            return access_keys.create_access_key(
                st,
                w,
                sealer,
                identity=me.name,
                kind=me.kind,
                ttl_ns=ttl,
                now_ns=now,
                created_by=me.actor,
                groups=me.groups,
                connections=(connection,) if connection is not None else me.scope,
                purpose="s3-session",
            )

        try:
            key_id, secret, rec = await self.call(mint)
        except tokens.TokenError as e:
            raise ApiError(400, str(e)) from None
        return {
            "access_key_id": key_id,
            "secret_access_key": secret,
            "token_id": rec.id,
            "expires_ns": rec.expires_ns,
        }

    async def own_ssh_certificate(self, me: Principal, public_key: str) -> dict[str, Any]:
        """An SSH user certificate for the caller's own public key, bound to the login
        (token) they call with and expiring with it (``services.ssh_ca``)."""
        from ledgergate.core.ledger.entry import Draft
        from ledgergate.services import ssh_ca

        now = time.time_ns()
        if me.expires_ns <= now:
            raise ApiError(401, "not authenticated: token expired")
        ca = ssh_ca.load_ca(self.settings.ssh_user_ca)
        try:
            issued = ssh_ca.sign_for_login(
                ca, public_key, subject=me.name, token_id=me.token_id,
                valid_before_ns=me.expires_ns, now_ns=now,
            )  # fmt: skip
        except ssh_ca.CertificateError as e:
            raise ApiError(400, str(e)) from None
        entry = Draft(
            now,
            "ssh.certificate",
            {
                "identity": {"kind": me.kind, "subject": me.name, "groups": list(me.groups)},
                "token_id": me.token_id,
                "key_id": issued.key_id,
                "key": issued.fingerprint,
                "valid_before_ns": issued.valid_before_ns,
                "by": me.actor,
            },
        )
        await self.call(lambda _st, w: w.append([entry], now))
        return {
            "certificate": issued.certificate,
            "key_id": issued.key_id,
            "valid_before_ns": issued.valid_before_ns,
            "ca": ca.export_public_key().decode().strip(),
        }

    async def changed(self) -> None:
        """A change that may end sessions was made here: re-check them now."""
        if self._on_change is not None:
            await self._on_change()

    # -- callers ------------------------------------------------------------------------
    async def principal(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise ApiError(401, "send Authorization: Bearer <ledgergate token>")
        return await self._run(self._principal, authorization[7:].strip())

    async def sign_in(self, token: str, via: str) -> Principal:
        """A person signing in with a token (the console's form): the principal, or the
        ApiError after a ``login.fail`` entry naming the reason (never the token). API
        calls with a bad token are only answered 401: those are programs, not sign-ins."""
        return await self._run(self._sign_in, token, via)

    def _sign_in(self, token: str, via: str) -> Principal:
        try:
            return self._principal(token)
        except NotAuthenticated as e:
            self._login_failed(e.who, via, e.message, time.time_ns())
            raise

    def _principal(self, token: str) -> Principal:
        assert self._store is not None
        now = time.time_ns()
        r = tokens.authenticate(self._store, token, now)
        if not r.ok or r.identity is None or r.token_id is None:
            who = str(r.identity["subject"]) if r.identity is not None else None
            raise NotAuthenticated(f"not authenticated: {r.reason or 'unknown token'}", who)
        name = str(r.identity["subject"])
        ident = self._store.get_identity(name)
        if ident is not None and ident.disabled_ns is not None:
            raise NotAuthenticated("not authenticated: identity disabled", name)
        row = self._store.token_by_id(r.token_id)
        assert row is not None
        groups = tuple(str(g) for g in r.identity.get("groups", []))
        return Principal(
            name=name,
            kind=str(r.identity["kind"]),
            groups=groups,
            roles=roles_of(name, groups, self.config.roles),
            token_id=r.token_id,
            expires_ns=r.expires_ns,
            purpose=row.purpose,
            scope=r.connections,
        )

    # -- logins -------------------------------------------------------------------------
    def login_config(self) -> dict[str, Any]:
        o, s = self.config.identity.oidc, self.config.identity.saml
        return {
            "oidc": None
            if o is None
            else {"issuer": o.issuer, "client_id": o.client_id, "scopes": o.scopes},
            "saml": s is not None,
            "session_ttl": self.config.identity.session_ttl,
        }

    def _verifier(self) -> Any:
        if self._oidc is None:
            oidc = self.config.identity.oidc
            if oidc is None:
                raise ApiError(404, "no OpenID Connect provider is configured")
            from ledgergate.services.oidc import OidcVerifier

            self._oidc = OidcVerifier(oidc)
        return self._oidc

    async def login_oidc(self, id_token: str, nonce: str | None, via: str) -> dict[str, Any]:
        return await self._run(self._login_oidc, id_token, nonce, via)

    def _login_oidc(self, id_token: str, nonce: str | None, via: str) -> dict[str, Any]:
        now = time.time_ns()
        verifier = self._verifier()
        try:
            claims: Claims = verifier.verify(
                id_token, now, nonce=nonce, max_age_ns=ID_TOKEN_MAX_AGE_NS
            )
        except IdentityError as e:
            self._login_failed(None, via, str(e), now)
            raise ApiError(401, f"login refused: {e}") from None
        return self._mint(claims, via, now)

    def _login_failed(self, who: str | None, via: str, reason: str, now: int) -> None:
        from ledgergate.core.ledger.entry import Draft

        assert self._writer is not None
        body: dict[str, Any] = {"via": via, "reason": reason}
        if who is not None:
            body["identity"] = {"kind": "user", "subject": who, "groups": []}
        self._writer.append([Draft(now, "login.fail", body)], now)

    def _mint(self, claims: Claims, via: str, now: int) -> dict[str, Any]:
        assert self._store is not None and self._writer is not None
        ttl = parse_duration(self.config.identity.session_ttl)
        try:
            tok, rec = identities.login(
                self._store, self._writer, claims, now_ns=now, session_ttl_ns=ttl, via=via
            )
        except IdentityError as e:
            raise ApiError(403, f"login refused: {e}") from None
        return {
            "token": tok,
            "token_id": rec.id,
            "identity": rec.identity,
            "groups": list(rec.groups),
            "expires_ns": rec.expires_ns,
            "roles": sorted(roles_of(rec.identity, rec.groups, self.config.roles)),
        }

    def saml(self) -> Any:
        if self._saml is None:
            saml = self.config.identity.saml
            if saml is None:
                raise ApiError(404, "no SAML identity provider is configured")
            from ledgergate.services.saml import SamlServiceProvider, ensure_sp_keypair

            d = self.settings.data_dir / "saml"
            key, cert = ensure_sp_keypair(
                saml.key or d / "sp.key", saml.cert or d / "sp.crt", self.settings.gateway_name
            )
            self._saml = SamlServiceProvider(
                saml, base_url=self.base_url, key_file=key, cert_file=cert, state_dir=d
            )
        return self._saml

    async def login_saml(self, saml_response: str, relay_state: str | None) -> dict[str, Any]:
        return await self._run(self._login_saml, saml_response, relay_state)

    def _login_saml(self, saml_response: str, relay_state: str | None) -> dict[str, Any]:
        now = time.time_ns()
        try:
            claims: Claims = self.saml().acs(saml_response, relay_state)
        except IdentityError as e:
            self._login_failed(None, "saml", str(e), now)
            raise ApiError(401, f"login refused: {e}") from None
        return self._mint(claims, "saml", now)

    def issue_code(self, login: dict[str, Any]) -> str:
        """A one-time code the CLI redeems for ``login`` (its token) within CODE_TTL_NS."""
        now = time.time_ns()
        while self._codes and (
            len(self._codes) >= MAX_CODES or next(iter(self._codes.values()))[0] < now
        ):
            self._codes.popitem(last=False)
        code = secrets.token_urlsafe(24)
        self._codes[code] = (now + CODE_TTL_NS, str(login["token"]), login)
        return code

    def redeem_code(self, code: str) -> dict[str, Any]:
        got = self._codes.pop(code, None)
        if got is None or got[0] < time.time_ns():
            raise ApiError(400, "unknown or expired login code; log in again")
        return got[2]
