"""S3 and HTTP APIs through an agent: an object store (versitygw) and a REST API, each
inside a network namespace the gateway cannot reach, served to boto3 and httpx through
the gateway, which reaches them through ``ledgergate agent`` running in the namespace.
TLS to each server runs end to end from the gateway, inside the agent's leg; every
request is on the ledger as without an agent."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import botocore.exceptions
import pytest

from tests.integration.gateway import free_port
from tests.integration.httpapi import HttpApi
from tests.integration.httpgw import HttpGateway
from tests.integration.netns import Agent, Netns, needs_netns
from tests.integration.s3gw import S3Gateway
from tests.integration.s3server import S3Server

pytestmark = [pytest.mark.integration, needs_netns]

MiB = 1024 * 1024


@pytest.fixture
def hidden_s3(netns: Netns) -> Iterator[S3Server]:
    with S3Server(tls=True, netns=netns.name) as s3:
        yield s3


@pytest.fixture
def hidden_api(netns: Netns) -> Iterator[HttpApi]:
    api = HttpApi(tls=True, netns=netns.name).start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture
def stops() -> Iterator[list[Callable[[], None]]]:
    """What to stop when the test ends (the gateways it started)."""
    todo: list[Callable[[], None]] = []
    yield todo
    for stop in reversed(todo):
        stop()


def _unreachable(port: int) -> None:
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_boto3_reaches_a_hidden_object_store_through_the_agent(
    tmp_path: Path, hidden_s3: S3Server, netns: Netns, stops: list[Callable[[], None]]
) -> None:
    _unreachable(hidden_s3.port)
    port = free_port()
    g = S3Gateway(
        tmp_path / "gw",
        hidden_s3,
        connection={"via": "site-agent"},
        extra={"listeners": {"agent": {"address": f"{netns.host_ip}:{port}"}}},
    ).start()
    stops.append(g.stop)
    agent = Agent(
        netns, g.gw, port, g.gw.token("site-agent", "service"),
        targets=(f"logs=127.0.0.1:{hidden_s3.port}",),
    )  # fmt: skip
    try:
        agent.wait_for("connected to the gateway as agent site-agent")
        s3 = g.client(g.key("etl"))
        s3.create_bucket(Bucket="hidden")
        body = os.urandom(3 * MiB + 5)
        s3.put_object(Bucket="hidden", Key="logs/part-0001", Body=body)
        assert s3.get_object(Bucket="hidden", Key="logs/part-0001")["Body"].read() == body
        listed = s3.list_objects_v2(Bucket="hidden")["Contents"]
        assert [o["Key"] for o in listed] == ["logs/part-0001"]
        # the object is in the hidden store, as sent
        stored = hidden_s3.object_path("hidden", "logs/part-0001").read_bytes()
        assert hashlib.sha256(stored).digest() == hashlib.sha256(body).digest()
        g.indexed()
        ops = [e["command"]["op"] for e in g.entries("command")]
        assert ops == ["CreateBucket", "PutObject", "GetObject", "ListObjectsV2"]
        assert g.gw.cli("audit", "verify").returncode == 0
    finally:
        agent.stop()
    # with the agent gone, the request fails with the reason and nothing else
    with pytest.raises(botocore.exceptions.ClientError) as err:
        g.client(g.key("etl")).head_bucket(Bucket="hidden")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] in (502, 503)
    assert hidden_s3.secret_key not in g.gw.log_path.read_text()


def test_httpx_reaches_a_hidden_api_through_the_agent(
    tmp_path: Path, hidden_api: HttpApi, netns: Netns, stops: list[Callable[[], None]]
) -> None:
    _unreachable(hidden_api.port)
    port = free_port()
    g = HttpGateway(
        tmp_path / "gw",
        hidden_api,
        connection={"via": "site-agent"},
        extra={"listeners": {"agent": {"address": f"{netns.host_ip}:{port}"}}},
    ).start()
    stops.append(g.stop)
    agent = Agent(
        netns, g.gw, port, g.gw.token("site-agent", "service"),
        targets=(f"api=127.0.0.1:{hidden_api.port}",),
    )  # fmt: skip
    try:
        agent.wait_for("connected to the gateway as agent site-agent")
        body = os.urandom(2 * MiB)
        with g.client(g.token("etl")) as c:
            r = c.get("/api/reports/1")
            assert r.status_code == 200 and r.json()["title"] == "Q3 revenue"
            put = c.put("/api/blobs/b.bin", content=body)
            assert put.status_code == 200, put.text
            assert put.json()["sha256"] == hashlib.sha256(body).hexdigest()
            assert c.get("/api/blobs/b.bin").content == body
        g.indexed()
        cmds = [(e["command"]["method"], e["command"]["path"]) for e in g.entries("command")]
        assert cmds == [
            ("GET", "/api/reports/1"),
            ("PUT", "/api/blobs/b.bin"),
            ("GET", "/api/blobs/b.bin"),
        ]
        assert g.gw.cli("audit", "verify").returncode == 0
        # the agent carried bytes it cannot read: the API's TLS ran from the gateway
        assert hidden_api.token not in agent.log.read_text()
    finally:
        agent.stop()
