"""addresses.py: every response field that names a broker is rewritten to the gateway,
the real address is learnt on the way, and ApiVersions is narrowed; the rewritten
responses encode and decode again at every version that carries them."""

from __future__ import annotations

from typing import Any

import pytest

from ledgergate.wire.kafka import messages as km
from ledgergate.wire.kafka.addresses import narrow_versions, rewrite_addresses, topic_ids

K = km.ApiKey


def place(node: int) -> tuple[str, int]:
    return "gw.example", 20000 + node


class Seen:
    def __init__(self) -> None:
        self.nodes: dict[int, tuple[str, int, str | None]] = {}

    def __call__(self, node: int, host: str, port: int, rack: str | None) -> None:
        self.nodes[node] = (host, port, rack)


def _round(key: int, version: int, msg: dict[str, Any]) -> dict[str, Any]:
    return km.decode_response(key, version, km.encode_response(key, version, msg))


@pytest.mark.parametrize("version", range(0, 14))
def test_metadata(version: int) -> None:
    msg = _round(
        K.METADATA,
        version,
        {
            "brokers": [
                {"node_id": 1, "host": "kafka-1.internal", "port": 9093, "rack": "a"},
                {"node_id": 2, "host": "kafka-2.internal", "port": 9093, "rack": None},
            ],
            "topics": [],
        },
    )
    seen = Seen()
    assert rewrite_addresses(K.METADATA, version, msg, place, seen)
    out = _round(K.METADATA, version, msg)
    assert [(b["host"], b["port"]) for b in out["brokers"]] == [
        ("gw.example", 20001),
        ("gw.example", 20002),
    ]
    assert seen.nodes[1][:2] == ("kafka-1.internal", 9093)


@pytest.mark.parametrize("version", range(0, 7))
def test_find_coordinator(version: int) -> None:
    if version < 4:
        msg = {"error_code": 0, "node_id": 3, "host": "kafka-3", "port": 9093}
    else:
        msg = {
            "coordinators": [
                {"key": "g1", "node_id": 3, "host": "kafka-3", "port": 9093, "error_code": 0},
                {"key": "g2", "node_id": -1, "host": "", "port": -1, "error_code": 15},
            ]
        }
    msg = _round(K.FIND_COORDINATOR, version, msg)
    seen = Seen()
    assert rewrite_addresses(K.FIND_COORDINATOR, version, msg, place, seen)
    out = _round(K.FIND_COORDINATOR, version, msg)
    first = out if version < 4 else out["coordinators"][0]
    assert (first["host"], first["port"]) == ("gw.example", 20003)
    if version >= 4:  # a coordinator not found stays as the broker said
        assert out["coordinators"][1]["node_id"] == -1
    assert set(seen.nodes) == {3}


@pytest.mark.parametrize("version", range(0, 3))
def test_describe_cluster(version: int) -> None:
    msg = _round(
        K.DESCRIBE_CLUSTER,
        version,
        {"brokers": [{"broker_id": 7, "host": "k7", "port": 9093, "rack": None}]},
    )
    assert rewrite_addresses(K.DESCRIBE_CLUSTER, version, msg, place, Seen())
    assert _round(K.DESCRIBE_CLUSTER, version, msg)["brokers"][0]["port"] == 20007


@pytest.mark.parametrize(
    ("key", "version"), [(K.PRODUCE, 10), (K.PRODUCE, 12), (K.FETCH, 16), (K.FETCH, 17)]
)
def test_node_endpoints_of_produce_and_fetch(key: int, version: int) -> None:
    """Tagged ``node_endpoints`` (a new leader after NOT_LEADER_OR_FOLLOWER)."""
    msg = _round(key, version, {"node_endpoints": [{"node_id": 2, "host": "k2", "port": 9093}]})
    assert rewrite_addresses(key, version, msg, place, Seen())
    assert _round(key, version, msg)["node_endpoints"][0]["port"] == 20002
    empty = _round(key, version, {})
    assert not rewrite_addresses(key, version, empty, place, Seen())


def test_narrow_versions() -> None:
    broker = {0: (3, 12), 1: (4, 17), 18: (0, 4), 55: (0, 2), 38: (1, 3)}
    gateway: dict[int, tuple[int, int] | None] = {0: (0, 11), 1: None, 18: (0, 4)}
    assert narrow_versions(broker, gateway) == [(0, 3, 11), (1, 4, 17), (18, 0, 4)]


def test_topic_ids() -> None:
    tid = bytes(range(16))
    msg = {"topics": [{"name": "t", "topic_id": tid}, {"name": "u", "topic_id": bytes(16)}]}
    assert topic_ids(msg) == {tid: "t"}
