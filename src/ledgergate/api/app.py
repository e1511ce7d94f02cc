"""The REST API: login callbacks, whoami, tokens, service accounts, identities, grants,
policy (the effective policy, its explanations, and the rules kept in the store).

Thin routes over ``services`` (through ``AdminService``, which runs them on its worker
thread). Every call except the login steps is authenticated with a ledgergate token
(``Authorization: Bearer``) and authorised by role; admin actions are ``admin.*`` or
``token.*`` ledger entries naming the caller. OpenAPI is served at ``/openapi.json``
(``/docs`` for people). SCIM lives in ``api.scim``.
"""

# No ``from __future__ import annotations``: FastAPI reads these annotations at run time,
# and some name aliases local to the factory.

import html
import logging
import time
from typing import Annotated, Any
from urllib.parse import urlencode, urlparse

from fastapi import APIRouter, Body, Depends, FastAPI, Form, Header, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from ledgergate.api.console.auth import SAML_COOKIE, cookie_token, same_secret
from ledgergate.api.console.login import SAML_RELAY, signed_in_redirect
from ledgergate.core.config import parse_duration
from ledgergate.core.identity import IdentityError
from ledgergate.core.policy.effective import PolicyError
from ledgergate.core.policy.engine import PolicySet
from ledgergate.services import identities, policy_rules, search, tokens
from ledgergate.services.admin import AdminService, ApiError, Principal
from ledgergate.services.health import METRICS_CONTENT_TYPE, GatewayHealth
from ledgergate.services.ledger import LedgerUnavailable
from ledgergate.services.policy import describe as describe_policy
from ledgergate.services.policy import explain as explain_policy
from ledgergate.services.policy_rules import PolicyChangeError
from ledgergate.store.base import PolicyRuleRow, Store, StoreError

__all__ = ["create_app"]

log = logging.getLogger("ledgergate.api")


class OidcLogin(BaseModel):
    id_token: str = Field(max_length=16384)
    nonce: str | None = Field(None, max_length=256)
    via: str = Field("oidc", pattern=r"^oidc(-device|-browser)?$")


class CodeRedeem(BaseModel):
    code: str = Field(max_length=128)


class TokenCreate(BaseModel):
    identity: str
    kind: str = "service"
    ttl: str
    connections: list[str] | None = None
    groups: list[str] | None = None


class AccessKeyCreate(BaseModel):
    connection: str | None = Field(None, max_length=63)
    ttl: str = "1h"


class SshCertificateCreate(BaseModel):
    public_key: str = Field(min_length=1, max_length=16384)  # an OpenSSH public key line


class TokenRotate(BaseModel):
    ttl: str | None = None


class ServiceAccountCreate(BaseModel):
    name: str
    groups: list[str] = []
    description: str | None = None


class Reason(BaseModel):
    reason: str | None = Field(None, max_length=500)


class Explain(BaseModel):
    connection: str
    sql: str = Field(max_length=1 << 20)
    groups: list[str] = []


class GrantCreate(BaseModel):
    connections: list[str]
    groups: list[str] = []
    identities: list[str] = []


# What a refused policy change answers: a bad rule is unprocessable; a rule of the
# configuration file (changed there) or rules that kept moving meanwhile conflict.
_POLICY_STATUS = {"invalid": 422, "file rule": 409, "unknown rule": 404, "busy": 409}


