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
- A guard replaced while the session is open (``set_guard``: the policy changed) also
  decides the statements prepared before it, when they are next bound.
No sockets, clocks or logging: timestamps arrive on the events.

This module holds the per-read paths only (``feed``, the client split, the server walk),
each kept whole so a read costs no extra call. The relay's state and what does not run per
read (guard changes, refusals, review holds and verdicts, ``end``, ``notice``, protocol
errors) are in ``control.py``: ``RelayControl``, the base class. Must not grow cold code.
"""

from __future__ import annotations

from ledgergate.wire.pg import messages as m
from ledgergate.wire.pg._datarows import walk as _walk_frames
from ledgergate.wire.pg.control import (
    FUNCTION_CALL_REFUSED,
    MAX_TAG,
    Guard,
    NeedsReview,
    RelayControl,
    SessionStats,
    _allow_all,
    _bind_seen,
    _function_seen,
    _tag_of,
    _unpack_i,
)
from ledgergate.wire.pg.control import MAX_HELD as MAX_HELD
from ledgergate.wire.pg.events import (
    Action,
    ChunkSeen,
    ClientClosed,
    ClientData,
    Close,
    CommandSeen,
    Committed,
    Event,
    Inspect,
    Record,
    SendToClient,
    SendToServer,
    ServerClosed,
    ServerData,
    Verdict,
)
from ledgergate.wire.pg.frames import FrameError, build

__all__ = ["Guard", "NeedsReview", "Relay", "SessionStats"]

# Frontend message types valid after startup (protocol 3.0 and 3.2).
_FRONTEND = frozenset(b"BCcdDEfFHPpQSX")
_D, _C = ord("D"), ord("C")
_Q, _P, _B, _F, _X, _d = (ord(c) for c in "QPBFXd")
_S, _Z, _E = ord("S"), ord("Z"), ord("E")


# The server's last reads are kept (from a message boundary) up to this many bytes to
# tell, when it closes, whether it said why: a FATAL ErrorResponse is far smaller.
GOODBYE_MAX = 8192


def said_goodbye(data: bytes | None) -> bool:
    """Whether ``data`` (a read that began on a message boundary) holds whole server
    messages, the last an ErrorResponse of severity FATAL or PANIC: what a backend sends
    before it closes a session it ends."""
    if not data:
        return False
    pos, n, last = 0, len(data), -1
    while pos + 5 <= n:
        (ln,) = _unpack_i(data, pos + 1)
        if ln < 4 or pos + 1 + ln > n:
            return False
        last, pos = pos, pos + 1 + ln
    if pos != n or last < 0 or data[last] != _E:
        return False
    fields = m.parse_error_fields(data[last + 5 : n])
    return fields.get("V", fields.get("S")) in ("FATAL", "PANIC")


class Relay(RelayControl):
    """feed(event) -> actions, for a session whose handshakes are done."""

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
        if isinstance(event, Verdict):
            return self._verdict(event)
        if isinstance(event, ClientClosed):
            self.client_open = False
            return [Close("client terminated" if self.terminated else "client disconnected")]
        if isinstance(event, ServerClosed):
            self.closed = True
            if self.terminated:
                return [Close("client terminated")]
            if said_goodbye(self._last_read):
                # The backend ended the session and said why (terminated by an admin, a
                # shutdown): the client has that, as it would direct; a second error of
                # ours would read as two results of its next command.
                return [Close("the server ended the session")]
            err = m.error_response(
                "08006", "ledgergate: the server closed the connection unexpectedly"
            )
            return [SendToClient(err), Close("backend closed the connection")]
        raise TypeError(f"unexpected event {event!r}")

    # -- client -> server ---------------------------------------------------------------
    def _client(self, data: bytes, ts: int) -> list[Action]:
        if self.guard is not None or self.shaper is not None:
            return self._client_guarded(data, ts)
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
                self._prepared.remember(p.statement, p.query)
            elif tag == _B:
                seen.append(_bind_seen(bytes(buf[s:e]), ts))
            elif tag == _F:
                seen.append(_function_seen(bytes(buf[s:e]), ts))
            elif tag == _X:
                self.terminated = True
            elif tag not in _FRONTEND:
                raise FrameError(f"unknown message type {chr(tag)!r}")
        end = frames[-1][2]
        out = bytes(buf[:end])
        self._split.consume(end)
        return self._emit(out, end, seen, copy_rows, ts)

    def _emit(
        self,
        out: bytes,
        end: int,
        seen: list[CommandSeen | ChunkSeen],
        copy_rows: int,
        ts: int,
    ) -> list[Action]:
        st = self.stats
        st.bytes_c2s += end
        ncmd = sum(1 for x in seen if isinstance(x, CommandSeen))
        if copy_rows:
            self._c_seq += 1
            st.chunks += 1
            seen.append(ChunkSeen("c2s", self._c_seq, ts, out, copy_rows, (), True))
        if ncmd:
            st.commands += ncmd
            self._ticket += 1
            self._held.append((self._ticket, out))
            self.held_bytes += len(out)
            return [Record(tuple(seen), True, self._ticket)]
        actions: list[Action] = []
        if seen:
            actions.append(Record(tuple(seen), False, 0))
        if self._held:  # keep order behind bytes still waiting for their commit
            self._held.append((0, out))
            self.held_bytes += len(out)
        elif out:
            actions.append(SendToServer(out))
        return actions

    def _client_guarded(self, data: bytes, ts: int) -> list[Action]:
        """``_client`` for a session with a guard (or a result shaper): each Query and
        Parse is decided before it can be forwarded; a refused one is replaced by its
        stand-in (see ``_refuse``), so the client's protocol flow is kept exactly:
        Sync, Flush, pipelines and transactions behave as after any failed statement."""
        frames = self._split.feed(data)
        if not frames or self._inspecting is not None:
            return []  # behind a statement held for review: read again after its Verdict
        guard = self.guard or _allow_all
        shaper = self.shaper
        buf = self._split.buf
        seen: list[CommandSeen | ChunkSeen] = []
        copy_rows = 0
        out = bytearray()
        inspect: Inspect | None = None
        end = frames[-1][2]
        for tag, s, e in frames:
            fwd: bytes | None = None
            ftag = tag
            if tag == _Q:
                raw = bytes(buf[s:e])
                text = m.parse_query(raw[5:])
                verdict = self._decide(guard("query", text))
                if isinstance(verdict, NeedsReview):
                    inspect = self._hold(verdict.rule, "query", text)
                    end = s
                    break
                seen.append(CommandSeen("query", ts, raw, text=text, blocked=verdict))
                if verdict is not None:
                    fwd = build(b"Q", self._refuse(verdict, self._code()) + b"\x00")
            elif tag == _P:
                raw = bytes(buf[s:e])
                p = m.parse_parse(raw[5:])
                pv = guard("parse", p.query)
                self._review_stmt.pop(p.statement, None)
                if isinstance(pv, NeedsReview):
                    # A Parse runs nothing: it goes on, and its Bind is held instead
                    # (with the parameters the reviewer needs to see).
                    self._review_stmt[p.statement] = (pv.rule, p.query)
                    pv = None
                verdict = pv
                seen.append(
                    CommandSeen(
                        "parse", ts, raw, text=p.query, statement=p.statement, blocked=verdict
                    )
                )
                if verdict is not None:
                    stand_in = self._refuse(verdict)
                    fwd = build(b"P", p.statement + b"\x00" + stand_in + b"\x00\x00\x00")
                    self._prepared.forget(p.statement)
                else:
                    self._prepared.remember(p.statement, p.query)
            elif tag == _d:
                copy_rows += 1
            elif tag == _B:
                raw = bytes(buf[s:e])
                b = _bind_seen(raw, ts)
                text, verdict = (
                    self._prepared.recheck(b.statement or b"", self._rechecker(b.statement))
                    if self._prepared.gen
                    else (b"", None)
                )
                held = self._review_stmt.get(b.statement or b"")
                if verdict is None and held is not None:
                    decided = self._decide(NeedsReview(held[0]))
                    if isinstance(decided, NeedsReview):
                        bi = m.parse_bind(raw[5:])
                        inspect = self._hold(
                            held[0], "bind", held[1], tuple(bi.params), tuple(bi.formats)
                        )
                        end = s
                        break
                    text, verdict = held[1], decided
                if verdict is not None:
                    # Prepared under an earlier policy and refused by this one: the backend
                    # fails a stand-in in its place, and skips the batch to its Sync.
                    b = CommandSeen(
                        "bind",
                        ts,
                        raw,
                        text=text,
                        statement=b.statement,
                        portal=b.portal,
                        nparams=b.nparams,
                        blocked=verdict,
                    )
                    fwd = build(
                        b"P", b"\x00" + self._refuse(verdict, self._code()) + b"\x00\x00\x00"
                    )
                    ftag = _P
                seen.append(b)
            elif tag == _F:
                # A FunctionCall names a function by OID, out of the parser's sight: on a
                # guarded session it would bypass guardrails (pg_read_file, lo_export) and
                # masking, so it fails like a refused statement.
                f = _function_seen(bytes(buf[s:e]), ts)
                seen.append(
                    CommandSeen(f.op, f.ts_ns, f.raw, text=f.text, blocked=FUNCTION_CALL_REFUSED)
                )
                fwd = build(b"Q", self._refuse(FUNCTION_CALL_REFUSED) + b"\x00")
                ftag = _Q
            elif tag == _X:
                self.terminated = True
            elif tag not in _FRONTEND:
                raise FrameError(f"unknown message type {chr(tag)!r}")
            if fwd is None:
                fwd = bytes(buf[s:e])
            out += shaper.client(ftag, fwd) if shaper else fwd
            self._decided = None  # a Verdict answers the frame read first after it only
        self._split.consume(end)
        actions = self._emit(bytes(out), end, seen, copy_rows, ts) if end else []
        if inspect is not None:
            actions.append(inspect)
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
    def _walk_guarded(self, data: bytes, ts: int) -> list[Action]:
        """``_walk`` for a guarded session with refusals outstanding: the backend's error
        about a stand-in is replaced by the refusal. An ErrorResponse that a read leaves
        unfinished is held until its rest arrives (never forwarded in part)."""
        if not self._refusals and not self._hold_s:
            return self._walk_plain(data, ts, None)
        if self._hold_s:
            data, self._hold_s = self._hold_s + data, b""
        n = len(data)
        pos = self._skip
        if self._hdr:
            if n < 5 - len(self._hdr):
                return self._walk_plain(data, ts, None)
            (ln,) = _unpack_i(self._hdr + data[: 5 - len(self._hdr)], 1)
            pos = 5 - len(self._hdr) + (ln if ln >= 4 else 4) - 4
        cuts: list[tuple[int, int, bytes]] = []
        hold_at = n
        while pos < n:
            if pos + 5 > n:
                if data[pos] == _E:
                    hold_at = pos
                break
            (ln,) = _unpack_i(data, pos + 1)
            end = pos + 1 + (ln if ln >= 4 else 4)
            if data[pos] == _E:
                if end > n:
                    hold_at = pos
                    break
                new = self._rewrite_error(data[pos:end])
                if new is not None:
                    cuts.append((pos, end, new))
            pos = end
        if hold_at < n:
            self._hold_s = data[hold_at:]
            data = data[:hold_at]
        if not cuts:
            return self._walk_plain(data, ts, None)
        parts: list[bytes] = []
        last = 0
        for start, end, new in cuts:
            parts.append(data[last:start])
            parts.append(new)
            last = end
        parts.append(data[last:])
        return self._walk_plain(data, ts, b"".join(parts))

    def _walk_shaped(self, data: bytes, ts: int) -> list[Action]:
        """A masked session: whole messages only go on, DataRows rewritten by the plan."""
        assert self.shaper is not None
        try:
            r = self.shaper.server(data)
        except FrameError as e:
            self.closed = True
            err = m.error_response(
                "08P01", "ledgergate: the server sent a malformed message; the session is closed"
            )
            return [SendToClient(err), Close(f"backend protocol error: {e}")]
        self._s_seq += 1
        st = self.stats
        st.chunks += 1
        st.rows += r.rows
        st.bytes_s2c += len(data)
        chunk = ChunkSeen(
            "s2c",
            self._s_seq,
            ts,
            data,
            r.rows,
            tuple(r.tags),
            self.client_open,
            r.out if r.changed or r.out != data else None,
        )
        if self.client_open and r.out:
            return [Record((chunk,), False, 0), SendToClient(r.out)]
        return [Record((chunk,), False, 0)]

    def _walk_plain(self, data: bytes, ts: int, out: bytes | None) -> list[Action]:
        """The plain walk (rows, tags, frame state) of ``data``, forwarding ``out``."""
        guard, self.guard = self.guard, None
        try:
            actions = self._walk(data, ts)
        finally:
            self.guard = guard
        if out is None:
            return actions
        rec, _send = actions[0], actions[1:]
        assert isinstance(rec, Record)
        c = rec.seen[0]
        assert isinstance(c, ChunkSeen)
        chunk = ChunkSeen(c.direction, c.seq, c.ts_ns, c.data, c.rows, c.tags, c.delivered, out)
        if c.delivered:
            return [Record((chunk,), False, 0), SendToClient(out)]
        return [Record((chunk,), False, 0)]

    def _server(self, data: bytes, ts: int) -> list[Action]:
        at_start = (
            self.shaper.partial == 0
            if self.shaper is not None
            else self._skip == 0 and not self._hdr and not self._hold_s
        )
        if at_start:
            self._last_read = data
        elif self._last_read is not None and len(self._last_read) + len(data) <= GOODBYE_MAX:
            self._last_read += data  # a goodbye split across reads
        else:
            self._last_read = None
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
        actions = self._walk(data, ts)
        if self._notices and self._at_boundary():
            actions.append(SendToClient(b"".join(self._notices)))
            self._notices.clear()
        return actions

    def _walk(self, data: bytes, ts: int) -> list[Action]:
        if self.shaper is not None:
            return self._walk_shaped(data, ts)
        if self.guard is not None:
            return self._walk_guarded(data, ts)
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
        if pos + 5 <= n:
            # The frame headers of the rest, walked in C (frames.walk_reference).
            pos, more, found, open_at = _walk_frames(data, pos)
            rows += more
            if found:
                tags.extend(found)
            if open_at >= 0:
                self._tag = bytearray(data[open_at : open_at + MAX_TAG])
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
