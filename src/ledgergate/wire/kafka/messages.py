"""Kafka request and response messages: headers, bodies and error codes.

Owns the request header (v0, v1 and the flexible v2) and response header (v0 and the
flexible v1), which header version each API key and version uses, and the body codecs of
the APIs the gateway reads or rewrites (``DECODED``), compiled from the declarations in
``specs/`` (in schema.py's terms) by codec.py. A body decodes to a dict keyed by the
spec's field names in snake_case; see codec.py for tagged fields, ``records`` and what
round-trips.

Rules:
- ``frame`` arguments are the bytes after the 4-byte size prefix (frames.py cuts them);
  ``body`` the bytes after the header.
- ApiVersions is special: its request header follows its flexible versions (v2 for v3+),
  but its response header is always v0, so that a client can read the answer whatever
  version the broker supports.
- Only ``KafkaCodecError`` leaves this module on bad input or an unsupported version.
Pure: no I/O, no logging, no clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from ledgergate.wire.kafka.codec import Codec, compile_message, read_uvarint
from ledgergate.wire.kafka.schema import KafkaCodecError
from ledgergate.wire.kafka.specs import SPECS

__all__ = [
    "DECODED",
    "ApiKey",
    "KafkaCodecError",
    "RequestHeader",
    "api_name",
    "decode_api_versions_response",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_request_header",
    "encode_response",
    "encode_response_header",
    "error_name",
    "flexible_request",
    "flexible_response",
    "read_request_header",
    "response_header_size",
]


class ApiKey(IntEnum):
    """Every API key in Kafka's message specs (names as in Kafka's ApiKeys enum)."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    LEADER_AND_ISR = 4
    STOP_REPLICA = 5
    UPDATE_METADATA = 6
    CONTROLLED_SHUTDOWN = 7
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    SASL_HANDSHAKE = 17
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    DELETE_RECORDS = 21
    INIT_PRODUCER_ID = 22
    OFFSET_FOR_LEADER_EPOCH = 23
    ADD_PARTITIONS_TO_TXN = 24
    ADD_OFFSETS_TO_TXN = 25
    END_TXN = 26
    WRITE_TXN_MARKERS = 27
    TXN_OFFSET_COMMIT = 28
    DESCRIBE_ACLS = 29
    CREATE_ACLS = 30
    DELETE_ACLS = 31
    DESCRIBE_CONFIGS = 32
    ALTER_CONFIGS = 33
    ALTER_REPLICA_LOG_DIRS = 34
    DESCRIBE_LOG_DIRS = 35
    SASL_AUTHENTICATE = 36
    CREATE_PARTITIONS = 37
    CREATE_DELEGATION_TOKEN = 38
    RENEW_DELEGATION_TOKEN = 39
    EXPIRE_DELEGATION_TOKEN = 40
    DESCRIBE_DELEGATION_TOKEN = 41
    DELETE_GROUPS = 42
    ELECT_LEADERS = 43
    INCREMENTAL_ALTER_CONFIGS = 44
    ALTER_PARTITION_REASSIGNMENTS = 45
    LIST_PARTITION_REASSIGNMENTS = 46
    OFFSET_DELETE = 47
    DESCRIBE_CLIENT_QUOTAS = 48
    ALTER_CLIENT_QUOTAS = 49
    DESCRIBE_USER_SCRAM_CREDENTIALS = 50
    ALTER_USER_SCRAM_CREDENTIALS = 51
    VOTE = 52
    BEGIN_QUORUM_EPOCH = 53
    END_QUORUM_EPOCH = 54
    DESCRIBE_QUORUM = 55
    ALTER_PARTITION = 56
    UPDATE_FEATURES = 57
    ENVELOPE = 58
    FETCH_SNAPSHOT = 59
    DESCRIBE_CLUSTER = 60
    DESCRIBE_PRODUCERS = 61
    BROKER_REGISTRATION = 62
    BROKER_HEARTBEAT = 63
    UNREGISTER_BROKER = 64
    DESCRIBE_TRANSACTIONS = 65
    LIST_TRANSACTIONS = 66
    ALLOCATE_PRODUCER_IDS = 67
    CONSUMER_GROUP_HEARTBEAT = 68
    CONSUMER_GROUP_DESCRIBE = 69
    CONTROLLER_REGISTRATION = 70
    GET_TELEMETRY_SUBSCRIPTIONS = 71
    PUSH_TELEMETRY = 72
    ASSIGN_REPLICAS_TO_DIRS = 73
    LIST_CONFIG_RESOURCES = 74  # LIST_CLIENT_METRICS_RESOURCES before Kafka 4.1
    DESCRIBE_TOPIC_PARTITIONS = 75
    SHARE_GROUP_HEARTBEAT = 76
    SHARE_GROUP_DESCRIBE = 77
    SHARE_FETCH = 78
    SHARE_ACKNOWLEDGE = 79
    ADD_RAFT_VOTER = 80
    REMOVE_RAFT_VOTER = 81
    UPDATE_RAFT_VOTER = 82
    INITIALIZE_SHARE_GROUP_STATE = 83
    READ_SHARE_GROUP_STATE = 84
    WRITE_SHARE_GROUP_STATE = 85
    DELETE_SHARE_GROUP_STATE = 86
    READ_SHARE_GROUP_STATE_SUMMARY = 87
    STREAMS_GROUP_HEARTBEAT = 88
    STREAMS_GROUP_DESCRIBE = 89
    DESCRIBE_SHARE_GROUP_OFFSETS = 90
    ALTER_SHARE_GROUP_OFFSETS = 91
    DELETE_SHARE_GROUP_OFFSETS = 92
    STREAMS_GROUP_TOPOLOGY_DESCRIPTION_UPDATE = 93
    UNREGISTER_CONTROLLER = 94
    LIST_CLIENT_METRICS_RESOURCES = 74


