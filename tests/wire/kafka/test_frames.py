"""frames.py: Kafka's size-prefixed frames, fed whole, byte by byte and with trailing
bytes; sizes past the cap and negative sizes are refused before anything is buffered."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.wire.kafka.frames import FrameError, FrameReader, frame

BODIES = [b"", b"x", b"\x00" * 3, b"abcd", bytes(range(256)) * 3]
STREAM = b"".join(frame(b) for b in BODIES)


def _collect(reader: FrameReader, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for c in chunks:
        out.extend(bytes(f) for f in reader.feed(c))
    return out


def test_whole() -> None:
    assert _collect(FrameReader(), [STREAM]) == BODIES


def test_byte_by_byte() -> None:
    r = FrameReader()
    assert _collect(r, [STREAM[i : i + 1] for i in range(len(STREAM))]) == BODIES
    assert r.pending == 0


def test_trailing_bytes_wait_for_the_rest() -> None:
    r = FrameReader()
    tail = frame(b"next-frame")
    assert _collect(r, [STREAM + tail[:7]]) == BODIES
    assert r.pending == 3  # the body bytes; the size prefix is read
    assert _collect(r, [tail[7:]]) == [b"next-frame"]


def test_a_frame_in_one_read_is_not_copied() -> None:
    data = frame(b"hello")
    (f,) = FrameReader().feed(data)
    assert f.obj is data


@pytest.mark.parametrize("size", [-1, 2**31 - 1, 101 * 1024 * 1024])
def test_sizes_out_of_range_are_refused_at_the_prefix(size: int) -> None:
    r = FrameReader()
    with pytest.raises(FrameError):
        r.feed(size.to_bytes(4, "big", signed=True))
    assert r.pending <= 4


def test_limit_is_configurable() -> None:
    r = FrameReader(limit=8)
    assert [bytes(f) for f in r.feed(frame(b"12345678"))] == [b"12345678"]
    with pytest.raises(FrameError):
        r.feed(frame(b"123456789"))


@given(st.lists(st.binary(max_size=300), max_size=12), st.data())
def test_any_split_gives_the_same_frames(bodies: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame(b) for b in bodies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert _collect(FrameReader(), chunks) == bodies
