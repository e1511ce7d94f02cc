"""Kafka entries as evidence: the broker credential appears in no byte a client
receives, no log line, ledger entry or export; and an edit to a recorded message digest,
a dropped batch entry or two swapped are named by ``audit verify``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from ledgergate.wire.kafka import messages as km
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


class Recording(Raw):
    """A raw client that keeps every byte the gateway sent it."""

    def __init__(self, g: KafkaGateway) -> None:
        super().__init__(g)
        self.received = bytearray()

    def _read(self, n: int) -> bytes:
        got = super()._read(n)
        self.received += got
        return got


def _produce(g: KafkaGateway, topic: str, n: int = 30) -> None:
    p = Producer({**g.conf(g.token("etl")), "linger.ms": 20, "batch.num.messages": 10})
    for i in range(n):
        p.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
        if i % 10 == 9:
            p.flush(20)
    assert p.flush(20) == 0


def test_the_broker_credential_reaches_no_client_log_entry_or_export(
    kafka_cluster: KafkaCluster, tmp_path: Path
) -> None:
    g = KafkaGateway(tmp_path / "gw", kafka_cluster).start()
    secret = kafka_cluster.admin_password.encode()
    try:
        topic = f"leak-{uuid.uuid4().hex[:8]}"
        kafka_cluster.create_topic(topic)
        _produce(g, topic)
        r = Recording(g)
        r.request(K.API_VERSIONS, 3, {"client_software_name": "x", "client_software_version": "1"})
        r.response(K.API_VERSIONS, 3)
        r.login(g.token("prober"))
        r.request(K.METADATA, 12, {"topics": None, "allow_auto_topic_creation": False})
        r.response(K.METADATA, 12)
        r.request(K.DESCRIBE_CLUSTER, 1, {"include_cluster_authorized_operations": True})
        r.response(K.DESCRIBE_CLUSTER, 1)
        assert len(r.received) > 100
        assert secret not in bytes(r.received)
        g.indexed()
    finally:
        g.stop()
    bundle = tmp_path / "bundle.zip"
    g.gw.cli("audit", "export", "-o", str(bundle))
    jsonl = tmp_path / "entries.jsonl"
    g.gw.cli("audit", "export", "--format", "jsonl", "-o", str(jsonl))
    for where in (bundle, jsonl, g.gw.log_path):
        assert secret not in where.read_bytes(), where
    assert secret not in g.gw.store_bytes()


@pytest.mark.parametrize("how", ["digest", "drop", "reorder"])
def test_tampering_with_batch_entries_is_caught(
    kafka_cluster: KafkaCluster, tmp_path: Path, how: str
) -> None:
    g = KafkaGateway(tmp_path / "gw", kafka_cluster).start()
    try:
        topic = f"tamper-{uuid.uuid4().hex[:8]}"
        kafka_cluster.create_topic(topic)
        _produce(g, topic)
        g.indexed()
    finally:
        g.stop()
    assert g.gw.cli("audit", "verify").returncode == 0
    stream = g.gw.stream
    db = g.gw.db()
    seqs = [
        r[0]
        for r in db.execute(
            "SELECT seq FROM ledger_entries WHERE stream=? AND kind='chunk' ORDER BY seq", (stream,)
        )
    ]
    assert len(seqs) >= 2
    target = seqs[1]
    if how == "digest":  # "this message was never produced": one record digest changed
        doc = bytes(
            db.execute(
                "SELECT canonical FROM ledger_entries WHERE stream=? AND seq=?", (stream, target)
            ).fetchone()[0]
        )
        digest = json.loads(doc)["chunk"]["record_sha256"][0]
        db.set_entry(stream, target, doc.replace(digest.encode(), b"0" * 64))
    elif how == "drop":
        db.delete_entries(stream, target, target)
    else:
        a, b = (
            db.execute(
                "SELECT canonical, entry_hash FROM ledger_entries WHERE stream=? AND seq=?",
                (stream, s),
            ).fetchone()
            for s in (target, target + 1)
        )
        for s, (canon, h) in ((target, b), (target + 1, a)):
            db.set_entry(stream, s, bytes(canon), bytes(h))
    db.commit()
    db.close()
    out = g.gw.cli("audit", "verify", check=False)
    assert out.returncode != 0
    said = out.stdout + out.stderr
    assert "does NOT verify" in said and f"{stream} [entry {target}]" in said, said