# The first flexible version of each API (requests and responses agree in every spec);
# None: never flexible. Keys 45-94 have been flexible from v0 on, as KIP-482 requires
# of every API added since.
_NEVER: Final = None
_FIRST_FLEXIBLE: Final[dict[int, int | None]] = {
    0: 9, 1: 12, 2: 6, 3: 9, 4: 4, 5: 2, 6: 6, 7: 3, 8: 8, 9: 6, 10: 3, 11: 6, 12: 4,
    13: 4, 14: 4, 15: 5, 16: 3, 17: _NEVER, 18: 3, 19: 5, 20: 4, 21: 2, 22: 2, 23: 4,
    24: 3, 25: 3, 26: 3, 27: 1, 28: 3, 29: 2, 30: 2, 31: 2, 32: 4, 33: 2, 34: 2, 35: 2,
    36: 2, 37: 2, 38: 2, 39: 2, 40: 2, 41: 2, 42: 2, 43: 2, 44: 1, 47: _NEVER,
    48: 1, 49: 1, 53: 1, 54: 1,
}  # fmt: skip
_NEWEST_KEY: Final = 94


_FLEXIBLE_FROM: Final[dict[int, int | None]] = {
    key: _FIRST_FLEXIBLE.get(key, 0 if key >= 45 else _NEVER) for key in range(_NEWEST_KEY + 1)
}


def flexible_request(api_key: int, version: int) -> bool:
    """Whether this request version uses the flexible encoding (and header v2).
    Unknown API keys answer False."""
    first = _FLEXIBLE_FROM.get(api_key)
    return first is not None and version >= first


def flexible_response(api_key: int, version: int) -> bool:
    """Whether this response version uses the flexible encoding. Its header is v1
    then, except for ApiVersions (see ``response_header_size``)."""
    return flexible_request(api_key, version)


def api_name(api_key: int) -> str:
    """``PRODUCE``, ``FETCH``…, or ``API_<n>`` for a key no spec names."""
    try:
        return ApiKey(api_key).name
    except ValueError:
        return f"API_{api_key}"


# --- headers --------------------------------------------------------------------------

_HEAD = struct.Struct(">hhi")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    size: int  # bytes the header takes in the frame (the body starts here)


def _skip_tagged(buf: memoryview, pos: int) -> int:
    """Skip a tagged-field block, checking that it lies within ``buf``."""
    count, pos = read_uvarint(buf, pos)
    for _ in range(count):
        _, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        pos += size
        if pos > len(buf):
            raise KafkaCodecError("header tagged field runs past the frame")
    return pos


