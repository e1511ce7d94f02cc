"""Record broker-4.4.0.json: real request/response frames exchanged with an Apache Kafka
broker (tests/integration/kafkaserver.py, one KRaft node on loopback).

Run by hand from the repository: ``PYTHONPATH=. .venv/bin/python
tests/vectors/kafka/messages/capture.py``. Requests are
encoded with ledgergate's codec (kafka-python cross-checks those); every response is
the broker's own bytes, which is the point. The SaslAuthenticate request is not kept:
it carries the throwaway cluster's password. Record batches are built with
kafka-python's DefaultRecordBatchBuilder, so the Fetch responses carry a batch that no
ledgergate code wrote.
"""

from __future__ import annotations

import json
import socket
import struct
import time
import warnings
from pathlib import Path
from typing import Any

from tests.integration.kafkaserver import KafkaCluster

from ledgergate.wire.kafka import messages as m
from ledgergate.wire.kafka.messages import ApiKey as K

OUT = Path(__file__).with_name("broker-4.4.0.json")
TIMESTAMP = 1_700_000_000_000


def batch(values: list[bytes]) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka.record.default_records import DefaultRecordBatchBuilder

    b = DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, 1 << 20)
    for i, v in enumerate(values):
        b.append(i, TIMESTAMP + i, b"key-%d" % i, v, [])
    return bytes(b.build())


class Conn:
    def __init__(self, host: str, port: int, frames: list[dict[str, Any]]) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.corr = 0
        self.frames = frames

    def _recv(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            out += chunk
        return out

    def call(
        self, key: int, version: int, msg: dict[str, Any], keep_request: bool = True
    ) -> dict[str, Any]:
        """Send one request, keep it and the answer; a version beyond ours sends the
        body of our newest version (as a newer client would)."""
        self.corr += 1
        header = m.encode_request_header(key, version, self.corr, "ledgergate-capture")
        body = m.encode_request(key, min(version, m.DECODED[key][1]), msg)
        self.sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        frame = self._recv(struct.unpack(">i", self._recv(4))[0])
        size = m.response_header_size(key, version, frame)
        if keep_request and version <= m.DECODED[key][1]:
            self.frames.append(
                {"api_key": key, "api_version": version, "direction": "request",
                 "header": header.hex(), "body": body.hex()}
            )  # fmt: skip
        written = version
        if key == K.API_VERSIONS:  # an unknown version is answered in v0
            written = m.decode_api_versions_response(min(version, 5), frame[size:])[0]
        self.frames.append(
            {"api_key": key, "api_version": written, "request_version": version,
             "direction": "response", "header": frame[:size].hex(), "body": frame[size:].hex()}
        )  # fmt: skip
        return m.decode_response(key, written, frame[size:])


def _until_ok(self: Conn, key: int, version: int, msg: dict[str, Any]) -> None:
    """Ask until the answer has no error; keep the first and the last exchange."""
    first = len(self.frames)
    for attempt in range(100):
        ok = self.call(key, version, msg)["error_code"] == 0
        if attempt > 1:
            del self.frames[first + 2 : -2]
        if ok:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{m.api_name(key)} kept failing")


Conn.until_ok = _until_ok  # type: ignore[attr-defined]


def main() -> None:
    frames: list[dict[str, Any]] = []
    with KafkaCluster(1) as cluster:
        cluster.create_topic("orders", partitions=2)
        host, port = cluster.brokers[1]
        hello = {"client_software_name": "capture", "client_software_version": "1"}
        # One ApiVersions per connection: a SASL listener then wants the handshake.
        for v in (0, 3, 9, 5):  # v9 is unknown to the broker: answered in v0
            c = Conn(host, port, frames)
            c.call(K.API_VERSIONS, v, hello)
        c.call(K.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})
        secret = f"\0{cluster.admin_user}\0{cluster.admin_password}".encode()
        c.call(K.SASL_AUTHENTICATE, 2, {"auth_bytes": secret}, keep_request=False)
        c.call(K.METADATA, 4, {"topics": None, "allow_auto_topic_creation": False})
        md = c.call(K.METADATA, 12, {"topics": [{"name": "orders"}]})
        c.call(K.METADATA, 13, {"topics": None})
        topic_id = md["topics"][0]["topic_id"]
        # The first ask creates __consumer_offsets (COORDINATOR_NOT_AVAILABLE meanwhile).
        c.until_ok(K.FIND_COORDINATOR, 3, {"key": "group-1", "key_type": 0})
        c.call(K.FIND_COORDINATOR, 6, {"key_type": 0, "coordinator_keys": ["group-1", "group-2"]})
        c.call(K.DESCRIBE_CLUSTER, 1, {"include_cluster_authorized_operations": True})
        c.call(K.DESCRIBE_CLUSTER, 2, {"include_fenced_brokers": True})
        init = {"transactional_id": None, "transaction_timeout_ms": 60000, "producer_id": -1}
        c.until_ok(K.INIT_PRODUCER_ID, 5, dict(init, producer_epoch=-1))
        produce = {"acks": -1, "timeout_ms": 5000}
        for v, topic in ((9, {"name": "orders"}), (11, {"name": "orders"})):
            parts = [{"index": p, "records": batch([b"v%d-p%d-%d" % (v, p, i) for i in range(2)])}
                     for p in range(2)]  # fmt: skip
            c.call(K.PRODUCE, v, dict(produce, topic_data=[dict(topic, partition_data=parts)]))
        parts = [{"index": p, "records": batch([b"v13-p%d-%d" % (p, i) for i in range(2)])}
                 for p in range(2)]  # fmt: skip
        c.call(
            K.PRODUCE,
            13,
            dict(produce, topic_data=[{"topic_id": topic_id, "partition_data": parts}]),
        )
        lost = [{"name": "missing", "partition_data": [{"index": 0, "records": batch([b"x"])}]}]
        c.call(K.PRODUCE, 12, dict(produce, topic_data=lost))
        fetch = {"replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20,
                 "session_id": 0, "session_epoch": -1}  # fmt: skip
        wanted = [{"partition": p, "fetch_offset": 0, "partition_max_bytes": 1 << 20}
                  for p in range(2)]  # fmt: skip
        for v in (12, 16, 17, 18):
            topic = {"topic": "orders"} if v < 13 else {"topic_id": topic_id}
            c.call(K.FETCH, v, dict(fetch, topics=[dict(topic, partitions=wanted)]))
        latest = [{"name": "orders", "partitions": [{"partition_index": 0, "timestamp": -1}]}]
        c.call(K.LIST_OFFSETS, 11, {"replica_id": -1, "topics": latest})
        audit = {"name": "audit", "num_partitions": 1, "replication_factor": 1}
        c.call(K.CREATE_TOPICS, 7, {"topics": [audit], "timeout_ms": 5000})
        c.call(K.DELETE_TOPICS, 6, {"topics": [{"name": "audit"}], "timeout_ms": 5000})
    doc = {
        "source": "Apache Kafka 4.4.0 broker (KRaft, one node) on loopback; see capture.py",
        "frames": frames,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{len(frames)} frames -> {OUT}")


if __name__ == "__main__":
    main()
