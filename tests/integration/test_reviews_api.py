"""Just-in-time reviews through the REST API and the CLI of a real gateway process:
access requests and their checks, roles (requesters, reviewers, admins, auditors),
self-approval refused for an admin, decisions with reasons, expiry, cancelling, a
command review made by another process sharing the store, the approval record, the
page notifications link to, the ``review.*`` entries, and ``ledgergate request |
reviews`` acting as the logged-in person."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledgergate.core.review import binding_hash
from ledgergate.services import client as cl
from ledgergate.services.config import load_settings
from ledgergate.services.keys import load_or_create_ledger_signer
from ledgergate.services.ledger import LedgerWriter
from ledgergate.services.reviews import ReviewService
from ledgergate.store import open_store
from tests.integration.fixtures import GatewayFactory, app_connection
from tests.integration.gateway import BIN, Gateway, free_port
from tests.integration.pgcluster import PgCluster
from tests.integration.test_pg_security import entries

RULES = [
    {
        "id": "contractor-access",
        "connections": ["app"],
        "groups": ["contractors"],
        "review": {"kind": "access", "reviewers": ["dba"], "ttl": "1s"},
    },
    {
        "id": "app-access",
        "connections": ["app"],
        "except_groups": ["contractors", "oncall"],
        "review": {
            "kind": "access",
            "reviewers": ["dba"],
            "justification": True,
            "max_duration": "2h",
        },
    },
    {
        "id": "app-deletes",
        "connections": ["app"],
        "review": {
            "kind": "command",
            "when": {"kinds": ["delete"]},
            "reviewers": ["dba", "security"],
            "all_groups": True,
            "wait": "answer",
        },
    },
]


@pytest.fixture
def gw(gateway_factory: GatewayFactory, pgc: PgCluster) -> Gateway:
    port = free_port()
    g = gateway_factory(
        [app_connection(pgc)],
        extra={
            "listeners": {"api": {"address": f"127.0.0.1:{port}"}},
            "roles": {
                "admin": {"identities": ["ada"]},
                "auditor": {"groups": ["audit"]},
                "reviewer": {"groups": ["dba", "security"]},
            },
            "grants": [{"connections": ["*"], "groups": ["eng", "dba", "contractors"]}],
            "policy": {"rules": RULES},
        },
    ).start()
    g.api_port = port  # type: ignore[attr-defined]
    return g


@pytest.fixture
def http(gw: Gateway) -> Iterator[httpx.Client]:
    ca = ssl.create_default_context(cafile=str(gw.data_dir / "tls" / "server.crt"))
    base = f"https://localhost:{gw.api_port}"  # type: ignore[attr-defined]
    with httpx.Client(base_url=base, verify=ca) as c:
        yield c


def _auth(gw: Gateway, who: str, *groups: str) -> dict[str, str]:
    more = [x for g in groups for x in ("--group", g)]
    return {"Authorization": f"Bearer {gw.token(who, 'user', '1h', *more)}"}


def _ask(http: httpx.Client, who: dict[str, str], **body: Any) -> httpx.Response:
    doc = {"connection": "app", "duration": "30m", "reason": "INC-4211 fix stuck orders"}
    doc.update(body)
    return http.post("/api/v1/reviews/access", headers=who, json=doc)


def test_access_reviews_through_the_api(gw: Gateway, http: httpx.Client) -> None:
    erin = _auth(gw, "erin", "eng")
    bob = _auth(gw, "bob", "dba")
    ada = _auth(gw, "ada", "dba")  # an admin, and in the reviewer group
    frank = _auth(gw, "frank", "eng")
    carol = _auth(gw, "carol", "audit")

    assert http.get("/api/v1/reviews").status_code == 401
    # requests are checked
    r = _ask(http, erin, reason=None)
    assert r.status_code == 422 and "justification" in r.json()["error"]
    r = _ask(http, erin, duration="3h")
    assert r.status_code == 422 and "at most 2h" in r.json()["error"]
    assert _ask(http, erin, duration="soon").status_code == 422
    r = _ask(http, erin, connection="nope")
    assert r.status_code == 404
    r = _ask(http, carol)
    assert r.status_code == 403 and "auditor" in r.json()["error"]
    r = _ask(http, _auth(gw, "olga", "eng", "oncall"))
    assert r.status_code == 409 and "nothing to request" in r.json()["error"]

    r = _ask(http, erin)
    assert r.status_code == 201, r.text
    rv = r.json()
    rid = rv["id"]
    assert rv["state"] == "pending" and rv["rule_id"] == "app-access"
    assert rv["requester"]["subject"] == "erin" and rv["duration_ns"] == 30 * 60 * 10**9
    assert _ask(http, erin).status_code == 409  # one at a time

    # who sees what
    assert [x["id"] for x in http.get("/api/v1/reviews", headers=erin).json()] == [rid]
    assert http.get("/api/v1/reviews", headers=frank).json() == []
    assert http.get(f"/api/v1/reviews/{rid}", headers=frank).status_code == 404
    assert http.get(f"/api/v1/reviews/{rid}", headers=erin).status_code == 200
    todo = http.get("/api/v1/reviews", headers=bob, params={"to_review": "true"}).json()
    assert [x["id"] for x in todo] == [rid]

    # who decides
    r = http.post(f"/api/v1/reviews/{rid}/approve", headers=frank, json={"reason": "sure"})
    assert r.status_code == 403 and "reviewer or admin role" in r.json()["error"]
    r = http.post(f"/api/v1/reviews/{rid}/approve", headers=bob, json={})
    assert r.status_code == 422  # a reason is mandatory
    r = http.post(f"/api/v1/reviews/{rid}/approve", headers=bob, json={"reason": "  "})
    assert r.status_code == 422 and "reason" in r.json()["error"]
    r = http.post(f"/api/v1/reviews/{rid}/approve", headers=bob, json={"reason": "INC is real"})
    assert r.status_code == 200 and r.json()["state"] == "approved"
    r = http.post(f"/api/v1/reviews/{rid}/deny", headers=ada, json={"reason": "late"})
    assert r.status_code == 409
    assert (
        http.post("/api/v1/reviews/rv_nope/approve", headers=bob, json={"reason": "x"}).status_code
        == 404
    )

    # an admin asking for themselves cannot approve it either
    own = _ask(http, ada).json()
    r = http.post(f"/api/v1/reviews/{own['id']}/approve", headers=ada, json={"reason": "me"})
    assert r.status_code == 403 and "own request" in r.json()["error"]

    # the record: decisions, the ledger entries of each step
    rec = http.get(f"/api/v1/reviews/{rid}", headers=carol).json()
    assert [(d["reviewer"], d["approve"], d["reason"]) for d in rec["decisions"]] == [
        ("bob", True, "INC is real")
    ]
    assert rec["window_end_ns"] - rec["window_start_ns"] == 30 * 60 * 10**9
    assert [e["kind"] for e in rec["entries"]] == ["review.pending", "review.approved"]
    assert all(e["stream"] == "api@test-gw" for e in rec["entries"])

    # the requester withdraws the unused approval; nobody else can
    r = http.post(f"/api/v1/reviews/{rid}/cancel", headers=bob)
    assert r.status_code == 403
    # nor a reviewer whose name is the one the gateway itself cancels under
    r = http.post(f"/api/v1/reviews/{rid}/cancel", headers=_auth(gw, "gateway", "dba"))
    assert r.status_code == 403 and "reserved for the gateway" in r.json()["error"]
    r = http.post(f"/api/v1/reviews/{rid}/cancel", headers=erin, json={"reason": "fixed"})
    assert r.status_code == 200 and r.json()["state"] == "cancelled"

    # a request nobody decides on in time shows as expired
    short = _ask(http, _auth(gw, "cid", "contractors"), reason=None).json()
    assert short["rule_id"] == "contractor-access"
    time.sleep(1.2)
    r = http.get(f"/api/v1/reviews/{short['id']}", headers=bob)
    assert r.json()["state"] == "expired"
    assert [
        x["id"]
        for x in http.get("/api/v1/reviews", headers=bob, params={"state": "expired"}).json()
    ] == [short["id"]]

    steps = [
        (e["kind"], e["review"]["actor"], e.get("reason"))
        for e in entries(gw, settle=False)
        if e["kind"].startswith("review.") and e["review"]["id"] == rid
    ]
    assert steps == [
        ("review.pending", "erin", "INC-4211 fix stuck orders"),
        ("review.approved", "bob", "INC is real"),
        ("review.cancelled", "erin", "fixed"),
    ]
    v = gw.cli("audit", "verify", check=False)
    assert v.returncode == 0, v.stdout + v.stderr
    db = open_store(gw.store_url, password=gw.store_password)
    try:
        assert [o.event for o in db.list_outbox(rid)] == ["requested", "approved", "cancelled"]
    finally:
        db.close()


def _other_process(gw: Gateway) -> tuple[ReviewService, Any]:
    """A second process on the gateway's store (as another gateway would be)."""
    s = load_settings(gw.config_path)
    signer = load_or_create_ledger_signer(s.ledger_key, s.key_name)
    st = s.open_store()
    w = LedgerWriter.open(st, "other@test-gw", signer, shared=True, owns_store=False)

    def close() -> None:
        w.close(time.time_ns())
        st.close()

    return ReviewService(st, w, s.config), close


