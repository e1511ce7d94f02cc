"""COPY's text and CSV row formats: split ``COPY ... TO STDOUT`` data into rows of values
and encode rows back, so a gateway can rewrite values in flight. Sans-IO: bytes in,
values out; no sockets, clock or logging.

Owns the options of a textual COPY (``CopyFormat``, with PostgreSQL's defaults and
checks), the row splitter (``CopySplitter``: data in any pieces, rows out) and the row
encoder (``CopyEncoder``). Must not: frame CopyData messages (the session does), decide
what to mask, or handle the binary format (both codecs refuse it; so must the caller).

Rules, as PostgreSQL 15-17 reads (copyfromparse.c) and writes (copyto.c) them:
- A row ends at LF: PostgreSQL ends every COPY TO STDOUT row with "\\n". A raw CR outside a
  CSV quoted field is refused (COPY FROM refuses it too in LF-ended data), and so is a
  raw NUL anywhere. Rows may arrive split anywhere, several in one piece.
- text: fields split at the delimiter; a backslash escapes the next byte (so ``\\``+LF
  is data, not a row end); ``\\b \\f \\n \\r \\t \\v``, octal ``\\NNN`` (up to 3 digits) and
  hex ``\\xH[H]`` decode; any other escaped byte stands for itself. ``\\.`` (the old
  end-of-data marker) and an escape decoding to NUL are refused.
- csv: fields split at the delimiter outside quotes; a quote may open anywhere in a
  field (``a"b,c"d`` is ``ab,cd``); inside quotes the escape byte escapes only the quote
  or itself (``""`` when they are the same). A row that is ``\\.`` alone is refused.
- NULL is the field whose raw bytes equal the null string, compared before any
  de-escaping (text) and only for a field with no quotes (csv), exactly as COPY FROM.
- The header line (``HEADER``) is handed back untouched, marked, its names decoded.
- Every row must have the same number of fields (``columns``, or the first row's).
- The encoder writes what COPY TO would write, so that COPY FROM with the same options
  reads back the same values: text escapes backslash, the delimiter and the six control
  bytes; a value whose escaped form equals the null string gets its first byte escaped
  in octal. csv quotes NULL-looking, ``\\.``-alone and delimiter/quote/CR/LF-holding values
  (plus FORCE_QUOTE columns) and escapes quote and escape bytes inside quotes.
- What cannot be read or written faithfully raises ``CopyDataError`` (a ValueError):
  the caller fails closed. The codec assumes an encoding in which ASCII bytes are always
  characters (UTF-8, LATIN*, EUC_*...): see ``encoding_embeds_ascii``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from ledgergate.wire.pg.frames import MAX_MESSAGE

__all__ = [
    "CSV",
    "MAX_LINE",
    "TEXT",
    "CopyDataError",
    "CopyEncoder",
    "CopyFormat",
    "CopyKind",
    "CopyLine",
    "CopySplitter",
    "Value",
    "encode_row",
    "encoding_embeds_ascii",
    "split_copy",
]

CopyKind = Literal["text", "csv", "binary"]
Value = bytes | None

# PostgreSQL builds each row in one buffer and sends it in one CopyData message, so a
# pending row longer than the largest message is garbage, never a real row.
MAX_LINE = MAX_MESSAGE

_LF, _CR, _BS = 0x0A, 0x0D, 0x5C
# copy.c: a text-format delimiter may not be one of these (they mean something after \).
_TEXT_DELIM_FORBIDDEN = b"\\.abcdefghijklmnopqrstuvwxyz0123456789"
_BYTES = [bytes((i,)) for i in range(256)]
_UNESCAPE = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}
_ESCAPE = {v[0]: b"\\" + k for k, v in _UNESCAPE.items()} | {_BS: b"\\\\"}
# PostgreSQL's client-only encodings (PG_ENCODING_IS_CLIENT_ONLY), whose multibyte
# characters may hold ASCII bytes, under every name it accepts (clean_encoding_name:
# lower case, alphanumerics only).
_EMBEDS_ASCII = frozenset(
    {
        *("big5", "win950", "windows950", "gbk", "win936", "windows936", "cp936"),
        *("uhc", "win949", "windows949", "johab", "gb18030", "sjis", "shiftjis"),
        *("mskanji", "win932", "windows932", "shiftjis2004", "cp932", "cp949", "cp950"),
    }
)


class CopyDataError(ValueError):
    """COPY data or options the codec cannot read or write faithfully. The message is
    safe to show a client: it never quotes the data."""


def encoding_embeds_ascii(name: str) -> bool:
    """Whether PostgreSQL's encoding ``name`` can put ASCII bytes (a backslash, a quote,
    a delimiter) inside a multibyte character (SJIS, BIG5, GBK, UHC, GB18030, JOHAB):
    COPY data in it cannot be split byte-wise, so the caller must refuse it."""
    return "".join(c for c in name.lower() if c.isalnum()) in _EMBEDS_ASCII


@dataclass(frozen=True, slots=True)
class CopyFormat:
    """A COPY's textual options, as bytes on the wire. ``CopyFormat.of`` fills in
    PostgreSQL's defaults; construction checks what PostgreSQL checks (and refuses a few
    things COPY FROM could not read back). ``quote`` and ``escape`` mean nothing in text
    format; no field but ``format`` means anything in binary."""

    format: CopyKind
    delimiter: bytes
    null: bytes
    quote: bytes = b'"'
    escape: bytes = b'"'
    header: bool = False
    force_quote: tuple[str, ...] = ()
    force_quote_all: bool = False

    def __post_init__(self) -> None:
        _check(self)

    @classmethod
    def of(
        cls,
        format: str = "text",
        *,
        delimiter: bytes | None = None,
        null: bytes | None = None,
        quote: bytes | None = None,
        escape: bytes | None = None,
        header: bool = False,
        force_quote: Sequence[str] | Literal["*"] | None = None,
    ) -> CopyFormat:
        """The options as COPY ... WITH (...) spells them, None meaning not given, with
        PostgreSQL's defaults (text: tab and ``\\N``; csv: comma, empty string, ``"`` and
        escape = quote) and its refusals of options the format does not take."""
        if format not in ("text", "csv", "binary"):
            raise CopyDataError(f"COPY format {format!r} not recognized")
        csv = format == "csv"
        if format == "binary":
            for name, given in (("DELIMITER", delimiter), ("NULL", null)):
                if given is not None:
                    raise CopyDataError(f"cannot specify {name} in BINARY mode")
        for name, opt in (("QUOTE", quote), ("ESCAPE", escape), ("FORCE_QUOTE", force_quote)):
            if opt is not None and not csv:
                raise CopyDataError(f"COPY {name} requires CSV mode")
        quote = b'"' if quote is None else quote
        names = (force_quote,) if isinstance(force_quote, str) else tuple(force_quote or ())
        return cls(
            format="csv" if csv else "binary" if format == "binary" else "text",
            delimiter=(b"," if csv else b"\t") if delimiter is None else delimiter,
            null=(b"" if csv else b"\\N") if null is None else null,
            quote=quote,
            escape=quote if escape is None else escape,
            header=header,
            force_quote=() if force_quote is None or force_quote == "*" else names,
            force_quote_all=force_quote == "*",
        )

    def force_quote_columns(self, names: Sequence[str]) -> frozenset[int]:
        """FORCE_QUOTE as indices into the COPY's columns ``names`` (for ``CopyEncoder``).
        A name not among them is refused, as PostgreSQL refuses it."""
        if self.force_quote_all:
            return frozenset(range(len(names)))
        where = {n: i for i, n in reversed(list(enumerate(names)))}
        missing = [n for n in self.force_quote if n not in where]
        if missing:
            raise CopyDataError(f"FORCE_QUOTE column {missing[0]!r} not referenced by COPY")
        return frozenset(where[n] for n in self.force_quote)


def _one_byte(name: str, v: bytes) -> None:
    if len(v) != 1 or v[0] >= 0x80:
        raise CopyDataError(f"COPY {name} must be a single one-byte ASCII character")
    if v in (b"\r", b"\n", b"\x00"):
        raise CopyDataError(f"COPY {name} cannot be newline, carriage return or NUL")


def _check(f: CopyFormat) -> None:
    if f.format not in ("text", "csv", "binary"):
        raise CopyDataError(f"COPY format {f.format!r} not recognized")
    if f.format == "binary":
        if f.header:
            raise CopyDataError("cannot specify HEADER in BINARY mode")
        if f.force_quote or f.force_quote_all:
            raise CopyDataError("COPY FORCE_QUOTE requires CSV mode")
        return
    _one_byte("delimiter", f.delimiter)
    if any(c in f.null for c in b"\r\n\x00"):
        raise CopyDataError("COPY null representation cannot use newline or carriage return")
    if f.delimiter in f.null:
        raise CopyDataError("COPY delimiter must not appear in the NULL specification")
    if f.format == "text":
        if f.delimiter in _TEXT_DELIM_FORBIDDEN:
            raise CopyDataError(f"COPY delimiter cannot be {f.delimiter.decode()!r}")
        if f.force_quote or f.force_quote_all:
            raise CopyDataError("COPY FORCE_QUOTE requires CSV mode")
        i = 0
        while i < len(f.null):  # a NULL that COPY FROM could not read back as one field
            if f.null[i] == _BS:
                if i + 1 == len(f.null) or f.null[i + 1] == ord("."):
                    raise CopyDataError("COPY null representation would escape what follows")
                i += 1
            i += 1
        return
    _one_byte("quote", f.quote)
    _one_byte("escape", f.escape)
    if f.delimiter == f.quote:
        raise CopyDataError("COPY delimiter and quote must be different")
    if f.quote in f.null:
        raise CopyDataError("CSV quote character must not appear in the NULL specification")


# -- splitting ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CopyLine:
    """One row as it arrived (``raw``, LF included: forward it when nothing changes) and
    its values; for the header line, ``header`` is set and ``values`` are the names."""

    raw: bytes
    values: list[Value]
    header: bool = False


class CopySplitter:
    """Rows out of COPY data fed in any pieces. ``columns`` (CopyOutResponse's count)
    is checked against every row; without it the first row's count is. Call ``finish``
    at CopyDone: data that ends inside a row is an error. After a ``CopyDataError`` the
    splitter is spent: the caller fails the COPY."""

    __slots__ = (
        "_buf",
        "_csv",
        "_d",
        "_e",
        "_header",
        "_in_quote",
        "_in_re",
        "_max",
        "_ncols",
        "_null",
        "_out_re",
        "_q",
        "_scan",
        "_split_re",
        "_text_re",
        "fmt",
    )

    def __init__(
        self, fmt: CopyFormat, *, columns: int | None = None, max_line: int = MAX_LINE
    ) -> None:
        if fmt.format == "binary":
            raise CopyDataError("binary COPY data cannot be split into values")
        if columns is not None and columns < 0:
            raise CopyDataError("a COPY has zero or more columns")
        self.fmt = fmt
        self._ncols = columns
        self._max = max_line
        self._buf = bytearray()  # the unfinished row
        self._scan = 0  # how far into _buf the row end was searched
        self._in_quote = False  # csv: the search stopped inside quotes
        self._header = fmt.header
        self._csv = fmt.format == "csv"
        self._null = fmt.null
        d, q, e = fmt.delimiter, fmt.quote, fmt.escape
        self._d, self._q = d, q[0]
        self._e = -1 if e == q else e[0]  # -1: the quote escapes itself ("")
        esc = re.escape
        self._out_re = re.compile(b"[\n\r" + esc(q) + b"]")  # row end or quote, unquoted
        self._in_re = re.compile(b"[" + esc(q) + (b"" if e == q else esc(e)) + b"]")
        self._split_re = re.compile(b"[" + esc(d) + esc(q) + b"]")
        self._text_re = re.compile(
            rb"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))|(" + esc(d) + rb")|(\r)", re.S
        )

    @property
    def pending(self) -> int:
        """Bytes of an unfinished row held until the rest arrives."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[CopyLine]:
        """Every row completed by ``data``, in order."""
        if not self._buf and type(data) is bytes and data[-1:] == b"\n" and self._plain(data):
            # The usual read: whole rows (PostgreSQL sends one per CopyData), nothing
            # escaped or quoted, so every LF ends a row.
            if data.find(b"\n") == len(data) - 1:
                return [self._line(data)]
            lines, start = [], 0
            while (end := data.find(b"\n", start)) >= 0:
                lines.append(self._line(data[start : end + 1]))
                start = end + 1
            return lines
        if self._buf:
            self._buf += data
            src: bytes | bytearray = self._buf
        else:
            src = data if isinstance(data, bytes) else bytes(data)
        out: list[CopyLine] = []
        pos = 0
        find_end = self._csv_end if self._csv else self._text_end
        while (end := find_end(src, pos)) >= 0:
            raw = bytes(src[pos : end + 1])
            out.append(self._line(raw))
            pos = self._scan = end + 1
        rest = len(src) - pos
        if rest > self._max:
            raise CopyDataError("COPY row longer than the limit")
        if src is self._buf:
            del self._buf[:pos]
        elif rest:
            self._buf = bytearray(src[pos:])
        self._scan -= pos
        return out

    def _plain(self, data: bytes) -> bool:
        """No byte in ``data`` that could hide a row end (a backslash, a quote)."""
        if not self._csv:
            return b"\\" not in data
        if self._q in data:
            return False
        if b"\r" in data:  # unquoted, then: refused, as the row-end search refuses it
            raise CopyDataError("unquoted carriage return found in CSV data")
        return True

    def finish(self) -> None:
        """The data is complete (CopyDone): nothing may be left of a row."""
        if self._buf:
            raise CopyDataError("COPY data ends inside a row")

    # -- row ends ---------------------------------------------------------------------

    def _text_end(self, buf: bytes | bytearray, pos: int) -> int:
        """The LF ending the row at ``pos``: one not escaped by an odd run of backslashes."""
        i = max(self._scan, pos)
        while (j := buf.find(b"\n", i)) >= 0:
            k = j
            while k > pos and buf[k - 1] == _BS:
                k -= 1
            if not (j - k) & 1:
                return j
            i = j + 1
        self._scan = len(buf)
        return -1

    def _csv_end(self, buf: bytes | bytearray, pos: int) -> int:
        """The LF ending the row at ``pos``, outside quotes; the search state is kept
        when the row is unfinished, so feeding byte by byte stays linear."""
        i, in_quote, n = max(self._scan, pos), self._in_quote, len(buf)
        q, e = self._q, self._e
        while True:
            if not in_quote:
                m = self._out_re.search(buf, i)
                if m is None:
                    i = n
                    break
                j = m.start()
                c = buf[j]
                if c == _LF:
                    self._in_quote = False
                    return j
                if c == _CR:
                    raise CopyDataError("unquoted carriage return found in CSV data")
                in_quote, i = True, j + 1
            else:
                m = self._in_re.search(buf, i)
                if m is None:
                    i = n
                    break
                j = m.start()
                if buf[j] == e:
                    if j + 1 == n:  # look again once the next byte is here
                        i = j
                        break
                    i = j + 2 if buf[j + 1] in (q, e) else j + 1
                else:
                    in_quote, i = False, j + 1
        self._scan, self._in_quote = i, in_quote
        return -1

    # -- one row ----------------------------------------------------------------------

    def _line(self, raw: bytes) -> CopyLine:
        line = raw[:-1]
        if b"\x00" in line:
            raise CopyDataError("NUL byte in COPY data")
        header, self._header = self._header, False
        null = None if header else self._null
        if self._ncols == 0:
            if line:
                raise CopyDataError("extra data in a COPY row of zero columns")
            return CopyLine(raw, [], header)
        if self._csv:
            if line == b"\\.":
                raise CopyDataError("end-of-copy marker in COPY data")
            values = self._csv_fields(line, null)
        else:
            values = self._text_fields(line, null)
        if self._ncols is None:
            self._ncols = len(values)
        elif len(values) != self._ncols:
            raise CopyDataError(f"COPY row has {len(values)} fields, expected {self._ncols}")
        return CopyLine(raw, values, header)

    def _text_fields(self, line: bytes, null: bytes | None) -> list[Value]:
        if b"\\" not in line:  # nothing escaped: raw bytes are the values
            if b"\r" in line:
                raise CopyDataError("literal carriage return found in COPY data")
            return [None if f == null else f for f in line.split(self._d)]
        out: list[Value] = []
        parts: list[bytes] = []
        start = last = 0
        for m in self._text_re.finditer(line):
            s, g = m.start(), m.lastindex
            if g == 4:  # the delimiter
                out.append(_text_value(line, start, s, last, parts, null))
                parts = []
                start = last = m.end()
                continue
            if g == 5:
                raise CopyDataError("literal carriage return found in COPY data")
            parts.append(line[last:s])
            if g == 1:
                parts.append(_BYTES[int(m.group(1), 8) & 0xFF])
            elif g == 2:
                parts.append(_BYTES[int(m.group(2), 16)])
            else:
                c = m.group(3)
                if c == b".":  # never part of a NULL marker: CopyFormat refuses those
                    raise CopyDataError("end-of-copy marker in COPY data")
                parts.append(_UNESCAPE.get(c, c))
            last = m.end()
        out.append(_text_value(line, start, len(line), last, parts, null))
        return out

    def _csv_fields(self, line: bytes, null: bytes | None) -> list[Value]:
        q = self._q
        if q not in line:  # nothing quoted: raw bytes are the values
            return [None if f == null else f for f in line.split(self._d)]
        d, e, n = self._d[0], self._e, len(line)
        out: list[Value] = []
        i = 0
        while True:
            start, saw_quote, parts = i, False, []
            while True:  # outside quotes: to the delimiter or the next quote
                m = self._split_re.search(line, i)
                if m is None:
                    parts.append(line[i:])
                    end = i = n
                    break
                j = m.start()
                parts.append(line[i:j])
                i = j + 1
                if line[j] == d:
                    end = j
                    break
                saw_quote = True
                while True:  # inside quotes: to the closing quote
                    m = self._in_re.search(line, i)
                    if m is None:
                        raise CopyDataError("unterminated CSV quoted field")
                    k = m.start()
                    parts.append(line[i:k])
                    nxt = line[k + 1] if k + 1 < n else -1
                    if line[k] == e:  # a distinct escape byte: escapes a quote or itself
                        if nxt in (q, e):
                            parts.append(_BYTES[nxt])
                            i = k + 2
                        else:
                            parts.append(_BYTES[e])
                            i = k + 1
                    elif e == -1 and nxt == q:  # "" inside quotes
                        parts.append(_BYTES[q])
                        i = k + 2
                    else:  # the closing quote
                        i = k + 1
                        break
            if not saw_quote and null is not None and line[start:end] == null:
                out.append(None)
            else:
                out.append(b"".join(parts))
            if end == n:
                return out


def _text_value(
    line: bytes, start: int, end: int, last: int, parts: list[bytes], null: bytes | None
) -> Value:
    """A text field ``line[start:end]`` whose de-escaped pieces up to ``last`` are in
    ``parts``: NULL when its raw bytes are the null string (checked first, as PostgreSQL
    does, so a NULL marker's own escapes are never judged)."""
    if null is not None and line[start:end] == null:
        return None
    parts.append(line[last:end])
    value = b"".join(parts)
    if b"\x00" in value:
        raise CopyDataError("COPY data escapes a NUL byte")
    return value


def split_copy(fmt: CopyFormat, data: bytes, *, columns: int | None = None) -> list[CopyLine]:
    """Every row of complete COPY data (which must end with a row end)."""
    splitter = CopySplitter(fmt, columns=columns)
    out = splitter.feed(data)
    splitter.finish()
    return out


# -- encoding -----------------------------------------------------------------------


class CopyEncoder:
    """Rows of values to COPY data lines in ``fmt``. ``force_quote`` are the indices of
    FORCE_QUOTE columns (``CopyFormat.force_quote_columns``); FORCE_QUOTE * needs none."""

    __slots__ = ("_csv", "_d", "_e", "_force", "_force_all", "_null", "_q", "_special", "fmt")

    def __init__(self, fmt: CopyFormat, *, force_quote: Collection[int] = ()) -> None:
        if fmt.format == "binary":
            raise CopyDataError("binary COPY rows cannot be encoded from values")
        self.fmt = fmt
        self._csv = fmt.format == "csv"
        self._d, self._q, self._e, self._null = fmt.delimiter, fmt.quote, fmt.escape, fmt.null
        self._force = frozenset(force_quote)
        self._force_all = fmt.force_quote_all
        esc = re.escape(fmt.delimiter)
        if self._csv:  # what makes a value need quotes (NUL: refused)
            self._special = re.compile(b"[\n\r\x00" + esc + re.escape(fmt.quote) + b"]")
        else:  # what text format escapes (NUL: refused)
            self._special = re.compile(b"[\\\\\b\f\n\r\t\v\x00" + esc + b"]")

    def encode(self, values: Sequence[Value]) -> bytes:
        """One line, LF included."""
        if self._csv:
            single = len(values) == 1
            cells = [self._csv_cell(v, i, single) for i, v in enumerate(values)]
        else:
            cells = [self._text_cell(v) for v in values]
        return self._d.join(cells) + b"\n"

    def _text_cell(self, v: Value) -> bytes:
        if v is None:
            return self._null
        out = self._text_escape(v)
        if out == self._null:  # COPY FROM would read NULL: escape the first byte in octal
            if not v:
                raise CopyDataError("an empty string cannot be told from NULL '' in text COPY")
            return b"\\%03o" % v[0] + self._text_escape(v[1:])
        return out

    def _text_escape(self, v: bytes) -> bytes:
        return v if self._special.search(v) is None else self._special.sub(self._text_esc, v)

    def _text_esc(self, m: re.Match[bytes]) -> bytes:
        c = m.group()[0]
        if c == 0:
            raise CopyDataError("a COPY value cannot hold a NUL byte")
        return _ESCAPE.get(c) or b"\\" + m.group()

    def _csv_cell(self, v: Value, i: int, single: bool) -> bytes:
        if v is None:
            if single and self._null == b"\\.":
                raise CopyDataError("NULL written as \\. alone would end the COPY data")
            return self._null
        special = self._special.search(v) is not None
        if special and b"\x00" in v:
            raise CopyDataError("a COPY value cannot hold a NUL byte")
        if not (
            special
            or self._force_all
            or i in self._force
            or v == self._null
            or (single and v == b"\\.")
        ):
            return v
        q, e = self._q, self._e
        body = v.replace(q, q + q) if e == q else v.replace(e, e + e).replace(q, e + q)
        return q + body + q


def encode_row(
    fmt: CopyFormat, values: Sequence[Value], *, force_quote: Collection[int] = ()
) -> bytes:
    """One row as a COPY data line (LF included); see ``CopyEncoder``."""
    return CopyEncoder(fmt, force_quote=force_quote).encode(values)


TEXT = CopyFormat.of("text")
CSV = CopyFormat.of("csv")
