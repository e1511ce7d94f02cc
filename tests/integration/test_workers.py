"""Several relay processes on one port (``listeners.postgres.workers``): a real
``ledgergate serve`` supervising two workers in front of the SCRAM + TLS cluster.

Connections are spread by the kernel (SO_REUSEPORT), each worker appends to its own
ledger stream, a CancelRequest reaches the session whichever worker the kernel hands it
to, a worker killed with SIGKILL is started again, and the whole ledger verifies."""

from __future__ import annotations

import os
import signal
import socket
import stat
import threading
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from tests.integration.fixtures import GatewayFactory
from tests.integration.gateway import Gateway

WORKERS = 2


def start_workers(factory: GatewayFactory) -> Gateway:
    gw = factory()
    doc = yaml.safe_load(gw.config_path.read_text())
    doc["listeners"]["postgres"]["workers"] = WORKERS
    gw.config_path.write_text(yaml.safe_dump(doc))
    gw.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # worker 0 said it listens; wait for the others
        if all(f"worker {k} listening" in gw.logs() for k in range(1, WORKERS)):
            return gw
        time.sleep(0.05)
    raise TimeoutError(gw.logs())


def workers_of(gw: Gateway) -> list[int]:
    assert gw.proc is not None
    children = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
    return [int(p) for p in children]


def streams_with(gw: Gateway, kind: str) -> dict[str, int]:
    db = gw.db()
    try:
        rows = db.execute(
            "SELECT stream, count(*) FROM ledger_entries WHERE kind=? GROUP BY stream", (kind,)
        ).fetchall()
    finally:
        db.close()
    return dict(rows)


