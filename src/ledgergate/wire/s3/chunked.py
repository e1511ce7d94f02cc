"""The ``aws-chunked`` body framing of S3 uploads, sans-IO: a decoder (bytes in, events
out) and the encoder pieces to frame the same chunks again.

Owns the framing only: a chunk's signature is read, not checked (``sigv4.ChunkChain``
checks it), and a trailing checksum is handed out, not compared. No I/O, clock or logging.

The grammar, as S3 documents it, botocore and the AWS SDKs for Go (v2) and Java (v2)
send it and MinIO and versitygw read it (``signed``: x-amz-content-sha256 is
``STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]``; ``trailer``: it ends in ``-TRAILER``)::

    body    = *chunk final trailer CRLF
    chunk   = size [";chunk-signature=" sig] CRLF data CRLF     ; size > 0
    final   = 1*"0" [";chunk-signature=" sig] CRLF
    trailer = *(name ":" value CRLF) ["x-amz-trailer-signature:" sig CRLF]

``size`` is hexadecimal; ``sig`` is 64 lower-case hex digits, present on every chunk
when signed and on none otherwise (no other chunk extension is accepted). Trailer lines
appear only in trailer mode; the signature line is required there when signed (last),
refused otherwise. Spaces around a trailer value are trimmed (S3 accepts them); names
are case-insensitive. Everything else is refused with ``ChunkedError``: the decoder
fails closed and stays failed. Data is never buffered: a chunk's bytes are handed out
as they arrive (``ChunkData``, slices of the input); only a size line (``MAX_SIZE_LINE``)
or the trailer (``MAX_TRAILER``) is held until complete.

Events, in order: per chunk ``ChunkStart``, ``ChunkData``\\*, ``ChunkEnd``; for the final
chunk ``ChunkStart(0)`` and ``ChunkEnd``; ``Trailer`` (trailer mode only); ``BodyEnd``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "CRLF",
    "MAX_CHUNK",
    "MAX_SIZE_LINE",
    "MAX_TRAILER",
    "AwsChunkedDecoder",
    "BodyEnd",
    "ChunkData",
    "ChunkEnd",
    "ChunkStart",
    "ChunkedError",
    "Event",
    "Trailer",
    "encode_chunk_header",
    "encode_final",
    "trailer_bytes",
]

CRLF = b"\r\n"
# MinIO refuses chunks over 16 MiB, so no client that works with it sends one (SDKs use
# 64 KiB to 1 MiB). A caller that must hold a chunk until its signature is checked
# holds at most this much.
MAX_CHUNK = 16 << 20
# The longest real size line is a 7-digit size, ";chunk-signature=" and 64 hex digits
# (88 bytes): 256 leaves room for leading zeros and bounds what a bad line makes us hold.
MAX_SIZE_LINE = 256
# SDKs send one checksum line (at most ~110 bytes) and a signature line (~90 bytes);
# 4 KiB is the line bound MinIO uses and leaves room for a few more trailing headers.
MAX_TRAILER = 4096

_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]+)(?:;chunk-signature=([0-9a-f]{64}))?")
_TRAILER_LINE = re.compile(
    rb"([A-Za-z0-9!#$%&'*+.^_`|~-]+)[ \t]*:[ \t]*([\x21-\x7e]*(?:[ \t]+[\x21-\x7e]+)*)[ \t]*"
)
_TRAILER_SIGNATURE = "x-amz-trailer-signature"
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ChunkedError(ValueError):
    """A body that is not valid ``aws-chunked``: ``code`` is S3's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ChunkStart:
    size: int
    signature: str | None  # the chunk-signature, when signed


@dataclass(frozen=True, slots=True)
class ChunkData:
    data: bytes  # part of the current chunk's data, in order


@dataclass(frozen=True, slots=True)
class ChunkEnd:
    pass


@dataclass(frozen=True, slots=True)
class Trailer:
    lines: tuple[tuple[str, str], ...]  # (lower-cased name, trimmed value), as sent
    raw: bytes  # what the trailer signature covers: ``trailer_bytes(lines)``
    signature: str | None  # x-amz-trailer-signature, when signed


