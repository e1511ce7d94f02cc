"""SFTP version 3 (draft-ietf-secsh-filexfer-02, as OpenSSH's sftp-server speaks it): the
packets of a relayed SFTP channel, read both ways as they arrive.

Owns cutting each direction's bytes into packets (``uint32 length, byte type, body``),
bounding a packet at its length prefix before any of its body is buffered, and decoding
every version-3 packet, and the arguments of OpenSSH's extensions, into events:
``ClientReader`` reads what the client sends (INIT, then requests), ``ServerReader`` what
the server sends (VERSION, then responses); and ``status``, the packet the gateway answers
a request it blocked with (sftp_encode.py writes every other packet).
Does not pair requests with responses or follow handles (sftp_track.py does) and decides
nothing. Sans-IO: bytes in, events out; no I/O, clock or logging.

Rules (one state machine per reader):
- ClientReader: the first packet is INIT (version 3 or later: the server answers with the
  lower of its own and the client's, and OpenSSH's says 3); after it, requests only. A
  request before INIT, a second INIT, a server-only type or an unknown type raise.
- ServerReader: the first packet is VERSION 3, the only version decoded (a server that
  picks another is refused, not guessed at); after it, responses only.
- A length past the reader's ``limit`` or of 0 raises at the prefix; a field running past
  its packet's end raises; bytes after a packet's last field are ignored, as sftp-server
  ignores them. A stream that stops inside a packet is ``pending``, not an error.
- ATTRS flags outside version 3's (SIZE, UIDGID, PERMISSIONS, ACMODTIME, EXTENDED) raise:
  their fields would be read in a layout the peer did not mean. A handle is at most
  ``MAX_HANDLE`` bytes (the draft's bound).
- Wire data stays bytes (version 3 names no encoding for paths). WRITE and DATA payloads
  are ``memoryview`` slices of the read they arrived in (no copy) or of the packet put
  together from several reads (one copy): valid while the caller's read is.
- SYMLINK: the draft orders ``linkpath, targetpath``; OpenSSH (server and client, hence
  every client that talks to it) sends ``targetpath, linkpath``. ``path``/``path2`` are in
  wire order; sftp_track.py reads them in OpenSSH's.
- Only ``SftpError`` leaves this module on bad input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

__all__ = [
    "COPY_DATA",
    "EXTENSION_ARGS",
    "MAX_HANDLE",
    "MAX_PACKET",
    "REQUEST_ARGS",
    "SSH_FX_BAD_MESSAGE",
    "SSH_FX_CONNECTION_LOST",
    "SSH_FX_EOF",
    "SSH_FX_FAILURE",
    "SSH_FX_NO_CONNECTION",
    "SSH_FX_NO_SUCH_FILE",
    "SSH_FX_OK",
    "SSH_FX_OP_UNSUPPORTED",
    "SSH_FX_PERMISSION_DENIED",
    "VERSION",
    "AttrFlag",
    "Attrs",
    "ClientReader",
    "Init",
    "Name",
    "OpenFlag",
    "PacketType",
    "Request",
    "Response",
    "ServerReader",
    "SftpError",
    "Status",
    "Version",
    "status",
    "status_name",
]

VERSION = 3
# OpenSSH's sftp-server ends the session on a packet longer than SFTP_MAX_MSG_LENGTH
# (256 KiB, the length prefix excluded) and its client refuses longer ones too: the client
# moves at most 255 KiB per READ/WRITE (what the server's limits@openssh.com reply says:
# 1 KiB under that cap, for the header; 32 KiB before limits@openssh.com). The 1 KiB more
# is slack for peers that count the prefix in. asyncssh peers talking to each other go up
# to 4 MiB + 1 KiB (its MAX_SFTP_PACKET_LEN): a shell in front of such a server raises the
# reader's ``limit``. One packet per direction is all a reader ever buffers.
MAX_PACKET = 256 * 1024 + 1024
# draft-ietf-secsh-filexfer-02 §3: "handle strings MUST NOT be longer than 256 bytes".
MAX_HANDLE = 256


class SftpError(ValueError):
    """A peer sent what no SFTP version 3 peer sends (the message says what and where)."""


class PacketType(IntEnum):
    INIT = 1
    VERSION = 2
    OPEN = 3
    CLOSE = 4
    READ = 5
    WRITE = 6
    LSTAT = 7
    FSTAT = 8
    SETSTAT = 9
    FSETSTAT = 10
    OPENDIR = 11
    READDIR = 12
    REMOVE = 13
    MKDIR = 14
    RMDIR = 15
    REALPATH = 16
    STAT = 17
    RENAME = 18
    READLINK = 19
    SYMLINK = 20
    STATUS = 101
    HANDLE = 102
    DATA = 103
    NAME = 104
    ATTRS = 105
    EXTENDED = 200
    EXTENDED_REPLY = 201


class Status(IntEnum):
    OK = 0
    EOF = 1
    NO_SUCH_FILE = 2
    PERMISSION_DENIED = 3
    FAILURE = 4
    BAD_MESSAGE = 5
    NO_CONNECTION = 6
    CONNECTION_LOST = 7
    OP_UNSUPPORTED = 8


SSH_FX_OK = Status.OK
SSH_FX_EOF = Status.EOF
SSH_FX_NO_SUCH_FILE = Status.NO_SUCH_FILE
SSH_FX_PERMISSION_DENIED = Status.PERMISSION_DENIED
SSH_FX_FAILURE = Status.FAILURE
SSH_FX_BAD_MESSAGE = Status.BAD_MESSAGE
SSH_FX_NO_CONNECTION = Status.NO_CONNECTION
SSH_FX_CONNECTION_LOST = Status.CONNECTION_LOST
SSH_FX_OP_UNSUPPORTED = Status.OP_UNSUPPORTED


class OpenFlag(IntEnum):
    """OPEN's pflags (SSH_FXF_*)."""

    READ = 0x01
    WRITE = 0x02
    APPEND = 0x04
    CREAT = 0x08
    TRUNC = 0x10
    EXCL = 0x20


