"""records.py: Kafka v2 record batches, walked, decoded, digested and built.

Oracles, not our own reading: batches written by Apache Kafka's Java code
(``tests/vectors/kafka/java_batches.json``, every codec, control, transactional,
LOG_APPEND_TIME and compacted batches, with Java's reading of them), by kafka-python's
builder (for the codecs it can use here: it finds no snappy/lz4/zstd library, so those
come from aiokafka, whose codecs are cramjam) and by aiokafka's. What records.py builds is
read back by kafka-python's and aiokafka's readers and, in the integration test, by
Kafka's own Java reader (``ensureValid``: size and CRC-32C). A walk is fed whole, one
byte at a time (every prefix of a fetch-style buffer) and with bytes after the end. Then
the digest against a hand computation, partial tails, bad CRCs, refused shapes,
decompression bombs, and hypothesis fuzzing (random and mutated batches raise
RecordsError or nothing, and never hang).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import struct
import subprocess
import time
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import cramjam
import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder as AioBuilder
from aiokafka.record.memory_records import MemoryRecords as AioMemoryRecords
from awscrt import checksums  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

with warnings.catch_warnings():
    # kafka-python's package import uses importlib.resources.read_text (deprecated).
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka.codec
    from kafka.record.default_records import DefaultRecordBatchBuilder as KafkaBuilder
    from kafka.record.legacy_records import LegacyRecordBatchBuilder
    from kafka.record.memory_records import MemoryRecords as KafkaMemoryRecords

from ledgergate.wire.kafka.records import (
    HEADER_SIZE,
    MAX_BATCH_BYTES,
    MAX_RECORDS_PER_BATCH,
    BatchHeader,
    Compression,
    Header,
    NewRecord,
    PartialBatch,
    Record,
    RecordsError,
    TimestampType,
    content_digest,
    decode_records,
    encode_batch,
    read_batch,
    read_batches,
    record_digests,
)

ROOT = Path(__file__).resolve().parents[3]
VECTORS = ROOT / "tests" / "vectors" / "kafka"
JAVA = json.loads((VECTORS / "java_batches.json").read_text())["cases"]
JAVA_BY_NAME = {case["name"]: bytes.fromhex(case["hex"]) for case in JAVA}
CODECS = list(Compression)
KAFKA_PYTHON_CODECS = [
    c
    for c, present in [
        (Compression.NONE, True),
        (Compression.GZIP, kafka.codec.has_gzip()),
        (Compression.SNAPPY, kafka.codec.has_snappy()),
        (Compression.LZ4, kafka.codec.has_lz4()),
        (Compression.ZSTD, kafka.codec.has_zstd()),
    ]
    if present
]
T0 = 1_700_000_000_000
HEADER = struct.Struct(">qiibIhiqqqhii")


def codec_id(codec: Compression) -> str:
    return codec.name.lower()


def blob(data: bytes | None) -> Any:
    """A key or value as the Java vectors hold it (hex; length and SHA-256 past 4 KiB)."""
    if data is None:
        return None
    if len(data) > 4096:
        return {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return data.hex()


def as_java(records: tuple[Record, ...]) -> list[dict[str, Any]]:
    return [
        {
            "offset": r.offset,
            "timestamp": r.timestamp,
            "key": blob(r.key),
            "value": blob(r.value),
            "headers": [[h.key.hex(), blob(h.value)] for h in r.headers],
        }
        for r in records
    ]


def as_tuples(records: Any) -> list[tuple[Any, ...]]:
    """(offset, timestamp, key, value, headers) of our records or a Python client's."""
    out = []
    for r in records:
        headers = [
            (
                h.key if isinstance(h, Header) else h[0].encode(),
                h.value if isinstance(h, Header) else h[1],
            )
            for h in r.headers
        ]
        out.append((r.offset, r.timestamp, r.key, r.value, headers))
    return out


def header(codec: Compression = Compression.NONE, **over: int) -> BatchHeader:
    fields: dict[str, int] = {
        "base_offset": 0,
        "batch_length": 0,
        "partition_leader_epoch": 0,
        "magic": 2,
        "crc": 0,
        "attributes": int(codec),
        "last_offset_delta": 0,
        "base_timestamp": T0,
        "max_timestamp": T0,
        "producer_id": -1,
        "producer_epoch": -1,
        "base_sequence": -1,
        "record_count": 0,
    }
    fields.update(over)
    return BatchHeader(**fields)


