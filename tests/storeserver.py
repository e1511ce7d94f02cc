"""The store engine the test-suite runs on, and a PostgreSQL server for that engine.

``LEDGERGATE_TEST_STORE=postgresql`` runs every gateway, CLI and service test on a
PostgreSQL store (a fresh database per store, on a cluster this module starts once per
test session as the fixtures start every server); unset or ``sqlite``, they run on the
embedded SQLite store. The store tests in tests/store run on both engines whatever it says.

``store_settings(data_dir)`` is what a test's configuration adds for the chosen engine:
nothing for SQLite (the data directory's default), ``store`` and ``store_password`` for
PostgreSQL. ``fresh_store_url("postgresql")`` makes an empty database and returns its URL
and password.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import threading
from pathlib import Path

import psycopg

from ledgergate.store import Store, open_store
from tests.integration.pgcluster import PgCluster

__all__ = [
    "ENGINE",
    "ENGINES",
    "STORE_PASSWORD",
    "STORE_ROLE",
    "fresh_store_url",
    "open_for",
    "stop_store_server",
    "store_for",
    "store_server",
    "store_settings",
    "store_yaml",
]

ENGINES = ("sqlite", "postgresql")
ENGINE = os.environ.get("LEDGERGATE_TEST_STORE", "sqlite").strip().lower() or "sqlite"
if ENGINE not in ENGINES:
    raise RuntimeError(f"LEDGERGATE_TEST_STORE must be one of {ENGINES}, not {ENGINE!r}")

STORE_ROLE = "ledgergate"
STORE_PASSWORD = "St0re-role-secret-pw"
# Several gateways (each with a few store connections) run at once in some tests.
_MAX_CONNECTIONS = "300"

_lock = threading.Lock()
_server: PgCluster | None = None
_numbers = itertools.count(1)


# Set by the process that started the server, so the processes a test starts (a
# gateway, a script killed mid-write) reach the same server: "host:port".
_SERVER_ENV = "LEDGERGATE_TEST_STORE_SERVER"


def store_server() -> PgCluster:
    """The session's PostgreSQL cluster for stores, started on first use (TLS, SCRAM;
    fsync off: a test store need not survive a power cut)."""
    global _server
    with _lock:
        if _server is None:
            cluster = PgCluster(
                settings={"max_connections": _MAX_CONNECTIONS, "fsync": "off"}
            ).start()
            cluster.psql(f"CREATE ROLE {STORE_ROLE} LOGIN CREATEDB PASSWORD '{STORE_PASSWORD}'")
            _server = cluster
            os.environ[_SERVER_ENV] = f"{cluster.host}:{cluster.port}"
        return _server


def _server_address() -> tuple[str, int]:
    started_by_parent = os.environ.get(_SERVER_ENV)
    if started_by_parent and _server is None:
        host, _, port = started_by_parent.rpartition(":")
        return host, int(port)
    server = store_server()
    return server.host, server.port


def _create_database(host: str, port: int, name: str) -> None:
    with (
        psycopg.connect(
            host=host,
            port=port,
            dbname="postgres",
            user=STORE_ROLE,
            password=STORE_PASSWORD,
            sslmode="require",
            autocommit=True,
        ) as c,
        # DuplicateDatabase: another process of the same test made it
        contextlib.suppress(psycopg.errors.DuplicateDatabase),
    ):
        c.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))


def stop_store_server() -> None:
    global _server
    with _lock:
        if _server is not None:
            _server.stop()
            _server = None
            os.environ.pop(_SERVER_ENV, None)


def fresh_store_url(engine: str, data_dir: Path | None = None) -> tuple[str, str | None]:
    """(URL, password) of a new, empty store of the engine: an SQLite file under
    ``data_dir``, or a new PostgreSQL database owned by the store role."""
    if engine == "sqlite":
        if data_dir is None:
            raise ValueError("an SQLite store needs a directory")
        return f"sqlite://{data_dir / 'ledgergate.db'}", None
    host, port = _server_address()
    if data_dir is None:
        name = f"lg_{os.getpid()}_{next(_numbers)}"
    else:  # the same directory names the same database, in every process
        name = "lg_" + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:24]
    _create_database(host, port, name)
    url = f"postgresql://{STORE_ROLE}@{host}:{port}/{name}?sslmode=require"
    return url, STORE_PASSWORD


_by_dir: dict[Path, tuple[str, str | None]] = {}


def store_for(data_dir: Path) -> tuple[str, str | None]:
    """(URL, password) of the chosen engine's store for a data directory: the same
    store every time the same directory is named (a test's configuration and its
    ledger helper meet there)."""
    key = data_dir.resolve()
    with _lock:
        found = _by_dir.get(key)
    if found is None:
        found = fresh_store_url(ENGINE, data_dir)
        with _lock:
            found = _by_dir.setdefault(key, found)
    return found


def store_yaml(data_dir: Path) -> str:
    """``store_settings`` as lines of a YAML configuration file."""
    return "".join(f"{k}: {v}\n" for k, v in store_settings(data_dir).items())


def open_for(data_dir: Path) -> Store:
    """A handle on the store of a data directory (see ``store_for``)."""
    url, password = store_for(data_dir)
    return open_store(url, password=password)


def store_settings(data_dir: Path) -> dict[str, str]:
    """Configuration keys that put a test gateway's store on the chosen engine."""
    if ENGINE == "sqlite":
        return {}
    url, password = store_for(data_dir)
    assert password is not None
    return {"store": url, "store_password": password}
