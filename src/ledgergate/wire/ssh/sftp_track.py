"""SFTP operations as the ledger records them: requests paired with their responses,
handles followed back to their paths, and each file's bytes hashed in offset order.

Owns, on top of sftp.py's two readers, the table of outstanding requests (by id), the
handle table (handle → the path OPEN or OPENDIR named), and for each open file the
SHA-256 of what was written through it (WRITE payloads) and read through it (DATA
answering its READs). ``SftpTracker.client(read)`` and ``.server(read)`` return operation
events; ``drop(id)`` forgets a request the gateway answered itself (``sftp.status``);
``finish()`` settles what is left when the channel ends. Decides nothing (policy does, on
``OpStarted``) and forwards nothing (the shell relays the bytes). Sans-IO: bytes in,
events out; no I/O, clock or logging.

Rules:
- The shell feeds each direction's bytes before it forwards them, so a HANDLE is tracked
  before the client can name it. A request naming a handle the tracker does not know is
  recorded with ``path`` None and the handle (hex) in ``detail["handle"]``: the server
  refuses it.
- A request id may not be reused while outstanding; a response must answer an outstanding
  request, with a type that request can get (HANDLE for OPEN/OPENDIR, DATA for READ, NAME
  for READDIR/REALPATH/READLINK, ATTRS for the stats, STATUS for any; an extension
  STATUS, EXTENDED_REPLY, NAME or ATTRS); DATA no longer than its READ asked; a HANDLE not
  already open. More than ``max_outstanding`` requests in flight or ``max_handles`` open
  handles: ``SftpError``, like every violation.
- A file's bytes are hashed in offset order from 0 (requests are pipelined and answers
  may come in any order). Pieces ahead of a gap are held, copied, until the gap fills, up
  to ``max_held`` for all files together and ``MAX_HELD_PIECES`` per file and direction.
  A piece overlapping what was hashed or held, a gap still open at CLOSE, a piece past
  those bounds, a request on the file still in flight at CLOSE, a failed or dropped
  WRITE, copy-data into the file or FSETSTAT to another size: the file stops being hashed
  and its ``FileClosed`` says ``sequential=False`` with both digests None. A digest is
  never of anything but the bytes moved, in order, from 0.
- ``sha256_written`` is of the bytes written through the handle: the file's content when
  its mode has ``truncate`` (or ``create,excl``), or when FSETSTAT then sets the size to
  exactly what was written (as scp does), else only what was written over it.
- Paths and messages are text: UTF-8 with bytes that are not UTF-8 as ``\\xNN`` (the
  ledger's canonical JSON refuses lone surrogates). SYMLINK is read in OpenSSH's order
  (target first, then the link): ``path`` is the link created, ``path2`` its target.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Literal

from ledgergate.wire.ssh.sftp import (
    COPY_DATA,
    MAX_PACKET,
    Attrs,
    ClientReader,
    Init,
    OpenFlag,
    PacketType,
    Request,
    ServerReader,
    SftpError,
    Status,
    Version,
    status_name,
)

__all__ = [
    "MAX_HANDLES",
    "MAX_HELD",
    "MAX_HELD_PIECES",
    "MAX_OUTSTANDING",
    "Data",
    "Event",
    "FileClosed",
    "OpDone",
    "OpStarted",
    "SftpTracker",
    "open_mode",
]

# OpenSSH's sftp keeps 64 requests in flight (its -R), asyncssh 128, sftp builds tuned for
# long fat links 1024: twice the largest, each a small record.
MAX_OUTSTANDING = 2048
# OpenSSH's sftp-server holds no more files open than its descriptor limit allows (1024
# by default on Linux; limits@openssh.com reports a little under it).
MAX_HANDLES = 1024
# Bytes held ahead of a gap, all files together: OpenSSH's window is 64 requests of at
# most 255 KiB (16 MiB), asyncssh's 16 of 4 MiB (64 MiB). A transfer reordered past that
# is reported not sequential rather than buffered further.
MAX_HELD = 64 * 1024 * 1024
# What a held piece's bookkeeping costs, counted against MAX_HELD with its bytes: a stream
# of one-byte pieces cannot pile up millions of entries under the byte bound.
PIECE_COST = 256
# Pieces held ahead of a gap in one direction of one file. Those of a real transfer come
# from one window of requests (64 for OpenSSH, 1024 at most above); the bound also keeps
# each insertion into the sorted offsets cheap.
MAX_HELD_PIECES = 1024

PATH_ENCODING = "utf-8"
PATH_ERRORS = "backslashreplace"

_T = PacketType
_OPS = {t: t.name.lower() for t in _T if t < _T.STATUS and t > _T.VERSION}
_MODIFY = frozenset({_T.WRITE, _T.REMOVE, _T.RENAME, _T.MKDIR, _T.RMDIR, _T.SETSTAT})
_MODIFY |= {_T.FSETSTAT, _T.SYMLINK}
# Extensions that change nothing on the server; any other, known or not, may.
_EXT_READ_ONLY = frozenset(
    b"statvfs@openssh.com fstatvfs@openssh.com fsync@openssh.com expand-path@openssh.com "
    b"limits@openssh.com home-directory users-groups-by-id@openssh.com".split()
)
_OPEN_WRITES = OpenFlag.WRITE | OpenFlag.APPEND | OpenFlag.CREAT | OpenFlag.TRUNC
_MODE_NAMES = (
    (OpenFlag.READ, "read"),
    (OpenFlag.WRITE, "write"),
    (OpenFlag.APPEND, "append"),
    (OpenFlag.CREAT, "create"),
    (OpenFlag.TRUNC, "truncate"),
    (OpenFlag.EXCL, "excl"),
)
_STATUS_ONLY = frozenset({_T.STATUS})
_REPLIES = {
    _T.OPEN: frozenset({_T.STATUS, _T.HANDLE}),
    _T.OPENDIR: frozenset({_T.STATUS, _T.HANDLE}),
    _T.READ: frozenset({_T.STATUS, _T.DATA}),
    **dict.fromkeys((_T.READDIR, _T.REALPATH, _T.READLINK), frozenset({_T.STATUS, _T.NAME})),
    **dict.fromkeys((_T.STAT, _T.LSTAT, _T.FSTAT), frozenset({_T.STATUS, _T.ATTRS})),
    _T.EXTENDED: frozenset({_T.STATUS, _T.EXTENDED_REPLY, _T.NAME, _T.ATTRS}),
}


@dataclass(frozen=True, slots=True)
class OpStarted:
    """A request arrived. ``detail``: OPEN's ``mode`` and ``pflags``, READ/WRITE's
    ``offset`` and ``length``, the attributes a request sets, copy-data's ranges.
    ``modifies``: the operation may change the server's files (fail closed: an unknown
    extension may). ``start``/``end``: the client stream's offsets of the request's
    packet (a shell that refuses it leaves exactly those bytes out)."""

    id: int
    op: str
    path: str | None
    path2: str | None = None
    detail: dict[str, str | int] = field(default_factory=dict)
    modifies: bool = False
    end: int = field(default=0, compare=False)
    start: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class OpDone:
    """Its response arrived (or the gateway answered it: ``drop``). ``outcome`` is "ok" or
    the status's name (``permission_denied``, ``no_such_file``, ``eof``); ``names``: a
    NAME response's file names (a listing, a resolved path)."""

    id: int
    op: str
    path: str | None
    outcome: str
    status_code: int
    message: str = ""
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Data:
    """A WRITE's payload (``direction`` "write") or a DATA response's (``read``), at
    ``offset`` of ``path``; a view of the caller's read: use it before the next feed."""

    id: int
    path: str | None
    direction: Literal["write", "read"]
    offset: int
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class FileClosed:
    """A handle OPEN gave was closed (or the channel ended: ``connection_lost``). A digest
    is the hex SHA-256 of the bytes moved that way; None for a direction the mode does not
    have and nothing moved, and both None when ``sequential`` is False."""

    path: str
    mode: str
    bytes_read: int
    bytes_written: int
    sha256_read: str | None
    sha256_written: str | None
    outcome: str
    sequential: bool


