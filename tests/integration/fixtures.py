"""Fixtures for the gateway integration tests: real ``ledgergate serve`` processes in
front of the shared SCRAM + TLS cluster."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.gateway import Gateway, free_port
from tests.integration.pgcluster import PgCluster


@pytest.fixture(scope="session")
def pgc(pg: PgCluster) -> PgCluster:
    """The shared SCRAM + TLS cluster (``pg`` from conftest), which has an ``app`` database."""
    return pg


def app_connection(pg: PgCluster, **over: object) -> dict[str, object]:
    conn: dict[str, object] = {
        "name": "app",
        "type": "postgres",
        "address": f"127.0.0.1:{pg.port}",
        "database": "app",
        "credentials": {"user": "postgres", "password": "env:APP_DB_PASSWORD"},
        "sslmode": "require",
        "recording": "redacted",
    }
    conn.update(over)
    return conn


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def gateway_factory(tmp_path: Path, pgc: PgCluster) -> Iterator[GatewayFactory]:
    started: list[Gateway] = []

    def make(connections: list[dict[str, object]] | None = None, **kw: Any) -> Gateway:
        env = {"APP_DB_PASSWORD": pgc.password, **kw.pop("env", {})}
        gw = Gateway(
            tmp_path / f"gw{len(started)}", connections or [app_connection(pgc)], env=env, **kw
        )
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture
def gateway(gateway_factory: GatewayFactory) -> Gateway:
    return gateway_factory().start()


def api_gateway(
    factory: GatewayFactory,
    connections: list[dict[str, object]],
    extra: dict[str, Any],
    **kw: Any,
) -> Gateway:
    """A started gateway (``extra``: more configuration; ``kw`` to the factory) whose
    REST API listens on a free loopback port, kept as ``gw.api_port`` for ``api_client``."""
    port = free_port()
    given = extra.get("listeners", {})
    listeners = {**given, "api": {**given.get("api", {}), "address": f"127.0.0.1:{port}"}}
    gw = factory(connections, extra={**extra, "listeners": listeners}, **kw).start()
    gw.api_port = port  # type: ignore[attr-defined]
    return gw


def api_client(gw: Gateway) -> httpx.Client:
    """An HTTPS client of the API of an ``api_gateway``; the gateway's own generated
    certificate is the trust anchor, as for psql's sslrootcert."""
    ca = ssl.create_default_context(cafile=str(gw.data_dir / "tls" / "server.crt"))
    port: int = gw.api_port  # type: ignore[attr-defined]
    return httpx.Client(base_url=f"https://localhost:{port}", verify=ca)


def bearer(token: str) -> dict[str, str]:
    """The headers of an API call made with ``token``."""
    return {"Authorization": f"Bearer {token}"}