def _health_routes(app: FastAPI, health: GatewayHealth) -> None:
    """For load balancers and Prometheus: nothing sensitive; /metrics wants the bearer
    token ``listeners.api.metrics_token`` when one is set."""

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process answers (liveness)."""
        return {"status": "alive"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """200 while the gateway takes new sessions; 503 while it drains or its store
        does not answer (take it out of the balancer)."""
        ok, why = health.ready(await health.probe())
        return JSONResponse({"ready": ok, "reason": why}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["health"])
    async def metrics(request: Request) -> Response:
        """Prometheus text format: sessions, ledger entries, ledger lag, store, reviews."""
        if not health.may_read_metrics(request.headers.get("authorization")):
            raise ApiError(401, "/metrics wants the metrics bearer token")
        await health.probe()
        return Response(health.metrics(), media_type=METRICS_CONTENT_TYPE)


def _loopback(url: str) -> bool:
    """Only a loopback address may receive a login code (RFC 8252 §7.3)."""
    try:
        u = urlparse(url)
    except ValueError:
        return False
    return u.scheme == "http" and u.hostname in ("127.0.0.1", "localhost", "::1")


def create_app(admin: AdminService, health: GatewayHealth | None = None) -> FastAPI:
    app = FastAPI(
        title="ledgergate",
        summary="Identity-aware gateway: logins, tokens, identities, SCIM.",
        version="1",
    )
    if health is not None:
        _health_routes(app, health)

    @app.middleware("http")
    async def _api_headers(request: Request, call_next: Any) -> Response:
        # API answers may carry a cookie-authenticated caller's data: never cached, and
        # never sniffed into something a browser would run.
        resp: Response = await call_next(request)
        if request.url.path.startswith("/api/"):
            resp.headers.setdefault("Cache-Control", "no-store")
            resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return JSONResponse({"error": e.message}, status_code=e.status, headers=headers)

    @app.exception_handler(LedgerUnavailable)
    @app.exception_handler(StoreError)
    async def _unavailable(_: Request, e: Exception) -> JSONResponse:
        # The store or the ledger cannot take the change: nothing was done (fail closed).
        log.error("api: %s", type(e).__name__)
        return JSONResponse(
            {"error": "the gateway's store or ledger is unavailable; nothing was changed"},
            status_code=503,
        )

    async def caller(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Principal:
        # A browser signed in to the console sends its cookie (and, for a change, the
        # CSRF header) instead of a bearer token; a bearer token wins when both come.
        if authorization is None:
            token = cookie_token(request, admin.base_url)
            if token is not None:
                authorization = "Bearer " + token
        return await admin.principal(authorization)

    Caller = Annotated[Principal, Depends(caller)]
    v1 = APIRouter(prefix="/api/v1")

    # -- logins -------------------------------------------------------------------------
    @v1.get("/login/config", tags=["login"])
    async def login_config() -> dict[str, Any]:
        """Which identity providers people log in through (no authentication)."""
        return admin.login_config()

    @v1.post("/login/oidc", tags=["login"])
    async def login_oidc(body: OidcLogin) -> dict[str, Any]:
        """Exchange a fresh ID token from the configured provider for a gateway token."""
        return await admin.login_oidc(body.id_token, body.nonce, body.via)

    @v1.post("/login/code", tags=["login"])
    async def login_code(body: CodeRedeem) -> dict[str, Any]:
        """Redeem the one-time code a browser login sent to the CLI's loopback port."""
        return admin.redeem_code(body.code)

    @v1.post("/logout", tags=["login"])
    async def logout(me: Caller) -> dict[str, Any]:
        """Revoke the token this call was made with."""
        await admin.call(tokens.revoke_token, me.token_id, time.time_ns(), me.actor)
        await admin.changed()
        return {"revoked": me.token_id}

    @v1.get("/whoami", tags=["login"])
    async def whoami(me: Caller) -> dict[str, Any]:
        return me.as_dict()

    # -- SAML -----------------------------------------------------------------------------
    saml = APIRouter(prefix="/saml", tags=["saml"])

    @saml.get("/metadata")
    async def saml_metadata() -> Response:
        return Response(admin.saml().metadata(), media_type="application/samlmetadata+xml")

    @saml.get("/login")
    async def saml_login(redirect: str | None = None) -> RedirectResponse:
        """Start a SAML login; ``redirect`` (a loopback URL) receives a one-time code."""
        if redirect is not None and not _loopback(redirect):
            raise ApiError(400, "redirect must be an http://127.0.0.1 (loopback) URL")
        return RedirectResponse(admin.saml().login_url(redirect or ""), status_code=303)

    @saml.post("/acs")
    async def saml_acs(
        request: Request,
        SAMLResponse: Annotated[str, Form(max_length=1 << 20)],
        RelayState: Annotated[str | None, Form(max_length=2048)] = None,
    ) -> Response:
        console = RelayState is not None and RelayState.startswith(SAML_RELAY + ".")
        if console:  # a sign-in to the web console: only in the browser that began it
            kept = request.cookies.get(SAML_COOKIE) or ""
            if not kept or not same_secret(RelayState or "", f"{SAML_RELAY}.{kept}"):
                raise ApiError(403, "this SAML sign-in was not started in this browser")
        login = await admin.login_saml(SAMLResponse, RelayState)
        if console:
            resp = signed_in_redirect(
                str(login["token"]), int(login["expires_ns"]), "/", minted=True
            )
            resp.delete_cookie(SAML_COOKIE, path="/", secure=True, httponly=True, samesite="none")
            return resp
        if RelayState and _loopback(RelayState):
            code = admin.issue_code(login)
            sep = "&" if "?" in RelayState else "?"
            return RedirectResponse(RelayState + sep + urlencode({"code": code}), 303)
        page = (
            "<!doctype html><title>ledgergate</title><h1>Signed in as "
            f"{html.escape(login['identity'])}</h1><p>Your gateway token (shown once, "
            f"valid until the time below) is:</p><pre>{html.escape(login['token'])}</pre>"
            "<p>Use it as the password of psql and other clients.</p>"
        )
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    # -- tokens ---------------------------------------------------------------------------
    @v1.get("/tokens", tags=["tokens"])
    async def list_tokens(me: Caller, identity: str | None = None) -> list[dict[str, Any]]:
        """Admins and auditors see every token; others their own."""
        if not me.roles.intersection({"admin", "auditor"}):
            identity = me.name
        recs = await admin.call(lambda st, _w: tokens.list_tokens(st, identity))
        now = time.time_ns()
        return [r.as_dict(now) for r in recs]

    @v1.post("/tokens", tags=["tokens"], status_code=201)
    async def create_token(me: Caller, body: TokenCreate) -> dict[str, Any]:
        """Mint an API token (admins). The token is in this answer only."""
        me.require("admin")
        try:
            ttl = parse_duration(body.ttl)
        except ValueError as e:
            raise ApiError(400, str(e)) from None

        def mint(st: Any, w: Any) -> tuple[str, tokens.TokenRecord]:
            ident = st.get_identity(body.identity)
            if ident is not None and ident.disabled_ns is not None:
                raise ApiError(409, f"identity {body.identity!r} is disabled")
            groups = (
                tuple(body.groups)
                if body.groups is not None
                else (ident.groups if ident is not None else ())
            )
            return tokens.create_token(
                st,
                w,
                identity=body.identity,
                kind=body.kind,
                ttl_ns=ttl,
                now_ns=time.time_ns(),
                created_by=me.actor,
                groups=groups,
                connections=tuple(body.connections) if body.connections is not None else None,
                max_ttl_ns=parse_duration(admin.config.identity.max_api_token_ttl),
            )

        try:
            tok, rec = await admin.call(mint)
        except tokens.TokenError as e:
            raise ApiError(400, str(e)) from None
        return {"token": tok, **rec.as_dict(time.time_ns())}

    @v1.post("/access-keys", tags=["tokens"], status_code=201)
    async def create_access_key(me: Caller, body: AccessKeyCreate) -> dict[str, Any]:
        """An S3 access key for yourself (what ``ledgergate aws-credentials`` asks for):
        your identity and groups, expiring with your token at the latest. The secret is
        in this answer only."""
        try:
            ttl = parse_duration(body.ttl)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        out = await admin.own_access_key(me, body.connection, ttl)
        await admin.changed()
        return out

    @v1.post("/ssh/certificate", tags=["tokens"], status_code=201)
    async def create_ssh_certificate(me: Caller, body: SshCertificateCreate) -> dict[str, Any]:
        """An SSH user certificate for your own public key (what ``ledgergate
        ssh-certificate`` asks for): signed by the gateway's SSH CA, bound to the token
        you call with, expiring with it; the gateway's SSH listener admits it while that
        token is active."""
        return await admin.own_ssh_certificate(me, body.public_key)

    async def _own_or_admin(me: Principal, token_id: str) -> None:
        if "admin" in me.roles:
            return
        row = await admin.call(lambda st, _w: st.token_by_id(token_id))
        if row is None or row.identity != me.name:
            raise ApiError(404, f"no token {token_id[:40]!r}")

    @v1.post("/tokens/{token_id}/rotate", tags=["tokens"])
    async def rotate_token(me: Caller, token_id: str, body: TokenRotate) -> dict[str, Any]:
        await _own_or_admin(me, token_id)
        is_admin = "admin" in me.roles
        if body.ttl and not is_admin:
            raise ApiError(403, "only an admin sets a token's lifetime; yours keeps its expiry")
        try:
            ttl = parse_duration(body.ttl) if body.ttl else None
            tok, rec = await admin.call(
                tokens.rotate_token,
                token_id,
                now_ns=time.time_ns(),
                by=me.actor,
                ttl_ns=ttl,
                max_ttl_ns=parse_duration(admin.config.identity.max_api_token_ttl),
                keep_expiry=not is_admin,
            )
        except (tokens.TokenError, ValueError) as e:
            raise ApiError(400, str(e)) from None
        await admin.changed()
        return {"token": tok, **rec.as_dict(time.time_ns())}

    @v1.delete("/tokens/{token_id}", tags=["tokens"])
    async def revoke_token(me: Caller, token_id: str) -> dict[str, Any]:
        await _own_or_admin(me, token_id)
        try:
            done = await admin.call(tokens.revoke_token, token_id, time.time_ns(), me.actor)
        except tokens.TokenError as e:
            raise ApiError(404, str(e)) from None
        await admin.changed()
        return {"token_id": token_id, "revoked": done}

    # -- service accounts and identities --------------------------------------------------
    @v1.post("/service-accounts", tags=["identities"], status_code=201)
    async def create_service_account(me: Caller, body: ServiceAccountCreate) -> dict[str, Any]:
        me.require("admin")
        try:
            row = await admin.call(
                identities.create_service_account,
                name=body.name,
                groups=body.groups,
                description=body.description,
                now_ns=time.time_ns(),
                by=me.actor,
            )
        except IdentityError as e:
            raise ApiError(409 if e.reason == "exists" else 400, str(e)) from None
        return identities.identity_dict(row)

    @v1.get("/search", tags=["evidence"])
    async def search_entries(
        me: Caller,
        q: Annotated[str, Query(max_length=2000, description="Words; a quoted part as written.")],
        identity: str | None = None,
        connection: str | None = None,
        kind: Annotated[list[str] | None, Query()] = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: Annotated[int, Query(ge=1, le=search.MAX_HITS)] = 100,
    ) -> list[dict[str, Any]]:
        """What ran, across every session: statements, requests, operations, topics and
        tables as the ledger recorded them (admins and auditors)."""
        me.require("admin", "auditor")

        def run(st: Store, _w: object) -> list[search.Hit]:
            return search.search(
                st,
                q,
                kinds=kind or (),
                identity=identity,
                connection=connection,
                since_ns=since_ns,
                until_ns=until_ns,
                limit=limit,
            )

        try:
            hits = await admin.call(run)
        except search.SearchError as e:
            raise ApiError(422, str(e)) from None
        return [h.as_dict() for h in hits]

    @v1.get("/identities", tags=["identities"])
    async def list_identities(me: Caller) -> list[dict[str, Any]]:
        me.require("admin", "auditor")
        rows = await admin.call(lambda st, _w: st.list_identities())
        return [identities.identity_dict(r) for r in rows]

    @v1.get("/identities/{name}", tags=["identities"])
    async def get_identity(me: Caller, name: str) -> dict[str, Any]:
        if name != me.name:
            me.require("admin", "auditor")
        row = await admin.call(lambda st, _w: st.get_identity(name))
        if row is None:
            raise ApiError(404, f"no identity {name[:200]!r}")
        return identities.identity_dict(row)

    async def _set(me: Principal, name: str, disabled: bool, reason: str | None) -> dict[str, Any]:
        me.require("admin")
        if disabled and name == me.name:
            raise ApiError(400, "an admin cannot disable their own identity")
        try:
            changed = await admin.call(
                identities.set_disabled,
                name,
                disabled=disabled,
                now_ns=time.time_ns(),
                by=me.actor,
                reason=reason,
            )
        except IdentityError as e:
            raise ApiError(404 if e.reason == "unknown identity" else 400, str(e)) from None
        if changed:
            await admin.changed()
        return {"identity": name, "disabled": disabled, "changed": changed}

    @v1.post("/identities/{name}/disable", tags=["identities"])
    async def disable_identity(me: Caller, name: str, body: Reason | None = None) -> dict[str, Any]:
        """Disable: tokens stop working and open sessions end at once."""
        return await _set(me, name, True, body.reason if body else None)

    @v1.post("/identities/{name}/enable", tags=["identities"])
    async def enable_identity(me: Caller, name: str, body: Reason | None = None) -> dict[str, Any]:
        return await _set(me, name, False, body.reason if body else None)

    # -- grants ---------------------------------------------------------------------------
    @v1.get("/grants", tags=["grants"])
    async def list_grants(me: Caller) -> dict[str, Any]:
        me.require("admin", "auditor")
        stored = await admin.call(lambda st, _w: st.list_grants())
        cfg = admin.config.grants
        return {
            "open": cfg is None and not stored,
            "grants": [{"id": "config", **g.model_dump()} for g in (cfg or [])]
            + [
                {
                    "id": g.id,
                    "connections": list(g.connections),
                    "groups": list(g.groups),
                    "identities": list(g.identities),
                    "created_by": g.created_by,
                    "created_ns": g.created_ns,
                }
                for g in stored
            ],
        }

    @v1.post("/grants", tags=["grants"], status_code=201)
    async def create_grant(me: Caller, body: GrantCreate) -> dict[str, Any]:
        me.require("admin")
        try:
            g = await admin.call(
                identities.add_grant,
                connections=body.connections,
                groups=body.groups,
                identities=body.identities,
                now_ns=time.time_ns(),
                by=me.actor,
            )
        except IdentityError as e:
            raise ApiError(400, str(e)) from None
        return {
            "id": g.id,
            "connections": list(g.connections),
            "groups": list(g.groups),
            "identities": list(g.identities),
        }

    @v1.delete("/grants/{grant_id}", tags=["grants"])
    async def delete_grant(me: Caller, grant_id: str) -> dict[str, Any]:
        me.require("admin")
        done = await admin.call(
            identities.remove_grant, grant_id, now_ns=time.time_ns(), by=me.actor
        )
        if not done:
            raise ApiError(404, f"no grant {grant_id[:40]!r} (YAML grants are changed there)")
        await admin.changed()
        return {"id": grant_id, "removed": True}

    # -- policy -------------------------------------------------------------------------
    file_policy = admin.config.policy

    async def effective() -> tuple[PolicySet, list[PolicyRuleRow]]:
        try:
            return await admin.call(lambda st, _w: policy_rules.current(st, file_policy))
        except PolicyError as e:
            raise ApiError(
                409, f"the stored policy rules do not fit the configuration: {e}"
            ) from None

    @v1.get("/policy", tags=["policy"])
    async def get_policy(me: Caller) -> dict[str, Any]:
        """The effective policy: its version and rules (the file's, then the stored ones),
        each with its ``source`` (``file`` or ``api``)."""
        me.require("admin", "auditor", "reviewer")
        ps, stored = await effective()
        return describe_policy(ps, stored)

    @v1.post("/policy/explain", tags=["policy"])
    async def explain_statement(me: Caller, body: Explain) -> dict[str, Any]:
        """The decision a statement would get on a connection for some groups."""
        me.require("admin", "auditor", "reviewer")
        ps, _ = await effective()
        return explain_policy(ps, body.connection, body.sql, body.groups)

    @v1.put("/policy/rules/{rule_id}", tags=["policy"])
    async def put_policy_rule(
        me: Caller, rule_id: str, body: Annotated[dict[str, Any], Body()]
    ) -> dict[str, Any]:
        """Create or replace a stored rule (admins). The body is the rule (without its id,
        or with the same id), plus an optional ``position`` among the stored rules (0
        first); running gateways apply it to open sessions from their next statement."""
        me.require("admin")
        doc = dict(body)
        position = doc.pop("position", None)
        if position is not None and type(position) is not int:  # below 0: put_rule refuses
            raise ApiError(422, "position: a place among the stored rules, 0 or more")
        try:
            change = await admin.call(
                policy_rules.put_rule,
                file_policy,
                rule_id,
                doc,
                position=position,
                now_ns=time.time_ns(),
                by=me.actor,
            )
        except PolicyChangeError as e:
            raise ApiError(_POLICY_STATUS.get(e.reason, 400), str(e)) from None
        await admin.changed()
        return change.as_dict()

    @v1.delete("/policy/rules/{rule_id}", tags=["policy"])
    async def delete_policy_rule(me: Caller, rule_id: str) -> dict[str, Any]:
        """Remove a stored rule (admins); the configuration file's rules are changed there."""
        me.require("admin")
        try:
            change = await admin.call(
                policy_rules.delete_rule,
                file_policy,
                rule_id,
                now_ns=time.time_ns(),
                by=me.actor,
            )
        except PolicyChangeError as e:
            raise ApiError(_POLICY_STATUS.get(e.reason, 400), str(e)) from None
        await admin.changed()
        return {**change.as_dict(), "removed": True}

    from ledgergate.api import console
    from ledgergate.api.connections import router as connections_router
    from ledgergate.api.evidence import router as evidence_router
    from ledgergate.api.reviews import router as reviews_router
    from ledgergate.api.scim import router as scim_router
    from ledgergate.api.sessions import router as sessions_router

    app.include_router(v1)
    app.include_router(sessions_router(admin, caller))
    app.include_router(connections_router(admin, caller))
    app.include_router(evidence_router(admin, caller))
    app.include_router(saml)
    app.include_router(scim_router(admin, caller))
    app.include_router(reviews_router(admin, caller))
    console.mount(app, admin)
    return app