class AttrFlag(IntEnum):
    """ATTRS' flags (SSH_FILEXFER_ATTR_*): which fields follow."""

    SIZE = 0x1
    UIDGID = 0x2
    PERMISSIONS = 0x4
    ACMODTIME = 0x8
    EXTENDED = 0x80000000


_ATTR_KNOWN = 0x8000000F


def status_name(code: int) -> str:
    """``permission_denied`` for 3; ``status_<n>`` for a code version 3 does not define."""
    try:
        return Status(code).name.lower()
    except ValueError:
        return f"status_{code}"


@dataclass(frozen=True, slots=True)
class Attrs:
    size: int | None = None
    uid: int | None = None
    gid: int | None = None
    permissions: int | None = None
    atime: int | None = None
    mtime: int | None = None
    extended: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Name:
    """One entry of a NAME response."""

    filename: bytes
    longname: bytes
    attrs: Attrs


@dataclass(frozen=True, slots=True)
class Init:
    version: int
    extensions: tuple[tuple[bytes, bytes], ...] = ()
    end: int = field(default=0, compare=False)  # stream offset just past this packet


@dataclass(frozen=True, slots=True)
class Version:
    version: int
    extensions: tuple[tuple[bytes, bytes], ...] = ()
    end: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Request:
    """One client request; the fields its type carries are set, the others left default.

    ``path``/``path2``: the path arguments in wire order (RENAME, SYMLINK, the two-path
    extensions). ``handle``: the handle argument; ``handle2``/``offset2``: copy-data's
    destination. ``offset``/``length``: READ's (and copy-data's source range); WRITE's
    offset. ``name``: an EXTENDED request's extension name. ``data``: WRITE's payload, or
    the undecoded arguments of an extension this module does not read. ``end``: the
    client stream's offset just past this packet (to withhold a blocked request's bytes;
    not compared: two requests are equal whatever their place).
    """

    type: PacketType
    id: int
    path: bytes | None = None
    path2: bytes | None = None
    handle: bytes | None = None
    handle2: bytes | None = None
    offset: int = 0
    offset2: int = 0
    length: int = 0
    pflags: int = 0
    attrs: Attrs | None = None
    name: bytes | None = None
    data: bytes | memoryview | None = None
    end: int = field(default=0, compare=False)

    @property
    def data_len(self) -> int:
        return 0 if self.data is None else len(self.data)


@dataclass(frozen=True, slots=True)
class Response:
    """One server response: STATUS sets ``code``/``message``/``language``, HANDLE
    ``handle``, DATA and EXTENDED_REPLY ``data``, NAME ``names``, ATTRS ``attrs``."""

    type: PacketType
    id: int
    code: int = 0
    message: bytes = b""
    language: bytes = b""
    handle: bytes | None = None
    data: bytes | memoryview | None = None
    names: tuple[Name, ...] = ()
    attrs: Attrs | None = None
    end: int = field(default=0, compare=False)

    @property
    def data_len(self) -> int:
        return 0 if self.data is None else len(self.data)