def build(
    records: list[tuple[bytes | None, bytes | None, tuple[Header, ...]]],
    codec: Compression = Compression.NONE,
    **over: int,
) -> bytes:
    """A batch of ours: record i at offset delta i, timestamp delta i."""
    new = [NewRecord(i, i, k, v, h) for i, (k, v, h) in enumerate(records)]
    last = max(len(new) - 1, 0)
    return encode_batch(header(codec, last_offset_delta=last, max_timestamp=T0 + last, **over), new)


def aio_build(records: list[tuple[Any, ...]], codec: Compression) -> bytes:
    b = AioBuilder(2, int(codec), 0, -1, -1, -1, 1 << 24)
    for i, (key, value, headers) in enumerate(records):
        b.append(i, timestamp=T0 + i, key=key, value=value, headers=headers)
    return bytes(b.build())


def kafka_build(records: list[tuple[Any, ...]], codec: Compression) -> bytes:
    b = KafkaBuilder(2, int(codec), 0, -1, -1, -1, 1 << 24)
    for i, (key, value, headers) in enumerate(records):
        b.append(i, timestamp=T0 + i, key=key, value=value, headers=headers)
    return bytes(b.build())


def raw_batch(payload: bytes, codec: int = 0, count: int = 1, **over: int) -> bytes:
    """A batch around ``payload`` with a correct length and CRC, by hand (for shapes no
    builder writes)."""
    fields = [0, 0, 0, 2, 0, codec, max(count - 1, 0), T0, T0, -1, -1, -1, count]
    names = list(BatchHeader.__dataclass_fields__)
    for name, value in over.items():
        fields[names.index(name)] = value
    out = bytearray(HEADER_SIZE) + payload
    fields[1] = over.get("batch_length", len(out) - 12)
    HEADER.pack_into(out, 0, *fields)
    if "crc" not in over:
        struct.pack_into(">I", out, 17, checksums.crc32c(bytes(out[21:])))
    return bytes(out)


def zz(n: int) -> bytes:
    """A zigzag varint, written here independently of records.py."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def hand_record(key: bytes | None, value: bytes | None, ts: int = 0, off: int = 0) -> bytes:
    body = (
        (zz(-1) if key is None else zz(len(key)) + key)
        + (zz(-1) if value is None else zz(len(value)) + value)
        + zz(0)
    )
    rec = b"\x00" + zz(ts) + zz(off) + body
    return zz(len(rec)) + rec


MIXED = [
    (None, b"value without key", ()),
    (b"", b"", ()),
    (b"\x00\x01\x02\x80\xff", None, ()),
    (b"k", b"v", (Header(b"trace-id", b"abc"), Header(b"null", None), Header(b"", b""))),
    (b"k" * 200, bytes(range(256)) * 8, (Header("ключ".encode(), b"\x00\xff"),)),
]


def expected(records: list[tuple[bytes | None, bytes | None, tuple[Header, ...]]]) -> list[Any]:
    """(key, value, headers) as ``as_tuples`` gives them."""
    return [(k, v, [(h.key, h.value) for h in hs]) for k, v, hs in records]


def py_records(records: list[tuple[bytes | None, bytes | None, tuple[Header, ...]]]) -> list[Any]:
    """MIXED in the Python clients' form (header keys are str there)."""
    return [(k, v, [(h.key.decode(), h.value) for h in hs]) for k, v, hs in records]


# --- Kafka's own batches ---------------------------------------------------------------


@pytest.mark.parametrize("case", JAVA, ids=[c["name"] for c in JAVA])
def test_java_batch_reads_as_java_reads_it(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["hex"])
    (java,) = case["java"]
    found = read_batches(data)
    assert found.partial is None
    (batch,) = found.batches
    h = batch.header
    assert (batch.start, batch.end, batch.crc_valid) == (0, len(data), True)
    assert batch.data.obj is data  # a view of the input, not a copy
    assert {
        "base_offset": h.base_offset,
        "last_offset": h.last_offset,
        "size": h.size,
        "partition_leader_epoch": h.partition_leader_epoch,
        "crc": h.crc,
        "compression": h.compression.name.lower(),
        "timestamp_type": {"CREATE_TIME": "CreateTime", "LOG_APPEND_TIME": "LogAppendTime"}[
            h.timestamp_type.name
        ],
        "transactional": h.is_transactional,
        "control": h.is_control,
        "delete_horizon": h.has_delete_horizon,
        "max_timestamp": h.max_timestamp,
        "producer_id": h.producer_id,
        "producer_epoch": h.producer_epoch,
        "base_sequence": h.base_sequence,
        "count": h.record_count,
    } == {k: v for k, v in java.items() if k != "records"}
    records = decode_records(batch)
    assert as_java(records) == java["records"]
    assert record_digests(batch) == [
        (r.offset, r.digest, len(r.key or b"") + len(r.value or b"")) for r in records
    ]
    for r in records:
        assert r.digest == content_digest(r.key, r.value, r.headers)


