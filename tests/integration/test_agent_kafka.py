"""Kafka through an agent: a broker the gateway cannot reach (inside a network namespace
joined to the host only by a veth pair with link-local addresses), an agent inside that
namespace dialing out to the gateway and carrying every broker leg (bootstrap and the
brokers named in Metadata), clients producing and consuming through the gateway as usual.
An agent not given the broker's address (``--target``) refuses the leg, and the gateway
says why and serves on.

Needs root and ``ip netns`` (as CI has); skipped where they are missing."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ledgergate.wire.kafka.records import content_digest
from tests.integration.gateway import free_port
from tests.integration.kafkagw import KafkaGateway
from tests.integration.kafkaserver import QUICK_JVM_OPTIONS, KafkaCluster
from tests.integration.netns import Agent, Netns, needs_netns, private_network
from tests.integration.test_kafka_gateway import _consume

pytestmark = [pytest.mark.integration, needs_netns]

AGENT = "site-agent"
DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def ns() -> Iterator[Netns]:
    """The module's namespace (shared: the broker in it takes several seconds to start)."""
    with private_network() as n:
        yield n


@pytest.fixture(scope="module")
def hidden_kafka(ns: Netns) -> Iterator[KafkaCluster]:
    """One broker inside the namespace. Its admin helpers connect from the host and so
    cannot be used: topics are made through the gateway."""
    with KafkaCluster(tls=False, jvm_options=QUICK_JVM_OPTIONS, netns=ns.name) as cluster:
        yield cluster


def _broker(cluster: KafkaCluster) -> tuple[str, int]:
    ((host, port),) = cluster.brokers.values()
    return host, port


@pytest.fixture
def via_agent(
    ns: Netns, hidden_kafka: KafkaCluster, tmp_path: Path
) -> Iterator[tuple[KafkaGateway, int]]:
    """A gateway whose ``events`` connection is carried by agent ``site-agent``, and the
    port of its agent listener (on the host's end of the veth pair)."""
    port = free_port()
    g = KafkaGateway(
        tmp_path,
        hidden_kafka,
        connection={"via": AGENT},
        extra={"listeners": {"agent": {"address": f"{ns.host_ip}:{port}"}}},
    ).start()
    try:
        yield g, port
    finally:
        g.stop()


def _create_topic(conf: dict[str, Any], name: str) -> None:
    """Create a one-partition topic through the gateway and wait for its leader."""
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=DEADLINE_S)
    deadline = time.monotonic() + DEADLINE_S
    while True:
        t = admin.list_topics(name, timeout=DEADLINE_S).topics.get(name)
        parts = {} if t is None or t.error is not None else t.partitions
        if len(parts) == 1 and all(p.leader >= 0 for p in parts.values()):
            return
        assert time.monotonic() < deadline, f"topic {name} has no leader: {t}"
        time.sleep(0.1)


def _produce(
    conf: dict[str, Any], topic: str, msgs: list[tuple[bytes, bytes]], **more: Any
) -> list[tuple[Any, Any]]:
    """Produce and wait for every delivery report. The producer is gone on return (the
    agent's graceful stop waits for the legs its connections hold)."""
    p = Producer({**conf, "enable.idempotence": True, "acks": "all", "linger.ms": 5, **more})
    reports: list[tuple[Any, Any]] = []
    for k, v in msgs:
        p.produce(topic, key=k, value=v, on_delivery=lambda e, m: reports.append((e, m)))
    p.flush(DEADLINE_S)
    return reports


