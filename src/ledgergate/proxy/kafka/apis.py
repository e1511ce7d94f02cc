"""Which Kafka APIs the gateway offers, and what each one is to it.

Owns the tables the relay dispatches on: admin operations (recorded as commands before a
broker sees them), consumer-group steps, APIs passed through untouched, the versions
the gateway offers per API (so ApiVersions can be narrowed), and the Kafka error codes
the gateway answers with. Data only.
"""

from __future__ import annotations

from ledgergate.wire.kafka import messages as km

__all__ = ["ADMIN", "GATEWAY_APIS", "GROUP", "api_name"]

K = km.ApiKey

# Admin operations: a ``command`` entry, durable before the broker sees the request.
ADMIN = frozenset(
    {
        K.CREATE_TOPICS,
        K.DELETE_TOPICS,
        K.DELETE_RECORDS,
        K.CREATE_PARTITIONS,
        K.ALTER_CONFIGS,
        K.INCREMENTAL_ALTER_CONFIGS,
        K.CREATE_ACLS,
        K.DELETE_ACLS,
        K.DELETE_GROUPS,
        K.OFFSET_DELETE,
    }
    | {
        getattr(K, n)
        for n in (
            "ELECT_LEADERS",
            "ALTER_PARTITION_REASSIGNMENTS",
            "ALTER_CLIENT_QUOTAS",
            "ALTER_USER_SCRAM_CREDENTIALS",
            "ALTER_REPLICA_LOG_DIRS",
        )
        if hasattr(K, n)
    }
)
# Consumer-group steps and the end of transactions: ``group.*`` / ``txn.end`` entries
# as they pass.
GROUP = frozenset(
    {K.JOIN_GROUP, K.SYNC_GROUP, K.LEAVE_GROUP, K.OFFSET_COMMIT, K.TXN_OFFSET_COMMIT, K.END_TXN}
)
# APIs passed through as they are: they carry no broker address and nothing the ledger
# records beyond the session (reads of metadata, offsets, group state, telemetry).
PASS_THROUGH_NAMES = (
    "LIST_OFFSETS",
    "OFFSET_FETCH",
    "HEARTBEAT",
    "DESCRIBE_GROUPS",
    "LIST_GROUPS",
    "INIT_PRODUCER_ID",
    "ADD_PARTITIONS_TO_TXN",
    "ADD_OFFSETS_TO_TXN",
    "DESCRIBE_ACLS",
    "DESCRIBE_CONFIGS",
    "DESCRIBE_LOG_DIRS",
    "LIST_PARTITION_REASSIGNMENTS",
    "DESCRIBE_CLIENT_QUOTAS",
    "DESCRIBE_USER_SCRAM_CREDENTIALS",
    "DESCRIBE_PRODUCERS",
    "DESCRIBE_TRANSACTIONS",
    "LIST_TRANSACTIONS",
    "CONSUMER_GROUP_HEARTBEAT",
    "CONSUMER_GROUP_DESCRIBE",
    "GET_TELEMETRY_SUBSCRIPTIONS",
    "PUSH_TELEMETRY",
    "LIST_CLIENT_METRICS_RESOURCES",
    "DESCRIBE_TOPIC_PARTITIONS",
)
# What the gateway offers: api key -> the versions it decodes, or None (any: the frames
# pass untouched). Not offered, so refused: delegation tokens (they would let a client
# reach the brokers without the gateway), controller and broker-internal APIs, share
# groups and DescribeQuorum (they carry addresses the gateway does not serve yet).
GATEWAY_APIS: dict[int, tuple[int, int] | None] = {
    **{int(getattr(K, n)): None for n in PASS_THROUGH_NAMES if hasattr(K, n)},
    **{int(k): None for k in ADMIN | GROUP},
    **{
        int(k): km.DECODED[k]
        for k in (K.PRODUCE, K.FETCH, K.METADATA, K.FIND_COORDINATOR, K.DESCRIBE_CLUSTER)
    },
    **{int(k): km.DECODED[k] for k in (K.API_VERSIONS, K.SASL_HANDSHAKE, K.SASL_AUTHENTICATE)},
}
# Kafka error codes the gateway answers with.
CORRUPT_MESSAGE = 2
TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
UNSUPPORTED_VERSION = 35
POLICY_VIOLATION = 44
# Maskers kept per cluster (one per session policy and topic).
MASKER_CACHE = 1024
# Config resource type of a topic (AlterConfigs, IncrementalAlterConfigs).
TOPIC_RESOURCE = 2


def api_name(key: int) -> str:
    try:
        return K(key).name
    except ValueError:
        return f"API_{key}"
