"""Authentication, bad input, tamper evidence, secret leaks and crash durability,
against a real gateway process and a real PostgreSQL."""

from __future__ import annotations

import json
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from ledgergate.services.restart import ORPHAN_OUTCOME
from tests.integration.fixtures import GatewayFactory, app_connection
from tests.integration.gateway import Gateway, free_port
from tests.integration.pgcluster import PgCluster


def entries(gw: Gateway, kind: str | None = None, settle: bool = True) -> list[dict]:
    if settle:
        gw.settle()
    db = gw.db()
    rows = db.execute("SELECT canonical FROM ledger_entries ORDER BY stream, seq").fetchall()
    docs = [json.loads(r[0]) for r in rows]
    return [d for d in docs if kind is None or d["kind"] == kind]


def raw_startup(port: int, payload: bytes, read: bool = True, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        if not read:
            return b""
        chunks = []
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                chunks.append(d)
        except TimeoutError:
            pass
        return b"".join(chunks)


def startup_packet(params: dict[str, str]) -> bytes:
    body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return struct.pack("!II", 8 + len(body), 196608) + body


def raw_login(port: int, tok: str) -> ssl.SSLSocket:
    """A TLS login by hand; returns the socket after ReadyForQuery."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(struct.pack("!II", 8, 80877103))
    assert s.recv(1) == b"S"
    t = ctx.wrap_socket(s)
    t.sendall(startup_packet({"user": "alice", "database": "app"}))
    assert t.recv(9)[:1] == b"R"
    pw = tok.encode() + b"\0"
    t.sendall(b"p" + struct.pack("!I", len(pw) + 4) + pw)
    buf = b""
    while b"Z\x00\x00\x00\x05I" not in buf:
        d = t.recv(65536)
        assert d, buf
        buf += d
    return t


def read_all(t: ssl.SSLSocket) -> bytes:
    out = b""
    try:
        while d := t.recv(65536):
            out += d
    except (TimeoutError, ssl.SSLError, ConnectionError):
        pass
    return out


def still_serves(gw: Gateway, tok: str) -> None:
    with psycopg.connect(gw.dsn(tok)) as c:
        assert c.execute("SELECT 7").fetchone() == (7,)


def test_wrong_expired_revoked_tokens(gateway: Gateway) -> None:
    good = gateway.token()
    for bad in ("nope", "lgt_" + "A" * 43):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(gateway.dsn(bad))
    short = gateway.token(ttl="1s")
    time.sleep(1.5)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(gateway.dsn(short))
    victim = gateway.token("bob")
    listing = json.loads(gateway.cli("token", "list", "--json").stdout)
    tid = next(t["id"] for t in listing if t["identity"] == "bob")
    still_serves(gateway, victim)
    gateway.cli("token", "revoke", tid)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(gateway.dsn(victim, user="bob"))
    reasons = [e["reason"] for e in entries(gateway, "auth.fail")]
    assert (
        reasons.count("unknown token") == 2
        and "token expired" in reasons
        and "token revoked" in reasons
    )
    assert [e["kind"] for e in entries(gateway) if e["kind"] == "token.revoked"]
    still_serves(gateway, good)


def test_tls_required_unless_allowed(gateway: Gateway) -> None:
    tok = gateway.token()
    with pytest.raises(psycopg.OperationalError, match="requires TLS"):
        psycopg.connect(gateway.dsn(tok, sslmode="disable"))
    with psycopg.connect(gateway.dsn(tok)) as c:
        assert c.info.pgconn.ssl_in_use


def test_bad_input_gets_a_clear_error_and_others_keep_working(
    gateway_factory: GatewayFactory,
) -> None:
    gw: Gateway = gateway_factory(handshake_timeout=1.0).start()
    tok = gw.token()
    # garbage bytes
    out = raw_startup(gw.port, b"\x00\x00\x00\x09GARBAGE!" * 3)
    assert b"08P01" in out and b"unsupported frontend protocol" in out
    # absurd length field
    out = raw_startup(gw.port, struct.pack("!I", 0x7FFFFFFF) + b"xxxx")
    assert b"invalid startup packet length" in out
    # oversized startup packet
    big = startup_packet({"user": "a", "database": "app", "options": "x" * 20000})
    out = raw_startup(gw.port, big)
    assert b"invalid startup packet length" in out
    # unknown connection
    with pytest.raises(psycopg.OperationalError, match='no connection named "nosuch"'):
        psycopg.connect(gw.dsn(tok, connection="nosuch"))
    # a client that never finishes its handshake
    t0 = time.monotonic()
    out = raw_startup(gw.port, struct.pack("!I", 40) + b"\x00\x03", timeout=10)
    assert b"took too long" in out and time.monotonic() - t0 < 8
    # protocol garbage after a good login: an unknown message type
    with raw_login(gw.port, tok) as t:
        t.sendall(b"\xff" + struct.pack("!I", 8) + b"junk")
        got = read_all(t)
    assert b"08P01" in got and b"invalid frontend message" in got
    still_serves(gw, tok)
    reasons = [e["reason"] for e in entries(gw, "session.reject")]
    assert any("invalid startup packet length" in r for r in reasons)
    assert any("handshake timed out" in r for r in reasons)
    assert any("no connection named" in r for r in reasons)


def test_backend_down_names_the_connection_without_secrets(
    gateway_factory: GatewayFactory, pgc: PgCluster
) -> None:
    down = app_connection(pgc, name="down", address=f"127.0.0.1:{free_port()}")
    gw: Gateway = gateway_factory([app_connection(pgc), down]).start()
    tok = gw.token()
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(gw.dsn(tok, connection="down"))
    msg = str(ei.value)
    assert 'connection "down" is unavailable' in msg and pgc.password not in msg
    assert "Traceback" not in gw.logs()
    still_serves(gw, tok)


def test_backend_refuses_credential_and_backend_dies_mid_stream(
    gateway_factory: GatewayFactory, pgc: PgCluster
) -> None:
    wrong = app_connection(
        pgc, name="wrong", credentials={"user": "postgres", "password": "not-it"}
    )
    gw: Gateway = gateway_factory([app_connection(pgc), wrong]).start()
    tok = gw.token()
    with pytest.raises(
        psycopg.OperationalError, match="could not authenticate to the backend"
    ) as ei:
        psycopg.connect(gw.dsn(tok, connection="wrong"))
    assert "not-it" not in str(ei.value)
    with psycopg.connect(gw.dsn(tok), autocommit=True) as victim:
        pid = victim.info.backend_pid
        with psycopg.connect(pgc.dsn(dbname="app"), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
    still_serves(gw, tok)


def test_client_vanishes_mid_result(gateway: Gateway) -> None:
    tok = gateway.token()
    t = raw_login(gateway.port, tok)
    q = b"SELECT g, repeat('x', 200) FROM generate_series(1, 2000000) g\0"
    t.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
    assert len(t.recv(65536)) > 0  # the result is streaming
    t.close()  # vanish without Terminate
    time.sleep(1.0)
    still_serves(gateway, tok)
    closes = entries(gateway, "session.close")
    assert any(c["outcome"] == "client disconnected" for c in closes)


def test_leak_backend_password_appears_nowhere(
    gateway: Gateway, pgc: PgCluster, tmp_path: Path
) -> None:
    tok = gateway.token()
    seen = bytearray()
    with psycopg.connect(gateway.dsn(tok), autocommit=True) as c:
        for q in ("SELECT current_user", "SELECT * FROM pg_settings LIMIT 5", "SELECT 1/0"):
            try:
                seen += repr(c.execute(q).fetchall()).encode()
            except psycopg.Error as e:
                seen += str(e).encode()
    for bad in ("x", tok + "x"):
        try:
            psycopg.connect(gateway.dsn(bad))
        except psycopg.OperationalError as e:
            seen += str(e).encode()
    # raw client bytes of a full login through TLS, and of a query
    with raw_login(gateway.port, tok) as t:
        q = b"SELECT current_setting('server_version')\0"
        t.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q + b"X\0\0\0\4")
        seen += read_all(t)
    export = tmp_path / "bundle.jsonl"
    gateway.cli("audit", "export", "-o", str(export))
    gateway.stop()
    secret = pgc.password.encode()
    assert secret not in seen
    for f in gateway.data_dir.rglob("*"):
        if f.is_file():
            assert secret not in f.read_bytes(), f
    assert secret not in export.read_bytes()
    assert secret not in gateway.log_path.read_bytes()
    assert tok.encode() not in gateway.store_bytes()


def _tamper(gw: Gateway, sql: str, *args: object) -> subprocess.CompletedProcess[str]:
    db = gw.db()
    db.execute(sql, args)
    db.commit()
    db.close()
    return gw.cli("audit", "verify", check=False)


@pytest.mark.parametrize(
    "how", ["change", "delete", "reorder", "truncate", "truncate-with-checkpoints"]
)
def test_tampering_is_caught(gateway: Gateway, how: str) -> None:
    tok = gateway.token()
    with psycopg.connect(gateway.dsn(tok)) as c:
        for i in range(30):
            c.execute("SELECT %s::int", (i,))
    gateway.stop()
    assert gateway.cli("audit", "verify").returncode == 0
    stream = "gateway@test-gw"
    db = gateway.db()
    n = db.execute("SELECT count(*) FROM ledger_entries WHERE stream=?", (stream,)).fetchone()[0]
    db.close()
    target = n // 2
    if how == "change":
        with gateway.db() as db:
            seq, data = db.execute(
                "SELECT seq, canonical FROM ledger_entries WHERE stream=? AND seq>=? "
                "AND kind='chunk' ORDER BY seq LIMIT 1",
                (stream, target),
            ).fetchone()
        edited = bytes(data).replace(b"forwarded", b"forwardeD")
        assert edited != bytes(data)
        with gateway.db() as db:
            db.set_entry(stream, seq, edited)
            db.commit()
        r = gateway.cli("audit", "verify", check=False)
        assert r.returncode == 1 and "changed" in r.stdout
    elif how == "delete":
        with gateway.db() as db:
            db.delete_entries(stream, target, target)
            db.commit()
        r = gateway.cli("audit", "verify", check=False)
        assert r.returncode == 1 and "removed" in r.stdout and f"entry {target}" in r.stdout
    elif how == "reorder":
        db = gateway.db()
        a, b = (
            db.execute(
                "SELECT canonical, entry_hash FROM ledger_entries WHERE stream=? AND seq=?",
                (stream, s),
            ).fetchone()
            for s in (target, target + 1)
        )
        db.set_entry(stream, target, *b)
        db.set_entry(stream, target + 1, *a)
        db.commit()
        r = gateway.cli("audit", "verify", check=False)
        assert r.returncode == 1 and "reordered" in r.stdout and f"entry {target}" in r.stdout
    elif how == "truncate":
        with gateway.db() as db:
            db.delete_entries(stream, n - 3)
            db.commit()
        r = gateway.cli("audit", "verify", check=False)
        assert r.returncode == 1 and "truncated" in r.stdout
    else:
        db = gateway.db()
        db.delete_entries(stream, n - 3)
        db.execute("DELETE FROM checkpoints WHERE stream=? AND size>?", (stream, n - 3))
        db.commit()
        r = gateway.cli("audit", "verify", check=False)
        assert r.returncode == 1 and "truncated" in r.stdout


def test_export_verify_and_offline_proofs(gateway: Gateway, tmp_path: Path) -> None:
    tok = gateway.token()
    with psycopg.connect(gateway.dsn(tok)) as c:
        c.execute("SELECT 1")
    gateway.stop()
    bundle = tmp_path / "b.jsonl"
    gateway.cli("audit", "export", "-o", str(bundle))
    vkey = str(gateway.data_dir / "keys" / "ledger.ed25519.pub")
    assert gateway.cli("audit", "verify", "--bundle", str(bundle), "--key", vkey).returncode == 0
    lines = bundle.read_text().splitlines()
    doc = json.loads(lines[3])
    doc["entry"] = doc["entry"].replace('"ts_ns":', '"ts_ns":1')
    lines[3] = json.dumps(doc)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    r = gateway.cli("audit", "verify", "--bundle", str(bad), "--key", vkey, check=False)
    assert r.returncode == 1 and "changed" in r.stdout
    proof = tmp_path / "p.json"
    gateway.cli("audit", "prove", "gateway@test-gw:2", "-o", str(proof))
    ok = gateway.cli("audit", "verify-proof", str(proof), "--key", vkey)
    assert "is included in the tree of size" in ok.stdout and ok.returncode == 0
    p = json.loads(proof.read_text())
    p["entry"] = p["entry"].replace("session", "sessiom")
    proof.write_text(json.dumps(p))
    assert (
        gateway.cli("audit", "verify-proof", str(proof), "--key", vkey, check=False).returncode == 1
    )


def _insert_then_kill9(gateway: Gateway, pgc: PgCluster, tok: str, tag: str) -> tuple[str, int]:
    """Four pgbench clients INSERT through the gateway until it is killed with SIGKILL;
    returns the statement text as recorded and how many the backend executed."""
    marker = f"crash_{tag}_{int(time.time() * 1000)}"
    with psycopg.connect(gateway.dsn(tok), autocommit=True) as c:
        c.execute(f"CREATE TABLE IF NOT EXISTS {marker} (i int)")
    proc = subprocess.Popen(
        [
            *("pgbench", "-n", "-c", "4", "-T", "30", "-h", "127.0.0.1", "-p", str(gateway.port)),
            *("-U", "alice", "-f", "/dev/stdin", "app"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PGPASSWORD": tok, "PGSSLMODE": "require", "PATH": "/usr/bin:/bin"},
    )
    assert proc.stdin is not None
    proc.stdin.write(f"\\set v random(1, 1000000)\nINSERT INTO {marker} VALUES (:v);\n".encode())
    proc.stdin.close()
    time.sleep(2.0)
    gateway.kill9()
    proc.wait(30)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()
    executed = [s for s in pgc.statement_log() if marker in s and s.startswith("INSERT")]
    assert len(executed) > 50
    return f"INSERT INTO {marker} VALUES (?)", len(executed)


def _recorded(gateway: Gateway, text: str) -> int:
    return sum(1 for e in entries(gateway, "command", settle=False) if e["command"]["text"] == text)


def test_kill9_mid_workload_loses_no_executed_statement(gateway: Gateway, pgc: PgCluster) -> None:
    """Every statement the backend executed is on the ledger after a kill -9, whether the
    next gateway start or an auditor's CLI is first to bring the store up to date."""
    tok = gateway.token()
    # 1. The gateway restarts and replays its journal before it serves.
    text, executed = _insert_then_kill9(gateway, pgc, tok, "restart")
    gateway.start()
    with psycopg.connect(gateway.dsn(tok)) as c:
        c.execute("SELECT 1")
    gateway.stop()
    assert _recorded(gateway, text) >= executed
    assert "recovered from its journal" in gateway.logs()
    gateway.start()
    # 2. No restart: `audit verify` brings what the dead gateway journaled into the store.
    text, executed = _insert_then_kill9(gateway, pgc, tok, "cli")
    r = gateway.cli("audit", "verify", check=False)
    assert r.returncode == 0, r.stdout
    assert _recorded(gateway, text) >= executed
    gateway.start()
    with psycopg.connect(gateway.dsn(tok)) as c:
        c.execute("SELECT 1")
    gateway.stop()
    r = gateway.cli("audit", "verify", check=False)
    assert r.returncode == 0, r.stdout
    assert not list((gateway.data_dir / "journal").glob("*/*.lgj"))


def test_sessions_a_killed_gateway_left_open_are_closed_at_its_restart(
    gateway: Gateway,
) -> None:
    tok = gateway.token()
    held = psycopg.connect(gateway.dsn(tok), autocommit=True)
    held.execute("SELECT 1")
    done = psycopg.connect(gateway.dsn(tok), autocommit=True)
    done.execute("SELECT 2")
    done.close()
    gateway.indexed()
    gateway.kill9()
    held.close()
    gateway.start()
    deadline = time.monotonic() + 15
    while True:
        rows = json.loads(gateway.cli("sessions", "list", "--json").stdout)
        if all(r["closed_ns"] is not None for r in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(rows) == 2 and all(r["closed_ns"] is not None for r in rows), rows
    outcomes = sorted(str(r["outcome"]) for r in rows)
    assert outcomes[1] == ORPHAN_OUTCOME and outcomes[0] != ORPHAN_OUTCOME
    closes = [e for e in entries(gateway, "session.close", settle=False) if e.get("ended_by")]
    assert len(closes) == 1 and closes[0]["identity"]["subject"] == "alice"
    # a second start finds nothing more to close
    gateway.stop()
    gateway.start()
    gateway.stop()
    assert (
        len([e for e in entries(gateway, "session.close", settle=False) if e.get("ended_by")]) == 1
    )
    assert gateway.cli("audit", "verify").returncode == 0
