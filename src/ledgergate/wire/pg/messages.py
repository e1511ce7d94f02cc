"""PostgreSQL v3 messages the gateway builds or reads: encoders and small decoders.

Owns the body layout of the messages ledgergate itself speaks (startup packets,
authentication, errors, BackendKeyData, ReadyForQuery) and the decoders for messages
whose content policy needs (Query, Parse, Bind, FunctionCall, ErrorResponse).
Sans-IO and allocation-light; never called per DataRow.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ledgergate.wire.pg.frames import MAX_STARTUP, FrameError, build, cstr, read_cstr

__all__ = [
    "PROTOCOL_3_0",
    "BindInfo",
    "CancelRequest",
    "GssEncRequest",
    "ParseInfo",
    "SslRequest",
    "StartupMessage",
    "auth_cleartext",
    "auth_ok",
    "backend_key_data",
    "cancel_request",
    "error_response",
    "notice_response",
    "parse_bind",
    "parse_error_fields",
    "parse_parse",
    "parse_query",
    "parse_startup_packet",
    "ready_for_query",
    "ssl_request",
    "startup_message",
]

PROTOCOL_3_0 = 196608  # (3 << 16) | 0
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

_II = struct.Struct("!II")
_H = struct.Struct("!H")
_i = struct.Struct("!i")


# --- untyped startup-phase packets (client -> server) -------------------------------


@dataclass(frozen=True, slots=True)
class SslRequest:
    pass


@dataclass(frozen=True, slots=True)
class GssEncRequest:
    pass


@dataclass(frozen=True, slots=True)
class CancelRequest:
    pid: int
    secret: bytes


@dataclass(frozen=True, slots=True)
class StartupMessage:
    version: int
    params: tuple[tuple[bytes, bytes], ...]

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        for k, v in self.params:
            if k == key:
                return v
        return default

    @property
    def major(self) -> int:
        return self.version >> 16

    @property
    def minor(self) -> int:
        return self.version & 0xFFFF


StartupPacket = SslRequest | GssEncRequest | CancelRequest | StartupMessage


def parse_startup_packet(packet: bytes) -> StartupPacket:
    """Decode one whole untyped packet (length prefix included)."""
    if len(packet) < 8:
        raise FrameError("startup packet too short")
    length, code = _II.unpack_from(packet, 0)
    if length != len(packet) or length > MAX_STARTUP:
        raise FrameError("invalid startup packet length")
    if code == SSL_REQUEST_CODE:
        if length != 8:
            raise FrameError("invalid SSLRequest")
        return SslRequest()
    if code == GSSENC_REQUEST_CODE:
        if length != 8:
            raise FrameError("invalid GSSENCRequest")
        return GssEncRequest()
    if code == CANCEL_REQUEST_CODE:
        # Protocol 3.0 uses a 4-byte secret; 3.2 allows up to 256 bytes.
        if length < 16 or length > 8 + 4 + 256:
            raise FrameError("invalid CancelRequest")
        (pid,) = struct.unpack_from("!I", packet, 8)
        return CancelRequest(pid, bytes(packet[12:]))
    if code >> 16 != 3:
        raise FrameError(
            f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: "
            "ledgergate speaks protocol 3"
        )
    params: list[tuple[bytes, bytes]] = []
    pos = 8
    while True:
        if pos >= length:
            raise FrameError("startup packet is not terminated")
        if packet[pos] == 0:
            if pos != length - 1:
                raise FrameError("trailing bytes after startup parameters")
            break
        key, pos = read_cstr(packet, pos)
        value, pos = read_cstr(packet, pos)
        params.append((key, value))
    return StartupMessage(code, tuple(params))


def ssl_request() -> bytes:
    return _II.pack(8, SSL_REQUEST_CODE)


def cancel_request(pid: int, secret: bytes) -> bytes:
    return _II.pack(12 + len(secret), CANCEL_REQUEST_CODE) + struct.pack("!I", pid) + secret


def startup_message(version: int, params: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(k + b"\x00" + v + b"\x00" for k, v in params) + b"\x00"
    return _II.pack(8 + len(body), version) + body


# --- server -> client ---------------------------------------------------------------


def auth_ok() -> bytes:
    return build(b"R", _i.pack(0))


def auth_cleartext() -> bytes:
    return build(b"R", _i.pack(3))


def backend_key_data(pid: int, secret: bytes) -> bytes:
    return build(b"K", struct.pack("!I", pid) + secret)


def ready_for_query(status: bytes = b"I") -> bytes:
    return build(b"Z", status)


def _fields(severity: str, code: str, message: str, detail: str | None, hint: str | None) -> bytes:
    body = b"S" + cstr(severity) + b"V" + cstr(severity) + b"C" + cstr(code) + b"M" + cstr(message)
    if detail:
        body += b"D" + cstr(detail)
    if hint:
        body += b"H" + cstr(hint)
    return body + b"\x00"


def error_response(
    code: str,
    message: str,
    *,
    severity: str = "FATAL",
    detail: str | None = None,
    hint: str | None = None,
) -> bytes:
    """An ErrorResponse ('E'). Messages come from ledgergate's own text, never a secret."""
    return build(b"E", _fields(severity, code, message.replace("\x00", ""), detail, hint))


