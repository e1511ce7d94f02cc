"""Sessions live only while their identity is valid: grants decide who connects, and a
session ends (with a FATAL error the client prints and a ``session.terminated`` entry)
when its token expires, is revoked, its identity is disabled or the connection's maximum
session length is reached, also in the middle of a streaming result."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import psycopg
import pytest

from tests.integration.fixtures import GatewayFactory, app_connection
from tests.integration.gateway import Gateway
from tests.integration.pgcluster import PgCluster
from tests.integration.test_pg_security import entries

# A result that streams for as long as anyone reads it. generate_series in the target
# list streams row by row; in FROM it would be materialised before the first row.
ENDLESS_COPY = "COPY (SELECT generate_series(1, 2000000000), repeat('x', 200)) TO STDOUT"


@pytest.fixture
def guarded(gateway_factory: GatewayFactory, pgc: PgCluster) -> Gateway:
    return gateway_factory(
        [app_connection(pgc), app_connection(pgc, name="short", max_session="2s")],
        extra={
            "grants": [
                {"connections": ["app", "short"], "groups": ["eng"]},
                {"connections": ["*"], "identities": ["ci-bot"]},
            ],
        },
    ).start()


def _stream(gw: Gateway, token: str, connection: str = "app") -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["psql", "-X", "-q", "-c", ENDLESS_COPY, gw.dsn(token, connection)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ended(p: subprocess.Popen[str], within: float) -> tuple[float, str]:
    t0 = time.monotonic()
    try:
        _, err = p.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail(f"the stream was not cut within {within} s")
    return time.monotonic() - t0, err


def _token_id(gw: Gateway, identity: str) -> str:
    rows = json.loads(gw.cli("token", "list", "--identity", identity, "--json").stdout)
    return str(rows[-1]["id"])


def _terminated(gw: Gateway) -> list[dict]:
    return entries(gw, "session.terminated")


def _streamed_then_cut(gw: Gateway, token: str, cut: Callable[[], None], reason: str) -> None:
    p = _stream(gw, token)
    time.sleep(1.5)  # rows are flowing
    assert p.poll() is None, p.stderr.read() if p.stderr else ""
    cut()
    took, err = _ended(p, within=8)
    assert f"session ended: {reason}" in err
    assert took < 5, took  # the epoch poll is 1 s; nowhere near the 30 s re-check
    term = _terminated(gw)
    assert [t["reason"] for t in term] == [reason]
    sid = term[0]["session_id"]
    chunks = [e for e in entries(gw, "chunk") if e["session_id"] == sid]
    assert len(chunks) > 10  # the stream was recorded up to the cut
    close = [e for e in entries(gw, "session.close") if e["session_id"] == sid]
    assert close and close[0]["outcome"] == f"terminated: {reason}"
    assert gw.cli("audit", "verify", check=False).returncode == 0


def test_connect_without_a_grant_is_denied_and_recorded(guarded: Gateway) -> None:
    tok = guarded.token("mallory")
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(guarded.dsn(tok))
    assert 'identity "mallory" may not use connection "app": no grant' in str(e.value)
    denied = entries(guarded, "auth.denied")
    assert len(denied) == 1 and denied[0]["identity"]["subject"] == "mallory"
    assert (
        denied[0]["connection"] == "app" and denied[0]["reason"] == "no grant for this connection"
    )
    # a token limited to one connection cannot be used on another, grant or not
    scoped = guarded.token("ci-bot", "service", "1h", "--connection", "short")
    with pytest.raises(psycopg.OperationalError, match="not valid for this connection"):
        psycopg.connect(guarded.dsn(scoped))
    with psycopg.connect(guarded.dsn(scoped, "short")) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    eng = guarded.token("erin", "user", "1h", "--group", "eng")
    with psycopg.connect(guarded.dsn(eng)) as c:
        assert c.execute("SELECT current_user").fetchone() == ("postgres",)


def test_token_expiring_mid_stream_cuts_the_stream(guarded: Gateway) -> None:
    tok = guarded.token("ci-bot", "service", "4s")
    p = _stream(guarded, tok)
    took, err = _ended(p, within=15)
    assert "ledgergate: session ended: token expired" in err
    assert took < 7, took
    term = _terminated(guarded)
    assert [t["reason"] for t in term] == ["token expired"]
    sid = term[0]["session_id"]
    assert sum(1 for e in entries(guarded, "chunk") if e["session_id"] == sid) > 10
    assert guarded.cli("audit", "verify", check=False).returncode == 0
    shown = guarded.cli("sessions", "show", sid).stdout
    assert "session.terminated" in shown and "terminated: token expired" in shown


def test_revoking_the_token_cuts_the_stream(guarded: Gateway) -> None:
    tok = guarded.token("ci-bot", "service", "1h")
    tid = _token_id(guarded, "ci-bot")
    _streamed_then_cut(guarded, tok, lambda: guarded.cli("token", "revoke", tid), "token revoked")


def test_disabling_the_identity_cuts_the_stream_and_refuses_new_sessions(
    guarded: Gateway,
) -> None:
    tok = guarded.token("ci-bot", "service", "1h")
    _streamed_then_cut(
        guarded,
        tok,
        lambda: guarded.cli("identities", "disable", "ci-bot", "--reason", "offboarded"),
        "identity disabled",
    )
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(guarded.dsn(tok))
    fails = entries(guarded, "auth.fail")
    assert fails[-1]["reason"] == "identity disabled"
    kinds = [e["kind"] for e in entries(guarded)]
    assert "admin.identity.disable" in kinds


def test_idle_session_ends_at_its_limit_and_the_next_command_is_refused(
    guarded: Gateway,
) -> None:
    tok = guarded.token("ci-bot", "service", "1h")
    with psycopg.connect(guarded.dsn(tok, "short"), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
        time.sleep(2.5)
        with pytest.raises(psycopg.OperationalError, match="maximum session length reached"):
            c.execute("SELECT 2")
    assert [t["reason"] for t in _terminated(guarded)] == ["maximum session length reached"]


def test_periodic_recheck_and_the_stale_report(
    gateway_factory: GatewayFactory, pgc: PgCluster
) -> None:
    """A change no gateway was told about (here: a token revoked behind ledgergate's back,
    without raising the access epoch) is still caught by the periodic re-check."""
    gw = gateway_factory(extra={"identity": {"recheck_interval": "2s"}}).start()
    tok = gw.token("ci-bot", "service", "1h")
    p = _stream(gw, tok)
    time.sleep(1.5)
    stale = json.loads(
        gw.cli("identities", "stale", "--session-longer-than", "1s", "--json").stdout
    )
    assert [(s["identity"], s["reason"]) for s in stale] == [("ci-bot", "long session")]
    with gw.db() as db:
        db.execute("UPDATE tokens SET revoked_ns = 1 WHERE identity = 'ci-bot'")
        db.commit()
    took, err = _ended(p, within=10)
    assert "session ended: token revoked" in err
    assert took < 4.5, took


def test_token_expiring_during_a_streaming_select_cuts_it(guarded: Gateway) -> None:
    """One SELECT whose rows stream (psycopg's single-row mode), no further command: the
    expiry timer cuts it, and the client gets the reason, not a broken frame."""
    tok = guarded.token("ci-bot", "service", "4s")
    rows = 0
    t0 = time.monotonic()
    expired = pytest.raises(psycopg.OperationalError, match="session ended: token expired")
    with psycopg.connect(guarded.dsn(tok)) as c, expired:
        for _ in c.cursor().stream("SELECT generate_series(1, 2000000000)"):
            rows += 1
    assert rows > 1000 and time.monotonic() - t0 < 10
    assert [t["reason"] for t in _terminated(guarded)] == ["token expired"]
    assert guarded.cli("audit", "verify", check=False).returncode == 0
