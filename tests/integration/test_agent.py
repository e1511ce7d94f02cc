"""An agent in a private network: a PostgreSQL server the gateway cannot reach (inside a
network namespace the test makes, joined to the host only by a veth pair with link-local
addresses), an agent inside that namespace dialing out to the gateway, psql through the
gateway reaching the server via the agent, and the agent's token revoked cutting it.

Needs root and ``ip netns`` (as CI has); skipped where they are missing."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.integration.fixtures import GatewayFactory, app_connection
from tests.integration.gateway import Gateway, free_port
from tests.integration.netns import Agent, Netns, needs_netns
from tests.integration.pgcluster import PgCluster

pytestmark = needs_netns


@pytest.fixture
def hidden_pg(netns: Netns) -> Iterator[PgCluster]:
    with PgCluster(netns=netns.name) as cluster:
        cluster.psql("CREATE DATABASE app")
        yield cluster


def _gateway(
    factory: GatewayFactory,
    pg: PgCluster,
    netns: Netns,
    conn: dict[str, object] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[Gateway, int]:
    port = free_port()
    gw = factory(
        [conn or app_connection(pg, via="site-agent")],
        env=env if env is not None else {"APP_DB_PASSWORD": pg.password},
        extra={"listeners": {"agent": {"address": f"{netns.host_ip}:{port}"}}},
    ).start()
    return gw, port


def test_psql_reaches_a_hidden_server_through_the_agent(
    gateway_factory: GatewayFactory, hidden_pg: PgCluster, netns: Netns
) -> None:
    # the gateway's side cannot reach the server at all
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", hidden_pg.port), timeout=2).close()
    gw, port = _gateway(gateway_factory, hidden_pg, netns)
    agent = Agent(netns, gw, port, gw.token("site-agent", "service"), hidden_pg)
    try:
        agent.wait_for("connected to the gateway as agent site-agent")
        tok = gw.token("alice")
        out = subprocess.run(
            ["psql", gw.dsn(tok), "-Atc", "SELECT current_database(), inet_server_addr()"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "app|127.0.0.1"
        with psycopg.connect(gw.dsn(tok), autocommit=True) as c:
            c.execute("CREATE TABLE t_agent (n int)")
            c.execute("INSERT INTO t_agent SELECT generate_series(1, 1000)")
            assert c.execute("SELECT sum(n) FROM t_agent").fetchone() == (500500,)
        gw.settle()
        with gw.db() as db:
            texts = [
                json.loads(bytes(c))["command"]["text"]
                for (c,) in db.execute("SELECT canonical FROM ledger_entries WHERE kind='command'")
            ]
        assert any("t_agent" in (t or "") for t in texts)
        # the agent never saw a user's token
        assert tok not in agent.log.read_text()
    finally:
        agent.stop()
    # with the agent gone, the connection says why it cannot be reached
    with pytest.raises(psycopg.OperationalError, match="agent 'site-agent'"):
        psycopg.connect(gw.dsn(gw.token("alice")), connect_timeout=20).close()


def test_revoking_the_agents_token_cuts_its_sessions(
    gateway_factory: GatewayFactory, hidden_pg: PgCluster, netns: Netns, tmp_path: Path
) -> None:
    gw, port = _gateway(gateway_factory, hidden_pg, netns)
    agent = Agent(netns, gw, port, gw.token("site-agent", "service"), hidden_pg)
    try:
        agent.wait_for("connected to the gateway as agent site-agent")
        rows = json.loads(gw.cli("token", "list", "--identity", "site-agent", "--json").stdout)
        with psycopg.connect(gw.dsn(gw.token("alice")), autocommit=True) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
            t0 = time.monotonic()
            gw.cli("token", "revoke", str(rows[-1]["id"]))
            with pytest.raises(psycopg.OperationalError):
                c.execute("SELECT pg_sleep(30)")
            assert time.monotonic() - t0 < 10
        # the agent is refused when it dials again, and stops
        assert agent.proc.wait(30) == 1
        assert "refused" in agent.log.read_text()
    finally:
        agent.stop()


def test_bad_input_at_the_agent_listener_is_refused_and_the_gateway_serves_on(
    gateway_factory: GatewayFactory, pgc: PgCluster
) -> None:
    """Garbage, a line that is not an object, an unknown leg and a wrong token each get
    a refusal on their own connection; nothing of the held credential is said; the
    gateway keeps serving (runs without a namespace: the listener is on loopback)."""
    import ssl

    port = free_port()
    gw = gateway_factory(
        [app_connection(pgc, via="site-agent")],
        extra={"listeners": {"agent": {"address": f"127.0.0.1:{port}"}}},
    ).start()
    ctx = ssl.create_default_context(cafile=str(gw.data_dir / "tls" / "server.crt"))

    def say(line: bytes) -> dict[str, object]:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as s,
        ):
            s.sendall(line)
            got = s.recv(4096)
        answer = json.loads(got)
        assert isinstance(answer, dict)
        return answer

    for line in (
        b"\x00\xff not json\n",
        b"[1, 2]\n",
        b'{"leg": "nope", "token": "x"}\n',
        b'{"control": "lgt_not_a_real_token"}\n',
        '{"control": "l\u00e9gitime"}\n'.encode(),
    ):
        answer = say(line)
        assert answer["ok"] is False and answer["error"], (line, answer)
        assert pgc.password not in json.dumps(answer)
    # a user's token is not an agent's: refused as well
    assert say(json.dumps({"control": gw.token("alice")}).encode() + b"\n")["ok"] is False
    assert gw.proc is not None and gw.proc.poll() is None
    assert pgc.password not in gw.log_path.read_text()


@pytest.fixture
def locked_pg(netns: Netns) -> Iterator[PgCluster]:
    """A hidden server with a password of its own that only takes TLS connections."""
    with PgCluster(netns=netns.name, password=secrets.token_urlsafe(24), require_tls=True) as c:
        c.psql("CREATE DATABASE app")
        yield c


def _agent_login_gateway(
    factory: GatewayFactory, pg: PgCluster, netns: Netns
) -> tuple[Gateway, int]:
    conn = app_connection(pg, via="site-agent", credentials="agent:site-agent")
    del conn["sslmode"]  # TLS to the server runs on the agent
    # the gateway's environment holds no password at all
    return _gateway(factory, pg, netns, conn, env={"APP_DB_PASSWORD": "not-this-one"})


def _everything_the_gateway_keeps(gw: Gateway) -> bytes:
    """Its data directory, store, log and configuration, and its process environment."""
    kept = [p.read_bytes() for p in gw.workdir.rglob("*") if p.is_file() and "agent" not in p.name]
    kept.append(gw.store_bytes())
    assert gw.proc is not None
    kept.append(Path(f"/proc/{gw.proc.pid}/environ").read_bytes())
    return b"\n".join(kept)


def test_the_agent_logs_in_with_a_credential_the_gateway_never_holds(
    gateway_factory: GatewayFactory, locked_pg: PgCluster, netns: Netns
) -> None:
    gw, port = _agent_login_gateway(gateway_factory, locked_pg, netns)
    agent = Agent(
        netns,
        gw,
        port,
        gw.token("site-agent", "service"),
        locked_pg,
        args=(
            "--credential",
            "app=user=postgres,password=env:HIDDEN_PW,sslmode=verify-full,"
            f"sslrootcert={locked_pg.ca_cert_path},require_auth=scram-sha-256",
        ),
        env={"HIDDEN_PW": locked_pg.password},
    )
    try:
        agent.wait_for("connected to the gateway as agent site-agent")
        tok = gw.token("alice")
        with psycopg.connect(gw.dsn(tok), autocommit=True, application_name="via-agent") as c:
            # the server saw the agent's TLS login, with the client's own parameters
            row = c.execute(
                "SELECT s.ssl, a.application_name, current_user FROM pg_stat_ssl s "
                "JOIN pg_stat_activity a USING (pid) WHERE pid = pg_backend_pid()"
            ).fetchone()
            assert row == (True, "via-agent", "postgres")
            c.execute("CREATE TABLE t_login (n int)")
            c.execute("INSERT INTO t_login SELECT generate_series(1, 500)")
            assert c.execute("SELECT count(*) FROM t_login").fetchone() == (500,)
            # a cancel goes through the agent too
            t0 = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled):
                threading.Timer(1.0, c.cancel).start()
                c.execute("SELECT pg_sleep(30)")
            assert time.monotonic() - t0 < 15
        gw.settle()
        assert gw.cli("audit", "verify").returncode == 0
        assert locked_pg.password.encode() not in _everything_the_gateway_keeps(gw)
        assert locked_pg.password not in agent.log.read_text()
    finally:
        agent.stop()


def test_an_agent_credential_the_server_refuses_is_a_clear_error(
    gateway_factory: GatewayFactory, locked_pg: PgCluster, netns: Netns
) -> None:
    gw, port = _agent_login_gateway(gateway_factory, locked_pg, netns)
    wrong = "wrong-" + secrets.token_hex(8)
    agent = Agent(
        netns,
        gw,
        port,
        gw.token("site-agent", "service"),
        locked_pg,
        args=("--credential", "app=user=postgres,password=env:HIDDEN_PW,sslmode=require"),
        env={"HIDDEN_PW": wrong},
    )
    try:
        agent.wait_for("connected to the gateway as agent site-agent")
        with pytest.raises(psycopg.OperationalError, match="could not authenticate"):
            psycopg.connect(gw.dsn(gw.token("alice")), connect_timeout=20).close()
        agent.wait_for("the server refused the agent's credential")
        log = gw.log_path.read_text() + agent.log.read_text()
        assert wrong not in log and locked_pg.password not in log
        # the gateway serves on, and the agent stays connected
        assert gw.proc is not None and gw.proc.poll() is None
        assert agent.proc.poll() is None
    finally:
        agent.stop()


def test_the_agent_refuses_a_login_it_holds_no_credential_for(
    gateway_factory: GatewayFactory, locked_pg: PgCluster, netns: Netns
) -> None:
    gw, port = _agent_login_gateway(gateway_factory, locked_pg, netns)
    agent = Agent(netns, gw, port, gw.token("site-agent", "service"), locked_pg)
    try:
        agent.wait_for("connected to the gateway as agent site-agent")
        with pytest.raises(psycopg.OperationalError, match="holds no credential"):
            psycopg.connect(gw.dsn(gw.token("alice")), connect_timeout=20).close()
    finally:
        agent.stop()


def test_the_agent_stops_at_once_with_sessions_open(
    gateway_factory: GatewayFactory, hidden_pg: PgCluster, netns: Netns
) -> None:
    """SIGTERM ends the agent and the legs it carries, even while a client holds one."""
    gw, port = _gateway(gateway_factory, hidden_pg, netns)
    agent = Agent(netns, gw, port, gw.token("site-agent", "service"), hidden_pg)
    try:
        agent.wait_for("connected to the gateway as agent site-agent")
        with psycopg.connect(gw.dsn(gw.token("alice")), autocommit=True) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
            t0 = time.monotonic()
            agent.proc.terminate()
            assert agent.proc.wait(10) == 0
            assert time.monotonic() - t0 < 5
            with pytest.raises(psycopg.OperationalError):
                c.execute("SELECT 2")
    finally:
        agent.stop()
