"""The ledger journal's record format: bytes in, records out (pure; no files).

A gateway's ledger stream is made durable by appending to a journal (one file per
segment) before anything it records is forwarded; the store (SQLite, PostgreSQL) is
indexed from the journal in the background. The journal therefore has to say exactly what
the store must end up holding: sealed entries, encrypted payloads and signed checkpoints.

Segment layout: ``MAGIC`` + u16 length + stream name (UTF-8), then records. A record is a
9-byte header (type, u32 body length, u32 zlib CRC-32 of the body seeded with the
type byte) and its body:
- ``E`` entry: entry_hash (32 bytes) + the entry's canonical JSON.
- ``P`` payload: u64 created_ns, u16 digest length, digest (ASCII hex), sealed blob.
- ``C`` checkpoint: u64 size, u64 ts_ns, root (32 bytes), signed note (UTF-8).
- ``Z`` commit: empty; ends every write (one group commit of the writer).

Rules: a group commit counts only if its ``Z`` record was written: a kill or power loss
during a write leaves a torn tail, possibly with whole records of the unfinished commit
before the cut, and ``decode`` drops all of it (reported as ``torn``), so a commit is in
the journal entirely or not at all. A bad record followed by more bytes is damage, not a
torn write, and raises ``JournalError``. The CRC catches torn and flipped bytes; it is not
tamper evidence (the chain, tree and signatures are).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ledgergate.core.ledger.merkle import HASH_SIZE

__all__ = [
    "COMMIT",
    "MAGIC",
    "CheckpointRecord",
    "Decoded",
    "EntryRecord",
    "JournalError",
    "PayloadRecord",
    "decode",
    "encode_checkpoint",
    "encode_entry",
    "encode_payload",
    "header",
]

MAGIC = b"LGJOURNAL1\n"
# A record body above this is damage: entries are kilobytes, payloads are bounded by the
# relay's largest message (1 GiB) plus the cipher's nonce and tag.
MAX_BODY = (1 << 30) + 4096

_HDR = struct.Struct("<BII")
_U16 = struct.Struct("<H")
_PAY = struct.Struct("<QH")
_CP = struct.Struct("<QQ")
_E, _P, _C, _Z = ord("E"), ord("P"), ord("C"), ord("Z")
_crc = zlib.crc32
# The record that ends every write.
COMMIT = _HDR.pack(_Z, 0, _crc(b"", _Z))


class JournalError(ValueError):
    """A segment is not a ledgergate journal or is damaged before its last record."""


@dataclass(frozen=True, slots=True)
class EntryRecord:
    entry_hash: bytes
    canonical: bytes


@dataclass(frozen=True, slots=True)
class PayloadRecord:
    digest: str
    blob: bytes
    created_ns: int


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    size: int
    ts_ns: int
    root: bytes
    note: str


Record = EntryRecord | PayloadRecord | CheckpointRecord


@dataclass(frozen=True, slots=True)
class Decoded:
    stream: str
    records: list[Record]
    end: int  # offset just past the last whole commit
    torn: bool  # bytes after ``end`` are a torn last commit


def header(stream: str) -> bytes:
    name = stream.encode("utf-8")
    return MAGIC + _U16.pack(len(name)) + name


def _record(kind: int, body: bytes) -> bytes:
    return _HDR.pack(kind, len(body), _crc(body, kind)) + body


def encode_entry(entry_hash: bytes, canonical: bytes) -> bytes:
    body = entry_hash + canonical
    return _HDR.pack(_E, len(body), _crc(body, _E)) + body


def encode_payload(digest: str, blob: bytes, created_ns: int) -> bytes:
    d = digest.encode("ascii")
    return _record(_P, _PAY.pack(created_ns, len(d)) + d + blob)


def encode_checkpoint(size: int, ts_ns: int, root: bytes, note: str) -> bytes:
    return _record(_C, _CP.pack(size, ts_ns) + root + note.encode("utf-8"))


def _body(kind: int, body: bytes) -> Record:
    if kind == _E:
        if len(body) <= HASH_SIZE:
            raise ValueError("entry record too short")
        return EntryRecord(body[:HASH_SIZE], body[HASH_SIZE:])
    if kind == _P:
        created, n = _PAY.unpack_from(body)
        start = _PAY.size + n
        if start > len(body):
            raise ValueError("payload record too short")
        return PayloadRecord(body[_PAY.size : start].decode("ascii"), body[start:], created)
    if kind == _C:
        size, ts = _CP.unpack_from(body)
        root = body[_CP.size : _CP.size + HASH_SIZE]
        if len(root) != HASH_SIZE:
            raise ValueError("checkpoint record too short")
        return CheckpointRecord(size, ts, root, body[_CP.size + HASH_SIZE :].decode("utf-8"))
    raise ValueError(f"unknown record type {kind:#x}")


def decode(data: bytes) -> Decoded:
    """Every whole record of one segment's bytes, in order."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _U16.size:
        raise JournalError("not a ledgergate journal segment")
    (n,) = _U16.unpack_from(data, len(MAGIC))
    pos = len(MAGIC) + _U16.size
    try:
        stream = data[pos : pos + n].decode("utf-8")
    except UnicodeDecodeError:
        raise JournalError("the segment's stream name is not UTF-8") from None
    if len(stream.encode("utf-8")) != n:
        raise JournalError("the segment header is cut short")
    pos += n
    records: list[Record] = []
    pending: list[Record] = []  # records of a commit whose Z is not read yet
    committed = pos
    size = len(data)
    while pos < size:
        if size - pos < _HDR.size:
            break
        kind, length, crc = _HDR.unpack_from(data, pos)
        start = pos + _HDR.size
        end = start + length
        if length > MAX_BODY or end > size:
            if length > MAX_BODY and end < size:
                raise JournalError(f"record at offset {pos} has an impossible length")
            break
        body = data[start:end]
        if _crc(body, kind) != crc:
            if end == size:
                break
            raise JournalError(f"record at offset {pos} is damaged (CRC mismatch)")
        pos = end
        if kind == _Z:
            records += pending
            pending = []
            committed = pos
            continue
        try:
            pending.append(_body(kind, body))
        except (ValueError, struct.error, UnicodeDecodeError) as e:
            raise JournalError(f"record at offset {start - _HDR.size} is malformed: {e}") from None
    return Decoded(stream, records, committed, committed != size)
