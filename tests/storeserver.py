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

import itertools
import os
import threading
from pathlib import Path

from tests.integration.pgcluster import PgCluster

__all__ = [
    "ENGINE",
    "ENGINES",
    "STORE_PASSWORD",
    "STORE_ROLE",
    "fresh_store_url",
    "stop_store_server",
    "store_server",
    "store_settings",
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


def store_server() -> PgCluster:
    """The session's PostgreSQL cluster for stores, started on first use (TLS, SCRAM;
    fsync off: a test store need not survive a power cut)."""
    global _server
    with _lock:
        if _server is None:
            cluster = PgCluster(
                settings={"max_connections": _MAX_CONNECTIONS, "fsync": "off"}
            ).start()
            cluster.psql(f"CREATE ROLE {STORE_ROLE} LOGIN PASSWORD '{STORE_PASSWORD}'")
            _server = cluster
        return _server


def stop_store_server() -> None:
    global _server
    with _lock:
        if _server is not None:
            _server.stop()
            _server = None


def fresh_store_url(engine: str, data_dir: Path | None = None) -> tuple[str, str | None]:
    """(URL, password) of a new, empty store of the engine: an SQLite file under
    ``data_dir``, or a new PostgreSQL database owned by the store role."""
    if engine == "sqlite":
        if data_dir is None:
            raise ValueError("an SQLite store needs a directory")
        return f"sqlite://{data_dir / 'ledgergate.db'}", None
    server = store_server()
    name = f"lg_{os.getpid()}_{next(_numbers)}"
    server.psql(f"CREATE DATABASE {name} OWNER {STORE_ROLE}")
    url = f"postgresql://{STORE_ROLE}@{server.host}:{server.port}/{name}?sslmode=require"
    return url, STORE_PASSWORD


def store_settings(data_dir: Path) -> dict[str, str]:
    """Configuration keys that put a test gateway's store on the chosen engine."""
    if ENGINE == "sqlite":
        return {}
    url, password = fresh_store_url(ENGINE)
    assert password is not None
    return {"store": url, "store_password": password}