def test_a_command_review_from_another_process(gw: Gateway, http: httpx.Client) -> None:
    svc, close = _other_process(gw)
    try:
        rule = next(r for r in svc.config.policy.rules if r.id == "app-deletes")
        stmt = "DELETE FROM orders WHERE id = $1 AND note = 'secret-note'"
        rv = svc.request_command(
            identity="erin",
            groups=["eng"],
            connection="app",
            rule=rule,
            statement=stmt,
            params=["4111111111111111"],
            session_id="s-1",
            now_ns=time.time_ns(),
        )
        bob, sam = _auth(gw, "bob", "dba"), _auth(gw, "sam", "security")
        carol = _auth(gw, "carol", "audit")
        seen = http.get(f"/api/v1/reviews/{rv.id}", headers=bob).json()
        assert seen["statement"] == stmt and seen["params"] == ["4111111111111111"]
        audited = http.get(f"/api/v1/reviews/{rv.id}", headers=carol).json()
        assert audited["statement"] == "DELETE FROM orders WHERE id = $1 AND note = ?"
        assert audited["params"] is None and audited["params_count"] == 1
        listed = http.get("/api/v1/reviews", headers=carol, params={"kind": "command"}).json()
        assert "secret-note" not in json.dumps(listed)
        # all groups: one approval from each
        r = http.post(f"/api/v1/reviews/{rv.id}/approve", headers=bob, json={"reason": "ok"})
        assert r.json()["state"] == "pending"
        epoch = svc.epoch()
        r = http.post(f"/api/v1/reviews/{rv.id}/approve", headers=sam, json={"reason": "ok"})
        assert r.json()["state"] == "approved"
        assert svc.epoch() > epoch  # what a gateway holding the statement polls
        b = binding_hash("erin", "app", stmt, ["4111111111111111"])
        ran = svc.consume_command(
            identity="erin", connection="app", binding=b, session_id="s-2", now_ns=time.time_ns()
        )
        assert ran is not None and ran.state == "executed"
        again = svc.consume_command(
            identity="erin", connection="app", binding=b, session_id="s-3", now_ns=time.time_ns()
        )
        assert again is None
        rec = http.get(f"/api/v1/reviews/{rv.id}", headers=bob).json()
        assert rec["state"] == "executed" and rec["executions"][0]["session_id"] == "s-2"
        assert {e["stream"] for e in rec["entries"]} == {"other@test-gw", "api@test-gw"}
    finally:
        close()
    raw = json.dumps(entries(gw, settle=False))
    assert "4111111111111111" not in raw and "secret-note" not in raw


