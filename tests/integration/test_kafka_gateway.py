"""Kafka through the gateway, with real clients against a real broker.

A service account produces and consumes through ``ledgergate serve`` with
confluent-kafka (librdkafka), aiokafka and kcat, changing only ``bootstrap.servers`` and
its SASL credentials (PLAIN with a ledgergate token, or OAUTHBEARER), over TLS. The
gateway authenticates to the broker with SCRAM-SHA-512 and a credential the client never
sees. The ledger must name, for every message, who produced it (before the broker had
it) and who read it, by the SHA-256 of its key, value and headers.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from ledgergate.wire.kafka.records import content_digest
from tests.integration.kafkagw import KafkaGateway
from tests.integration.kafkaserver import KafkaCluster

pytestmark = [pytest.mark.integration]


@pytest.fixture(autouse=True)
def _close_raw() -> Iterator[None]:
    """Raw sockets a test opened are closed after it."""
    from tests.integration.kafkagw import Raw

    yield
    Raw.close_all()


@pytest.fixture(scope="module")
def kgw(
    kafka_cluster: KafkaCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaGateway]:
    g = KafkaGateway(tmp_path_factory.mktemp("kgw"), kafka_cluster).start()
    try:
        yield g
    finally:
        g.stop()


def _topic(cluster: KafkaCluster, partitions: int = 1) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.create_topic(name, partitions=partitions)
    return name


def _produce(
    conf: dict[str, Any], topic: str, messages: list[tuple[bytes | None, bytes]], **more: Any
) -> list[Any]:
    p = Producer({**conf, "enable.idempotence": True, "acks": "all", "linger.ms": 5, **more})
    reports: list[Any] = []
    for k, v in messages:
        p.produce(
            topic,
            key=k,
            value=v,
            headers=[("h", b"1")],
            on_delivery=lambda e, m: reports.append((e, m)),
        )
    assert p.flush(30) == 0
    return reports


def _consume(conf: dict[str, Any], topic: str, n: int, timeout: float = 30.0) -> list[Any]:
    c = Consumer({**conf, "group.id": f"g-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                raise KafkaException(m.error())
            got.append(m)
    finally:
        c.close()
    return got


def test_produce_and_consume_recorded_per_message(kgw: KafkaGateway) -> None:
    topic = _topic(kgw.cluster, partitions=2)
    token = kgw.token("etl")
    conf = kgw.conf(token)
    msgs = [(f"k{i}".encode(), f"value {i} ".encode() * 20) for i in range(40)]
    reports = _produce(conf, topic, msgs)
    assert len(reports) == 40 and all(e is None for e, _ in reports)
    got = _consume(kgw.conf(kgw.token("analyst")), topic, 40)
    assert sorted((m.key(), m.value()) for m in got) == sorted(msgs)

    kgw.indexed()
    want = {content_digest(k, v, [_h()]).hex() for k, v in msgs}
    produced = [
        e for e in kgw.entries("chunk") if e["direction"] == "c2s" and e["chunk"]["topic"] == topic
    ]
    assert produced and all(e["identity"]["subject"] == "etl" for e in produced)
    assert {d for e in produced for d in e["chunk"]["record_sha256"]} == want
    for e in produced:
        assert e["chunk"]["producer"]["id"] >= 0  # idempotent producer
        assert e["chunk"]["sha256_in"] == e["chunk"]["sha256_out"]
    results = {
        (e["session_id"], e["command"]["seq"]): e
        for e in kgw.entries("command.result")
        if e["command"]["op"] == "produce"
    }
    for e in produced:
        r = results[(e["session_id"], e["chunk"]["command"])]
        assert r["outcome"] == "accepted"
        part = [p for p in r["partitions"] if p["partition"] == e["chunk"]["partition"]]
        assert part and part[0]["base_offset"] >= 0 and part[0]["error"] is None
    fetched = [
        e for e in kgw.entries("chunk") if e["direction"] == "s2c" and e["chunk"]["topic"] == topic
    ]
    assert fetched and all(e["identity"]["subject"] == "analyst" for e in fetched)
    assert {d for e in fetched for d in e["chunk"]["record_sha256"]} == want


def _h() -> Any:
    from ledgergate.wire.kafka.records import Header

    return Header(b"h", b"1")


def test_metadata_points_at_the_gateway(kgw: KafkaGateway) -> None:
    admin = AdminClient(kgw.conf(kgw.token("ops")))
    md = admin.list_topics(timeout=20)
    assert md.brokers
    for b in md.brokers.values():
        assert b.host == "localhost"
        assert b.port == kgw.broker_ports + b.id


def test_wrong_token_is_refused_and_recorded(kgw: KafkaGateway) -> None:
    p = Producer({**kgw.conf("lg_not_a_token"), "message.timeout.ms": 5000})
    errors: list[Any] = []
    p2 = Producer(
        {**kgw.conf("lg_not_a_token"), "message.timeout.ms": 5000, "error_cb": errors.append}
    )
    p2.produce("whatever", b"x")
    p2.flush(6)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    del p
    kgw.indexed()
    fails = [e for e in kgw.entries("auth.fail") if e.get("request", {}).get("protocol") == "kafka"]
    assert fails


def test_kcat_produces_and_consumes(kgw: KafkaGateway, tmp_path: Path) -> None:
    topic = _topic(kgw.cluster)
    token = kgw.token("kcat-user")
    lines = [f"line {i}" for i in range(10)]
    subprocess.run(
        [*kgw.kcat_args(token), "-P", "-t", topic],
        input="\n".join(lines) + "\n",
        text=True,
        check=True,
        timeout=60,
        capture_output=True,
    )
    out = subprocess.run(
        [*kgw.kcat_args(token), "-C", "-t", topic, "-o", "beginning", "-e", "-q"],
        text=True,
        check=True,
        timeout=60,
        capture_output=True,
    )
    assert out.stdout.split("\n")[:10] == lines


def test_broker_credential_never_leaves_the_gateway(kgw: KafkaGateway) -> None:
    secret = kgw.cluster.admin_password
    kgw.indexed()
    assert secret not in kgw.gw.log_path.read_text()
    assert secret.encode() not in kgw.gw.store_bytes()
    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert digest not in kgw.gw.log_path.read_text()


def test_full_recording_replays_every_message(
    kafka_cluster: KafkaCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With ``recording: full`` the batches are kept (encrypted): ``sessions replay``
    shows each message produced and fetched, in order, with its offset once fetched;
    ``sessions show`` lists the batches with their digests and the broker's answers."""
    g = KafkaGateway(
        tmp_path_factory.mktemp("kgwfull"), kafka_cluster, connection={"recording": "full"}
    ).start()
    try:
        topic = _topic(kafka_cluster)
        token = g.token("replayer")
        msgs = [(f"k{i}".encode(), f"event number {i}".encode()) for i in range(5)]
        _produce(g.conf(token), topic, msgs)
        got = _consume(g.conf(token), topic, 5)
        assert [m.value() for m in got] == [v for _, v in msgs]
        g.indexed()
        sids = {
            e["session_id"]
            for e in g.entries("chunk")
            if e["chunk"].get("topic") == topic and e["direction"] == "c2s"
        }
        (sid,) = sids
        shown = g.gw.cli("sessions", "show", sid).stdout
        assert f"-> produce {topic}[0]" in shown and "<- produce #" in shown
        replay = g.gw.cli("sessions", "replay", sid, "--no-wait").stdout
        for k, v in msgs:
            assert f"key {k.decode()!r} value {v.decode()!r}" in replay
        fetch_sid = next(
            e["session_id"]
            for e in g.entries("chunk")
            if e["chunk"].get("topic") == topic and e["direction"] == "s2c"
        )
        replay = g.gw.cli("sessions", "replay", fetch_sid, "--no-wait").stdout
        assert f"<- fetch {topic}[0] offsets 0..4" in replay
        assert "offset 4: key 'k4' value 'event number 4'" in replay
        # Re-produced into another topic, through the gateway, as the person replaying.
        target = _topic(kafka_cluster)
        out = g.gw.cli(
            "sessions", "replay", sid, "--produce-to", target, "--token", g.token("auditor-ann")
        ).stdout
        assert "re-produced 5 message(s)" in out
        again = _consume(g.conf(token), target, 5)
        assert [(m.key(), m.value()) for m in again] == msgs
        g.indexed()
        replayed = [
            e
            for e in g.entries("chunk")
            if e["chunk"].get("topic") == target and e["direction"] == "c2s"
        ]
        assert replayed and {e["identity"]["subject"] for e in replayed} == {"auditor-ann"}
        # The kept batches are encrypted: no message text in the store file.
        assert b"event number" not in g.gw.store_bytes()
    finally:
        g.stop()


