"""The REST API in a real gateway process: authentication and roles, service accounts
and their tokens, rotation, identities, grants, SCIM provisioning that ends sessions,
and the admin entries every change leaves on the ledger."""

from __future__ import annotations

import ssl
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.integration.fixtures import GatewayFactory, app_connection
from tests.integration.gateway import Gateway, free_port
from tests.integration.pgcluster import PgCluster
from tests.integration.test_identity_sessions import ENDLESS_COPY
from tests.integration.test_pg_security import entries

SCIM = "application/scim+json"


@pytest.fixture
def api_gw(gateway_factory: GatewayFactory, pgc: PgCluster) -> Gateway:
    port = free_port()
    gw = gateway_factory(
        [app_connection(pgc), app_connection(pgc, name="reports")],
        extra={
            "listeners": {"api": {"address": f"127.0.0.1:{port}"}},
            "roles": {
                "admin": {"identities": ["root-admin"]},
                "auditor": {"groups": ["audit"]},
            },
            "grants": [{"connections": ["*"], "groups": ["eng"]}],
            "policy": {"rules": [{"id": "no-ddl", "deny": {"kinds": ["ddl"]}}]},
        },
    ).start()
    gw.api_port = port  # type: ignore[attr-defined]
    return gw


@pytest.fixture
def http(api_gw: Gateway) -> Iterator[httpx.Client]:
    base = f"https://localhost:{api_gw.api_port}"  # type: ignore[attr-defined]
    # The gateway's own generated certificate is the trust anchor, as for psql's
    # sslrootcert.
    ca = ssl.create_default_context(cafile=str(api_gw.data_dir / "tls" / "server.crt"))
    with httpx.Client(base_url=base, verify=ca) as c:
        yield c


def _auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def _kinds(gw: Gateway) -> list[str]:
    return [e["kind"] for e in entries(gw)]


def test_authentication_roles_and_openapi(api_gw: Gateway, http: httpx.Client) -> None:
    assert http.get("/api/v1/whoami").status_code == 401
    assert http.get("/api/v1/whoami", headers=_auth("lgt_" + "x" * 43)).status_code == 401
    admin = api_gw.token("root-admin")
    me = http.get("/api/v1/whoami", headers=_auth(admin)).json()
    assert me["identity"] == "root-admin" and "admin" in me["roles"]
    user = api_gw.token("erin", "user", "1h", "--group", "eng")
    assert http.get("/api/v1/whoami", headers=_auth(user)).json()["roles"] == ["user"]
    r = http.post("/api/v1/tokens", headers=_auth(user), json={"identity": "erin", "ttl": "1h"})
    assert r.status_code == 403 and "admin" in r.json()["error"]
    assert http.get("/api/v1/identities", headers=_auth(user)).status_code == 403
    auditor = api_gw.token("carol", "user", "1h", "--group", "audit")
    assert http.get("/api/v1/identities", headers=_auth(auditor)).status_code == 200
    assert http.post("/api/v1/identities/erin/disable", headers=_auth(auditor)).status_code == 403
    with pytest.raises(psycopg.OperationalError, match="auditor role reads evidence, never data"):
        psycopg.connect(api_gw.dsn(auditor))
    spec = http.get("/openapi.json").json()
    for path in ("/api/v1/whoami", "/api/v1/tokens", "/scim/v2/Users", "/scim/v2/Users/{scim_id}"):
        assert path in spec["paths"], path


