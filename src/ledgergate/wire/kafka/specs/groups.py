"""Consumer groups: membership, assignments and committed offsets.

Declarations transcribed from Apache Kafka's message specs
(clients/src/main/resources/common/message/*.json): JSON names in snake_case, the same
version ranges. Data only: schema.py has the terms, codec.py the encodings."""

from ledgergate.wire.kafka.schema import (
    BOOL,
    BYTES,
    INT16,
    INT32,
    INT64,
    STRING,
    UUID,
    F,
    Message,
    message,
)

# 11 JoinGroup


JOIN_GROUP_REQUEST = message(
    "0-9",
    "6+",
    F("group_id", STRING),
    F("session_timeout_ms", INT32),
    F("rebalance_timeout_ms", INT32, "1+", default=-1),
    F("member_id", STRING),
    F("group_instance_id", STRING, "5+", nullable="5+", default=None),
    F("protocol_type", STRING),
    F(
        "protocols",
        [
            F("name", STRING),
            F("metadata", BYTES),
        ],
    ),
    F("reason", STRING, "8+", nullable="8+", default=None),
)


JOIN_GROUP_RESPONSE = message(
    "0-9",
    "6+",
    F("throttle_time_ms", INT32, "2+"),
    F("error_code", INT16),
    F("generation_id", INT32, default=-1),
    F("protocol_type", STRING, "7+", nullable="7+", default=None),
    F("protocol_name", STRING, nullable="7+"),
    F("leader", STRING),
    F("skip_assignment", BOOL, "9+", default=False),
    F("member_id", STRING),
    F(
        "members",
        [
            F("member_id", STRING),
            F("group_instance_id", STRING, "5+", nullable="5+", default=None),
            F("metadata", BYTES),
        ],
    ),
)


# 12 Heartbeat


HEARTBEAT_REQUEST = message(
    "0-4",
    "4+",
    F("group_id", STRING),
    F("generation_id", INT32),
    F("member_id", STRING),
    F("group_instance_id", STRING, "3+", nullable="3+", default=None),
)


HEARTBEAT_RESPONSE = message(
    "0-4",
    "4+",
    F("throttle_time_ms", INT32, "1+"),
    F("error_code", INT16),
)


# 13 LeaveGroup


LEAVE_GROUP_REQUEST = message(
    "0-5",
    "4+",
    F("group_id", STRING),
    F("member_id", STRING, "0-2"),
    F(
        "members",
        [
            F("member_id", STRING, "3+"),
            F("group_instance_id", STRING, "3+", nullable="3+", default=None),
            F("reason", STRING, "5+", nullable="5+", default=None),
        ],
        "3+",
    ),
)


LEAVE_GROUP_RESPONSE = message(
    "0-5",
    "4+",
    F("throttle_time_ms", INT32, "1+"),
    F("error_code", INT16),
    F(
        "members",
        [
            F("member_id", STRING, "3+"),
            F("group_instance_id", STRING, "3+", nullable="3+"),
            F("error_code", INT16, "3+"),
        ],
        "3+",
    ),
)


# 14 SyncGroup


SYNC_GROUP_REQUEST = message(
    "0-5",
    "4+",
    F("group_id", STRING),
    F("generation_id", INT32),
    F("member_id", STRING),
    F("group_instance_id", STRING, "3+", nullable="3+", default=None),
    F("protocol_type", STRING, "5+", nullable="5+", default=None),
    F("protocol_name", STRING, "5+", nullable="5+", default=None),
    F(
        "assignments",
        [
            F("member_id", STRING),
            F("assignment", BYTES),
        ],
    ),
)


SYNC_GROUP_RESPONSE = message(
    "0-5",
    "4+",
    F("throttle_time_ms", INT32, "1+"),
    F("error_code", INT16),
    F("protocol_type", STRING, "5+", nullable="5+", default=None),
    F("protocol_name", STRING, "5+", nullable="5+", default=None),
    F("assignment", BYTES),
)


# 15 DescribeGroups


DESCRIBE_GROUPS_REQUEST = message(
    "0-6",
    "5+",
    F("groups", [STRING]),
    F("include_authorized_operations", BOOL, "3+"),
)


DESCRIBE_GROUPS_RESPONSE = message(
    "0-6",
    "5+",
    F("throttle_time_ms", INT32, "1+"),
    F(
        "groups",
        [
            F("error_code", INT16),
            F("error_message", STRING, "6+", nullable="6+", default=None),
            F("group_id", STRING),
            F("group_state", STRING),
            F("protocol_type", STRING),
            F("protocol_data", STRING),
            F(
                "members",
                [
                    F("member_id", STRING),
                    F("group_instance_id", STRING, "4+", nullable="4+", default=None),
                    F("client_id", STRING),
                    F("client_host", STRING),
                    F("member_metadata", BYTES),
                    F("member_assignment", BYTES),
                ],
            ),
            F("authorized_operations", INT32, "3+", default=-2147483648),
        ],
    ),
)


# 16 ListGroups


LIST_GROUPS_REQUEST = message(
    "0-5",
    "3+",
    F("states_filter", [STRING], "4+"),
    F("types_filter", [STRING], "5+"),
)


LIST_GROUPS_RESPONSE = message(
    "0-5",
    "3+",
    F("throttle_time_ms", INT32, "1+"),
    F("error_code", INT16),
    F(
        "groups",
        [
            F("group_id", STRING),
            F("protocol_type", STRING),
            F("group_state", STRING, "4+"),
            F("group_type", STRING, "5+"),
        ],
    ),
)


# 8 OffsetCommit
# v0-v1 were removed in Kafka 4.0 (KIP-896); Kafka 3.x specs give them this same layout.