def _wait_log(g: KafkaGateway, text: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while text not in g.gw.logs():
        assert time.monotonic() < deadline, f"gateway log lacks {text!r}:\n{g.gw.logs()}"
        time.sleep(0.1)


def test_clients_reach_a_hidden_broker_through_the_agent(
    ns: Netns, hidden_kafka: KafkaCluster, via_agent: tuple[KafkaGateway, int]
) -> None:
    host, bport = _broker(hidden_kafka)
    # the gateway's side cannot reach the broker at all
    with pytest.raises(OSError):
        socket.create_connection((host, bport), timeout=2).close()
    g, port = via_agent
    agent = Agent(ns, g.gw, port, g.gw.token(AGENT, "service"), targets=(f"events={host}:{bport}",))
    try:
        agent.wait_for(f"connected to the gateway as agent {AGENT}")
        topic = f"t-{uuid.uuid4().hex[:10]}"
        _create_topic(g.conf(g.token("ops"), user="ops"), topic)

        token = g.token("etl")
        msgs = [(f"k{i}".encode(), f"event {i} via the agent".encode()) for i in range(50)]
        reports = _produce(g.conf(token), topic, msgs)
        assert len(reports) == len(msgs) and all(e is None for e, _ in reports), reports
        assert [m.offset() for _, m in reports] == list(range(len(msgs)))

        got = _consume(g.conf(g.token("analyst"), user="analyst"), topic, len(msgs))
        assert [(m.key(), m.value()) for m in got] == msgs
        assert [m.offset() for m in got] == list(range(len(msgs)))

        # the ledger has every message, in order, as produced by etl
        g.indexed()
        produced = g.chunks(topic, "c2s")
        assert produced and all(e["identity"]["subject"] == "etl" for e in produced)
        want = [content_digest(k, v).hex() for k, v in msgs]
        assert [d for e in produced for d in e["chunk"]["record_sha256"]] == want
        commands = {
            (e["session_id"], e["command"]["seq"]): e
            for e in g.entries("command")
            if e["command"]["op"] == "produce"
        }
        results = {
            (e["session_id"], e["command"]["seq"]): e
            for e in g.entries("command.result")
            if e["command"]["op"] == "produce"
        }
        for e in produced:
            key = (e["session_id"], e["chunk"]["command"])
            assert commands[key]["identity"]["subject"] == "etl"
            assert results[key]["outcome"] == "accepted"
        fetched = g.chunks(topic, "s2c")
        assert fetched and all(e["identity"]["subject"] == "analyst" for e in fetched)
        assert set(want) <= {d for e in fetched for d in e["chunk"]["record_sha256"]}
        verify = g.gw.cli("audit", "verify", check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr

        # the agent carried the legs and never saw a user's token
        log = agent.log.read_text()
        assert token not in log
        assert "refused" not in log, log
    finally:
        agent.stop()


def test_an_agent_without_the_brokers_address_is_a_clear_error(
    ns: Netns, hidden_kafka: KafkaCluster, via_agent: tuple[KafkaGateway, int]
) -> None:
    host, bport = _broker(hidden_kafka)
    g, port = via_agent
    wrong = free_port()
    while wrong == bport:
        wrong = free_port()
    agent = Agent(ns, g.gw, port, g.gw.token(AGENT, "service"), targets=(f"events={host}:{wrong}",))
    try:
        agent.wait_for(f"connected to the gateway as agent {AGENT}")
        # the client never reaches the cluster: its message times out
        reports = _produce(
            g.conf(g.token("etl")), "anything", [(b"k", b"x")], **{"message.timeout.ms": 3000}
        )
        assert [e.code() if e else None for e, _ in reports] == [KafkaError._MSG_TIMED_OUT]
        # the gateway's log, its ledger and the agent's log say why
        want = f"{host}:{bport} is not a target of connection 'events'"
        _wait_log(g, want)
        agent.wait_for(want)
        rejects = [e["reason"] for e in g.entries("session.reject")]
        assert rejects and all(want in r for r in rejects), rejects[:3]
        # the client retries every few milliseconds: recorded once per window, not each time
        assert len(rejects) <= 2, len(rejects)
    finally:
        agent.stop()
    # the gateway serves on: an agent that carries the broker makes it reachable
    assert g.gw.proc is not None and g.gw.proc.poll() is None
    agent = Agent(ns, g.gw, port, g.gw.token(AGENT, "service"), targets=(f"events={host}:{bport}",))
    try:
        agent.wait_for(f"connected to the gateway as agent {AGENT}")
        md = AdminClient(g.conf(g.token("ops"), user="ops")).list_topics(timeout=DEADLINE_S)
        assert sorted(md.brokers) == [1]
    finally:
        agent.stop()
    assert g.gw.proc is not None and g.gw.proc.poll() is None
