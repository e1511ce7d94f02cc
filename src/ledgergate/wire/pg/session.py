"""The relay phase of a PostgreSQL session: the hot path, sans-IO.

Owns what happens after both handshakes: client frames are split whole (commands must be
recorded before they reach the backend) and server bytes are forwarded as they arrived
while their frame headers are walked in place (row counts, CommandComplete tags).

Rules:
- A read of client bytes that carries a command (Query, Parse, Bind, FunctionCall) is
  held until the shell reports ``Committed`` for its durable ``Record``; later client
  bytes queue behind it so order is kept.
- Every read of server bytes yields one ``ChunkSeen`` recorded before it is sent on;
  after ``ClientClosed`` such reads are still recorded, with ``delivered=False``.
- A client frame with an unknown type or an absurd length is a protocol error: the client
  gets a FATAL ErrorResponse and the session closes. The backend is trusted to frame.
No sockets, clocks or logging: timestamps arrive on the events.
"""

from __future__ import annotations

import struct
from collections import deque

from ledgergate.wire.pg import messages as m
from ledgergate.wire.pg.events import (
    Action,
    ChunkSeen,
    ClientClosed,
    ClientData,
    Close,
    CommandSeen,
    Committed,
    Event,
    Record,
    SendToClient,
    SendToServer,
    ServerClosed,
    ServerData,
)
from ledgergate.wire.pg.frames import FrameError, FrameSplitter

__all__ = ["Relay", "SessionStats"]

_I = struct.Struct("!I")
_unpack_i = _I.unpack_from
# Frontend message types valid after startup (protocol 3.0 and 3.2).
_FRONTEND = frozenset(b"BCcdDEfFHPpQSX")
_D, _C = ord("D"), ord("C")
_Q, _P, _B, _F, _X, _d = (ord(c) for c in "QPBFXd")
# Client bytes waiting for a ledger commit beyond this pause the client (the shell
# checks ``held_bytes``); they are never dropped.
MAX_HELD = 8 << 20
# CommandComplete tags are short ("INSERT 0 1000000"); a longer body is cut here so a
# tag split across reads never buffers more than this.
MAX_TAG = 256


def _tag_of(body: bytes | bytearray) -> bytes:
    """A CommandComplete body's tag: up to its NUL, bounded by MAX_TAG."""
    return bytes(body[:MAX_TAG]).split(b"\x00", 1)[0]


class SessionStats:
    __slots__ = ("bytes_c2s", "bytes_s2c", "chunks", "commands", "rows")

    def __init__(self) -> None:
        self.commands = 0
        self.chunks = 0
        self.rows = 0
        self.bytes_c2s = 0
        self.bytes_s2c = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "commands": self.commands,
            "chunks": self.chunks,
            "rows": self.rows,
            "bytes_c2s": self.bytes_c2s,
            "bytes_s2c": self.bytes_s2c,
        }


