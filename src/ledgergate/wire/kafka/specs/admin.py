"""Administration: topics, partitions, configs and ACLs.

Declarations transcribed from Apache Kafka's message specs
(clients/src/main/resources/common/message/*.json): JSON names in snake_case, the same
version ranges. Data only: schema.py has the terms, codec.py the encodings."""

from ledgergate.wire.kafka.schema import (
    BOOL,
    INT8,
    INT16,
    INT32,
    STRING,
    UUID,
    F,
    Message,
    message,
)

# 19 CreateTopics
# v0-v1 were removed in Kafka 4.0 (KIP-896); Kafka 3.x specs give them this same layout.


CREATE_TOPICS_REQUEST = message(
    "0-7",
    "5+",
    F(
        "topics",
        [
            F("name", STRING),
            F("num_partitions", INT32),
            F("replication_factor", INT16),
            F(
                "assignments",
                [
                    F("partition_index", INT32),
                    F("broker_ids", [INT32]),
                ],
            ),
            F(
                "configs",
                [
                    F("name", STRING),
                    F("value", STRING, nullable="0+"),
                ],
            ),
        ],
    ),
    F("timeout_ms", INT32, default=60000),
    F("validate_only", BOOL, "1+", default=False),
)


CREATE_TOPICS_RESPONSE = message(
    "0-7",
    "5+",
    F("throttle_time_ms", INT32, "2+"),
    F(
        "topics",
        [
            F("name", STRING),
            F("topic_id", UUID, "7+"),
            F("error_code", INT16),
            F("error_message", STRING, "1+", nullable="0+"),
            F("topic_config_error_code", INT16, "5+", tag=0),
            F("num_partitions", INT32, "5+", default=-1),
            F("replication_factor", INT16, "5+", default=-1),
            F(
                "configs",
                [
                    F("name", STRING, "5+"),
                    F("value", STRING, "5+", nullable="5+"),
                    F("read_only", BOOL, "5+"),
                    F("config_source", INT8, "5+", default=-1),
                    F("is_sensitive", BOOL, "5+"),
                ],
                "5+",
                nullable="5+",
            ),
        ],
    ),
)


# 20 DeleteTopics
# v0 was removed in Kafka 4.0 (KIP-896); Kafka 3.x specs give them this same layout.


DELETE_TOPICS_REQUEST = message(
    "0-6",
    "4+",
    F(
        "topics",
        [
            F("name", STRING, "6+", nullable="6+", default=None),
            F("topic_id", UUID, "6+"),
        ],
        "6+",
    ),
    F("topic_names", [STRING], "0-5"),
    F("timeout_ms", INT32),
)


DELETE_TOPICS_RESPONSE = message(
    "0-6",
    "4+",
    F("throttle_time_ms", INT32, "1+"),
    F(
        "responses",
        [
            F("name", STRING, nullable="6+"),
            F("topic_id", UUID, "6+"),
            F("error_code", INT16),
            F("error_message", STRING, "5+", nullable="5+", default=None),
        ],
    ),
)


# 37 CreatePartitions


CREATE_PARTITIONS_REQUEST = message(
    "0-3",
    "2+",
    F(
        "topics",
        [
            F("name", STRING),
            F("count", INT32),
            F(
                "assignments",
                [
                    F("broker_ids", [INT32]),
                ],
                nullable="0+",
            ),
        ],
    ),
    F("timeout_ms", INT32),
    F("validate_only", BOOL),
)


CREATE_PARTITIONS_RESPONSE = message(
    "0-3",
    "2+",
    F("throttle_time_ms", INT32),
    F(
        "results",
        [
            F("name", STRING),
            F("error_code", INT16),
            F("error_message", STRING, nullable="0+", default=None),
        ],
    ),
)


# 32 DescribeConfigs
# v0 was removed in Kafka 4.0 (KIP-896); Kafka 3.x specs give them this same layout.


DESCRIBE_CONFIGS_REQUEST = message(
    "0-4",
    "4+",
    F(
        "resources",
        [
            F("resource_type", INT8),
            F("resource_name", STRING),
            F("configuration_keys", [STRING], nullable="0+"),
        ],
    ),
    F("include_synonyms", BOOL, "1+", default=False),
    F("include_documentation", BOOL, "3+", default=False),
)


DESCRIBE_CONFIGS_RESPONSE = message(
    "0-4",
    "4+",
    F("throttle_time_ms", INT32),
    F(
        "results",
        [
            F("error_code", INT16),
            F("error_message", STRING, nullable="0+"),
            F("resource_type", INT8),
            F("resource_name", STRING),
            F(
                "configs",
                [
                    F("name", STRING),
                    F("value", STRING, nullable="0+"),
                    F("read_only", BOOL),
                    F("config_source", INT8, "1+", default=-1),
                    F("is_default", BOOL, "0"),
                    F("is_sensitive", BOOL),
                    F(
                        "synonyms",
                        [
                            F("name", STRING, "1+"),
                            F("value", STRING, "1+", nullable="0+"),
                            F("source", INT8, "1+"),
                        ],
                        "1+",
                    ),
                    F("config_type", INT8, "3+"),
                    F("documentation", STRING, "3+", nullable="0+"),
                ],
            ),
        ],
    ),
)


# 33 AlterConfigs


ALTER_CONFIGS_REQUEST = message(
    "0-2",
    "2+",
    F(
        "resources",
        [
            F("resource_type", INT8),
            F("resource_name", STRING),
            F(
                "configs",
                [
                    F("name", STRING),
                    F("value", STRING, nullable="0+"),
                ],
            ),
        ],
    ),
    F("validate_only", BOOL),
)


