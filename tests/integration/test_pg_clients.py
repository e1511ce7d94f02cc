"""Real clients through a real gateway to a real PostgreSQL (SCRAM + TLS backend):
results must equal a direct connection's, and every command lands on the ledger."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from pathlib import Path

import asyncpg
import psycopg
import pytest
import sqlalchemy as sa

from tests.integration.fixtures import GatewayFactory, app_connection
from tests.integration.gateway import Gateway
from tests.integration.pgcluster import PgCluster, PgClusterFactory


def psql(dsn: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", *args, dsn],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ledger_kinds(gw: Gateway) -> list[tuple[str, dict]]:
    gw.settle()
    db = gw.db()
    rows = db.execute("SELECT kind, canonical FROM ledger_entries ORDER BY stream, seq").fetchall()
    return [(k, json.loads(c)) for k, c in rows]


def test_psql_simple_multi_statement_and_copy(gateway: Gateway, pgc: PgCluster) -> None:
    tok = gateway.token()
    sql = (
        "CREATE TABLE IF NOT EXISTS t1 (id int primary key, name text);"
        "TRUNCATE t1; INSERT INTO t1 VALUES (1, 'one'), (2, 'two');"
        "SELECT * FROM t1 ORDER BY id; SELECT pg_backend_pid() > 0"
    )
    via = psql(gateway.dsn(tok), "-At", "-c", sql)
    assert via.returncode == 0, via.stderr
    direct = psql(
        pgc.dsn(dbname="app"),
        "-At",
        "-c",
        "SELECT * FROM t1 ORDER BY id; SELECT pg_backend_pid() > 0",
    )
    assert via.stdout.endswith(direct.stdout) and "INSERT 0 2" in via.stdout
    # COPY FROM STDIN and COPY TO STDOUT
    data = "".join(f"{i}\tname-{i}\n" for i in range(10, 5010))
    r = psql(gateway.dsn(tok), "-c", "COPY t1 FROM STDIN", input=data)
    assert r.returncode == 0, r.stderr
    out = psql(
        gateway.dsn(tok),
        "-At",
        "-c",
        "COPY (SELECT * FROM t1 WHERE id >= 10 ORDER BY id) TO STDOUT",
    )
    assert out.stdout == data
    kinds = ledger_kinds(gateway)
    texts = [d["command"]["text"] for k, d in kinds if k == "command"]
    assert "INSERT INTO t1 VALUES (?, ?), (?, ?)" in texts
    assert "COPY t1 FROM STDIN" in texts
    c2s = [d for k, d in kinds if k == "chunk" and d["direction"] == "c2s"]
    assert sum(d["chunk"]["size"] for d in c2s) > len(data)
    assert all(d["chunk"]["messages"] >= 1 for d in c2s)
    s2c_rows = sum(d["chunk"]["rows"] for k, d in kinds if k == "chunk" and d["direction"] == "s2c")
    assert s2c_rows >= 5000 + 2
    assert all(
        d["chunk"]["sha256_in"] == d["chunk"]["sha256_out"] for k, d in kinds if k == "chunk"
    )
    assert gateway.cli("audit", "verify").returncode == 0


def test_psycopg_extended_pipeline_notify_and_pid(gateway: Gateway) -> None:
    tok = gateway.token("svc-etl", kind="service")
    with psycopg.connect(gateway.dsn(tok, user="svc-etl"), autocommit=True) as conn:
        pid = conn.info.backend_pid
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
        assert conn.execute("SELECT %s::int + %s::int, %s::text", (2, 3, "x")).fetchone() == (
            5,
            "x",
        )
        conn.execute("CREATE TABLE IF NOT EXISTS t2 (id int, v text)")
        with conn.pipeline():
            for i in range(50):
                conn.execute("INSERT INTO t2 VALUES (%s, %s)", (i, f"v{i}"), prepare=True)
        assert conn.execute("SELECT count(*) FROM t2 WHERE id < 50").fetchone()[0] >= 50
        # binary results
        cur = conn.cursor(binary=True)
        assert cur.execute("SELECT 42::int8, 'b'::text").fetchone() == (42, "b")
        conn.execute("LISTEN ch")
        with psycopg.connect(gateway.dsn(tok, user="svc-etl"), autocommit=True) as other:
            other_pid = other.info.backend_pid
            other.execute("NOTIFY ch, 'hello'")
        n = next(conn.notifies(timeout=5))
        assert n.payload == "hello" and n.pid == other_pid
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchall()
        assert rows == [(pid,)]
        # errors keep the session usable
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table")
        assert conn.execute("SELECT 1").fetchone() == (1,)
    kinds = ledger_kinds(gateway)
    ops = {d["command"]["op"] for k, d in kinds if k == "command"}
    assert {"parse", "bind", "query"} <= ops
    binds = [d for k, d in kinds if k == "command" and d["command"]["op"] == "bind"]
    assert all("values" not in d["command"]["params"] for d in binds)


def test_cancel_request_reaches_the_right_backend(gateway: Gateway) -> None:
    tok = gateway.token()
    with psycopg.connect(gateway.dsn(tok)) as conn:
        t = threading.Timer(0.5, conn.cancel)
        t.start()
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(20)")
        assert time.monotonic() - t0 < 10
    kinds = [k for k, _ in ledger_kinds(gateway)]
    assert "session.cancel" in kinds


def test_asyncpg_and_sqlalchemy(gateway: Gateway) -> None:
    tok = gateway.token()

    async def go() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=gateway.port,
            user="alice",
            password=tok,
            database="app",
            ssl="require",
        )
        try:
            stmt = await conn.prepare("SELECT g, md5(g::text) FROM generate_series(1, $1) g")
            rows = await stmt.fetch(1000)
            assert len(rows) == 1000 and rows[999][0] == 1000
            await conn.execute("CREATE TABLE IF NOT EXISTS t3 (a int, b text)")
            await conn.copy_records_to_table("t3", records=[(i, str(i)) for i in range(300)])
            assert await conn.fetchval("SELECT count(*) FROM t3") >= 300
            async with conn.transaction():
                await conn.execute("INSERT INTO t3 VALUES (-1, 'tx')")
            assert await conn.fetchval("SELECT pg_backend_pid()") == conn.get_server_pid()
        finally:
            await conn.close()

    asyncio.run(go())
    eng = sa.create_engine(gateway.url(tok, scheme="postgresql+psycopg"))
    with eng.begin() as c:
        assert c.execute(sa.text("SELECT :x + 1"), {"x": 41}).scalar() == 42
    md = sa.MetaData()
    t = sa.Table("t4", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("n", sa.String))
    md.create_all(eng)
    with eng.begin() as c:
        c.execute(t.insert(), [{"id": i, "n": f"n{i}"} for i in range(20)])
        assert c.execute(sa.select(sa.func.count()).select_from(t)).scalar() == 20
    eng.dispose()


def test_pgbench_through_the_gateway(gateway: Gateway) -> None:
    tok = gateway.token("bench", kind="service")
    env = {"PGPASSWORD": tok, "PGSSLMODE": "require", "PATH": "/usr/bin:/bin"}
    base = ["-h", "127.0.0.1", "-p", str(gateway.port), "-U", "bench"]
    r = subprocess.run(
        ["pgbench", "-i", "-s", "1", "-q", *base, "app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    for mode in ("simple", "extended", "prepared"):
        r = subprocess.run(
            ["pgbench", "-n", "-c", "4", "-j", "2", "-t", "200", "-M", mode, *base, "app"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        assert "number of failed transactions: 0" in r.stdout
    assert gateway.cli("audit", "verify").returncode == 0


@pytest.mark.parametrize(
    ("auth", "sslmode"),
    [
        ("md5", "require"),
        ("password", "require"),
        ("trust", "disable"),
        ("scram-sha-256", "prefer"),
    ],
)
def test_backend_authentication_methods(
    gateway_factory: GatewayFactory, pg_cluster_factory: PgClusterFactory, auth: str, sslmode: str
) -> None:
    """The gateway authenticates to the backend with MD5, cleartext, trust and SCRAM,
    over TLS or not as the connection says."""
    cluster = pg_cluster_factory(auth=auth, tls=sslmode != "disable")
    cluster.psql("CREATE DATABASE app")
    conn = app_connection(cluster, sslmode=sslmode)
    gw = gateway_factory([conn], env={"APP_DB_PASSWORD": cluster.password}).start()
    tok = gw.token()
    with psycopg.connect(gw.dsn(tok)) as c:
        assert c.execute(
            "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone() == ("postgres", sslmode != "disable")


def test_function_call_protocol_large_objects(gateway: Gateway, tmp_path: Path) -> None:
    """psql's \\lo_import / \\lo_export use the FunctionCall message."""
    tok = gateway.token()
    src = tmp_path / "blob.bin"
    src.write_bytes(bytes(range(256)) * 100)
    dst = tmp_path / "back.bin"
    r = psql(gateway.dsn(tok), "-At", "-c", f"\\lo_import {src}")
    assert r.returncode == 0, r.stderr
    oid = r.stdout.split()[-1]
    r = psql(gateway.dsn(tok), "-c", f"\\lo_export {oid} {dst}")
    assert r.returncode == 0, r.stderr
    assert dst.read_bytes() == src.read_bytes()
    ops = {d["command"]["op"] for k, d in ledger_kinds(gateway) if k == "command"}
    assert "function" in ops
