"""The web console end to end in a real browser (Debian's Chromium driven by Playwright)
against a real gateway, PostgreSQL, psql and OpenID provider: a reviewer signed in
through the provider approves a statement held in psql from an inbox that updates by
itself, and denies one whose reason psql shows; nobody gets a button for their own
request; an auditor searches, opens a session and downloads an inclusion proof that
``ledgergate audit verify-proof`` accepts; an admin revokes a token and the open psql
session ends; every page passes axe-core with no serious violation. Screenshots are
saved with the test results (tests/integration/console.py)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.console import (
    axe_violations,
    browser_fixture,
    shot,
    sign_in_with_provider,
    sign_in_with_token,
)
from tests.integration.fixtures import app_connection
from tests.integration.gateway import Gateway, free_port
from tests.integration.oidc_idp import WEB_CLIENT_ID, OidcIdp
from tests.integration.pgcluster import PgCluster

pytestmark = pytest.mark.browser

USERS = {
    "rita": {"email": "rita@example.com", "groups": ["dba"], "name": "Rita"},
}
RULES = [
    {
        "id": "contractor-access",
        "connections": ["app"],
        "groups": ["contractors"],
        "review": {"kind": "access", "reviewers": ["dba"], "max_duration": "2h"},
    },
    {
        "id": "console-deletes",
        "connections": ["app"],
        "review": {
            "kind": "command",
            "when": {"kinds": ["delete"]},
            "reviewers": ["dba"],
            "timeout": "40s",
        },
    },
]


@pytest.fixture(scope="module")
def console_gw(
    tmp_path_factory: pytest.TempPathFactory, pgc: PgCluster
) -> Iterator[tuple[Gateway, OidcIdp, str]]:
    pgc.psql(
        "DROP TABLE IF EXISTS rv_console; CREATE TABLE rv_console (id int PRIMARY KEY);"
        "INSERT INTO rv_console SELECT generate_series(1, 10);",
        "app",
    )
    port = free_port()
    base = f"https://localhost:{port}"
    work = tmp_path_factory.mktemp("console")
    with OidcIdp(
        work / "idp", users=USERS, web_redirect_uris=[f"{base}/console/login/oidc/callback"]
    ) as idp:
        gw = Gateway(
            work / "gw",
            [app_connection(pgc)],
            env={"APP_DB_PASSWORD": pgc.password},
            extra={
                "listeners": {"api": {"address": f"127.0.0.1:{port}", "public_url": base}},
                "identity": {
                    "oidc": {
                        "issuer": idp.issuer,
                        "client_id": WEB_CLIENT_ID,
                        "audience": [WEB_CLIENT_ID],
                    }
                },
                "roles": {
                    "admin": {"identities": ["ada"]},
                    "auditor": {"groups": ["audit"]},
                    "reviewer": {"groups": ["dba"]},
                },
                "policy": {"rules": RULES},
            },
        ).start()
        try:
            yield gw, idp, base
        finally:
            gw.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_fixture()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1366, "height": 800})
    pg = ctx.new_page()
    pg.set_default_timeout(20_000)
    try:
        yield pg
    finally:
        ctx.close()


CONSOLE_PAGES = (
    "/console/reviews",
    "/console/sessions",
    "/console/live",
    "/console/ledger",
    "/console/evidence",
    "/console/insights",
    "/console/identities",
    "/console/tokens",
    "/console/grants",
    "/console/policy",
    "/console/connections",
    "/console/me",
)


def _held_delete(gw: Gateway, token: str, ident: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            "psql",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f"DELETE FROM rv_console WHERE id = {ident}",
            gw.dsn(token),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_reviewer_signed_in_through_the_provider_approves_a_held_statement(
    console_gw: tuple[Gateway, OidcIdp, str], page: Any, pgc: PgCluster
) -> None:
    gw, _, base = console_gw
    sign_in_with_provider(page, base, "rita")
    assert page.url.startswith(f"{base}/console/reviews"), page.url
    assert "rita@example.com" in page.inner_text("header")
    cookie = next(c for c in page.context.cookies() if c["name"] == "__Host-ledgergate")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert page.locator("article.review").count() == 0
    psql = _held_delete(gw, gw.token("erin", "user", "1h", "--group", "eng"), 1)
    try:
        # The inbox shows it without a reload: the event stream told the page.
        item = page.locator("article.review").first
        item.wait_for()
        assert "DELETE FROM rv_console WHERE id = 1" in item.inner_text()
        assert "erin" in item.inner_text() and "console-deletes" in item.inner_text()
        shot(page, "reviewer-inbox")
        item.get_by_label("Reason (recorded)").fill("cleanup agreed in INC-7")
        item.get_by_role("button", name="Approve").click()
        out, err = psql.communicate(timeout=20)
    finally:
        if psql.poll() is None:
            psql.kill()
    assert psql.returncode == 0, err
    assert "DELETE 1" in out
    assert pgc.psql("SELECT count(*) FROM rv_console WHERE id = 1", "app").strip() == "0"
    page.locator("article.review").first.wait_for(state="detached")


def test_a_denial_reaches_psql_and_nobody_decides_their_own_request(
    console_gw: tuple[Gateway, OidcIdp, str], browser: Any, page: Any, pgc: PgCluster
) -> None:
    gw, _, base = console_gw
    dana = gw.token("dana", "user", "1h", "--group", "dba")  # a reviewer herself
    psql = _held_delete(gw, dana, 2)
    try:
        own = browser.new_context(ignore_https_errors=True).new_page()
        sign_in_with_token(own, base, dana, "/console/reviews")
        mine = own.locator("article.review").first
        mine.wait_for()
        assert "Your own request" in mine.inner_text()
        assert mine.get_by_role("button", name="Approve").count() == 0
        shot(own, "own-request")
        own.context.close()

        sign_in_with_token(page, base, gw.token("sam", "user", "1h", "--group", "dba"))
        item = page.locator("article.review").first
        item.wait_for()
        item.get_by_label("Reason (recorded)").fill("not during the freeze")
        item.get_by_role("button", name="Deny").click()
        _, err = psql.communicate(timeout=20)
    finally:
        if psql.poll() is None:
            psql.kill()
    assert psql.returncode != 0
    assert "denied by sam: not during the freeze" in err
    assert pgc.psql("SELECT count(*) FROM rv_console WHERE id = 2", "app").strip() == "1"


def test_an_auditor_searches_opens_a_session_and_downloads_a_proof(
    console_gw: tuple[Gateway, OidcIdp, str], page: Any, tmp_path: Path
) -> None:
    gw, _, base = console_gw
    with psycopg.connect(gw.dsn(gw.token("fay", "user", "1h")), autocommit=True) as c:
        c.execute("SELECT count(*) FROM rv_console WHERE id > 7").fetchone()
    sign_in_with_token(page, base, gw.token("aud", "user", "1h", "--group", "audit"))
    assert page.url.endswith("/console/sessions"), page.url
    assert page.get_by_role("link", name="Tokens").count() == 0  # not an admin
    page.get_by_label("Identity").fill("fay")
    page.get_by_label("Text").fill("rv_console")
    hit = page.locator("table.hits a", has_text="rv_console WHERE id >").first
    deadline = time.monotonic() + 30  # the search index catches up off the hot path
    while True:
        page.get_by_role("button", name="Filter").click()
        page.wait_for_load_state()
        if hit.count() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    shot(page, "auditor-search")
    hit.click()
    page.wait_for_selector("table.timeline")
    row = page.locator("table.timeline tr", has_text="rv_console WHERE id >").first
    assert "command" in row.inner_text()
    shot(page, "auditor-session")
    with page.expect_download() as dl:
        row.get_by_role("link", name="proof").click()
    proof = tmp_path / "entry.tlog-proof"
    dl.value.save_as(proof)
    assert proof.read_text().startswith("c2sp.org/tlog-proof@v1")
    ok = gw.cli("audit", "verify-proof", str(proof), check=False)
    assert ok.returncode == 0, ok.stderr + ok.stdout


def test_an_admin_revokes_a_token_and_the_open_psql_session_ends(
    console_gw: tuple[Gateway, OidcIdp, str], page: Any
) -> None:
    gw, _, base = console_gw
    with psycopg.connect(gw.dsn(gw.token("frank", "user", "1h")), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
        sign_in_with_token(page, base, gw.token("ada", "user", "1h"), "/console/tokens")
        page.get_by_label("Identity", exact=True).last.fill("frank")
        page.get_by_role("button", name="Show").click()
        page.wait_for_load_state()
        page.on("dialog", lambda d: d.accept())
        page.locator("table.tokens button", has_text="Revoke").first.click()
        page.locator("table.tokens td", has_text="revoked").first.wait_for()
        shot(page, "admin-revoked")
        deadline = time.monotonic() + 15
        with pytest.raises(psycopg.Error) as e:
            while time.monotonic() < deadline:
                c.execute("SELECT 1")
                time.sleep(0.2)
    assert "session ended" in str(e.value) and "revoked" in str(e.value)


def test_every_page_passes_axe_core(console_gw: tuple[Gateway, OidcIdp, str], browser: Any) -> None:
    gw, _, base = console_gw
    # The pages allow scripts of their own origin only: the check comes in past that.
    ctx = browser.new_context(ignore_https_errors=True, bypass_csp=True)
    page = ctx.new_page()
    with psycopg.connect(gw.dsn(gw.token("gil", "user", "1h")), autocommit=True) as c:
        c.execute("SELECT 1")
    # The check finds what it should: an image with no text and a field with no label.
    page.set_content('<html lang="en"><title>t</title><img src="x.png"><input id="i"></html>')
    assert {v["id"] for v in axe_violations(page)} >= {"image-alt", "label"}
    page.goto(f"{base}/console/login")
    found = {"login": axe_violations(page)}
    sign_in_with_token(page, base, gw.token("ada", "user", "1h", "--group", "dba"))
    for path in CONSOLE_PAGES:
        page.goto(base + path)
        found[path] = axe_violations(page)
    page.goto(base + "/console/sessions")
    page.locator("table.sessions a").first.click()
    page.wait_for_selector("table.timeline")
    found["session"] = axe_violations(page)
    ctx.close()
    assert {k: v for k, v in found.items() if v} == {}


def test_an_admin_terminates_a_live_session(
    console_gw: tuple[Gateway, OidcIdp, str], page: Any
) -> None:
    gw, _, base = console_gw
    with psycopg.connect(gw.dsn(gw.token("hal", "user", "1h")), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
        sign_in_with_token(page, base, gw.token("ada", "user", "1h"), "/console/live")
        row = page.locator("table.live tr", has_text="hal").first
        row.get_by_placeholder("reason (recorded)").fill("INC-9 runaway query")
        with page.expect_navigation():  # the page reloads once the API said yes
            row.get_by_role("button", name="Terminate").click()
        deadline = time.monotonic() + 15
        with pytest.raises(psycopg.Error) as e:
            while time.monotonic() < deadline:
                c.execute("SELECT 1")
                time.sleep(0.2)
    assert "terminated by ada: INC-9 runaway query" in str(e.value)
    gone = time.monotonic() + 10  # the store indexes the session's end off the hot path
    while True:
        page.goto(f"{base}/console/live")
        if page.locator("table.live tr", has_text="hal").count() == 0:
            break
        assert time.monotonic() < gone, "the terminated session still shows as live"
        time.sleep(0.3)
    shot(page, "admin-live")


def test_a_contractor_asks_for_access_and_a_reviewer_grants_it(
    console_gw: tuple[Gateway, OidcIdp, str], browser: Any, page: Any
) -> None:
    gw, _, base = console_gw
    carl = gw.token("carl", "user", "1h", "--group", "contractors")
    with pytest.raises(psycopg.Error, match="needs an approved access request"):
        psycopg.connect(gw.dsn(carl)).close()
    sign_in_with_token(page, base, carl)
    assert page.url.endswith("/console/me")
    page.get_by_label("For").fill("30m")
    page.get_by_label("Why").fill("INC-12 read the orders table")
    page.get_by_role("button", name="Ask").click()
    page.locator("table tr", has_text="pending").first.wait_for()
    shot(page, "user-request")

    rev = browser.new_context(ignore_https_errors=True).new_page()
    sign_in_with_token(rev, base, gw.token("rita2", "user", "1h", "--group", "dba"))
    item = rev.locator("article.review", has_text="carl").first
    assert "INC-12 read the orders table" in item.inner_text()
    item.get_by_label("Reason (recorded)").fill("ok for INC-12")
    item.get_by_role("button", name="Approve").click()
    item.wait_for(state="detached")
    rev.context.close()
    with psycopg.connect(gw.dsn(carl), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_an_auditor_exports_evidence_and_reads_insights(
    console_gw: tuple[Gateway, OidcIdp, str], page: Any, tmp_path: Path
) -> None:
    gw, _, base = console_gw
    sign_in_with_token(page, base, gw.token("aud2", "user", "1h", "--group", "audit"))
    page.goto(f"{base}/console/evidence")
    page.get_by_label("Since").fill("-1d")
    page.get_by_role("button", name="Export").click()
    link = page.locator("#exports a", has_text="download").first
    link.wait_for(timeout=60_000)  # the page follows the export's progress until it is done
    with page.expect_download() as dl:
        link.click()
    bundle = tmp_path / "evidence.zip"
    dl.value.save_as(bundle)
    ok = gw.cli("evidence", "verify", str(bundle), check=False)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    page.goto(f"{base}/console/insights?since=1d")
    assert page.locator(".insights h1").inner_text().startswith("Insights")
    assert page.locator(".insights figure svg, .insights p.muted").count() >= 6
    shot(page, "auditor-insights")


def test_an_auditor_verifies_the_ledger_from_the_page(
    console_gw: tuple[Gateway, OidcIdp, str], page: Any
) -> None:
    gw, _, base = console_gw
    sign_in_with_token(page, base, gw.token("aud3", "user", "1h", "--group", "audit"))
    page.goto(f"{base}/console/ledger")
    assert "test-gw" in page.locator("table.streams").inner_text()
    page.get_by_role("button", name="Verify now").click()
    page.locator("#last-verified", has_text="by aud3").wait_for()
    assert "intact" in page.locator("#last-verified").inner_text()
    shot(page, "auditor-ledger")
    done = [e for e in gw.entries("audit.verified") if e["by"] == "api:aud3"]
    assert done and done[-1]["ok"] is True and done[-1]["entries"] > 0


def test_the_cli_terminates_a_session_another_process_holds(
    console_gw: tuple[Gateway, OidcIdp, str],
) -> None:
    gw, _, _ = console_gw
    with psycopg.connect(gw.dsn(gw.token("ivy", "user", "1h")), autocommit=True) as c:
        c.execute("SELECT 1")
        gw.indexed()
        sid = next(
            e["session_id"]
            for e in reversed(gw.entries("session.open"))
            if e["identity"]["subject"] == "ivy"
        )
        done = gw.cli("sessions", "terminate", sid, "--reason", "INC-10 stuck lock")
        assert f"asked the gateway to end {sid}" in done.stdout
        deadline = time.monotonic() + 15
        with pytest.raises(psycopg.Error) as e:
            while time.monotonic() < deadline:
                c.execute("SELECT 1")
                time.sleep(0.2)
    assert "terminated by" in str(e.value) and "INC-10 stuck lock" in str(e.value)
    gw.indexed()
    again = gw.cli("sessions", "terminate", sid, "--reason", "twice", check=False)
    assert again.returncode == 1 and "has already ended" in again.stderr
    kinds = [e["kind"] for e in gw.entries() if e.get("session_id") == sid]
    assert kinds.index("admin.session.terminate") < kinds.index("session.terminated")


def test_an_admin_rotates_a_token_and_sees_the_new_one_once(
    console_gw: tuple[Gateway, OidcIdp, str], page: Any
) -> None:
    gw, _, base = console_gw
    old = gw.token("jo", "user", "1h")
    sign_in_with_token(page, base, gw.token("ada", "user", "1h"), "/console/tokens?identity=jo")
    page.on("dialog", lambda d: d.accept())
    row = page.locator("table.tokens tr", has_text="jo").first
    row.get_by_role("button", name="Rotate").click()
    secret = row.locator(".secret output")
    secret.wait_for()
    new = secret.inner_text().strip()
    assert new.startswith("lgt_") and new != old
    with pytest.raises(psycopg.Error, match="password authentication failed"):
        psycopg.connect(gw.dsn(old)).close()  # the old one no longer works
    with psycopg.connect(gw.dsn(new), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    page.reload()
    assert new not in page.content()  # shown once, never again


def test_signing_out_revokes_only_a_token_the_console_minted(
    console_gw: tuple[Gateway, OidcIdp, str], browser: Any, page: Any
) -> None:
    gw, _, base = console_gw
    typed = gw.token("kim", "user", "1h")
    sign_in_with_token(page, base, typed)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(lambda u: "/console/login" in u)
    assert not [c for c in page.context.cookies() if c["name"] == "__Host-ledgergate"]
    with psycopg.connect(gw.dsn(typed), autocommit=True) as c:  # still kim's login
        assert c.execute("SELECT 1").fetchone() == (1,)

    ctx = browser.new_context(ignore_https_errors=True)
    oidc = ctx.new_page()
    sign_in_with_provider(oidc, base, "rita")
    minted = next(c["value"] for c in ctx.cookies() if c["name"] == "__Host-ledgergate")
    oidc.get_by_role("button", name="Sign out").click()
    oidc.wait_for_url(lambda u: "/console/login" in u)
    ctx.close()
    gone = [e for e in gw.entries("token.revoked") if e.get("by") == "api:rita@example.com"]
    assert gone, "the minted token was not revoked"
    with pytest.raises(psycopg.Error):
        psycopg.connect(gw.dsn(minted)).close()