def test_the_page_notifications_link_to(gw: Gateway, http: httpx.Client) -> None:
    rv = _ask(http, _auth(gw, "erin", "eng")).json()
    r = http.get(f"/reviews/{rv['id']}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'sha256-" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
    # the page itself holds nothing about the request: its script asks the API with the
    # reviewer's own token
    assert "INC-4211" not in r.text and rv["id"] not in r.text
    assert "/api/v1/reviews/" in r.text and "Authorization" in r.text


# -- the CLI, as the logged-in person --------------------------------------------------
def _login_as(gw: Gateway, tmp_path: Path, who: str, *groups: str) -> Path:
    """Save credentials as ``ledgergate login`` would (a token minted for ``who``)."""
    more = [x for g in groups for x in ("--group", g)]
    tok = gw.token(who, "user", "1h", *more)
    path = tmp_path / f"{who}.json"
    cl.save(
        cl.Credentials(
            f"https://localhost:{gw.api_port}",  # type: ignore[attr-defined]
            str(gw.data_dir / "tls" / "server.crt"),
            tok,
            "tok_x",
            who,
            tuple(groups),
            (),
            time.time_ns() + 3600 * 10**9,
        ),
        path,
    )
    return path


def _run(gw: Gateway, creds: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args],
        capture_output=True,
        text=True,
        env={**gw.env, "LEDGERGATE_CREDENTIALS": str(creds), "COLUMNS": "200"},
        timeout=60,
    )