def test_an_idempotent_retry_is_marked_retransmitted_and_duplicate(kgw: KafkaGateway) -> None:
    """The same idempotent batch sent twice (as a producer does when an answer is lost):
    the broker stores it once, and the ledger marks the second attempt ``retransmits``
    (naming the first attempt and who sent it) with the outcome ``duplicate``."""
    from ledgergate.wire.kafka import messages as km
    from ledgergate.wire.kafka import records as kr
    from tests.integration.kafkagw import Raw

    K = km.ApiKey
    topic = _topic(kgw.cluster)
    r = Raw(kgw)
    r.login(kgw.token("retrier"))
    for _ in range(50):  # the broker may still be loading its producer-id state
        r.request(
            K.INIT_PRODUCER_ID, 4, {"transactional_id": None, "transaction_timeout_ms": 60000}
        )
        pid = r.response(K.INIT_PRODUCER_ID, 4)
        if pid["error_code"] != 14:  # COORDINATOR_LOAD_IN_PROGRESS
            break
        time.sleep(0.2)
    assert pid["error_code"] == 0
    header = kr.BatchHeader(
        0, 0, -1, 2, 0, 0, 0, 0, 0, pid["producer_id"], pid["producer_epoch"], 0, 1
    )
    batch = kr.encode_batch(header, [kr.NewRecord(0, 0, b"k", b"exactly once")])
    req = {
        "transactional_id": None,
        "acks": -1,
        "timeout_ms": 5000,
        "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}],
    }
    offsets = []
    for _ in range(2):
        r.request(K.PRODUCE, 9, req)
        p = r.response(K.PRODUCE, 9)["responses"][0]["partition_responses"][0]
        assert p["error_code"] == 0
        offsets.append(p["base_offset"])
    assert offsets == [0, 0]  # stored once
    kgw.indexed()
    chunks = [e for e in kgw.entries("chunk") if e["chunk"].get("topic") == topic]
    assert len(chunks) == 2
    assert "retransmits" not in chunks[0]["chunk"]
    again = chunks[1]["chunk"]["retransmits"]
    assert again["identity"] == "retrier" and again["command"] == chunks[0]["chunk"]["command"]
    results = [
        e
        for e in kgw.entries("command.result")
        if any(p["topic"] == topic for p in e.get("partitions", []))
    ]
    assert [e["outcome"] for e in results] == ["accepted", "duplicate"]


