"""SAML 2.0 logins through the gateway against a real IdP process (pysaml2): the CLI's
loopback login (a one-time code, never the token, crosses the redirect) and the web
login, then psql/psycopg with the resulting token; a refused assertion is recorded."""

from __future__ import annotations

import re
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.integration.console import browser_fixture
from tests.integration.fixtures import GatewayFactory, app_connection
from tests.integration.gateway import BIN, Gateway, free_port
from tests.integration.pgcluster import PgCluster
from tests.integration.saml_idp import SamlIdp, login
from tests.integration.test_pg_security import entries


@pytest.fixture(scope="module")
def saml_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SamlIdp]:
    with SamlIdp(tmp_path_factory.mktemp("saml-idp")) as idp:
        yield idp


@pytest.fixture
def saml_gw(gateway_factory: GatewayFactory, pgc: PgCluster, saml_idp: SamlIdp) -> Gateway:
    port = free_port()
    gw = gateway_factory(
        [app_connection(pgc)],
        extra={
            "listeners": {
                "api": {"address": f"127.0.0.1:{port}", "public_url": f"https://localhost:{port}"}
            },
            "identity": {
                "saml": {
                    "idp_metadata": str(saml_idp.idp_metadata),
                    "username_attribute": "mail",
                    "groups_attribute": "groups",
                }
            },
            "grants": [{"connections": ["app"], "groups": ["eng"]}],
        },
    ).start()
    gw.api_url = f"https://localhost:{port}"  # type: ignore[attr-defined]
    # The IdP trusts the gateway's SP metadata, as an IdP admin would upload it.
    with _client(gw) as c:
        meta = c.get("/saml/metadata")
        assert meta.status_code == 200 and "AssertionConsumerService" in meta.text
        saml_idp.sp_metadata.write_text(meta.text)
    return gw


def _client(gw: Gateway) -> httpx.Client:
    ca = ssl.create_default_context(cafile=str(gw.data_dir / "tls" / "server.crt"))
    return httpx.Client(base_url=gw.api_url, verify=ca, timeout=30)  # type: ignore[attr-defined]


def test_cli_saml_login_then_psql(saml_gw: Gateway, tmp_path: Path) -> None:
    creds = tmp_path / "creds.json"
    env = {**saml_gw.env, "LEDGERGATE_CREDENTIALS": str(creds)}
    ca = str(saml_gw.data_dir / "tls" / "server.crt")
    p = subprocess.Popen(
        [
            str(BIN),
            "login",
            "--gateway",
            saml_gw.api_url,
            "--ca",
            ca,  # type: ignore[attr-defined]
            "--method",
            "saml",
            "--no-browser",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert p.stderr is not None
    first = p.stderr.readline()
    start = re.search(r"Opening (\S+)", first)
    assert start, first
    with _client(saml_gw) as c:
        to_idp = c.get(start.group(1))
        assert to_idp.status_code == 303
        acs, response, relay = login(to_idp.headers["location"], "alice")
        assert acs == f"{saml_gw.api_url}/saml/acs"  # type: ignore[attr-defined]
        back = c.post(acs, data={"SAMLResponse": response, "RelayState": relay})
    assert back.status_code == 303
    loopback = back.headers["location"]
    assert loopback.startswith("http://127.0.0.1:") and "code=" in loopback
    assert "lgt_" not in loopback  # only a one-time code crosses the redirect
    assert httpx.get(loopback, timeout=10).status_code == 200
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "Logged in as alice@example.com" in err
    tok = subprocess.run(
        [str(BIN), "whoami", "--show-token"], capture_output=True, text=True, env=env, timeout=30
    ).stdout.strip()
    r = subprocess.run(
        ["psql", "-X", "-At", "-c", "SELECT 'saml'", saml_gw.dsn(tok)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0 and r.stdout.strip() == "saml", r.stderr
    created = entries(saml_gw, "token.created")[-1]
    assert created["by"].startswith("saml:") and created["identity"]["groups"] == ["dba", "eng"]
    # the code was for one use
    with _client(saml_gw) as c:
        code = loopback.split("code=")[1]
        assert c.post("/api/v1/login/code", json={"code": code}).status_code == 400


def test_web_saml_login_and_a_refused_replay(saml_gw: Gateway) -> None:
    with _client(saml_gw) as c:
        to_idp = c.get("/saml/login")
        acs, response, relay = login(to_idp.headers["location"], "bob")
        page = c.post(acs, data={"SAMLResponse": response, "RelayState": relay})
        assert page.status_code == 200 and "Signed in as bob@example.com" in page.text
        assert page.headers["cache-control"] == "no-store"
        tok = re.search(r"<pre>(lgt_[^<]+)</pre>", page.text)
        assert tok
        # bob is in ops only: authenticated, but no grant for app
        with pytest.raises(psycopg.OperationalError, match="no grant"):
            psycopg.connect(saml_gw.dsn(tok.group(1)))
        again = c.post(acs, data={"SAMLResponse": response, "RelayState": relay})
        assert again.status_code == 401 and "login refused" in again.json()["error"]
    fail = entries(saml_gw, "login.fail")
    assert len(fail) == 1 and fail[0]["via"] == "saml"
    logs = saml_gw.logs()
    assert response not in logs and "NameID" not in logs and "saml2." not in logs


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_fixture()


@pytest.mark.browser
def test_signing_in_to_the_web_console_through_saml(saml_gw: Gateway, browser: Any) -> None:
    base = saml_gw.api_url  # type: ignore[attr-defined]
    ctx = browser.new_context(ignore_https_errors=True)
    page = ctx.new_page()
    page.goto(f"{base}/console/login")
    page.get_by_role("link", name="Sign in with SAML").click()
    page.locator("input[name=username]").fill("alice")
    page.get_by_role("button", name="Sign in").click()  # the IdP posts back to the ACS
    page.wait_for_url(f"{base}/console/me")
    assert "alice@example.com" in page.inner_text("header")
    cookie = next(c for c in ctx.cookies() if c["name"] == "__Host-ledgergate")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert cookie["value"].startswith("lgt_")
    created = entries(saml_gw, "token.created")[-1]
    assert created["by"].startswith("saml:")
    ctx.close()
