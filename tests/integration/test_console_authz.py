"""The authorization matrix of the REST API and the web console: every route the running
gateway's OpenAPI lists and every page the console serves, tried with no login, a
revoked token, a plain user, an auditor, a reviewer and an admin, each answer held to
the tables below (who may use what, as each route's code decides it). A route the tables
do not classify fails the suite, so a new route comes with its rule.

Beside the matrix: a browser's cookie changes nothing without the CSRF header or from
another origin; what belongs to someone else (a token, a session, a review, an identity)
stays out of reach of the roles that may not see it, and lists never widen past it; the
console's navigation offers a role only pages it may open.

One gateway for the module, and the calls leave it as they found it: ids are ``nosuch``;
a body that would make a real change fails its check after authorization (an unknown
duration, an empty grant); the calls that spend the caller's token (signing out) are made
with tokens minted for them.
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any, cast

import httpx
import psycopg
import pytest

from ledgergate.api.console.auth import COOKIE, MINTED_COOKIE, csrf_token
from tests.integration.fixtures import app_connection
from tests.integration.gateway import Gateway, free_port
from tests.integration.pgcluster import PgCluster

# Who calls. ``anon`` sends nothing; ``revoked`` a token an admin revoked; the others
# are one person of each role (roles by identity or group, as ROLES says).
CALLERS = ("anon", "revoked", "user", "auditor", "reviewer", "admin")
SIGNED_IN = ("user", "auditor", "reviewer", "admin")
PEOPLE: dict[str, tuple[str, list[str]]] = {
    "user": ("erin", ["eng"]),
    "auditor": ("aud", ["audit"]),
    "reviewer": ("rita", ["dba"]),
    "admin": ("ada", []),
    # owners of the things others must not reach (plain users)
    "bob": ("bob", ["eng"]),
    "cody": ("cody", ["contractors"]),
}
ROLES = {
    "admin": {"identities": ["ada"]},
    "auditor": {"groups": ["audit"]},
    "reviewer": {"groups": ["dba"]},
}
RULES = [
    {
        "id": "contractor-access",
        "connections": ["app"],
        "groups": ["contractors"],
        "review": {"kind": "access", "reviewers": ["dba"]},
    },
]
ANY = "signed-in"


@dataclass(frozen=True)
class Rule:
    """Who may use a route: ``public`` (no login), ``signed-in`` (any role), or the
    callers joined by ``|``. A signed-in caller outside it gets ``denied``. ``json``,
    ``form`` and ``params`` make a request that passes validation, so the answer shows
    the authorization and not a 422 in front of it."""

    who: str
    denied: int = 403
    json: Any = None
    form: dict[str, str] | None = None
    params: dict[str, str] = field(default_factory=dict)
    spends_token: bool = False  # the call revokes the token it is made with

    def allows(self, caller: str) -> bool:
        if self.who == "public":
            return True
        if caller in ("anon", "revoked"):
            return False
        return self.who == ANY or caller in self.who.split("|")


# The REST API: exactly what /openapi.json lists. Routes marked "own" answer 404 for
# someone else's thing, which dummy ids cannot show: OWNED tries them on real ones.
API: dict[tuple[str, str], Rule] = {
    # health: load balancers and Prometheus (no listeners.api.metrics_token here)
    ("GET", "/healthz"): Rule("public"),
    ("GET", "/readyz"): Rule("public"),
    ("GET", "/metrics"): Rule("public"),
    # logins: the steps before there is a token
    ("GET", "/api/v1/login/config"): Rule("public"),
    ("POST", "/api/v1/login/oidc"): Rule("public", json={"id_token": "nosuch"}),
    ("POST", "/api/v1/login/code"): Rule("public", json={"code": "nosuch"}),
    ("POST", "/api/v1/logout"): Rule(ANY, spends_token=True),
    ("GET", "/api/v1/whoami"): Rule(ANY),
    ("GET", "/saml/metadata"): Rule("public"),
    ("GET", "/saml/login"): Rule("public"),
    ("POST", "/saml/acs"): Rule("public", form={"SAMLResponse": "nosuch"}),
    # tokens: admins mint; everyone lists (own; admins and auditors all), rotates and
    # revokes their own (admins any), and gets keys and certificates for themselves
    ("GET", "/api/v1/tokens"): Rule(ANY),
    ("POST", "/api/v1/tokens"): Rule(
        "admin", json={"identity": "nosuch", "kind": "user", "ttl": "never"}
    ),
    ("POST", "/api/v1/access-keys"): Rule(ANY, json={"ttl": "never"}),
    ("POST", "/api/v1/ssh/certificate"): Rule(ANY, json={"public_key": "not-a-key"}),
    ("POST", "/api/v1/tokens/{token_id}/rotate"): Rule(ANY, json={}),  # own
    ("DELETE", "/api/v1/tokens/{token_id}"): Rule(ANY),  # own
    # identities and grants: admins change, auditors read
    ("POST", "/api/v1/service-accounts"): Rule("admin", json={"name": ""}),
    ("GET", "/api/v1/search"): Rule("auditor|admin", params={"q": "nosuch"}),
    ("GET", "/api/v1/identities"): Rule("auditor|admin"),
    ("GET", "/api/v1/identities/{name}"): Rule("auditor|admin"),  # and one's own
    ("POST", "/api/v1/identities/{name}/disable"): Rule("admin", json={"reason": "authz"}),
    ("POST", "/api/v1/identities/{name}/enable"): Rule("admin", json={"reason": "authz"}),
    ("GET", "/api/v1/grants"): Rule("auditor|admin"),
    ("POST", "/api/v1/grants"): Rule("admin", json={"connections": [], "groups": []}),
    ("DELETE", "/api/v1/grants/{grant_id}"): Rule("admin"),
    # policy: reviewers, auditors and admins read and explain; admins change
    ("GET", "/api/v1/policy"): Rule("auditor|reviewer|admin"),
    ("POST", "/api/v1/policy/explain"): Rule(
        "auditor|reviewer|admin", json={"connection": "app", "sql": "SELECT 1"}
    ),
    ("PUT", "/api/v1/policy/rules/{rule_id}"): Rule("admin", json={"position": "first"}),
    ("DELETE", "/api/v1/policy/rules/{rule_id}"): Rule("admin"),
    # sessions and evidence: own sessions for everyone, all for admins and auditors
    ("GET", "/api/v1/sessions"): Rule(ANY),
    ("GET", "/api/v1/sessions/{session_id}"): Rule(ANY),  # own
    ("POST", "/api/v1/sessions/{session_id}/terminate"): Rule("admin", json={"reason": "authz"}),
    ("GET", "/api/v1/sessions/{session_id}/asciicast"): Rule(ANY),  # own
    ("GET", "/api/v1/sessions/{session_id}/replay"): Rule(ANY),  # own
    ("GET", "/api/v1/ledger/proof"): Rule("auditor|admin", params={"entry": "nosuch:1"}),
    ("GET", "/api/v1/ledger/health"): Rule("auditor|admin"),
    ("POST", "/api/v1/ledger/verify"): Rule("auditor|admin"),
    ("GET", "/api/v1/connections"): Rule("auditor|admin"),
    ("GET", "/api/v1/webhooks"): Rule("admin"),
    # evidence exports and insights: admins and auditors (a bad period: no job starts)
    ("POST", "/api/v1/evidence/exports"): Rule("auditor|admin", json={"since": "whenever"}),
    ("GET", "/api/v1/evidence/exports"): Rule("auditor|admin"),
    ("GET", "/api/v1/evidence/exports/{job_id}"): Rule("auditor|admin"),
    ("GET", "/api/v1/evidence/exports/{job_id}/bundle"): Rule("auditor|admin"),
    ("GET", "/api/v1/insights"): Rule("auditor|admin"),
    # SCIM: the provisioning connector calls with a ledgergate token of an admin
    # identity (api/scim.py's ``provisioner``); there is no separate SCIM secret
    ("GET", "/scim/v2/ServiceProviderConfig"): Rule("admin"),
    ("GET", "/scim/v2/Users"): Rule("admin"),
    ("POST", "/scim/v2/Users"): Rule("admin", json={}),
    ("GET", "/scim/v2/Users/{scim_id}"): Rule("admin"),
    ("PUT", "/scim/v2/Users/{scim_id}"): Rule("admin", json={}),
    ("PATCH", "/scim/v2/Users/{scim_id}"): Rule("admin", json={}),
    ("DELETE", "/scim/v2/Users/{scim_id}"): Rule("admin"),
    # reviews: anyone but an auditor asks; reviewers and admins decide (the service
    # checks the role before it looks the review up); requesters read and cancel their own
    ("POST", "/api/v1/reviews/access"): Rule(
        "user|reviewer|admin", json={"connection": "app", "duration": "never"}
    ),
    ("GET", "/api/v1/reviews"): Rule(ANY),
    ("GET", "/api/v1/reviews/events"): Rule("auditor|reviewer|admin"),
    ("GET", "/api/v1/reviews/{review_id}"): Rule(ANY),  # own
    ("POST", "/api/v1/reviews/{review_id}/approve"): Rule("reviewer|admin", json={"reason": "x"}),
    ("POST", "/api/v1/reviews/{review_id}/deny"): Rule("reviewer|admin", json={"reason": "x"}),
    ("POST", "/api/v1/reviews/{review_id}/cancel"): Rule(ANY, json={}),  # own
}

# What the listener serves outside the OpenAPI document: its own documentation, the
# console (signed in by the cookie) and the review page notifications link to.
PAGES: dict[tuple[str, str], Rule] = {
    ("GET", "/openapi.json"): Rule("public"),
    ("GET", "/docs"): Rule("public"),
    ("GET", "/docs/oauth2-redirect"): Rule("public"),
    ("GET", "/redoc"): Rule("public"),
    ("GET", "/console/static/{path}"): Rule("public"),
    ("GET", "/reviews/{review_id}"): Rule("public"),  # holds no review data
    ("GET", "/console/login"): Rule("public"),
    ("POST", "/console/login"): Rule("public", form={"token": "nosuch", "next": "/"}),
    ("GET", "/console/login/oidc"): Rule("public"),
    ("GET", "/console/login/oidc/callback"): Rule("public"),
    ("GET", "/console/login/saml"): Rule("public"),
    # without its csrf field a sign-out only clears the cookie (test below)
    ("POST", "/console/logout"): Rule("public", form={"csrf": ""}),
    ("GET", "/"): Rule(ANY),
    ("GET", "/console/reviews"): Rule("reviewer|admin"),
    ("GET", "/console/reviews/inbox"): Rule("reviewer|admin"),
    ("GET", "/console/sessions"): Rule(ANY),
    ("GET", "/console/sessions/{session_id}"): Rule(ANY),  # own, or auditors and admins
    ("GET", "/console/ledger"): Rule("auditor|admin"),
    ("GET", "/console/tokens"): Rule("admin"),
    ("GET", "/console/me"): Rule(ANY),
    ("GET", "/console/live"): Rule("admin"),
    ("GET", "/console/identities"): Rule("admin"),
    ("GET", "/console/grants"): Rule("admin"),
    ("GET", "/console/policy"): Rule("auditor|reviewer|admin"),
    ("GET", "/console/connections"): Rule("auditor|admin"),
    ("GET", "/console/evidence"): Rule("auditor|admin"),
    ("GET", "/console/insights"): Rule("auditor|admin"),
}


@dataclass
class Env:
    gw: Gateway
    http: httpx.Client
    base: str
    tokens: dict[str, str]
    bob_token_id: str = ""
    bob_session: str = ""
    bob_scim: str = ""
    cody_review: str = ""

    def mint(self, who: str, ttl: str = "10m") -> tuple[str, str]:
        """A fresh token (and its id) for one of PEOPLE, minted by the admin."""
        name, groups = PEOPLE[who]
        body = {"identity": name, "kind": "user", "ttl": ttl, "groups": groups}
        r = self.http.post("/api/v1/tokens", json=body, headers=_bearer(self.tokens["admin"]))
        assert r.status_code == 201, r.text
        return r.json()["token"], r.json()["id"]

    def works(self, token: str) -> bool:
        r = self.http.get("/api/v1/whoami", headers=_bearer(token))
        assert r.status_code in (200, 401), r.text
        return r.status_code == 200


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={token}"}


def _fill(path: str, **values: str) -> str:
    """The path with its parameters filled: ``values`` by name, else harmless dummies."""
    dummies = {"path": "console.css", **values}
    return re.sub(r"\{(\w+)\}", lambda m: dummies.get(m.group(1), "nosuch"), path)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, pgc: PgCluster) -> Iterator[Env]:
    port = free_port()
    gw = Gateway(
        tmp_path_factory.mktemp("authz"),
        [app_connection(pgc)],
        env={"APP_DB_PASSWORD": pgc.password},
        extra={
            "listeners": {"api": {"address": f"127.0.0.1:{port}"}},
            "roles": ROLES,
            "policy": {"rules": RULES},
        },
    ).start()
    ca = ssl.create_default_context(cafile=str(gw.data_dir / "tls" / "server.crt"))
    # No cookie jar: every call carries exactly the credentials the test gives it.
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    base = f"https://localhost:{port}"
    http = httpx.Client(base_url=base, verify=ca, cookies=jar, follow_redirects=False, timeout=30)
    try:
        e = Env(gw, http, base, {"admin": gw.token("ada", "user", "1h")})
        for who in PEOPLE:
            if who != "admin":
                e.tokens[who] = e.mint(who, "1h")[0]
        revoked, revoked_id = e.mint("user")
        r = http.delete(f"/api/v1/tokens/{revoked_id}", headers=_bearer(e.tokens["admin"]))
        assert r.status_code == 200, r.text
        e.tokens["revoked"] = revoked
        _belongings(e)
        yield e
    finally:
        http.close()
        gw.stop()


def _belongings(e: Env) -> None:
    """Things of bob's and cody's (plain users) for OWNED: bob's identity (provisioned
    over SCIM), his token and a psql session of his; cody's pending access request."""
    user = {"userName": "bob", "emails": [{"value": "bob@example.com", "primary": True}]}
    r = e.http.post("/scim/v2/Users", json=user, headers=_bearer(e.tokens["admin"]))
    assert r.status_code == 201, r.text
    e.bob_scim = r.json()["id"]
    bob = e.tokens["bob"]
    e.bob_token_id = e.http.get("/api/v1/whoami", headers=_bearer(bob)).json()["token_id"]
    with psycopg.connect(e.gw.dsn(bob, user="bob"), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    deadline = time.monotonic() + 20  # the store indexes the session moments later
    while not e.bob_session:
        r = e.http.get(
            "/api/v1/sessions", params={"identity": "bob"}, headers=_bearer(e.tokens["admin"])
        )
        assert r.status_code == 200, r.text
        found = r.json()["sessions"]
        if found:
            e.bob_session = found[0]["session_id"]
        elif time.monotonic() > deadline:
            raise AssertionError("bob's session never showed up")
        else:
            time.sleep(0.2)
    ask = {"connection": "app", "duration": "30m", "reason": "authz matrix"}
    r = e.http.post("/api/v1/reviews/access", json=ask, headers=_bearer(e.tokens["cody"]))
    assert r.status_code == 201, r.text
    e.cody_review = r.json()["id"]


def _send(
    e: Env, method: str, path: str, rule: Rule, headers: dict[str, str]
) -> tuple[httpx.Response, str]:
    """One call; an event stream is not read past its headers."""
    req = e.http.build_request(
        method, path, headers=headers, json=rule.json, data=rule.form, params=rule.params
    )
    resp = e.http.send(req, stream=True)
    try:
        streaming = resp.headers.get("content-type", "").startswith("text/event-stream")
        text = "" if streaming else resp.read().decode("utf-8", "replace")
    finally:
        resp.close()
    return resp, text


def _to_login(resp: httpx.Response) -> bool:
    return resp.status_code == 303 and resp.headers.get("location", "").startswith("/console/login")


def _check(resp: httpx.Response, text: str, rule: Rule, caller: str, page: bool) -> None:
    said = f"{resp.request.method} {resp.request.url.path} as {caller}: {resp.status_code} "
    said += text[:300]
    # The route exists (the router's own 404 would mean the table names a stale path),
    # and no dummy call crashes it.
    assert not (resp.status_code == 404 and text.startswith('{"detail":"Not Found"}')), said
    assert resp.status_code < 500, said
    if rule.allows(caller):
        assert resp.status_code not in (401, 403), said
        if rule.who != "public":
            assert not _to_login(resp), said
    elif caller in ("anon", "revoked"):
        if page:
            assert _to_login(resp), said
            if caller == "revoked":  # a cookie whose token stopped working is cleared
                assert COOKIE in resp.headers.get("set-cookie", ""), said
        else:
            assert resp.status_code == 401, said
            assert resp.headers.get("www-authenticate") == "Bearer", said
    else:
        assert resp.status_code == rule.denied, said
        if page and rule.denied == 403:
            assert "This page needs the" in text, said


MATRIX = [
    pytest.param(m, p, c, page, id=f"{m} {p} as {c}")
    for table, page in ((API, False), (PAGES, True))
    for (m, p) in table
    for c in CALLERS
]


@pytest.mark.parametrize(("method", "path", "caller", "page"), MATRIX)
def test_matrix(env: Env, method: str, path: str, caller: str, page: bool) -> None:
    rule = (PAGES if page else API)[(method, path)]
    token = env.tokens.get(caller)
    if rule.spends_token and caller in SIGNED_IN:
        token = env.mint(caller)[0]
    headers = {} if token is None else (_cookie(token) if page else _bearer(token))
    resp, text = _send(env, method, _fill(path), rule, headers)
    _check(resp, text, rule, caller, page)
    if rule.spends_token and caller in SIGNED_IN:
        assert token is not None and not env.works(token)


def _app_routes(config: Path) -> set[tuple[str, str, bool]]:
    """(method, path, in the OpenAPI document) of every route the API listener's app
    has, built in this process from the gateway's configuration (nothing started)."""
    from fastapi import routing

    from ledgergate.api.app import create_app
    from ledgergate.services.admin import AdminService
    from ledgergate.services.config import load_settings

    app = create_app(AdminService(load_settings(config), cast(Any, None)))
    walk = getattr(routing, "iter_route_contexts", None)  # FastAPI's included routers
    out: set[tuple[str, str, bool]] = set()
    for r in walk(app.routes) if walk is not None else app.routes:
        methods = getattr(r, "methods", None)
        if not methods:  # a mount: the console's static files
            out.add(("GET", f"{r.path}/{{path}}", False))
            continue
        for m in set(methods) - {"HEAD"}:
            out.add((m, r.path, bool(getattr(r, "include_in_schema", False))))
    return out


def test_the_table_classifies_every_api_route(env: Env) -> None:
    doc = env.http.get("/openapi.json").json()
    listed = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert sorted(listed - set(API)) == [], "routes with no rule in API: classify them"
    assert sorted(set(API) - listed) == [], "API names routes the gateway does not have"


def test_the_table_classifies_every_page(env: Env) -> None:
    hidden = {(m, p) for m, p, in_schema in _app_routes(env.gw.config_path) if not in_schema}
    assert sorted(hidden - set(PAGES)) == [], "pages with no rule in PAGES: classify them"
    assert sorted(set(PAGES) - hidden) == [], "PAGES names routes the gateway does not have"


# -- a browser's cookie ----------------------------------------------------------------
UNSAFE = [
    pytest.param(m, p, id=f"{m} {p}")
    for (m, p), rule in API.items()
    if m not in ("GET", "HEAD", "OPTIONS") and rule.who != "public"
]
# How a change arrives with the console's cookie: (X-CSRF-Token, Origin, refused?).
CSRF_WAYS = {
    "no header": (None, None, True),
    "another session's header": ("other", None, True),
    "foreign origin": ("right", "https://evil.example", True),
    "origin null": ("right", "null", True),
    "right header": ("right", None, False),
    "right header, own origin": ("right", "own", False),
}


@pytest.mark.parametrize("way", list(CSRF_WAYS))
@pytest.mark.parametrize(("method", "path"), UNSAFE)
def test_a_cookie_changes_nothing_without_the_csrf_header(
    env: Env, method: str, path: str, way: str
) -> None:
    rule = API[(method, path)]
    assert rule.allows("admin")  # so only the cookie's checks can refuse
    token = env.mint("admin")[0] if rule.spends_token else env.tokens["admin"]
    sent, origin, refused = CSRF_WAYS[way]
    headers = _cookie(token)
    if sent is not None:
        headers["X-CSRF-Token"] = csrf_token(token if sent == "right" else env.tokens["user"])
    if origin is not None:
        headers["Origin"] = env.base if origin == "own" else origin
    resp, text = _send(env, method, _fill(path), rule, headers)
    said = f"{method} {path} ({way}): {resp.status_code} {text[:300]}"
    if refused:
        assert resp.status_code == 403, said
        assert "CSRF" in text or "cross-origin" in text, said
        assert env.works(token)
    else:
        assert resp.status_code not in (401, 403) and resp.status_code < 500, said


def test_signing_out_of_the_console_needs_the_pages_csrf_value(env: Env) -> None:
    """Only a token the console minted (an OpenID or SAML sign-in, marked by its own
    cookie) is revoked, and only with the page's csrf value; a typed one stays."""
    token = env.mint("user")[0]
    minted = {"Cookie": f"{COOKIE}={token}; {MINTED_COOKIE}=1"}
    for csrf in ("", csrf_token(env.tokens["user"])):
        r = env.http.post("/console/logout", data={"csrf": csrf}, headers=minted)
        assert _to_login(r) and COOKIE in r.headers.get("set-cookie", "")
        assert env.works(token), "a sign-out without the page's csrf value revoked the token"
    r = env.http.post("/console/logout", data={"csrf": csrf_token(token)}, headers=_cookie(token))
    assert _to_login(r) and env.works(token), "a typed token was revoked at sign-out"
    r = env.http.post("/console/logout", data={"csrf": csrf_token(token)}, headers=minted)
    assert _to_login(r)
    assert not env.works(token)
    r = env.http.get("/console/me", headers=_cookie(token))
    assert _to_login(r)


# -- someone else's things ------------------------------------------------------------
# (caller, method, path, expected status: an int, or "ok" for anything but 401/403/404).
# {token} is bob's token's id, {session} his psql session, {scim} his SCIM user,
# {review} cody's request.
OWNED: list[tuple[str, str, str, int | str]] = [
    *[(c, "DELETE", "/api/v1/tokens/{token}", 404) for c in ("user", "auditor", "reviewer")],
    *[(c, "POST", "/api/v1/tokens/{token}/rotate", 404) for c in ("user", "auditor", "reviewer")],
    *[(c, "GET", "/api/v1/sessions/{session}", 404) for c in ("user", "reviewer")],
    *[(c, "GET", "/api/v1/sessions/{session}", 200) for c in ("auditor", "admin", "bob")],
    *[(c, "GET", "/api/v1/sessions/{session}/asciicast", 404) for c in ("user", "reviewer")],
    *[(c, "GET", "/api/v1/sessions/{session}/replay", 404) for c in ("user", "reviewer")],
    *[(c, "GET", "/api/v1/sessions/{session}/replay", 200) for c in ("auditor", "admin", "bob")],
    *[(c, "GET", "/console/sessions/{session}", 404) for c in ("user", "reviewer")],
    *[(c, "GET", "/console/sessions/{session}", 200) for c in ("auditor", "admin", "bob")],
    *[
        (c, "POST", "/api/v1/sessions/{session}/terminate", 403)
        for c in ("user", "auditor", "reviewer", "bob")
    ],
    ("user", "GET", "/api/v1/reviews/{review}", 404),
    *[(c, "GET", "/api/v1/reviews/{review}", 200) for c in ("auditor", "reviewer", "cody")],
    ("admin", "GET", "/api/v1/reviews/{review}", 200),
    ("user", "POST", "/api/v1/reviews/{review}/cancel", 404),
    *[
        (c, "POST", "/api/v1/reviews/{review}/cancel", 403)
        for c in ("auditor", "reviewer", "admin")
    ],
    # deciding: the role first, then the rule's reviewer groups (ada is in none), and
    # never one's own request
    *[
        (c, "POST", f"/api/v1/reviews/{{review}}/{verb}", 403)
        for c in ("user", "auditor", "admin", "cody")
        for verb in ("approve", "deny")
    ],
    *[(c, "GET", "/api/v1/identities/bob", 403) for c in ("user", "reviewer")],
    *[(c, "GET", "/api/v1/identities/bob", "ok") for c in ("auditor", "admin")],
    ("bob", "GET", "/api/v1/identities/bob", "ok"),
    *[(c, "POST", "/api/v1/identities/bob/disable", 403) for c in ("auditor", "bob")],
    *[
        (c, m, "/scim/v2/Users/{scim}", 403)
        for c in ("auditor", "reviewer", "bob")
        for m in ("GET", "PATCH", "DELETE")
    ],
    ("admin", "GET", "/scim/v2/Users/{scim}", 200),
]


@pytest.mark.parametrize(
    ("caller", "method", "path", "want"),
    [pytest.param(*case, id=f"{case[1]} {case[2]} as {case[0]}") for case in OWNED],
)
def test_someone_elses_things(
    env: Env, caller: str, method: str, path: str, want: int | str
) -> None:
    url = _fill(
        path,
        token=env.bob_token_id,
        session=env.bob_session,
        review=env.cody_review,
        scim=env.bob_scim,
    )
    body = {"reason": "authz"} if method in ("POST", "PATCH") else None
    page = path.startswith("/console/")
    token = env.tokens[caller]
    r = env.http.request(method, url, json=body, headers=_cookie(token) if page else _bearer(token))
    said = f"{method} {url} as {caller}: {r.status_code} {r.text[:300]}"
    if want == "ok":
        assert r.status_code not in (401, 403, 404) and r.status_code < 500, said
    else:
        assert r.status_code == want, said
    # and nothing of theirs moved
    assert env.works(env.tokens["bob"])
    got = env.http.get(f"/api/v1/reviews/{env.cody_review}", headers=_bearer(env.tokens["cody"]))
    assert got.json()["state"] == "pending", got.text


def test_rotating_ones_own_token_never_lengthens_its_life(env: Env) -> None:
    token, token_id = env.mint("user", "10m")
    before = env.http.get("/api/v1/whoami", headers=_bearer(token)).json()["expires_ns"]
    r = env.http.post(
        f"/api/v1/tokens/{token_id}/rotate", json={"ttl": "2h"}, headers=_bearer(token)
    )
    assert r.status_code == 403 and "only an admin" in r.text, r.text
    assert env.works(token)  # refused: nothing was rotated
    r = env.http.post(f"/api/v1/tokens/{token_id}/rotate", json={}, headers=_bearer(token))
    assert r.status_code == 200, r.text
    assert r.json()["expires_ns"] == before  # a new secret, the same end
    assert not env.works(token)


# (list, its filter for someone else's things, callers who see them)
LISTS: dict[str, tuple[str, dict[str, str], set[str]]] = {
    "tokens": ("/api/v1/tokens", {"identity": "bob"}, {"auditor", "admin"}),
    "sessions": ("/api/v1/sessions", {"identity": "bob"}, {"auditor", "admin"}),
    "reviews": ("/api/v1/reviews", {"requester": "cody"}, {"auditor", "reviewer", "admin"}),
    "session page": ("/console/sessions", {"identity": "bob"}, {"auditor", "admin"}),
}


@pytest.mark.parametrize("caller", SIGNED_IN)
@pytest.mark.parametrize("name", list(LISTS))
def test_a_filter_never_widens_a_list(env: Env, name: str, caller: str) -> None:
    path, params, seers = LISTS[name]
    token = env.tokens[caller]
    page = path.startswith("/console/")
    r = env.http.get(path, params=params, headers=_cookie(token) if page else _bearer(token))
    assert r.status_code == 200, r.text
    theirs = {
        "tokens": env.bob_token_id,
        "sessions": env.bob_session,
        "reviews": env.cody_review,
        "session page": env.bob_session,
    }[name]
    assert (theirs in r.text) == (caller in seers), f"{name} as {caller}: {r.text[:500]}"


@pytest.mark.parametrize(
    ("caller", "target"),
    [
        ("user", "/console/me"),
        ("auditor", "/console/sessions"),
        ("reviewer", "/console/reviews"),
        ("admin", "/console/reviews"),
    ],
)
def test_the_console_opens_on_a_page_the_role_may_see(env: Env, caller: str, target: str) -> None:
    r = env.http.get("/", headers=_cookie(env.tokens[caller]))
    assert r.status_code == 303 and r.headers["location"] == target
    assert PAGES[("GET", target)].allows(caller)


@pytest.mark.parametrize("caller", SIGNED_IN)
def test_the_navigation_offers_only_pages_the_role_may_see(env: Env, caller: str) -> None:
    r = env.http.get("/console/me", headers=_cookie(env.tokens[caller]))
    assert r.status_code == 200, r.text
    nav = re.search(r'<nav aria-label="Console">(.*?)</nav>', r.text, re.S)
    assert nav is not None
    offered = re.findall(r'href="([^"]+)"', nav.group(1))
    assert "/console/me" in offered
    for href in offered:
        rule = PAGES.get(("GET", href))
        assert rule is not None, f"the navigation offers {href}, which PAGES does not know"
        assert rule.allows(caller), f"the navigation offers {caller} {href}"


def test_another_site_cannot_sign_you_in(env: Env) -> None:
    """Login CSRF: a form on another site posting someone's token to the sign-in page."""
    token, _ = env.mint("user")
    r = env.http.post(
        "/console/login",
        data={"token": token, "next": "/"},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403 and "__Host-ledgergate" not in r.headers.get("set-cookie", "")
    ok = env.http.post("/console/login", data={"token": token, "next": "/"})
    assert ok.status_code == 200 and "__Host-ledgergate=" in ok.headers["set-cookie"]


def test_a_refused_sign_in_is_on_the_ledger(env: Env) -> None:
    """Someone whose token signs nobody in (unknown, revoked) is sent back to the sign-in
    page with the reason, and the ledger has a ``login.fail`` saying why and, for a token
    the gateway knows, whose it was; the token itself is in no entry."""
    tried = {"lg_nosuch_0123456789": None, env.tokens["revoked"]: "erin"}
    for token in tried:
        r = env.http.post("/console/login", data={"token": token, "next": "/"})
        assert r.status_code == 303 and "__Host-ledgergate" not in r.headers.get("set-cookie", "")
        assert r.headers["location"].startswith("/console/login?error=not%20authenticated")
    env.gw.indexed()
    fails = [e for e in env.gw.entries("login.fail") if e.get("via") == "console"][-2:]
    assert [(f["reason"], (f.get("identity") or {}).get("subject")) for f in fails] == [
        ("not authenticated: unknown token", None),
        ("not authenticated: token revoked", "erin"),
    ]
    text = str(env.gw.entries())
    assert not any(token in text for token in tried)
