"""Kafka's record batches (magic v2), sans-IO: walk them, read their records, build them.

Owns the ``records`` bytes of a Produce request partition or a Fetch response partition:
a concatenation of record batches, the last of which may be cut short in a Fetch
response (the broker stops at the size the client asked for; clients skip that tail,
so the walk reports it as ``partial`` instead of failing). Everything else that does not
parse is refused with ``RecordsError``: old magic 0/1 message sets (Kafka 4 refuses them
too), unknown magic or codec, bad lengths, a record that does not end where its length
says, bytes left after the last record, a batch that decompresses past its limit. Must
not decide what to do with a bad CRC (``Batch.crc_valid`` says; the caller decides), and
does no I/O, clock or logging.

The layout (big-endian; ``varint``/``varlong`` are zigzag varints, as in protobuf)::

    batch  = baseOffset:int64 batchLength:int32 partitionLeaderEpoch:int32 magic:int8
             crc:uint32 attributes:int16 lastOffsetDelta:int32 baseTimestamp:int64
             maxTimestamp:int64 producerId:int64 producerEpoch:int16 baseSequence:int32
             recordCount:int32 records        ; crc: CRC-32C of attributes..end
    record = length:varint attributes:int8 timestampDelta:varlong offsetDelta:varint
             keyLength:varint key valueLength:varint value headerCount:varint header*
    header = keyLength:varint key valueLength:varint value     ; length -1: null

``records`` is compressed as a whole when the codec (attributes bits 0-2) is not none:
gzip, snappy (xerial-framed as Java clients write it, or raw as librdkafka does; both
are read, xerial is written), lz4 (the LZ4 frame format) or zstd. A record's digest is
SHA-256 of its bytes from ``keyLength`` to its end: key, value and headers exactly as
Kafka encodes them, so it is the same when the message is produced and when it is
fetched, whatever offset and timestamp the broker gave it. The primitives are vetted:
CRC-32C from AWS's C runtime (``awscrt``), compression from ``cramjam``, hashlib.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import struct
from collections.abc import Sequence

from awscrt import checksums as _crt  # type: ignore[import-untyped]

from ledgergate.wire.kafka import _records as _native  # the record walk and hashes in C
from ledgergate.wire.kafka.compression import Compression, CompressionError, compress, decompress

__all__ = [
    "HEADER_SIZE",
    "MAX_BATCH_BYTES",
    "MAX_RECORDS_PER_BATCH",
    "Batch",
    "BatchHeader",
    "Batches",
    "Compression",
    "Header",
    "NewRecord",
    "PartialBatch",
    "Record",
    "RecordsError",
    "TimestampType",
    "content_digest",
    "decode_records",
    "digests_reference",
    "encode_batch",
    "read_batch",
    "read_batches",
    "record_digests",
    "record_digests_reference",
    "record_hex_digests",
]

# Kafka's default message.max.bytes is 1 MiB and operators raise it to tens of MiB at
# most; a batch's size on the wire and its records once decompressed are both held in
# memory (the latter is allocated here), so 64 MiB leaves a wide margin over real
# batches while bounding what one hostile batch makes the gateway allocate.
MAX_BATCH_BYTES = 64 << 20
# Producers fill batches of batch.size (16 KiB by default, rarely above 1 MiB), so even
# empty records stay far below a million per batch; the cap bounds the Python loop over
# one batch to about a second.
MAX_RECORDS_PER_BATCH = 1 << 20

HEADER_SIZE = 61
_HEADER = struct.Struct(">qiibIhiqqqhii")  # BatchHeader's fields, in its order
_LENGTH_END = 12  # baseOffset and batchLength come before what batchLength counts
_MAGIC_AT = 16  # the same place in magic 0, 1 and 2
_CRC_AT = 17
_CRC_FROM = 21  # the CRC covers attributes to the end
_MIN_RECORD = 7  # length, attributes, three deltas/lengths and headerCount: a byte each
_CODEC_MASK = 0x07
_TIMESTAMP_TYPE_BIT = 0x08
_TRANSACTIONAL_BIT = 0x10
_CONTROL_BIT = 0x20
_DELETE_HORIZON_BIT = 0x40

_Buf = bytes | bytearray | memoryview


class RecordsError(ValueError):
    """The bytes are not Kafka v2 record batches the gateway can read (or build)."""


class TimestampType(enum.IntEnum):
    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


@dataclasses.dataclass(frozen=True, slots=True)
class BatchHeader:
    """The 61 bytes before a batch's records, as read (``encode_batch`` recomputes
    ``batch_length``, ``crc`` and ``record_count``)."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def compression(self) -> Compression:
        return Compression(self.attributes & _CODEC_MASK)

    @property
    def timestamp_type(self) -> TimestampType:
        return TimestampType(bool(self.attributes & _TIMESTAMP_TYPE_BIT))

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _CONTROL_BIT)

    @property
    def has_delete_horizon(self) -> bool:
        """Set by the log cleaner: ``base_timestamp`` is then the delete horizon."""
        return bool(self.attributes & _DELETE_HORIZON_BIT)

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def size(self) -> int:
        """The whole batch's size on the wire."""
        return self.batch_length + _LENGTH_END


