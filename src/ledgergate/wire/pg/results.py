"""Result shaping for sessions with masking: which columns each DataRow carries, and its
values rewritten before they leave the gateway. Sans-IO.

Rules (one state machine):
- The client's messages are seen in the order they are forwarded; each one that earns
  a response is queued (Parse, Bind, Describe, Execute, Close, Sync, Query,
  FunctionCall). Server messages are matched against the head of that queue, the way
  PostgreSQL answers them: in order, and after an error in an extended batch nothing
  until the Sync.
- A result's columns come from its RowDescription: after a Query, or from a Describe of
  the portal. So that every Execute's rows are attributed, an Execute of a portal the
  client did not Describe in the same batch gets a Describe('P') put in front of it by
  the gateway; its answer (RowDescription or NoData) is consumed, never forwarded.
- Server bytes are forwarded in whole messages only (a partial message waits for the
  rest), so a DataRow can be rewritten with correct lengths.
- A ``Planner`` (from the policy, outside ``wire``) turns the columns of a result into
  a ``RowPlan`` that rewrites values; no plan means the rows pass untouched.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ledgergate.wire.pg import _datarows  # the row loop in C (see _datarows.c)
from ledgergate.wire.pg.frames import FrameError
from ledgergate.wire.pg.messages import error_response

__all__ = ["Field", "Planner", "ResultShaper", "RowPlan", "ShapedRead"]

_H = struct.Struct("!h")
_I = struct.Struct("!I")
_i = struct.Struct("!i")
_FIELD = struct.Struct("!IhIhih")  # table oid, attnum, type oid, typlen, typmod, format
# Statement and portal texts remembered for the planner (oldest forgotten first).
MAX_NAMES = 1024


@dataclass(frozen=True, slots=True)
class Field:
    name: bytes
    table_oid: int
    attnum: int
    type_oid: int
    format: int  # 0 text, 1 binary


class RowPlan(Protocol):
    """A result set's masking. A plan may also offer ``rewrite(buf, pos) -> (bytes,
    end, rows, changed)`` for a whole run of DataRows at once (``core.masking`` does,
    in C); without it the shaper calls ``mask`` row by row."""

    def mask(self, values: list[bytes | None]) -> list[bytes | None] | None:
        """The row's new values, or None when nothing in it changed."""
        ...

    def finish(self) -> None:
        """The result set ended (the plan may report what it masked)."""
        ...


# (the result's columns, the SQL text of the statement that produced it) -> a plan.
Planner = Callable[[tuple[Field, ...], bytes], RowPlan | None]


class CopyPlan(Protocol):
    """A COPY TO STDOUT's masking: its data in, the rewritten data out."""

    def feed(self, data: bytes) -> tuple[bytes, int]:
        """(bytes to forward, complete rows in them) for a piece of COPY data."""
        ...

    def finish(self) -> None:
        """The COPY ended (raises ValueError when it ended inside a row)."""
        ...


class CopyRefusal(Exception):
    """Raised by a ``CopyPlanner``: this COPY's data may not pass; the message says why."""


# (the COPY statement's text, its column count, binary?) -> a plan, or None when no rule
# applies; raises ``CopyRefusal`` when the data cannot be masked.
CopyPlanner = Callable[[bytes, int, bool], CopyPlan | None]


@dataclass(slots=True)
class ShapedRead:
    out: bytes  # what to forward (whole messages only)
    rows: int
    tags: list[bytes]
    changed: bool


def parse_row_description(body: bytes) -> tuple[Field, ...]:
    (n,) = _H.unpack_from(body, 0)
    pos = 2
    out = []
    for _ in range(n):
        end = body.index(b"\x00", pos)
        name = body[pos:end]
        table, attnum, typ, _len, _mod, fmt = _FIELD.unpack_from(body, end + 1)
        out.append(Field(name, table, attnum, typ, fmt))
        pos = end + 1 + _FIELD.size
    return tuple(out)


def parse_data_row(body: bytes) -> list[bytes | None]:
    (n,) = _H.unpack_from(body, 0)
    pos = 2
    vals: list[bytes | None] = []
    for _ in range(n):
        (ln,) = _i.unpack_from(body, pos)
        pos += 4
        if ln < 0:
            vals.append(None)
        else:
            vals.append(body[pos : pos + ln])
            pos += ln
    return vals


