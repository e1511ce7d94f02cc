"""Two gateway processes (separate data directories, one PostgreSQL store, the same keys)
behind HAProxy: psql and pgbench through the balancer reach both; a revocation made
through one gateway cuts a session on the other within a second (the store's change
notice, not a poll); kill -9 of one in the middle of a workload loses nothing a client
saw acknowledged, and the ledger verifies. These run on a PostgreSQL store whatever
LEDGERGATE_TEST_STORE says: several gateways share nothing else."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.integration.fixtures import GatewayFactory, app_connection
from tests.integration.gateway import Gateway
from tests.integration.haproxy import HaProxy
from tests.integration.pgcluster import PgCluster
from tests.storeserver import fresh_store_url

pytestmark = pytest.mark.slow


class Pair:
    def __init__(self, a: Gateway, b: Gateway, lb: HaProxy) -> None:
        self.a, self.b, self.lb = a, b, lb

    def dsn(self, token: str, **extra: str) -> str:
        base = self.a.dsn(token, **extra)
        return base.replace(f"port={self.a.port}", f"port={self.lb.port}")


@pytest.fixture
def pair(gateway_factory: GatewayFactory, pgc: PgCluster) -> Iterator[Pair]:
    url, password = fresh_store_url("postgresql")
    shared = {"store": url, "store_password": password}

    def make(name: str) -> Gateway:
        return gateway_factory(
            [app_connection(pgc)],
            ledger={"stream": f"gateway@{name}", "key_name": "ledgergate/ha"},
            extra={"gateway_name": name, **shared},
        )

    a = make("gw-a").start()
    b = make("gw-b")
    # Gateways side by side share their keys: one ledger key under one name (one verifier
    # for every stream), one payload key (either can replay the other's sessions).
    shutil.copytree(a.data_dir / "keys", b.data_dir / "keys")
    b.start()
    lb = HaProxy([("127.0.0.1", a.port), ("127.0.0.1", b.port)]).start()
    yield Pair(a, b, lb)
    lb.stop()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _streams_with(gw: Gateway, kind: str) -> dict[str, int]:
    with gw.db() as db:
        rows = db.execute(
            "SELECT stream, count(*) FROM ledger_entries WHERE kind=? GROUP BY stream", (kind,)
        ).fetchall()
    return {str(s): int(n) for s, n in rows}


def test_psql_and_pgbench_through_the_balancer_reach_both(pair: Pair, pgc: PgCluster) -> None:
    tok = pair.a.token("etl", "service")
    for _ in range(4):
        out = subprocess.run(
            ["psql", pair.dsn(tok), "-Atc", "SELECT 41 + 1"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.stdout.strip() == "42", out.stderr
    pgc.psql("CREATE TABLE IF NOT EXISTS ha_t (id int)", "app")
    bench = subprocess.run(
        [
            "pgbench",
            "-n",
            "-C",  # a new connection per transaction: spread over both gateways
            "-c",
            "4",
            "-t",
            "10",
            "-f",
            "/dev/stdin",
            pair.dsn(tok),
        ],
        input="SELECT count(*) FROM ha_t;\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bench.returncode == 0, bench.stderr
    assert "number of transactions actually processed: 40/40" in bench.stdout
    pair.a.settle()
    pair.b.settle()
    opened = _streams_with(pair.a, "session.open")
    assert set(opened) == {"gateway@gw-a", "gateway@gw-b"}, opened
    assert sum(opened.values()) >= 44  # 4 psql, 40 pgbench transactions (+ its first login)
    verify = pair.a.cli("audit", "verify", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "gateway@gw-a" in verify.stdout and "gateway@gw-b" in verify.stdout


def test_a_revocation_through_one_gateway_cuts_a_session_on_the_other(pair: Pair) -> None:
    tok = pair.a.token("contractor", "service")
    tid = json.loads(pair.a.cli("token", "list", "--identity", "contractor", "--json").stdout)
    token_id = str(tid[-1]["id"])
    with psycopg.connect(pair.b.dsn(tok), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
        out: dict[str, object] = {}

        def hold() -> None:
            try:
                c.execute("SELECT pg_sleep(20)")
            except psycopg.Error as e:
                out["error"] = str(e)
                out["at_ns"] = time.time_ns()

        t = threading.Thread(target=hold)
        t.start()
        time.sleep(0.5)
        pair.a.cli("token", "revoke", token_id)  # through the other gateway's store
        t.join(15)
    assert "token revoked" in str(out.get("error")), out
    # Measured from the revocation itself (its ledger entry, written in the same commit),
    # not from the start of the CLI process, whose own start-up is no part of it.
    with pair.a.db() as db:
        rows = db.execute(
            "SELECT canonical FROM ledger_entries WHERE kind='token.revoked'"
        ).fetchall()
    revoked_ns = max(json.loads(bytes(r[0]))["ts_ns"] for r in rows)
    took = (int(out["at_ns"]) - revoked_ns) / 1e9  # type: ignore[call-overload]
    assert 0 <= took < 1.0, f"the session on the other gateway ended {took:.2f} s later"


def test_kill_9_of_one_gateway_loses_nothing_acknowledged(pair: Pair, pgc: PgCluster) -> None:
    pgc.psql("CREATE TABLE IF NOT EXISTS ha_acks (id int PRIMARY KEY)", "app")
    tok = pair.a.token("loader", "service")
    acked: list[int] = []
    stop = threading.Event()
    failures: list[str] = []

    def client() -> None:
        n = 0
        while not stop.is_set():
            try:
                # 20 statements a connection: the balancer spreads them over both
                with psycopg.connect(pair.dsn(tok), autocommit=True, connect_timeout=5) as c:
                    for _ in range(20):
                        if stop.is_set():
                            break
                        n += 1
                        c.execute(f"INSERT INTO ha_acks VALUES ({n}) ON CONFLICT DO NOTHING")
                        acked.append(n)
            except psycopg.Error as e:
                failures.append(str(e).splitlines()[0])
                time.sleep(0.05)  # then reconnect through the balancer

    threads = [threading.Thread(target=client) for _ in range(1)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    pair.b.kill9()
    before_kill = len(acked)
    deadline = time.monotonic() + 20
    while len(acked) < before_kill + 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) >= before_kill + 200, (len(acked), failures)
    # The killed gateway's journal is replayed when it starts again.
    pair.b.start()
    pair.a.indexed()
    pair.b.indexed()  # (its sessions cut by the kill have no close entry to wait for)
    assert set(_streams_with(pair.a, "command")) == {"gateway@gw-a", "gateway@gw-b"}
    with pair.a.db() as db:
        digests = {
            json.loads(bytes(c))["command"]["text_sha256"]
            for (c,) in db.execute("SELECT canonical FROM ledger_entries WHERE kind='command'")
        }
    sql = "INSERT INTO ha_acks VALUES ({}) ON CONFLICT DO NOTHING"
    missing = [n for n in acked if _sha(sql.format(n)) not in digests]
    assert not missing, f"{len(missing)} acknowledged statements have no ledger entry"
    verify = pair.a.cli("audit", "verify", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