# --- what each request carries after its id: (Request field, wire type) in wire order ------
# Wire types: "str" a string (copied to bytes), "handle" a string of at most MAX_HANDLE
# bytes, "data" a string left as a view, "rest" the packet's remaining bytes as a view,
# "u32"/"u64" integers, "attrs" an ATTRS block.
Args = tuple[tuple[str, str], ...]
_PATH: Args = (("path", "str"),)
_HANDLE: Args = (("handle", "handle"),)
_T = PacketType
REQUEST_ARGS: dict[PacketType, Args] = {
    _T.OPEN: (*_PATH, ("pflags", "u32"), ("attrs", "attrs")),
    _T.CLOSE: _HANDLE,
    _T.READ: (*_HANDLE, ("offset", "u64"), ("length", "u32")),
    _T.WRITE: (*_HANDLE, ("offset", "u64"), ("data", "data")),
    _T.LSTAT: _PATH,
    _T.FSTAT: _HANDLE,
    _T.SETSTAT: (*_PATH, ("attrs", "attrs")),
    _T.FSETSTAT: (*_HANDLE, ("attrs", "attrs")),
    _T.OPENDIR: _PATH,
    _T.READDIR: _HANDLE,
    _T.REMOVE: _PATH,
    _T.MKDIR: (*_PATH, ("attrs", "attrs")),
    _T.RMDIR: _PATH,
    _T.REALPATH: _PATH,
    _T.STAT: _PATH,
    _T.RENAME: (*_PATH, ("path2", "str")),
    _T.READLINK: _PATH,
    _T.SYMLINK: (*_PATH, ("path2", "str")),  # OpenSSH: target, then link (see the rules)
    _T.EXTENDED: (("name", "str"),),  # then EXTENSION_ARGS[name], or "rest" as ``data``
}
COPY_DATA = b"copy-data"
# OpenSSH's extensions (its PROTOCOL file, section 4) whose arguments are read; any other
# extension is its name, and its arguments are left undecoded in ``data``.
EXTENSION_ARGS: dict[bytes, Args] = {
    b"posix-rename@openssh.com": (*_PATH, ("path2", "str")),
    b"hardlink@openssh.com": (*_PATH, ("path2", "str")),
    b"statvfs@openssh.com": _PATH,
    b"expand-path@openssh.com": _PATH,
    b"fstatvfs@openssh.com": _HANDLE,
    b"fsync@openssh.com": _HANDLE,
    b"lsetstat@openssh.com": (*_PATH, ("attrs", "attrs")),
    COPY_DATA: (
        *_HANDLE,
        ("offset", "u64"),
        ("length", "u64"),
        ("handle2", "handle"),
        ("offset2", "u64"),
    ),
}
_REST: Args = (("data", "rest"),)
_RESPONSES = frozenset({_T.STATUS, _T.HANDLE, _T.DATA, _T.NAME, _T.ATTRS, _T.EXTENDED_REPLY})
_FROM_CLIENT = frozenset(_T) - _RESPONSES - {_T.VERSION}
_FROM_SERVER = _RESPONSES | {_T.VERSION}
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_STATUS_HEAD = struct.Struct(">IBIII")  # length, type, id, code, message length


