"""HTTP APIs through the gateway (``type: http``) with real clients: httpx and curl.

Clients call ``https://localhost:PORT/api/<path>`` with their ledgergate token; the
gateway strips it, adds the held credential and records the request, every body slice
both ways and the answer. The backend never sees the client's token and no client, log,
ledger entry or export ever sees the held credential; a revoked token is refused at its
next request and cuts a download in flight; an allow-list refuses what it does not list.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.httpapi import HttpApi, pattern_bytes
from tests.integration.httpgw import HttpGateway

MiB = 1 << 20
# The held credentials (distinctive, to find them anywhere they leak): the API accepts
# each; the connections api, api-basic and api-header each hold one.
HELD = f"held-bearer-{secrets.token_hex(12)}-xyzzy"
HELD_PASSWORD = f"held-pass-{secrets.token_hex(12)}-plugh"
HELD_KEY = f"held-key-{secrets.token_hex(12)}-frotz"
SECRETS = (HELD, HELD_PASSWORD, HELD_KEY)
RULE = "analysts-read-reports"
POLICY = {
    "rules": [
        {
            "id": RULE,
            "groups": ["analysts"],
            "connections": ["api"],
            "allow": [{"methods": ["GET"], "paths": ["/api/reports/*"]}],
        }
    ]
}
# Every byte a client of the module's gateway received (headers and bodies), for the
# leak check at the end.
RECEIVED: list[bytes] = []
TOKENS: list[str] = []


@pytest.fixture(scope="module")
def hg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpGateway]:
    with HttpApi(token=HELD, basic=f"svc:{HELD_PASSWORD}", header=("x-api-key", HELD_KEY)) as api:
        g = HttpGateway(
            tmp_path_factory.mktemp("httpgw"),
            api,
            extra_auth=("basic", "header"),
            extra={"policy": POLICY},
        )
        g.start()
        try:
            yield g
        finally:
            g.stop()


def token(g: HttpGateway, identity: str, *more: str) -> str:
    tok = g.token(identity, "service", "1h", *more)
    TOKENS.append(tok)
    return tok


def keep(r: httpx.Response) -> httpx.Response:
    RECEIVED.append(b"\n".join(k + b": " + v for k, v in r.headers.raw) + b"\n" + r.read())
    return r


def ok(r: httpx.Response, status: int = 200) -> httpx.Response:
    assert r.status_code == status, r.text
    return r


def commands(g: HttpGateway, subject: str) -> list[dict]:
    return g.of("command", subject)


def chunks(g: HttpGateway, cmd: dict, direction: str) -> list[dict]:
    return [
        e
        for e in g.entries("chunk")
        if e["session_id"] == cmd["session_id"]
        and e["chunk"]["command"] == cmd["command"]["seq"]
        and e["direction"] == direction
    ]


def result_of(g: HttpGateway, cmd: dict, timeout: float = 10.0) -> dict:
    """The command.result of ``cmd`` (submitted after the answer went out: waited for;
    the request's chunk entries are in the store before it)."""
    deadline = time.monotonic() + timeout
    while True:
        got = [
            e
            for e in g.entries("command.result")
            if e["session_id"] == cmd["session_id"] and e["command"]["seq"] == cmd["command"]["seq"]
        ]
        if got or time.monotonic() > deadline:
            (r,) = got
            return r
        time.sleep(0.05)


def assert_slices(entries: list[dict], data: bytes, direction: str) -> None:
    assert [e["chunk"]["size"] for e in entries] == [
        min(MiB, len(data) - off) for off in range(0, len(data), MiB)
    ]
    for i, e in enumerate(entries):
        want = hashlib.sha256(data[i * MiB : (i + 1) * MiB]).hexdigest()
        assert e["chunk"]["sha256_in"] == e["chunk"]["sha256_out"] == want
        assert e["chunk"]["seq"] == i + 1 and e["chunk"]["framing"] == "slice"
        assert e["outcome"] == "forwarded" and e["direction"] == direction


def test_httpx_get_post_put_delete_are_relayed_and_recorded(hg: HttpGateway) -> None:
    body = os.urandom(3 * MiB)
    with hg.client(token(hg, "etl")) as c:
        assert ok(keep(c.get("/api/reports/1"))).json()["title"] == "Q3 revenue"
        created = ok(keep(c.post("/api/reports", json={"title": "new"})), 201).json()
        assert created["body"] == {"title": "new"}
        put = ok(keep(c.put("/api/blobs/etl.bin", content=body))).json()
        assert put == {
            "name": "etl.bin",
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        assert ok(keep(c.get("/api/blobs/etl.bin"))).content == body
        ok(keep(c.delete("/api/blobs/etl.bin")), 204)
        assert keep(c.get("/api/blobs/etl.bin")).status_code == 404

    cmds = commands(hg, "etl")
    assert [(e["command"]["method"], e["command"]["path"]) for e in cmds] == [
        ("GET", "/api/reports/1"),
        ("POST", "/api/reports"),
        ("PUT", "/api/blobs/etl.bin"),
        ("GET", "/api/blobs/etl.bin"),
        ("DELETE", "/api/blobs/etl.bin"),
        ("GET", "/api/blobs/etl.bin"),
    ]
    assert len({e["session_id"] for e in cmds}) == 1  # one keep-alive connection
    assert all(e["command"]["protocol"] == "http" and e["connection"] == "api" for e in cmds)
    assert cmds[2]["command"]["content_length"] == len(body)
    results = [result_of(hg, e) for e in cmds]
    assert [(r["outcome"], r["status"]) for r in results] == [
        ("accepted", 200),
        ("accepted", 201),
        ("accepted", 200),
        ("accepted", 200),
        ("accepted", 204),
        ("rejected", 404),
    ]
    assert_slices(chunks(hg, cmds[2], "c2s"), body, "c2s")
    assert_slices(chunks(hg, cmds[3], "s2c"), body, "s2c")
    assert results[2]["chunks"]["c2s"] == 3 and results[2]["bytes"]["in"] == len(body)


def test_a_5_mib_download_is_recorded_in_1_mib_slices(hg: HttpGateway) -> None:
    size = 5 * MiB
    got = bytearray()
    with (
        hg.client(token(hg, "reader")) as c,
        c.stream("GET", "/api/blobs/any", params={"size": size}) as r,
    ):
        ok(r)
        for piece in r.iter_bytes():
            got += piece
    assert bytes(got) == pattern_bytes(size)
    (cmd,) = commands(hg, "reader")
    assert cmd["command"]["query"] == [["size", "?"]]  # query values are not recorded
    assert result_of(hg, cmd)["bytes"]["out"] == size
    assert_slices(chunks(hg, cmd, "s2c"), pattern_bytes(size), "s2c")


def test_curl_put_get_delete_with_bearer_and_basic(hg: HttpGateway, tmp_path: Path) -> None:
    tok = token(hg, "curl-user")
    src, dst = tmp_path / "up.bin", tmp_path / "down.bin"
    src.write_bytes(os.urandom(3 * MiB + 17))
    auth = ["-H", f"Authorization: Bearer {tok}"]
    url = hg.url("/api/blobs/curl.bin")
    put = hg.curl("-i", "-f", *auth, "-T", str(src), url)  # curl sends Expect: 100-continue
    RECEIVED.append(put.stdout)
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout.split(b"\r\n\r\n")[-1])["size"] == src.stat().st_size
    get = hg.curl("-f", "-u", f"anyone:{tok}", "-o", str(dst), "-D", "-", url)  # token as password
    RECEIVED.append(get.stdout + dst.read_bytes())
    assert get.returncode == 0, get.stderr
    assert dst.read_bytes() == src.read_bytes()
    gone = hg.curl("-i", *auth, "-X", "DELETE", url)
    RECEIVED.append(gone.stdout)
    assert gone.stdout.startswith(b"HTTP/1.1 204"), gone.stdout
    cmds = commands(hg, "curl-user")
    assert [e["command"]["method"] for e in cmds] == ["PUT", "GET", "DELETE"]
    assert [result_of(hg, e)["status"] for e in cmds] == [200, 200, 204]
    assert_slices(chunks(hg, cmds[0], "c2s"), src.read_bytes(), "c2s")


@pytest.mark.parametrize("kind", ["bearer", "basic", "header"])
def test_the_backend_sees_the_held_credential_never_the_token(hg: HttpGateway, kind: str) -> None:
    """The echo answers carry the held credential back (the API echoes it): they are the
    only answers kept out of the leak check."""
    held = {
        "bearer": ("authorization", f"Bearer {HELD}"),
        "basic": ("authorization", "Basic " + _b64(f"svc:{HELD_PASSWORD}")),
        "header": ("x-api-key", HELD_KEY),
    }[kind]
    conn = "api" if kind == "bearer" else f"api-{kind}"
    tok = token(hg, f"echo-{kind}")
    with hg.client(None, conn) as c:
        for creds in ({"Authorization": f"Bearer {tok}"}, {"Authorization": _basic(tok)}):
            forged = {"X-Api-Key": "forged", "Proxy-Authorization": f"Bearer {tok}"}
            echo = ok(c.get("/api/echo-headers?q=1", headers={**creds, **forged})).json()
            assert echo["auth"] == kind and echo["path"] == "/api/echo-headers"
            headers = [(k.lower(), v) for k, v in echo["headers"]]
            assert not any(tok in v for _, v in headers), headers
            assert headers.count(held) == 1, headers
            assert [k for k, _ in headers].count("authorization") == (kind != "header")
            if kind == "header":  # the client's own X-Api-Key is replaced
                assert ("x-api-key", "forged") not in headers
            assert dict(headers)["host"] == f"127.0.0.1:{hg.api.port}"
    assert [e["connection"] for e in commands(hg, f"echo-{kind}")] == [conn, conn]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _basic(tok: str) -> str:
    return "Basic " + _b64(f"someone:{tok}")


def test_no_token_or_a_wrong_token_is_401_problem_and_auth_fail(hg: HttpGateway) -> None:
    with hg.client(None) as c:
        r = keep(c.get("/api/reports/1"))
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        doc = r.json()
        assert doc["status"] == 401 and "token is required" in doc["detail"]
        bad = keep(c.get("/api/reports/1", headers={"Authorization": "Bearer lgt_nope"}))
        assert bad.status_code == 401 and bad.json()["status"] == 401
    fails: list[dict] = []
    deadline = time.monotonic() + 10  # refusals are recorded as the answer goes out
    while len(fails) < 2 and time.monotonic() < deadline:
        fails = [e for e in hg.entries("auth.fail") if e["connection"] == "api"]
    assert any("token is required" in e["reason"] for e in fails)
    assert any(e["request"] == {"method": "GET", "protocol": "http"} for e in fails)
    assert len(fails) >= 2 and all(e["outcome"] == "refused" for e in fails)


def test_a_revoked_token_is_refused_at_its_next_request(hg: HttpGateway) -> None:
    tok = token(hg, "contractor")
    with hg.client(tok) as c:
        ok(keep(c.get("/api/reports/1")))
        hg.gw.cli("token", "revoke", hg.token_id("contractor"))
        assert hg.wait_for("session.terminated", "contractor")["reason"] == "token revoked"
        r = keep(c.get("/api/reports/2"))
    assert r.status_code == 401 and "revoked" in r.json()["detail"], r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert hg.wait_for("auth.fail", "contractor")["reason"] == "ledgergate: token revoked"
    assert [e["command"]["path"] for e in commands(hg, "contractor")] == ["/api/reports/1"]


@pytest.mark.parametrize("what", ["slow", "big"])
def test_a_download_in_flight_is_cut_when_the_token_is_revoked(hg: HttpGateway, what: str) -> None:
    who = f"cut-{what}"
    tok = token(hg, who)
    path, params = (
        ("/api/slow", {"seconds": 60}) if what == "slow" else ("/api/blobs/b", {"size": 1 << 30})
    )
    got, errors, started = bytearray(), [], threading.Event()

    def download() -> None:
        try:
            with hg.client(tok) as c, c.stream("GET", path, params=params) as r:
                started.set()
                for piece in r.iter_bytes():
                    got.extend(piece)
                    time.sleep(0.01)
        except httpx.HTTPError as e:
            errors.append(e)
        finally:
            started.set()

    t = threading.Thread(target=download)
    t.start()
    assert started.wait(10)
    time.sleep(1.0)
    t0 = time.monotonic()
    hg.gw.cli("token", "revoke", hg.token_id(who))
    t.join(30)
    assert not t.is_alive() and time.monotonic() - t0 < 15
    assert errors, "the download should have been cut"
    assert len(got) < (1 << 30)
    assert hg.wait_for("session.terminated", who)["reason"] == "token revoked"
    (cmd,) = commands(hg, who)
    res = result_of(hg, cmd)
    assert res["outcome"] == "cut" and "revoked" in res["reason"]
    if what == "big":  # the slices that passed are on the ledger, in order, before the cut
        sent = chunks(hg, cmd, "s2c")
        assert sent and [e["chunk"]["seq"] for e in sent] == list(range(1, len(sent) + 1))
        assert_slices(sent, pattern_bytes(len(sent) * MiB), "s2c")


def test_a_streamed_answer_reaches_the_client_as_it_is_produced(hg: HttpGateway) -> None:
    with hg.client(token(hg, "tail")) as c:
        t0 = time.monotonic()
        with c.stream("GET", "/api/slow", params={"seconds": 3}) as r:
            pieces = r.iter_bytes()
            first = next(pieces)
            took = time.monotonic() - t0
            rest = b"".join(pieces)
    assert first.startswith(b".") and len(first + rest) == 30
    assert took < 1.5, f"the first byte took {took:.1f} s of a 3 s answer"


def test_an_allow_rule_refuses_what_it_does_not_list(hg: HttpGateway, tmp_path: Path) -> None:
    tok = token(hg, "analyst", "--group", "analysts")
    with hg.client(tok) as c:
        ok(keep(c.get("/api/reports/1")))
        r = keep(c.post("/api/reports", json={"title": "sneaky"}))
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
        doc = r.json()
        assert doc["status"] == 403 and RULE in doc["detail"], doc
        assert keep(c.get("/api/blobs/x", params={"size": 1})).status_code == 403
        assert ok(keep(c.get("/api/reports/1"))).json()["id"] == 1  # the connection still works
    with httpx.Client(base_url=hg.api.url, headers=hg.api.auth_headers()) as direct:
        titles = [
            r.get("body", r).get("title") for r in direct.get("/api/reports").json()["reports"]
        ]
    assert "sneaky" not in titles  # the backend never saw the POST
    # curl holds a big body back (Expect: 100-continue): refused at once, body never sent
    (tmp_path / "up").write_bytes(os.urandom(3 * MiB))
    t0 = time.monotonic()
    put = hg.curl(
        "-i",
        "-H",
        f"Authorization: Bearer {tok}",
        "-T",
        str(tmp_path / "up"),
        hg.url("/api/blobs/held-back"),
    )
    RECEIVED.append(put.stdout)
    assert put.stdout.startswith(b"HTTP/1.1 403") and RULE.encode() in put.stdout, put
    assert time.monotonic() - t0 < 5
    blocks = hg.of("decision.block", "analyst")
    assert [(b["command"]["method"], b["command"]["path"]) for b in blocks] == [
        ("POST", "/api/reports"),
        ("GET", "/api/blobs/x"),
        ("PUT", "/api/blobs/held-back"),
    ]
    assert all(b["decision"]["rule"] == RULE and b["outcome"] == "refused" for b in blocks)
    assert [e["command"]["path"] for e in commands(hg, "analyst")] == ["/api/reports/1"] * 2


def test_zz_ledger_verifies_and_no_secret_leaks(hg: HttpGateway, tmp_path: Path) -> None:
    """Runs last: everything the module did through this gateway is checked."""
    assert len(RECEIVED) > 15 and len(TOKENS) > 5
    hg.indexed()
    # stopped first: the export of a running gateway can miss its newest entries (the
    # stream-state row it stops at is written at checkpoints; see issue 17)
    hg.gw.stop()
    r = hg.gw.cli("audit", "verify", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    entries = hg.canonical()
    out = tmp_path / "export.jsonl"
    hg.gw.cli("audit", "export", "--format", "jsonl", "-o", str(out))
    exported, logs = out.read_text(), hg.gw.logs()
    lines = [json.loads(line) for line in exported.splitlines()]
    kinds = [json.loads(d["entry"])["kind"] for d in lines if d["type"] == "entry"]
    assert len(kinds) > 100 and "chunk" in kinds and "decision.block" in kinds
    for held in SECRETS:
        assert not [b for b in RECEIVED if held.encode() in b], "a client got a held credential"
        assert _b64(f"svc:{held}") not in "".join(map(repr, RECEIVED))
    for where, text in (("log", logs), ("export", exported), ("ledger", "\n".join(entries))):
        assert not [h for h in SECRETS if h in text], f"a held credential is in the {where}"
        assert _b64(f"svc:{HELD_PASSWORD}") not in text
        assert not [t for t in TOKENS if t in text], f"a client token is in the {where}"
