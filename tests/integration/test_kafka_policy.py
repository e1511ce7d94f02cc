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
