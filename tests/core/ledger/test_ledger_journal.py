"""The journal record codec: whole segments, every cut of one (a torn last record), damage
in the middle, and fuzzed bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.core.ledger.journal import (
    COMMIT,
    CheckpointRecord,
    EntryRecord,
    JournalError,
    PayloadRecord,
    decode,
    encode_checkpoint,
    encode_entry,
    encode_payload,
    header,
)

STREAM = "gateway@zoë"
RECORDS = [
    EntryRecord(b"\x01" * 32, b'{"kind":"session.open","seq":0}'),
    PayloadRecord("ab" * 32, b"\x00sealed\xff" * 50, 1_790_000_000_000_000_123),
    EntryRecord(b"\x02" * 32, b'{"kind":"chunk","seq":1,"t":"\xc3\xa9"}'),
    CheckpointRecord(2, 1_790_000_000_000_000_456, b"\x03" * 32, "gateway@zoë\n2\nroot\n\n— sig\n"),
]


def encode(rec: EntryRecord | PayloadRecord | CheckpointRecord) -> bytes:
    if isinstance(rec, EntryRecord):
        return encode_entry(rec.entry_hash, rec.canonical)
    if isinstance(rec, PayloadRecord):
        return encode_payload(rec.digest, rec.blob, rec.created_ns)
    return encode_checkpoint(rec.size, rec.ts_ns, rec.root, rec.note)


COMMITS = [RECORDS[:1], RECORDS[1:3], RECORDS[3:]]  # what each write carried


def segment() -> tuple[bytes, list[int]]:
    """A segment of three writes, and the offset where each write ends."""
    data = header(STREAM)
    ends = [len(data)]
    for commit in COMMITS:
        data += b"".join(encode(r) for r in commit) + COMMIT
        ends.append(len(data))
    return data, ends


def test_whole_segment_round_trips() -> None:
    data, ends = segment()
    d = decode(data)
    assert (d.stream, d.records, d.end, d.torn) == (STREAM, RECORDS, ends[-1], False)


def test_every_cut_yields_the_whole_commits_before_it() -> None:
    """A kill or power loss during a write leaves a prefix of the segment: the records of
    the commits written whole come back, the unfinished commit is dropped entirely (even
    its whole records) and reported torn; nothing raises."""
    data, ends = segment()
    for cut in range(ends[0], len(data) + 1):
        d = decode(data[:cut])
        whole = sum(1 for e in ends[1:] if e <= cut)
        assert d.records == [r for c in COMMITS[:whole] for r in c], cut
        assert d.end == ends[whole]
        assert d.torn == (cut != ends[whole])


def test_a_damaged_record_before_the_last_is_an_error() -> None:
    data, ends = segment()
    bad = bytearray(data)
    bad[ends[1] + 12] ^= 0x40  # inside the second write's first record
    with pytest.raises(JournalError, match="CRC mismatch"):
        decode(bytes(bad))
    # damage in the very last bytes (a write cut short) reads as torn: the commit is dropped
    bad = bytearray(data[: -len(COMMIT)])
    bad[-3] ^= 0x40
    d = decode(bytes(bad))
    assert d.records == RECORDS[:3] and d.torn


@pytest.mark.parametrize("data", [b"", b"LGJOURNAL1\n", b"not a journal at all", header("s")[:-1]])
def test_not_a_segment(data: bytes) -> None:
    with pytest.raises(JournalError):
        decode(data)


@given(st.binary(max_size=400))
def test_fuzzed_records_never_crash(tail: bytes) -> None:
    data, _ = segment()
    try:
        d = decode(data + tail)
    except JournalError:
        return
    assert d.records[: len(RECORDS)] == RECORDS