def test_the_cli_acts_as_the_logged_in_person(gw: Gateway, tmp_path: Path) -> None:
    nobody = _run(gw, tmp_path / "none.json", "reviews", "list")
    assert nobody.returncode == 1 and "not logged in" in nobody.stderr
    erin = _login_as(gw, tmp_path, "erin", "eng")
    bob = _login_as(gw, tmp_path, "bob", "dba")

    p = _run(gw, erin, "request", "access", "app", "--for", "30m")
    assert p.returncode == 1 and "justification" in p.stderr
    p = _run(gw, erin, "request", "access", "app", "--for", "forever", "--reason", "x")
    assert p.returncode == 2
    p = _run(
        gw,
        erin,
        "request",
        "access",
        "app",
        "--for",
        "30m",
        "--reason",
        "INC-4211 fix stuck orders",
    )
    assert p.returncode == 0, p.stderr
    assert "access to app for 30m" in p.stdout and "needs 0/1 from dba" in p.stdout
    rid = p.stdout.split()[1].rstrip(":")

    p = _run(gw, bob, "reviews", "list", "--to-review", "--json")
    assert [x["id"] for x in json.loads(p.stdout)] == [rid]
    p = _run(gw, bob, "reviews", "list", "--state", "pending")
    assert p.returncode == 0 and rid in p.stdout and "access for 30m" in p.stdout
    p = _run(gw, erin, "reviews", "approve", rid, "--reason", "me")
    assert p.returncode == 1 and "reviewer or admin role" in p.stderr
    p = _run(gw, bob, "reviews", "approve", rid)
    assert p.returncode == 2  # --reason is required
    p = _run(gw, bob, "reviews", "approve", rid, "--reason", "INC is real")
    assert p.returncode == 0 and p.stdout.strip() == f"{rid} approved"
    p = _run(gw, erin, "reviews", "show", rid)
    assert p.returncode == 0, p.stderr
    assert "approved by bob (dba)" in p.stdout and "INC is real" in p.stdout
    assert "requester:   erin" in p.stdout and "ledger: api@test-gw" in p.stdout
    shown = json.loads(_run(gw, erin, "reviews", "show", rid, "--json").stdout)
    assert shown["state"] == "approved" and len(shown["entries"]) == 2
    p = _run(gw, bob, "reviews", "deny", rid, "--reason", "too late")
    assert p.returncode == 1 and "approved" in p.stderr
    p = _run(gw, erin, "reviews", "cancel", rid)
    assert p.returncode == 0 and p.stdout.strip() == f"{rid} cancelled"
    p = _run(gw, erin, "reviews", "show", "rv_nope")
    assert p.returncode == 1 and "no review" in p.stderr
