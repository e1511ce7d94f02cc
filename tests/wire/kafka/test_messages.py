"""Kafka messages (src/ledgergate/wire/kafka/messages.py): headers, every body codec in
every version, a cross-check against kafka-python, captured frames, and fuzzing.

- Round trips for every API, version and direction, with messages drawn from the
  declarations themselves (test_schema.message_strategy), unknown tagged fields included.
- kafka-python 3.x (its own codec, from its own copy of Kafka's JSON specs) decodes what
  we encode; its fields must equal ours, and its re-encoding must be our bytes exactly
  (so its encoder's output decodes, with ours, to the message we started from).
  kafka-python drops unknown tagged fields when it re-encodes, so those are left out
  of this comparison only.
- Kafka itself: tests/vectors/kafka/messages/kafka-4.4.0-layouts.txt holds the layout of
  every version of every decoded API as Kafka 4.4.0's generated Java schemas print it;
  our declarations must print the same. broker-4.4.0.json holds real frames exchanged
  with a 4.4.0 broker: each decodes (headers too), re-encodes to the broker's exact
  bytes, and agrees with kafka-python's reading (see the README there).
- Fuzz: random bytes and every truncation of valid encodings, for every decoder, raise
  nothing but KafkaCodecError.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import pkgutil
import uuid
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledgergate.wire.kafka import messages as m
from ledgergate.wire.kafka.messages import ApiKey, KafkaCodecError
from ledgergate.wire.kafka.schema import UUID, Array, Primitive, Struct
from ledgergate.wire.kafka.specs import SPECS
from tests.wire.kafka.test_schema import message_strategy

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "kafka" / "messages"

TIER1 = {
    ApiKey.API_VERSIONS: 5,
    ApiKey.SASL_HANDSHAKE: 1,
    ApiKey.SASL_AUTHENTICATE: 2,
    ApiKey.METADATA: 13,
    ApiKey.FIND_COORDINATOR: 6,
    ApiKey.DESCRIBE_CLUSTER: 2,
    ApiKey.PRODUCE: 13,
    ApiKey.FETCH: 18,
}
TIER2 = [
    ApiKey.CREATE_TOPICS,
    ApiKey.DELETE_TOPICS,
    ApiKey.DELETE_RECORDS,
    ApiKey.CREATE_PARTITIONS,
    ApiKey.ALTER_CONFIGS,
    ApiKey.INCREMENTAL_ALTER_CONFIGS,
    ApiKey.CREATE_ACLS,
    ApiKey.DELETE_ACLS,
    ApiKey.DELETE_GROUPS,
    ApiKey.JOIN_GROUP,
    ApiKey.SYNC_GROUP,
    ApiKey.LEAVE_GROUP,
    ApiKey.OFFSET_COMMIT,
    ApiKey.TXN_OFFSET_COMMIT,
    ApiKey.INIT_PRODUCER_ID,
    ApiKey.ADD_PARTITIONS_TO_TXN,
    ApiKey.END_TXN,
    ApiKey.LIST_OFFSETS,
    ApiKey.OFFSET_FETCH,
]

# Every (API, version, direction) is its own case, ~450 of them: each gets a slice of the
# profile's examples (ci: 12; deep: 250), and together they cover every field.
PER_CASE = max(4, settings.default.max_examples // 8)

CASES = [
    pytest.param(key, version, which, id=f"{ApiKey(key).name}-v{version}-{which}")
    for key, (lo, hi) in m.DECODED.items()
    for version in range(lo, hi + 1)
    for which in ("request", "response")
]


def _encode(key: int, version: int, which: str, msg: dict[str, Any]) -> bytes:
    enc = m.encode_request if which == "request" else m.encode_response
    return enc(key, version, msg)


def _decode(key: int, version: int, which: str, body: Any) -> dict[str, Any]:
    dec = m.decode_request if which == "request" else m.decode_response
    return dec(key, version, body)


def _strategy(key: int, version: int, which: str, unknown: bool = True) -> Any:
    spec = SPECS[key][0 if which == "request" else 1]
    return message_strategy(spec, version, unknown)


# --- the table of APIs ---------------------------------------------------------------


def test_decoded_covers_both_tiers() -> None:
    for key, newest in TIER1.items():
        assert m.DECODED[key][1] == newest, ApiKey(key).name
        assert m.DECODED[key][0] == 0
    for key in TIER2:
        assert key in m.DECODED, ApiKey(key).name
    assert m.DECODED[ApiKey.INIT_PRODUCER_ID] == (0, 5)  # v6 is unstable upstream


def test_unsupported_versions_and_keys() -> None:
    with pytest.raises(KafkaCodecError, match=r"ProduceRequest v14 is not supported"):
        m.decode_request(ApiKey.PRODUCE, 14, b"")
    with pytest.raises(KafkaCodecError, match=r"FetchResponse v19 is not supported"):
        m.encode_response(ApiKey.FETCH, 19, {})
    with pytest.raises(KafkaCodecError, match=r"VoteRequest is not supported"):
        m.decode_request(ApiKey.VOTE, 0, b"")
    with pytest.raises(KafkaCodecError, match=r"Api999Request is not supported"):
        m.decode_request(999, 0, b"")


def test_flexible_versions() -> None:
    assert not m.flexible_request(ApiKey.PRODUCE, 8) and m.flexible_request(ApiKey.PRODUCE, 9)
    assert m.flexible_response(ApiKey.FETCH, 12) and not m.flexible_response(ApiKey.FETCH, 11)
    assert not m.flexible_request(ApiKey.SASL_HANDSHAKE, 1)
    assert not m.flexible_request(ApiKey.OFFSET_DELETE, 0)
    assert m.flexible_request(ApiKey.DESCRIBE_CLUSTER, 0)
    assert m.flexible_request(ApiKey.DELETE_SHARE_GROUP_OFFSETS, 0)
    assert not m.flexible_request(ApiKey.DESCRIBE_CLIENT_QUOTAS, 0)
    assert not m.flexible_request(999, 5) and not m.flexible_request(-1, 5)
    for key, (req, resp) in SPECS.items():
        for v in range(req.valid.lo, req.valid.hi + 1):
            assert m.flexible_request(key, v) == (v in req.flexible)
            assert m.flexible_response(key, v) == (v in resp.flexible)


def test_names() -> None:
    assert ApiKey.LIST_CLIENT_METRICS_RESOURCES is ApiKey.LIST_CONFIG_RESOURCES
    assert m.api_name(0) == "PRODUCE" and m.api_name(500) == "API_500"
    assert max(ApiKey) == 94
    assert m.error_name(0) == "NONE" and m.error_name(-1) == "UNKNOWN_SERVER_ERROR"
    expected = {
        3: "UNKNOWN_TOPIC_OR_PARTITION",
        29: "TOPIC_AUTHORIZATION_FAILED",
        30: "GROUP_AUTHORIZATION_FAILED",
        31: "CLUSTER_AUTHORIZATION_FAILED",
        34: "ILLEGAL_SASL_STATE",
        35: "UNSUPPORTED_VERSION",
        44: "POLICY_VIOLATION",
        46: "DUPLICATE_SEQUENCE_NUMBER",
        53: "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
        58: "SASL_AUTHENTICATION_FAILED",
        99: "POSITION_OUT_OF_RANGE",
        100: "UNKNOWN_TOPIC_ID",
        130: "STREAMS_INVALID_TOPOLOGY",
        133: "SHARE_SESSION_LIMIT_REACHED",
    }
    for code, name in expected.items():
        assert m.error_name(code) == name
    assert m.error_name(134) == "UNKNOWN_ERROR_134" and m.error_name(-2) == "UNKNOWN_ERROR_-2"


def test_api_versions_fallback() -> None:
    # A broker that does not know the request's version answers UNSUPPORTED_VERSION in
    # the v0 layout; other errors keep the request's version (as Java's client reads it).
    v0 = m.encode_response(
        18, 0, {"error_code": 35, "api_keys": [{"api_key": 18, "max_version": 3}]}
    )
    assert m.decode_api_versions_response(4, v0) == (0, m.decode_response(18, 0, v0))
    v3 = m.encode_response(18, 3, {"error_code": 42})
    assert m.decode_api_versions_response(3, v3) == (3, m.decode_response(18, 3, v3))
    with pytest.raises(KafkaCodecError):
        m.decode_api_versions_response(3, b"\x00")


# --- headers -------------------------------------------------------------------------


def test_request_header_v1_and_v2() -> None:
    v1 = m.encode_request_header(ApiKey.PRODUCE, 8, 7, "cli")
    assert v1 == b"\x00\x00\x00\x08\x00\x00\x00\x07\x00\x03cli"
    v2 = m.encode_request_header(ApiKey.PRODUCE, 9, 7, "cli")
    assert v2 == v1[:3] + b"\x09" + v1[4:] + b"\x00"  # client id stays a classic string
    for raw, version in ((v1, 8), (v2, 9)):
        for tail in (b"", b"BODY"):
            h = m.read_request_header(raw + tail)
            assert h == m.RequestHeader(ApiKey.PRODUCE, version, 7, "cli", len(raw))
    null_id = m.encode_request_header(ApiKey.METADATA, 12, -5, None)
    assert m.read_request_header(memoryview(null_id)).client_id is None


def test_api_versions_headers() -> None:
    # Request header v2 from v3 on; the response header is v0 in every version.
    assert m.read_request_header(m.encode_request_header(18, 3, 1, "c") + b"\x00").size == 12
    assert m.read_request_header(m.encode_request_header(18, 2, 1, "c")).size == 11
    assert m.encode_response_header(18, 3, 1) == b"\x00\x00\x00\x01"
    assert m.response_header_size(18, 4, b"\x00\x00\x00\x01\x05") == 4
    assert m.encode_response_header(ApiKey.METADATA, 9, 1) == b"\x00\x00\x00\x01\x00"
    assert m.encode_response_header(ApiKey.METADATA, 8, 1) == b"\x00\x00\x00\x01"


def test_header_tagged_fields_are_skipped() -> None:
    raw = m.encode_request_header(ApiKey.FETCH, 12, 3, "c")[:-1] + b"\x01\x00\x02hi"
    assert m.read_request_header(raw + b"body").size == len(raw)
    assert m.response_header_size(ApiKey.FETCH, 12, b"\x00\x00\x00\x03\x01\x05\x01x!") == 8
    assert m.response_header_size(ApiKey.FETCH, 11, b"\x00\x00\x00\x03\x01") == 4


def test_unknown_and_old_headers() -> None:
    raw = m.encode_request_header(77, 0, 9, "c")  # ShareGroupDescribe v0: header v2
    assert raw.endswith(b"\x00") and m.read_request_header(raw).size == len(raw)
    unknown = b"\x03\xe7\x00\x02\x00\x00\x00\x09\x00\x01c\x00"
    assert m.read_request_header(unknown) == m.RequestHeader(999, 2, 9, "c", 11)
    old = m.encode_request_header(ApiKey.CONTROLLED_SHUTDOWN, 0, 4, "ignored")
    assert m.read_request_header(old + b"xx") == m.RequestHeader(7, 0, 4, None, 8)


@pytest.mark.parametrize("key,version", [(0, 8), (0, 9), (18, 3), (999, 1)])
def test_header_truncations(key: int, version: int) -> None:
    raw = m.encode_request_header(key, version, 1, "client")
    for cut in range(len(raw)):
        with pytest.raises(KafkaCodecError):
            m.read_request_header(raw[:cut])
    for bad in (raw[:8] + b"\xff\xfe", raw[:8] + b"\x00\x02\xff\xff"):
        with pytest.raises(KafkaCodecError):
            m.read_request_header(bad)
    with pytest.raises(KafkaCodecError):
        m.response_header_size(ApiKey.FETCH, 12, b"\x00\x00\x00")
    with pytest.raises(KafkaCodecError):
        m.response_header_size(ApiKey.FETCH, 12, b"\x00\x00\x00\x01\x01\x00\x05ab")


@given(st.binary(max_size=40))
def test_headers_fuzz(data: bytes) -> None:
    try:
        h = m.read_request_header(data)
        assert 8 <= h.size <= len(data)
    except KafkaCodecError:
        pass
    for key, version in ((1, 12), (18, 3), (3, 8)):
        with contextlib.suppress(KafkaCodecError):
            assert 4 <= m.response_header_size(key, version, data) <= len(data)


def test_headers_agree_with_kafka_python() -> None:
    _theirs()  # imports kafka-python quietly
    from kafka.protocol.api_header import RequestHeader as TheirHeader

    for key, version, flexible in ((0, 8, False), (0, 9, True), (18, 3, True)):
        theirs = TheirHeader(
            request_api_key=key, request_api_version=version, correlation_id=42, client_id="kp"
        ).encode(flexible=flexible)
        assert bytes(theirs) == m.encode_request_header(key, version, 42, "kp")


# --- bodies: round trips ---------------------------------------------------------------


@pytest.mark.parametrize("key,version,which", CASES)
@settings(max_examples=PER_CASE, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(key: int, version: int, which: str, data: st.DataObject) -> None:
    msg = data.draw(_strategy(key, version, which))
    raw = _encode(key, version, which, msg)
    decoded = _decode(key, version, which, raw)
    assert _encode(key, version, which, decoded) == raw
    assert _decode(key, version, which, bytearray(raw)) == decoded
    assert {k: decoded[k] for k in msg} == msg


def test_records_are_zero_copy_slices() -> None:
    body = m.encode_request(
        ApiKey.PRODUCE,
        9,
        {"acks": -1, "topic_data": [{"name": "t", "partition_data": [{"records": b"batch"}]}]},
    )
    rec = m.decode_request(ApiKey.PRODUCE, 9, body)["topic_data"][0]["partition_data"][0]["records"]
    assert isinstance(rec, memoryview) and rec.obj is body and rec == b"batch"


def test_produce_v13_and_fetch_v16_shapes() -> None:
    tid = bytes(range(16))
    req = {"acks": 1, "topic_data": [{"topic_id": tid, "partition_data": []}]}
    assert m.decode_request(0, 13, m.encode_request(0, 13, req))["topic_data"][0] == {
        "topic_id": tid,
        "partition_data": [],
    }
    resp = {"node_endpoints": [{"node_id": 1, "host": "b1", "port": 9092, "rack": "r"}]}
    body = m.encode_response(ApiKey.FETCH, 16, resp)
    assert body.endswith(b"\x01\x00\x0f\x02\x00\x00\x00\x01\x03b1\x00\x00\x23\x84\x02r\x00")
    assert m.decode_response(ApiKey.FETCH, 16, body)["node_endpoints"][0]["port"] == 9092


# --- bodies: the cross-check with kafka-python -------------------------------------------


@cache
def _theirs() -> dict[tuple[int, str], Any]:
    # kafka-python reads its JSON with a deprecated importlib call: not our warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import kafka.protocol as kp
        from kafka.protocol.api_message import ApiMessage

        for mod in pkgutil.walk_packages(kp.__path__, "kafka.protocol."):
            if ".old" not in mod.name:
                importlib.import_module(mod.name)
    found: dict[tuple[int, str], Any] = {}
    pending = list(ApiMessage.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if getattr(cls, "_class_version", None) is None and getattr(cls, "_json", None):
            found.setdefault((cls.API_KEY, cls.type), cls)
    return found


_RENAMED = object()
_PY_TYPES: dict[str, Any] = {
    "float64": float,
    "bool": bool,
    "string": str,
    "bytes": bytes | bytearray | memoryview,
    "records": bytes | bytearray | memoryview,
    "uuid": uuid.UUID,
}


def _reshaped(value: Any, t: Primitive | Array | Struct) -> bool:
    """kafka-python hands some fields over as other types (e.g. a set of operations)."""
    if not isinstance(t, Primitive):
        return False
    if value is None:  # e.g. authorized operations left unset (INT32_MIN) read as None
        return t.fmt != "" and t is not UUID
    return not isinstance(value, _PY_TYPES.get(t.name, int))


def _theirs_as_ours(obj: Any, t: Struct, version: int, flexible: bool) -> dict[str, Any]:
    out = {}
    for f in t.fields:
        if version not in f.versions:
            continue
        value = getattr(obj, f.name, _RENAMED)
        if value is _RENAMED or _reshaped(value, f.type):
            continue  # kafka-python renames or reshapes a few; the bytes still compare
        tagged = flexible and f.tag is not None and version in f.tagged
        if value is None and tagged and isinstance(f.type, Struct):
            value = "<absent>"  # kafka-python leaves an absent tagged struct at None
        else:
            value = _convert(value, f.type, version, flexible)
        out[f.name] = value
    return out


def _convert(value: Any, t: Primitive | Array | Struct, version: int, flexible: bool) -> Any:
    if value is None:
        return bytes(16) if t is UUID else None  # kafka-python reads the zero uuid as None
    if isinstance(t, Struct):
        return _theirs_as_ours(value, t, version, flexible)
    if isinstance(t, Array):
        return [_convert(v, t.item, version, flexible) for v in value]
    if isinstance(value, uuid.UUID):
        return value.bytes
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return value


def _ours_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _ours_plain(v) for k, v in value.items() if k != "_tagged"}
    if isinstance(value, list):
        return [_ours_plain(v) for v in value]
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def _mark_absent(ours: Any, theirs: Any) -> Any:
    """Where kafka-python says a tagged struct is absent, ours must hold its default."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        return {k: _mark_absent(ours.get(k), v) for k, v in theirs.items()}
    if isinstance(theirs, list) and isinstance(ours, list):
        return [_mark_absent(o, t) for o, t in zip(ours, theirs, strict=False)]
    return "<absent>" if theirs == "<absent>" else ours


