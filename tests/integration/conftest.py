"""Fixtures for tests against real servers: throwaway PostgreSQL clusters (`pg`, shared by
the session, and `pg_cluster_factory` for per-test variants). Gateway processes have
their own fixtures in tests/integration/fixtures.py.

Every test under tests/integration/ gets the ``integration`` marker, so
``pytest -m 'not integration'`` runs the fast part alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.pgcluster import PgCluster, PgClusterFactory

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    """The session's shared cluster: SCRAM over TLS (plaintext also accepted), password
    required, with an ``app`` database. Tests must not change its global state."""
    with PgCluster() as cluster:
        cluster.psql("CREATE DATABASE app")
        yield cluster


@pytest.fixture
def pg_cluster_factory() -> Iterator[PgClusterFactory]:
    """Start extra clusters for one test: ``pg_cluster_factory(auth="md5")``; keyword
    arguments are PgCluster's. All of them are stopped and deleted after the test."""
    started: list[PgCluster] = []

    def make(**options: Any) -> PgCluster:
        cluster = PgCluster(**options)
        started.append(cluster)
        return cluster.start()

    try:
        yield make
    finally:
        for cluster in reversed(started):
            cluster.stop()
