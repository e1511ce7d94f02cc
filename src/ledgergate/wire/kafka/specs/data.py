"""The data path: producing, fetching and the offsets around it.

Declarations transcribed from Apache Kafka's message specs
(clients/src/main/resources/common/message/*.json): JSON names in snake_case, the same
version ranges. Data only: schema.py has the terms, codec.py the encodings."""

from ledgergate.wire.kafka.schema import (
    INT8,
    INT16,
    INT32,
    INT64,
    RECORDS,
    STRING,
    UUID,
    F,
    Message,
    message,
    struct,
)

# 0 Produce
# v0-v2 were removed in Kafka 4.0 (KIP-896); Kafka 3.x specs give them this same layout.


PRODUCE_REQUEST = message(
    "0-13",
    "9+",
    F("transactional_id", STRING, "3+", nullable="3+", default=None),
    F("acks", INT16),
    F("timeout_ms", INT32),
    F(
        "topic_data",
        [
            F("name", STRING, "0-12"),
            F("topic_id", UUID, "13+"),
            F(
                "partition_data",
                [
                    F("index", INT32),
                    F("records", RECORDS, nullable="0+"),
                ],
            ),
        ],
    ),
)


PRODUCE_RESPONSE = message(
    "0-13",
    "9+",
    F(
        "responses",
        [
            F("name", STRING, "0-12"),
            F("topic_id", UUID, "13+"),
            F(
                "partition_responses",
                [
                    F("index", INT32),
                    F("error_code", INT16),
                    F("base_offset", INT64),
                    F("log_append_time_ms", INT64, "2+", default=-1),
                    F("log_start_offset", INT64, "5+", default=-1),
                    F(
                        "record_errors",
                        [
                            F("batch_index", INT32, "8+"),
                            F(
                                "batch_index_error_message",
                                STRING,
                                "8+",
                                nullable="8+",
                                default=None,
                            ),
                        ],
                        "8+",
                    ),
                    F("error_message", STRING, "8+", nullable="8+", default=None),
                    F(
                        "current_leader",
                        struct(
                            F("leader_id", INT32, "10+", default=-1),
                            F("leader_epoch", INT32, "10+", default=-1),
                        ),
                        "10+",
                        tag=0,
                    ),
                ],
            ),
        ],
    ),
    F("throttle_time_ms", INT32, "1+"),
    F(
        "node_endpoints",
        [
            F("node_id", INT32, "10+"),
            F("host", STRING, "10+"),
            F("port", INT32, "10+"),
            F("rack", STRING, "10+", nullable="10+", default=None),
        ],
        "10+",
        tag=0,
    ),
)


# 1 Fetch
# v0-v3 were removed in Kafka 4.0 (KIP-896); Kafka 3.x specs give them this same layout.


FETCH_REQUEST = message(
    "0-18",
    "12+",
    F("cluster_id", STRING, "12+", nullable="12+", tag=0, default=None),
    F("replica_id", INT32, "0-14", default=-1),
    F(
        "replica_state",
        struct(
            F("replica_id", INT32, "15+", default=-1),
            F("replica_epoch", INT64, "15+", default=-1),
        ),
        "15+",
        tag=1,
    ),
    F("max_wait_ms", INT32),
    F("min_bytes", INT32),
    F("max_bytes", INT32, "3+", default=2147483647),
    F("isolation_level", INT8, "4+"),
    F("session_id", INT32, "7+"),
    F("session_epoch", INT32, "7+", default=-1),
    F(
        "topics",
        [
            F("topic", STRING, "0-12"),
            F("topic_id", UUID, "13+"),
            F(
                "partitions",
                [
                    F("partition", INT32),
                    F("current_leader_epoch", INT32, "9+", default=-1),
                    F("fetch_offset", INT64),
                    F("last_fetched_epoch", INT32, "12+", default=-1),
                    F("log_start_offset", INT64, "5+", default=-1),
                    F("partition_max_bytes", INT32),
                    F("replica_directory_id", UUID, "17+", tag=0),
                    F("high_watermark", INT64, "18+", tag=1, default=9223372036854775807),
                ],
            ),
        ],
    ),
    F(
        "forgotten_topics_data",
        [
            F("topic", STRING, "7-12"),
            F("topic_id", UUID, "13+"),
            F("partitions", [INT32], "7+"),
        ],
        "7+",
    ),
    F("rack_id", STRING, "11+"),
)


