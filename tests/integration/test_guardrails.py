"""Guardrails and least-privilege allow-lists through a real gateway: refused statements
never reach PostgreSQL, the client gets SQLSTATE 42501 naming the rule, psql, psycopg
(also in pipeline mode) and asyncpg stay in sync afterwards, and every attempt is a
``decision.block`` entry naming the rule and the policy version."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import asyncpg
import psycopg
import pytest

from tests.integration.fixtures import GatewayFactory, app_connection
from tests.integration.gateway import Gateway
from tests.integration.pgcluster import PgCluster
from tests.integration.test_pg_security import entries

POLICY: dict[str, Any] = {
    "rules": [
        {
            "id": "no-ddl",
            "deny": {"kinds": ["ddl"]},
            "message": "schema changes go through migrations",
        },
        {
            "id": "no-unbounded-writes",
            "deny": {"kinds": ["update", "delete"], "without_where": True},
            "message": "UPDATE and DELETE need a WHERE clause",
        },
        {
            "id": "no-file-access",
            "deny": {
                "functions": [
                    "pg_read_file",
                    "pg_read_binary_file",
                    "pg_ls_dir",
                    "lo_import",
                    "lo_export",
                    "dblink*",
                ]
            },
        },
        {"id": "no-copy-program", "deny": {"copy_program": True}},
        {"id": "no-do-blocks", "deny": {"do_blocks": True}},
        {"id": "no-alter-system", "deny": {"alter_system": True}},
        {"id": "no-role-changes", "deny": {"role_changes": True}},
        {
            "id": "ds-read-analytics",
            "groups": ["data-science"],
            "allow": [{"kinds": ["select"], "tables": ["analytics.*"]}],
            "message": "data science reads analytics.* only",
        },
    ]
}

# Each must be refused, whatever the spelling.
BYPASSES = [
    ("DROP TABLE gr_customers", "no-ddl"),
    ("dRoP tAbLe gr_customers", "no-ddl"),
    ("DROP/**/TABLE gr_customers", "no-ddl"),
    ('DROP TABLE "gr_customers"', "no-ddl"),
    ("-- harmless\nDROP TABLE gr_customers", "no-ddl"),
    ("SELECT 1; DROP TABLE gr_customers", "no-ddl"),
    ("ALTER TABLE gr_customers ADD COLUMN x int", "no-ddl"),
    ("TRUNCATE gr_customers", "no-unbounded-writes"),
    ("DELETE FROM gr_customers", "no-unbounded-writes"),
    ("delete from public.gr_customers", "no-unbounded-writes"),
    ("UPDATE gr_customers SET email = 'x'", "no-unbounded-writes"),
    (
        "WITH d AS (DELETE FROM gr_customers RETURNING *) SELECT count(*) FROM d",
        "no-unbounded-writes",
    ),
    ("EXPLAIN ANALYZE DELETE FROM gr_customers", "no-unbounded-writes"),
    ("SELECT pg_read_file('/etc/passwd')", "no-file-access"),
    ("SELECT upper(pg_catalog.pg_read_file('/etc/passwd'))", "no-file-access"),
    ("SELECT * FROM (SELECT lo_export(1, '/tmp/x')) s", "no-file-access"),
    ("SELECT x FROM pg_ls_dir('.') x", "no-file-access"),
    ("COPY gr_customers TO PROGRAM 'cat > /tmp/leak'", "no-copy-program"),
    ("DO $$ BEGIN EXECUTE 'DROP TABLE gr_customers'; END $$", "no-do-blocks"),
    ("ALTER SYSTEM SET log_statement = 'none'", "no-alter-system"),
    ("CREATE ROLE intruder SUPERUSER", "no-role-changes"),
    ("GRANT ALL ON gr_customers TO PUBLIC", "no-role-changes"),
    ("SET ROLE postgres", "no-role-changes"),
]


@pytest.fixture(scope="module")
def tables(pg: PgCluster) -> None:
    pg.psql(
        "CREATE TABLE IF NOT EXISTS gr_customers (id int primary key, email text);"
        "INSERT INTO gr_customers VALUES (1, 'ann@example.com'), (2, 'bob@example.com') "
        "ON CONFLICT DO NOTHING;"
        "CREATE SCHEMA IF NOT EXISTS analytics;"
        "CREATE TABLE IF NOT EXISTS analytics.gr_events (id int, kind text);"
        "INSERT INTO analytics.gr_events VALUES (1, 'click');",
        "app",
    )


@pytest.fixture
def guarded(gateway_factory: GatewayFactory, pgc: PgCluster, tables: None) -> Gateway:
    return gateway_factory([app_connection(pgc)], extra={"policy": POLICY}).start()


def _count(pg: PgCluster) -> str:
    return pg.psql("SELECT count(*) FROM gr_customers", "app").strip()


def test_psql_gets_the_rule_and_nothing_runs(guarded: Gateway, pgc: PgCluster) -> None:
    tok = guarded.token("erin")
    r = subprocess.run(
        ["psql", "-X", "-c", "DROP TABLE gr_customers", guarded.dsn(tok)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert (
        "ERROR:  ledgergate: statement refused by rule no-ddl: "
        "schema changes go through migrations" in r.stderr
    )
    assert _count(pgc) == "2"
    (blocked,) = entries(guarded, "decision.block")
    assert blocked["decision"]["rule"] == "no-ddl" and blocked["outcome"] == "refused"
    assert blocked["command"]["text"] == "DROP TABLE gr_customers"
    assert blocked["policy"].startswith("pol_") and blocked["identity"]["subject"] == "erin"
    # every entry of a guarded session names the policy version
    opened = entries(guarded, "session.open")[-1]
    assert opened["policy"] == blocked["policy"]
    assert guarded.cli("audit", "verify", check=False).returncode == 0


def test_bypass_corpus_is_refused_and_the_connection_stays_usable(
    guarded: Gateway, pgc: PgCluster
) -> None:
    tok = guarded.token("erin")
    with psycopg.connect(guarded.dsn(tok), autocommit=True) as c:
        for sql, rule in BYPASSES:
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
                c.execute(sql)
            assert f"refused by rule {rule}" in str(e.value), sql
            assert c.execute("SELECT 42").fetchone() == (42,), sql
        # inside a transaction: refused like any failed statement, which aborts it
        with pytest.raises(psycopg.errors.InsufficientPrivilege), c.transaction():
            c.execute("UPDATE gr_customers SET email = 'x' WHERE id = 2")
            c.execute("DELETE FROM gr_customers")
        assert c.execute("SELECT email FROM gr_customers WHERE id = 2").fetchone() == (
            "bob@example.com",  # the UPDATE before it was rolled back with the transaction
        )
        assert c.execute("UPDATE gr_customers SET email = email WHERE id = 1").rowcount == 1
    assert _count(pgc) == "2"
    assert pgc.psql("SELECT count(*) FROM pg_roles WHERE rolname = 'intruder'").strip() == "0"
    rules = [e["decision"]["rule"] for e in entries(guarded, "decision.block")]
    assert rules == [r for _, r in BYPASSES] + ["no-unbounded-writes"]


def test_psycopg_pipeline_and_prepared_statements_stay_in_sync(guarded: Gateway) -> None:
    tok = guarded.token("erin")
    with psycopg.connect(guarded.dsn(tok), autocommit=True) as c:
        for _ in range(6):  # psycopg prepares a statement after it ran a few times
            assert c.execute(
                "SELECT email FROM gr_customers WHERE id = %s", (1,), prepare=True
            ).fetchone() == ("ann@example.com",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege), c.pipeline():
            a = c.execute("SELECT 1")
            c.execute("DELETE FROM gr_customers")
            c.execute("SELECT 3")
        assert a.fetchone() == (1,)
        with c.pipeline():
            x = c.execute("SELECT 4")
            y = c.execute("SELECT %s::int", (5,))
        assert x.fetchone() == (4,) and y.fetchone() == (5,)


def test_asyncpg_stays_in_sync(guarded: Gateway) -> None:
    tok = guarded.token("erin")

    async def go() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=guarded.port,
            user="erin",
            password=tok,
            database="app",
            ssl="require",
        )
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no-ddl"):
                await conn.execute("DROP TABLE gr_customers")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no-file-access"):
                await conn.fetch("SELECT pg_read_file($1)", "/etc/passwd")
            assert await conn.fetchval("SELECT count(*) FROM gr_customers") == 2
            stmt = await conn.prepare("SELECT id FROM gr_customers WHERE id = $1")
            assert await stmt.fetchval(2) == 2
        finally:
            await conn.close()

    asyncio.run(go())


def test_least_privilege_for_a_group(guarded: Gateway) -> None:
    tok = guarded.token("dana", "user", "1h", "--group", "data-science")
    with psycopg.connect(guarded.dsn(tok), autocommit=True) as c:
        assert c.execute("SELECT kind FROM analytics.gr_events").fetchall() == [("click",)]
        for sql in (
            "SELECT * FROM gr_customers",
            "SELECT * FROM public.gr_customers",
            "SELECT e.id FROM analytics.gr_events e JOIN gr_customers c ON c.id = e.id",
            "INSERT INTO analytics.gr_events VALUES (2, 'x')",
            "SET search_path = analytics, public",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="ds-read-analytics"):
                c.execute(sql)
        with c.transaction():  # transaction control is always allowed
            assert c.execute("SELECT count(*) FROM analytics.gr_events").fetchone() == (1,)