def test_service_account_tokens_scopes_last_use_and_rotation(
    api_gw: Gateway, http: httpx.Client
) -> None:
    admin = _auth(api_gw.token("root-admin"))
    r = http.post(
        "/api/v1/service-accounts",
        headers=admin,
        json={"name": "etl-bot", "groups": ["eng"], "description": "nightly ETL"},
    )
    assert r.status_code == 201 and r.json()["kind"] == "service"
    too_long = http.post(
        "/api/v1/tokens", headers=admin, json={"identity": "etl-bot", "ttl": "400d"}
    )
    assert too_long.status_code == 400 and "at most 90 days" in too_long.json()["error"]
    r = http.post(
        "/api/v1/tokens",
        headers=admin,
        json={"identity": "etl-bot", "ttl": "7d", "connections": ["reports"]},
    )
    assert r.status_code == 201
    tok, tid = r.json()["token"], r.json()["id"]
    assert r.json()["groups"] == ["eng"] and r.json()["connections"] == ["reports"]
    with psycopg.connect(api_gw.dsn(tok, "reports")) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="not valid for this connection"):
        psycopg.connect(api_gw.dsn(tok, "app"))
    listed = http.get("/api/v1/tokens", headers=admin, params={"identity": "etl-bot"}).json()
    assert [t["id"] for t in listed] == [tid] and listed[0]["last_used_ns"] is not None
    assert "token" not in listed[0]

    # rotation: the new token works, the old one is refused and its open session ends
    old = psycopg.connect(api_gw.dsn(tok, "reports"), autocommit=True)
    r = http.post(f"/api/v1/tokens/{tid}/rotate", headers=admin, json={})
    assert r.status_code == 200 and r.json()["rotated_from"] == tid
    new = r.json()["token"]
    with psycopg.connect(api_gw.dsn(new, "reports")) as c:
        assert c.execute("SELECT 2").fetchone() == (2,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(api_gw.dsn(tok, "reports"))
    with pytest.raises(psycopg.OperationalError, match="session ended: token revoked"):
        for _ in range(50):
            old.execute("SELECT 1")
            time.sleep(0.1)
    old.close()
    kinds = _kinds(api_gw)
    assert "admin.service_account.create" in kinds and kinds.count("token.created") >= 2
    created = [e for e in entries(api_gw, "token.created") if e["by"] == "api:root-admin"]
    assert len(created) == 2


def _stream(gw: Gateway, tok: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["psql", "-X", "-q", "-c", ENDLESS_COPY, gw.dsn(tok)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_scim_deprovisioning_ends_the_sessions(api_gw: Gateway, http: httpx.Client) -> None:
    admin = {**_auth(api_gw.token("root-admin")), "Content-Type": SCIM}
    user: dict[str, Any] = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "alice@example.com",
        "externalId": "00u-alice",
        "name": {"formatted": "Alice Example"},
        "emails": [{"value": "alice@example.com", "primary": True}],
        "active": True,
    }
    r = http.post("/scim/v2/Users", headers=admin, json=user)
    assert r.status_code == 201 and r.headers["content-type"].startswith(SCIM)
    sid = r.json()["id"]
    assert http.post("/scim/v2/Users", headers=admin, json=user).status_code == 409
    found = http.get(
        "/scim/v2/Users", headers=admin, params={"filter": 'userName eq "ALICE@example.com"'}
    ).json()
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == sid
    bad = http.get("/scim/v2/Users", headers=admin, params={"filter": 'userName sw "a"'})
    assert bad.status_code == 400 and bad.json()["scimType"] == "invalidFilter"

    tok = api_gw.token("alice@example.com", "user", "1h", "--group", "eng")
    p = _stream(api_gw, tok)
    time.sleep(1.5)
    assert p.poll() is None
    t0 = time.monotonic()
    r = http.patch(
        f"/scim/v2/Users/{sid}",
        headers=admin,
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"active": False}}],
        },
    )
    assert r.status_code == 200 and r.json()["active"] is False
    _, err = p.communicate(timeout=20)
    # The API asks the gateway to re-check at once (the store's access epoch would do it
    # within a second); the full re-check is 30 s away. Loose bound: a loaded machine.
    assert time.monotonic() - t0 < 15
    assert "session ended: identity disabled" in err
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(api_gw.dsn(tok))
    term = entries(api_gw, "session.terminated")
    assert [t["reason"] for t in term] == ["identity disabled"]
    dis = entries(api_gw, "admin.identity.disable")
    assert dis[-1]["via"] == "scim" and dis[-1]["by"] == "api:root-admin"
    # enable again, then deprovision with DELETE: disabled and unlinked, still known
    r = http.put(f"/scim/v2/Users/{sid}", headers=admin, json={**user, "active": True})
    assert r.status_code == 200 and r.json()["active"] is True
    assert http.delete(f"/scim/v2/Users/{sid}", headers=admin).status_code == 204
    assert http.get(f"/scim/v2/Users/{sid}", headers=admin).status_code == 404
    ident = http.get("/api/v1/identities/alice@example.com", headers=admin).json()
    assert ident["disabled"] is True and ident["scim_id"] is None
    assert "admin.scim.user.delete" in _kinds(api_gw)
    assert api_gw.cli("audit", "verify", check=False).returncode == 0


def test_grants_through_the_api(api_gw: Gateway, http: httpx.Client) -> None:
    admin = _auth(api_gw.token("root-admin"))
    dana = api_gw.token("dana", "user", "1h", "--group", "data-science")
    with pytest.raises(psycopg.OperationalError, match="no grant"):
        psycopg.connect(api_gw.dsn(dana, "reports"))
    r = http.post(
        "/api/v1/grants", headers=admin, json={"connections": ["rep*"], "groups": ["data-science"]}
    )
    assert r.status_code == 201
    gid = r.json()["id"]
    c = psycopg.connect(api_gw.dsn(dana, "reports"), autocommit=True)
    assert c.execute("SELECT 3").fetchone() == (3,)
    assert http.delete(f"/api/v1/grants/{gid}", headers=admin).status_code == 200
    with pytest.raises(psycopg.OperationalError, match="session ended: grant removed"):
        for _ in range(50):
            c.execute("SELECT 1")
            time.sleep(0.1)
    c.close()
    listed = http.get("/api/v1/grants", headers=admin).json()
    assert listed["open"] is False and [g["id"] for g in listed["grants"]] == ["config"]


def test_policy_is_readable_and_explainable(api_gw: Gateway, http: httpx.Client) -> None:
    admin = _auth(api_gw.token("root-admin"))
    pol = http.get("/api/v1/policy", headers=admin).json()
    assert pol["version"].startswith("pol_") and pol["rules"][0]["id"] == "no-ddl"
    r = http.post(
        "/api/v1/policy/explain",
        headers=admin,
        json={"connection": "app", "sql": "DROP TABLE t"},
    ).json()
    assert r["decision"] == {
        "action": "deny",
        "rule": "no-ddl",
        "message": "refused by guardrail no-ddl",
    }
    user = _auth(api_gw.token("erin", "user", "1h", "--group", "eng"))
    assert http.get("/api/v1/policy", headers=user).status_code == 403
