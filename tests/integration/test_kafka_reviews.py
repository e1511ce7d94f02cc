"""Just-in-time review of Kafka admin operations: a DeleteTopics on ``orders-*`` is held
(within the client's request timeout) until a reviewer approves it through the API,
then reaches the broker; a denied one never does and the client gets POLICY_VIOLATION
naming the review; with ``wait: answer`` CreatePartitions fails at once with the review
id and the identical request passes once approved."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions

from tests.integration.gateway import free_port
from tests.integration.kafkagw import KafkaGateway
from tests.integration.kafkaserver import KafkaCluster
from tests.integration.reviewapi import ReviewApi, in_background

pytestmark = [pytest.mark.integration]

RULES: list[dict[str, Any]] = [
    {
        "id": "order-topic-deletes",
        "review": {
            "kind": "command",
            "when": {"operations": ["DeleteTopics"], "topics": ["orders-*"]},
            "reviewers": ["platform"],
            "timeout": "5m",
        },
    },
    {
        "id": "partition-changes",
        "review": {
            "kind": "command",
            "when": {"operations": ["CreatePartitions"]},
            "reviewers": ["platform"],
            "wait": "answer",
        },
    },
]


@pytest.fixture(scope="module")
def g(
    kafka_cluster: KafkaCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaGateway]:
    api = free_port()
    gw = KafkaGateway(
        tmp_path_factory.mktemp("kgwr"),
        kafka_cluster,
        extra={
            "listeners": {"api": {"address": f"127.0.0.1:{api}"}},
            "roles": {"reviewer": {"groups": ["platform"]}},
            "policy": {"rules": RULES},
        },
    ).start()
    gw.api_port = api  # type: ignore[attr-defined]
    try:
        yield gw
    finally:
        gw.stop()


def Api(g: Any) -> ReviewApi:
    """A reviewer (bob, in the ``platform`` group) at the gateway's API."""
    return ReviewApi(g.api_port, g.ca, g.gw.token("bob", "user", "1h", "--group", "platform"))


def test_a_held_topic_delete_runs_after_approval_and_a_denied_one_never(g: KafkaGateway) -> None:
    keep, drop = f"orders-{uuid.uuid4().hex[:6]}", f"orders-{uuid.uuid4().hex[:6]}"
    for t in (keep, drop):
        g.cluster.create_topic(t)
    admin = AdminClient(g.conf(g.token("erin")))
    with Api(g) as api:
        _held_then_denied(g, admin, api, keep, drop)


def _held_then_denied(
    g: KafkaGateway, admin: AdminClient, api: ReviewApi, keep: str, drop: str
) -> None:
    th, out = in_background(
        lambda: admin.delete_topics([drop], request_timeout=60)[drop].result(70)
    )
    rv = api.pending()
    assert rv["rule_id"] == "order-topic-deletes" and rv["requester"]["subject"] == "erin"
    assert rv["statement"] == f"DeleteTopics {drop}"
    assert drop in g.cluster.admin().list_topics(timeout=10).topics  # held, not sent
    api.decide(rv["id"], "approve", "CHG-42 decommission")
    th.join(60)
    assert "error" not in out, out
    deadline = time.monotonic() + 15
    while drop in g.cluster.admin().list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, "the approved delete did not reach the broker"
        time.sleep(0.3)

    th, out = in_background(
        lambda: admin.delete_topics([keep], request_timeout=60)[keep].result(70)
    )
    rv = api.pending()
    api.decide(rv["id"], "deny", "still in use")
    th.join(60)
    err = out["error"]
    assert isinstance(err, KafkaException)
    assert err.args[0].code() == KafkaError.POLICY_VIOLATION
    assert keep in g.cluster.admin().list_topics(timeout=10).topics
    g.indexed()
    cmds = [e for e in g.entries("command") if e["command"].get("op") == "delete_topics"]
    assert len(cmds) == 1 and cmds[0]["command"]["review"]["id"]
    blocks = [e for e in g.entries("decision.block") if keep in e["command"].get("topics", [])]
    assert blocks and "denied" in blocks[0]["decision"]["message"]


def test_answer_mode_fails_fast_then_passes_once_approved(g: KafkaGateway) -> None:
    topic = f"events-{uuid.uuid4().hex[:6]}"
    g.cluster.create_topic(topic)
    admin = AdminClient(g.conf(g.token("ci-bot")))
    with Api(g) as api:
        _answer_mode(g, admin, api, topic)


def _answer_mode(g: KafkaGateway, admin: AdminClient, api: ReviewApi, topic: str) -> None:
    def grow() -> None:
        admin.create_partitions([NewPartitions(topic, 3)])[topic].result(30)

    started = time.monotonic()
    with pytest.raises(KafkaException) as e:
        grow()
    assert time.monotonic() - started < 10
    assert e.value.args[0].code() == KafkaError.POLICY_VIOLATION
    rv = api.pending()
    assert rv["id"] in e.value.args[0].str()
    api.decide(rv["id"], "approve", "scale-out")
    grow()
    md = g.cluster.admin().list_topics(topic, timeout=10)
    assert len(md.topics[topic].partitions) == 3