def test_java_batch_flags() -> None:
    tx = read_batch(JAVA_BY_NAME["transactional-zstd"]).header
    assert (tx.producer_id, tx.producer_epoch, tx.base_sequence) == (123456789, 3, 17)
    assert tx.is_transactional and not tx.is_control and tx.compression is Compression.ZSTD
    ctl = read_batch(JAVA_BY_NAME["control-commit"])
    assert ctl.header.is_control and ctl.header.is_transactional
    (marker,) = decode_records(ctl)
    assert marker.key == b"\x00\x00\x00\x01"  # version 0, type 1: COMMIT
    lat = read_batch(JAVA_BY_NAME["log-append-time-lz4"])
    assert lat.header.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert {r.timestamp for r in decode_records(lat)} == {T0 + 999}
    gaps = decode_records(read_batch(JAVA_BY_NAME["gaps-snappy"]))
    assert [r.offset for r in gaps] == [500, 503, 509]


@pytest.mark.parametrize("case", JAVA, ids=[c["name"] for c in JAVA])
def test_java_batch_rebuilt_unmodified(case: dict[str, Any]) -> None:
    batch = read_batch(bytes.fromhex(case["hex"]))
    records = decode_records(batch)
    again = read_batch(encode_batch(batch.header, records))
    assert again.crc_valid
    assert decode_records(again) == records
    ignore = {"batch_length": 0, "crc": 0}
    assert dataclasses.replace(again.header, **ignore) == dataclasses.replace(
        batch.header, **ignore
    )
    if batch.header.compression in (Compression.NONE, Compression.SNAPPY):
        assert bytes(again.data) == bytes(batch.data)  # same framing as Java's, byte for byte


# --- fed whole, byte by byte, with bytes after the end ---------------------------------

FETCH = [n for n in JAVA_BY_NAME if not n.startswith("big-")]
FETCH_BUFFER = b"".join(JAVA_BY_NAME[n] for n in FETCH)
BOUNDS = [0]
for _name in FETCH:
    BOUNDS.append(BOUNDS[-1] + len(JAVA_BY_NAME[_name]))


def test_walk_whole() -> None:
    found = read_batches(FETCH_BUFFER)
    assert found.partial is None
    assert [(b.start, b.end) for b in found.batches] == list(itertools.pairwise(BOUNDS))
    assert all(b.crc_valid for b in found.batches)
    assert [bytes(b.data) for b in found.batches] == [JAVA_BY_NAME[n] for n in FETCH]
    assert read_batches(bytearray(FETCH_BUFFER)) == found
    assert read_batches(memoryview(FETCH_BUFFER)) == found
    assert read_batches(b"") == read_batches(b"", allow_partial=True)


def test_walk_byte_at_a_time() -> None:
    """Every prefix of a fetch-style buffer: the whole batches in it, then the rest as a
    partial batch (size known once its length field is in), as a fetch cut anywhere."""
    for n in range(len(FETCH_BUFFER) + 1):
        found = read_batches(FETCH_BUFFER[:n], allow_partial=True)
        whole = [b for b in BOUNDS[1:] if b <= n]
        assert [b.end for b in found.batches] == whole
        start = whole[-1] if whole else 0
        if start == n:
            assert found.partial is None
            continue
        size = BOUNDS[len(whole) + 1] - start
        assert found.partial == PartialBatch(start, n - start, size if n - start >= 12 else None)
        with pytest.raises(RecordsError, match="truncated"):
            read_batches(FETCH_BUFFER[:n])


