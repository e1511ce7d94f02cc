"""Kafka grants and guardrails, with real clients against a real broker.

Grants per topic and consumer group (an allow rule for the ``etl`` group), and
guardrails nobody passes (no deleting ``prod-*`` topics, no changing their configs):
refused with the Kafka errors clients understand (TOPIC_AUTHORIZATION_FAILED,
GROUP_AUTHORIZATION_FAILED, POLICY_VIOLATION with the rule's message), recorded as
``decision.block`` entries, and never reaching the broker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from tests.integration.kafkagw import KafkaGateway
from tests.integration.kafkaserver import KafkaCluster

pytestmark = [pytest.mark.integration]

POLICY = {
    "rules": [
        {
            "id": "keep-prod-topics",
            "deny": {
                "operations": ["DeleteTopics", "DeleteRecords", "*AlterConfigs"],
                "topics": ["prod-*"],
            },
            "message": "production topics change through the platform team",
        },
        {
            "id": "pii-on-consume",
            "mask": {"fields": ["$.email"], "detectors": ["payment_card"], "topics": ["pii-*"]},
        },
        {
            "id": "etl-grants",
            "groups": ["etl"],
            "allow": [
                {"operations": ["produce"], "topics": ["logs-*"]},
                {"operations": ["consume"], "topics": ["logs-*"], "consumer_groups": ["etl-*"]},
                {"operations": ["group"], "consumer_groups": ["etl-*"]},
            ],
        },
    ]
}


@pytest.fixture(scope="module")
def kgw(
    kafka_cluster: KafkaCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaGateway]:
    g = KafkaGateway(
        tmp_path_factory.mktemp("kgwp"), kafka_cluster, extra={"policy": POLICY}
    ).start()
    try:
        yield g
    finally:
        g.stop()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _deliver(conf: dict[str, Any], topic: str) -> Any:
    p = Producer({**conf, "message.timeout.ms": 10000, "retries": 0})
    out: list[Any] = []
    p.produce(topic, b"v", on_delivery=lambda e, m: out.append(e))
    p.flush(15)
    return out[0] if out else None


def test_grants_per_topic(kgw: KafkaGateway) -> None:
    allowed, other = _name("logs"), _name("secret")
    for t in (allowed, other):
        kgw.cluster.create_topic(t)
    conf = kgw.conf(kgw.token("etl-job", "1h", "--group", "etl"))
    assert _deliver(conf, allowed) is None
    err = _deliver(conf, other)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    kgw.indexed()
    blocks = [e for e in kgw.entries("decision.block") if other in e["command"].get("topics", [])]
    assert blocks and blocks[0]["decision"]["rule"] == "etl-grants"
    assert blocks[0]["identity"]["subject"] == "etl-job"
    # Someone outside the group is not bound by the etl grants.
    assert _deliver(kgw.conf(kgw.token("ops")), other) is None


def test_consumer_group_grant(kgw: KafkaGateway) -> None:
    topic = _name("logs")
    kgw.cluster.create_topic(topic)
    conf = kgw.conf(kgw.token("etl-reader", "1h", "--group", "etl"))
    assert _deliver(conf, topic) is None
    c = Consumer({**conf, "group.id": _name("other"), "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    deadline = time.monotonic() + 20
    error = None
    try:
        while time.monotonic() < deadline and error is None:
            m = c.poll(0.5)
            if m is not None and m.error():
                error = m.error()
    finally:
        c.close()
    assert error is not None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, error


def test_guardrail_keeps_prod_topics(kgw: KafkaGateway) -> None:
    topic = _name("prod")
    kgw.cluster.create_topic(topic)
    admin = AdminClient(kgw.conf(kgw.token("ops")))
    fut = admin.delete_topics([topic], operation_timeout=10)[topic]
    with pytest.raises(KafkaException) as e:
        fut.result(timeout=20)
    err = e.value.args[0]
    assert err.code() == KafkaError.POLICY_VIOLATION
    res = ConfigResource(
        "topic",
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    with pytest.raises(KafkaException) as e:
        admin.incremental_alter_configs([res])[res].result(timeout=20)
    assert e.value.args[0].code() == KafkaError.POLICY_VIOLATION
    # The rule's message reaches clients that show the broker's error message.
    assert "platform team" in e.value.args[0].str()
    # The topic is still there, and a topic outside the guardrail can go.
    assert topic in admin.list_topics(timeout=10).topics
    scratch = _name("scratch")
    admin.create_topics([NewTopic(scratch, 1, 1)])[scratch].result(timeout=20)
    admin.delete_topics([scratch])[scratch].result(timeout=20)
    kgw.indexed()
    ops = {
        e["command"]["op"]
        for e in kgw.entries("command")
        if e["command"].get("protocol") == "kafka"
    }
    assert {"create_topics", "delete_topics"} <= ops
    blocked = [e for e in kgw.entries("decision.block") if topic in e["command"].get("topics", [])]
    assert {b["command"]["op"] for b in blocked} >= {"DeleteTopics"}
    assert all(b["decision"]["rule"] == "keep-prod-topics" for b in blocked)


def test_masking_on_consume(kgw: KafkaGateway) -> None:
    """Record values of ``pii-*`` topics are masked before a consumer sees them: the
    JSON field by its path, a card number by its detector; a value that is not JSON is
    withheld whole; offsets, keys and the other records are as produced, and the broker
    holds the raw values."""
    topic = _name("pii")
    kgw.cluster.create_topic(topic)
    ops = kgw.conf(kgw.token("ops"))
    values = [
        b'{"email":"ann@example.com","note":"card 4111 1111 1111 1111","n":1}',
        b'{"n":2,"ok":true}',
        b"not json, but ann@example.com",
    ]
    for codec in ("none", "lz4"):
        p = Producer({**ops, "compression.type": codec, "linger.ms": 50})
        for i, v in enumerate(values):
            p.produce(topic, key=f"k{i}".encode(), value=v)
        assert p.flush(20) == 0
    c = Consumer({**ops, "group.id": _name("readers"), "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < 6 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m)
    finally:
        c.close()
    assert [m.offset() for m in got] == list(range(6))
    assert [m.key() for m in got] == [b"k0", b"k1", b"k2"] * 2
    for m in got[0::3]:
        v = m.value()
        assert b"ann@example.com" not in v and b"4111 1111 1111 1111" not in v
        assert b'"n":1' in v
    assert [m.value() for m in got[1::3]] == [values[1]] * 2  # nothing to mask: as produced
    for m in got[2::3]:
        assert b"ann@example.com" not in m.value() and b"withheld" in m.value()
    # The broker still holds the raw values (masking happens on the way out).
    raw = Consumer(
        {**kgw.cluster.sasl_config(), "group.id": _name("raw"), "auto.offset.reset": "earliest"}
    )
    raw.subscribe([topic])
    first = None
    deadline = time.monotonic() + 20
    while first is None and time.monotonic() < deadline:
        m = raw.poll(0.5)
        if m is not None and not m.error():
            first = m
    raw.close()
    assert first is not None and first.value() == values[0]
    kgw.indexed()
    fetched = [
        e for e in kgw.entries("chunk") if e["direction"] == "s2c" and e["chunk"]["topic"] == topic
    ]
    assert fetched and all(e["chunk"]["sha256_in"] != e["chunk"]["sha256_out"] for e in fetched)
    assert all("record_sha256_out" in e["chunk"] for e in fetched)
    masks = [e for e in kgw.entries("mask") if e["chunk"]["topic"] == topic]
    counted = {(m["field"], m["rule"]) for e in masks for m in e["masking"]}
    assert {("$.email", "pii-on-consume"), ("payment_card", "pii-on-consume")} <= counted
    assert ("value withheld", "pii-on-consume") in counted
    # No raw value reached the ledger.
    assert b"ann@example.com" not in kgw.gw.store_bytes()
