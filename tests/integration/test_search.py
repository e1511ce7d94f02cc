"""``ledgergate search`` and ``GET /api/v1/search`` against a real gateway: what psql ran
through it is found by its words, filtered by identity and connection, as the recording
level kept it (a redacted statement's literals are not searchable), and only admins and
auditors may search."""

from __future__ import annotations

import json

import psycopg

from tests.integration.fixtures import (
    GatewayFactory,
    api_client,
    api_gateway,
    app_connection,
    bearer,
)
from tests.integration.pgcluster import PgCluster


def test_search_finds_what_ran_as_the_ledger_kept_it(
    gateway_factory: GatewayFactory, pgc: PgCluster
) -> None:
    gw = api_gateway(
        gateway_factory,
        [app_connection(pgc), app_connection(pgc, name="reports")],
        {"roles": {"auditor": {"groups": ["audit"]}}},
    )
    alice, bob = gw.token("alice"), gw.token("bob")
    with psycopg.connect(gw.dsn(alice), autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS orders_s (id int, email text)")
        c.execute("INSERT INTO orders_s VALUES (7, 'jane.doe@example.com')")
        c.execute("DELETE FROM orders_s WHERE id = 7")
    with psycopg.connect(gw.dsn(bob, "reports", user="bob"), autocommit=True) as c:
        c.execute("SELECT count(*) FROM orders_s")
    gw.settle()

    def cli(*args: str) -> list[dict]:
        out = gw.cli("search", *args, "--json").stdout
        return list(json.loads(out))

    hits = cli("delete from orders_s")
    assert [(h["identity"], h["connection"], h["kind"]) for h in hits] == [
        ("alice", "app", "command")
    ]
    assert "DELETE FROM orders_s" in hits[0]["what"]
    assert [h["identity"] for h in cli("orders_s")] == ["bob", "alice", "alice", "alice"]
    assert [h["identity"] for h in cli("orders_s", "--identity", "bob")] == ["bob"]
    assert [h["connection"] for h in cli("orders_s", "--connection", "reports")] == ["reports"]
    # the statement was recorded redacted: its literal is nowhere to be found
    assert cli("example") == [] and cli("jane") == []
    # a table in the CLI's own words
    table = gw.cli("search", '"delete from"').stdout
    assert "orders_s" in table and "alice" in table
    bad = gw.cli("search", "!!!", check=False)
    assert bad.returncode == 2 and "no words" in bad.stderr

    auditor = gw.token("carol", "user", "1h", "--group", "audit")
    with api_client(gw) as http:
        r = http.get("/api/v1/search", params={"q": "orders_s"}, headers=bearer(auditor))
        assert r.status_code == 200
        assert [h["identity"] for h in r.json()] == ["bob", "alice", "alice", "alice"]
        r = http.get(
            "/api/v1/search",
            params={"q": "orders_s", "identity": "alice", "limit": 1},
            headers=bearer(auditor),
        )
        assert [h["identity"] for h in r.json()] == ["alice"]
        assert (
            http.get("/api/v1/search", params={"q": "x"}, headers=bearer(alice)).status_code == 403
        )
        r = http.get("/api/v1/search", params={"q": "??"}, headers=bearer(auditor))
        assert r.status_code == 422