class Relay:
    """feed(event) -> actions, for a session whose handshakes are done."""

    def __init__(self) -> None:
        self._split = FrameSplitter()
        self._ticket = 0
        self._committed = 0
        self._held: deque[tuple[int, bytes]] = deque()
        self.held_bytes = 0
        self._skip = 0  # bytes of a server frame that continue into the next read
        self._hdr = b""  # a server frame header split across reads
        self._tag: bytearray | None = None  # a CommandComplete body split across reads
        self._s_seq = 0
        self._c_seq = 0
        self.client_open = True
        self.terminated = False
        self.closed = False
        self.stats = SessionStats()
        # Set by ``end()`` while a server message is half forwarded: (error, reason).
        self._ending: tuple[bytes, str] | None = None

    # -- dispatch ---------------------------------------------------------------------
    def feed(self, event: Event) -> list[Action]:
        if self.closed:
            return []
        if isinstance(event, ServerData):
            return self._server(event.data, event.ts_ns)
        if not self.client_open:
            # The client is gone: only server bytes still in flight are recorded
            # (undelivered) until the server side closes too.
            if isinstance(event, ServerClosed):
                self.closed = True
            return []
        if isinstance(event, ClientData):
            try:
                return self._client(event.data, event.ts_ns)
            except FrameError as e:
                return self._protocol_error(str(e))
        if isinstance(event, Committed):
            return self._release(event.ticket)
        if isinstance(event, ClientClosed):
            self.client_open = False
            return [Close("client terminated" if self.terminated else "client disconnected")]
        if isinstance(event, ServerClosed):
            self.closed = True
            if self.terminated:
                return [Close("client terminated")]
            err = m.error_response(
                "08006", "ledgergate: the server closed the connection unexpectedly"
            )
            return [SendToClient(err), Close("backend closed the connection")]
        raise TypeError(f"unexpected event {event!r}")

    def end(self, error: bytes, reason: str) -> list[Action]:
        """End the session from the gateway's side: ``error`` (a FATAL ErrorResponse) goes
        to the client at the next server message boundary, never inside a message that
        is half forwarded (the client would read it as that message's bytes), then
        ``Close``. Until that boundary, server bytes up to it are still relayed and
        recorded; nothing after it is."""
        if self.closed or self._ending is not None:
            return []
        if self._skip == 0 and not self._hdr:
            self.closed = True
            return [SendToClient(error), Close(reason)] if self.client_open else [Close(reason)]
        self._ending = (error, reason)
        return []

    @property
    def ending(self) -> bool:
        return self._ending is not None

    def _boundary(self, data: bytes) -> int | None:
        """Where the server message in progress ends within ``data`` (None: later)."""
        n = len(data)
        if self._hdr:
            need = 5 - len(self._hdr)
            if n < need:
                return None
            (ln,) = _unpack_i(self._hdr + data[:need], 1)
            end = need + (ln if ln >= 4 else 4) - 4
        else:
            end = self._skip
        return end if end <= n else None

    def _protocol_error(self, why: str) -> list[Action]:
        self.closed = True
        return [
            SendToClient(m.error_response("08P01", f"ledgergate: invalid frontend message: {why}")),
            Close(f"protocol error: {why}"),
        ]

    # -- client -> server ---------------------------------------------------------------
    def _client(self, data: bytes, ts: int) -> list[Action]:
        frames = self._split.feed(data)
        if not frames:
            return []
        buf = self._split.buf
        seen: list[CommandSeen | ChunkSeen] = []
        copy_rows = 0
        for tag, s, e in frames:
            if tag == _d:
                copy_rows += 1
            elif tag == _Q:
                raw = bytes(buf[s:e])
                seen.append(CommandSeen("query", ts, raw, text=m.parse_query(raw[5:])))
            elif tag == _P:
                raw = bytes(buf[s:e])
                p = m.parse_parse(raw[5:])
                seen.append(CommandSeen("parse", ts, raw, text=p.query, statement=p.statement))
            elif tag == _B:
                raw = bytes(buf[s:e])
                b = m.parse_bind(raw[5:])
                seen.append(
                    CommandSeen(
                        "bind",
                        ts,
                        raw,
                        statement=b.statement,
                        portal=b.portal,
                        nparams=len(b.params),
                    )
                )
            elif tag == _F:
                raw = bytes(buf[s:e])
                if len(raw) < 9:
                    raise FrameError("truncated FunctionCall")
                seen.append(CommandSeen("function", ts, raw, text=b"fn:%d" % _unpack_i(raw, 5)[0]))
            elif tag == _X:
                self.terminated = True
            elif tag not in _FRONTEND:
                raise FrameError(f"unknown message type {chr(tag)!r}")
        end = frames[-1][2]
        out = bytes(buf[:end])
        self._split.consume(end)
        st = self.stats
        st.bytes_c2s += end
        ncmd = len(seen)
        if copy_rows:
            self._c_seq += 1
            st.chunks += 1
            seen.append(ChunkSeen("c2s", self._c_seq, ts, out, copy_rows, (), True))
        if ncmd:
            st.commands += ncmd
            self._ticket += 1
            self._held.append((self._ticket, out))
            self.held_bytes += end
            return [Record(tuple(seen), True, self._ticket)]
        actions: list[Action] = []
        if seen:
            actions.append(Record(tuple(seen), False, 0))
        if self._held:  # keep order behind bytes still waiting for their commit
            self._held.append((0, out))
            self.held_bytes += end
        else:
            actions.append(SendToServer(out))
        return actions

    def _release(self, ticket: int) -> list[Action]:
        if ticket > self._committed:
            self._committed = ticket
        parts: list[bytes] = []
        held = self._held
        while held and held[0][0] <= self._committed:
            parts.append(held.popleft()[1])
        if not parts:
            return []
        out = b"".join(parts)
        self.held_bytes -= len(out)
        return [SendToServer(out)]

    # -- server -> client ---------------------------------------------------------------
    def _server(self, data: bytes, ts: int) -> list[Action]:
        if self._ending is not None:
            cut = self._boundary(data)
            if cut is None:
                return self._walk(data, ts)
            actions = self._walk(data[:cut], ts) if cut else []
            error, reason = self._ending
            self.closed = True
            if self.client_open:
                actions.append(SendToClient(error))
            actions.append(Close(reason))
            return actions
        return self._walk(data, ts)

    def _walk(self, data: bytes, ts: int) -> list[Action]:
        n = len(data)
        rows = 0
        tags: list[bytes] = []
        pos = self._skip
        if self._tag is not None:  # the rest of a CommandComplete begun in earlier reads
            if len(self._tag) < MAX_TAG:
                self._tag += data[: min(pos, MAX_TAG)]
            if pos <= n:
                tags.append(_tag_of(self._tag))
                self._tag = None
        elif self._hdr:
            need = 5 - len(self._hdr)
            if n < need:
                self._hdr += data
                pos = n
            else:
                hdr = self._hdr + data[:need]
                self._hdr = b""
                t = hdr[0]
                (ln,) = _unpack_i(hdr, 1)
                pos = need + (ln if ln >= 4 else 4) - 4
                if t in (_D, _d):
                    rows += 1
                elif t == _C:
                    if pos <= n:
                        tags.append(_tag_of(data[need:pos]))
                    else:
                        self._tag = bytearray(data[need : need + MAX_TAG])
        while pos + 5 <= n:
            t = data[pos]
            (ln,) = _unpack_i(data, pos + 1)
            if t in (_D, _d):
                rows += 1
            elif t == _C:
                if pos + 1 + ln <= n:
                    tags.append(_tag_of(data[pos + 5 : pos + 1 + ln]))
                else:
                    self._tag = bytearray(data[pos + 5 : pos + 5 + MAX_TAG])
            pos += 1 + (ln if ln >= 4 else 4)
        if pos < n:
            self._hdr = data[pos:]
            self._skip = 0
        else:
            self._skip = pos - n
        self._s_seq += 1
        st = self.stats
        st.chunks += 1
        st.rows += rows
        st.bytes_s2c += n
        chunk = ChunkSeen("s2c", self._s_seq, ts, data, rows, tuple(tags), self.client_open)
        if self.client_open:
            return [Record((chunk,), False, 0), SendToClient(data)]
        return [Record((chunk,), False, 0)]
