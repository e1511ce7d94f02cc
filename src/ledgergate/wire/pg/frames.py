"""PostgreSQL v3 framing: split byte streams into messages, build messages.

Owns the byte layout of frames (type byte + int32 length, and the untyped startup
packets). Sans-IO: no sockets, no clocks, no logging. Functions take ``bytes`` or
``bytearray`` and offsets and never copy message bodies they do not return.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

__all__ = [
    "MAX_MESSAGE",
    "MAX_STARTUP",
    "MAX_TAG",
    "FrameError",
    "FrameSplitter",
    "build",
    "cstr",
    "iter_messages",
    "read_cstr",
    "walk_reference",
]

# PostgreSQL itself refuses messages above 1 GiB (MaxAllocSize); a length beyond that
# is garbage or an attack, never a real frame.
MAX_MESSAGE = 0x3FFF_FFFF
# The server's own limit for a startup packet (MAX_STARTUP_PACKET_LENGTH in pqcomm.h).
MAX_STARTUP = 10_000

_I = struct.Struct("!I")
_HDR = struct.Struct("!cI")
unpack_hdr = _HDR.unpack_from
pack_i32 = _I.pack


# CommandComplete tags are short ("INSERT 0 1000000"); a longer body is cut here, so a
# tag split across reads never buffers more than this (``_datarows.MAX_TAG`` is equal).
MAX_TAG = 256


def walk_reference(data: bytes | bytearray, pos: int) -> tuple[int, int, tuple[bytes, ...], int]:
    """The server walk of a relayed read, as its definition (``_datarows.walk`` computes
    it in C on the hot path, held to this by tests/wire/pg/test_walk.py): from ``pos``,
    where the next message begins (past the end when a message spans reads), the frame
    headers of ``data``. Returns where the next message begins, the DataRow and CopyData
    messages counted, each complete CommandComplete's tag (up to its NUL, at most
    MAX_TAG bytes), and where an incomplete last CommandComplete's body begins (-1 if
    none). A length below 4 counts as 4: the backend is trusted to frame, but a length
    never moves the walk backwards."""
    if pos < 0:
        raise ValueError("walk: pos is >= 0")
    n = len(data)
    rows, open_at = 0, -1
    tags: list[bytes] = []
    while pos + 5 <= n:
        t = data[pos]
        (ln,) = _I.unpack_from(data, pos + 1)  # unsigned
        ln = max(ln, 4)
        if t in (0x44, 0x64):  # D, d
            rows += 1
        elif t == 0x43:  # C
            if pos + 1 + ln <= n:
                tags.append(bytes(data[pos + 5 : pos + 5 + min(ln - 4, MAX_TAG)]).split(b"\0")[0])
            else:
                open_at = pos + 5
        pos += 1 + ln
    return pos, rows, tuple(tags), open_at


class FrameError(ValueError):
    """Bytes that are not a valid PostgreSQL frame. The message is safe to show a client."""


def build(tag: bytes, body: bytes = b"") -> bytes:
    """One typed message: tag byte, int32 length (including itself), body."""
    return tag + pack_i32(len(body) + 4) + body


def cstr(text: str | bytes, encoding: str = "utf-8") -> bytes:
    b = text.encode(encoding) if isinstance(text, str) else text
    if b"\x00" in b:
        raise FrameError("string contains a NUL byte")
    return b + b"\x00"


def read_cstr(buf: bytes | bytearray | memoryview, pos: int) -> tuple[bytes, int]:
    """The NUL-terminated string at ``pos`` and the offset after its NUL."""
    end = bytes(buf[pos:]).find(b"\x00") if isinstance(buf, memoryview) else buf.find(b"\x00", pos)
    if end < 0:
        raise FrameError("unterminated string in message")
    if isinstance(buf, memoryview):
        end += pos
    return bytes(buf[pos:end]), end + 1


def iter_messages(data: bytes | bytearray) -> Iterator[tuple[bytes, bytes]]:
    """Yield (tag, body) for each complete typed message in ``data``; raise on a partial
    trailing message. For captured streams and tests, not for the hot path."""
    pos, n = 0, len(data)
    while pos < n:
        if n - pos < 5:
            raise FrameError("truncated message header")
        tag, length = unpack_hdr(data, pos)
        if length < 4 or length > MAX_MESSAGE:
            raise FrameError(f"invalid message length {length}")
        end = pos + 1 + length
        if end > n:
            raise FrameError("truncated message")
        yield tag, bytes(data[pos + 5 : end])
        pos = end


class FrameSplitter:
    """Accumulates bytes and yields complete typed messages.

    ``feed(data)`` returns a list of (tag, start, end) offsets into ``self.buf`` for each
    complete message (``start`` points at the tag byte, ``end`` one past the message);
    call ``consume(n)`` after using them to drop the first ``n`` bytes. Lengths outside
    4..``max_message`` raise FrameError.
    """

    __slots__ = ("buf", "max_message")

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.buf = bytearray()
        self.max_message = max_message

    def feed(self, data: bytes) -> list[tuple[int, int, int]]:
        buf = self.buf
        buf += data
        out: list[tuple[int, int, int]] = []
        pos, n = 0, len(buf)
        while n - pos >= 5:
            tag = buf[pos]
            (length,) = _I.unpack_from(buf, pos + 1)
            if length < 4 or length > self.max_message:
                raise FrameError(f"invalid message length {length} for message type {chr(tag)!r}")
            end = pos + 1 + length
            if end > n:
                break
            out.append((tag, pos, end))
            pos = end
        return out

    def consume(self, n: int) -> None:
        if n:
            del self.buf[:n]