@pytest.mark.parametrize("extra", [b"\x00", b"\x00" * 11, FETCH_BUFFER[:40]])
def test_walk_with_trailing_bytes(extra: bytes) -> None:
    data = JAVA_BY_NAME["mixed-gzip"] + extra
    found = read_batches(data, allow_partial=True)
    assert [b.end for b in found.batches] == [len(data) - len(extra)]
    assert found.partial == PartialBatch(
        len(data) - len(extra),
        len(extra),
        len(JAVA_BY_NAME[FETCH[0]]) if len(extra) >= 12 else None,
    )
    with pytest.raises(RecordsError, match="truncated"):
        read_batches(data)
    with pytest.raises(RecordsError):
        read_batch(data)


def test_batch_slices_leave_input_alone() -> None:
    buf = bytearray(FETCH_BUFFER)
    found = read_batches(buf)
    assert all(b.data.obj is buf for b in found.batches)


# --- the digest --------------------------------------------------------------------------


def test_digest_by_hand() -> None:
    """SHA-256 of keyLength key valueLength value headerCount headers, as Kafka writes
    them: key b"k" (02 6b), value b"hello" (0a ...), one header "h" = b"v"."""
    hand = hashlib.sha256(b"\x02k\x0ahello\x02\x02h\x02v").hexdigest()
    null_key = hashlib.sha256(b"\x01\x0ahello\x00").hexdigest()
    rec = [(b"k", b"hello", (Header(b"h", b"v"),)), (None, b"hello", ())]
    for codec in CODECS:
        for base, ts in ((0, T0), (987654321, T0 + 12345)):
            batch = read_batch(build(rec, codec, base_offset=base, base_timestamp=ts))
            digests = record_digests(batch)
            assert [(o, d.hex(), s) for o, d, s in digests] == [
                (base, hand, 6),
                (base + 1, null_key, 5),
            ]
    assert content_digest(b"k", b"hello", [Header(b"h", b"v")]).hex() == hand
    assert content_digest(None, b"hello").hex() == null_key


def test_digest_same_when_produced_and_fetched() -> None:
    """The producer's batch (offset 0, its clock) and the broker's copy of it (offsets and
    timestamps rewritten, another codec) give the same digests."""
    produced = read_batch(aio_build(py_records(MIXED), Compression.LZ4))
    fetched = read_batch(
        build(MIXED, Compression.ZSTD, base_offset=5000, base_timestamp=T0 + 77, attributes=12)
    )
    assert [d for _, d, _ in record_digests(produced)] == [d for _, d, _ in record_digests(fetched)]


def test_digest_from_hand_written_records() -> None:
    payload = hand_record(b"key", b"value", ts=300, off=0) + hand_record(None, None, off=1)
    batch = read_batch(raw_batch(payload, count=2))
    assert record_digests(batch) == [
        (0, hashlib.sha256(b"\x06key\x0avalue\x00").digest(), 8),
        (1, hashlib.sha256(b"\x01\x01\x00").digest(), 0),
    ]
    first, second = decode_records(batch)
    assert (first.timestamp, first.key, first.value, first.headers) == (
        T0 + 300,
        b"key",
        b"value",
        (),
    )
    assert (second.key, second.value) == (None, None)


# --- the Python clients as oracles -------------------------------------------------------


@pytest.mark.parametrize("codec", KAFKA_PYTHON_CODECS, ids=codec_id)
def test_kafka_python_batch_decodes(codec: Compression) -> None:
    data = kafka_build(py_records(MIXED), codec)
    theirs = list(KafkaMemoryRecords(data).next_batch())
    batch = read_batch(data)
    assert batch.crc_valid and batch.header.compression is codec
    assert as_tuples(decode_records(batch)) == as_tuples(theirs)


@pytest.mark.parametrize("codec", KAFKA_PYTHON_CODECS, ids=codec_id)
def test_our_batch_reads_in_kafka_python(codec: Compression) -> None:
    data = build(MIXED, codec, base_offset=77, producer_id=5, producer_epoch=1, base_sequence=9)
    theirs = KafkaMemoryRecords(data).next_batch()
    assert theirs.validate_crc()
    assert (theirs.producer_id, theirs.producer_epoch, theirs.base_sequence) == (5, 1, 9)
    read = as_tuples(theirs)
    assert read == as_tuples(decode_records(read_batch(data)))
    assert [r[2:] for r in read] == expected(MIXED)