class _In:
    """A cursor over one packet's fields; ``what`` names the packet in error messages."""

    __slots__ = ("end", "pos", "v", "what")

    def __init__(self, v: memoryview, what: str) -> None:
        self.v, self.pos, self.end, self.what = v, 1, len(v), what

    def _short(self, label: str, need: int) -> SftpError:
        left = self.end - self.pos
        return SftpError(f"{self.what} packet ends inside its {label} ({need} > {left} bytes)")

    def u32(self, label: str) -> int:
        if self.end - self.pos < 4:
            raise self._short(label, 4)
        (n,) = _U32.unpack_from(self.v, self.pos)
        self.pos += 4
        return int(n)

    def u64(self, label: str) -> int:
        if self.end - self.pos < 8:
            raise self._short(label, 8)
        (n,) = _U64.unpack_from(self.v, self.pos)
        self.pos += 8
        return int(n)

    def view(self, label: str) -> memoryview:
        n = self.u32(label)
        if self.end - self.pos < n:
            raise self._short(label, n)
        p = self.pos
        self.pos = p + n
        return self.v[p : p + n]

    def string(self, label: str) -> bytes:
        return bytes(self.view(label))

    def handle(self) -> bytes:
        h = self.view("handle")
        if len(h) > MAX_HANDLE:
            raise SftpError(f"{self.what} packet has a {len(h)}-byte handle (max {MAX_HANDLE})")
        return bytes(h)

    def rest(self) -> memoryview:
        p, self.pos = self.pos, self.end
        return self.v[p:]

    def read(self, label: str, kind: str) -> Any:
        """One label of ``kind`` (a wire type of ``REQUEST_ARGS``)."""
        if kind == "str":
            return self.string(label)
        if kind == "handle":
            return self.handle()
        if kind == "u32":
            return self.u32(label)
        if kind == "u64":
            return self.u64(label)
        if kind == "data":
            return self.view(label)
        if kind == "attrs":
            return self.attrs()
        assert kind == "rest"
        return self.rest()

    def pairs(self, label: str, count: int) -> tuple[tuple[bytes, bytes], ...]:
        if count > (self.end - self.pos) // 8:  # each pair is at least two empty strings
            raise SftpError(f"{self.what} packet claims {count} {label}, more than it holds")
        return tuple((self.string(label), self.string(label)) for _ in range(count))

    def attrs(self) -> Attrs:
        flags = self.u32("attrs flags")
        if flags & ~_ATTR_KNOWN:
            raise SftpError(f"{self.what} packet has attrs flags {flags:#x} beyond version 3's")
        size = self.u64("size") if flags & AttrFlag.SIZE else None
        uid = gid = perm = atime = mtime = None
        if flags & AttrFlag.UIDGID:
            uid, gid = self.u32("uid"), self.u32("gid")
        if flags & AttrFlag.PERMISSIONS:
            perm = self.u32("permissions")
        if flags & AttrFlag.ACMODTIME:
            atime, mtime = self.u32("atime"), self.u32("mtime")
        ext = self.pairs("extended attrs", self.u32("extended count")) if flags >> 31 else ()
        return Attrs(size, uid, gid, perm, atime, mtime, ext)