_FIELDS = tuple(f.name for f in dataclasses.fields(BatchHeader))


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    """One whole batch: its header, where it lies in the walked bytes (``start`` to
    ``end``), whether its CRC-32C matches, and ``data``, a view of its bytes (no copy)."""

    header: BatchHeader
    start: int
    end: int
    crc_valid: bool
    data: memoryview


@dataclasses.dataclass(frozen=True, slots=True)
class PartialBatch:
    """A batch cut short at the end of a Fetch response: ``available`` bytes of it from
    ``start``; ``size`` is its full size once its length field arrived."""

    start: int
    available: int
    size: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class Batches:
    """What a walk found: the whole batches, then the cut-short one if any."""

    batches: tuple[Batch, ...]
    partial: PartialBatch | None


@dataclasses.dataclass(frozen=True, slots=True)
class Header:
    key: bytes
    value: bytes | None


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """One decoded record. ``offset`` is base offset + ``offset_delta``; ``timestamp``
    is base timestamp + ``timestamp_delta``, or the batch's max timestamp when the
    broker set it (LOG_APPEND_TIME), as Kafka's clients read it."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    digest: bytes
    offset_delta: int
    timestamp_delta: int


@dataclasses.dataclass(frozen=True, slots=True)
class NewRecord:
    """A record to build: deltas from the batch header's base offset and timestamp."""

    offset_delta: int
    timestamp_delta: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()


# -- walking batches ---------------------------------------------------------------------


def read_batches(data: _Buf, *, allow_partial: bool = False) -> Batches:
    """Walk ``data`` (a partition's ``records``) batch by batch, without copying.

    ``allow_partial``: a Fetch response's last batch may be cut short, and is then
    reported as ``partial``; in a Produce request (the default) that raises.
    """
    view = _view(data)
    end = len(view)
    pos = 0
    out: list[Batch] = []
    while pos < end:
        left = end - pos
        if left > _MAGIC_AT:
            _check_magic(view[pos + _MAGIC_AT], pos)
        size = None
        if left >= _LENGTH_END:
            size = int.from_bytes(view[pos + 8 : pos + 12], "big", signed=True) + _LENGTH_END
            if size < HEADER_SIZE:
                raise RecordsError(f"batch at byte {pos}: length {size - 12} is too small")
            if size > MAX_BATCH_BYTES:
                raise RecordsError(
                    f"batch at byte {pos}: {size} bytes is over the limit ({MAX_BATCH_BYTES})"
                )
        if size is None or size > left:
            if not allow_partial:
                raise RecordsError(f"batch at byte {pos} is truncated ({left} bytes)")
            return Batches(tuple(out), PartialBatch(pos, left, size))
        out.append(_batch(view[pos : pos + size], pos))
        pos += size
    return Batches(tuple(out), None)


def read_batch(data: _Buf) -> Batch:
    """Exactly one whole batch (bytes after it are refused)."""
    found = read_batches(data).batches
    if len(found) != 1:
        raise RecordsError(f"expected one batch, found {len(found)}")
    return found[0]


def _view(data: _Buf) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _check_magic(magic: int, pos: int) -> None:
    if magic in (0, 1):
        raise RecordsError(
            f"batch at byte {pos}: magic {magic} message sets are not supported"
            " (only magic 2 record batches, as Kafka 4 requires)"
        )
    if magic != 2:
        raise RecordsError(f"batch at byte {pos}: unknown magic {magic}")