@pytest.mark.parametrize("codec", CODECS, ids=codec_id)
def test_aiokafka_batch_decodes(codec: Compression) -> None:
    data = aio_build(py_records(MIXED), codec)
    theirs = list(AioMemoryRecords(data).next_batch())
    batch = read_batch(data)
    assert batch.crc_valid and batch.header.compression is codec
    assert as_tuples(decode_records(batch)) == as_tuples(theirs)


@pytest.mark.parametrize("codec", CODECS, ids=codec_id)
def test_our_batch_reads_in_aiokafka(codec: Compression) -> None:
    big = [(b"big", b"0123456789abcdef" * 8192, ())] * 3  # past xerial and LZ4 block sizes
    for records in (MIXED, big):
        data = build(records, codec, attributes=int(codec) | 0x10, producer_id=5, producer_epoch=1)
        theirs = AioMemoryRecords(data).next_batch()
        assert theirs.validate_crc() and theirs.is_transactional
        assert [r[2:] for r in as_tuples(theirs)] == expected(records)


def test_raw_snappy_as_librdkafka_writes_it() -> None:
    payload = b"".join(hand_record(b"k%d" % i, b"librdkafka " * i, ts=i, off=i) for i in range(5))
    data = raw_batch(bytes(cramjam.snappy.compress_raw(payload)), codec=2, count=5)
    batch = read_batch(data)
    assert [r.value for r in decode_records(batch)] == [b"librdkafka " * i for i in range(5)]
    theirs = list(AioMemoryRecords(data).next_batch())
    assert as_tuples(decode_records(batch)) == as_tuples(theirs)


# --- building: masking -------------------------------------------------------------------


@pytest.mark.parametrize("case", JAVA, ids=[c["name"] for c in JAVA])
def test_masked_batch_keeps_everything_but_content(case: dict[str, Any]) -> None:
    batch = read_batch(bytes.fromhex(case["hex"]))
    records = decode_records(batch)
    masked = [
        dataclasses.replace(
            r,
            value=None if r.value is None else b"*" * 8,
            headers=tuple(Header(h.key, b"#") for h in r.headers),
        )
        for r in records
    ]
    again = read_batch(encode_batch(batch.header, masked))
    assert again.crc_valid
    h0, h1 = batch.header, again.header
    assert h1.batch_length != h0.batch_length or h1.crc != h0.crc or not records
    assert dataclasses.replace(h1, batch_length=0, crc=0) == dataclasses.replace(
        h0, batch_length=0, crc=0
    )
    got = decode_records(again)
    assert [(r.offset, r.timestamp, r.key) for r in got] == [
        (r.offset, r.timestamp, r.key) for r in records
    ]
    assert [r.value for r in got] == [m.value for m in masked]
    assert [r.digest for r in got] == [content_digest(m.key, m.value, m.headers) for m in masked]


def test_build_empty_batch() -> None:
    data = encode_batch(header(last_offset_delta=0, producer_id=77, base_sequence=5), [])
    batch = read_batch(data)
    assert batch.header.record_count == 0 and batch.header.size == HEADER_SIZE
    assert decode_records(batch) == () and record_digests(batch) == []
    assert KafkaMemoryRecords(data).next_batch().validate_crc()


@pytest.mark.parametrize(
    ("hdr", "records", "match"),
    [
        (header(magic=1), [], "magic 1"),
        (header(attributes=5), [], "codec 5"),
        (header(), [NewRecord(1, 0, None, None)], "offset delta 1"),
        (header(last_offset_delta=5), [NewRecord(-1, 0, None, None)], "offset delta -1"),
        (header(), [NewRecord(0, 1 << 63, None, None)], "64-bit varint"),
        (header(producer_epoch=1 << 15), [], "out of range"),
        (header(base_offset=1 << 63), [], "out of range"),
    ],
)
def test_build_refuses(hdr: BatchHeader, records: list[NewRecord], match: str) -> None:
    with pytest.raises(RecordsError, match=match):
        encode_batch(hdr, records)


def test_build_refuses_past_the_limit() -> None:
    huge = NewRecord(0, 0, None, bytes(MAX_BATCH_BYTES))
    with pytest.raises(RecordsError, match="over the limit"):
        encode_batch(header(), [huge])


# --- what is refused or reported ---------------------------------------------------------