def test_tls_towards_the_brokers(
    kafka_cluster: KafkaCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The gateway reaches the brokers over SASL_SSL, verifying them against the CA the
    connection names (a broker it cannot verify is refused)."""
    conn = {
        "bootstrap": kafka_cluster.bootstrap_tls.split(","),
        "tls": True,
        "ca_file": str(kafka_cluster.ca_cert_path),
    }
    g = KafkaGateway(tmp_path_factory.mktemp("kgwtls"), kafka_cluster, connection=conn).start()
    try:
        topic = _topic(kafka_cluster)
        token = g.token("etl")
        _produce(g.conf(token), topic, [(b"k", b"over tls")])
        assert [m.value() for m in _consume(g.conf(token), topic, 1)] == [b"over tls"]
    finally:
        g.stop()
    bad = KafkaGateway(
        tmp_path_factory.mktemp("kgwtlsbad"),
        kafka_cluster,
        connection={**conn, "ca_file": None},  # the system store does not know this CA
    ).start()
    try:
        errors: list[Any] = []
        p = Producer({**bad.conf(bad.token("etl")), "error_cb": errors.append})
        p.produce("any", b"x")
        p.flush(6)
        assert errors  # the client sees the cluster down
        bad.indexed()
        why = [e["reason"] for e in bad.entries("session.reject")]
        assert any("certificate verify failed" in w for w in why), why
    finally:
        bad.stop()