def notice_response(message: str, *, code: str = "00000", severity: str = "NOTICE") -> bytes:
    return build(b"N", _fields(severity, code, message.replace("\x00", ""), None, None))


def parse_error_fields(body: bytes) -> dict[str, str]:
    """Fields of an ErrorResponse/NoticeResponse body keyed by their one-letter code."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(body) and body[pos] != 0:
        code = chr(body[pos])
        value, pos = read_cstr(body, pos + 1)
        out[code] = value.decode("utf-8", "replace")
    return out


# --- client -> server messages whose content the ledger records ----------------------


def parse_query(body: bytes) -> bytes:
    """Query ('Q'): the SQL text without its NUL."""
    if not body or body.find(b"\x00") != len(body) - 1:
        # PostgreSQL reads up to the first NUL and refuses bytes after it.
        raise FrameError("Query message is not one NUL-terminated string")
    return body[:-1]


@dataclass(frozen=True, slots=True)
class ParseInfo:
    statement: bytes
    query: bytes
    param_types: tuple[int, ...]


def parse_parse(body: bytes) -> ParseInfo:
    name, pos = read_cstr(body, 0)
    query, pos = read_cstr(body, pos)
    if pos + 2 > len(body):
        raise FrameError("truncated Parse message")
    (n,) = _H.unpack_from(body, pos)
    pos += 2
    if pos + 4 * n != len(body):
        raise FrameError("invalid Parse message")
    types = struct.unpack_from(f"!{n}I", body, pos) if n else ()
    return ParseInfo(name, query, tuple(types))


@dataclass(frozen=True, slots=True)
class BindInfo:
    portal: bytes
    statement: bytes
    formats: tuple[int, ...]
    params: tuple[bytes | None, ...]

    def param_format(self, i: int) -> int:
        if not self.formats:
            return 0
        return self.formats[0] if len(self.formats) == 1 else self.formats[i]


def parse_bind(body: bytes) -> BindInfo:
    portal, pos = read_cstr(body, 0)
    statement, pos = read_cstr(body, pos)
    try:
        (nf,) = _H.unpack_from(body, pos)
        pos += 2
        formats = struct.unpack_from(f"!{nf}H", body, pos) if nf else ()
        pos += 2 * nf
        (np_,) = _H.unpack_from(body, pos)
        pos += 2
        params: list[bytes | None] = []
        for _ in range(np_):
            (ln,) = _i.unpack_from(body, pos)
            pos += 4
            if ln == -1:
                params.append(None)
                continue
            if ln < 0 or pos + ln > len(body):
                raise FrameError("invalid Bind parameter length")
            params.append(body[pos : pos + ln])
            pos += ln
    except struct.error:
        raise FrameError("truncated Bind message") from None
    if nf not in (0, 1, np_):
        raise FrameError("Bind has a parameter format count that matches no parameter count")
    return BindInfo(portal, statement, tuple(formats), tuple(params))
