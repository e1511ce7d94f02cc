"""Malformed, oversized, slow and misdirected requests against the HTTP listener, sent
over raw sockets (a plaintext listener, ``allow_plaintext: true``, to see every byte).

Each gets a clear answer (a status and a body saying why) or a close, the ledger
records the attempt (``session.reject`` for what fails before a request is admitted),
the backend never receives a whole request the gateway refused, and the gateway goes on
serving: every test ends with a normal request through the same gateway.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.integration.httpapi import HttpApi
from tests.integration.httpgw import HttpGateway

MiB = 1 << 20
HEADER_TIMEOUT = 1.5
_tok: dict[str, str] = {}


@pytest.fixture(scope="module")
def hg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpGateway]:
    with HttpApi() as api:
        g = HttpGateway(
            tmp_path_factory.mktemp("httpbad"),
            api,
            tls=False,
            listener={"allow_plaintext": True, "header_timeout": HEADER_TIMEOUT},
        ).start()
        try:
            _tok["t"] = g.token("prober", "service", "1h")
            yield g
        finally:
            g.stop()


def auth() -> bytes:
    return f"Authorization: Bearer {_tok['t']}\r\n".encode()


@dataclass
class Reply:
    status: int | None
    headers: dict[str, str]
    body: bytes
    closed: bool  # the gateway closed the connection after its answer


def read_reply(s: socket.socket, buf: bytearray, timeout: float = 10.0) -> Reply:
    """One answer from ``s`` (``buf``: bytes already read, consumed as parsed)."""
    s.settimeout(timeout)
    closed = False
    while b"\r\n\r\n" not in buf and not closed:
        data = s.recv(65536)
        closed = not data
        buf += data
    if b"\r\n\r\n" not in buf:
        return Reply(None, {}, bytes(buf), True)
    head, _, _ = bytes(buf).partition(b"\r\n\r\n")
    del buf[: len(head) + 4]
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(buf) < length and not closed:
        data = s.recv(65536)
        closed = not data
        buf += data
    body = bytes(buf[:length])
    del buf[:length]
    return Reply(int(lines[0].split()[1]), headers, body, closed)


def send(
    hg: HttpGateway,
    *parts: bytes,
    pause: float = 0.0,
    then_close: bool = False,
    probe: float = 0.5,
) -> Reply | None:
    """Send ``parts`` (``pause`` seconds apart) on a new connection and read one answer;
    ``closed`` says whether the gateway then closed the connection (within ``probe`` s)."""
    with socket.create_connection(("127.0.0.1", hg.http_port)) as s:
        try:
            for i, part in enumerate(parts):
                if i and pause:
                    time.sleep(pause)
                s.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway answered and closed before the end: read its answer
        if then_close:
            return None
        buf = bytearray()
        r = read_reply(s, buf)
        if not r.closed and probe:
            s.settimeout(probe)
            with contextlib.suppress(TimeoutError):
                r.closed = s.recv(1) == b""
        return r


def eventually(find: Callable[[], list[dict[str, Any]]], timeout: float = 10.0) -> dict:
    """The last entry ``find`` returns, once it returns one (refusals are recorded as
    the answer goes out, not before)."""
    deadline = time.monotonic() + timeout
    while True:
        got = find()
        if got or time.monotonic() > deadline:
            assert got, "no such ledger entry"
            return got[-1]
        time.sleep(0.05)


def rejected(hg: HttpGateway, why: str) -> dict:
    return eventually(lambda: [e for e in hg.entries("session.reject") if why in e["reason"]])


def healthy(hg: HttpGateway) -> None:
    """A normal request through the same gateway still works."""
    r = send(hg, b"GET /api/api/reports/1 HTTP/1.1\r\nHost: gw\r\n" + auth() + b"\r\n", probe=0)
    assert r is not None and r.status == 200 and json.loads(r.body)["id"] == 1, r


def backend_blob(hg: HttpGateway, name: str) -> int:
    """The status of GET /api/blobs/<name> at the backend itself."""
    api: HttpApi = hg.api
    return httpx.get(f"{api.url}/api/blobs/{name}", headers=api.auth_headers()).status_code


def assert_refused(r: Reply | None, status: int, why: str) -> None:
    assert r is not None and r.status == status, r
    assert why.encode() in r.body and r.body.startswith(b"ledgergate: "), r.body
    assert r.closed and r.headers.get("connection") == "close"


HEAD_CASES = {
    "length-and-chunked": (
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "both Content-Length and Transfer-Encoding",
    ),
    "two-lengths": (b"Content-Length: 4\r\nContent-Length: 5\r\n\r\n{}{}", "Content-Length"),
    "obs-fold": (b"X-Note: one\r\n two\r\n\r\n", "obsolete line folding"),
    "two-hosts": (b"Host: other\r\n\r\n", "multiple Host"),
}


@pytest.mark.parametrize("case", list(HEAD_CASES))
def test_smuggling_shapes_are_refused_before_admission(hg: HttpGateway, case: str) -> None:
    tail, why = HEAD_CASES[case]
    name = f"smuggle-{case}"
    head = f"POST /api/api/blobs/{name} HTTP/1.1\r\nHost: gw\r\n".encode() + auth()
    r = send(hg, head + tail)
    assert_refused(r, 400, why)
    assert rejected(hg, why)["status"] == 400
    assert not [e for e in hg.entries("command") if name in e["command"].get("path", "")]
    healthy(hg)


def big_head(size: int) -> bytes:
    return (
        b"GET /api/api/reports/1 HTTP/1.1\r\nHost: gw\r\n"
        + auth()
        + b"X-Big: "
        + b"a" * size
        + b"\r\n\r\n"
    )


def test_an_oversized_head_sent_in_pieces_is_431(hg: HttpGateway) -> None:
    data = big_head(100 * 1024)
    r = send(hg, *(data[i : i + 16384] for i in range(0, len(data), 16384)), pause=0.05)
    assert r is not None and r.status == 431 and r.closed, r
    assert rejected(hg, "Receive buffer too long")["status"] == 431
    healthy(hg)


def test_an_oversized_head_sent_at_once_is_refused(hg: HttpGateway) -> None:
    data = big_head(100 * 1024)
    before = len(hg.entries("command"))
    r = send(hg, data[: 60 * 1024], data[60 * 1024 :], pause=0.3)
    assert len(hg.entries("command")) == before, "the oversized head went to the backend"
    assert r is not None and r.status in (400, 431), r
    assert r.body.startswith(b"ledgergate: "), r.body
    healthy(hg)


def test_an_invalid_chunk_size_is_refused_and_nothing_is_stored(hg: HttpGateway) -> None:
    head = b"PUT /api/api/blobs/badchunk HTTP/1.1\r\nHost: gw\r\n" + auth()
    r = send(hg, head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n")
    assert r is not None and r.status == 400 and r.closed, r
    assert r.headers["content-type"] == "application/problem+json"
    assert "chunk" in json.loads(r.body)["detail"]
    res = eventually(
        lambda: [
            e
            for e in hg.entries("command.result")
            if e["outcome"] == "refused" and "chunk" in e["error"]["message"]
        ]
    )
    assert res["error"]["code"] == "IncompleteBody"
    assert backend_blob(hg, "badchunk") == 404
    good = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"  # the same, well formed, is stored
    ok = send(
        hg, head.replace(b"badchunk", b"goodchunk") + b"Transfer-Encoding: chunked\r\n\r\n" + good
    )
    assert ok is not None and ok.status == 200 and json.loads(ok.body)["size"] == 11, ok
    healthy(hg)


def test_a_truncated_body_never_reaches_the_backend_whole(hg: HttpGateway) -> None:
    name = f"trunc-{secrets.token_hex(4)}"
    head = f"PUT /api/api/blobs/{name} HTTP/1.1\r\nHost: gw\r\nContent-Length: {4 * MiB}\r\n"
    assert (
        send(hg, head.encode() + auth() + b"\r\n", b"x" * (5 * MiB // 2), then_close=True) is None
    )
    res = eventually(
        lambda: [
            e
            for e in hg.entries("command.result")
            if e["outcome"] == "refused" and "expected 4194304" in e["error"]["message"]
        ]
    )
    assert res["error"]["code"] == "IncompleteBody" and res["chunks"]["c2s"] == 2
    assert backend_blob(hg, name) == 404
    healthy(hg)


def test_half_a_request_line_gets_408_within_the_header_timeout(hg: HttpGateway) -> None:
    t0 = time.monotonic()
    r = send(hg, b"GET /api/api/rep")
    took = time.monotonic() - t0
    assert_refused(r, 408, "not sent in time")
    assert HEADER_TIMEOUT - 0.2 <= took <= HEADER_TIMEOUT + 2.0, took
    assert rejected(hg, "not sent in time")["status"] == 408
    healthy(hg)


def test_a_head_dripped_byte_by_byte_is_cut_at_the_header_timeout(hg: HttpGateway) -> None:
    with socket.create_connection(("127.0.0.1", hg.http_port)) as s:
        s.sendall(b"GET /api/api/reports/1 HTTP/1.1\r\nHost: gw\r\nX-Drip: ")
        t0, answer = time.monotonic(), None
        s.settimeout(0.4)
        while time.monotonic() - t0 < HEADER_TIMEOUT + 2.5:
            try:
                s.sendall(b"a")
                answer = s.recv(4096)
                break
            except TimeoutError:
                continue
            except OSError:
                answer = b""
                break
        took = time.monotonic() - t0
    assert answer is not None, f"still reading the head after {took:.1f} s"
    assert took <= HEADER_TIMEOUT + 2.0, took
    healthy(hg)


def test_obs_fold_in_a_pipelined_request_is_refused(hg: HttpGateway) -> None:
    first = b"GET /api/api/reports/1 HTTP/1.1\r\nHost: gw\r\n" + auth() + b"\r\n"
    second = b"GET /api/api/reports/2 HTTP/1.1\r\nHost: gw\r\n" + auth() + b"X-A: b\r\n c\r\n\r\n"
    with socket.create_connection(("127.0.0.1", hg.http_port)) as s:
        s.sendall(first + second)
        buf = bytearray()
        assert read_reply(s, buf).status == 200
        r = read_reply(s, buf)
    assert r.status == 400 and b"folding" in r.body, r
    healthy(hg)


@pytest.mark.parametrize("token", [True, False])
def test_an_unknown_connection_is_a_404_problem(hg: HttpGateway, token: bool) -> None:
    r = send(
        hg, b"GET /nope/api/reports HTTP/1.1\r\nHost: gw\r\n" + (auth() if token else b"") + b"\r\n"
    )
    assert r is not None and r.status == 404 and not r.closed, r
    assert r.headers["content-type"] == "application/problem+json"
    doc = json.loads(r.body)
    assert doc["status"] == 404 and "'nope'" in doc["detail"], doc
    healthy(hg)


def test_an_unknown_connection_attempt_is_on_the_ledger(hg: HttpGateway) -> None:
    r = send(hg, b"GET /secret-db/x HTTP/1.1\r\nHost: gw\r\n" + auth() + b"\r\n", probe=0)
    assert r is not None and r.status == 404
    eventually(lambda: [e for e in hg.entries() if "secret-db" in json.dumps(e)], timeout=3)
    healthy(hg)


def signed(hg: HttpGateway, key: tuple[str, str], target: str) -> Reply | None:
    """GET ``target`` signed with SigV4 by botocore, as an S3 client would."""
    url = f"{hg.endpoint}{target}"
    req = AWSRequest(method="GET", url=url, headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    SigV4Auth(Credentials(*key), "s3", "us-east-1").add_auth(req)
    head = f"GET {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
    return send(hg, head.encode() + (b"" if "Host" in req.headers else b"Host: gw\r\n") + b"\r\n")


def test_an_s3_request_without_an_s3_connection_gets_an_s3_error(hg: HttpGateway) -> None:
    r = signed(hg, ("LGAAAAAAAAAAAAAAAAAA", "s" * 40), "/bucket/key.txt")
    assert r is not None and r.status == 403 and r.headers["content-type"] == "application/xml"
    assert b"<Code>InvalidAccessKeyId</Code>" in r.body, r.body
    out = hg.gw.cli(
        "token", "create", "--identity", "s3-user", "--kind", "service", "--ttl", "1h", "--s3"
    )
    lines = dict(ln.split("=", 1) for ln in out.stdout.split() if "=" in ln)
    key = (lines["AWS_ACCESS_KEY_ID"], lines["AWS_SECRET_ACCESS_KEY"])
    r = signed(hg, key, "/bucket/key.txt")
    assert r is not None and r.status == 400 and b"<Code>InvalidRequest</Code>" in r.body, r
    assert b"S3 connection" in r.body, r.body
    fail = eventually(lambda: hg.of("auth.fail", "s3-user"))
    assert fail["error"] == "InvalidRequest" and fail["request"]["protocol"] == "s3"
    assert key[1] not in hg.gw.logs() and not any(key[1] in e for e in hg.canonical())
    healthy(hg)


def test_zz_the_gateway_still_serves_and_the_ledger_verifies(hg: HttpGateway) -> None:
    healthy(hg)
    with hg.client(_tok["t"]) as c:
        assert c.get("/api/reports/2").json()["id"] == 2
    r = hg.gw.cli("audit", "verify", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in hg.gw.logs()