_CONTROLLED_SHUTDOWN: Final = 7  # plain ints: IntEnum comparisons cost on the hot path
_API_VERSIONS: Final = 18


def read_request_header(frame: bytes | bytearray | memoryview) -> RequestHeader:
    """The header at the start of a request frame. Header v1 (key, version,
    correlation id, client id), plus a tagged-field block (v2) for flexible versions;
    ControlledShutdown v0 alone has header v0 (no client id). Unknown keys: v1."""
    buf = frame if isinstance(frame, memoryview) else memoryview(frame)
    try:
        api_key, version, correlation_id = _HEAD.unpack_from(buf, 0)
        if api_key == _CONTROLLED_SHUTDOWN and version == 0:
            return RequestHeader(api_key, version, correlation_id, None, 8)
        n = _I16.unpack_from(buf, 8)[0]
        pos = 10
        client_id: str | None = None
        if n >= 0:
            if pos + n > len(buf):
                raise KafkaCodecError("request header: client id runs past the frame")
            client_id = str(buf[pos : pos + n], "utf-8")
            pos += n
        elif n != -1:
            raise KafkaCodecError(f"request header: negative client id length {n}")
        if flexible_request(api_key, version):
            pos = _skip_tagged(buf, pos)
    except (struct.error, IndexError):
        raise KafkaCodecError("request header: truncated") from None
    except UnicodeDecodeError:
        raise KafkaCodecError("request header: client id is not valid UTF-8") from None
    return RequestHeader(api_key, version, correlation_id, client_id, pos)


def _flexible_response_header(api_key: int, version: int) -> bool:
    return api_key != _API_VERSIONS and flexible_response(api_key, version)


def response_header_size(api_key: int, version: int, frame: bytes | bytearray | memoryview) -> int:
    """Bytes the response header takes: 4 (correlation id), plus the tagged-field
    block of header v1 for flexible responses (never for ApiVersions)."""
    if len(frame) < 4:
        raise KafkaCodecError("response header: truncated")
    if not _flexible_response_header(api_key, version):
        return 4
    buf = frame if isinstance(frame, memoryview) else memoryview(frame)
    try:
        return _skip_tagged(buf, 4)
    except IndexError:
        raise KafkaCodecError("response header: truncated") from None


def encode_response_header(api_key: int, version: int, correlation_id: int) -> bytes:
    head = _I32.pack(correlation_id)
    return head + b"\x00" if _flexible_response_header(api_key, version) else head


def encode_request_header(
    api_key: int, version: int, correlation_id: int, client_id: str | None
) -> bytes:
    out = bytearray(_HEAD.pack(api_key, version, correlation_id))
    if api_key == _CONTROLLED_SHUTDOWN and version == 0:
        return bytes(out)
    if client_id is None:
        out += _I16.pack(-1)
    else:
        raw = client_id.encode("utf-8")
        if len(raw) > 0x7FFF:
            raise KafkaCodecError("request header: client id longer than 32767 bytes")
        out += _I16.pack(len(raw)) + raw
    if flexible_request(api_key, version):
        out.append(0)
    return bytes(out)


# --- bodies ---------------------------------------------------------------------------

DECODED: Final[dict[int, tuple[int, int]]] = {
    key: (req.valid.lo, req.valid.hi) for key, (req, _) in sorted(SPECS.items())
}

_CODECS: dict[tuple[int, int, int], Codec] = {}


def _codec(api_key: int, version: int, which: int) -> Codec:
    """``which``: 0 request, 1 response. Compiled on first use, then cached."""
    codec = _CODECS.get((api_key, version, which))
    if codec is not None:
        return codec
    pair = SPECS.get(api_key)
    kind = "Request" if which == 0 else "Response"
    name = "".join(w.capitalize() for w in api_name(api_key).split("_")) + kind
    if pair is None:
        raise KafkaCodecError(f"{name} is not supported")
    spec = pair[which]
    if version not in spec.valid:
        raise KafkaCodecError(f"{name} v{version} is not supported")
    codec = compile_message(spec, version, name)
    _CODECS[(api_key, version, which)] = codec
    return codec