Event = OpStarted | OpDone | Data | FileClosed


def open_mode(pflags: int) -> str:
    """``read,write,create,truncate`` for OPEN's pflags (bits version 3 lacks left out)."""
    return ",".join(name for bit, name in _MODE_NAMES if pflags & bit)


def _text(b: bytes) -> str:
    return b.decode(PATH_ENCODING, PATH_ERRORS)


class _Digest:
    """One direction of one file, hashed in offset order; ``sha`` None once it stops."""

    __slots__ = ("cost", "held", "next", "sha", "starts")

    def __init__(self) -> None:
        self.sha: hashlib._Hash | None = hashlib.sha256()
        self.next = 0  # the offset the next hashed byte must have
        self.held: dict[int, bytes] = {}  # pieces ahead of a gap, by offset
        self.starts: list[int] = []  # their offsets, sorted
        self.cost = 0  # what they count against the tracker's bound

    @property
    def intact(self) -> bool:
        return self.sha is not None and not self.starts

    def stop(self) -> None:
        self.sha = None
        self.held.clear()
        self.starts.clear()
        self.cost = 0

    def add(self, offset: int, data: bytes | memoryview, room: int) -> None:
        sha, n, starts = self.sha, len(data), self.starts
        if sha is None or n == 0:
            return
        if offset == self.next:
            if starts and offset + n > starts[0]:
                return self.stop()
            sha.update(data)
            self.next += n
            while starts and starts[0] == self.next:
                piece = self.held.pop(starts.pop(0))  # at most MAX_HELD_PIECES long
                sha.update(piece)
                self.next += len(piece)
                self.cost -= len(piece) + PIECE_COST
            return None
        i = bisect_left(starts, offset)
        if (
            offset < self.next
            or n + PIECE_COST > room
            or len(starts) >= MAX_HELD_PIECES
            or (i < len(starts) and offset + n > starts[i])
            or (i and starts[i - 1] + len(self.held[starts[i - 1]]) > offset)
        ):
            return self.stop()
        starts.insert(i, offset)
        self.held[offset] = bytes(data)
        self.cost += n + PIECE_COST
        return None


