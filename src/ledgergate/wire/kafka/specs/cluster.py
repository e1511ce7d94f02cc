"""Connection set-up and cluster discovery: the APIs whose answers name brokers.

Declarations transcribed from Apache Kafka's message specs
(clients/src/main/resources/common/message/*.json): JSON names in snake_case, the same
version ranges. Data only: schema.py has the terms, codec.py the encodings."""

from ledgergate.wire.kafka.schema import (
    BOOL,
    BYTES,
    INT8,
    INT16,
    INT32,
    INT64,
    STRING,
    UUID,
    F,
    Message,
    message,
)

# 18 ApiVersions
# v5 (Kafka 4.4) is not in the JSON specs this was transcribed from; it is taken from
# Kafka 4.4.0's generated ApiVersionsRequestData (schema and defaults).


API_VERSIONS_REQUEST = message(
    "0-5",
    "3+",
    F("client_software_name", STRING, "3+"),
    F("client_software_version", STRING, "3+"),
    F("cluster_id", STRING, "5+", nullable="5+", default=None),
    F("node_id", INT32, "5+", default=-1),
)


API_VERSIONS_RESPONSE = message(
    "0-5",
    "3+",
    F("error_code", INT16),
    F(
        "api_keys",
        [
            F("api_key", INT16),
            F("min_version", INT16),
            F("max_version", INT16),
        ],
    ),
    F("throttle_time_ms", INT32, "1+"),
    F(
        "supported_features",
        [
            F("name", STRING, "3+"),
            F("min_version", INT16, "3+"),
            F("max_version", INT16, "3+"),
        ],
        "3+",
        tag=0,
    ),
    F("finalized_features_epoch", INT64, "3+", tag=1, default=-1),
    F(
        "finalized_features",
        [
            F("name", STRING, "3+"),
            F("max_version_level", INT16, "3+"),
            F("min_version_level", INT16, "3+"),
        ],
        "3+",
        tag=2,
    ),
    F("zk_migration_ready", BOOL, "3+", tag=3, default=False),
)


# 17 SaslHandshake


SASL_HANDSHAKE_REQUEST = message(
    "0-1",
    "none",
    F("mechanism", STRING),
)


SASL_HANDSHAKE_RESPONSE = message(
    "0-1",
    "none",
    F("error_code", INT16),
    F("mechanisms", [STRING]),
)


# 36 SaslAuthenticate


SASL_AUTHENTICATE_REQUEST = message(
    "0-2",
    "2+",
    F("auth_bytes", BYTES),
)


SASL_AUTHENTICATE_RESPONSE = message(
    "0-2",
    "2+",
    F("error_code", INT16),
    F("error_message", STRING, nullable="0+"),
    F("auth_bytes", BYTES),
    F("session_lifetime_ms", INT64, "1+"),
)


# 3 Metadata


METADATA_REQUEST = message(
    "0-13",
    "9+",
    F(
        "topics",
        [
            F("topic_id", UUID, "10+"),
            F("name", STRING, nullable="10+"),
        ],
        nullable="1+",
    ),
    F("allow_auto_topic_creation", BOOL, "4+", default=True),
    F("include_cluster_authorized_operations", BOOL, "8-10"),
    F("include_topic_authorized_operations", BOOL, "8+"),
)


METADATA_RESPONSE = message(
    "0-13",
    "9+",
    F("throttle_time_ms", INT32, "3+"),
    F(
        "brokers",
        [
            F("node_id", INT32),
            F("host", STRING),
            F("port", INT32),
            F("rack", STRING, "1+", nullable="1+", default=None),
        ],
    ),
    F("cluster_id", STRING, "2+", nullable="2+", default=None),
    F("controller_id", INT32, "1+", default=-1),
    F(
        "topics",
        [
            F("error_code", INT16),
            F("name", STRING, nullable="12+"),
            F("topic_id", UUID, "10+"),
            F("is_internal", BOOL, "1+", default=False),
            F(
                "partitions",
                [
                    F("error_code", INT16),
                    F("partition_index", INT32),
                    F("leader_id", INT32),
                    F("leader_epoch", INT32, "7+", default=-1),
                    F("replica_nodes", [INT32]),
                    F("isr_nodes", [INT32]),
                    F("offline_replicas", [INT32], "5+"),
                ],
            ),
            F("topic_authorized_operations", INT32, "8+", default=-2147483648),
        ],
    ),
    F("cluster_authorized_operations", INT32, "8-10", default=-2147483648),
    F("error_code", INT16, "13+"),
)


# 10 FindCoordinator


FIND_COORDINATOR_REQUEST = message(
    "0-6",
    "3+",
    F("key", STRING, "0-3"),
    F("key_type", INT8, "1+"),
    F("coordinator_keys", [STRING], "4+"),
)


FIND_COORDINATOR_RESPONSE = message(
    "0-6",
    "3+",
    F("throttle_time_ms", INT32, "1+"),
    F("error_code", INT16, "0-3"),
    F("error_message", STRING, "1-3", nullable="1-3"),
    F("node_id", INT32, "0-3"),
    F("host", STRING, "0-3"),
    F("port", INT32, "0-3"),
    F(
        "coordinators",
        [
            F("key", STRING, "4+"),
            F("node_id", INT32, "4+"),
            F("host", STRING, "4+"),
            F("port", INT32, "4+"),
            F("error_code", INT16, "4+"),
            F("error_message", STRING, "4+", nullable="4+"),
        ],
        "4+",
    ),
)


# 60 DescribeCluster


DESCRIBE_CLUSTER_REQUEST = message(
    "0-2",
    "0+",
    F("include_cluster_authorized_operations", BOOL),
    F("endpoint_type", INT8, "1+", default=1),
    F("include_fenced_brokers", BOOL, "2+"),
)


DESCRIBE_CLUSTER_RESPONSE = message(
    "0-2",
    "0+",
    F("throttle_time_ms", INT32),
    F("error_code", INT16),
    F("error_message", STRING, nullable="0+", default=None),
    F("endpoint_type", INT8, "1+", default=1),
    F("cluster_id", STRING),
    F("controller_id", INT32, default=-1),
    F(
        "brokers",
        [
            F("broker_id", INT32),
            F("host", STRING),
            F("port", INT32),
            F("rack", STRING, nullable="0+", default=None),
            F("is_fenced", BOOL, "2+"),
        ],
    ),
    F("cluster_authorized_operations", INT32, default=-2147483648),
)


SPECS: dict[int, tuple[Message, Message]] = {
    18: (API_VERSIONS_REQUEST, API_VERSIONS_RESPONSE),
    17: (SASL_HANDSHAKE_REQUEST, SASL_HANDSHAKE_RESPONSE),
    36: (SASL_AUTHENTICATE_REQUEST, SASL_AUTHENTICATE_RESPONSE),
    3: (METADATA_REQUEST, METADATA_RESPONSE),
    10: (FIND_COORDINATOR_REQUEST, FIND_COORDINATOR_RESPONSE),
    60: (DESCRIBE_CLUSTER_REQUEST, DESCRIBE_CLUSTER_RESPONSE),
}