@dataclass(frozen=True, slots=True)
class BodyEnd:
    pass


Event = ChunkStart | ChunkData | ChunkEnd | Trailer | BodyEnd

# Decoder states: a size line, data, the CRLF after data, the CRLF ending a body
# without trailer, the trailer, the end.
_SIZE, _DATA, _DATA_CRLF, _END_CRLF, _TRAILER, _DONE = range(6)


class AwsChunkedDecoder:
    """``feed(data) -> events``; ``finish()`` once the body has ended (it raises if the
    framing did not). See the module docstring for the grammar."""

    __slots__ = ("_buf", "_error", "_left", "_max_chunk", "_signed", "_state", "_trailer")

    def __init__(self, signed: bool, trailer: bool, *, max_chunk: int = MAX_CHUNK) -> None:
        self._signed = signed
        self._trailer = trailer
        self._max_chunk = max_chunk
        self._state = _SIZE
        self._buf = bytearray()  # a partial size line, CRLF or trailer
        self._left = 0  # data bytes still to come in the current chunk
        self._error: ChunkedError | None = None

    def feed(self, data: bytes) -> list[Event]:
        if self._error is not None:
            raise self._error
        try:
            return self._feed(data)
        except ChunkedError as e:
            self._error = e
            raise

    def finish(self) -> None:
        if self._error is not None:
            raise self._error
        if self._state != _DONE:
            self._error = ChunkedError(
                "IncompleteBody", "The request body terminated unexpectedly."
            )
            raise self._error

    def _feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._left, end - pos)
                events.append(ChunkData(data if take == end else data[pos : pos + take]))
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _DATA_CRLF
            elif state in (_DATA_CRLF, _END_CRLF):
                want = 2 - len(self._buf)
                self._buf += data[pos : pos + want]
                pos += want
                if not CRLF.startswith(self._buf):
                    if state == _END_CRLF:
                        raise ChunkedError(
                            "InvalidRequest", "A trailer was sent but none was announced."
                        )
                    raise ChunkedError(
                        "IncompleteBody", "A chunk's data is not the size its header gives."
                    )
                if len(self._buf) == 2:
                    self._buf.clear()
                    if state == _END_CRLF:
                        events.append(BodyEnd())
                        self._state = _DONE
                    else:
                        events.append(ChunkEnd())
                        self._state = _SIZE
            elif state == _SIZE:
                pos = self._size_line(data, pos, events)
            elif state == _TRAILER:
                pos = self._trailer_part(data, pos, events)
            else:
                raise ChunkedError("InvalidRequest", "There is data after the end of the body.")
        return events

    def _line(self, data: bytes, pos: int, limit: int, code: str) -> tuple[bytes | None, int]:
        """Add bytes up to and including a LF to the buffer, which may hold ``limit`` bytes:
        (the buffer, the new pos) once it ends in LF, (None, len(data)) until then."""
        room = limit - len(self._buf)
        nl = data.find(b"\n", pos, pos + room)
        if nl < 0:
            if len(data) - pos >= room:
                raise ChunkedError(code, f"A line of the body is longer than {limit} bytes.")
            self._buf += data[pos:]
            return None, len(data)
        self._buf += data[pos : nl + 1]
        return bytes(self._buf), nl + 1

    def _size_line(self, data: bytes, pos: int, events: list[Event]) -> int:
        line, pos = self._line(data, pos, MAX_SIZE_LINE, "InvalidChunkSizeError")
        if line is None:
            return pos
        self._buf.clear()
        m = _SIZE_LINE.fullmatch(line[:-2]) if line.endswith(CRLF) else None
        if m is None:
            if b";" in line:
                raise ChunkedError("InvalidRequest", "A chunk extension is not a chunk-signature.")
            raise ChunkedError("InvalidChunkSizeError", "A chunk size line is malformed.")
        sig = m.group(2).decode("ascii") if m.group(2) else None
        if self._signed and sig is None:
            raise ChunkedError("InvalidRequest", "A chunk of a signed body has no signature.")
        if not self._signed and sig is not None:
            raise ChunkedError("InvalidRequest", "A chunk of an unsigned body is signed.")
        size = int(m.group(1), 16)
        if size > self._max_chunk:
            raise ChunkedError(
                "InvalidChunkSizeError", f"A chunk is larger than {self._max_chunk} bytes."
            )
        events.append(ChunkStart(size, sig))
        if size:
            self._left = size
            self._state = _DATA
        else:
            events.append(ChunkEnd())
            self._state = _TRAILER if self._trailer else _END_CRLF
        return pos

    def _trailer_part(self, data: bytes, pos: int, events: list[Event]) -> int:
        """Hold the trailer until its empty line, then check it whole."""
        while True:
            held, pos = self._line(data, pos, MAX_TRAILER, "InvalidRequest")
            if held is None:
                return pos
            if held[held.rfind(b"\n", 0, len(held) - 1) + 1 :] == CRLF:  # an empty line
                break
        block, self._buf = bytes(self._buf), bytearray()
        lines, signature = self._parse_trailer(block[:-2])
        events.append(Trailer(lines, trailer_bytes(lines), signature))
        events.append(BodyEnd())
        self._state = _DONE
        return pos

    def _parse_trailer(self, block: bytes) -> tuple[tuple[tuple[str, str], ...], str | None]:
        if block and not block.endswith(CRLF):
            raise ChunkedError("InvalidRequest", "A trailer line does not end in CRLF.")
        lines: list[tuple[str, str]] = []
        signature: str | None = None
        for raw in block.split(CRLF)[:-1] if block else ():
            m = _TRAILER_LINE.fullmatch(raw)
            if m is None or signature is not None:
                raise ChunkedError("InvalidRequest", "A trailer line is malformed.")
            name = m.group(1).decode("ascii").lower()
            value = m.group(2).decode("ascii")
            if name == _TRAILER_SIGNATURE:
                if not self._signed or not _HEX64.fullmatch(value):
                    raise ChunkedError("InvalidRequest", "The trailer signature is misplaced.")
                signature = value
            elif any(name == n for n, _ in lines):
                raise ChunkedError("InvalidRequest", f"The trailer {name} is repeated.")
            else:
                lines.append((name, value))
        if self._signed and self._trailer and signature is None:
            raise ChunkedError("InvalidRequest", "The trailer of a signed body is not signed.")
        return tuple(lines), signature