KP_CASES = [
    p
    for p in CASES
    if (p.values[0], p.values[2]) in _theirs()
    and p.values[1] <= _theirs()[(p.values[0], p.values[2])].max_version
]


def test_kafka_python_covers_every_decoded_api() -> None:
    for key in m.DECODED:
        assert (key, "request") in _theirs() and (key, "response") in _theirs()
    missing = {tuple(p.values) for p in CASES} - {tuple(p.values) for p in KP_CASES}
    newer = {(18, 5), (28, 6), (42, 3)}  # Kafka 4.4; kafka-python's specs stop at 4.1
    assert missing == {(k, v, w) for k, v in newer for w in ("request", "response")}


@pytest.mark.parametrize("key,version,which", KP_CASES)
@settings(max_examples=PER_CASE, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_against_kafka_python(key: int, version: int, which: str, data: st.DataObject) -> None:
    msg = data.draw(_strategy(key, version, which, unknown=False))
    # kafka-python reads any ApiVersions error answer as v0 (see test_api_versions_fallback)
    if key == ApiKey.API_VERSIONS and which == "response":
        msg["error_code"] = 0
    raw = _encode(key, version, which, msg)
    cls = _theirs()[(key, which)]
    obj = cls.decode(raw, version=version)
    obj._header = None  # kafka-python's decode leaves it unset; some encoders read it
    assert bytes(obj.encode()) == raw
    spec = SPECS[key][0 if which == "request" else 1]
    theirs = _theirs_as_ours(obj, spec.body, version, version in spec.flexible)
    ours = _ours_plain(_decode(key, version, which, raw))
    assert _mark_absent(ours, theirs) == theirs


# --- captured frames and Kafka's own layouts --------------------------------------------


@cache
def _broker_frames() -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = json.loads((VECTORS / "broker-4.4.0.json").read_text())["frames"]
    return frames


def _frame_id(f: dict[str, Any]) -> str:
    asked = f.get("request_version", f["api_version"])
    return f"{ApiKey(f['api_key']).name}-v{asked}-{f['direction']}"


@pytest.mark.parametrize("frame", [pytest.param(f, id=_frame_id(f)) for f in _broker_frames()])
def test_broker_frames(frame: dict[str, Any]) -> None:
    key, version, which = frame["api_key"], frame["api_version"], frame["direction"]
    header, raw = bytes.fromhex(frame["header"]), bytes.fromhex(frame["body"])
    whole = header + raw
    if which == "request":
        h = m.read_request_header(whole)
        assert (h.api_key, h.api_version, h.size) == (key, version, len(header))
        assert h.client_id == "ledgergate-capture"
        decoded = m.decode_request(key, version, memoryview(whole)[h.size :])
    else:
        asked = frame["request_version"]
        assert m.response_header_size(key, asked, whole) == len(header)
        if key == ApiKey.API_VERSIONS:
            assert m.decode_api_versions_response(min(asked, 5), raw)[0] == version
        decoded = m.decode_response(key, version, raw)
    assert _encode(key, version, which, decoded) == raw  # the broker's bytes, exactly
    spec = SPECS[key][0 if which == "request" else 1]
    cls = _theirs()[(key, which)]
    if version > cls.max_version:
        return  # kafka-python's specs stop at Kafka 4.1
    obj = cls.decode(raw, version=version)
    theirs = _theirs_as_ours(obj, spec.body, version, version in spec.flexible)
    assert _mark_absent(_ours_plain(decoded), theirs) == theirs


def test_broker_frames_facts() -> None:
    """What the broker said, checked against facts that do not come from our codec."""
    by = {(f["api_key"], f["direction"], f.get("request_version")): f for f in _broker_frames()}

    def body(key: int, which: str, asked: int | None) -> dict[str, Any]:
        f = by[(key, which, asked)]
        return _decode(key, f["api_version"], which, bytes.fromhex(f["body"]))

    versions = body(ApiKey.API_VERSIONS, "response", 5)
    ranges = {k["api_key"]: (k["min_version"], k["max_version"]) for k in versions["api_keys"]}
    assert ranges[ApiKey.FETCH] == (4, 18) and ranges[ApiKey.API_VERSIONS] == (0, 5)
    assert ranges[ApiKey.PRODUCE] == (0, 13)  # 0, not 3: KAFKA-18659's librdkafka quirk
    assert {f["name"] for f in versions["finalized_features"]} >= {"metadata.version"}
    refused = body(ApiKey.API_VERSIONS, "response", 9)
    assert m.error_name(refused["error_code"]) == "UNSUPPORTED_VERSION"
    assert body(ApiKey.SASL_HANDSHAKE, "response", 1)["mechanisms"] == [
        "SCRAM-SHA-512",
        "PLAIN",
        "SCRAM-SHA-256",
    ]
    md = body(ApiKey.METADATA, "response", 12)
    assert [t["name"] for t in md["topics"]] == ["orders"]
    assert sorted(p["partition_index"] for p in md["topics"][0]["partitions"]) == [0, 1]
    coord = body(ApiKey.FIND_COORDINATOR, "response", 6)["coordinators"]
    assert [c["key"] for c in coord] == ["group-1", "group-2"]
    assert body(ApiKey.DESCRIBE_CLUSTER, "response", 2)["brokers"][0]["is_fenced"] is False
    missing = body(ApiKey.PRODUCE, "response", 12)["responses"][0]["partition_responses"][0]
    assert m.error_name(missing["error_code"]) == "UNKNOWN_TOPIC_OR_PARTITION"
    for v in (12, 16, 17, 18):
        parts = body(ApiKey.FETCH, "response", v)["responses"][0]["partitions"]
        assert [p["high_watermark"] for p in parts] == [6, 6]
        # kafka-python built these batches; their values sit uncompressed in the records
        assert b"v9-p1-0" in bytes(parts[1]["records"]) and b"v13-p0-1" in bytes(
            parts[0]["records"]
        )


_JAVA_TYPES = {
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint16": "UINT16",
    "uint32": "UNSIGNED_INT32",
    "float64": "FLOAT64",
    "bool": "BOOLEAN",
    "uuid": "UUID",
}


def _java_type(t: Primitive | Array | Struct, v: int, flexible: bool, nullable: bool) -> str:
    if isinstance(t, Struct):
        return _java_layout(t, v, flexible)
    if isinstance(t, Array):
        return ("?" if nullable else "") + f"[{_java_type(t.item, v, flexible, False)}]"
    if t.name in _JAVA_TYPES:
        return _JAVA_TYPES[t.name]
    name = ("NULLABLE_" if nullable else "") + t.name.upper()
    return "COMPACT_" + name if flexible else name


def _java_layout(t: Struct, v: int, flexible: bool) -> str:
    """Our declaration at version ``v``, printed as Kafka's Java schemas are printed in
    kafka-4.4.0-layouts.txt (see the README beside it)."""
    parts, tags = [], []
    for f in t.fields:
        if v in f.versions:
            text = f"{f.name}:{_java_type(f.type, v, flexible, v in f.nullable)}"
            if flexible and f.tag is not None and v in f.tagged:
                tags.append((f.tag, text))
            else:
                parts.append(text + ",")
    if flexible:
        parts.append("_tagged_fields:TAG{" + "".join(f"{n}={x}," for n, x in sorted(tags)) + "},")
    return "{" + "".join(parts) + "}"


# Versions Kafka 4.4.0 has that we leave out, and why.
LEFT_OUT = {(ApiKey.INIT_PRODUCER_ID, 6): "unstable in 4.4 (KIP-939, two-phase commit)"}


def test_layouts_match_kafka_4_4() -> None:
    seen = set()
    for line in (VECTORS / "kafka-4.4.0-layouts.txt").read_text().splitlines():
        key_s, v_s, which, java = line.split(" ", 3)
        key, v = int(key_s), int(v_s)
        seen.add(key)
        spec = SPECS[key][0 if which == "request" else 1]
        if v not in spec.valid:
            assert (key, v) in LEFT_OUT, f"{ApiKey(key).name} v{v} is missing"
            continue
        assert _java_layout(spec.body, v, v in spec.flexible) == java, (key, v, which)
    assert seen == set(m.DECODED)


# --- fuzz ----------------------------------------------------------------------------


@pytest.mark.parametrize("key,version,which", CASES)
@settings(max_examples=PER_CASE // 2, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_decoders(key: int, version: int, which: str, data: st.DataObject) -> None:
    msg = data.draw(_strategy(key, version, which))
    raw = _encode(key, version, which, msg)
    for cut in range(len(raw)):
        with pytest.raises(KafkaCodecError):
            _decode(key, version, which, raw[:cut])
    noise = data.draw(st.binary(max_size=64))
    flips = data.draw(st.lists(st.integers(0, max(len(raw) - 1, 0)), max_size=3))
    mutated = bytearray(raw)
    for i in flips:
        if mutated:
            mutated[i] ^= 0xFF
    for candidate in (noise, bytes(mutated), raw + noise[:1] if noise else raw + b"\x00"):
        with contextlib.suppress(KafkaCodecError):
            _encode(key, version, which, _decode(key, version, which, candidate))


def test_huge_array_claim_fails_fast() -> None:
    body = b"\x7f\xff\xff\xff" + bytes(6)  # Metadata v1: 2^31-1 topics in 10 bytes
    with pytest.raises(KafkaCodecError, match="cannot fit"):
        m.decode_request(ApiKey.METADATA, 1, body)
