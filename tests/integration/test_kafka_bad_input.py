"""Bad input on the Kafka listener: each misbehaving client gets a clear error or a
closed connection, alone; nothing half-recorded reaches a broker; the gateway keeps
serving everyone else.

The misbehaving client is a raw TLS socket speaking the protocol by hand (requests
built with kafka-python's protocol classes where one exists, so the gateway's own codec
is not the only judge); a confluent-kafka producer checks after each case that the
gateway still serves.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from ledgergate.wire.kafka import messages as km
from ledgergate.wire.kafka import records as kr
from tests.integration.kafkagw import KafkaGateway, Raw
from tests.integration.kafkaserver import KafkaCluster

pytestmark = [pytest.mark.integration]


@pytest.fixture(autouse=True)
def _close_raw() -> Iterator[None]:
    """Raw sockets a test opened are closed after it."""
    from tests.integration.kafkagw import Raw

    yield
    Raw.close_all()


K = km.ApiKey


@pytest.fixture(scope="module")
def kgw(
    kafka_cluster: KafkaCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaGateway]:
    g = KafkaGateway(tmp_path_factory.mktemp("kgwb"), kafka_cluster).start()
    try:
        yield g
    finally:
        g.stop()


def _still_serves(g: KafkaGateway, token: str) -> None:
    topic = f"ok-{uuid.uuid4().hex[:8]}"
    g.cluster.create_topic(topic)
    p = Producer({**g.conf(token), "message.timeout.ms": 15000})
    errs: list[Any] = []
    p.produce(topic, b"still here", on_delivery=lambda e, m: errs.append(e))
    p.flush(20)
    assert errs == [None]


@pytest.mark.parametrize(
    "data",
    [
        struct.pack(">i", -5),
        struct.pack(">i", 2**31 - 1),
        b"\x00\x00\x00\x08" + b"\xff" * 8,  # a header naming no API and no version
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["negative-size", "absurd-size", "garbage-header", "http"],
)
def test_garbage_closes_only_that_client(kgw: KafkaGateway, data: bytes) -> None:
    token = kgw.token("fuzz")
    bystander = Raw(kgw)
    bystander.login(token)
    r = Raw(kgw)
    r.send(data)
    assert r.closed()
    bystander.request(K.METADATA, 12, {"topics": None, "allow_auto_topic_creation": False})
    assert bystander.response(K.METADATA, 12)["brokers"]
    _still_serves(kgw, token)


def test_requests_before_authentication_are_refused(kgw: KafkaGateway) -> None:
    r = Raw(kgw)
    r.request(K.METADATA, 12, {"topics": None, "allow_auto_topic_creation": False})
    assert r.closed()
    r = Raw(kgw)
    r.request(K.SASL_AUTHENTICATE, 2, {"auth_bytes": b"\0u\0tok"})  # no SaslHandshake first
    assert r.closed()
    r = Raw(kgw)
    r.request(K.SASL_HANDSHAKE, 1, {"mechanism": "GSSAPI"})
    resp = r.response(K.SASL_HANDSHAKE, 1)
    assert resp["error_code"] == 33 and "PLAIN" in resp["mechanisms"]
    assert r.closed()
    kgw.indexed()
    rejects = [e for e in kgw.entries("session.reject") if e.get("connection") == "events"]
    assert any("before authentication" in e["reason"] for e in rejects)


def test_unknown_api_and_version_out_of_range(kgw: KafkaGateway) -> None:
    token = kgw.token("fuzz")
    r = Raw(kgw)
    r.login(token)
    r.corr += 1
    body = struct.pack(">hhih", 9999, 0, r.corr, 3) + b"raw"
    r.send(struct.pack(">i", len(body)) + body)
    assert r.closed()
    r = Raw(kgw)
    r.login(token)
    r.corr += 1
    body = struct.pack(">hhih", int(K.METADATA), 99, r.corr, 3) + b"raw" + b"\x00"
    r.send(struct.pack(">i", len(body)) + body)
    assert r.closed()
    _still_serves(kgw, token)


def test_corrupt_batch_is_refused_and_never_reaches_the_broker(kgw: KafkaGateway) -> None:
    token = kgw.token("fuzz")
    topic = f"crc-{uuid.uuid4().hex[:8]}"
    kgw.cluster.create_topic(topic)
    header = kr.BatchHeader(0, 0, -1, 2, 0, 0, 0, 0, 0, -1, -1, -1, 1)
    batch = bytearray(kr.encode_batch(header, [kr.NewRecord(0, 0, b"k", b"corrupt me")]))
    batch[-3] ^= 0xFF  # the record's bytes change; the CRC no longer matches
    r = Raw(kgw)
    r.login(token)
    # The broker our bootstrap connection reaches leads the topic's partition (1 broker).
    r.request(
        K.PRODUCE,
        9,
        {
            "transactional_id": None,
            "acks": -1,
            "timeout_ms": 5000,
            "topic_data": [
                {"name": topic, "partition_data": [{"index": 0, "records": bytes(batch)}]}
            ],
        },
    )
    resp = r.response(K.PRODUCE, 9)
    p = resp["responses"][0]["partition_responses"][0]
    assert p["error_code"] == 2  # CORRUPT_MESSAGE
    assert "CRC" in p["error_message"]
    c = Consumer({**kgw.cluster.sasl_config(), "group.id": "wm"})
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 0)
    finally:
        c.close()
    kgw.indexed()
    blocked = [e for e in kgw.entries("decision.block") if e["command"].get("op") == "produce"]
    assert blocked and "CRC" in blocked[-1]["decision"]["message"]
    produced = [e for e in kgw.entries("chunk") if e["chunk"].get("topic") == topic]
    assert produced == []
    _still_serves(kgw, token)


def test_a_malformed_request_body_closes_only_that_client(kgw: KafkaGateway) -> None:
    """A Produce whose body stops short after a valid header: the client is refused and
    recorded, the gateway goes on serving."""
    token = kgw.token("fuzz")
    r = Raw(kgw)
    r.login(token)
    r.corr += 1
    head = km.encode_request_header(K.PRODUCE, 9, r.corr, "raw")
    body = head + b"\x00\x00\x00"  # transactional id length, then nothing
    r.send(struct.pack(">i", len(body)) + body)
    assert r.closed()
    kgw.indexed()
    closes = [e for e in kgw.entries("session.close") if "malformed PRODUCE" in e["outcome"]]
    assert closes and closes[-1]["identity"]["subject"] == "fuzz"
    _still_serves(kgw, token)