def decode_request(
    api_key: int, version: int, body: bytes | bytearray | memoryview
) -> dict[str, Any]:
    return _codec(api_key, version, 0).decode(body)


def encode_request(api_key: int, version: int, msg: dict[str, Any]) -> bytes:
    """The body of a request; fields missing from ``msg`` take their defaults."""
    return _codec(api_key, version, 0).encode(msg)


def decode_response(
    api_key: int, version: int, body: bytes | bytearray | memoryview
) -> dict[str, Any]:
    return _codec(api_key, version, 1).decode(body)


def encode_response(api_key: int, version: int, msg: dict[str, Any]) -> bytes:
    """The body of a response; fields missing from ``msg`` take their defaults."""
    return _codec(api_key, version, 1).encode(msg)


def decode_api_versions_response(
    version: int, body: bytes | bytearray | memoryview
) -> tuple[int, dict[str, Any]]:
    """An ApiVersions response body and the version it was really written in. A broker
    that does not support the request's version answers UNSUPPORTED_VERSION in the v0
    layout, so, as Kafka's Java client does, a body that does not decode at ``version``
    is read again as v0 (a v0 body never decodes as v3+: its int32 count starts 0x00,
    a null compact array)."""
    try:
        return version, decode_response(ApiKey.API_VERSIONS, version, body)
    except KafkaCodecError:
        if version == 0:
            raise
        return 0, decode_response(ApiKey.API_VERSIONS, 0, body)


# --- error codes ----------------------------------------------------------------------

