"""Fixtures for tests against real servers: throwaway PostgreSQL clusters (`pg`, shared by
the session, and `pg_cluster_factory` for per-test variants). Gateway processes have
their own fixtures in tests/integration/fixtures.py. Backends for ``type: s3`` and
``type: http`` connections: versitygw (`s3server`, `s3server_factory`) and a small REST
API (`httpapi`, `httpapi_factory`). Apache Kafka in KRaft mode: `kafka_cluster` (one
broker), `kafka_cluster3` (three) and `kafka_cluster_factory`. OpenSSH's sshd for the SSH
gateway: `sshd` (shared by the session) and `sshd_factory`, logging in the local test
account ``lgssh`` (tests/integration/sshd.py).

Every test under tests/integration/ gets the ``integration`` marker, so
``pytest -m 'not integration'`` runs the fast part alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.httpapi import (
    HttpApi,
    HttpApiFactory,
    https_receiver,  # noqa: F401 (fixtures, for every module)
)
from tests.integration.kafkaserver import QUICK_JVM_OPTIONS, KafkaCluster, KafkaClusterFactory
from tests.integration.netns import netns  # noqa: F401
from tests.integration.pgcluster import PgCluster, PgClusterFactory
from tests.integration.rsyslog import rsyslog  # noqa: F401
from tests.integration.s3server import S3Server, S3ServerFactory
from tests.integration.sshd import sshd, sshd_factory  # noqa: F401

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


@pytest.fixture(scope="session")
def s3server() -> Iterator[S3Server]:
    """The session's shared versitygw (plain HTTP, root credentials only). Tests share
    it: make buckets with ``s3server.new_bucket()`` and leave the others alone."""
    with S3Server() as server:
        yield server


@pytest.fixture
def s3server_factory() -> Iterator[S3ServerFactory]:
    """Start versitygw servers for one test: ``s3server_factory(tls=True)``; keyword
    arguments are S3Server's. All of them are stopped and deleted after the test."""
    started: list[S3Server] = []

    def make(**options: Any) -> S3Server:
        server = S3Server(**options)
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in reversed(started):
            server.stop()


@pytest.fixture
def httpapi() -> Iterator[HttpApi]:
    """A fresh test REST API (bearer token ``httpapi.token``, plain HTTP) for one test."""
    with HttpApi() as api:
        yield api


@pytest.fixture
def httpapi_factory() -> Iterator[HttpApiFactory]:
    """Start test REST APIs for one test: ``httpapi_factory(basic="u:p", tls=True)``;
    keyword arguments are HttpApi's. All of them are stopped after the test."""
    started: list[HttpApi] = []

    def make(**options: Any) -> HttpApi:
        api = HttpApi(**options)
        started.append(api)
        return api.start()

    try:
        yield make
    finally:
        for api in reversed(started):
            api.stop()


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[KafkaCluster]:
    """The session's shared one-broker Kafka: SASL_PLAINTEXT and SASL_SSL listeners,
    SCRAM-SHA-512/256 and PLAIN, admin user only. Tests share it: make topics with
    unique names (``cluster.create_topic``) and leave the others alone."""
    with KafkaCluster(tls=True, jvm_options=QUICK_JVM_OPTIONS) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kafka_cluster3() -> Iterator[KafkaCluster]:
    """The session's shared three-broker Kafka (every node also a controller), with
    replication factor 3 for the internal topics and min.insync.replicas 2. Tests that
    stop a broker must start it again. Both shared clusters run their JVMs with C1 only
    (QUICK_JVM_OPTIONS): quicker to start, slower at sustained load."""
    with KafkaCluster(3, jvm_options=QUICK_JVM_OPTIONS) as cluster:
        yield cluster


@pytest.fixture
def kafka_cluster_factory() -> Iterator[KafkaClusterFactory]:
    """Start Kafka clusters for one test: ``kafka_cluster_factory(3, tls=True)``;
    arguments are KafkaCluster's. All of them are stopped and deleted after the test."""
    started: list[KafkaCluster] = []

    def make(*args: Any, **options: Any) -> KafkaCluster:
        cluster = KafkaCluster(*args, **options)
        started.append(cluster)
        return cluster.start()

    try:
        yield make
    finally:
        for cluster in reversed(started):
            cluster.stop()
