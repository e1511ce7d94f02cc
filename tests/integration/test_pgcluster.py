"""The PostgreSQL fixtures do what the other integration tests rely on: TLS with a
verifiable CA, passwords actually required, the chosen hba method and password storage,
a statement log that shows what ran, and nothing left behind."""

from __future__ import annotations

import socket
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.integration.pgcluster import PgCluster, PgClusterError, PgClusterFactory


def test_scram_over_tls_with_a_verifiable_ca(pg: PgCluster) -> None:
    with psycopg.connect(pg.dsn(sslmode="require")) as conn:
        assert conn.execute("SHOW ssl").fetchone() == ("on",)
        assert conn.execute(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone() == (True,)
        assert conn.execute("SHOW password_encryption").fetchone() == ("scram-sha-256",)
        methods = {
            r[0]
            for r in conn.execute(
                "SELECT auth_method FROM pg_hba_file_rules WHERE type LIKE 'host%'"
            )
        }
        assert methods == {"scram-sha-256"}
    with psycopg.connect(pg.dsn(sslmode="verify-full", sslrootcert=str(pg.ca_cert_path))) as conn:
        assert conn.info.parameter_status("server_version") is not None
        assert conn.pgconn.ssl_in_use


def test_password_is_required(pg: PgCluster) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.dsn(password="not-the-password"))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.dsn(password=""))


def test_statement_log_shows_simple_and_extended_statements(pg: PgCluster) -> None:
    mark = pg.log_offset()
    tag = f"probe_{uuid.uuid4().hex}"
    pg.psql(f"SELECT '{tag}' AS simple")
    with psycopg.connect(pg.dsn("app"), autocommit=True) as conn:
        assert conn.execute(f"SELECT %s::text AS {tag}", ("x",)).fetchone() == ("x",)
        conn.execute(f"SELECT 1\n  AS {tag}_multiline")
    seen = [s for s in pg.statement_log(since=mark) if tag in s]
    assert seen == [
        f"SELECT '{tag}' AS simple",
        f"SELECT $1::text AS {tag}",
        f"SELECT 1\n  AS {tag}_multiline",
    ]
    assert not [s for s in pg.statement_log(since=pg.log_offset()) if tag in s]


def test_md5_cluster_that_requires_tls(pg_cluster_factory: PgClusterFactory) -> None:
    c = pg_cluster_factory(auth="md5", require_tls=True)
    c.create_role("mallory", "m-secret")
    assert c.psql(
        "SELECT rolname, left(rolpassword, 3) FROM pg_authid "
        "WHERE rolname IN ('postgres', 'mallory') ORDER BY 1"
    ).split() == ["mallory|md5", "postgres|md5"]
    assert c.psql(
        "SELECT DISTINCT type, auth_method FROM pg_hba_file_rules WHERE type LIKE 'host%'"
    ).split() == ["hostssl|md5"]
    with psycopg.connect(c.dsn(user="mallory")) as conn:
        assert conn.execute(
            "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone() == ("mallory", True)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(c.dsn(user="mallory", password="wrong"))
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        psycopg.connect(c.dsn(user="mallory", sslmode="disable"))


def test_trust_cluster_without_tls(pg_cluster_factory: PgClusterFactory) -> None:
    c = pg_cluster_factory(auth="trust", tls=False)
    with psycopg.connect(c.dsn(password="", sslmode="disable")) as conn:
        assert conn.execute("SHOW ssl").fetchone() == ("off",)
    with pytest.raises(PgClusterError):
        _ = c.ca_cert_path


def test_stop_leaves_nothing_and_a_failed_start_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    with PgCluster(tls=False) as c:
        root, port = c.root, c.port
        assert root is not None and root.is_dir()
    assert not root.exists()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass

    made: list[Path] = []
    real_mkdtemp = tempfile.mkdtemp

    def spy(**kw: str) -> str:
        d = real_mkdtemp(**kw)
        made.append(Path(d))
        return d

    monkeypatch.setattr(tempfile, "mkdtemp", spy)
    bad = PgCluster(tls=False, settings={"shared_buffers": "lots"})
    with pytest.raises(PgClusterError, match="shared_buffers"):
        bad.start()
    assert made and not made[0].exists() and bad.root is None
