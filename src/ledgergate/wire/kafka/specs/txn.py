"""Idempotent and transactional producers.

Declarations transcribed from Apache Kafka's message specs
(clients/src/main/resources/common/message/*.json): JSON names in snake_case, the same
version ranges. Data only: schema.py has the terms, codec.py the encodings."""

from ledgergate.wire.kafka.schema import (
    BOOL,
    INT16,
    INT32,
    INT64,
    STRING,
    UUID,
    F,
    Message,
    message,
    struct,
)

# 22 InitProducerId
# v6 is still unstable upstream (latestVersionUnstable): left out.


INIT_PRODUCER_ID_REQUEST = message(
    "0-5",
    "2+",
    F("transactional_id", STRING, nullable="0+"),
    F("transaction_timeout_ms", INT32),
    F("producer_id", INT64, "3+", default=-1),
    F("producer_epoch", INT16, "3+", default=-1),
    F("enable2_pc", BOOL, "6+", default=False),
    F("keep_prepared_txn", BOOL, "6+", default=False),
)


INIT_PRODUCER_ID_RESPONSE = message(
    "0-5",
    "2+",
    F("throttle_time_ms", INT32),
    F("error_code", INT16),
    F("producer_id", INT64, default=-1),
    F("producer_epoch", INT16),
    F("ongoing_txn_producer_id", INT64, "6+", default=-1),
    F("ongoing_txn_producer_epoch", INT16, "6+", default=-1),
)


# 24 AddPartitionsToTxn


ADD_PARTITIONS_TO_TXN_TOPIC = struct(
    F("name", STRING),
    F("partitions", [INT32]),
)

ADD_PARTITIONS_TO_TXN_REQUEST = message(
    "0-5",
    "3+",
    F(
        "transactions",
        [
            F("transactional_id", STRING, "4+"),
            F("producer_id", INT64, "4+"),
            F("producer_epoch", INT16, "4+"),
            F("verify_only", BOOL, "4+"),
            F("topics", [ADD_PARTITIONS_TO_TXN_TOPIC], "4+"),
        ],
        "4+",
    ),
    F("v3_and_below_transactional_id", STRING, "0-3"),
    F("v3_and_below_producer_id", INT64, "0-3"),
    F("v3_and_below_producer_epoch", INT16, "0-3"),
    F("v3_and_below_topics", [ADD_PARTITIONS_TO_TXN_TOPIC], "0-3"),
)


ADD_PARTITIONS_TO_TXN_PARTITION_RESULT = struct(
    F("partition_index", INT32),
    F("partition_error_code", INT16),
)

ADD_PARTITIONS_TO_TXN_TOPIC_RESULT = struct(
    F("name", STRING),
    F("results_by_partition", [ADD_PARTITIONS_TO_TXN_PARTITION_RESULT]),
)

ADD_PARTITIONS_TO_TXN_RESPONSE = message(
    "0-5",
    "3+",
    F("throttle_time_ms", INT32),
    F("error_code", INT16, "4+"),
    F(
        "results_by_transaction",
        [
            F("transactional_id", STRING, "4+"),
            F("topic_results", [ADD_PARTITIONS_TO_TXN_TOPIC_RESULT], "4+"),
        ],
        "4+",
    ),
    F("results_by_topic_v3_and_below", [ADD_PARTITIONS_TO_TXN_TOPIC_RESULT], "0-3"),
)


# 25 AddOffsetsToTxn


ADD_OFFSETS_TO_TXN_REQUEST = message(
    "0-4",
    "3+",
    F("transactional_id", STRING),
    F("producer_id", INT64),
    F("producer_epoch", INT16),
    F("group_id", STRING),
)


ADD_OFFSETS_TO_TXN_RESPONSE = message(
    "0-4",
    "3+",
    F("throttle_time_ms", INT32),
    F("error_code", INT16),
)


# 26 EndTxn


END_TXN_REQUEST = message(
    "0-5",
    "3+",
    F("transactional_id", STRING),
    F("producer_id", INT64),
    F("producer_epoch", INT16),
    F("committed", BOOL),
)


END_TXN_RESPONSE = message(
    "0-5",
    "3+",
    F("throttle_time_ms", INT32),
    F("error_code", INT16),
    F("producer_id", INT64, "5+", default=-1),
    F("producer_epoch", INT16, "5+", default=-1),
)


# 28 TxnOffsetCommit
# v6 (topic ids, Kafka 4.4) and the name generation_id_or_member_epoch are taken from
# Kafka 4.4.0's generated TxnOffsetCommit*Data (schema and defaults).


TXN_OFFSET_COMMIT_REQUEST = message(
    "0-6",
    "3+",
    F("transactional_id", STRING),
    F("group_id", STRING),
    F("producer_id", INT64),
    F("producer_epoch", INT16),
    F("generation_id_or_member_epoch", INT32, "3+", default=-1),
    F("member_id", STRING, "3+"),
    F("group_instance_id", STRING, "3+", nullable="3+", default=None),
    F(
        "topics",
        [
            F("name", STRING, "0-5"),
            F("topic_id", UUID, "6+"),
            F(
                "partitions",
                [
                    F("partition_index", INT32),
                    F("committed_offset", INT64),
                    F("committed_leader_epoch", INT32, "2+", default=-1),
                    F("committed_metadata", STRING, nullable="0+"),
                ],
            ),
        ],
    ),
)


TXN_OFFSET_COMMIT_RESPONSE = message(
    "0-6",
    "3+",
    F("throttle_time_ms", INT32),
    F(
        "topics",
        [
            F("name", STRING, "0-5"),
            F("topic_id", UUID, "6+"),
            F(
                "partitions",
                [
                    F("partition_index", INT32),
                    F("error_code", INT16),
                ],
            ),
        ],
    ),
)


SPECS: dict[int, tuple[Message, Message]] = {
    22: (INIT_PRODUCER_ID_REQUEST, INIT_PRODUCER_ID_RESPONSE),
    24: (ADD_PARTITIONS_TO_TXN_REQUEST, ADD_PARTITIONS_TO_TXN_RESPONSE),
    25: (ADD_OFFSETS_TO_TXN_REQUEST, ADD_OFFSETS_TO_TXN_RESPONSE),
    26: (END_TXN_REQUEST, END_TXN_RESPONSE),
    28: (TXN_OFFSET_COMMIT_REQUEST, TXN_OFFSET_COMMIT_RESPONSE),
}