ALTER_CONFIGS_RESPONSE = message(
    "0-2",
    "2+",
    F("throttle_time_ms", INT32),
    F(
        "responses",
        [
            F("error_code", INT16),
            F("error_message", STRING, nullable="0+"),
            F("resource_type", INT8),
            F("resource_name", STRING),
        ],
    ),
)


# 44 IncrementalAlterConfigs


INCREMENTAL_ALTER_CONFIGS_REQUEST = message(
    "0-1",
    "1+",
    F(
        "resources",
        [
            F("resource_type", INT8),
            F("resource_name", STRING),
            F(
                "configs",
                [
                    F("name", STRING),
                    F("config_operation", INT8),
                    F("value", STRING, nullable="0+"),
                ],
            ),
        ],
    ),
    F("validate_only", BOOL),
)


INCREMENTAL_ALTER_CONFIGS_RESPONSE = message(
    "0-1",
    "1+",
    F("throttle_time_ms", INT32),
    F(
        "responses",
        [
            F("error_code", INT16),
            F("error_message", STRING, nullable="0+"),
            F("resource_type", INT8),
            F("resource_name", STRING),
        ],
    ),
)


# 29 DescribeAcls
# v0 was removed in Kafka 4.0 (KIP-896); Kafka 3.x specs give them this same layout.


DESCRIBE_ACLS_REQUEST = message(
    "0-3",
    "2+",
    F("resource_type_filter", INT8),
    F("resource_name_filter", STRING, nullable="0+"),
    F("pattern_type_filter", INT8, "1+", default=3),
    F("principal_filter", STRING, nullable="0+"),
    F("host_filter", STRING, nullable="0+"),
    F("operation", INT8),
    F("permission_type", INT8),
)


DESCRIBE_ACLS_RESPONSE = message(
    "0-3",
    "2+",
    F("throttle_time_ms", INT32),
    F("error_code", INT16),
    F("error_message", STRING, nullable="0+"),
    F(
        "resources",
        [
            F("resource_type", INT8),
            F("resource_name", STRING),
            F("pattern_type", INT8, "1+", default=3),
            F(
                "acls",
                [
                    F("principal", STRING),
                    F("host", STRING),
                    F("operation", INT8),
                    F("permission_type", INT8),
                ],
            ),
        ],
    ),
)


# 30 CreateAcls
# v0 was removed in Kafka 4.0 (KIP-896); Kafka 3.x specs give them this same layout.


CREATE_ACLS_REQUEST = message(
    "0-3",
    "2+",
    F(
        "creations",
        [
            F("resource_type", INT8),
            F("resource_name", STRING),
            F("resource_pattern_type", INT8, "1+", default=3),
            F("principal", STRING),
            F("host", STRING),
            F("operation", INT8),
            F("permission_type", INT8),
        ],
    ),
)


CREATE_ACLS_RESPONSE = message(
    "0-3",
    "2+",
    F("throttle_time_ms", INT32),
    F(
        "results",
        [
            F("error_code", INT16),
            F("error_message", STRING, nullable="0+"),
        ],
    ),
)


# 31 DeleteAcls
# v0 was removed in Kafka 4.0 (KIP-896); Kafka 3.x specs give them this same layout.


DELETE_ACLS_REQUEST = message(
    "0-3",
    "2+",
    F(
        "filters",
        [
            F("resource_type_filter", INT8),
            F("resource_name_filter", STRING, nullable="0+"),
            F("pattern_type_filter", INT8, "1+", default=3),
            F("principal_filter", STRING, nullable="0+"),
            F("host_filter", STRING, nullable="0+"),
            F("operation", INT8),
            F("permission_type", INT8),
        ],
    ),
)


DELETE_ACLS_RESPONSE = message(
    "0-3",
    "2+",
    F("throttle_time_ms", INT32),
    F(
        "filter_results",
        [
            F("error_code", INT16),
            F("error_message", STRING, nullable="0+"),
            F(
                "matching_acls",
                [
                    F("error_code", INT16),
                    F("error_message", STRING, nullable="0+"),
                    F("resource_type", INT8),
                    F("resource_name", STRING),
                    F("pattern_type", INT8, "1+", default=3),
                    F("principal", STRING),
                    F("host", STRING),
                    F("operation", INT8),
                    F("permission_type", INT8),
                ],
            ),
        ],
    ),
)


SPECS: dict[int, tuple[Message, Message]] = {
    19: (CREATE_TOPICS_REQUEST, CREATE_TOPICS_RESPONSE),
    20: (DELETE_TOPICS_REQUEST, DELETE_TOPICS_RESPONSE),
    37: (CREATE_PARTITIONS_REQUEST, CREATE_PARTITIONS_RESPONSE),
    32: (DESCRIBE_CONFIGS_REQUEST, DESCRIBE_CONFIGS_RESPONSE),
    33: (ALTER_CONFIGS_REQUEST, ALTER_CONFIGS_RESPONSE),
    44: (INCREMENTAL_ALTER_CONFIGS_REQUEST, INCREMENTAL_ALTER_CONFIGS_RESPONSE),
    29: (DESCRIBE_ACLS_REQUEST, DESCRIBE_ACLS_RESPONSE),
    30: (CREATE_ACLS_REQUEST, CREATE_ACLS_RESPONSE),
    31: (DELETE_ACLS_REQUEST, DELETE_ACLS_RESPONSE),
}
