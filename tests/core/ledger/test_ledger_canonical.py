"""canonical_json: the bytes everything in the ledger is hashed over."""

from __future__ import annotations

import enum
import json
import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.core.ledger.canonical import (
    MAX_DEPTH,
    CanonicalError,
    canonical_json,
    canonical_json_typed,
)


def test_keys_sorted_at_every_level_and_separators_compact() -> None:
    doc = {"b": 1, "a": {"z": [3, {"y": True, "x": None}], "c": "d"}}
    assert canonical_json(doc) == b'{"a":{"c":"d","z":[3,{"x":null,"y":true}]},"b":1}'


def test_key_order_of_the_input_does_not_matter() -> None:
    a = {"seq": 1, "kind": "chunk", "stream": "s"}
    b = {"stream": "s", "seq": 1, "kind": "chunk"}
    assert canonical_json(a) == canonical_json(b) == b'{"kind":"chunk","seq":1,"stream":"s"}'


def test_keys_sort_by_code_point() -> None:
    # Python sorts str by code point: uppercase before lowercase, "é" after "z".
    assert canonical_json({"é": 1, "z": 2, "Z": 3, "a": 4}) == '{"Z":3,"a":4,"z":2,"é":1}'.encode()


def test_unicode_is_written_as_utf8_not_escaped() -> None:
    assert canonical_json({"s": "café ☕ 𝄞"}) == '{"s":"café ☕ 𝄞"}'.encode()


def test_control_characters_quotes_and_backslashes_are_escaped() -> None:
    out = canonical_json(['a"b\\c\n\t\x00\x1f\x7f'])
    assert out == b'["a\\"b\\\\c\\n\\t\\u0000\\u001f\x7f"]'


def test_integers_bools_null_and_tuples() -> None:
    big = 2**64 + 1
    assert canonical_json([0, -5, big, True, False, None, (1, 2)]) == (
        b"[0,-5,18446744073709551617,true,false,null,[1,2]]"
    )


def test_str_and_int_enums_encode_as_their_values() -> None:
    class Dir(enum.StrEnum):
        IN = "client_to_server"

    class Code(enum.IntEnum):
        OK = 7

    assert canonical_json({"d": Dir.IN, "c": Code.OK}) == b'{"c":7,"d":"client_to_server"}'


@pytest.mark.parametrize(
    "value",
    [1.0, 0.5, -0.0, math.nan, math.inf, -math.inf, {"a": [1, 2.5]}, [{"x": 1e3}]],
)
def test_floats_are_rejected_anywhere(value: Any) -> None:
    with pytest.raises(CanonicalError, match="float"):
        canonical_json(value)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({1: "a"}, "$: key 1 "),
        ({None: "a"}, "$: key None "),
        ({"a": {(1, 2): 0}}, "$.a: key (1, 2) "),
        ({"a": b"raw"}, "$.a: bytes "),
        ({"a": bytearray(b"x")}, "$.a: bytearray "),
        ({"a": {1, 2}}, "$.a: set "),
        ({"a": Decimal("1")}, "$.a: Decimal "),
        ({"a": [0, 0, object()]}, "$.a[2]: object "),
        ({"chunk": {"size": 1.5}}, "$.chunk.size: floats "),
    ],
)
def test_other_types_are_rejected_with_their_path(value: Any, where: str) -> None:
    with pytest.raises(CanonicalError) as e:
        canonical_json(value)
    assert str(e.value).startswith(where)


def test_canonical_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        canonical_json(1.5)


def test_lone_surrogates_are_rejected_without_quoting_the_value() -> None:
    with pytest.raises(CanonicalError) as e:
        canonical_json({"secret": "pw\ud800"})
    assert "pw" not in str(e.value)


def test_nesting_is_bounded_and_cycles_do_not_recurse_forever() -> None:
    ok: Any = "leaf"
    for _ in range(MAX_DEPTH):
        ok = [ok]
    canonical_json(ok)
    with pytest.raises(CanonicalError, match="nested deeper"):
        canonical_json([ok])
    cyc: list[Any] = []
    cyc.append(cyc)
    with pytest.raises(CanonicalError, match="nested deeper"):
        canonical_json(cyc)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_round_trip_and_idempotent(value: Any) -> None:
    data = canonical_json(value)
    data.decode("utf-8")  # always valid UTF-8
    parsed = json.loads(data)
    assert parsed == value
    assert canonical_json(parsed) == data


@given(json_values)
def test_matches_a_reference_encoder(value: Any) -> None:
    ref = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == ref.encode("utf-8")


@given(st.dictionaries(st.text(max_size=5), st.integers(), min_size=2, max_size=6), st.randoms())
def test_insertion_order_never_changes_the_bytes(d: dict[str, int], rnd: Any) -> None:
    items = list(d.items())
    rnd.shuffle(items)
    assert canonical_json(dict(items)) == canonical_json(d)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=6), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_fast_encoder_matches_the_reference_encoder(value: object) -> None:
    """canonical_json uses orjson; it must give the json module's bytes exactly."""
    reference = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        ref = reference.encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(CanonicalError):
            canonical_json(value)
        return
    assert canonical_json(value) == ref


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_typed_encoding_is_the_checked_encoding(value: dict[str, Any]) -> None:
    """The recorder's typed drafts skip the type walk, never the bytes: whatever
    canonical_json gives (or refuses), canonical_json_typed gives (or refuses) too."""
    try:
        ref = canonical_json(value)
    except CanonicalError:
        with pytest.raises(CanonicalError):
            canonical_json_typed(value)
        return
    assert canonical_json_typed(value) == ref


def test_typed_encoding_falls_back_for_what_the_fast_encoder_declines() -> None:
    big = {"n": 2**70, "s": "ok"}
    assert canonical_json_typed(big) == b'{"n":1180591620717411303424,"s":"ok"}'
    with pytest.raises(CanonicalError, match="lone surrogate"):
        canonical_json_typed({"s": "\ud800"})
