"""Statements held in flight for a human's review, end to end with psql and psycopg
against a real gateway: released by an approval made through the API (another
process), denied with the reviewer's reason, timed out, withdrawn by the client's
cancel; the answer-at-once mode for automation (runs exactly once after approval);
N-of-M approvals; other sessions are not held up; access windows that admit a
connection and cut its session when they close; two gateway processes over one store;
signed webhooks received and checked by a receiver in the test."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import psycopg
import pytest

from ledgergate.core.notify import verify_signature
from tests.integration.fixtures import GatewayFactory, app_connection
from tests.integration.gateway import Gateway, free_port
from tests.integration.pgcluster import PgCluster
from tests.integration.test_pg_security import entries

SECRET = "webhook-shared-secret-for-tests"
RULES: list[dict[str, Any]] = [
    {
        "id": "billing-writes",
        "connections": ["app"],
        "except_groups": ["breakglass"],
        "message": "billing changes need a second pair of eyes",
        "review": {
            "kind": "command",
            "when": {"kinds": ["update", "delete"], "tables": ["rv_billing"]},
            "reviewers": ["dba", "security"],
            "min_approvals": 2,
            "timeout": "6s",
        },
    },
    {
        "id": "bot-truncate",
        "connections": ["app"],
        "review": {
            "kind": "command",
            "when": {"kinds": ["delete"], "tables": ["rv_scratch"]},
            "reviewers": ["dba"],
            "wait": "answer",
        },
    },
    {
        "id": "contractor-access",
        "connections": ["app"],
        "groups": ["contractors"],
        "review": {"kind": "access", "reviewers": ["dba"], "max_duration": "1h"},
    },
]


class Receiver(BaseHTTPRequestHandler):
    got: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        verify_signature(SECRET, self.headers["X-Ledgergate-Signature"], body, time.time())
        Receiver.got.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    Receiver.got = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/hook"
    srv.shutdown()
    srv.server_close()


def _config(pgc: PgCluster, api_port: int, hook: str) -> dict[str, Any]:
    return {
        "listeners": {"api": {"address": f"127.0.0.1:{api_port}"}},
        "roles": {"reviewer": {"groups": ["dba", "security"]}},
        "policy": {"rules": RULES},
        "notifications": {"webhooks": [{"name": "ops", "url": hook, "secret": "env:HOOK_SECRET"}]},
    }


@pytest.fixture
def gw(gateway_factory: GatewayFactory, pgc: PgCluster, hook: str) -> Gateway:
    pgc.psql(
        "DROP TABLE IF EXISTS rv_billing, rv_scratch;"
        "CREATE TABLE rv_billing (id int PRIMARY KEY, total int);"
        "INSERT INTO rv_billing VALUES (1, 100), (2, 200);"
        "CREATE TABLE rv_scratch (x int);",
        "app",
    )
    port = free_port()
    g = gateway_factory(
        [app_connection(pgc)], extra=_config(pgc, port, hook), env={"HOOK_SECRET": SECRET}
    ).start()
    g.api_port = port  # type: ignore[attr-defined]
    return g


class Api:
    def __init__(self, gw: Gateway) -> None:
        ca = ssl.create_default_context(cafile=str(gw.data_dir / "tls" / "server.crt"))
        self.c = httpx.Client(
            base_url=f"https://localhost:{gw.api_port}",  # type: ignore[attr-defined]
            verify=ca,
        )
        self.gw = gw

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.c.close()

    def who(self, name: str, *groups: str) -> dict[str, str]:
        more = [x for g in groups for x in ("--group", g)]
        return {"Authorization": f"Bearer {self.gw.token(name, 'user', '1h', *more)}"}

    def pending(self, h: dict[str, str], timeout: float = 10.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.c.get("/api/v1/reviews", headers=h, params={"state": "pending"}).json()
            if got:
                return got[0]  # type: ignore[no-any-return]
            time.sleep(0.1)
        raise AssertionError("no pending review appeared")

    def decide(self, rid: str, h: dict[str, str], verb: str, reason: str) -> dict[str, Any]:
        r = self.c.post(f"/api/v1/reviews/{rid}/{verb}", headers=h, json={"reason": reason})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


@pytest.fixture
def api(gw: Gateway) -> Iterator[Api]:
    with Api(gw) as a:
        yield a


def _bg(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        t0 = time.monotonic()
        try:
            out["result"] = fn()
        except Exception as e:
            out["error"] = e
        out["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_a_held_update_runs_once_two_reviewers_approve(
    api: Api, gw: Gateway, pgc: PgCluster
) -> None:
    erin = gw.token("erin", "user", "1h", "--group", "eng")
    bob, sam = api.who("bob", "dba"), api.who("sam", "security")
    psql = subprocess.Popen(
        [
            "psql",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "UPDATE rv_billing SET total = 0 WHERE id = 1",
            gw.dsn(erin),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rv = api.pending(bob)
    assert rv["statement"] == "UPDATE rv_billing SET total = 0 WHERE id = 1"
    assert rv["requester"]["subject"] == "erin" and rv["rule_id"] == "billing-writes"
    # another session is not held up meanwhile
    with psycopg.connect(gw.dsn(gw.token("fay", "user", "1h")), autocommit=True) as c:
        assert c.execute("SELECT total FROM rv_billing WHERE id = 1").fetchone() == (100,)
    # nobody approves their own request
    me = api.c.post(
        f"/api/v1/reviews/{rv['id']}/approve",
        headers=api.who("erin", "dba"),
        json={"reason": "mine"},
    )
    assert me.status_code in (403, 409), me.text
    assert api.decide(rv["id"], bob, "approve", "ticket INC-1")["state"] == "pending"
    assert psql.poll() is None  # 1 of 2: still held
    assert api.decide(rv["id"], sam, "approve", "looks right")["state"] == "approved"
    out, err = psql.communicate(timeout=15)
    assert psql.returncode == 0, err
    assert "UPDATE 1" in out
    assert f"review {rv['id']} required" in err  # the NOTICE psql printed while it waited
    assert pgc.psql("SELECT total FROM rv_billing WHERE id = 1", "app").strip() == "0"
    rec = api.c.get(f"/api/v1/reviews/{rv['id']}", headers=bob).json()
    assert rec["state"] == "executed" and len(rec["executions"]) == 1
    gw.settle()
    kinds = [e["kind"] for e in entries(gw) if e["kind"].startswith("review.")]
    assert "review.pending" in kinds or "review.requested" in kinds, kinds
    assert "review.executed" in kinds and "review.approved" in kinds
    # the webhook heard of the request and the decision, signed
    end = time.monotonic() + 10
    while time.monotonic() < end and len({g["event"] for g in Receiver.got}) < 2:
        time.sleep(0.2)
    events = {g["event"] for g in Receiver.got}
    assert {"requested", "approved"} <= events, events
    assert all(g["review"]["id"] == rv["id"] for g in Receiver.got)


def test_denied_timed_out_and_cancelled(api: Api, gw: Gateway, pgc: PgCluster) -> None:
    bob = api.who("bob", "dba")
    erin = gw.token("erin", "user", "1h", "--group", "eng")
    with psycopg.connect(gw.dsn(erin), autocommit=True) as c:
        t, out = _bg(lambda: c.execute("DELETE FROM rv_billing WHERE id = 2"))
        rv = api.pending(bob)
        api.decide(rv["id"], bob, "deny", "not during the freeze")
        t.join(15)
        err = out.get("error")
        assert isinstance(err, psycopg.errors.InsufficientPrivilege), out
        assert "denied by bob: not during the freeze" in str(err)
        # the session is in step: the next statement runs
        assert c.execute("SELECT count(*) FROM rv_billing").fetchone() == (2,)
        # nobody decides: it fails when the rule's timeout passes
        t, out = _bg(lambda: c.execute("DELETE FROM rv_billing WHERE id = %s", (2,)))
        t.join(20)
        assert "timed out" in str(out.get("error")), out
        assert 5 <= out["seconds"] < 15
        # the client cancels while it waits: withdrawn, 57014 as from PostgreSQL
        t, out = _bg(lambda: c.execute("UPDATE rv_billing SET total = 1 WHERE id = 2"))
        rv = api.pending(bob)
        c.cancel()
        t.join(15)
        assert isinstance(out.get("error"), psycopg.errors.QueryCanceled), out
        assert c.execute("SELECT 1").fetchone() == (1,)
        got = api.c.get(f"/api/v1/reviews/{rv['id']}", headers=bob).json()
        assert got["state"] == "cancelled"
    assert pgc.psql("SELECT count(*) FROM rv_billing", "app").strip() == "2"
    states = {
        json.loads(json.dumps(e)).get("review", {}).get("state")
        for e in entries(gw)
        if e["kind"].startswith("review.")
    }
    assert {"denied", "cancelled"} <= states, states


def test_answer_mode_runs_exactly_once_after_approval(
    api: Api, gw: Gateway, pgc: PgCluster
) -> None:
    bob = api.who("bob", "dba")
    bot = gw.token("ci-bot", "service", "1h", "--group", "eng")
    with psycopg.connect(gw.dsn(bot), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="required") as e:
            c.execute("TRUNCATE rv_scratch")
        rid = str(e.value).split("review ")[1].split()[0]
        api.decide(rid, bob, "approve", "scheduled cleanup")
        c.execute("TRUNCATE rv_scratch")  # runs: the approval is used
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="required"):
            c.execute("TRUNCATE rv_scratch")  # once only: a new review is asked for
    got = api.c.get(f"/api/v1/reviews/{rid}", headers=bob).json()
    assert got["state"] == "executed"


def test_access_windows_admit_and_close(api: Api, gw: Gateway) -> None:
    cora = api.who("cora", "contractors")
    tok = gw.token("cora", "user", "1h", "--group", "contractors")
    with pytest.raises(psycopg.OperationalError, match="needs an approved access request"):
        psycopg.connect(gw.dsn(tok)).close()
    r = api.c.post(
        "/api/v1/reviews/access",
        headers=cora,
        json={"connection": "app", "duration": "3s", "reason": "INC-4211"},
    )
    assert r.status_code in (200, 201), r.text
    rid = r.json()["id"]
    api.decide(rid, api.who("bob", "dba"), "approve", "go")
    with psycopg.connect(gw.dsn(tok), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
        t0 = time.monotonic()
        # the window closes while this query runs: the session is cut there
        with pytest.raises(psycopg.OperationalError, match="access window"):
            c.execute("SELECT pg_sleep(8)")
        assert time.monotonic() - t0 < 7
    with pytest.raises(psycopg.OperationalError, match="needs an approved access request"):
        psycopg.connect(gw.dsn(tok)).close()
    rec = api.c.get(f"/api/v1/reviews/{rid}", headers=api.who("bob", "dba")).json()
    assert rec["executions"], rec
    # a window ended early by the requester cuts its sessions at once
    r = api.c.post(
        "/api/v1/reviews/access",
        headers=cora,
        json={"connection": "app", "duration": "30m", "reason": "INC-4212"},
    )
    rid = r.json()["id"]
    api.decide(rid, api.who("bob", "dba"), "approve", "go")
    with psycopg.connect(gw.dsn(tok), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
        done = api.c.post(f"/api/v1/reviews/{rid}/cancel", headers=cora, json={})
        assert done.status_code == 200, done.text
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="access window"):
            c.execute("SELECT pg_sleep(5)")
        assert time.monotonic() - t0 < 4


def test_two_gateway_processes_over_one_store(
    gateway_factory: GatewayFactory, pgc: PgCluster, gw: Gateway, api: Api
) -> None:
    """A statement held by a second gateway process is released by an approval made
    through the first one's API."""
    second = gateway_factory(
        [app_connection(pgc)],
        extra={
            "gateway_name": "test-gw2",
            "roles": {"reviewer": {"groups": ["dba", "security"]}},
            "policy": {"rules": RULES},
            "store": gw.store_url,
            "store_password": gw.store_password,
        },
    ).start()
    erin = gw.token("erin", "user", "1h", "--group", "eng")
    # The reviewers' tokens first: each is a CLI run, and the hold times out after 6 s.
    bob, sam = api.who("bob", "dba"), api.who("sam", "security")
    with psycopg.connect(second.dsn(erin), autocommit=True) as c:
        t, out = _bg(lambda: c.execute("UPDATE rv_billing SET total = 7 WHERE id = 2"))
        rv = api.pending(bob)
        api.decide(rv["id"], bob, "approve", "ok")
        api.decide(rv["id"], sam, "approve", "ok")
        t.join(15)
        assert "error" not in out, out
    assert pgc.psql("SELECT total FROM rv_billing WHERE id = 2", "app").strip() == "7"
