"""The seeds' case on Kafka: a producer whose token expires or is revoked mid-stream is
cut, cannot log in again, and the ledger shows the last message the broker accepted
from it and who sent it.

A confluent-kafka producer keeps producing through the gateway; the token runs out (or
an admin revokes it). The gateway ends the session at once (a ``session.terminated``
entry), the client's reconnect is refused (``auth.fail``), messages produced after the
cut never reach the broker, and ``audit verify`` passes.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from ledgergate.wire.kafka.records import content_digest
from tests.integration.kafkagw import KafkaGateway
from tests.integration.kafkaserver import KafkaCluster

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def kgw(
    kafka_cluster: KafkaCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaGateway]:
    g = KafkaGateway(tmp_path_factory.mktemp("kgwi"), kafka_cluster).start()
    try:
        yield g
    finally:
        g.stop()


class Pipeline:
    """Produce one message every ``every`` seconds until stopped; remembers what the
    broker acknowledged and what failed."""

    def __init__(self, conf: dict[str, Any], topic: str, every: float = 0.1) -> None:
        self.p = Producer({**conf, "acks": "all", "message.timeout.ms": 6000, "retries": 0})
        self.topic = topic
        self.every = every
        self.acked: list[bytes] = []
        self.failed: list[bytes] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _report(self, err: Any, msg: Any) -> None:
        (self.failed if err is not None else self.acked).append(msg.value())

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            self.p.produce(self.topic, f"chunk-{i:05d}".encode(), on_delivery=self._report)
            self.p.poll(0)
            i += 1
            time.sleep(self.every)
        self.p.flush(10)

    def start(self) -> Pipeline:
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join(30)


def _wait(cond: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def _terminated(kgw: KafkaGateway, subject: str) -> list[dict[str, Any]]:
    kgw.indexed()
    return [
        e
        for e in kgw.entries("session.terminated")
        if (e.get("identity") or {}).get("subject") == subject
    ]


def _broker_has(kgw: KafkaGateway, topic: str) -> list[bytes]:
    """Every message the broker holds in the topic's one partition (read directly, up to
    the high watermark, without a consumer group)."""
    c = Consumer({**kgw.cluster.sasl_config(), "group.id": "check", "enable.auto.commit": False})
    try:
        _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=20)
        c.assign([TopicPartition(topic, 0, 0)])
        got: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(got) < high and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value())
    finally:
        c.close()
    assert len(got) == high, (len(got), high)
    return got


def _check_cut(kgw: KafkaGateway, subject: str, topic: str, pipe: Pipeline, reason: str) -> None:
    _wait(lambda: bool(_terminated(kgw, subject)), within=20)
    time.sleep(2)  # the producer keeps trying after the cut
    pipe.stop()
    term = _terminated(kgw, subject)
    assert {t["reason"] for t in term} == {reason}
    assert pipe.acked and pipe.failed, (len(pipe.acked), len(pipe.failed))
    # The broker holds what was acknowledged, and at most the requests in flight when the
    # session was cut (forwarded, their answers never delivered); each of those is on the
    # ledger as sent by the identity, before the cut. Nothing produced after it arrived.
    on_broker = _broker_has(kgw, topic)
    assert set(pipe.acked) <= set(on_broker)
    assert len(on_broker) - len(pipe.acked) <= 5, (len(on_broker), len(pipe.acked))
    kgw.indexed()
    cut_at = min(t["ts_ns"] for t in term)
    sent = {
        d
        for e in kgw.entries("chunk")
        if e["direction"] == "c2s"
        and (e.get("identity") or {}).get("subject") == subject
        and e["ts_ns"] <= cut_at
        for d in e["chunk"]["record_sha256"]
    }
    assert {content_digest(None, v).hex() for v in on_broker} <= sent
    # The ledger names the last accepted message and its sender.
    mine = [
        e
        for e in kgw.entries("command.result")
        if (e.get("identity") or {}).get("subject") == subject and e["command"]["op"] == "produce"
    ]
    assert mine and all(e["outcome"] == "accepted" for e in mine)
    last = max(p["base_offset"] for e in mine for p in e["partitions"])
    assert len(pipe.acked) - 1 <= last <= len(on_broker) - 1
    refused = [
        e for e in kgw.entries("auth.fail") if (e.get("identity") or {}).get("subject") == subject
    ]
    assert refused, "the producer's reconnect after the cut was not refused"
    # It kept reconnecting (every few dozen ms); the ledger holds one entry per 10 s.
    assert len(refused) <= 2, len(refused)
    assert kgw.gw.cli("audit", "verify", check=False).returncode == 0


def test_token_expiring_mid_stream_cuts_the_producer(kgw: KafkaGateway) -> None:
    topic = f"logs-{uuid.uuid4().hex[:8]}"
    kgw.cluster.create_topic(topic)
    pipe = Pipeline(kgw.conf(kgw.token("contractor-etl", "6s")), topic).start()
    _check_cut(kgw, "contractor-etl", topic, pipe, "token expired")


def test_revoking_the_token_cuts_the_producer(kgw: KafkaGateway) -> None:
    topic = f"logs-{uuid.uuid4().hex[:8]}"
    kgw.cluster.create_topic(topic)
    pipe = Pipeline(kgw.conf(kgw.token("offboarded", "30d")), topic).start()
    _wait(lambda: len(pipe.acked) >= 10, within=20)
    rows = json.loads(kgw.gw.cli("token", "list", "--identity", "offboarded", "--json").stdout)
    kgw.gw.cli("token", "revoke", str(rows[-1]["id"]))
    _check_cut(kgw, "offboarded", topic, pipe, "token revoked")


def test_disabling_the_identity_cuts_the_producer(kgw: KafkaGateway) -> None:
    topic = f"logs-{uuid.uuid4().hex[:8]}"
    kgw.cluster.create_topic(topic)
    pipe = Pipeline(kgw.conf(kgw.token("leaver", "30d")), topic).start()
    _wait(lambda: len(pipe.acked) >= 10, within=20)
    kgw.gw.cli("identities", "disable", "leaver", "--reason", "offboarded")
    _check_cut(kgw, "leaver", topic, pipe, "identity disabled")
