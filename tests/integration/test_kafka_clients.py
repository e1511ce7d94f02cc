"""Real Kafka clients, unchanged, through the gateway; and what the ledger says of them.

Each client (aiokafka, kafka-python, confluent-kafka, Kafka's own Java tools) is pointed
at ``ledgergate serve`` with nothing changed but its bootstrap address and its SASL login
(a ledgergate token over TLS), and does what applications do: consumer groups, every
compression codec, every acks setting, transactions, three brokers with one of them
restarting, re-authentication. Each test then reads the ledger back: who produced each
record (c2s ``chunk`` entries, by digest) and who read it (s2c), the produce ``command``
and its ``command.result``, the ``group.*`` steps, and how the session ended.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from ledgergate.wire.kafka.records import Header, content_digest
from tests.integration.kafkagw import KafkaGateway
from tests.integration.kafkaserver import KafkaCluster
from tests.integration.kafkatools import kafka_java_class

pytestmark = [pytest.mark.integration]

# Every client answers within a second or two; a loaded two-core machine gets this long.
DEADLINE_S = 30.0
# Every record the tests produce carries this header (its digest covers headers too).
HEADERS = [("h", b"1")]


@pytest.fixture(scope="module")
def kgw(
    kafka_cluster: KafkaCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaGateway]:
    g = KafkaGateway(tmp_path_factory.mktemp("kgwc"), kafka_cluster).start()
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def kgw3(
    kafka_cluster3: KafkaCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaGateway]:
    g = KafkaGateway(tmp_path_factory.mktemp("kgwc3"), kafka_cluster3).start()
    try:
        yield g
    finally:
        g.stop()


# -- helpers ---------------------------------------------------------------------------


def new_topic(cluster: KafkaCluster, partitions: int = 1, replication: int = 1) -> str:
    name = f"t-{secrets.token_hex(5)}"
    cluster.create_topic(name, partitions, replication)
    return name


def digest(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> str:
    return content_digest(key, value, [Header(k.encode(), v) for k, v in headers]).hex()


def digests(chunks: list[dict[str, Any]]) -> list[str]:
    return [d for e in chunks for d in e["chunk"]["record_sha256"]]


def subjects(entries: list[dict[str, Any]]) -> set[str]:
    return {e["identity"]["subject"] for e in entries}


def produce(conf: dict[str, Any], topic: str, msgs: list[tuple[bytes, bytes]], **more: Any) -> None:
    """Produce ``msgs`` (key, value) with `HEADERS` and check every delivery."""
    failed: list[Any] = []
    p = Producer({"linger.ms": 5, **conf, **more})
    for k, v in msgs:
        p.produce(
            topic,
            key=k,
            value=v,
            headers=HEADERS,
            on_delivery=lambda e, _m: failed.append(e) if e is not None else None,
        )
    assert p.flush(DEADLINE_S) == 0
    assert failed == []


def read_partition(conf: dict[str, Any], topic: str, n: int, **more: Any) -> list[Any]:
    """``n`` messages of partition 0 from its start, without a consumer group."""
    c = Consumer({**conf, "group.id": "unused", "enable.auto.commit": False, **more})
    c.assign([TopicPartition(topic, 0, 0)])
    got: list[Any] = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                raise KafkaException(m.error())
            got.append(m)
    finally:
        c.close()
    return got


# -- 1. aiokafka -----------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "OAUTHBEARER"])
def test_aiokafka_producer_and_consumer_group(kgw: KafkaGateway, mechanism: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = new_topic(kgw.cluster, partitions=2)
    group = f"aio-{secrets.token_hex(4)}"
    writer, reader = f"aio-writer-{mechanism}", f"aio-reader-{mechanism}"
    msgs = [(f"k{i}".encode(), f"aiokafka {i}".encode()) for i in range(20)]
    wtok, rtok = kgw.token(writer), kgw.token(reader)

    async def go() -> list[tuple[bytes | None, bytes | None]]:
        producer = AIOKafkaProducer(
            **kgw.aiokafka_args(wtok, user=writer, mechanism=mechanism),
            acks="all",
            enable_idempotence=True,
        )
        await producer.start()
        try:
            for k, v in msgs:
                await producer.send_and_wait(topic, v, key=k, headers=HEADERS)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            **kgw.aiokafka_args(rtok, user=reader, mechanism=mechanism),
            group_id=group,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        got: list[tuple[bytes | None, bytes | None]] = []
        try:
            async with asyncio.timeout(DEADLINE_S):
                async for m in consumer:
                    got.append((m.key, m.value))
                    if len(got) == len(msgs):
                        await consumer.commit()
                        break
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(go())
    assert sorted(got) == sorted(msgs)

    kgw.indexed()
    want = sorted(digest(k, v, HEADERS) for k, v in msgs)
    produced, fetched = kgw.chunks(topic, "c2s"), kgw.chunks(topic, "s2c")
    assert subjects(produced) == {writer}
    assert subjects(fetched) == {reader}
    assert sorted(digests(produced)) == want
    assert sorted(set(digests(fetched))) == want
    assert all(e["chunk"]["producer"]["id"] >= 0 for e in produced)  # idempotent
    opened = [
        e for e in kgw.entries("session.open") if e["identity"]["subject"] in (writer, reader)
    ]
    assert {e["client"]["mechanism"] for e in opened} == {mechanism}
    steps = [e for e in kgw.entries() if e["kind"].startswith("group.")]
    mine = [e for e in steps if e.get("group_id") == group]
    assert {"group.join", "group.sync", "group.commit"} <= {e["kind"] for e in mine}
    assert subjects(mine) == {reader}
    commits = [e for e in mine if e["kind"] == "group.commit"]
    assert sum(o[2] for e in commits[-1:] for o in e["offsets"]) == len(msgs)


# -- 2. kafka-python -------------------------------------------------------------------


# kafka-python 3.0 loads its protocol schemas with importlib.resources.read_text, which
# Python 3.11 deprecates; hence the import inside the test.
@pytest.mark.filterwarnings(r"ignore:\w+ is deprecated. Use files\(\) instead:DeprecationWarning")
def test_kafka_python_producer_and_consumer_group(kgw: KafkaGateway) -> None:
    import kafka

    topic = new_topic(kgw.cluster)
    group = f"kp-{secrets.token_hex(4)}"
    msgs = [(f"k{i}".encode(), f"kafka-python {i}".encode()) for i in range(10)]
    producer = kafka.KafkaProducer(
        **kgw.kafka_python_args(kgw.token("kp-writer"), user="kp-writer"), acks="all"
    )
    try:
        for k, v in msgs:
            producer.send(topic, value=v, key=k, headers=HEADERS).get(timeout=DEADLINE_S)
    finally:
        producer.close()
    consumer = kafka.KafkaConsumer(
        topic,
        **kgw.kafka_python_args(kgw.token("kp-reader"), user="kp-reader"),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(DEADLINE_S * 1000),
    )
    try:
        got = [(m.key, m.value) for _, m in zip(range(len(msgs)), consumer, strict=False)]
        consumer.commit()
    finally:
        consumer.close()
    assert got == msgs

    kgw.indexed()
    want = [digest(k, v, HEADERS) for k, v in msgs]
    produced, fetched = kgw.chunks(topic, "c2s"), kgw.chunks(topic, "s2c")
    assert subjects(produced) == {"kp-writer"} and digests(produced) == want
    assert subjects(fetched) == {"kp-reader"} and sorted(set(digests(fetched))) == sorted(want)
    joined = [e for e in kgw.entries("group.join") if e.get("group_id") == group]
    assert joined and subjects(joined) == {"kp-reader"}
    commits = [e for e in kgw.entries("group.commit") if e.get("group_id") == group]
    assert commits and commits[-1]["offsets"] == [[topic, 0, len(msgs)]]


# -- 3. compression --------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_confluent_kafka_compression(kgw: KafkaGateway, codec: str) -> None:
    topic = new_topic(kgw.cluster)
    conf = kgw.conf(kgw.token(f"zip-{codec}"), user=f"zip-{codec}")
    # Compressible values, many to a batch.
    msgs = [(f"k{i}".encode(), f"{codec} record {i} ".encode() * 30) for i in range(200)]
    produce(conf, topic, msgs, **{"compression.type": codec, "linger.ms": 50})
    got = read_partition(conf, topic, len(msgs))
    assert [(m.key(), m.value()) for m in got] == msgs

    kgw.indexed()
    want = [digest(k, v, HEADERS) for k, v in msgs]
    produced, fetched = kgw.chunks(topic, "c2s"), kgw.chunks(topic, "s2c")
    assert digests(produced) == want
    assert {e["chunk"]["compression"] for e in produced} == {codec}
    assert sum(e["chunk"]["size"] for e in produced) < sum(len(v) for _, v in msgs) / 3
    # The broker keeps the producer's batches (compression.type=producer) and serves them.
    assert digests(fetched) == want
    assert {e["chunk"]["compression"] for e in fetched} == {codec}


# -- 4. acks ---------------------------------------------------------------------------


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_confluent_kafka_acks(kgw: KafkaGateway, acks: str) -> None:
    topic = new_topic(kgw.cluster)
    who = f"acks-{acks}"
    conf = kgw.conf(kgw.token(who), user=who)
    msgs = [(f"k{i}".encode(), f"acks={acks} {i}".encode()) for i in range(10)]
    # An idempotent producer needs acks=all; the others are plain producers.
    produce(conf, topic, msgs, acks=acks, **{"enable.idempotence": acks == "all"})
    got = read_partition(conf, topic, len(msgs))
    assert [(m.key(), m.value()) for m in got] == msgs

    kgw.indexed()
    produced = kgw.chunks(topic, "c2s")
    assert digests(produced) == [digest(k, v, HEADERS) for k, v in msgs]
    cmds = {
        (e["session_id"], e["command"]["seq"]): e
        for e in kgw.entries("command")
        if e["command"]["op"] == "produce" and e["identity"]["subject"] == who
    }
    mine = [cmds[(e["session_id"], e["chunk"]["command"])] for e in produced]
    assert {c["command"]["acks"] for c in mine} == {{"0": 0, "1": 1, "all": -1}[acks]}
    results = {
        (e["session_id"], e["command"]["seq"]): e
        for e in kgw.entries("command.result")
        if e["command"]["op"] == "produce"
    }
    for e in produced:
        r = results.get((e["session_id"], e["chunk"]["command"]))
        if acks == "0":
            assert r is None  # no answer came: the command stays open
            continue
        assert r is not None and r["outcome"] == "accepted"
        assert [p["error"] for p in r["partitions"]] == [None]
    if acks != "0":
        offsets = sorted(
            p["base_offset"]
            for e in produced
            for p in results[(e["session_id"], e["chunk"]["command"])]["partitions"]
        )
        assert offsets[0] == 0 and len(set(offsets)) == len(offsets)


# -- 5. transactions -------------------------------------------------------------------


def test_transactional_read_process_write(kgw: KafkaGateway) -> None:
    source, sink = new_topic(kgw.cluster), new_topic(kgw.cluster)
    group, txid = f"txn-{secrets.token_hex(4)}", f"txn-{secrets.token_hex(4)}"
    inputs = [(f"k{i}".encode(), f"order {i}".encode()) for i in range(10)]
    produce(kgw.conf(kgw.token("feeder"), user="feeder"), source, inputs, acks="all")

    conf = kgw.conf(kgw.token("processor"), user="processor")
    consumer = Consumer(
        {
            **conf,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    producer = Producer({**conf, "transactional.id": txid, "linger.ms": 5})
    try:
        producer.init_transactions(DEADLINE_S)
        consumer.subscribe([source])
        taken: list[Any] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(taken) < len(inputs) and time.monotonic() < deadline:
            m = consumer.poll(0.2)
            if m is not None and not m.error():
                taken.append(m)
        assert len(taken) == len(inputs)
        producer.begin_transaction()
        outputs = [(m.key(), m.value().upper()) for m in taken]
        for k, v in outputs:
            producer.produce(sink, key=k, value=v, headers=HEADERS)
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()),
            consumer.consumer_group_metadata(),
            DEADLINE_S,
        )
        producer.commit_transaction(DEADLINE_S)
    finally:
        consumer.close()
    reader = kgw.conf(kgw.token("downstream"), user="downstream")
    got = read_partition(reader, sink, len(outputs), **{"isolation.level": "read_committed"})
    assert [(m.key(), m.value()) for m in got] == outputs

    kgw.indexed()
    produced = kgw.chunks(sink, "c2s")
    assert subjects(produced) == {"processor"}
    assert all(e["chunk"]["transactional"] for e in produced)
    assert digests(produced) == [digest(k, v, HEADERS) for k, v in outputs]
    cmds = [
        e
        for e in kgw.entries("command")
        if e["command"]["op"] == "produce" and e["identity"]["subject"] == "processor"
    ]
    assert cmds and {c["command"]["transactional_id"] for c in cmds} == {txid}
    # The consumer's offsets were committed by the producer, in the transaction.
    offsets = [e for e in kgw.entries("group.commit") if e.get("group_id") == group]
    assert [(e["transactional_id"], e["offsets"]) for e in offsets] == [
        (txid, [[source, 0, len(inputs)]])
    ]
    assert subjects(offsets) == {"processor"}
    # The transaction's end: committed, by the processor, under its transactional id.
    ends = [e for e in kgw.entries("txn.end") if e.get("transactional_id") == txid]
    assert [e["committed"] for e in ends] == [True] and subjects(ends) == {"processor"}
    fetched = kgw.chunks(sink, "s2c")
    assert subjects(fetched) == {"downstream"}
    assert sorted(set(digests(fetched))) == sorted(digest(k, v, HEADERS) for k, v in outputs)


class Aborted:
    """A topic holding a committed transaction, an aborted one and a committed one, and
    what a read_committed consumer (``txn-reader``) got from it through the gateway."""

    def __init__(self, kgw: KafkaGateway) -> None:
        self.topic = new_topic(kgw.cluster)
        self.first = [(b"a", f"committed {i}".encode()) for i in range(3)]
        self.aborted = [(b"x", f"aborted {i}".encode()) for i in range(5)]
        self.last = [(b"z", b"committed after the abort")]
        conf = kgw.conf(kgw.token("txn-writer"), user="txn-writer")
        producer = Producer(
            {**conf, "transactional.id": f"tx-{secrets.token_hex(4)}", "linger.ms": 5}
        )
        producer.init_transactions(DEADLINE_S)
        for msgs, commit in ((self.first, True), (self.aborted, False), (self.last, True)):
            producer.begin_transaction()
            for k, v in msgs:
                producer.produce(self.topic, key=k, value=v, headers=HEADERS)
            producer.flush(DEADLINE_S)  # the batches reach the broker (and the ledger)
            if commit:
                producer.commit_transaction(DEADLINE_S)
            else:
                producer.abort_transaction(DEADLINE_S)
        reader = kgw.conf(kgw.token("txn-reader"), user="txn-reader")
        self.committed = [*self.first, *self.last]
        got = read_partition(
            reader, self.topic, len(self.committed), **{"isolation.level": "read_committed"}
        )
        self.got = [(m.key(), m.value()) for m in got]
        check = Consumer({**reader, "group.id": "unused"})
        try:
            self.watermarks = check.get_watermark_offsets(TopicPartition(self.topic, 0), DEADLINE_S)
        finally:
            check.close()
        kgw.indexed()


@pytest.fixture(scope="module")
def aborted(kgw: KafkaGateway) -> Aborted:
    return Aborted(kgw)


def test_aborted_transaction_unseen_by_read_committed(kgw: KafkaGateway, aborted: Aborted) -> None:
    assert aborted.got == aborted.committed
    # All of it is in the log (+ three commit/abort markers); the consumer skipped some.
    n = len(aborted.first) + len(aborted.aborted) + len(aborted.last)
    assert aborted.watermarks == (0, n + 3)
    produced = kgw.chunks(aborted.topic, "c2s")
    assert subjects(produced) == {"txn-writer"}
    assert all(e["chunk"]["transactional"] for e in produced)
    everything = [*aborted.first, *aborted.aborted, *aborted.last]
    assert digests(produced) == [digest(k, v, HEADERS) for k, v in everything]
    fetched = kgw.chunks(aborted.topic, "s2c")
    assert subjects(fetched) == {"txn-reader"}
    assert {digest(k, v, HEADERS) for k, v in aborted.committed} <= set(digests(fetched))


def test_ledger_does_not_say_aborted_records_were_read(kgw: KafkaGateway, aborted: Aborted) -> None:
    """A read_committed consumer drops the records of aborted transactions: the ledger
    lists them apart (``aborted_sha256``), never as read."""
    fetched = kgw.chunks(aborted.topic, "s2c")
    read = set(digests(fetched))
    gone = {digest(k, v, HEADERS) for k, v in aborted.aborted}
    assert not gone & read
    assert gone <= {d for e in fetched for d in e["chunk"].get("aborted_sha256", [])}


# -- 6. three brokers ------------------------------------------------------------------


@pytest.mark.slow
def test_three_brokers_metadata_and_replicated_topic(kgw3: KafkaGateway) -> None:
    admin = AdminClient(kgw3.conf(kgw3.token("ops3"), user="ops3"))
    md = admin.list_topics(timeout=DEADLINE_S)
    assert sorted(md.brokers) == [1, 2, 3]
    for b in md.brokers.values():
        assert (b.host, b.port) == ("localhost", kgw3.broker_ports + b.id)
    topic = f"r3-{secrets.token_hex(4)}"
    admin.create_topics([NewTopic(topic, 3, 3)])[topic].result(timeout=DEADLINE_S)
    deadline = time.monotonic() + DEADLINE_S
    while True:
        t = admin.list_topics(topic, timeout=DEADLINE_S).topics[topic]
        parts = t.partitions if t.error is None else {}
        if len(parts) == 3 and all(p.leader >= 0 and len(p.isrs) == 3 for p in parts.values()):
            break
        assert time.monotonic() < deadline, parts
        time.sleep(0.1)
    assert all(sorted(p.replicas) == [1, 2, 3] for p in parts.values())
    assert {p.leader for p in parts.values()} <= {1, 2, 3}
    kgw3.indexed()
    created = [
        e
        for e in kgw3.entries("command")
        if e["command"]["op"] == "create_topics" and e["identity"]["subject"] == "ops3"
    ]
    assert [t["name"] for t in created[-1]["command"]["request"]["topics"]] == [topic]
    results = [
        e
        for e in kgw3.entries("command.result")
        if e["session_id"] == created[-1]["session_id"] and e["command"]["op"] == "create_topics"
    ]
    assert [r["outcome"] for r in results] == ["accepted"]


class Member(threading.Thread):
    """One consumer of a group, polling in its own thread; commits after every message,
    so whatever it got is committed before a rebalance can hand its partition on. A
    rebalance that comes between a message and its commit refuses the commit, and the
    partition's next owner is given that message again (Kafka's at-least-once): such
    messages are kept in ``uncommitted``."""

    def __init__(self, conf: dict[str, Any], topic: str, group: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                **conf,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 500,
            }
        )
        self.assigned: list[int] = []  # partitions, as of the last rebalance
        self.consumer.subscribe([topic], on_assign=self._assigned, on_revoke=self._revoked)
        self.got: list[tuple[bytes, bytes]] = []
        self.uncommitted: list[tuple[bytes, bytes]] = []
        self.errors: list[Any] = []
        self.stop = threading.Event()

    def _assigned(self, _c: Any, parts: list[TopicPartition]) -> None:
        self.assigned = [p.partition for p in parts]

    def _revoked(self, _c: Any, _parts: list[TopicPartition]) -> None:
        self.assigned = []

    def run(self) -> None:
        c = self.consumer
        try:
            while not self.stop.is_set():
                m = c.poll(0.1)
                if m is None:
                    continue
                if m.error():
                    self.errors.append(m.error())
                    continue
                self.got.append((m.key(), m.value()))
                try:
                    c.commit(message=m, asynchronous=False)
                except KafkaException as e:
                    if e.args[0].code() not in _REBALANCING:
                        raise
                    self.uncommitted.append((m.key(), m.value()))
        finally:
            c.close()  # leaves the group


# Commit refusals a rebalance under way gives (the message goes to the next owner).
_REBALANCING = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError._ASSIGNMENT_LOST,
    }
)


@pytest.mark.slow
def test_three_brokers_consumer_group_rebalances(kgw3: KafkaGateway) -> None:
    topic = new_topic(kgw3.cluster, partitions=3, replication=3)
    group = f"g3-{secrets.token_hex(4)}"
    names = ["member-1", "member-2", "member-3"]
    members = [Member(kgw3.conf(kgw3.token(n), user=n), topic, group) for n in names]
    for m in members:
        m.start()
    deadline = time.monotonic() + DEADLINE_S
    while sorted(p for m in members for p in m.assigned) != [0, 1, 2] or not all(
        m.assigned for m in members
    ):
        assert time.monotonic() < deadline, [m.assigned for m in members]
        time.sleep(0.1)
    writer = kgw3.conf(kgw3.token("writer3"), user="writer3")
    first = [(str(i).encode(), f"before {i}".encode()) for i in range(90)]
    produce(writer, topic, first, acks="all")

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while sum(len(m.got) for m in members) < n:
            assert time.monotonic() < deadline, [len(m.got) for m in members]
            time.sleep(0.1)

    try:
        wait_for(len(first))
        # Keys spread the records over the three partitions, one to each member.
        assert all(m.got for m in members), [len(m.got) for m in members]
        members[2].stop.set()
        members[2].join(DEADLINE_S)
        left_with = len(members[2].got)
        then = [(str(i).encode(), f"after {i}".encode()) for i in range(90)]
        produce(writer, topic, then, acks="all")
        wait_for(len(first) + len(then))
        time.sleep(1)  # nothing more arrives: each record came once
    finally:
        for m in members:
            m.stop.set()
        for m in members:
            m.join(DEADLINE_S)
    assert [m.errors for m in members] == [[], [], []]
    got = Counter(v for m in members for v in m.got)
    want = Counter(first + then)
    assert not want - got  # nothing lost
    # Each record came once, but for one whose commit a rebalance refused.
    assert got - want <= Counter(v for m in members for v in m.uncommitted), got - want
    assert len(members[2].got) == left_with  # the one that left got no more

    kgw3.indexed()
    steps = [e for e in kgw3.entries() if e["kind"].startswith("group.")]
    mine = [e for e in steps if e.get("group_id") == group]
    joins = Counter(e["identity"]["subject"] for e in mine if e["kind"] == "group.join")
    assert set(joins) == set(names)
    # Once member-3 left, the group rebalanced: the two that stayed joined again.
    assert joins["member-1"] >= 2 and joins["member-2"] >= 2
    left = [e["identity"]["subject"] for e in mine if e["kind"] == "group.leave"]
    assert left[0] == "member-3"
    fetched = kgw3.chunks(topic, "s2c")
    assert subjects(fetched) == set(names)
    assert set(digests(fetched)) == {digest(k, v, HEADERS) for k, v in first + then}
    # Each member is on the ledger as the reader of what it got.
    for name, m in zip(names, members, strict=True):
        read = set(digests([e for e in fetched if e["identity"]["subject"] == name]))
        assert {digest(k, v, HEADERS) for k, v in m.got} <= read


@pytest.mark.slow
def test_three_brokers_idempotent_producer_survives_a_broker_restart(kgw3: KafkaGateway) -> None:
    cluster = kgw3.cluster
    topic = new_topic(cluster, partitions=3, replication=3)
    conf = kgw3.conf(kgw3.token("steady"), user="steady")
    producer = Producer(
        {
            **conf,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "message.timeout.ms": 60000,
        }
    )
    failed: list[Any] = []
    sent: list[bytes] = []
    stop = threading.Event()

    def keep_producing() -> None:
        i = 0
        while not stop.is_set():
            v = f"seq {i}".encode()
            try:
                producer.produce(
                    topic,
                    value=v,
                    key=str(i % 30).encode(),
                    headers=HEADERS,
                    on_delivery=lambda e, _m: failed.append(e) if e is not None else None,
                )
            except BufferError:
                producer.poll(0.1)
                continue
            sent.append(v)
            i += 1
            producer.poll(0)
            time.sleep(0.005)

    worker = threading.Thread(target=keep_producing, daemon=True)
    worker.start()
    try:
        time.sleep(1.5)
        cluster.stop_broker(2)
        try:
            time.sleep(2)
        finally:
            cluster.start_broker(2)
        time.sleep(2)
    finally:
        stop.set()
        worker.join(DEADLINE_S)
    assert producer.flush(60) == 0
    assert failed == []
    reader = kgw3.conf(kgw3.token("checker"), user="checker")
    c = Consumer({**reader, "group.id": "unused", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(3)])
    got: list[bytes] = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(got) < len(sent) and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got.append(m.value())
        extra = c.poll(1.0)
    finally:
        c.close()
    assert extra is None or extra.error() is not None
    assert Counter(got) == Counter(sent)  # nothing lost, nothing twice

    kgw3.indexed()
    produced = kgw3.chunks(topic, "c2s")
    assert subjects(produced) == {"steady"}
    want = {digest(str(i % 30).encode(), v, HEADERS) for i, v in enumerate(sent)}
    assert set(digests(produced)) == want
    first = {(e["session_id"], e["chunk"]["seq"]): e for e in produced}
    again = [e for e in produced if "retransmits" in e["chunk"]]
    for e in again:
        r = e["chunk"]["retransmits"]
        orig = first[(r["session_id"], r["chunk"])]
        assert r["identity"] == "steady" and r["command"] == orig["chunk"]["command"]
        assert orig["chunk"]["producer"] == e["chunk"]["producer"]
        assert orig["chunk"]["record_sha256"] == e["chunk"]["record_sha256"]
    # Each record is in a batch whose partition the broker answered as stored (a retry of
    # a batch it already held is answered as stored too).
    results = {
        (e["session_id"], e["command"]["seq"]): e
        for e in kgw3.entries("command.result")
        if e["command"]["op"] == "produce"
    }
    stored: set[str] = set()
    for e in produced:
        r = results.get((e["session_id"], e["chunk"]["command"]))
        for part in r["partitions"] if r is not None else ():
            if part["partition"] == e["chunk"]["partition"] and part["error"] in (
                None,
                "DUPLICATE_SEQUENCE_NUMBER",
            ):
                stored.update(e["chunk"]["record_sha256"])
    assert stored == want
    fetched = kgw3.chunks(topic, "s2c")
    assert set(digests(fetched)) == want


# -- 7. a token that expires during the session ----------------------------------------


@pytest.mark.slow
def test_session_is_cut_when_its_token_expires(kgw: KafkaGateway) -> None:
    """The gateway answers SaslAuthenticate with the token's remaining life as
    session_lifetime_ms (KIP-368). librdkafka re-authenticates before then, even with
    PLAIN, but with the same token: the gateway accepts it while the token lasts, and ends
    the session when it expires; the client's reconnections are refused."""
    topic = new_topic(kgw.cluster)
    who = f"short-{secrets.token_hex(3)}"
    token = kgw.token(who, "20s")
    delivered: list[tuple[int, Any]] = []
    p = Producer(
        {
            **kgw.conf(token, user=who),
            "linger.ms": 0,
            "message.timeout.ms": 2000,
            "error_cb": lambda _e: None,  # reconnections refused after the expiry
        }
    )

    def tick(p: Producer, i: int) -> None:
        p.produce(
            topic,
            value=f"tick {i}".encode(),
            on_delivery=lambda e, _m: delivered.append((time.time_ns(), e)),
        )

    tick(p, 0)
    assert p.flush(DEADLINE_S) == 0
    expires_ns = max(
        e["expires_ns"] for e in kgw.entries("auth.ok") if e["identity"]["subject"] == who
    )
    i = 1
    while time.time_ns() < expires_ns + 1_000_000_000:
        tick(p, i)
        i += 1
        p.poll(0)
        time.sleep(0.1)
    p.flush(2.5)
    del p  # it would go on reconnecting with its expired token
    # Delivered until the expiry (reports come a moment after), then none.
    ok = [t for t, e in delivered if e is None]
    assert len(ok) > 20 and max(ok) < expires_ns + 200_000_000
    failed = [e for _, e in delivered if e is not None]
    assert failed and all(e.code() == KafkaError._MSG_TIMED_OUT for e in failed)

    mine = [e for e in kgw.entries() if (e.get("identity") or {}).get("subject") == who]
    sessions = {e["session_id"] for e in mine if e["kind"] == "chunk"}
    assert len(sessions) == 1
    (sid,) = sessions
    in_session = [e for e in mine if e.get("session_id") == sid]
    # Re-authenticated in place (same session), with the same token, before it expired.
    reauth = [e for e in in_session if e["kind"] == "auth.ok" and e.get("reauthenticated")]
    assert reauth and all(e["ts_ns"] < expires_ns for e in reauth)
    (closed,) = [e for e in in_session if e["kind"] == "session.close"]
    assert closed["outcome"] == "token expired"
    assert expires_ns - 50_000_000 <= closed["ts_ns"] < expires_ns + 1_500_000_000
    # Nothing of the session's reached a broker after the expiry.
    assert all(e["ts_ns"] <= expires_ns for e in in_session if e["kind"] in ("command", "chunk"))
    refused = [
        e
        for e in kgw.entries("auth.fail")
        if e["ts_ns"] > expires_ns and e["reason"] == "ledgergate: token expired"
    ]
    assert refused