def _batch(view: memoryview, pos: int) -> Batch:
    header = BatchHeader(*_HEADER.unpack_from(view))
    codec = header.attributes & _CODEC_MASK
    if codec > Compression.ZSTD:
        raise RecordsError(f"batch at byte {pos}: unknown compression codec {codec}")
    if not 0 <= header.record_count <= MAX_RECORDS_PER_BATCH:
        raise RecordsError(
            f"batch at byte {pos}: record count {header.record_count} is out of range"
        )
    crc_valid = int(_crt.crc32c(view[_CRC_FROM:])) == header.crc
    return Batch(header, pos, pos + len(view), crc_valid, view)


# -- reading records ---------------------------------------------------------------------


def record_digests(batch: Batch) -> list[tuple[int, bytes, int]]:
    """Per record: (offset, digest, key size + value size): the SHA-256 of each record
    from its keyLength to its end (key, value and headers). The hot path, walked and
    hashed in C (``_records.c``), held to ``record_digests_reference``."""
    buf = _records_area(batch)
    try:
        return _native.digests(buf, batch.header.record_count, batch.header.base_offset)
    except ValueError as e:
        raise RecordsError(str(e)) from None


def record_hex_digests(batch: Batch) -> tuple[list[str], int | None, int | None]:
    """The records' digests as hex, with the first and last record's offsets (None
    without records): what a batch's ledger entry holds, in one native call."""
    buf = _records_area(batch)
    try:
        hexes, first, last = _native.hex_digests(buf, batch.header.record_count)
    except ValueError as e:
        raise RecordsError(str(e)) from None
    base = batch.header.base_offset
    return hexes, None if first is None else base + first, None if last is None else base + last


def record_digests_reference(batch: Batch) -> list[tuple[int, bytes, int]]:
    """``record_digests`` in Python: the reference the native walk is held to."""
    return digests_reference(
        _records_area(batch), batch.header.record_count, batch.header.base_offset
    )


def digests_reference(
    area: bytes | bytearray | memoryview, count: int, base: int
) -> list[tuple[int, bytes, int]]:
    """What ``_records.digests(area, count, base)`` must give for a records area, in
    Python (RecordsError for what it must refuse, with the same message)."""
    view = memoryview(area)
    spans = _spans(area, count)
    sha = hashlib.sha256
    return [
        (
            base + off_delta,
            sha(view[body:rec_end]).digest(),
            (klen if klen > 0 else 0) + (vlen if vlen > 0 else 0),
        )
        for off_delta, _, body, _, klen, _, vlen, _, rec_end in spans
    ]


def decode_records(batch: Batch) -> tuple[Record, ...]:
    """Every record of ``batch``, decompressed and decoded (the cold path)."""
    buf, view, spans = _records(batch)
    h = batch.header
    log_append = h.attributes & _TIMESTAMP_TYPE_BIT
    out = []
    for off_delta, ts_delta, body, kpos, klen, vpos, vlen, hcount, rec_end in spans:
        headers = []
        pos = _varint(buf, vpos + max(vlen, 0), 32)[1] if hcount else rec_end
        for _ in range(hcount):
            hklen, pos = _varint(buf, pos, 32)
            hkey = bytes(view[pos : pos + hklen])
            pos += hklen
            hvlen, pos = _varint(buf, pos, 32)
            headers.append(Header(hkey, None if hvlen < 0 else bytes(view[pos : pos + hvlen])))
            pos += max(hvlen, 0)
        out.append(
            Record(
                offset=h.base_offset + off_delta,
                timestamp=h.max_timestamp if log_append else h.base_timestamp + ts_delta,
                key=None if klen < 0 else bytes(view[kpos : kpos + klen]),
                value=None if vlen < 0 else bytes(view[vpos : vpos + vlen]),
                headers=tuple(headers),
                digest=hashlib.sha256(view[body:rec_end]).digest(),
                offset_delta=off_delta,
                timestamp_delta=ts_delta,
            )
        )
    return tuple(out)


_Span = tuple[int, int, int, int, int, int, int, int, int]