# (end, rows) of the run of complete DataRow messages at a position of a buffer.
skip_rows: Callable[[bytes | bytearray, int], tuple[int, int]] = _datarows.skip


def build_data_row(vals: list[bytes | None]) -> bytes:
    parts = [_H.pack(len(vals))]
    for v in vals:
        if v is None:
            parts.append(_i.pack(-1))
        else:
            parts.append(_i.pack(len(v)))
            parts.append(v)
    body = b"".join(parts)
    return b"D" + _I.pack(len(body) + 4) + body


def _cstr(body: bytes, pos: int) -> tuple[bytes, int]:
    end = body.index(b"\x00", pos)
    return body[pos:end], end + 1


def _bind_formats(body: bytes) -> tuple[bytes, bytes, tuple[int, ...]]:
    """(portal, statement, result format codes) of a Bind body."""
    portal, pos = _cstr(body, 0)
    stmt, pos = _cstr(body, pos)
    (nf,) = _H.unpack_from(body, pos)
    pos += 2 + 2 * nf
    (npar,) = _H.unpack_from(body, pos)
    pos += 2
    for _ in range(npar):
        (ln,) = _i.unpack_from(body, pos)
        pos += 4 + max(ln, 0)
    (nr,) = _H.unpack_from(body, pos)
    fmts = tuple(_H.unpack_from(body, pos + 2 + 2 * i)[0] for i in range(nr))
    return portal, stmt, fmts


def _with_formats(fields: tuple[Field, ...], fmts: tuple[int, ...]) -> tuple[Field, ...]:
    if not fmts:
        return tuple(Field(f.name, f.table_oid, f.attnum, f.type_oid, 0) for f in fields)
    if len(fmts) == 1:
        fmts = fmts * len(fields)
    return tuple(
        Field(f.name, f.table_oid, f.attnum, f.type_oid, fmts[i] if i < len(fmts) else 0)
        for i, f in enumerate(fields)
    )


@dataclass(frozen=True, slots=True)
class _Exp:
    """A client message awaiting its answer."""

    kind: str  # P B D E C S Q F
    name: bytes = b""  # statement (P), portal (B, E), described object (D)
    stmt: bytes = b""  # B: the statement bound
    fmts: tuple[int, ...] = ()  # B: result format codes
    target: bytes = b""  # D: b"S" or b"P"
    injected: bool = False  # D: put in by the gateway; its answer is not forwarded
    sql: bytes = b""  # Q: its text; E: the text of the statement its portal runs


def describe_portal(portal: bytes) -> bytes:
    body = b"P" + portal + b"\x00"
    return b"D" + _I.pack(len(body) + 4) + body


