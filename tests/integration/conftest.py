from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.gateway import Gateway
from tests.integration.pgcluster import PgCluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    """A SCRAM + TLS cluster shared by the session, with an `app` database."""
    c = PgCluster().start()
    c.psql("CREATE DATABASE app")
    try:
        yield c
    finally:
        c.stop()


def app_connection(pg: PgCluster, **over: object) -> dict[str, object]:
    conn: dict[str, object] = {
        "name": "app", "type": "postgres", "address": f"127.0.0.1:{pg.port}", "database": "app",
        "credentials": {"user": "postgres", "password": "env:APP_DB_PASSWORD"},
        "sslmode": "require", "recording": "redacted",
    }
    conn.update(over)
    return conn


@pytest.fixture
def gateway_factory(tmp_path: Path, pg: PgCluster) -> Iterator[object]:
    started: list[Gateway] = []

    def make(connections: list[dict[str, object]] | None = None, **kw: object) -> Gateway:
        gw = Gateway(tmp_path / f"gw{len(started)}", connections or [app_connection(pg)],
                     env={"APP_DB_PASSWORD": pg.password}, **kw)  # type: ignore[arg-type]
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture
def gateway(gateway_factory) -> Gateway:  # type: ignore[no-untyped-def]
    return gateway_factory().start()
