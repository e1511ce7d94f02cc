"""The server walk in C (``_datarows.walk``) against its definition, ``walk_reference``.

The relay walks the frame headers of every read it forwards: rows counted, CommandComplete
tags gathered, where the next message begins. Both are run on generated reads (runs of
messages cut anywhere, tags long and short, with and without their NUL, lengths below 4)
and on arbitrary bytes; they must agree exactly. tests/native fuzzes the same under
AddressSanitizer and UBSan.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.wire.pg import _datarows
from ledgergate.wire.pg.control import MAX_TAG as CONTROL_MAX_TAG
from ledgergate.wire.pg.frames import MAX_TAG, build, walk_reference


def message() -> st.SearchStrategy[bytes]:
    tag = st.one_of(
        st.sampled_from([b"SELECT 1", b"INSERT 0 1000000", b"COPY 2000000", b""]),
        st.binary(max_size=300),
    )
    return st.one_of(
        st.binary(max_size=40).map(lambda b: build(b"D", b)),
        st.binary(max_size=40).map(lambda b: build(b"d", b)),
        tag.map(lambda t: build(b"C", t + b"\x00")),
        tag.map(lambda t: build(b"C", t)),  # no NUL: cut at MAX_TAG
        st.sampled_from([b"Z\x00\x00\x00\x05I", build(b"T", b"\x00\x00"), build(b"E", b"")]),
        # lengths below 4 count as 4; a negative int32 reads as a length past the read
        st.tuples(st.sampled_from(b"DCdZ"), st.integers(-(2**31), 3)).map(
            lambda x: bytes([x[0]]) + struct.pack("!i", x[1])
        ),
    )


@given(st.lists(message(), max_size=12), st.data())
def test_native_walk_is_the_reference_on_reads_cut_anywhere(
    msgs: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(msgs)
    cut = data.draw(st.integers(0, len(stream)))
    start = data.draw(st.integers(0, len(stream) + 8))
    for read in (stream, stream[:cut], stream[cut:]):
        for pos in (0, min(start, len(read)), start):
            got = _datarows.walk(read, pos)
            assert got == walk_reference(read, pos)
            assert _datarows.walk(bytearray(read), pos) == got


@given(st.binary(max_size=200), st.integers(0, 210))
def test_native_walk_is_the_reference_on_any_bytes(data: bytes, pos: int) -> None:
    assert _datarows.walk(data, pos) == walk_reference(data, pos)


def test_what_the_walk_returns() -> None:
    rows = build(b"T", b"\x00\x00") + build(b"D", b"\x00\x00") * 3
    done = build(b"C", b"SELECT 3\x00") + b"Z\x00\x00\x00\x05I"
    read = rows + done
    assert _datarows.walk(read, 0) == (len(read), 3, (b"SELECT 3",), -1)
    # a CommandComplete cut by the end of the read: where its body begins
    cut = len(rows) + 8
    assert _datarows.walk(read[:cut], 0) == (len(read) - 6, 3, (), len(rows) + 5)
    # a message that spans the read: the walk ends past it
    assert _datarows.walk(rows[:-2], 0) == (len(rows), 3, (), -1)
    long = build(b"C", b"x" * 1000)
    assert _datarows.walk(long, 0)[2] == (b"x" * MAX_TAG,)
    assert MAX_TAG == _datarows.MAX_TAG == CONTROL_MAX_TAG


def test_a_negative_position_is_refused_both_ways() -> None:
    with pytest.raises(ValueError):
        _datarows.walk(b"", -1)
    with pytest.raises(ValueError):
        walk_reference(b"", -1)