def test_bad_crc_is_reported_not_raised() -> None:
    good = bytearray(JAVA_BY_NAME["mixed-none"])
    bad_body = bytearray(good)
    bad_body[-10] ^= 1  # inside the last record's value
    bad_crc = bytearray(good)
    bad_crc[17] ^= 0x80
    for data in (bad_body, bad_crc):
        batch = read_batch(bytes(data))
        assert not batch.crc_valid
        decode_records(batch)  # the caller decides what a bad CRC means
    before_crc = bytearray(good)
    before_crc[12] ^= 1  # partition leader epoch: not covered by the CRC (Kafka's rule)
    assert read_batch(bytes(before_crc)).crc_valid


def test_old_message_sets_are_refused() -> None:
    for magic in (0, 1):
        b = LegacyRecordBatchBuilder(magic=magic, compression_type=0, batch_size=1 << 20)
        b.append(0, timestamp=T0 if magic else None, key=b"k", value=b"v")
        data = bytes(b.build())
        with pytest.raises(RecordsError, match=f"magic {magic} message sets are not supported"):
            read_batches(data)
        with pytest.raises(RecordsError, match=f"magic {magic}"):
            read_batches(JAVA_BY_NAME["mixed-gzip"] + data[:20], allow_partial=True)


GOOD = JAVA_BY_NAME["mixed-none"]


def patched(data: bytes, at: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (patched(GOOD, 16, ">b", 3), "unknown magic 3"),
        (patched(GOOD, 16, ">b", -1), "unknown magic 255"),
        (patched(GOOD, 8, ">i", 48), "too small"),
        (patched(GOOD, 8, ">i", -1), "too small"),
        (patched(GOOD, 8, ">i", MAX_BATCH_BYTES), "over the limit"),
        (patched(GOOD, 21, ">h", 5), "unknown compression codec 5"),
        (patched(GOOD, 21, ">h", 7), "unknown compression codec 7"),
        (patched(GOOD, 57, ">i", -1), "record count -1"),
        (patched(GOOD, 57, ">i", MAX_RECORDS_PER_BATCH + 1), "out of range"),
    ],
)
def test_refused_batch_headers(data: bytes, match: str) -> None:
    with pytest.raises(RecordsError, match=match):
        read_batches(data, allow_partial=True)


@pytest.mark.parametrize(
    ("payload", "count", "match"),
    [
        (hand_record(b"k", b"v"), 2, "cannot fit"),
        (hand_record(b"k", b"v") + b"\x00" * 7, 1, "bytes after the last"),
        (hand_record(b"k", b"v")[:-1], 1, "cannot fit|truncated|length"),
        (b"\x0c\x00\x00\x00\x03\x02\x00\x00", 1, "bad key length -2"),
        (b"\x0c\x00\x00\x00\x02k\x05\x00", 1, "bad value length -3"),
        (b"\x0c\x00\x00\x00\x40k\x02v\x00", 1, "key overruns"),
        (b"\x0c\x00\x00\x00\x02k\x40v\x00", 1, "value overruns"),
        (b"\x10\x00\x00\x00\x02k\x02v\x01", 1, "bad header count -1"),
        (b"\x10\x00\x00\x00\x01\x01\x02\x01\x02", 1, "header key length"),
        (b"\x10\x00\x00\x00\x01\x01\x02\x00\x05", 1, "header value length"),
        (b"\x10\x00\x00\x00\x01\x01\x02\x00\x40", 1, "header value length"),
        (b"\x0e\x00\x00\x00\x01\x01\x00\x00\x00", 1, "does not end where its length says"),
        (b"\x0a\x00\x00\x00\x01\x01\x00", 1, "bad length 5"),
        (b"\x01" + b"\x00" * 7, 1, "bad length -1"),
        (b"\xff\xff\xff\xff\x7f\x00\x00\x00", 1, "out of range"),
        (b"\xff\xff\xff\xff\xff\x01\x00\x00", 1, "too long"),
        (b"\x0e\x00" + b"\xff" * 10 + b"\x01\x00", 1, "too long"),
    ],
)
def test_refused_records(payload: bytes, count: int, match: str) -> None:
    for codec in CODECS:
        compressed = {
            Compression.NONE: lambda p: p,
            Compression.GZIP: lambda p: bytes(cramjam.gzip.compress(p)),
            Compression.SNAPPY: lambda p: bytes(cramjam.snappy.compress_raw(p)),
            Compression.LZ4: lambda p: bytes(cramjam.lz4.compress(p)),
            Compression.ZSTD: lambda p: bytes(cramjam.zstd.compress(p)),
        }[codec](payload)
        batch = read_batch(raw_batch(compressed, codec=int(codec), count=count))
        for read in (decode_records, record_digests):
            with pytest.raises(RecordsError, match=match):
                read(batch)