FETCH_RESPONSE = message(
    "0-18",
    "12+",
    F("throttle_time_ms", INT32, "1+"),
    F("error_code", INT16, "7+"),
    F("session_id", INT32, "7+"),
    F(
        "responses",
        [
            F("topic", STRING, "0-12"),
            F("topic_id", UUID, "13+"),
            F(
                "partitions",
                [
                    F("partition_index", INT32),
                    F("error_code", INT16),
                    F("high_watermark", INT64),
                    F("last_stable_offset", INT64, "4+", default=-1),
                    F("log_start_offset", INT64, "5+", default=-1),
                    F(
                        "diverging_epoch",
                        struct(
                            F("epoch", INT32, "12+", default=-1),
                            F("end_offset", INT64, "12+", default=-1),
                        ),
                        "12+",
                        tag=0,
                    ),
                    F(
                        "current_leader",
                        struct(
                            F("leader_id", INT32, "12+", default=-1),
                            F("leader_epoch", INT32, "12+", default=-1),
                        ),
                        "12+",
                        tag=1,
                    ),
                    F(
                        "snapshot_id",
                        struct(
                            F("end_offset", INT64, default=-1),
                            F("epoch", INT32, default=-1),
                        ),
                        "12+",
                        tag=2,
                    ),
                    F(
                        "aborted_transactions",
                        [
                            F("producer_id", INT64, "4+"),
                            F("first_offset", INT64, "4+"),
                        ],
                        "4+",
                        nullable="4+",
                    ),
                    F("preferred_read_replica", INT32, "11+", default=-1),
                    F("records", RECORDS, nullable="0+"),
                ],
            ),
        ],
    ),
    F(
        "node_endpoints",
        [
            F("node_id", INT32, "16+"),
            F("host", STRING, "16+"),
            F("port", INT32, "16+"),
            F("rack", STRING, "16+", nullable="16+", default=None),
        ],
        "16+",
        tag=0,
    ),
)


# 2 ListOffsets
# v0 was removed in Kafka 4.0 (KIP-896); Kafka 3.x specs give them this same layout.


LIST_OFFSETS_REQUEST = message(
    "0-11",
    "6+",
    F("replica_id", INT32),
    F("isolation_level", INT8, "2+"),
    F(
        "topics",
        [
            F("name", STRING),
            F(
                "partitions",
                [
                    F("partition_index", INT32),
                    F("current_leader_epoch", INT32, "4+", default=-1),
                    F("timestamp", INT64),
                    F("max_num_offsets", INT32, "0", default=1),
                ],
            ),
        ],
    ),
    F("timeout_ms", INT32, "10+"),
)


LIST_OFFSETS_RESPONSE = message(
    "0-11",
    "6+",
    F("throttle_time_ms", INT32, "2+"),
    F(
        "topics",
        [
            F("name", STRING),
            F(
                "partitions",
                [
                    F("partition_index", INT32),
                    F("error_code", INT16),
                    F("old_style_offsets", [INT64], "0"),
                    F("timestamp", INT64, "1+", default=-1),
                    F("offset", INT64, "1+", default=-1),
                    F("leader_epoch", INT32, "4+", default=-1),
                ],
            ),
        ],
    ),
)


# 21 DeleteRecords


DELETE_RECORDS_REQUEST = message(
    "0-2",
    "2+",
    F(
        "topics",
        [
            F("name", STRING),
            F(
                "partitions",
                [
                    F("partition_index", INT32),
                    F("offset", INT64),
                ],
            ),
        ],
    ),
    F("timeout_ms", INT32),
)


DELETE_RECORDS_RESPONSE = message(
    "0-2",
    "2+",
    F("throttle_time_ms", INT32),
    F(
        "topics",
        [
            F("name", STRING),
            F(
                "partitions",
                [
                    F("partition_index", INT32),
                    F("low_watermark", INT64),
                    F("error_code", INT16),
                ],
            ),
        ],
    ),
)


# 23 OffsetForLeaderEpoch
# v0-v1 were removed in Kafka 4.0 (KIP-896); Kafka 3.x specs give them this same layout.


OFFSET_FOR_LEADER_EPOCH_REQUEST = message(
    "0-4",
    "4+",
    F("replica_id", INT32, "3+", default=-2),
    F(
        "topics",
        [
            F("topic", STRING),
            F(
                "partitions",
                [
                    F("partition", INT32),
                    F("current_leader_epoch", INT32, "2+", default=-1),
                    F("leader_epoch", INT32),
                ],
            ),
        ],
    ),
)


OFFSET_FOR_LEADER_EPOCH_RESPONSE = message(
    "0-4",
    "4+",
    F("throttle_time_ms", INT32, "2+"),
    F(
        "topics",
        [
            F("topic", STRING),
            F(
                "partitions",
                [
                    F("error_code", INT16),
                    F("partition", INT32),
                    F("leader_epoch", INT32, "1+", default=-1),
                    F("end_offset", INT64, default=-1),
                ],
            ),
        ],
    ),
)


SPECS: dict[int, tuple[Message, Message]] = {
    0: (PRODUCE_REQUEST, PRODUCE_RESPONSE),
    1: (FETCH_REQUEST, FETCH_RESPONSE),
    2: (LIST_OFFSETS_REQUEST, LIST_OFFSETS_RESPONSE),
    21: (DELETE_RECORDS_REQUEST, DELETE_RECORDS_RESPONSE),
    23: (OFFSET_FOR_LEADER_EPOCH_REQUEST, OFFSET_FOR_LEADER_EPOCH_RESPONSE),
}
