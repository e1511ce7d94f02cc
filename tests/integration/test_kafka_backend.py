"""The Kafka fixtures start real brokers: each test drives a real client (confluent-kafka,
aiokafka, kafka-python, kcat, Kafka's own Java perf tools) straight at them, logged in
with SCRAM-SHA-512 unless it says otherwise. No gateway is involved."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

from tests.integration.kafkaserver import KafkaCluster
from tests.integration.kafkatools import kafka_java_class, kcat_env

# Every client here answers within a second or two; a loaded CI machine gets this long.
DEADLINE_S = 30.0


def new_topic(cluster: KafkaCluster, partitions: int = 1, replication: int = 1) -> str:
    name = f"t-{secrets.token_hex(6)}"
    cluster.create_topic(name, partitions, replication)
    return name


def produce(conf: dict[str, Any], topic: str, values: list[bytes]) -> None:
    """Produce with an idempotent, acks=all producer and check every delivery."""
    failed: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    producer = Producer({**conf, "acks": "all", "enable.idempotence": True})
    for i, value in enumerate(values):
        producer.produce(topic, value, key=str(i).encode(), on_delivery=delivered)
    assert producer.flush(DEADLINE_S) == 0
    assert failed == []


def consume(conf: dict[str, Any], topic: str, count: int) -> list[bytes]:
    """Read ``count`` records from the start of ``topic`` as a new consumer group."""
    consumer = Consumer(
        {
            **conf,
            "group.id": f"g-{secrets.token_hex(4)}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            value = msg.value()
            assert value is not None
            got.append(value)
    finally:
        consumer.close()
    return got


def test_confluent_kafka_round_trip(kafka_cluster: KafkaCluster) -> None:
    topic = new_topic(kafka_cluster, partitions=2)
    values = [f"record {i}".encode() for i in range(20)]
    produce(kafka_cluster.sasl_config(), topic, values)
    assert sorted(consume(kafka_cluster.sasl_config(), topic, 20)) == sorted(values)


@pytest.mark.parametrize("how", ["SASL_SSL", "PLAIN", "SCRAM-SHA-256"])
def test_confluent_kafka_other_logins(kafka_cluster: KafkaCluster, how: str) -> None:
    if how == "SASL_SSL":
        conf = kafka_cluster.sasl_config(tls=True)
    else:
        conf = kafka_cluster.sasl_config(mechanism=how)
    topic = new_topic(kafka_cluster)
    produce(conf, topic, [how.encode()])
    assert consume(conf, topic, 1) == [how.encode()]


def test_aiokafka_round_trip(kafka_cluster: KafkaCluster) -> None:
    topic = new_topic(kafka_cluster)
    login = {
        "bootstrap_servers": kafka_cluster.bootstrap.split(","),
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": kafka_cluster.admin_user,
        "sasl_plain_password": kafka_cluster.admin_password,
    }

    async def go() -> list[bytes]:
        producer = AIOKafkaProducer(**login, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for i in range(5):
                await producer.send_and_wait(topic, f"aio {i}".encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, **login, group_id=f"g-{secrets.token_hex(4)}", auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            got: list[bytes] = []
            async with asyncio.timeout(DEADLINE_S):
                async for msg in consumer:
                    got.append(msg.value)
                    if len(got) == 5:
                        return got
        finally:
            await consumer.stop()
        raise AssertionError("unreachable")

    assert asyncio.run(go()) == [f"aio {i}".encode() for i in range(5)]


# kafka-python 3.0 loads its protocol schemas with importlib.resources.read_text, which
# Python 3.11 deprecates; hence the import inside the test.
@pytest.mark.filterwarnings(r"ignore:\w+ is deprecated. Use files\(\) instead:DeprecationWarning")
def test_kafka_python_round_trip(kafka_cluster: KafkaCluster) -> None:
    import kafka

    topic = new_topic(kafka_cluster)
    login: dict[str, Any] = {
        "bootstrap_servers": kafka_cluster.bootstrap.split(","),
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": kafka_cluster.admin_user,
        "sasl_plain_password": kafka_cluster.admin_password,
    }
    producer = kafka.KafkaProducer(**login, acks="all")
    try:
        for i in range(5):
            producer.send(topic, f"kp {i}".encode()).get(timeout=DEADLINE_S)
    finally:
        producer.close()
    consumer = kafka.KafkaConsumer(
        topic,
        **login,
        group_id=f"g-{secrets.token_hex(4)}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(DEADLINE_S * 1000),
    )
    try:
        got = [msg.value for _, msg in zip(range(5), consumer, strict=False)]
    finally:
        consumer.close()
    assert got == [f"kp {i}".encode() for i in range(5)]


def test_kcat_round_trip(kafka_cluster: KafkaCluster) -> None:
    topic = new_topic(kafka_cluster)
    kcat = [*kafka_cluster.kcat_args(), "-t", topic]
    run: dict[str, Any] = {"env": kcat_env(), "capture_output": True, "timeout": DEADLINE_S}
    r = subprocess.run([*kcat, "-P"], input=b"one\ntwo\nthree\n", **run)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*kcat, "-C", "-o", "beginning", "-e", "-q"], **run)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"one\ntwo\nthree\n"


@pytest.mark.parametrize("who", ["wrong password", "unknown user"])
def test_bad_login_is_refused(kafka_cluster: KafkaCluster, who: str) -> None:
    user = "nobody" if who == "unknown user" else None
    errors: list[KafkaError] = []
    conf = kafka_cluster.sasl_config(user, "not-the-password")
    producer = Producer({**conf, "error_cb": errors.append})
    deadline = time.monotonic() + DEADLINE_S
    while not errors and time.monotonic() < deadline:
        producer.poll(0.1)
    assert errors
    assert errors[0].code() == KafkaError._AUTHENTICATION, errors[0]
    assert "invalid credentials" in errors[0].str()


def test_added_user_logs_in(kafka_cluster: KafkaCluster) -> None:
    name, password = f"user-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    kafka_cluster.add_user(name, password, mechanism="SCRAM-SHA-256")
    topic = new_topic(kafka_cluster)
    conf = kafka_cluster.sasl_config(name, password, mechanism="SCRAM-SHA-256")
    produce(conf, topic, [b"from a new user"])
    assert consume(conf, topic, 1) == [b"from a new user"]


def test_java_perf_tools(kafka_cluster: KafkaCluster, tmp_path: Path) -> None:
    topic = new_topic(kafka_cluster)
    props = str(kafka_cluster.client_properties(tmp_path / "client.properties"))
    r = kafka_java_class(
        "org.apache.kafka.tools.ProducerPerformance",
        *("--topic", topic, "--num-records", "2000", "--record-size", "100"),
        *("--throughput", "-1", "--command-config", props),
    )
    assert "2000 records sent" in r.stdout, r.stdout
    r = kafka_java_class(
        "org.apache.kafka.tools.ConsumerPerformance",
        *("--bootstrap-server", kafka_cluster.bootstrap, "--topic", topic),
        *("--messages", "2000", "--command-config", props, "--timeout", "30000"),
    )
    header, row = r.stdout.strip().splitlines()[-2:]
    assert dict(zip(header.split(", "), row.split(", "), strict=True))["data.consumed.in.nMsg"] == (
        "2000"
    )


@pytest.mark.slow
def test_three_brokers_replicate(kafka_cluster3: KafkaCluster) -> None:
    admin = AdminClient(kafka_cluster3.sasl_config())
    meta = admin.list_topics(timeout=DEADLINE_S)
    assert sorted(meta.brokers) == [1, 2, 3] == sorted(kafka_cluster3.brokers)
    assert {(b.host, b.port) for b in meta.brokers.values()} == set(kafka_cluster3.brokers.values())
    topic = new_topic(kafka_cluster3, partitions=3, replication=3)
    parts = admin.list_topics(topic, timeout=DEADLINE_S).topics[topic].partitions
    assert all(sorted(p.replicas) == [1, 2, 3] for p in parts.values())
    values = [f"replicated {i}".encode() for i in range(30)]
    produce(kafka_cluster3.sasl_config(), topic, values)
    assert sorted(consume(kafka_cluster3.sasl_config(), topic, 30)) == sorted(values)


@pytest.mark.slow
def test_broker_restart(kafka_cluster3: KafkaCluster) -> None:
    topic = new_topic(kafka_cluster3, partitions=1, replication=3)
    kafka_cluster3.stop_broker(3)
    try:
        # min.insync.replicas is 2: acks=all still succeeds with two of three.
        produce(kafka_cluster3.sasl_config(), topic, [b"while 3 was down"])
    finally:
        kafka_cluster3.start_broker(3)
    host, port = kafka_cluster3.brokers[3]
    only3 = {**kafka_cluster3.sasl_config(), "bootstrap.servers": f"{host}:{port}"}
    meta = AdminClient(only3).list_topics(timeout=DEADLINE_S)
    assert sorted(meta.brokers) == [1, 2, 3]
    assert consume(only3, topic, 1) == [b"while 3 was down"]