def test_workers_share_the_port_each_with_its_own_stream(
    gateway_factory: GatewayFactory,
) -> None:
    gw = start_workers(gateway_factory)
    assert len(workers_of(gw)) == WORKERS
    tok = gw.token()
    conns = [psycopg.connect(gw.dsn(tok), autocommit=True) for _ in range(16)]
    try:
        for c in conns:
            # BackendKeyData carries the backend's real pid, whichever worker relays it.
            (pid,) = c.execute("SELECT pg_backend_pid()").fetchone()
            assert pid == c.info.backend_pid
            assert c.execute("SELECT %s::int + 1", (41,)).fetchone() == (42,)
    finally:
        for c in conns:
            c.close()
    assert gw.stop() == 0  # every worker closed its sessions and signed a checkpoint
    opened = streams_with(gw, "session.open")
    assert set(opened) == {"gateway@test-gw", "gateway@test-gw.w1"}, opened
    assert sum(opened.values()) == 16
    verify = gw.cli("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "gateway@test-gw.w1" in verify.stdout


def test_a_cancel_reaches_its_session_whichever_worker_takes_it(
    gateway_factory: GatewayFactory,
) -> None:
    """The kernel gives the CancelRequest's own connection to either worker; the cancel
    key names (through the supervisor's keyed hash) the worker of the session, which the
    other one hands it to. At least eight tries, and on until a hand-over was seen (each
    try has even odds): a cancel that went astray would leave pg_sleep(10) running."""
    gw = start_workers(gateway_factory)
    tok = gw.token()
    tries = 0
    while tries < 8 or "handed over to worker" not in gw.logs():
        assert tries < 40, gw.logs()
        tries += 1
        with psycopg.connect(gw.dsn(tok)) as c:
            timer = threading.Timer(0.3, c.cancel)
            t0 = time.monotonic()
            timer.start()
            with pytest.raises(psycopg.errors.QueryCanceled):
                c.execute("SELECT pg_sleep(10)")
            assert time.monotonic() - t0 < 5
            c.rollback()
            assert c.execute("SELECT 1").fetchone() == (1,)
    assert gw.stop() == 0
    assert sum(streams_with(gw, "session.cancel").values()) == tries
    assert gw.cli("audit", "verify").returncode == 0


def test_a_killed_worker_is_started_again_and_the_ledger_still_verifies(
    gateway_factory: GatewayFactory,
) -> None:
    gw = start_workers(gateway_factory)
    tok = gw.token()
    with psycopg.connect(gw.dsn(tok)) as c:
        c.execute("SELECT 1")
    victim = workers_of(gw)[1]
    os.kill(victim, signal.SIGKILL)  # the supervisor starts worker 1 again within a second
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = workers_of(gw)
        if (
            len(pids) == WORKERS
            and victim not in pids
            and gw.logs().count("worker 1 listening") == 2
        ):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(gw.logs())
    for _ in range(8):  # whichever worker takes them, connections work again
        with psycopg.connect(gw.dsn(tok)) as c:
            assert c.execute("SELECT 2").fetchone() == (2,)
    assert gw.stop() == 0
    verify = gw.cli("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_worker_count_out_of_range_is_refused(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    doc = yaml.safe_load(gw.config_path.read_text())
    for bad in (0, 65):
        doc["listeners"]["postgres"]["workers"] = bad
        gw.config_path.write_text(yaml.safe_dump(doc))
        r = gw.cli("serve", check=False)
        assert r.returncode == 2
        assert "listeners.postgres.workers" in r.stderr


def test_the_port_is_the_gateways_alone(gateway_factory: GatewayFactory) -> None:
    """A second gateway on the port of a running one is refused (SO_REUSEPORT would
    otherwise let it take a share of the clients), and ``--worker`` is internal."""
    gw = start_workers(gateway_factory)
    other = gateway_factory()
    doc = yaml.safe_load(other.config_path.read_text())
    for n in (WORKERS, 1):
        doc["listeners"]["postgres"]["address"] = f"127.0.0.1:{gw.port}"
        doc["listeners"]["postgres"]["workers"] = n
        other.config_path.write_text(yaml.safe_dump(doc))
        r = other.cli("serve", check=False)
        assert r.returncode != 0, r.stdout
        assert "in use" in r.stderr, r.stderr
    r = gw.cli("serve", "--worker", "0", check=False)
    assert r.returncode == 2 and "--worker is for the relay processes" in r.stderr
    with psycopg.connect(gw.dsn(gw.token())) as c:  # the gateway kept serving
        assert c.execute("SELECT 3").fetchone() == (3,)
    assert gw.stop() == 0


def test_a_worker_restarted_after_a_config_edit_refuses_and_clients_never_hang(
    gateway_factory: GatewayFactory,
) -> None:
    """Workers run one configuration: a worker restarted after the file was edited
    refuses to start (and keeps being retried, logged), while the kernel gives its share
    of new connections to the live worker instead of queueing them on a dead socket."""
    gw = start_workers(gateway_factory)
    tok = gw.token()
    doc = yaml.safe_load(gw.config_path.read_text())
    doc["log_level"] = "debug"
    gw.config_path.write_text(yaml.safe_dump(doc))
    os.kill(workers_of(gw)[1], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while "configuration changed since the gateway started" not in gw.logs():
        assert time.monotonic() < deadline, gw.logs()
        time.sleep(0.1)
    for _ in range(12):  # none of these may wait on the dead worker's socket
        t0 = time.monotonic()
        with psycopg.connect(gw.dsn(tok), connect_timeout=5) as c:
            assert c.execute("SELECT 4").fetchone() == (4,)
        assert time.monotonic() - t0 < 4
    # 1 if the stop found worker 1 refusing once more (exit 2), 0 if between two tries
    assert gw.stop() in (0, 1)
    assert "worker 0 stopped with status" not in gw.logs()  # the live one stopped cleanly
    assert gw.cli("audit", "verify").returncode == 0


def test_a_malformed_cancel_hand_over_is_dropped_and_nothing_else_changes(
    gateway_factory: GatewayFactory,
) -> None:
    """The workers' cancel socket takes one JSON line from a peer worker; anything else
    (not JSON, wrong types, a value canonical JSON would refuse) is dropped with a
    warning, and the gateway and its ledger carry on."""
    gw = start_workers(gateway_factory)
    tok = gw.token()
    path = gw.data_dir / "run" / "pg-cancel-0.sock"
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    bad = [
        b"not json\n",
        b'{"pid": "1", "secret": "00", "source": {"ip": "x", "port": 1}}\n',
        b'{"pid": 1, "secret": "zz", "source": {"ip": "x", "port": 1}}\n',
        b'{"pid": 1, "secret": "00", "source": {"ip": "x", "port": 1.5}}\n',
        b'{"pid": 99999999999, "secret": "00", "source": {"ip": "x", "port": 1}}\n',
        b"[1, 2]\n",
    ]
    for line in bad:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            s.sendall(line)
    deadline = time.monotonic() + 10
    while gw.logs().count("malformed cancel hand-over was dropped") < len(bad):
        assert time.monotonic() < deadline, gw.logs()
        time.sleep(0.05)
    with psycopg.connect(gw.dsn(tok)) as c:
        assert c.execute("SELECT 5").fetchone() == (5,)
    assert gw.stop() == 0
    assert gw.cli("audit", "verify").returncode == 0
