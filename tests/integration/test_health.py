"""Health, readiness and Prometheus metrics on the API listener, and the drain on SIGTERM:
stop accepting, report not ready, let open sessions finish up to the bound, then sign the
final checkpoint."""

from __future__ import annotations

import json
import signal
import socket
import time

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.fixtures import GatewayFactory, api_client, api_gateway, app_connection
from tests.integration.gateway import Gateway
from tests.integration.pgcluster import PgCluster


def _metrics(gw: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with api_client(gw) as c:
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _gateway(factory: GatewayFactory, pgc: PgCluster, drain: float) -> Gateway:
    return api_gateway(factory, [app_connection(pgc)], {"listeners": {"drain_timeout": drain}})


def test_health_readiness_and_metrics(gateway_factory: GatewayFactory, pgc: PgCluster) -> None:
    gw = _gateway(gateway_factory, pgc, 0.5)
    with api_client(gw) as c:
        assert c.get("/healthz").json() == {"status": "alive"}
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json() == {"ready": True, "reason": "ready"}
    m = _metrics(gw)
    assert m[("ledgergate_sessions_open", (("protocol", "postgres"),))] == 0
    assert m[("ledgergate_store_up", ())] == 1
    assert m[("ledgergate_reviews_pending", ())] == 0
    assert m[("ledgergate_draining", ())] == 0
    tok = gw.token()
    with psycopg.connect(gw.dsn(tok), autocommit=True) as conn:
        for _ in range(3):
            conn.execute("SELECT 1").fetchone()
        m = _metrics(gw)
        assert m[("ledgergate_sessions_open", (("protocol", "postgres"),))] == 1
    m = _metrics(gw)
    assert m[("ledgergate_ledger_entries_total", (("kind", "command"),))] >= 3
    assert m[("ledgergate_ledger_entries_total", (("kind", "session.open"),))] >= 1
    assert ("ledgergate_ledger_index_backlog_bytes", ()) in m
    assert 0 <= m[("ledgergate_store_probe_seconds", ())] < 2
    # nothing about who or what: no identity, token or statement in the metrics
    with api_client(gw) as c:
        text = c.get("/metrics").text
    assert tok not in text and "alice" not in text and "SELECT" not in text


def test_metrics_want_their_token_when_one_is_set(
    gateway_factory: GatewayFactory, pgc: PgCluster
) -> None:
    gw = api_gateway(
        gateway_factory,
        [app_connection(pgc)],
        {"listeners": {"api": {"metrics_token": "env:LG_METRICS_TOKEN"}}},
        env={"LG_METRICS_TOKEN": "scrape-me-7f3a"},
    )
    with api_client(gw) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        r = c.get("/metrics", headers={"Authorization": "Bearer scrape-me-7f3a"})
        assert r.status_code == 200 and "ledgergate_store_up 1.0" in r.text
        # health and readiness stay open to the load balancer
        assert c.get("/readyz").status_code == 200
    assert "scrape-me-7f3a" not in gw.log_path.read_text()


def test_sigterm_drains_open_sessions_then_stops(
    gateway_factory: GatewayFactory, pgc: PgCluster
) -> None:
    gw = _gateway(gateway_factory, pgc, 30)
    tok = gw.token()
    assert gw.proc is not None
    with psycopg.connect(gw.dsn(tok), autocommit=True) as conn:
        conn.execute("SELECT 1")
        gw.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        with api_client(gw) as c:
            while time.monotonic() < deadline:
                r = c.get("/readyz")
                if r.status_code == 503:
                    break
                time.sleep(0.05)
            assert r.status_code == 503 and "draining" in r.json()["reason"]
        # no new sessions: the listening socket is closed
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", gw.port), timeout=2).close()
        # the open one goes on as if nothing happened
        for i in range(5):
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        assert gw.proc.poll() is None
        t0 = time.monotonic()
    # its end lets the gateway finish at once, long before the 30 s bound
    assert gw.proc.wait(15) == 0
    assert time.monotonic() - t0 < 10
    with gw.db() as db:
        closes = [
            json.loads(bytes(c))
            for (c,) in db.execute(
                "SELECT canonical FROM ledger_entries WHERE kind='session.close'"
            )
        ]
    assert len(closes) == 1 and "shutting down" not in json.dumps(closes[0])
    verify = gw.cli("audit", "verify", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_drain_ends_sessions_still_open_at_its_bound(
    gateway_factory: GatewayFactory, pgc: PgCluster
) -> None:
    gw = _gateway(gateway_factory, pgc, 1.5)
    tok = gw.token()
    assert gw.proc is not None
    with psycopg.connect(gw.dsn(tok), autocommit=True) as conn:
        conn.execute("SELECT 1")
        t0 = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(15) == 0
        took = time.monotonic() - t0
        assert 1.4 <= took < 8, took
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    verify = gw.cli("audit", "verify", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
