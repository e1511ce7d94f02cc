"""A person logs in through a real OpenID Connect provider with ``ledgergate login``
(device flow and a browser redirect to a loopback port), then connects with psql and
psycopg using the saved token; IdP-issued JWTs are accepted as passwords where
configured, forged ones refused and recorded, and a JWT's expiry ends its session."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.integration.fixtures import GatewayFactory, app_connection
from tests.integration.gateway import BIN, Gateway, free_port
from tests.integration.oidc_idp import OidcIdp, new_key, oidc_idp_fixture
from tests.integration.pgcluster import PgCluster
from tests.integration.test_identity_sessions import ENDLESS_COPY
from tests.integration.test_pg_security import entries


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcIdp]:
    yield from oidc_idp_fixture(tmp_path_factory.mktemp("idp"))


@pytest.fixture
def oidc_gw(gateway_factory: GatewayFactory, pgc: PgCluster, idp: OidcIdp) -> Gateway:
    port = free_port()
    gw = gateway_factory(
        [app_connection(pgc), app_connection(pgc, name="admin-db")],
        extra={
            "listeners": {"api": {"address": f"127.0.0.1:{port}"}},
            "identity": {
                "session_ttl": "1h",
                "oidc": {
                    "issuer": idp.issuer,
                    "client_id": idp.client_id,
                    "scopes": ["openid", "email", "profile"],
                    "accept_jwt_passwords": True,
                },
            },
            "roles": {"admin": {"groups": ["dba"]}},
            "grants": [
                {"connections": ["app"], "groups": ["eng", "ops"]},
                {"connections": ["admin-db"], "groups": ["dba"]},
            ],
        },
    ).start()
    gw.api_port = port  # type: ignore[attr-defined]
    return gw


def _cli(gw: Gateway, creds: Path, *args: str) -> subprocess.Popen[str]:
    env = {**gw.env, "LEDGERGATE_CREDENTIALS": str(creds)}
    return subprocess.Popen(
        [str(BIN), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _login(gw: Gateway, idp: OidcIdp, creds: Path, method: str, who: str) -> str:
    url = f"https://localhost:{gw.api_port}"  # type: ignore[attr-defined]
    ca = str(gw.data_dir / "tls" / "server.crt")
    p = _cli(gw, creds, "login", "--gateway", url, "--ca", ca, "--method", method, "--no-browser")
    assert p.stderr is not None
    first = p.stderr.readline()
    if method == "device":
        link = re.search(r"open (\S+)", first)
        assert link, first
        idp.approve_device(link.group(1), who)
    else:
        link = re.search(r"Opening (\S+)", first)
        assert link, first
        idp.complete_browser_login(link.group(1), who)
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 0, first + err
    return first + err


def _show_token(gw: Gateway, creds: Path) -> str:
    p = _cli(gw, creds, "whoami", "--show-token")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    return out.strip()


def test_device_login_then_psql_then_logout(oidc_gw: Gateway, idp: OidcIdp, tmp_path: Path) -> None:
    creds = tmp_path / "creds.json"
    said = _login(oidc_gw, idp, creds, "device", "alice")
    assert "Logged in as alice@example.com" in said
    assert stat.S_IMODE(os.stat(creds).st_mode) == 0o600
    p = _cli(oidc_gw, creds, "whoami", "--json")
    me = json.loads(p.communicate(timeout=30)[0])
    assert me["identity"] == "alice@example.com" and me["groups"] == ["dba", "eng"]
    assert "admin" in me["roles"] and me["purpose"] == "session"
    tok = _show_token(oidc_gw, creds)
    assert tok.startswith("lgt_") and tok not in said
    r = subprocess.run(
        ["psql", "-X", "-At", "-c", "SELECT 40 + 2", oidc_gw.dsn(tok, user="alice")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0 and r.stdout.strip() == "42", r.stderr
    with psycopg.connect(oidc_gw.dsn(tok, "admin-db")) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    ok = entries(oidc_gw, "auth.ok")
    assert {e["identity"]["subject"] for e in ok} == {"alice@example.com"}
    assert ok[0]["identity"]["groups"] == ["dba", "eng"]
    login = entries(oidc_gw, "token.created")[-1]
    assert login["purpose"] == "session" and login["by"].startswith("oidc-device:")
    # logout revokes the token at the gateway and forgets it here
    out = _cli(oidc_gw, creds, "logout")
    out.communicate(timeout=30)
    assert out.returncode == 0
    assert not creds.exists()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(oidc_gw.dsn(tok))


def test_browser_login_with_pkce_on_a_loopback_port(
    oidc_gw: Gateway, idp: OidcIdp, tmp_path: Path
) -> None:
    creds = tmp_path / "creds.json"
    said = _login(oidc_gw, idp, creds, "browser", "bob")
    assert "Logged in as bob@example.com" in said
    tok = _show_token(oidc_gw, creds)
    with psycopg.connect(oidc_gw.dsn(tok)) as c:
        assert c.execute("SELECT 2").fetchone() == (2,)
    # bob's provider sends one group as a string ("ops"): app yes, the dba connection no
    with pytest.raises(psycopg.OperationalError, match="no grant"):
        psycopg.connect(oidc_gw.dsn(tok, "admin-db"))
    assert entries(oidc_gw, "auth.denied")[0]["identity"]["subject"] == "bob@example.com"


def test_idp_jwts_as_passwords(oidc_gw: Gateway, idp: OidcIdp) -> None:
    good = idp.forge(idp.claims("alice"))
    with psycopg.connect(oidc_gw.dsn(good)) as c:
        assert c.execute("SELECT 3").fetchone() == (3,)
    assert entries(oidc_gw, "auth.ok")[-1]["via"] == "jwt"
    now = int(time.time())
    bad = {
        "wrong audience": idp.forge(idp.claims("alice", aud="someone-else")),
        "wrong issuer": idp.forge(idp.claims("alice", iss="http://127.0.0.1:1")),
        "token expired": idp.forge(idp.claims("alice", iat=now - 900, exp=now - 600)),
        "not yet valid": idp.forge(idp.claims("alice", nbf=now + 600)),
        "algorithm not allowed": idp.forge(idp.claims("alice"), alg="none"),
        "hmac confusion": idp.forge(idp.claims("alice"), alg="HS256"),
        "unknown key id": idp.forge(idp.claims("alice"), key=new_key("rogue")),
        "tampered": _tamper(idp.forge(idp.claims("bob"))),
    }
    for case, tok in bad.items():
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(oidc_gw.dsn(tok))
        assert tok not in oidc_gw.logs(), case
    fails = entries(oidc_gw, "auth.fail")
    assert len(fails) == len(bad)
    assert all(f["reason"].startswith("IdP token refused") for f in fails)
    codes = [f["reason"].split("(")[1].split(")")[0] for f in fails]
    assert codes == [
        "wrong audience",
        "wrong issuer",
        "token expired",
        "token not yet valid",
        "algorithm not allowed",
        "algorithm not allowed",
        "unknown key id",
        "bad signature",
    ]
    text = json.dumps(fails)
    for tok in bad.values():
        assert tok not in text


def _tamper(jwt: str) -> str:
    """Swap the payload for another identity's, keeping the original signature."""
    head, body, sig = jwt.split(".")
    doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    doc["email"] = "root@example.com"
    forged = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


def test_an_idp_jwt_session_ends_when_the_jwt_expires(oidc_gw: Gateway, idp: OidcIdp) -> None:
    now = int(time.time())
    tok = idp.forge(idp.claims("alice", iat=now, exp=now + 4))
    p = subprocess.Popen(
        ["psql", "-X", "-q", "-c", ENDLESS_COPY, oidc_gw.dsn(tok)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = p.communicate(timeout=20)
    assert "session ended: token expired" in err
    assert [t["reason"] for t in entries(oidc_gw, "session.terminated")] == ["token expired"]