def _records(batch: Batch) -> tuple[bytearray | memoryview, memoryview, list[_Span]]:
    """The batch's records area (decompressed if need be) and, per record: offset delta,
    timestamp delta, where its body (keyLength) starts, key position and length, value
    position and length, header count and its end. Every record is checked whole."""
    buf = _records_area(batch)
    return buf, memoryview(buf), _spans(buf, batch.header.record_count)


def _spans(buf: bytes | bytearray | memoryview, count: int) -> list[_Span]:
    """``_scan`` over a whole records area, a varint past its end a RecordsError."""
    try:
        return _scan(buf, len(buf), count)
    except IndexError:
        raise RecordsError("record truncated") from None


def _records_area(batch: Batch) -> bytearray | memoryview:
    """The batch's records area, decompressed if need be, large enough for its count."""
    h = batch.header
    buf: bytearray | memoryview
    if h.attributes & _CODEC_MASK:
        try:
            buf = decompress(
                Compression(h.attributes & _CODEC_MASK), batch.data[HEADER_SIZE:], MAX_BATCH_BYTES
            )
        except CompressionError as e:
            raise RecordsError(str(e)) from None
    else:
        buf = batch.data[HEADER_SIZE:]
    if h.record_count * _MIN_RECORD > len(buf):
        raise RecordsError(f"{h.record_count} records cannot fit in {len(buf)} bytes")
    return buf


def _scan(buf: bytes | bytearray | memoryview, end: int, count: int) -> list[_Span]:
    # The hot path: a varint of one byte (most deltas, key lengths and header counts)
    # is read inline; longer ones go through _varint.
    spans: list[_Span] = []
    append = spans.append
    varint = _varint
    pos = 0
    for _ in range(count):
        length, pos = varint(buf, pos, 32)
        rec_end = pos + length
        if length < _MIN_RECORD - 1 or rec_end > end:
            raise RecordsError(f"record at byte {pos}: bad length {length}")
        b = buf[pos + 1]  # after attributes (unused in v2)
        if b < 0x80:
            ts_delta = (b >> 1) ^ -(b & 1)
            pos += 2
        else:
            ts_delta, pos = varint(buf, pos + 1, 64)
        b = buf[pos]
        if b < 0x80:
            off_delta = (b >> 1) ^ -(b & 1)
            pos += 1
        else:
            off_delta, pos = varint(buf, pos, 32)
        body = pos
        b = buf[pos]
        if b < 0x80:
            klen = (b >> 1) ^ -(b & 1)
            kpos = pos + 1
        else:
            klen, kpos = varint(buf, pos, 32)
        if klen < 0:
            pos = kpos
            if klen != -1:
                raise RecordsError(f"record at byte {body}: bad key length {klen}")
        else:
            pos = kpos + klen
            if pos > rec_end:
                raise RecordsError(f"record at byte {body}: key overruns the record")
        vlen, vpos = varint(buf, pos, 32)
        if vlen < 0:
            pos = vpos
            if vlen != -1:
                raise RecordsError(f"record at byte {body}: bad value length {vlen}")
        else:
            pos = vpos + vlen
        if pos >= rec_end:
            raise RecordsError(f"record at byte {body}: value overruns the record")
        hcount = buf[pos]
        if hcount == 0:
            pos += 1
        else:
            hcount, pos = varint(buf, pos, 32)
            if hcount < 0 or 2 * hcount > rec_end - pos:
                raise RecordsError(f"record at byte {body}: bad header count {hcount}")
            for _ in range(hcount):
                hklen, pos = varint(buf, pos, 32)
                pos += hklen
                if hklen < 0 or pos > rec_end:
                    raise RecordsError(f"record at byte {body}: bad header key length")
                hvlen, pos = varint(buf, pos, 32)
                if hvlen > 0:
                    pos += hvlen
                if hvlen < -1 or pos > rec_end:
                    raise RecordsError(f"record at byte {body}: bad header value length")
        if pos != rec_end:
            raise RecordsError(f"record at byte {body} does not end where its length says")
        append((off_delta, ts_delta, body, kpos, klen, vpos, vlen, hcount, rec_end))
    if pos != end:
        raise RecordsError(f"{end - pos} bytes after the last of {count} records")
    return spans


