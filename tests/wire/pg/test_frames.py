"""frames.py: typed-message framing, fed whole, a byte at a time and with trailing bytes."""

from __future__ import annotations

import pytest

from ledgergate.wire.pg.frames import (
    MAX_MESSAGE,
    FrameError,
    FrameSplitter,
    build,
    cstr,
    iter_messages,
    read_cstr,
)
from tests.wire.pg.vectors import SESSIONS, bytewise, client_bytes, load, server_bytes, whole

# Half of the next message: a tag and two bytes of its length.
TRAILING = b"D\x00\x00"


def split_all(chunks: list[bytes], splitter: FrameSplitter | None = None) -> list[bytes]:
    """Feed ``chunks`` to a splitter the way a session does; the whole raw messages."""
    sp = splitter or FrameSplitter()
    out: list[bytes] = []
    for chunk in chunks:
        frames = sp.feed(chunk)
        out += [bytes(sp.buf[s:e]) for _, s, e in frames]
        if frames:
            sp.consume(frames[-1][2])
    return out


def test_build_matches_the_documented_layout() -> None:
    # ReadyForQuery: Byte1('Z') Int32(5) Byte1(status)
    assert build(b"Z", b"I") == b"Z\x00\x00\x00\x05I"
    assert build(b"S") == b"S\x00\x00\x00\x04"


def test_cstr_and_read_cstr() -> None:
    assert cstr("héllo") == "héllo".encode() + b"\x00"
    assert cstr(b"x", "ascii") == b"x\x00"
    with pytest.raises(FrameError):
        cstr("a\x00b")
    body = b"first\x00second\x00"
    assert read_cstr(body, 0) == (b"first", 6)
    assert read_cstr(body, 6) == (b"second", len(body))
    assert read_cstr(bytearray(body), 6) == (b"second", len(body))
    assert read_cstr(memoryview(body), 6) == (b"second", len(body))
    for buf in (body, memoryview(body)):
        with pytest.raises(FrameError):
            read_cstr(buf[:-1], 6)


@pytest.mark.parametrize("name", SESSIONS)
def test_iter_messages_reads_the_vectors(name: str) -> None:
    v = load(name)
    s2c = [chr(t[0]) for t, _ in iter_messages(server_bytes(v))]
    assert s2c == v["expect"]["s2c_messages"]
    c2s = [chr(t[0]) for t, _ in iter_messages(client_bytes(v))]
    assert c2s == v["expect"]["c2s_messages"]


@pytest.mark.parametrize("name", SESSIONS)
def test_iter_messages_refuses_a_partial_trailing_message(name: str) -> None:
    data = server_bytes(load(name))
    for trailing in (b"Z", b"Z\x00\x00\x00", b"Z\x00\x00\x00\x05"):
        with pytest.raises(FrameError):
            list(iter_messages(data + trailing))


@pytest.mark.parametrize("name", SESSIONS)
@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_splitter_whole_bytewise_and_trailing(name: str, direction: str) -> None:
    v = load(name)
    data = client_bytes(v) if direction == "c2s" else server_bytes(v)
    expected = [build(t, body) for t, body in iter_messages(data)]
    assert b"".join(expected) == data
    assert split_all(whole(data)) == expected
    assert split_all(bytewise(data)) == expected
    sp = FrameSplitter()
    assert split_all([data + TRAILING], sp) == expected
    assert bytes(sp.buf) == TRAILING  # kept for the next read, not returned
    sp = FrameSplitter()
    assert split_all([*bytewise(data), TRAILING], sp) == expected
    assert bytes(sp.buf) == TRAILING


def test_splitter_without_consume_returns_the_same_frames_again() -> None:
    sp = FrameSplitter()
    first = sp.feed(build(b"S"))
    assert first == [(ord("S"), 0, 5)]
    assert sp.feed(b"") == first
    sp.consume(5)
    assert sp.feed(b"") == []
    sp.consume(0)
    assert bytes(sp.buf) == b""


@pytest.mark.parametrize("length", [0, 1, 3, MAX_MESSAGE + 1, 0xFFFF_FFFF])
def test_splitter_refuses_impossible_lengths(length: int) -> None:
    with pytest.raises(FrameError, match="invalid message length"):
        FrameSplitter().feed(b"Q" + length.to_bytes(4, "big"))
    with pytest.raises(FrameError):
        list(iter_messages(b"Q" + length.to_bytes(4, "big")))


def test_splitter_limit_is_inclusive_and_configurable() -> None:
    sp = FrameSplitter()
    assert sp.feed(b"d" + MAX_MESSAGE.to_bytes(4, "big")) == []  # waits for the body
    small = FrameSplitter(max_message=100)
    assert small.feed(build(b"d", b"x" * 96)) == [(ord("d"), 0, 101)]
    with pytest.raises(FrameError):
        FrameSplitter(max_message=100).feed(b"d" + (101).to_bytes(4, "big"))


def test_splitter_refuses_a_bad_frame_after_good_ones() -> None:
    sp = FrameSplitter()
    with pytest.raises(FrameError):
        sp.feed(build(b"S") + b"Q\x00\x00\x00\x02")
