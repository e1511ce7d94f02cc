"""The native record walk (``wire/kafka/_records.c``) held to the Python reference byte for
byte: the same digests, offsets and sizes for every batch the reference reads, and the
same error (message included) for every records area it refuses. Fed whole batches from
three builders (ours, aiokafka's, Java's own captured ones), records areas mutated and
cut anywhere, and arbitrary bytes; varints at their limits by hand. The sanitized build
of the same code is fuzzed by tests/native (target ``records``)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledgergate.wire.kafka import _records as native
from ledgergate.wire.kafka import records as kr
from ledgergate.wire.kafka.records import (
    HEADER_SIZE,
    RecordsError,
    read_batch,
    record_digests,
    record_digests_reference,
    record_hex_digests,
)
from tests.wire.kafka.test_records import (
    CODECS,
    JAVA_BY_NAME,
    MIXED,
    aio_build,
    py_records,
    records_st,
)

SEEDS = [*JAVA_BY_NAME.values(), *(aio_build(py_records(MIXED), c) for c in CODECS)]


def reference(area: bytes, count: int, base: int) -> list[tuple[int, bytes, int]] | str:
    """What the reference makes of a records area: the digests, or its error message."""
    try:
        return kr.digests_reference(area, count, base)
    except RecordsError as e:
        return str(e)


def walked(area: bytes, count: int, base: int) -> list[tuple[int, bytes, int]] | str:
    try:
        return native.digests(area, count, base)  # type: ignore[no-any-return]
    except ValueError as e:
        return str(e)


def same_as_reference(area: bytes, count: int, base: int = 0) -> None:
    want = reference(area, count, base)
    assert walked(area, count, base) == want
    try:
        hexes, first, last = native.hex_digests(area, count)
    except ValueError as e:
        assert str(e) == want
        return
    assert isinstance(want, list)
    assert hexes == [d.hex() for _, d, _ in want]
    offsets = [o - base for o, _, _ in want]
    assert (first, last) == ((offsets[0], offsets[-1]) if offsets else (None, None))


def area_of(batch_bytes: bytes) -> tuple[bytes, int, int]:
    """An uncompressed batch's records area, count and base offset."""
    b = read_batch(batch_bytes)
    return bytes(b.data[HEADER_SIZE:]), b.header.record_count, b.header.base_offset


def test_every_seed_batch_reads_the_same() -> None:
    for seed in SEEDS:
        b = read_batch(seed)
        assert record_digests(b) == record_digests_reference(b)
        hexes, first, last = record_hex_digests(b)
        want = record_digests_reference(b)
        assert hexes == [d.hex() for _, d, _ in want]
        assert (first, last) == (want[0][0], want[-1][0])


@settings(deadline=None)
@given(records_st, st.sampled_from(CODECS))
def test_built_batches_read_the_same(records: list[Any], codec: kr.Compression) -> None:
    b = read_batch(aio_build(records, codec))
    assert record_digests(b) == record_digests_reference(b)


UNCOMPRESSED = [s for s in SEEDS if not read_batch(s).header.attributes & 0x07]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(UNCOMPRESSED),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6),
    st.integers(-40, 8),
    st.integers(-2, 3),
)
def test_mutated_records_areas_fail_or_read_the_same(
    seed: bytes, flips: list[tuple[int, int]], resize: int, extra: int
) -> None:
    area, count, base = area_of(seed)
    data = bytearray(area)
    for at, value in flips:
        if data:
            data[at % len(data)] = value
    if resize < 0:
        del data[resize:]
    else:
        data += bytes(resize)
    same_as_reference(bytes(data), count + extra, base)


@settings(deadline=None)
@given(st.binary(max_size=300), st.integers(-3, 12), st.integers(-(2**63), 2**63 - 1))
def test_arbitrary_bytes_fail_or_read_the_same(data: bytes, count: int, base: int) -> None:
    same_as_reference(data, count, base)


def _zigzag(v: int) -> int:
    return (v << 1) ^ (v >> 63)


def _varint_bytes(u: int) -> bytes:
    out = bytearray()
    while True:
        b = u & 0x7F
        u >>= 7
        if u:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _record(ts: bytes, off: bytes = b"\x00", body: bytes = b"\x01\x01\x00") -> bytes:
    rec = b"\x00" + ts + off + body  # attributes, timestamp delta, offset delta, key..
    return _varint_bytes(_zigzag(len(rec))) + rec


@pytest.mark.parametrize(
    "ts",
    [
        _varint_bytes(_zigzag(2**63 - 1)),  # the largest timestamp delta (10 bytes)
        _varint_bytes(_zigzag(-(2**63))),
        bytes([0xFF] * 9 + [0x01]),  # 10 bytes, the top bit the 64th
        bytes([0xFF] * 9 + [0x02]),  # a 65th bit: out of range
        bytes([0xFF] * 9 + [0x7F]),
        bytes([0xFF] * 10 + [0x00]),  # 11 bytes: too long
        bytes([0x80] * 9 + [0x00]),  # a long zero
    ],
)
def test_varints_at_their_limits(ts: bytes) -> None:
    area = _record(ts)
    same_as_reference(area, 1, 5)
    same_as_reference(area + _record(b"\x02"), 2, 5)


@pytest.mark.parametrize(
    "off",
    [
        _varint_bytes(_zigzag(2**31 - 1)),
        bytes([0xFF] * 4 + [0x0F]),  # 35 bits into a 32-bit varint
        bytes([0xFF] * 5 + [0x00]),  # six bytes: too long
        bytes([0x80, 0x80, 0x00]),
    ],
)
def test_offset_varints_at_their_limits(off: bytes) -> None:
    same_as_reference(_record(b"\x00", off), 1, 2**63 - 1)  # offsets past int64 too


def test_a_base_offset_past_int64_adds_as_python_does() -> None:
    area = _record(b"\x00", _varint_bytes(_zigzag(7)))
    assert native.digests(area, 1, 2**63 - 1)[0][0] == 2**63 + 6
    same_as_reference(area, 1, 2**63 - 1)


def test_a_wrong_batch_is_a_records_error() -> None:
    data = bytearray(UNCOMPRESSED[0])
    data[HEADER_SIZE] ^= 0x7F  # the first record's length
    b = read_batch(bytes(data))
    with pytest.raises(RecordsError) as native_err:
        record_digests(b)
    with pytest.raises(RecordsError) as ref_err:
        record_digests_reference(b)
    assert str(native_err.value) == str(ref_err.value)
    with pytest.raises(RecordsError):
        record_hex_digests(b)