class ResultShaper:
    def __init__(self, planner: Planner, copy_planner: CopyPlanner | None = None) -> None:
        self.planner = planner
        self.copy_planner = copy_planner
        # The COPY TO STDOUT in progress: its plan; or refused (its data is dropped, and
        # the client got an error in place of the CopyOutResponse).
        self._copy: CopyPlan | None = None
        self._copy_refused = False
        self._expect: deque[_Exp] = deque()
        self._stmt: dict[bytes, tuple[Field, ...] | None] = {}
        self._portal: dict[bytes, tuple[Field, ...] | None] = {}
        # The text behind each statement and portal, for the planner. Bounded like the
        # backend's own: a statement or portal name is reused or closed.
        self._stmt_sql: dict[bytes, bytes] = {}
        self._portal_sql: dict[bytes, bytes] = {}
        self._described: set[bytes] = set()  # portals the client describes in this batch
        self._plan: RowPlan | None = None
        self._plan_for: object = None
        self.copy_rows = 0  # rows of COPY data masked (all reads)
        self._buf = bytearray()
        # A hook for the guard: each ErrorResponse may be replaced (a refusal).
        self.on_error: Callable[[bytes], bytes | None] | None = None

    # -- client side ----------------------------------------------------------------------
    def client(self, tag: int, frame: bytes) -> bytes:
        """A client message about to be forwarded; returns what to forward instead.
        A message too short for what its type must hold is a ``FrameError``."""
        try:
            return self._client(tag, frame)
        except (ValueError, struct.error, IndexError) as e:
            raise FrameError(f"malformed {chr(tag)!r} message from the client: {e}") from None

    def _client(self, tag: int, frame: bytes) -> bytes:
        t = chr(tag)
        if t == "P":
            name, pos = _cstr(frame, 5)
            sql, _ = _cstr(frame, pos)
            self._expect.append(_Exp("P", name))
            self._stmt.pop(name, None)
            if len(self._stmt_sql) >= MAX_NAMES and name not in self._stmt_sql:
                self._stmt_sql.pop(next(iter(self._stmt_sql)))
            self._stmt_sql[name] = sql
        elif t == "B":
            portal, stmt, fmts = _bind_formats(frame[5:])
            self._expect.append(_Exp("B", portal, stmt, fmts))
            self._portal.pop(portal, None)
            self._described.discard(portal)
            if len(self._portal_sql) >= MAX_NAMES and portal not in self._portal_sql:
                self._portal_sql.pop(next(iter(self._portal_sql)))
            self._portal_sql[portal] = self._stmt_sql.get(stmt, b"")
        elif t == "D":
            kind = frame[5:6]
            name, _ = _cstr(frame, 6)
            self._expect.append(_Exp("D", name, target=kind))
            if kind == b"P":
                self._described.add(name)
        elif t == "E":
            portal, _ = _cstr(frame, 5)
            pre = b""
            if portal not in self._described:
                # Know this Execute's columns: ask for them, and keep the answer.
                self._expect.append(_Exp("D", portal, target=b"P", injected=True))
                self._described.add(portal)
                pre = describe_portal(portal)
            self._expect.append(_Exp("E", portal, sql=self._portal_sql.get(portal, b"")))
            return pre + frame
        elif t == "C":
            self._expect.append(_Exp("C"))
        elif t == "S":
            self._expect.append(_Exp("S"))
            self._described.clear()
        elif t == "Q":
            self._expect.append(_Exp("Q", sql=_cstr(frame, 5)[0]))
            self._described.clear()
        elif t == "F":
            self._expect.append(_Exp("F"))
        return frame

    # -- server side ----------------------------------------------------------------------
    def server(self, data: bytes) -> ShapedRead:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        rows = 0
        tags: list[bytes] = []
        changed = False
        pos = 0
        n = len(buf)
        while pos + 5 <= n:
            t = buf[pos]
            (ln,) = _I.unpack_from(buf, pos + 1)
            if ln < 4:
                raise FrameError(f"malformed {chr(t)!r} message from the server: length {ln}")
            if t == 0x44:  # 'D': the whole run of complete DataRows in one step
                try:
                    piece, end, k, ch = self._rows(buf, pos)
                except (ValueError, struct.error, IndexError) as e:
                    raise FrameError(f"malformed 'D' message from the server: {e}") from None
                if not k:
                    break  # its end has not arrived yet
                out.append(piece)
                rows += k
                changed = changed or ch
                pos = end
                continue
            end = pos + 1 + ln
            if end > n:
                break
            frame = bytes(buf[pos:end])
            pos = end
            try:
                keep, new = self._frame(t, frame)
            except (ValueError, struct.error, IndexError) as e:
                # A backend message we must decode is malformed: nothing more may pass
                # (its rows could not be masked).
                raise FrameError(f"malformed {chr(t)!r} message from the server: {e}") from None
            if t == 0x43:  # 'C'
                tags.append(frame[5:].split(b"\x00", 1)[0])
            elif t == 0x64:  # 'd': a COPY row as it arrived (the plain walk counts them too)
                rows += 1
            if not keep:
                changed = True
                continue
            if t == 0x45 and self.on_error is not None:  # 'E'
                new = self.on_error(frame)
            if new is not None:
                out.append(new)
                changed = True
            else:
                out.append(frame)
        del buf[:pos]
        return ShapedRead(b"".join(out), rows, tags, changed)

    def _rows(self, buf: bytearray, pos: int) -> tuple[bytes, int, int, bool]:
        """(bytes to forward, end, rows, changed) for the run of DataRows at ``pos``."""
        plan = self._current_plan()
        if plan is None:
            end, k = skip_rows(buf, pos)
            return bytes(buf[pos:end]), end, k, False
        fast = getattr(plan, "rewrite", None)
        if fast is not None:
            return fast(buf, pos)  # type: ignore[no-any-return]
        end, k = skip_rows(buf, pos)
        parts: list[bytes] = []
        changed = False
        p = pos
        while p < end:
            (ln,) = _I.unpack_from(buf, p + 1)
            frame = bytes(buf[p : p + 1 + ln])
            p += 1 + ln
            vals = plan.mask(parse_data_row(frame[5:]))
            if vals is None:
                parts.append(frame)
            else:
                parts.append(build_data_row(vals))
                changed = True
        return b"".join(parts), end, k, changed

    @property
    def partial(self) -> int:
        """Server bytes held back, waiting for the rest of their message."""
        return len(self._buf)

    def _pop(self, kind: str) -> _Exp | None:
        q = self._expect
        if q and q[0].kind == kind:
            return q.popleft()
        return None

    def _frame(self, t: int, frame: bytes) -> tuple[bool, bytes | None]:
        """(forward it?, replacement) for one server message."""
        q = self._expect
        head = q[0].kind if q else ""
        c = chr(t)
        if c == "T":
            fields = parse_row_description(frame[5:])
            if head == "D":
                d = q.popleft()
                (self._portal if d.target == b"P" else self._stmt)[d.name] = fields
                return not d.injected, None
            self._set_plan(("Q", fields), fields, q[0].sql if head == "Q" else b"")
            return True, None
        if c == "n":
            if head == "D":
                d = q.popleft()
                (self._portal if d.target == b"P" else self._stmt)[d.name] = None
                return not d.injected, None
            return True, None
        if c == "H":
            return self._copy_out(frame, q[0].sql if head in ("Q", "E") else b"")
        if c == "W":  # CopyBoth (replication): a stream no plan can mask
            raise ValueError("replication (CopyBoth) data cannot be masked")
        if c == "d":
            if self._copy_refused:
                return False, None
            if self._copy is None:
                return True, None
            data, rows = self._copy.feed(frame[5:])
            self.copy_rows += rows
            if not data:
                return False, None
            return True, b"d" + _I.pack(len(data) + 4) + data
        if c == "c":
            if self._copy_refused:
                return False, None
            if self._copy is not None:
                self._copy.finish()
            return True, None
        if c == "C" and (self._copy is not None or self._copy_refused):
            refused = self._copy_refused
            self._copy, self._copy_refused = None, False
            if head == "E":
                q.popleft()
            return not refused, None
        if c == "E":
            self._copy, self._copy_refused = None, False
        if c == "1":
            self._pop("P")
        elif c == "2":
            b = self._pop("B")
            if b is not None:
                desc = self._stmt.get(b.stmt)
                if desc is not None:
                    self._portal[b.name] = _with_formats(desc, b.fmts)
        elif c in "CIs":
            if head == "E":
                q.popleft()
            self._end_plan()
        elif c == "3":
            self._pop("C")
        elif c == "E":
            self._end_plan()
            if head not in ("Q", "F"):
                while q and q[0].kind not in ("S", "Q", "F"):
                    q.popleft()
        elif c == "Z":
            self._end_plan()
            while q:
                if q.popleft().kind in ("S", "Q", "F"):
                    break
        return True, None

    def _copy_out(self, frame: bytes, sql: bytes) -> tuple[bool, bytes | None]:
        """A CopyOutResponse: plan its data, or answer an error in its place."""
        (fmt,) = struct.unpack_from("!b", frame, 5)
        (ncols,) = _H.unpack_from(frame, 6)
        try:
            if self.copy_planner is None:
                raise CopyRefusal("COPY data is not masked on this connection")
            plan = self.copy_planner(sql, ncols, fmt != 0)
        except CopyRefusal as e:
            self._copy_refused = True
            return True, error_response("42501", f"ledgergate: COPY refused: {e}", severity="ERROR")
        self._copy = plan
        return True, None

    def _current_plan(self) -> RowPlan | None:
        q = self._expect
        if q and q[0].kind == "E":
            portal = q[0].name
            key = ("E", portal)
            if self._plan_for != key:
                fields = self._portal.get(portal)
                self._set_plan(key, fields, q[0].sql)
        return self._plan

    def _set_plan(self, key: object, fields: tuple[Field, ...] | None, sql: bytes) -> None:
        self._end_plan()
        self._plan_for = key
        self._plan = self.planner(fields, sql) if fields else None

    def _end_plan(self) -> None:
        if self._plan is not None:
            self._plan.finish()
        self._plan = None
        self._plan_for = None