class _Packets:
    """Cuts one direction into packets (the bytes after each length prefix), as the Kafka
    FrameReader does: a packet inside one read is a slice of it, one spanning reads is
    assembled once."""

    __slots__ = ("_buf", "_need", "consumed", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.consumed = 0  # stream offset past the last whole packet
        self._buf = bytearray()
        self._need = -1  # length of the packet being assembled; -1: reading its prefix

    @property
    def pending(self) -> int:
        """Bytes held of a packet not complete yet (its prefix included)."""
        return len(self._buf) + (4 if self._need >= 0 else 0)

    def _cut(self, data: bytes | memoryview) -> list[tuple[memoryview, int]]:
        out: list[tuple[memoryview, int]] = []
        view = memoryview(data)
        pos, end = 0, len(view)
        buf = self._buf
        if buf or self._need >= 0:
            if self._need < 0:
                take = min(4 - len(buf), end)
                buf += view[:take]
                pos = take
                if len(buf) < 4:
                    return out
                self._need = self._length(buf)
                buf.clear()
            take = min(self._need - len(buf), end - pos)
            buf += view[pos : pos + take]
            pos += take
            if len(buf) < self._need:
                return out
            self.consumed += 4 + self._need
            out.append((memoryview(bytes(buf)), self.consumed))
            buf.clear()
            self._need = -1
        while pos < end:
            if end - pos < 4:
                buf += view[pos:end]
                return out
            size = self._length(view[pos : pos + 4])
            pos += 4
            if end - pos < size:
                self._need = size
                buf += view[pos:end]
                return out
            self.consumed += 4 + size
            out.append((view[pos : pos + size], self.consumed))
            pos += size
        return out

    def _length(self, prefix: bytes | bytearray | memoryview) -> int:
        (size,) = _U32.unpack_from(prefix)
        if size == 0 or size > self.limit:
            raise SftpError(f"SFTP packet length {size} is outside 1..{self.limit}")
        return int(size)


def _type(p: memoryview, allowed: frozenset[PacketType], direction: str) -> PacketType:
    try:
        t = PacketType(p[0])
    except ValueError:
        raise SftpError(f"unknown SFTP packet type {p[0]} from the {direction}") from None
    if t not in allowed:
        raise SftpError(f"SFTP {t.name} cannot come from the {direction}")
    return t


class ClientReader:
    """The client's direction: ``feed(read)`` returns ``Init``/``Request`` events."""

    __slots__ = ("_inited", "_p")

    def __init__(self, limit: int = MAX_PACKET) -> None:
        self._p = _Packets(limit)
        self._inited = False

    @property
    def pending(self) -> int:
        return self._p.pending

    def feed(self, data: bytes | memoryview) -> list[Init | Request]:
        out: list[Init | Request] = []
        for p, end in self._p._cut(data):
            t = _type(p, _FROM_CLIENT, "client")
            if t is _T.INIT:
                if self._inited:
                    raise SftpError("the client sent a second SFTP INIT")
                r = _In(p, "INIT")
                version = r.u32("version")
                if version < VERSION:
                    raise SftpError(f"the client asked for SFTP version {version} (3 is read)")
                self._inited = True
                out.append(Init(version, _ext_pairs(r), end))
            elif not self._inited:
                raise SftpError(f"the client sent SFTP {t.name} before INIT")
            else:
                out.append(_request(t, _In(p, t.name), end))
        return out


class ServerReader:
    """The server's direction: ``feed(read)`` returns ``Version``/``Response`` events."""

    __slots__ = ("_p", "_versioned")

    def __init__(self, limit: int = MAX_PACKET) -> None:
        self._p = _Packets(limit)
        self._versioned = False

    @property
    def pending(self) -> int:
        return self._p.pending

    def feed(self, data: bytes | memoryview) -> list[Version | Response]:
        out: list[Version | Response] = []
        for p, end in self._p._cut(data):
            t = _type(p, _FROM_SERVER, "server")
            if t is _T.VERSION:
                if self._versioned:
                    raise SftpError("the server sent a second SFTP VERSION")
                r = _In(p, "VERSION")
                version = r.u32("version")
                if version != VERSION:
                    raise SftpError(f"the server chose SFTP version {version} (3 is read)")
                self._versioned = True
                out.append(Version(version, _ext_pairs(r), end))
            elif not self._versioned:
                raise SftpError(f"the server sent SFTP {t.name} before VERSION")
            else:
                out.append(_response(t, _In(p, t.name), end))
        return out


def _ext_pairs(r: _In) -> tuple[tuple[bytes, bytes], ...]:
    out: list[tuple[bytes, bytes]] = []
    while r.pos < r.end:
        out.append((r.string("extension name"), r.string("extension data")))
    return tuple(out)


def _request(t: PacketType, r: _In, end: int) -> Request:
    rid = r.u32("id")
    args: dict[str, Any] = {}
    for name, kind in REQUEST_ARGS[t]:
        args[name] = r.read(name, kind)
    if t is _T.EXTENDED:
        for name, kind in EXTENSION_ARGS.get(args["name"], _REST):
            args[name] = r.read(name, kind)
    return Request(t, rid, end=end, **args)


def _response(t: PacketType, r: _In, end: int) -> Response:
    rid = r.u32("id")
    if t is _T.STATUS:
        code = r.u32("status code")
        # The draft has both strings; some early servers sent the code alone.
        msg = r.string("message") if r.pos < r.end else b""
        lang = r.string("language tag") if r.pos < r.end else b""
        return Response(t, rid, code=code, message=msg, language=lang, end=end)
    if t is _T.HANDLE:
        return Response(t, rid, handle=r.handle(), end=end)
    if t is _T.DATA:
        return Response(t, rid, data=r.view("data"), end=end)
    if t is _T.NAME:
        count = r.u32("name count")
        if count > (r.end - r.pos) // 12:  # filename, longname, attrs flags at least
            raise SftpError(f"NAME packet claims {count} names, more than it holds")
        names = tuple(
            Name(r.string("filename"), r.string("longname"), r.attrs()) for _ in range(count)
        )
        return Response(t, rid, names=names, end=end)
    if t is _T.ATTRS:
        return Response(t, rid, attrs=r.attrs(), end=end)
    assert t is _T.EXTENDED_REPLY
    return Response(t, rid, data=r.rest(), end=end)


def status(id: int, code: int, message: str = "", language: str = "en") -> bytes:
    """A STATUS packet: what the gateway answers a request it did not pass on with
    (``status(id, SSH_FX_PERMISSION_DENIED, "denied by policy")``). The message is UTF-8,
    as the draft asks, and reaches the user: it must not hold anything secret."""
    msg, lang = message.encode("utf-8"), language.encode("ascii")
    body = _STATUS_HEAD.pack(len(msg) + len(lang) + 17, _T.STATUS, id, code, len(msg))
    return body + msg + _U32.pack(len(lang)) + lang