# Kafka's Errors enum, codes -1 to 133 in order (index = code + 1).
_ERRORS_IN_ORDER: Final = """
    UNKNOWN_SERVER_ERROR NONE OFFSET_OUT_OF_RANGE CORRUPT_MESSAGE UNKNOWN_TOPIC_OR_PARTITION
    INVALID_FETCH_SIZE LEADER_NOT_AVAILABLE NOT_LEADER_OR_FOLLOWER REQUEST_TIMED_OUT
    BROKER_NOT_AVAILABLE REPLICA_NOT_AVAILABLE MESSAGE_TOO_LARGE STALE_CONTROLLER_EPOCH
    OFFSET_METADATA_TOO_LARGE NETWORK_EXCEPTION COORDINATOR_LOAD_IN_PROGRESS
    COORDINATOR_NOT_AVAILABLE NOT_COORDINATOR INVALID_TOPIC_EXCEPTION RECORD_LIST_TOO_LARGE
    NOT_ENOUGH_REPLICAS NOT_ENOUGH_REPLICAS_AFTER_APPEND INVALID_REQUIRED_ACKS
    ILLEGAL_GENERATION INCONSISTENT_GROUP_PROTOCOL INVALID_GROUP_ID UNKNOWN_MEMBER_ID
    INVALID_SESSION_TIMEOUT REBALANCE_IN_PROGRESS INVALID_COMMIT_OFFSET_SIZE
    TOPIC_AUTHORIZATION_FAILED GROUP_AUTHORIZATION_FAILED CLUSTER_AUTHORIZATION_FAILED
    INVALID_TIMESTAMP UNSUPPORTED_SASL_MECHANISM ILLEGAL_SASL_STATE UNSUPPORTED_VERSION
    TOPIC_ALREADY_EXISTS INVALID_PARTITIONS INVALID_REPLICATION_FACTOR
    INVALID_REPLICA_ASSIGNMENT INVALID_CONFIG NOT_CONTROLLER INVALID_REQUEST
    UNSUPPORTED_FOR_MESSAGE_FORMAT POLICY_VIOLATION OUT_OF_ORDER_SEQUENCE_NUMBER
    DUPLICATE_SEQUENCE_NUMBER INVALID_PRODUCER_EPOCH INVALID_TXN_STATE
    INVALID_PRODUCER_ID_MAPPING INVALID_TRANSACTION_TIMEOUT CONCURRENT_TRANSACTIONS
    TRANSACTION_COORDINATOR_FENCED TRANSACTIONAL_ID_AUTHORIZATION_FAILED SECURITY_DISABLED
    OPERATION_NOT_ATTEMPTED KAFKA_STORAGE_ERROR LOG_DIR_NOT_FOUND SASL_AUTHENTICATION_FAILED
    UNKNOWN_PRODUCER_ID REASSIGNMENT_IN_PROGRESS DELEGATION_TOKEN_AUTH_DISABLED
    DELEGATION_TOKEN_NOT_FOUND DELEGATION_TOKEN_OWNER_MISMATCH
    DELEGATION_TOKEN_REQUEST_NOT_ALLOWED DELEGATION_TOKEN_AUTHORIZATION_FAILED
    DELEGATION_TOKEN_EXPIRED INVALID_PRINCIPAL_TYPE NON_EMPTY_GROUP GROUP_ID_NOT_FOUND
    FETCH_SESSION_ID_NOT_FOUND INVALID_FETCH_SESSION_EPOCH LISTENER_NOT_FOUND
    TOPIC_DELETION_DISABLED FENCED_LEADER_EPOCH UNKNOWN_LEADER_EPOCH
    UNSUPPORTED_COMPRESSION_TYPE STALE_BROKER_EPOCH OFFSET_NOT_AVAILABLE MEMBER_ID_REQUIRED
    PREFERRED_LEADER_NOT_AVAILABLE GROUP_MAX_SIZE_REACHED FENCED_INSTANCE_ID
    ELIGIBLE_LEADERS_NOT_AVAILABLE ELECTION_NOT_NEEDED NO_REASSIGNMENT_IN_PROGRESS
    GROUP_SUBSCRIBED_TO_TOPIC INVALID_RECORD UNSTABLE_OFFSET_COMMIT THROTTLING_QUOTA_EXCEEDED
    PRODUCER_FENCED RESOURCE_NOT_FOUND DUPLICATE_RESOURCE UNACCEPTABLE_CREDENTIAL
    INCONSISTENT_VOTER_SET INVALID_UPDATE_VERSION FEATURE_UPDATE_FAILED
    PRINCIPAL_DESERIALIZATION_FAILURE SNAPSHOT_NOT_FOUND POSITION_OUT_OF_RANGE
    UNKNOWN_TOPIC_ID DUPLICATE_BROKER_REGISTRATION BROKER_ID_NOT_REGISTERED
    INCONSISTENT_TOPIC_ID INCONSISTENT_CLUSTER_ID TRANSACTIONAL_ID_NOT_FOUND
    FETCH_SESSION_TOPIC_ID_ERROR INELIGIBLE_REPLICA NEW_LEADER_ELECTED
    OFFSET_MOVED_TO_TIERED_STORAGE FENCED_MEMBER_EPOCH UNRELEASED_INSTANCE_ID
    UNSUPPORTED_ASSIGNOR STALE_MEMBER_EPOCH MISMATCHED_ENDPOINT_TYPE UNSUPPORTED_ENDPOINT_TYPE
    UNKNOWN_CONTROLLER_ID UNKNOWN_SUBSCRIPTION_ID TELEMETRY_TOO_LARGE INVALID_REGISTRATION
    TRANSACTION_ABORTABLE INVALID_RECORD_STATE SHARE_SESSION_NOT_FOUND
    INVALID_SHARE_SESSION_EPOCH FENCED_STATE_EPOCH INVALID_VOTER_KEY DUPLICATE_VOTER
    VOTER_NOT_FOUND INVALID_REGULAR_EXPRESSION REBOOTSTRAP_REQUIRED STREAMS_INVALID_TOPOLOGY
    STREAMS_INVALID_TOPOLOGY_EPOCH STREAMS_TOPOLOGY_FENCED SHARE_SESSION_LIMIT_REACHED
"""
_ERROR_NAMES: Final = tuple(_ERRORS_IN_ORDER.split())


def error_name(code: int) -> str:
    """Kafka's name for an error code (``NONE`` for 0), ``UNKNOWN_ERROR_<n>`` if none."""
    if -1 <= code < len(_ERROR_NAMES) - 1:
        return _ERROR_NAMES[code + 1]
    return f"UNKNOWN_ERROR_{code}"