def trailer_bytes(lines: Iterable[tuple[str, str]]) -> bytes:
    """The trailing headers as their signature covers them: AWS's canonical headers,
    ``name:value\\n`` for each, names lower-cased, sorted by name (the AWS SDKs sign
    this form; clients send one checksum line, for which every form agrees)."""
    canon = sorted((n.lower(), v.strip()) for n, v in lines)
    return "".join(f"{n}:{v}\n" for n, v in canon).encode("ascii")


def encode_chunk_header(size: int, signature: str | None) -> bytes:
    """A chunk's size line; the caller sends the data and CRLF after it."""
    if size < 0 or (signature is not None and not _HEX64.fullmatch(signature)):
        raise ValueError("a chunk header needs a size >= 0 and a 64-hex-digit signature")
    ext = f";chunk-signature={signature}" if signature is not None else ""
    return f"{size:x}{ext}\r\n".encode("ascii")


def encode_final(
    signature: str | None,
    trailer_lines: Sequence[tuple[str, str]],
    trailer_signature: str | None,
) -> bytes:
    """The final chunk, the trailer (its signature line last) and the closing CRLF."""
    out = [encode_chunk_header(0, signature)]
    out += [f"{n}:{v}\r\n".encode("ascii") for n, v in trailer_lines]
    if trailer_signature is not None:
        if not _HEX64.fullmatch(trailer_signature):
            raise ValueError("a trailer signature is 64 hex digits")
        out.append(f"{_TRAILER_SIGNATURE}:{trailer_signature}\r\n".encode("ascii"))
    out.append(CRLF)
    return b"".join(out)
