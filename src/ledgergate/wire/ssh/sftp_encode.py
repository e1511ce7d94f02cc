"""SFTP version 3 packets written: every packet sftp.py reads, from the same events.

Owns the inverse of sftp.py's readers: ``encode_request`` writes a ``Request`` from the
same table of arguments (``REQUEST_ARGS``, ``EXTENSION_ARGS``) the reader reads it with,
``encode_response`` a ``Response``, and INIT, VERSION and ATTRS. ``decode(encode(x)) ==
x`` for every event a reader can produce; the tests hold both sides to that and to bytes
written by hand and by OpenSSH. The gateway's own answer to a blocked request is
``sftp.status``; these are for the tests, and for a shell that must write a request.
Must not check what an event means (an id, a handle, a path): it writes what it is given.
Pure: no I/O.
"""

from __future__ import annotations

import struct

from ledgergate.wire.ssh.sftp import (
    EXTENSION_ARGS,
    REQUEST_ARGS,
    AttrFlag,
    Attrs,
    PacketType,
    Request,
    Response,
)

__all__ = ["encode_attrs", "encode_init", "encode_request", "encode_response", "encode_version"]

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
Extensions = tuple[tuple[bytes, bytes], ...]


def _s(b: bytes | memoryview) -> bytes:
    return _U32.pack(len(b)) + bytes(b)


def _packet(t: int, body: bytes) -> bytes:
    return _U32.pack(len(body) + 1) + bytes((t,)) + body


def encode_attrs(a: Attrs) -> bytes:
    """ATTRS with a flag for every field set; ``uid``/``gid`` and ``atime``/``mtime`` go in
    pairs (one of a pair alone is written with the other as 0)."""
    flags, out = 0, b""
    if a.size is not None:
        flags, out = flags | AttrFlag.SIZE, out + _U64.pack(a.size)
    if a.uid is not None or a.gid is not None:
        flags, out = flags | AttrFlag.UIDGID, out + _U32.pack(a.uid or 0) + _U32.pack(a.gid or 0)
    if a.permissions is not None:
        flags, out = flags | AttrFlag.PERMISSIONS, out + _U32.pack(a.permissions)
    if a.atime is not None or a.mtime is not None:
        times = _U32.pack(a.atime or 0) + _U32.pack(a.mtime or 0)
        flags, out = flags | AttrFlag.ACMODTIME, out + times
    if a.extended:
        flags, out = flags | AttrFlag.EXTENDED, out + _U32.pack(len(a.extended))
        out += _pairs(a.extended)
    return _U32.pack(flags) + out


def _pairs(ext: Extensions) -> bytes:
    return b"".join(_s(k) + _s(v) for k, v in ext)


def encode_init(version: int = 3, extensions: Extensions = ()) -> bytes:
    return _packet(PacketType.INIT, _U32.pack(version) + _pairs(extensions))


def encode_version(version: int = 3, extensions: Extensions = ()) -> bytes:
    return _packet(PacketType.VERSION, _U32.pack(version) + _pairs(extensions))


def _field(q: Request, field: str, kind: str) -> bytes:
    value = getattr(q, field)
    if kind in ("str", "handle", "data"):
        return _s(value if value is not None else b"")
    if kind == "u32":
        return _U32.pack(value)
    if kind == "u64":
        return _U64.pack(value)
    if kind == "attrs":
        return encode_attrs(value if value is not None else Attrs())
    assert kind == "rest"
    return bytes(value if value is not None else b"")


def encode_request(q: Request) -> bytes:
    """The packet of ``q``: its id, then the fields its type carries, in wire order."""
    if q.type not in REQUEST_ARGS:
        raise ValueError(f"{q.type.name} is not a request")
    args = REQUEST_ARGS[q.type]
    if q.type is PacketType.EXTENDED:
        args = (*args, *EXTENSION_ARGS.get(q.name or b"", (("data", "rest"),)))
    body = _U32.pack(q.id) + b"".join(_field(q, f, k) for f, k in args)
    return _packet(q.type, body)


def encode_response(p: Response) -> bytes:
    """The packet of ``p``: its id, then the fields its type carries."""
    t, b = p.type, _U32.pack(p.id)
    if t is PacketType.STATUS:
        b += _U32.pack(p.code) + _s(p.message) + _s(p.language)
    elif t is PacketType.HANDLE:
        b += _s(p.handle or b"")
    elif t is PacketType.DATA:
        b += _s(p.data if p.data is not None else b"")
    elif t is PacketType.NAME:
        b += _U32.pack(len(p.names))
        b += b"".join(_s(n.filename) + _s(n.longname) + encode_attrs(n.attrs) for n in p.names)
    elif t is PacketType.ATTRS:
        b += encode_attrs(p.attrs or Attrs())
    elif t is PacketType.EXTENDED_REPLY:
        b += bytes(p.data if p.data is not None else b"")
    else:
        raise ValueError(f"{t.name} is not a response")
    return _packet(t, b)