@pytest.mark.parametrize("codec", [c for c in CODECS if c is not Compression.NONE], ids=codec_id)
def test_corrupt_compressed_data(codec: Compression) -> None:
    good = read_batch(build(MIXED, codec)).data
    for cut in (HEADER_SIZE, HEADER_SIZE + 3, len(good) - 5):
        with pytest.raises(RecordsError):
            decode_records(read_batch(raw_batch(bytes(good[HEADER_SIZE:cut]), int(codec), 5)))
    with pytest.raises(RecordsError):
        decode_records(read_batch(raw_batch(b"\xff" * 64, int(codec), 5)))


def test_xerial_framing_refused_shapes() -> None:
    head = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    block = bytes(cramjam.snappy.compress_raw(hand_record(b"k", b"v")))
    for payload, match in [
        (head[:12], "truncated xerial snappy header"),
        (head + b"\x00\x00", "bad xerial snappy framing"),
        (head + struct.pack(">i", len(block) + 1) + block, "truncated xerial snappy block"),
        (head + struct.pack(">i", 0), "corrupt snappy"),
    ]:
        with pytest.raises(RecordsError, match=match):
            decode_records(read_batch(raw_batch(payload, codec=2)))
    ok = read_batch(raw_batch(head + struct.pack(">i", len(block)) + block, codec=2))
    assert [r.key for r in decode_records(ok)] == [b"k"]


# --- decompression bombs -----------------------------------------------------------------