def _varint(buf: bytes | bytearray | memoryview, pos: int, bits: int) -> tuple[int, int]:
    """The zigzag varint at ``pos`` (at most ``bits`` wide, as Java's reader takes it)
    and the position after it. Past the end raises IndexError (``_records`` turns it
    into RecordsError)."""
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    value = b & 0x7F
    b = buf[pos + 1]
    if b < 0x80:  # two bytes: a length up to 8 KiB
        value |= b << 7
        return (value >> 1) ^ -(value & 1), pos + 2
    value |= (b & 0x7F) << 7
    pos += 1
    shift = 14
    while True:
        pos += 1
        b = buf[pos]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift >= bits:
            raise RecordsError(f"varint at byte {pos} is too long")
    if value >> bits:
        raise RecordsError(f"varint at byte {pos} is out of range")
    return (value >> 1) ^ -(value & 1), pos + 1


# -- building ---------------------------------------------------------------------------


def encode_batch(header: BatchHeader, records: Sequence[Record | NewRecord]) -> bytes:
    """A v2 batch with ``header``'s base offset, leader epoch, attributes (codec,
    timestamp type, transactional and control flags), last offset delta, timestamps and
    producer id/epoch/sequence, holding ``records``: compressed with the header's codec,
    with its length, record count and CRC-32C computed. For masking, pass the records
    of ``decode_records`` with new keys, values or headers (``dataclasses.replace``)."""
    if header.magic != 2:
        raise RecordsError(f"cannot build a magic {header.magic} batch")
    codec = header.attributes & _CODEC_MASK
    if codec > Compression.ZSTD:
        raise RecordsError(f"unknown compression codec {codec}")
    if len(records) > MAX_RECORDS_PER_BATCH:
        raise RecordsError(f"{len(records)} records are over the limit")
    body = bytearray()
    for record in records:
        if not 0 <= record.offset_delta <= header.last_offset_delta:
            raise RecordsError(f"offset delta {record.offset_delta} is out of the batch")
        rec = bytearray(b"\x00")
        _put_varint(rec, record.timestamp_delta, 64)
        _put_varint(rec, record.offset_delta, 32)
        rec += _content(record.key, record.value, record.headers)
        _put_varint(body, len(rec), 32)
        body += rec
        if len(body) > MAX_BATCH_BYTES:
            raise RecordsError(f"records are over the limit ({MAX_BATCH_BYTES} bytes)")
    payload = compress(Compression(codec), bytes(body)) if codec else bytes(body)
    if len(payload) + HEADER_SIZE > MAX_BATCH_BYTES:
        raise RecordsError(f"batch is over the limit ({MAX_BATCH_BYTES} bytes)")
    out = bytearray(HEADER_SIZE) + payload
    try:
        h = dataclasses.replace(
            header, batch_length=len(out) - _LENGTH_END, crc=0, record_count=len(records)
        )
        _HEADER.pack_into(out, 0, *(getattr(h, name) for name in _FIELDS))
    except struct.error as exc:
        raise RecordsError(f"header field out of range: {exc}") from None
    struct.pack_into(">I", out, _CRC_AT, int(_crt.crc32c(memoryview(out)[_CRC_FROM:])))
    return bytes(out)


def content_digest(key: bytes | None, value: bytes | None, headers: Sequence[Header] = ()) -> bytes:
    """The digest a record with this key, value and headers has (``Record.digest``)."""
    return hashlib.sha256(_content(key, value, headers)).digest()


def _content(key: bytes | None, value: bytes | None, headers: Sequence[Header]) -> bytearray:
    """keyLength key valueLength value headerCount header*, as Kafka encodes them."""
    out = bytearray()
    _put_bytes(out, key)
    _put_bytes(out, value)
    _put_varint(out, len(headers), 32)
    for h in headers:
        _put_bytes(out, h.key)
        _put_bytes(out, h.value)
    return out


def _put_bytes(out: bytearray, data: bytes | None) -> None:
    if data is None:
        out += b"\x01"  # zigzag -1
    else:
        _put_varint(out, len(data), 32)
        out += data


def _put_varint(out: bytearray, value: int, bits: int) -> None:
    if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
        raise RecordsError(f"{value} does not fit a {bits}-bit varint")
    n = (value << 1) ^ (value >> (bits - 1))  # zigzag
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
