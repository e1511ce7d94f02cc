"""The gateway's own answers to requests it refuses: the response a broker would send
with an error in every place the request named.

Owns building, from a decoded request, the decoded response that refuses each topic,
partition or resource it named with one error code (TOPIC_AUTHORIZATION_FAILED,
POLICY_VIOLATION, CORRUPT_MESSAGE, …) and message, for the APIs whose refusals clients
read per item (Produce, Fetch, topic and config admin operations) or at the top
(consumer-group operations). A request of an API not listed here is refused by closing
the connection, as a broker does when it cannot answer. Pure.
"""

from __future__ import annotations

from typing import Any

from ledgergate.wire.kafka.messages import ApiKey

__all__ = ["REFUSABLE", "refusal"]

K = ApiKey


def _name(t: dict[str, Any]) -> dict[str, Any]:
    return {k: t[k] for k in ("name", "topic", "topic_id") if k in t}


def _produce(req: dict[str, Any], code: int, msg: str) -> dict[str, Any]:
    return {
        "responses": [
            {
                **_name(t),
                "partition_responses": [
                    {
                        "index": p["index"],
                        "error_code": code,
                        "base_offset": -1,
                        "log_append_time_ms": -1,
                        "log_start_offset": -1,
                        "record_errors": [],
                        "error_message": msg,
                    }
                    for p in t["partition_data"]
                ],
            }
            for t in req["topic_data"]
        ],
        "throttle_time_ms": 0,
    }


def _fetch(req: dict[str, Any], code: int, msg: str) -> dict[str, Any]:
    return {
        "throttle_time_ms": 0,
        "error_code": 0,
        "session_id": 0,
        "responses": [
            {
                **_name(t),
                "partitions": [
                    {
                        "partition_index": p["partition"],
                        "error_code": code,
                        "high_watermark": -1,
                        "last_stable_offset": -1,
                        "log_start_offset": -1,
                        "aborted_transactions": None,
                        "preferred_read_replica": -1,
                        "records": None,
                    }
                    for p in t["partitions"]
                ],
            }
            for t in req["topics"]
        ],
    }


def _create_topics(req: dict[str, Any], code: int, msg: str) -> dict[str, Any]:
    return {
        "throttle_time_ms": 0,
        "topics": [
            {
                "name": t["name"],
                "error_code": code,
                "error_message": msg,
                "num_partitions": -1,
                "replication_factor": -1,
                "configs": None,
            }
            for t in req["topics"]
        ],
    }


def _delete_topics(req: dict[str, Any], code: int, msg: str) -> dict[str, Any]:
    if "topics" in req:
        named = [(t.get("name"), t.get("topic_id")) for t in req["topics"]]
    else:
        named = [(n, None) for n in req["topic_names"]]
    out = []
    for name, tid in named:
        r: dict[str, Any] = {"name": name, "error_code": code, "error_message": msg}
        if tid is not None:
            r["topic_id"] = tid
        out.append(r)
    return {"throttle_time_ms": 0, "responses": out}


def _delete_records(req: dict[str, Any], code: int, msg: str) -> dict[str, Any]:
    return {
        "throttle_time_ms": 0,
        "topics": [
            {
                "name": t["name"],
                "partitions": [
                    {
                        "partition_index": p["partition_index"],
                        "low_watermark": -1,
                        "error_code": code,
                    }
                    for p in t["partitions"]
                ],
            }
            for t in req["topics"]
        ],
    }


def _create_partitions(req: dict[str, Any], code: int, msg: str) -> dict[str, Any]:
    return {
        "throttle_time_ms": 0,
        "results": [
            {"name": t["name"], "error_code": code, "error_message": msg} for t in req["topics"]
        ],
    }


def _configs(req: dict[str, Any], code: int, msg: str) -> dict[str, Any]:
    return {
        "throttle_time_ms": 0,
        "responses": [
            {
                "error_code": code,
                "error_message": msg,
                "resource_type": r["resource_type"],
                "resource_name": r["resource_name"],
            }
            for r in req["resources"]
        ],
    }


def _top(req: dict[str, Any], code: int, msg: str) -> dict[str, Any]:
    return {"throttle_time_ms": 0, "error_code": code}


def _offset_commit(req: dict[str, Any], code: int, msg: str) -> dict[str, Any]:
    return {
        "throttle_time_ms": 0,
        "topics": [
            {
                **_name(t),
                "partitions": [
                    {"partition_index": p["partition_index"], "error_code": code}
                    for p in t["partitions"]
                ],
            }
            for t in req["topics"]
        ],
    }


_BUILDERS = {
    K.PRODUCE: _produce,
    K.FETCH: _fetch,
    K.CREATE_TOPICS: _create_topics,
    K.DELETE_TOPICS: _delete_topics,
    K.DELETE_RECORDS: _delete_records,
    K.CREATE_PARTITIONS: _create_partitions,
    K.ALTER_CONFIGS: _configs,
    K.INCREMENTAL_ALTER_CONFIGS: _configs,
    K.JOIN_GROUP: _top,
    K.SYNC_GROUP: _top,
    K.LEAVE_GROUP: _top,
    K.OFFSET_COMMIT: _offset_commit,
    K.TXN_OFFSET_COMMIT: _offset_commit,
}
REFUSABLE = frozenset(_BUILDERS)


def refusal(api_key: int, req: dict[str, Any], code: int, message: str) -> dict[str, Any]:
    """The decoded response refusing every item of ``req`` (KeyError: not refusable)."""
    return _BUILDERS[K(api_key)](req, code, message)
