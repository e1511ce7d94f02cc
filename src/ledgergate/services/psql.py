"""Rendering recorded PostgreSQL traffic the way psql prints it (replay).

Owns the decoding of recorded backend bytes (RowDescription, DataRow, CommandComplete,
ErrorResponse, NoticeResponse, COPY data, ReadyForQuery) into psql's aligned text
format, and of a recorded frontend query message into its SQL text. Chunks may split
messages anywhere: bytes are buffered until a message is complete. Pure text in, text
out; no store, no clock.
"""

from __future__ import annotations

import struct

from ledgergate.wire.pg.frames import FrameError, FrameSplitter, iter_messages

__all__ = ["MAX_TABLE_ROWS", "PsqlRenderer", "frontend_query_text"]

# Rows of one result set held for alignment; beyond this they are counted, not shown
# (a replayed 10-million-row result must not exhaust memory).
MAX_TABLE_ROWS = 10_000
# Column type oids psql right-aligns (int2/4/8, oid, xid, float4/8, money, numeric).
_NUMERIC_OIDS = frozenset({20, 21, 23, 26, 28, 700, 701, 790, 1700})
_H = struct.Struct("!h")
_I = struct.Struct("!i")


def _cstr(body: bytes, pos: int) -> tuple[str, int]:
    end = body.index(b"\x00", pos)
    return body[pos:end].decode("utf-8", "replace"), end + 1


def frontend_query_text(raw: bytes) -> str | None:
    """The SQL text of a recorded Query ('Q') or Parse ('P') message, else None."""
    try:
        msgs = list(iter_messages(raw))
    except FrameError:
        return None
    if len(msgs) != 1:
        return None
    tag, body = msgs[0]
    try:
        if tag == b"Q":
            return _cstr(body, 0)[0]
        if tag == b"P":
            _, pos = _cstr(body, 0)
            return _cstr(body, pos)[0]
    except ValueError:
        return None
    return None


def _center(text: str, width: int) -> str:
    """psql centres headers with the odd space on the right (str.center may not)."""
    left = (width - len(text)) // 2
    return " " * left + text + " " * (width - len(text) - left)


def _fields(body: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in body.split(b"\x00"):
        if f:
            out[chr(f[0])] = f[1:].decode("utf-8", "replace")
    return out


class PsqlRenderer:
    """Feed recorded server-to-client bytes; get the lines psql would have printed."""

    def __init__(self) -> None:
        self._frames = FrameSplitter()
        self._names: list[str] | None = None
        self._right: list[bool] = []
        self._rows: list[list[str]] = []
        self._hidden = 0

    def feed(self, data: bytes) -> list[str]:
        out: list[str] = []
        try:
            msgs = self._frames.feed(data)
        except FrameError as e:
            self._frames = FrameSplitter()
            return [f"<undecodable result bytes: {e}>"]
        buf = self._frames.buf
        end = 0
        for tag, start, end in msgs:
            self._message(bytes([tag]), bytes(buf[start + 5 : end]), out)
        self._frames.consume(end)
        return out

    def _message(self, tag: bytes, body: bytes, out: list[str]) -> None:
        try:
            if tag == b"T":
                self._row_description(body)
            elif tag == b"D":
                self._data_row(body)
            elif tag == b"C":
                tag_text = body.rstrip(b"\x00").decode("utf-8", "replace")
                if self._names is not None:
                    out.extend(self._table())
                else:
                    out.append(tag_text)
            elif tag in (b"E", b"N"):
                out.extend(self._table())
                f = _fields(body)
                sev = f.get("V") or f.get("S") or ("ERROR" if tag == b"E" else "NOTICE")
                out.append(f"{sev}:  {f.get('M', '')}")
                if f.get("D"):
                    out.append(f"DETAIL:  {f['D']}")
                if f.get("H"):
                    out.append(f"HINT:  {f['H']}")
            elif tag == b"d":
                out.extend(body.decode("utf-8", "replace").rstrip("\n").split("\n"))
            elif tag == b"Z":
                out.extend(self._table())
        except (ValueError, IndexError, struct.error):
            out.append(f"<malformed {tag.decode('ascii', 'replace')!r} message>")

    def _row_description(self, body: bytes) -> None:
        (n,) = _H.unpack_from(body, 0)
        pos = 2
        names, right = [], []
        for _ in range(n):
            name, pos = _cstr(body, pos)
            (oid,) = _I.unpack_from(body, pos + 6)
            pos += 18
            names.append(name)
            right.append(oid in _NUMERIC_OIDS)
        self._names, self._right, self._rows, self._hidden = names, right, [], 0

    def _row_description_unknown(self, n: int) -> None:
        self._names, self._right, self._rows, self._hidden = ["?column?"] * n, [False] * n, [], 0

    def _data_row(self, body: bytes) -> None:
        (n,) = _H.unpack_from(body, 0)
        if self._names is None:  # rows without a description (e.g. Execute of a portal)
            self._row_description_unknown(n)
        if len(self._rows) >= MAX_TABLE_ROWS:
            self._hidden += 1
            return
        pos = 2
        vals = []
        for _ in range(n):
            (ln,) = _I.unpack_from(body, pos)
            pos += 4
            if ln < 0:
                vals.append("")
            else:
                vals.append(body[pos : pos + ln].decode("utf-8", "replace"))
                pos += ln
        self._rows.append(vals)

    def _table(self) -> list[str]:
        if self._names is None:
            return []
        names, right, rows = self._names, self._right, self._rows
        ncol = len(names)
        widths = [len(h) for h in names]
        for r in rows:
            for i, v in enumerate(r[:ncol]):
                widths[i] = max(widths[i], len(v))
        lines = [" " + " | ".join(_center(h, w) for h, w in zip(names, widths, strict=True))]
        lines.append("+".join("-" * (w + 2) for w in widths))
        for r in rows:
            cells = [
                (v.rjust(w) if right[i] else v.ljust(w))
                for i, (v, w) in enumerate(zip(r, widths, strict=False))
            ]
            lines.append(" " + " | ".join(cells))
        total = len(rows) + self._hidden
        footer = f"({total} row{'' if total == 1 else 's'}"
        if self._hidden:
            footer += f", {self._hidden} not shown"
        lines.append(footer + ")")
        lines.append("")
        self._names, self._right, self._rows, self._hidden = None, [], [], 0
        return [ln.rstrip() if ln else ln for ln in lines]

    def flush(self) -> list[str]:
        """Whatever is pending at the end of the recording (e.g. a cut-off result)."""
        out = self._table()
        if self._frames.buf:
            out.append(f"<{len(self._frames.buf)} bytes of an incomplete message>")
            self._frames = FrameSplitter()
        return out
