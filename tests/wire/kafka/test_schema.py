"""The Kafka type system and its codecs (src/ledgergate/wire/kafka/schema.py and
codec.py): each encoding by hand, the failure modes, and hypothesis strategies built
from a declaration.

``message_strategy`` is shared with test_messages.py: it walks a ``Message`` for one
version and draws dicts holding exactly that version's fields (known tagged fields
included, unknown ones under ``"_tagged"``), so every field of every version is
exercised by the round-trip tests.
"""

from __future__ import annotations

import contextlib
from struct import pack
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.wire.kafka.codec import compile_message
from ledgergate.wire.kafka.schema import (
    BOOL,
    BYTES,
    FLOAT64,
    INT8,
    INT16,
    INT32,
    INT64,
    MAX_STRING,
    RECORDS,
    STRING,
    UINT16,
    UINT32,
    UUID,
    Array,
    F,
    Field,
    KafkaCodecError,
    Message,
    Primitive,
    Struct,
    message,
    parse_versions,
    struct,
)

# --- strategies built from declarations ----------------------------------------------

# Tags no declaration uses, for unknown tagged fields.
UNKNOWN_TAGS = st.integers(min_value=100, max_value=300)

_FIXED: dict[str, st.SearchStrategy[Any]] = {
    "int8": st.integers(-(2**7), 2**7 - 1),
    "int16": st.integers(-(2**15), 2**15 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "uint16": st.integers(0, 2**16 - 1),
    "uint32": st.integers(0, 2**32 - 1),
    "float64": st.floats(allow_nan=False),
    "bool": st.booleans(),
    "uuid": st.binary(min_size=16, max_size=16),
    "string": st.text(max_size=12),
    "bytes": st.binary(max_size=12),
    "records": st.binary(max_size=24),
}


def _value(t: Primitive | Array | Struct, version: int, flexible: bool, unknown: bool) -> Any:
    if isinstance(t, Primitive):
        return _FIXED[t.name]
    if isinstance(t, Struct):
        return struct_strategy(t, version, flexible, unknown)
    return st.lists(_value(t.item, version, flexible, unknown), max_size=2)


def field_strategy(f: Field, version: int, flexible: bool, unknown: bool) -> Any:
    s = _value(f.type, version, flexible, unknown)
    return st.none() | s if version in f.nullable else s


def struct_strategy(
    t: Struct, version: int, flexible: bool, unknown: bool = True
) -> st.SearchStrategy[dict[str, Any]]:
    fields = {
        f.name: field_strategy(f, version, flexible, unknown)
        for f in t.fields
        if version in f.versions
    }
    optional = {}
    if flexible and unknown:
        optional["_tagged"] = st.dictionaries(UNKNOWN_TAGS, st.binary(max_size=6), min_size=1)
    return st.fixed_dictionaries(fields, optional=optional)


def message_strategy(
    msg: Message, version: int, unknown: bool = True
) -> st.SearchStrategy[dict[str, Any]]:
    return struct_strategy(msg.body, version, version in msg.flexible, unknown)


# --- declarations ------------------------------------------------------------------


def test_parse_versions() -> None:
    assert parse_versions("3+").lo == 3 and 32767 in parse_versions("3+")
    assert 12 in parse_versions("0-12") and 13 not in parse_versions("0-12")
    assert list(filter(parse_versions("5").__contains__, range(10))) == [5]
    assert 0 not in parse_versions("none")
    assert str(parse_versions("3+")) == "3+" and str(parse_versions("1-2")) == "1-2"


def test_list_shorthands() -> None:
    f = F("ids", [INT32])
    assert isinstance(f.type, Array) and f.type.item is INT32
    g = F("items", [F("a", INT8)])
    assert isinstance(g.type, Array) and isinstance(g.type.item, Struct)
    s = struct(F("a", INT8))
    h = F("items", [s])
    assert isinstance(h.type, Array) and h.type.item is s


# --- the encodings, by hand ----------------------------------------------------------

ALL_TYPES = message(
    "0-1",
    "1+",
    F("i8", INT8),
    F("i16", INT16),
    F("i32", INT32),
    F("i64", INT64),
    F("u16", UINT16),
    F("u32", UINT32),
    F("f64", FLOAT64),
    F("flag", BOOL),
    F("id", UUID),
    F("name", STRING),
    F("maybe", STRING, nullable="0+"),
    F("blob", BYTES),
    F("maybe_blob", BYTES, nullable="0+"),
    F("records", RECORDS, nullable="0+"),
    F("ints", [INT32]),
    F("names", [STRING], nullable="0+"),
    F("items", [F("a", INT16), F("b", STRING)]),
    F("v1_only", INT32, "1+", default=7),
    F("tagged_int", INT32, "1+", tag=0, default=-1),
    F("tagged_struct", struct(F("x", INT32, default=-1), F("y", INT64, default=-1)), "1+", tag=1),
)

SAMPLE = {
    "i8": -1,
    "i16": 2,
    "i32": -3,
    "i64": 4,
    "u16": 65535,
    "u32": 2**32 - 1,
    "f64": 1.5,
    "flag": True,
    "id": bytes(range(16)),
    "name": "héllo",
    "maybe": None,
    "blob": b"\x00\x01",
    "maybe_blob": None,
    "records": b"RECS",
    "ints": [1, 2],
    "names": None,
    "items": [{"a": 1, "b": "x"}],
}


def test_classic_layout() -> None:
    codec = compile_message(ALL_TYPES, 0, "AllTypes")
    raw = codec.encode(SAMPLE)
    expect = (
        pack(">bhiqHId?", -1, 2, -3, 4, 65535, 2**32 - 1, 1.5, True)
        + bytes(range(16))
        + b"\x00\x06h\xc3\xa9llo"  # string: int16 length
        + b"\xff\xff"  # null string
        + b"\x00\x00\x00\x02\x00\x01"  # bytes: int32 length
        + b"\xff\xff\xff\xff"  # null bytes
        + b"\x00\x00\x00\x04RECS"
        + b"\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00\x02"  # array: int32 count
        + b"\xff\xff\xff\xff"  # null array
        + b"\x00\x00\x00\x01\x00\x01\x00\x01x"
    )
    assert raw == expect
    decoded = codec.decode(raw)
    assert decoded == SAMPLE
    assert isinstance(decoded["records"], memoryview)  # zero-copy slice
    assert "v1_only" not in decoded and "tagged_int" not in decoded


def test_flexible_layout_and_tagged_fields() -> None:
    codec = compile_message(ALL_TYPES, 1, "AllTypes")
    msg = dict(SAMPLE, v1_only=9, tagged_int=5, _tagged={200: b"zz"})
    raw = codec.encode(msg)
    expect = (
        pack(">bhiqHId?", -1, 2, -3, 4, 65535, 2**32 - 1, 1.5, True)
        + bytes(range(16))
        + b"\x07h\xc3\xa9llo"  # compact string: uvarint(length + 1)
        + b"\x00"  # null compact string
        + b"\x03\x00\x01"
        + b"\x00"
        + b"\x05RECS"
        + b"\x03\x00\x00\x00\x01\x00\x00\x00\x02"
        + b"\x00"
        + b"\x02\x00\x01\x02x\x00"  # one struct: a, b, its empty tagged block
        + b"\x00\x00\x00\x09"  # v1_only
        + b"\x02"  # two tagged fields, in tag order
        + b"\x00\x04\x00\x00\x00\x05"  # tag 0, size 4
        + b"\xc8\x01\x02zz"  # tag 200 (varint c8 01), size 2
    )
    assert raw == expect
    decoded = codec.decode(raw)
    assert decoded["tagged_int"] == 5
    assert decoded["tagged_struct"] == {"x": -1, "y": -1}  # absent: its default
    assert decoded["_tagged"] == {200: b"zz"}
    assert codec.encode(decoded) == raw


def test_tagged_default_values_are_not_written() -> None:
    codec = compile_message(ALL_TYPES, 1, "AllTypes")
    base = codec.encode(SAMPLE)
    assert base.endswith(b"\x00\x00\x00\x07\x00")  # v1_only's default, no tagged fields
    assert codec.encode(dict(SAMPLE, tagged_int=-1, tagged_struct={"x": -1, "y": -1})) == base
    with_struct = codec.encode(dict(SAMPLE, tagged_struct={"x": 1, "y": -1}))
    # tag 1, 13 bytes: the struct and its own (empty) tagged block
    assert with_struct.endswith(b"\x01\x01\x0d" + pack(">iq", 1, -1) + b"\x00")


def test_missing_fields_take_defaults() -> None:
    codec = compile_message(ALL_TYPES, 1, "AllTypes")
    d = codec.decode(codec.encode({}))
    assert d["name"] == "" and d["maybe"] == "" and d["ints"] == [] and d["v1_only"] == 7
    assert d["records"] is None and d["id"] == bytes(16) and d["tagged_int"] == -1


def test_defaults_are_fresh_objects() -> None:
    codec = compile_message(ALL_TYPES, 1, "AllTypes")
    raw = codec.encode(SAMPLE)
    first = codec.decode(raw)
    first["tagged_struct"]["x"] = 99
    assert codec.decode(raw)["tagged_struct"] == {"x": -1, "y": -1}


def test_encode_rejects_wrong_values() -> None:
    codec = compile_message(ALL_TYPES, 0, "AllTypes")
    for bad in (
        {"i8": 128},
        {"name": None},
        {"ints": None},
        {"id": b"short"},
        {"name": "x" * (MAX_STRING + 1)},
        {"items": [{"a": "not an int"}]},
        {"blob": 5},
    ):
        with pytest.raises(KafkaCodecError):
            codec.encode(dict(SAMPLE, **bad))
    flex = compile_message(ALL_TYPES, 1, "AllTypes")
    with pytest.raises(KafkaCodecError, match="known field"):
        flex.encode(dict(SAMPLE, _tagged={0: b"\x00"}))


# --- decoding failures ---------------------------------------------------------------

STR_MSG = message("0-1", "1+", F("s", STRING), F("n", STRING, nullable="0+"))
ARR_MSG = message("0-1", "1+", F("a", [INT32]), F("s", [F("x", STRING)], nullable="0+"))


def _err(msg: Message, version: int, data: bytes, match: str) -> None:
    with pytest.raises(KafkaCodecError, match=match):
        compile_message(msg, version, "T").decode(data)


def test_truncation_and_trailing_bytes() -> None:
    _err(STR_MSG, 0, b"\x00", "truncated")
    _err(STR_MSG, 0, b"\x00\x05ab", "string of 5 bytes but only 2")
    _err(STR_MSG, 0, b"\x00\x00\xff\xff\x00", "1 bytes after the message body")
    _err(STR_MSG, 1, b"\x01\x01", "truncated")  # the tagged block is missing


def test_negative_lengths() -> None:
    _err(STR_MSG, 0, b"\xff\xff\xff\xff", "null string where the field is not nullable")
    _err(STR_MSG, 0, b"\x00\x00\xff\xfe", "negative string length -2")
    _err(STR_MSG, 1, b"\x00\x01\x00", "null string")
    _err(ARR_MSG, 0, b"\xff\xff\xff\xff\xff\xff\xff\xff", "null array")
    _err(ARR_MSG, 0, b"\x00\x00\x00\x00\xff\xff\xff\xfd", "negative array length -3")


def test_array_counts_are_bounded_by_the_bytes_left() -> None:
    # 2^31 - 1 elements claimed in a 10-byte message: refused before any allocation.
    _err(ARR_MSG, 0, b"\x7f\xff\xff\xff" + bytes(6), "cannot fit")
    # Two int32 need 8 bytes; four {x: string} structs need at least 8 (4 × int16 length).
    _err(ARR_MSG, 0, b"\x00\x00\x00\x02\x00\x00\x00\x01\xff\xff", "2 elements cannot fit")
    _err(ARR_MSG, 0, b"\x00\x00\x00\x00\x00\x00\x00\x04" + bytes(6), "4 elements cannot fit")
    _err(ARR_MSG, 1, b"\xff\xff\xff\xff\x0f" + bytes(5), "cannot fit")
    _err(ARR_MSG, 0, b"\x00\x00\x00\x00\x00\x00\x00\x05" + bytes(3), "cannot fit")


def test_strings_are_utf8_and_bounded() -> None:
    _err(STR_MSG, 0, b"\x00\x02\xff\xfe\x00\x00", "not valid UTF-8")
    long_compact = b"\x81\x80\x02" + b"a" * 32768  # uvarint 32769: a 32768-byte string
    _err(STR_MSG, 1, long_compact + b"\x00\x00", "longer than 32767")


def test_varints() -> None:
    _err(STR_MSG, 1, b"\x80\x80\x80\x80\x80\x01", "longer than 5 bytes")
    _err(STR_MSG, 1, b"\xff\xff\xff\xff\x1f", "beyond 32 bits")
    # An over-long but valid varint decodes; it is re-encoded in its shortest form.
    codec = compile_message(STR_MSG, 1, "T")
    d = codec.decode(b"\x82\x00a\x00\x00")
    assert d == {"s": "a", "n": None}
    assert codec.encode(d) == b"\x02a\x00\x00"


def test_tagged_field_failures() -> None:
    tagged = message("0+", "0+", F("t", INT32, tag=3, default=0))
    _err(tagged, 0, b"\x02\x05\x00\x05\x00", "appears twice")
    _err(tagged, 0, b"\x01\x03\x05\x00\x00\x00\x01\x00", "is not 5 bytes long")
    _err(tagged, 0, b"\x01\x03\x02\x00\x00", "truncated")  # an int32 in 2 bytes
    _err(tagged, 0, b"\x01\x09\x05ab", "tagged field 9 of 5 bytes but only 2")
    _err(tagged, 0, b"\x05\x00", "5 tagged fields cannot fit")
    codec = compile_message(tagged, 0, "T")
    # Out-of-order tags decode; the encoder writes them sorted (not byte-identical).
    d = codec.decode(b"\x02\x09\x00\x03\x04\x00\x00\x00\x07")
    assert d == {"t": 7, "_tagged": {9: b""}}
    assert codec.encode(d) == b"\x02\x03\x04\x00\x00\x00\x07\x09\x00"


def test_nullable_struct_marker() -> None:
    opt = message("0+", "0+", F("c", struct(F("x", INT8)), nullable="0+", default=None))
    codec = compile_message(opt, 0, "T")
    assert codec.decode(b"\xff\x00") == {"c": None}
    assert codec.decode(b"\x01\x05\x00\x00") == {"c": {"x": 5}}
    assert codec.encode({"c": {"x": 5}}) == b"\x01\x05\x00\x00"
    _err(opt, 0, b"\x02\x05\x00\x00", "marker 2")


def test_bool_is_any_nonzero_byte() -> None:
    flag = message("0", "none", F("b", BOOL))
    codec = compile_message(flag, 0, "T")
    assert codec.decode(b"\x02") == {"b": True}  # Kafka reads it so; re-encoded as 01
    assert codec.encode({"b": True}) == b"\x01"


# --- properties ----------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1])
@given(data=st.data())
def test_round_trips(version: int, data: st.DataObject) -> None:
    codec = compile_message(ALL_TYPES, version, "AllTypes")
    msg = data.draw(message_strategy(ALL_TYPES, version))
    raw = codec.encode(msg)
    decoded = codec.decode(raw)
    assert codec.encode(decoded) == raw
    assert codec.decode(raw + b"") == decoded
    for k, v in msg.items():
        assert decoded[k] == v


@pytest.mark.parametrize("version", [0, 1])
@given(data=st.binary(max_size=200))
def test_random_bytes_only_raise_codec_errors(version: int, data: bytes) -> None:
    codec = compile_message(ALL_TYPES, version, "AllTypes")
    with contextlib.suppress(KafkaCodecError):
        codec.encode(codec.decode(data))