def _bomb(codec: Compression, size: int) -> bytes:
    zeros = bytes(1 << 20)
    compressor = {
        Compression.GZIP: lambda: cramjam.gzip.Compressor(level=9),
        Compression.LZ4: lambda: cramjam.lz4.Compressor(block_linked=False),
        Compression.ZSTD: lambda: cramjam.zstd.Compressor(level=1),
    }[codec]()
    for _ in range(size >> 20):
        compressor.compress(zeros)
    return bytes(compressor.finish())


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("codec", "size"),
    [(Compression.ZSTD, 1 << 30), (Compression.GZIP, 96 << 20), (Compression.LZ4, 96 << 20)],
    ids=["zstd-1GiB", "gzip-96MiB", "lz4-96MiB"],
)
def test_decompression_bomb_is_cut_at_the_limit(codec: Compression, size: int) -> None:
    payload = _bomb(codec, size)
    assert len(payload) < 8 << 20
    batch = read_batch(raw_batch(payload, codec=int(codec), count=1))
    tracemalloc.start()
    started = time.monotonic()
    try:
        for read in (record_digests, decode_records):
            with pytest.raises(RecordsError, match=f"decompresses past {MAX_BATCH_BYTES}"):
                read(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 20
    assert peak < MAX_BATCH_BYTES + (4 << 20)


def test_snappy_bomb_is_refused_before_allocating() -> None:
    claim = b"\xff\xff\xff\xff\x0f"  # a raw block claiming 4 GiB
    head = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    block = bytes(cramjam.snappy.compress_raw(bytes(40 << 20)))  # 40 MiB of zeros
    framed = head + (struct.pack(">i", len(block)) + block) * 2  # 80 MiB in two blocks
    batches = [read_batch(raw_batch(p, codec=2)) for p in (claim + b"\x00" * 16, framed)]
    tracemalloc.start()
    try:
        for batch in batches:
            with pytest.raises(RecordsError, match="snappy"):
                record_digests(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_record_count_bomb_is_refused_before_parsing() -> None:
    batch = read_batch(raw_batch(hand_record(b"k", b"v"), count=MAX_RECORDS_PER_BATCH))
    with pytest.raises(RecordsError, match="cannot fit"):
        record_digests(batch)


# --- hypothesis --------------------------------------------------------------------------

blobs = st.one_of(st.none(), st.binary(max_size=40))
headers_st = st.lists(
    st.tuples(st.text(max_size=6), st.one_of(st.none(), st.binary(max_size=12))), max_size=3
)
records_st = st.lists(st.tuples(blobs, blobs, headers_st), min_size=1, max_size=6)


@settings(deadline=None)
@given(records_st, st.sampled_from(CODECS))
def test_fuzz_aiokafka_and_ours_agree(records: list[Any], codec: Compression) -> None:
    theirs_bytes = aio_build(records, codec)
    ours = decode_records(read_batch(theirs_bytes))
    assert as_tuples(ours) == as_tuples(AioMemoryRecords(theirs_bytes).next_batch())
    mine = build(
        [(k, v, tuple(Header(hk.encode(), hv) for hk, hv in hs)) for k, v, hs in records], codec
    )
    theirs = AioMemoryRecords(mine).next_batch()
    assert theirs.validate_crc()
    assert [r[2:] for r in as_tuples(theirs)] == [r[2:] for r in as_tuples(ours)]


def _read_all(data: bytes, allow_partial: bool) -> None:
    try:
        for batch in read_batches(data, allow_partial=allow_partial).batches:
            digests = record_digests(batch)
            assert len(digests) == batch.header.record_count
            decode_records(batch)
    except RecordsError:
        pass


@pytest.mark.timeout(120)
@settings(deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_fuzz_random_bytes(data: bytes, allow_partial: bool) -> None:
    _read_all(data, allow_partial)
    _read_all(raw_batch(data, count=len(data) % 9), allow_partial)
    for codec in (1, 2, 3, 4):
        _read_all(raw_batch(data, codec=codec, count=3), allow_partial)


SEEDS = [JAVA_BY_NAME[n] for n in FETCH] + [aio_build(py_records(MIXED), c) for c in CODECS]


@pytest.mark.timeout(120)
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(-8, 8),
)
def test_fuzz_mutated_batches(seed: bytes, flips: list[tuple[int, int]], resize: int) -> None:
    data = bytearray(seed)
    for at, value in flips:
        data[at % len(data)] = value
    if resize < 0:
        del data[resize:]
    else:
        data += bytes(resize)
    _read_all(bytes(data), True)
    _read_all(bytes(data), False)
    # The same mutations behind a correct length and CRC, so they reach the records.
    if len(data) > HEADER_SIZE:
        count = struct.unpack_from(">i", data, 57)[0]
        codec = struct.unpack_from(">h", data, 21)[0] & 7
        if 0 <= count <= 1000 and codec <= 4:
            _read_all(raw_batch(bytes(data[HEADER_SIZE:]), codec=codec, count=count), True)


# --- Kafka's Java reader on what we build (integration) ---------------------------------


def _kafka_libs() -> str:
    out = subprocess.run(
        [str(ROOT / "scripts" / "install-kafka")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_java_reads_what_we_build() -> None:
    ours: list[tuple[bytes, list[tuple[Any, ...]]]] = []
    for case in JAVA:
        batch = read_batch(bytes.fromhex(case["hex"]))
        records = decode_records(batch)
        masked = [
            dataclasses.replace(r, value=None if r.value is None else b"***") for r in records
        ]
        for new in (records, masked):
            data = encode_batch(batch.header, new)
            ours.append((data, as_java(decode_records(read_batch(data)))))
    for codec in CODECS:
        data = build(MIXED, codec, producer_id=3, producer_epoch=0, base_sequence=0)
        ours.append((data, as_java(decode_records(read_batch(data)))))
    empty = encode_batch(header(producer_id=77, base_sequence=5), [])
    ours.append((empty, []))
    fetch = b"".join(data for data, _ in ours[:6])
    env = dict(os.environ)
    out = subprocess.run(
        ["java", "-cp", f"{_kafka_libs()}/*", str(VECTORS / "KafkaRecords.java"), "read"],
        input="\n".join(d.hex() for d, _ in ours) + "\n" + fetch.hex() + "\n",
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == len(ours) + 1
    for (data, records), java in zip(ours, lines, strict=False):
        assert isinstance(java, list), java  # not {"error": ...}: ensureValid() passed
        (batch,) = java
        assert batch["size"] == len(data)
        assert batch["records"] == records
    assert [b["size"] for b in lines[-1]] == [len(d) for d, _ in ours[:6]]