# -- 8. Kafka's own Java clients -------------------------------------------------------

PERF_RECORDS = 20000


@pytest.mark.slow
def test_java_perf_tools(kgw: KafkaGateway, tmp_path: Path) -> None:
    topic = new_topic(kgw.cluster, partitions=2)
    props = str(
        kgw.client_properties(tmp_path / "client.properties", kgw.token("java"), user="java")
    )
    r = kafka_java_class(
        "org.apache.kafka.tools.ProducerPerformance",
        *("--topic", topic, "--num-records", str(PERF_RECORDS), "--record-size", "1024"),
        *("--throughput", "-1", "--command-config", props),
        *("--producer-props", "acks=all", "linger.ms=10"),
    )
    assert f"{PERF_RECORDS} records sent" in r.stdout, r.stdout
    r = kafka_java_class(
        "org.apache.kafka.tools.ConsumerPerformance",
        *("--bootstrap-server", kgw.bootstrap, "--topic", topic),
        *("--messages", str(PERF_RECORDS), "--command-config", props, "--timeout", "30000"),
    )
    header, row = r.stdout.strip().splitlines()[-2:]
    stats = dict(zip(header.split(", "), row.split(", "), strict=True))
    assert stats["data.consumed.in.nMsg"] == str(PERF_RECORDS)

    kgw.indexed()
    produced, fetched = kgw.chunks(topic, "c2s"), kgw.chunks(topic, "s2c")
    assert subjects(produced) == {"java"} == subjects(fetched)
    assert sum(e["chunk"]["records"] for e in produced) == PERF_RECORDS
    assert sum(e["chunk"]["records"] for e in fetched) == PERF_RECORDS
    # Every record read once, and each is the one produced (random payloads).
    assert Counter(digests(fetched)) == Counter(digests(produced))
    # The Java client speaks newer versions than librdkafka does.
    versions = {
        e["command"]["api_version"]
        for e in kgw.entries("command")
        if e["command"]["op"] == "produce" and e["identity"]["subject"] == "java"
    }
    assert min(versions) >= 11, versions