class _File:
    __slots__ = (
        "bytes_read",
        "bytes_written",
        "inflight",
        "is_dir",
        "path",
        "pflags",
        "read",
        "write",
    )

    def __init__(self, path: str, pflags: int, is_dir: bool) -> None:
        self.path, self.pflags, self.is_dir = path, pflags, is_dir
        self.read, self.write = _Digest(), _Digest()
        self.bytes_read = self.bytes_written = 0
        self.inflight = 0  # its requests not answered yet


@dataclass(slots=True)
class _Pending:
    type: PacketType
    op: str
    path: str | None
    file: _File | None
    handle: bytes | None
    pflags: int
    offset: int
    length: int


class SftpTracker:
    """Feed it both directions of one SFTP channel; take operation events."""

    __slots__ = (
        "_client",
        "_client_end",
        "_handles",
        "_held",
        "_pending",
        "_server",
        "max_handles",
        "max_held",
        "max_outstanding",
    )

    def __init__(
        self,
        *,
        limit: int = MAX_PACKET,
        max_outstanding: int = MAX_OUTSTANDING,
        max_handles: int = MAX_HANDLES,
        max_held: int = MAX_HELD,
    ) -> None:
        self._client, self._server = ClientReader(limit), ServerReader(limit)
        self.max_outstanding = max_outstanding
        self.max_handles = max_handles
        self.max_held = max_held
        self._pending: dict[int, _Pending] = {}
        self._handles: dict[bytes, _File] = {}
        self._held = 0
        self._client_end = 0  # the client stream's offset past its last whole packet

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    @property
    def open_handles(self) -> int:
        return len(self._handles)

    @property
    def held(self) -> int:
        """What pieces held ahead of a gap count against ``max_held``."""
        return self._held

    @property
    def pending(self) -> int:
        """Bytes of unfinished packets held, both ways (a channel ending here was cut)."""
        return self._client.pending + self._server.pending

    @property
    def client_pending(self) -> int:
        """Bytes of the client's unfinished packet (not yet decided on)."""
        return self._client.pending

    @property
    def server_pending(self) -> int:
        """Bytes of the server's unfinished packet."""
        return self._server.pending

    def client(self, data: bytes | memoryview) -> list[Event]:
        out: list[Event] = []
        for q in self._client.feed(data):
            if not isinstance(q, Init):
                self._request(q, out)
            self._client_end = q.end
        return out

    def server(self, data: bytes | memoryview) -> list[Event]:
        out: list[Event] = []
        for r in self._server.feed(data):
            if isinstance(r, Version):
                continue
            p = self._pending.pop(r.id, None)
            if p is None:
                raise SftpError(f"the server answered request {r.id}, which is not outstanding")
            if r.type not in _REPLIES.get(p.type, _STATUS_ONLY):
                raise SftpError(f"the server answered {p.op} (request {r.id}) with {r.type.name}")
            f = p.file
            if f is not None:
                f.inflight -= 1
            names: tuple[str, ...] = ()
            if r.type is _T.HANDLE:
                self._bind(p, r.handle or b"")
            elif r.type is _T.DATA:
                payload = r.data if r.data is not None else b""
                if len(payload) > p.length:
                    raise SftpError(
                        f"the server sent {len(payload)} bytes for a {p.length}-byte READ"
                    )
                out.append(Data(r.id, p.path, "read", p.offset, payload))
                if f is not None:
                    f.bytes_read += len(payload)
                    self._add(f.read, p.offset, payload)
            elif r.type is _T.NAME:
                names = tuple(_text(n.filename) for n in r.names)
            elif p.type is _T.WRITE and f is not None:
                if r.code == Status.OK:
                    f.bytes_written += p.length
                else:
                    self._stop(f.write)
            outcome = "ok" if r.code == Status.OK else status_name(r.code)
            out.append(OpDone(r.id, p.op, p.path, outcome, r.code, _text(r.message), names))
            if p.type is _T.CLOSE and p.handle is not None:
                closed = self._handles.pop(p.handle, None)
                if closed is not None:
                    self._closed(closed, outcome, out)
        return out

    def drop(self, id: int, code: int = Status.PERMISSION_DENIED, message: str = "") -> list[Event]:
        """Forget request ``id``: the gateway kept it from the server and answers it itself
        (``sftp.status(id, code, message)``). Returns its ``OpDone``. A dropped WRITE stops
        its file's hashing (the file will not hold what was hashed)."""
        p = self._pending.pop(id, None)
        if p is None:
            raise SftpError(f"request {id} is not outstanding: nothing to drop")
        if p.file is not None:
            p.file.inflight -= 1
            if p.type is _T.WRITE:
                self._stop(p.file.write)
        return [OpDone(id, p.op, p.path, status_name(code), code, message)]

    def finish(self) -> list[Event]:
        """The channel ended: every request still outstanding is done with
        ``connection_lost``, every file still open is closed with it."""
        lost = Status.CONNECTION_LOST
        out: list[Event] = [
            OpDone(i, p.op, p.path, status_name(lost), lost) for i, p in self._pending.items()
        ]
        self._pending.clear()
        for f in self._handles.values():
            self._closed(f, status_name(lost), out)
        self._handles.clear()
        return out

    # --- the request side -------------------------------------------------------------------

    def _request(self, q: Request, out: list[Event]) -> None:
        if q.id in self._pending:
            raise SftpError(f"the client reused request id {q.id} while it is outstanding")
        if len(self._pending) >= self.max_outstanding:
            raise SftpError(f"more than {self.max_outstanding} SFTP requests outstanding")
        t, detail = q.type, dict[str, str | int]()
        f = self._handles.get(q.handle) if q.handle is not None else None
        if q.handle is not None and f is None:
            detail["handle"] = q.handle.hex()
        path = f.path if f is not None else (None if q.path is None else _text(q.path))
        path2 = None if q.path2 is None else _text(q.path2)
        if t is _T.EXTENDED:
            name = q.name or b""
            op, modifies = "extended:" + _text(name), name not in _EXT_READ_ONLY
        else:
            op, modifies = _OPS[t], t in _MODIFY
        length = q.length
        if t is _T.SYMLINK:
            path, path2 = path2, path
        elif t is _T.OPEN:
            detail.update(mode=open_mode(q.pflags), pflags=q.pflags)
            modifies = bool(q.pflags & _OPEN_WRITES)
        elif t is _T.READ:
            detail.update(offset=q.offset, length=q.length)
        elif t is _T.WRITE:
            length = q.data_len
            detail.update(offset=q.offset, length=length)
        elif q.name == COPY_DATA:
            dest = self._handles.get(q.handle2 or b"")
            path2 = dest.path if dest is not None else None
            if dest is not None:
                self._stop(dest.write)  # written by the server, not through WRITE
            detail.update(read_offset=q.offset, length=q.length, write_offset=q.offset2)
        if q.attrs is not None:
            detail.update(_attrs_detail(q.attrs))
            if t is _T.FSETSTAT and q.attrs.size is not None and f is not None:
                w = f.write
                # scp sets the size to what it wrote (cutting an older, longer file's
                # tail): the content is then exactly the bytes written, in order
                if not (w.intact and w.next == q.attrs.size):
                    self._stop(w)  # truncated or extended behind the WRITEs' back
        out.append(OpStarted(q.id, op, path, path2, detail, modifies, q.end, self._client_end))
        if t is _T.WRITE:
            payload = q.data if q.data is not None else b""
            out.append(Data(q.id, path, "write", q.offset, payload))
            if f is not None:
                self._add(f.write, q.offset, payload)
        if f is not None:
            f.inflight += 1
        self._pending[q.id] = _Pending(t, op, path, f, q.handle, q.pflags, q.offset, length)

    # --- handles and digests ----------------------------------------------------------------

    def _bind(self, p: _Pending, handle: bytes) -> None:
        if handle in self._handles:
            raise SftpError(f"the server gave handle {handle.hex()} again while it is open")
        if len(self._handles) >= self.max_handles:
            raise SftpError(f"more than {self.max_handles} SFTP handles open")
        self._handles[handle] = _File(p.path or "", p.pflags, p.type is _T.OPENDIR)

    def _add(self, d: _Digest, offset: int, data: bytes | memoryview) -> None:
        before = d.cost
        d.add(offset, data, self.max_held - self._held)
        self._held += d.cost - before

    def _stop(self, d: _Digest) -> None:
        self._held -= d.cost
        d.stop()

    def _closed(self, f: _File, outcome: str, out: list[Event]) -> None:
        """Release ``f``'s digests; a file (not a directory) gets its ``FileClosed``."""
        sequential = f.read.intact and f.write.intact and f.inflight == 0
        r_sha, w_sha = f.read.sha, f.write.sha
        self._stop(f.read)
        self._stop(f.write)
        if f.is_dir:
            return
        # a digest for a direction the mode has, or that moved bytes anyway
        reads = bool(f.pflags & OpenFlag.READ or f.bytes_read)
        writes = bool(f.pflags & _OPEN_WRITES or f.bytes_written)
        r_hex = r_sha.hexdigest() if sequential and reads and r_sha is not None else None
        w_hex = w_sha.hexdigest() if sequential and writes and w_sha is not None else None
        moved = (f.bytes_read, f.bytes_written)
        out.append(
            FileClosed(f.path, open_mode(f.pflags), *moved, r_hex, w_hex, outcome, sequential)
        )


def _attrs_detail(a: Attrs) -> dict[str, str | int]:
    out: dict[str, str | int] = {}
    for name in ("size", "uid", "gid", "permissions", "atime", "mtime"):
        value = getattr(a, name)
        if value is not None:
            out[name] = value
    if a.extended:
        out["extended"] = len(a.extended)
    return out
