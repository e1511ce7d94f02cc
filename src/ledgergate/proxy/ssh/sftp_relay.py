"""SFTP relayed to the host and read alongside: every operation on the ledger.

Owns, for a session channel whose subsystem is ``sftp``, what passes between the
client and the host's own SFTP server (the gateway does not terminate SFTP: the host
answers pipelined requests as fast as it would directly):
- the client's bytes go on whole packets at a time, in order; a request policy refuses
  (``core.policy.ssh.check_sftp``) is left out, answered by the gateway with
  ``SSH_FX_PERMISSION_DENIED`` naming the rule, and recorded as ``decision.block``;
- each request but a read or write is a ``command`` entry (``op`` ``sftp:open``,
  ``sftp:remove``, …, its path or paths); one that can change the host's files is made
  durable before its bytes reach the host, and what comes after it waits behind it;
  its reply closes it (``command.result``, the SFTP status);
- each WRITE's payload and each DATA reply is a ``chunk`` entry (offset, size, digest;
  the bytes kept at ``full``), naming the file's ``open`` command;
- each file closed: a ``file.closed`` entry with its SHA-256 and size each way, in offset
  order (``sequential`` false and no digest when the transfer was not in order).
The host's bytes go to the client whole packets at a time too, so an answer the gateway
makes itself never lands inside one of the host's. An SFTP stream that breaks the
protocol ends the channel (``SftpError``); a ledger that cannot be written ends it too.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from hashlib import sha256
from typing import TYPE_CHECKING, Any

from ledgergate.core.policy.engine import Decision
from ledgergate.core.policy.ssh import check_sftp, sftp_path
from ledgergate.proxy.sink import LedgerUnavailable
from ledgergate.wire.ssh.sftp import SftpError, Status, status
from ledgergate.wire.ssh.sftp_track import Data, FileClosed, OpDone, OpStarted, SftpTracker

if TYPE_CHECKING:
    from ledgergate.proxy.ssh.channel import ChannelRelay
    from ledgergate.proxy.ssh.server import SshSession

__all__ = ["SftpRelay"]

now_ns = time.time_ns

# Client bytes held behind a request waiting for its ledger commit; past this the
# client's reads pause (OpenSSH's sftp keeps 64 requests of up to 255 KiB in flight).
MAX_QUEUED = 32 << 20
# Operations recorded as chunks of their file rather than as commands.
_DATA_OPS = frozenset({"read", "write"})


class SftpRelay:
    def __init__(self, relay: ChannelRelay, session: SshSession) -> None:
        self.relay = relay
        self.s = session
        self.tracker = SftpTracker()
        self.keep = session.recorder.level == "full"
        self.metadata = session.recorder.level == "metadata"
        # client bytes not yet sent or left out; _cbuf[0] is at stream offset _coff
        self._cbuf = bytearray()
        self._coff = 0
        self._sbuf = bytearray()  # host bytes of an unfinished packet
        self._queue: deque[list[Any]] = deque()  # [ready, bytes] behind a commit
        self._queued = 0
        self._cmds: dict[int, int] = {}  # request id -> its command seq
        self._dot: set[int] = set()  # ids of REALPATH "." requests
        self._dropped: set[int] = set()  # ids refused in the read being handled
        self.cwd: str | None = None  # the server's working directory (REALPATH of ".")
        self._opens: dict[str, int] = {}  # path -> the command seq of its latest open

    # -- client -> host ----------------------------------------------------------------------
    def from_client(self, data: bytes) -> None:
        self._cbuf += data
        try:
            events = self.tracker.client(data)
        except SftpError as e:
            self.relay.protocol_error(f"the client's SFTP stream is malformed: {e}")
            return
        self._dropped.clear()
        for ev in events:
            if isinstance(ev, OpStarted):
                self._request(ev)
            elif isinstance(ev, Data) and ev.id not in self._dropped:
                self._chunk(ev, "write")  # (a refused WRITE's bytes never went on)
        decided = self._coff + len(self._cbuf) - self.tracker.client_pending
        self._take(decided, ready=True)

    def _request(self, ev: OpStarted) -> None:
        if ev.op == "realpath" and ev.path == ".":
            self._dot.add(ev.id)  # its answer is the working directory
        raw = tuple(p for p in (ev.path, ev.path2) if p is not None)
        # rules see normal, absolute paths (``//etc/x``, ``/tmp/../etc/x``, ``x`` from
        # the working directory are all /etc/x); realpath only names, and is how the
        # working directory is learnt
        paths = () if ev.op == "realpath" else tuple(sftp_path(p, self.cwd) for p in raw)
        d = check_sftp(self.s.policy(), ev.op, paths, modifies=ev.modifies)
        fields = self._fields(ev)
        if d.allowed and d.review is not None:
            # a reviewer cannot be waited for inside a pipelined SFTP stream: refused,
            # naming the rule (an access window is the way to such operations)
            d = Decision(
                False,
                d.review,
                f"this {ev.op} needs a review (rule {d.review}); SFTP operations are not held "
                "for one: ask for an access window",
            )
        if not d.allowed:
            self._take(ev.start, ready=True)
            self._skip(ev.end)
            self._dropped.add(ev.id)
            message = d.message or f"refused by rule {d.rule}"
            self.s.sink.submit(
                [
                    self.s.recorder.blocked_request(
                        now_ns(), f"sftp:{ev.op}", self.relay.number, d.rule, message, **fields
                    )
                ]
            )
            self.tracker.drop(ev.id, Status.PERMISSION_DENIED, message)
            self._to_client(status(ev.id, Status.PERMISSION_DENIED, f"ledgergate: {message}"))
            return
        if ev.op in _DATA_OPS:
            return  # its bytes are chunk entries of the file
        seq, draft = self.s.recorder.request(now_ns(), f"sftp:{ev.op}", self.relay.number, **fields)
        self._cmds[ev.id] = seq
        if ev.op == "open" and ev.path is not None:
            self._opens[ev.path] = seq
        if not ev.modifies:
            self.s.sink.submit([draft])
            return
        # durable before it reaches the host; what follows waits behind it
        self._take(ev.start, ready=True)
        item = self._take(ev.end, ready=False)

        def committed(err: BaseException | None) -> None:
            if err is not None:
                self.relay.client.fail_closed()
                return
            if item is not None:
                item[0] = True
            self._release()

        self.s.sink.submit([draft], committed)

    def _fields(self, ev: OpStarted) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, sent in (("path", ev.path), ("path2", ev.path2)):
            if sent is None:
                continue
            p = sftp_path(sent, self.cwd) or sent
            if self.metadata:
                out[f"{key}_sha256"] = sha256(p.encode("utf-8", "replace")).hexdigest()
                continue
            out[key] = p
            if p != sent:
                out[f"{key}_sent"] = sent  # as the client wrote it
        if ev.detail:
            out["detail"] = {k: v for k, v in ev.detail.items() if k != "handle"}
        return out

    def _take(self, upto: int, *, ready: bool) -> list[Any] | None:
        """Queue the client's bytes up to stream offset ``upto`` for the host."""
        n = upto - self._coff
        if n <= 0:
            return None
        chunk = _cut_front(self._cbuf, n)
        self._coff = upto
        if ready and not self._queue:
            self._to_host(chunk)
            return None
        item: list[Any] = [ready, chunk]
        self._queue.append(item)
        self._queued += len(chunk)
        if self._queued > MAX_QUEUED:
            self.relay.pause_client("sftp")
        return item

    def _skip(self, upto: int) -> None:
        n = upto - self._coff
        if n > 0:
            del self._cbuf[:n]
            self._coff = upto

    def _release(self) -> None:
        q = self._queue
        while q and q[0][0]:
            chunk = q.popleft()[1]
            if chunk is None:  # the client's EOF, behind what it sent before it
                self._host_eof()
                continue
            self._queued -= len(chunk)
            self._to_host(chunk)
        if self._queued <= MAX_QUEUED // 2:
            self.relay.resume_client("sftp")

    def eof(self) -> None:
        """The client sent EOF: it reaches the host after everything it sent before."""
        if self._queue:
            self._queue.append([True, None])
        else:
            self._host_eof()

    def _host_eof(self) -> None:
        host = self.relay.host
        if host is not None:
            with contextlib.suppress(OSError):
                host.write_eof()

    def _to_host(self, chunk: bytes) -> None:
        host = self.relay.host
        if host is not None:
            with contextlib.suppress(OSError):
                host.write(chunk)

    # -- host -> client ------------------------------------------------------------------------
    def from_host(self, data: bytes) -> None:
        buffered = bool(self._sbuf)
        if buffered:
            self._sbuf += data
        try:
            events = self.tracker.server(data)
        except SftpError as e:
            self.relay.protocol_error(f"the host's SFTP stream is malformed: {e}")
            return
        drafts = []
        t = now_ns()
        for ev in events:
            if isinstance(ev, Data):
                self._chunk(ev, "read")
            elif isinstance(ev, OpDone):
                if ev.id in self._dot:
                    self._dot.discard(ev.id)
                    if ev.outcome == "ok" and ev.names and ev.names[0].startswith("/"):
                        self.cwd = ev.names[0]
                seq = self._cmds.pop(ev.id, None)
                if seq is not None:
                    more: dict[str, Any] = {"status": ev.status_code}
                    if ev.message and ev.outcome != "ok":
                        more["message"] = ev.message
                    drafts.append(
                        self.s.recorder.result(t, seq, f"sftp:{ev.op}", ev.outcome, **more)
                    )
            elif isinstance(ev, FileClosed):
                drafts.append(self._file_closed(t, ev))
        if drafts:
            self.s.sink.submit(drafts)
        pending = self.tracker.server_pending
        if not buffered:
            # the read began on a packet boundary (the usual case): what it completes
            # goes on as it arrived, only an unfinished last packet is kept
            whole = len(data) - pending
            if whole > 0:
                self._to_client(data if not pending else data[:whole])
            if pending:
                self._sbuf += data[max(whole, 0) :]
            return
        whole = len(self._sbuf) - pending
        if whole > 0:
            self._to_client(_cut_front(self._sbuf, whole))

    def _to_client(self, data: bytes) -> None:
        chan = self.relay.chan
        if chan is not None:
            with contextlib.suppress(OSError):
                chan.write(data)

    def _chunk(self, ev: Data, direction: str) -> None:
        seq = self._opens.get(ev.path or "", 0)
        data = ev.data  # hashed where it lies (the recorder copies a kept payload)
        self.s.sink.submit(
            [
                self.s.recorder.data(
                    now_ns(), seq, self.relay.number, direction, data,
                    keep=self.keep, offset=ev.offset,
                )
            ]
        )  # fmt: skip

    def _file_closed(self, t: int, ev: FileClosed) -> Any:
        f: dict[str, Any] = {
            "mode": ev.mode,
            "bytes_read": ev.bytes_read,
            "bytes_written": ev.bytes_written,
            "sha256_read": ev.sha256_read,
            "sha256_written": ev.sha256_written,
            "sequential": ev.sequential,
        }
        path = sftp_path(ev.path, self.cwd) or ev.path
        if self.metadata:
            f["path_sha256"] = sha256(path.encode("utf-8", "replace")).hexdigest()
        else:
            f["path"] = path
        seq = self._opens.get(ev.path, 0)
        return self.s.recorder.event(
            t, "file.closed",
            command={"seq": seq, "op": "sftp:open", "protocol": "ssh"},
            file=f, outcome=ev.outcome,
        )  # fmt: skip

    def finish(self) -> None:
        """The channel ended: settle what was outstanding."""
        t = now_ns()
        drafts = []
        for ev in self.tracker.finish():
            if isinstance(ev, OpDone):
                seq = self._cmds.pop(ev.id, None)
                if seq is not None:
                    drafts.append(self.s.recorder.result(t, seq, f"sftp:{ev.op}", ev.outcome))
            elif isinstance(ev, FileClosed):
                drafts.append(self._file_closed(t, ev))
        with contextlib.suppress(LedgerUnavailable):
            if drafts:
                self.s.sink.submit(drafts)


def _cut_front(buf: bytearray, n: int) -> bytes:
    """The first ``n`` bytes of ``buf`` as bytes, removed from it (one copy)."""
    if n >= len(buf):
        out = bytes(buf)
        buf.clear()
        return out
    out = bytes(memoryview(buf)[:n])
    del buf[:n]
    return out