OFFSET_COMMIT_REQUEST = message(
    "0-10",
    "8+",
    F("group_id", STRING),
    F("generation_id_or_member_epoch", INT32, "1+", default=-1),
    F("member_id", STRING, "1+"),
    F("group_instance_id", STRING, "7+", nullable="7+", default=None),
    F("retention_time_ms", INT64, "2-4", default=-1),
    F(
        "topics",
        [
            F("name", STRING, "0-9"),
            F("topic_id", UUID, "10+"),
            F(
                "partitions",
                [
                    F("partition_index", INT32),
                    F("committed_offset", INT64),
                    F("committed_leader_epoch", INT32, "6+", default=-1),
                    F("commit_timestamp", INT64, "1", default=-1),
                    F("committed_metadata", STRING, nullable="0+"),
                ],
            ),
        ],
    ),
)


OFFSET_COMMIT_RESPONSE = message(
    "0-10",
    "8+",
    F("throttle_time_ms", INT32, "3+"),
    F(
        "topics",
        [
            F("name", STRING, "0-9"),
            F("topic_id", UUID, "10+"),
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


# 9 OffsetFetch
# v0 was removed in Kafka 4.0 (KIP-896); Kafka 3.x specs give them this same layout.


OFFSET_FETCH_REQUEST = message(
    "0-10",
    "6+",
    F("group_id", STRING, "0-7"),
    F(
        "topics",
        [
            F("name", STRING, "0-7"),
            F("partition_indexes", [INT32], "0-7"),
        ],
        "0-7",
        nullable="2-7",
    ),
    F(
        "groups",
        [
            F("group_id", STRING, "8+"),
            F("member_id", STRING, "9+", nullable="9+", default=None),
            F("member_epoch", INT32, "9+", default=-1),
            F(
                "topics",
                [
                    F("name", STRING, "8-9"),
                    F("topic_id", UUID, "10+"),
                    F("partition_indexes", [INT32], "8+"),
                ],
                "8+",
                nullable="8+",
            ),
        ],
        "8+",
    ),
    F("require_stable", BOOL, "7+", default=False),
)


OFFSET_FETCH_RESPONSE = message(
    "0-10",
    "6+",
    F("throttle_time_ms", INT32, "3+"),
    F(
        "topics",
        [
            F("name", STRING, "0-7"),
            F(
                "partitions",
                [
                    F("partition_index", INT32, "0-7"),
                    F("committed_offset", INT64, "0-7"),
                    F("committed_leader_epoch", INT32, "5-7", default=-1),
                    F("metadata", STRING, "0-7", nullable="0-7"),
                    F("error_code", INT16, "0-7"),
                ],
                "0-7",
            ),
        ],
        "0-7",
    ),
    F("error_code", INT16, "2-7"),
    F(
        "groups",
        [
            F("group_id", STRING, "8+"),
            F(
                "topics",
                [
                    F("name", STRING, "8-9"),
                    F("topic_id", UUID, "10+"),
                    F(
                        "partitions",
                        [
                            F("partition_index", INT32, "8+"),
                            F("committed_offset", INT64, "8+"),
                            F("committed_leader_epoch", INT32, "8+", default=-1),
                            F("metadata", STRING, "8+", nullable="8+"),
                            F("error_code", INT16, "8+"),
                        ],
                        "8+",
                    ),
                ],
                "8+",
            ),
            F("error_code", INT16, "8+"),
        ],
        "8+",
    ),
)


# 42 DeleteGroups
# v3 (Kafka 4.4: a per-group error message) is taken from Kafka 4.4.0's generated
# DeleteGroupsResponseData (schema and defaults).


DELETE_GROUPS_REQUEST = message(
    "0-3",
    "2+",
    F("groups_names", [STRING]),
)


DELETE_GROUPS_RESPONSE = message(
    "0-3",
    "2+",
    F("throttle_time_ms", INT32),
    F(
        "results",
        [
            F("group_id", STRING),
            F("error_code", INT16),
            F("error_message", STRING, "3+", nullable="3+", default=None),
        ],
    ),
)


# 47 OffsetDelete


OFFSET_DELETE_REQUEST = message(
    "0",
    "none",
    F("group_id", STRING),
    F(
        "topics",
        [
            F("name", STRING),
            F(
                "partitions",
                [
                    F("partition_index", INT32),
                ],
            ),
        ],
    ),
)


OFFSET_DELETE_RESPONSE = message(
    "0",
    "none",
    F("error_code", INT16),
    F("throttle_time_ms", INT32),
    F(
        "topics",
        [
            F("name", STRING),
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
    11: (JOIN_GROUP_REQUEST, JOIN_GROUP_RESPONSE),
    12: (HEARTBEAT_REQUEST, HEARTBEAT_RESPONSE),
    13: (LEAVE_GROUP_REQUEST, LEAVE_GROUP_RESPONSE),
    14: (SYNC_GROUP_REQUEST, SYNC_GROUP_RESPONSE),
    15: (DESCRIBE_GROUPS_REQUEST, DESCRIBE_GROUPS_RESPONSE),
    16: (LIST_GROUPS_REQUEST, LIST_GROUPS_RESPONSE),
    8: (OFFSET_COMMIT_REQUEST, OFFSET_COMMIT_RESPONSE),
    9: (OFFSET_FETCH_REQUEST, OFFSET_FETCH_RESPONSE),
    42: (DELETE_GROUPS_REQUEST, DELETE_GROUPS_RESPONSE),
    47: (OFFSET_DELETE_REQUEST, OFFSET_DELETE_RESPONSE),
}
